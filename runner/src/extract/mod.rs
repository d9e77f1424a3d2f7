//! The extraction loop: data → tokens → model → hooked activations → the Parquet store.
//!
//! Work is cut into shards of `shard_size` examples. Shard `k` writes `part-k.parquet` under
//! every hook (and pool) folder, each file streamed to a temp name and renamed when complete,
//! and only then a completion marker `_progress/extract/shard-k.done`. A re-run skips shards
//! with a marker and rewrites any without one, so a killed extraction resumes with no lost or
//! duplicated rows. Memory is bounded by one batch.

mod coverage;
mod images;
mod shard;

pub use coverage::{check_coverage, Expected};

use images::extract_images;
pub use images::{image_batch, image_batch_of};

use glassbox_data::examples::write_examples;
use glassbox_data::images::{read_image_dataset, ImageDataset, Preprocessor};
use glassbox_data::shards::ShardSpec;
use glassbox_data::tokens::{TokenRows, TokensWriter};
use glassbox_data::Pool;
use glassbox_data::{atomic, ActDtype, DataError, Modality, Progress, RunDir, TextDataset};
use glassbox_models::HookPoint;
use glassbox_models::LoadedModel;
use glassbox_models::{ModelError, Result};
use std::path::Path;

/// How to extract.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Hooks to store (each must be a storable point of the model).
    pub hooks: Vec<HookPoint>,
    /// Sequence-level pools written under `pooled/`.
    pub pools: Vec<Pool>,
    /// Write one row per token under `activations/` (pools are written either way).
    pub token_level: bool,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// Stored value type (`f32`, `f16`, `bf16`).
    pub dtype: ActDtype,
    /// Parquet compression of activation shards.
    pub compression: glassbox_data::store::Codec,
    /// Examples per shard: the unit of resumption.
    pub shard_size: usize,
    /// Run only the parts of this worker (`--shard i/N`: parts `k` with `k mod N = i`; the
    /// examples and tokens tables belong to shard 0); `None` runs them all.
    pub worker: Option<ShardSpec>,
}

/// What an extraction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractSummary {
    /// Examples in the data set.
    pub n_examples: u64,
    /// Tokens run through the model (images count one each).
    pub n_tokens: u64,
    /// Shards the examples were cut into.
    pub shards: usize,
    /// Shards found complete from an earlier, interrupted run and kept.
    pub shards_resumed: usize,
    /// Shards this process ran or kept (all of them without a worker).
    pub shards_owned: usize,
}

/// A run's examples, read the way the model reads its inputs.
pub enum Examples {
    /// Texts, tokenised by the model's tokenizer.
    Texts(TextDataset),
    /// Image files and the model's preprocessing.
    Images(ImageDataset, Preprocessor),
}

impl Examples {
    /// Reads the data file at `path` for `model`: a text data set for text models, an image
    /// data set (class folders or an `image_path` manifest) with the model's preprocessing
    /// for vision models.
    pub fn read(model: &LoadedModel, path: &Path) -> Result<Self> {
        Ok(match model.modality() {
            Modality::Text => Examples::Texts(glassbox_data::read_dataset(path)?),
            Modality::Vision => {
                let preprocessor = model.preprocessor()?;
                Examples::Images(read_image_dataset(path)?, preprocessor)
            }
        })
    }

    /// Files of an image data set's class folders left out as not images; `None` when none.
    pub fn skipped_files(&self) -> Option<&[String]> {
        match self {
            Examples::Images(d, _) if !d.skipped.is_empty() => Some(&d.skipped),
            _ => None,
        }
    }

    /// Class folders of an image data set with no image under them.
    pub fn empty_classes(&self) -> Option<&[String]> {
        match self {
            Examples::Images(d, _) if !d.empty_classes.is_empty() => Some(&d.empty_classes),
            _ => None,
        }
    }

    /// The examples as a table (text or image path, label columns, source file and hash).
    pub fn table(&self) -> &TextDataset {
        match self {
            Examples::Texts(d) => d,
            Examples::Images(d, _) => &d.data,
        }
    }

    /// What one progress unit is: a token or an image.
    pub fn unit(&self) -> &'static str {
        match self {
            Examples::Texts(_) => "tokens",
            Examples::Images(..) => "images",
        }
    }
}

/// Extracts every hook in `opts` for every example into `run`: `examples.parquet` (and, for
/// texts, `tokens.parquet`), then every shard that is not already complete.
pub fn extract(
    model: &LoadedModel,
    examples: &Examples,
    run: &RunDir,
    opts: &ExtractOptions,
    progress: &dyn Progress,
) -> Result<ExtractSummary> {
    match examples {
        Examples::Texts(data) => extract_texts(model, data, run, opts, progress),
        Examples::Images(data, pre) => extract_images(model, data, pre, run, opts, progress),
    }
}

/// Tokenises the data set, writes `examples.parquet` and `tokens.parquet`, then runs every
/// shard that is not already complete.
fn extract_texts(
    model: &LoadedModel,
    data: &TextDataset,
    run: &RunDir,
    opts: &ExtractOptions,
    progress: &dyn Progress,
) -> Result<ExtractSummary> {
    validate_hooks(opts, &model.model.hook_points(), model.model.family())?;
    let n_tokens = tokenize_all(model, data, run, opts, progress)?;
    let total_tokens: u64 = n_tokens.iter().map(|&n| n as u64).sum();
    let (shards, resumed, owned) =
        run_shards(run, opts, &n_tokens, "tokens", progress, |shard, range| {
            shard::run_shard(model, data, run, opts, shard, range, progress)
        })?;
    Ok(ExtractSummary {
        n_examples: data.len() as u64,
        n_tokens: total_tokens,
        shards,
        shards_resumed: resumed,
        shards_owned: owned,
    })
}

/// Whether this process writes the examples and tokens tables: shard 0 owns them (they are
/// the same for every worker), a single process always.
pub(crate) fn writes_tables(opts: &ExtractOptions) -> bool {
    opts.worker.is_none_or(|w| w.owns(0))
}

/// Runs every shard without a completion marker (`units[i]`: progress units of example `i`),
/// writing the marker after each, skipping the parts of other workers; returns (shards, shards
/// kept from an earlier run, shards this process owns).
fn run_shards(
    run: &RunDir,
    opts: &ExtractOptions,
    units: &[u32],
    unit_name: &str,
    progress: &dyn Progress,
    mut run_shard: impl FnMut(usize, std::ops::Range<usize>) -> Result<()>,
) -> Result<(usize, usize, usize)> {
    let n = units.len();
    let n_shards = n.div_ceil(opts.shard_size);
    let markers = run.progress_dir("extract");
    std::fs::create_dir_all(&markers).map_err(|e| DataError::Io {
        path: markers.clone(),
        source: e,
    })?;
    let owns = |shard: usize| opts.worker.is_none_or(|w| w.owns(shard));
    let range_of = |shard: usize| shard * opts.shard_size..((shard + 1) * opts.shard_size).min(n);
    let total: u64 = (0..n_shards)
        .filter(|&k| owns(k))
        .flat_map(|k| units[range_of(k)].iter())
        .map(|&t| t as u64)
        .sum();
    progress.start(&format!("extract ({unit_name})"), total);
    let (mut resumed, mut owned) = (0, 0);
    for shard in (0..n_shards).filter(|&k| owns(k)) {
        owned += 1;
        let range = range_of(shard);
        let shard_units: u64 = units[range.clone()].iter().map(|&t| t as u64).sum();
        let marker = markers.join(format!("shard-{shard:05}.done"));
        if marker.exists() {
            resumed += 1;
            progress.advance(shard_units);
            continue;
        }
        run_shard(shard, range)?;
        atomic::write_bytes(&marker, format!("{shard_units}\n").as_bytes())?;
    }
    progress.finish();
    if resumed > 0 {
        progress.note(&format!(
            "resumed: kept {resumed} of {owned} shards completed by an earlier run"
        ));
    }
    Ok((n_shards, resumed, owned))
}

fn validate_hooks(opts: &ExtractOptions, available: &[HookPoint], family: &str) -> Result<()> {
    if opts.batch_size == 0 || opts.shard_size == 0 {
        return Err(ModelError::Invalid(
            "batch size and shard size must be at least 1".into(),
        ));
    }
    if opts.hooks.is_empty() {
        return Err(ModelError::Invalid("no hooks selected".into()));
    }
    if !opts.token_level && opts.pools.is_empty() {
        return Err(ModelError::Invalid(
            "nothing to write: token-level activations are off and no pools are set".into(),
        ));
    }
    for hook in &opts.hooks {
        if !hook.storable() {
            return Err(ModelError::Invalid(format!(
                "`{hook}` cannot be stored: its width depends on each batch's sequence length; capture it through the library (glassbox_models::Capture) instead"
            )));
        }
        if !available.contains(hook) {
            return Err(ModelError::UnknownHook {
                name: hook.to_string(),
                hint: format!(" (not a hook point of this {family} model)"),
            });
        }
    }
    Ok(())
}

/// Streams `tokens.parquet`, writes `examples.parquet`; returns tokens kept per example.
fn tokenize_all(
    model: &LoadedModel,
    data: &TextDataset,
    run: &RunDir,
    opts: &ExtractOptions,
    progress: &dyn Progress,
) -> Result<Vec<u32>> {
    let chunk = opts.batch_size;
    progress.start("tokenize", data.len() as u64);
    // Every worker needs the token counts; one writes the tables.
    let mut writer = writes_tables(opts)
        .then(|| TokensWriter::create(run))
        .transpose()?;
    let mut n_tokens = Vec::with_capacity(data.len());
    for (c, texts) in data.texts.chunks(chunk.max(256)).enumerate() {
        let first = c * chunk.max(256);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encoded = model.tokenizer()?.encode(&refs)?;
        let rows: Vec<TokenRows<'_>> = encoded
            .iter()
            .enumerate()
            .map(|(i, e)| TokenRows {
                example_id: (first + i) as u64,
                ids: &e.ids,
                tokens: &e.tokens,
                spans: &e.spans,
            })
            .collect();
        for (i, e) in encoded.iter().enumerate() {
            if e.ids.is_empty() {
                return Err(ModelError::Invalid(format!(
                    "{}: row {} tokenises to zero tokens; give it some text",
                    data.source.display(),
                    first + i + 1
                )));
            }
            n_tokens.push(e.ids.len() as u32);
        }
        if let Some(writer) = writer.as_mut() {
            writer.write(&rows)?;
        }
        progress.advance(texts.len() as u64);
    }
    if let Some(writer) = writer {
        writer.finish()?;
        write_examples(run, data, &n_tokens)?;
    }
    progress.finish();
    Ok(n_tokens)
}
