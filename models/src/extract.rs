//! The extraction loop: data → tokens → model → hooked activations → the Parquet store.
//!
//! Work is cut into shards of `shard_size` examples. Shard `k` writes `part-k.parquet` under
//! every hook (and pool) folder, each file streamed to a temp name and renamed when complete,
//! and only then a completion marker `_progress/extract/shard-k.done`. A re-run skips shards
//! with a marker and rewrites any without one, so a killed extraction resumes with no lost or
//! duplicated rows. Memory is bounded by one batch.

use crate::hooks::{Capture, HookPoint};
use crate::loader::{LoadedModel, TokenBatch};
use crate::pool::Pool;
use crate::tokenizer::Encoded;
use crate::{ModelError, Result};
use glassbox_data::examples::write_examples;
use glassbox_data::run::part_name;
use glassbox_data::store::{ActivationWriter, ShardMeta};
use glassbox_data::tokens::{TokenRows, TokensWriter};
use glassbox_data::{atomic, ActDtype, DataError, Progress, RunDir, StoreKind, TextDataset};
use std::path::PathBuf;

/// How to extract.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    pub hooks: Vec<HookPoint>,
    /// Sequence-level pools written under `pooled/`.
    pub pools: Vec<Pool>,
    /// Write one row per token under `activations/` (pools are written either way).
    pub token_level: bool,
    pub batch_size: usize,
    pub dtype: ActDtype,
    /// Examples per shard: the unit of resumption.
    pub shard_size: usize,
}

/// What an extraction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractSummary {
    pub n_examples: u64,
    pub n_tokens: u64,
    pub shards: usize,
    /// Shards found complete from an earlier, interrupted run and kept.
    pub shards_resumed: usize,
}

/// Tokenises the data set, writes `examples.parquet` and `tokens.parquet`, then runs every
/// shard that is not already complete.
pub fn extract(
    model: &LoadedModel,
    data: &TextDataset,
    run: &RunDir,
    opts: &ExtractOptions,
    progress: &dyn Progress,
) -> Result<ExtractSummary> {
    validate(model, opts)?;
    let n_tokens = tokenize_all(model, data, run, opts.batch_size, progress)?;
    let total_tokens: u64 = n_tokens.iter().map(|&n| n as u64).sum();
    let n = data.len();
    let n_shards = n.div_ceil(opts.shard_size);
    let markers = run.progress_dir("extract");
    std::fs::create_dir_all(&markers).map_err(|e| DataError::Io {
        path: markers.clone(),
        source: e,
    })?;

    progress.start("extract", total_tokens);
    let mut resumed = 0;
    for shard in 0..n_shards {
        let range = shard * opts.shard_size..((shard + 1) * opts.shard_size).min(n);
        let shard_tokens: u64 = n_tokens[range.clone()].iter().map(|&t| t as u64).sum();
        let marker = markers.join(format!("shard-{shard:05}.done"));
        if marker.exists() {
            resumed += 1;
            progress.advance(shard_tokens);
            continue;
        }
        run_shard(model, data, run, opts, shard, range, progress)?;
        atomic::write_bytes(&marker, format!("{shard_tokens}\n").as_bytes())?;
    }
    progress.finish();
    if resumed > 0 {
        progress.note(&format!(
            "resumed: kept {resumed} of {n_shards} shards completed by an earlier run"
        ));
    }
    Ok(ExtractSummary {
        n_examples: n as u64,
        n_tokens: total_tokens,
        shards: n_shards,
        shards_resumed: resumed,
    })
}

fn validate(model: &LoadedModel, opts: &ExtractOptions) -> Result<()> {
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
    let available = model.model.hook_points();
    for hook in &opts.hooks {
        if !available.contains(hook) {
            return Err(ModelError::UnknownHook {
                name: hook.to_string(),
                hint: format!(" (not a hook point of this {} model)", model.model.family()),
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
    chunk: usize,
    progress: &dyn Progress,
) -> Result<Vec<u32>> {
    progress.start("tokenize", data.len() as u64);
    let mut writer = TokensWriter::create(run)?;
    let mut n_tokens = Vec::with_capacity(data.len());
    for (c, texts) in data.texts.chunks(chunk.max(256)).enumerate() {
        let first = c * chunk.max(256);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encoded = model.tokenizer.encode(&refs)?;
        let rows: Vec<TokenRows<'_>> = encoded
            .iter()
            .enumerate()
            .map(|(i, e)| TokenRows {
                example_id: (first + i) as u64,
                ids: &e.ids,
                tokens: &e.tokens,
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
        writer.write(&rows)?;
        progress.advance(texts.len() as u64);
    }
    writer.finish()?;
    write_examples(run, data, &n_tokens)?;
    progress.finish();
    Ok(n_tokens)
}

/// The writers of one hook in one shard.
struct HookWriters {
    hook: HookPoint,
    width: usize,
    tokens: Option<ActivationWriter>,
    pools: Vec<(Pool, ActivationWriter)>,
}

fn shard_files(run: &RunDir, opts: &ExtractOptions, hook: &str, shard: usize) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if opts.token_level {
        files.push(run.activations_dir(hook).join(part_name(shard)));
    }
    for pool in &opts.pools {
        files.push(
            run.pooled_dir(hook, &pool.to_string())
                .join(part_name(shard)),
        );
    }
    files
}

fn run_shard(
    model: &LoadedModel,
    data: &TextDataset,
    run: &RunDir,
    opts: &ExtractOptions,
    shard: usize,
    range: std::ops::Range<usize>,
    progress: &dyn Progress,
) -> Result<()> {
    let meta = |hook: &HookPoint, kind: StoreKind, pool: Option<Pool>| ShardMeta {
        model_id: model.resolved.id.clone(),
        revision: model.resolved.revision.clone(),
        hook: hook.to_string(),
        kind,
        pool: pool.map(|p| p.to_string()),
        width: model.model.hook_width(*hook),
        dtype: opts.dtype,
        layer: hook.layer(),
        depth: hook.depth(),
    };
    let mut writers = Vec::with_capacity(opts.hooks.len());
    for hook in &opts.hooks {
        let name = hook.to_string();
        // A shard without a marker may have left some renamed files behind: start it afresh.
        for file in shard_files(run, opts, &name, shard) {
            for stale in [atomic::temp_path(&file), file] {
                if stale.exists() {
                    std::fs::remove_file(&stale).map_err(|e| DataError::Io {
                        path: stale.clone(),
                        source: e,
                    })?;
                }
            }
        }
        let tokens = if opts.token_level {
            let path = run.activations_dir(&name).join(part_name(shard));
            Some(ActivationWriter::create(
                &path,
                meta(hook, StoreKind::Activation, None),
            )?)
        } else {
            None
        };
        let mut pools = Vec::new();
        for &pool in &opts.pools {
            let path = run
                .pooled_dir(&name, &pool.to_string())
                .join(part_name(shard));
            pools.push((
                pool,
                ActivationWriter::create(&path, meta(hook, StoreKind::Pooled, Some(pool)))?,
            ));
        }
        writers.push(HookWriters {
            hook: *hook,
            width: model.model.hook_width(*hook),
            tokens,
            pools,
        });
    }

    for batch_start in range.clone().step_by(opts.batch_size) {
        let batch_end = (batch_start + opts.batch_size).min(range.end);
        let texts: Vec<&str> = data.texts[batch_start..batch_end]
            .iter()
            .map(String::as_str)
            .collect();
        let encoded = model.tokenizer.encode(&texts)?;
        let refs: Vec<&Encoded> = encoded.iter().collect();
        let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device)?;
        let mut capture = Capture::new(opts.hooks.iter().copied());
        model.model.forward(&batch, &mut capture)?;
        write_batch(&mut writers, &capture, &batch, batch_start as u64)?;
        progress.advance(batch.lengths.iter().map(|&l| l as u64).sum());
    }

    for w in writers {
        if let Some(t) = w.tokens {
            t.finish()?;
        }
        for (_, p) in w.pools {
            p.finish()?;
        }
    }
    Ok(())
}

/// Drops padding and writes one batch's rows for every hook.
fn write_batch(
    writers: &mut [HookWriters],
    capture: &Capture,
    batch: &TokenBatch,
    first_id: u64,
) -> Result<()> {
    let (_, t) = batch.input_ids.dims2()?;
    for w in writers.iter_mut() {
        let tensor = capture.captured.get(&w.hook).ok_or_else(|| {
            ModelError::Invalid(format!("the model never reached hook `{}`", w.hook))
        })?;
        let width = w.width;
        let dims = tensor.dims();
        if dims.len() != 3 || dims[1] != t || dims[2] != width {
            return Err(ModelError::Invalid(format!(
                "hook `{}` produced shape {dims:?}, expected [batch, {t}, {width}]",
                w.hook
            )));
        }
        with_f32_slice(tensor, |values| {
            write_hook_rows(w, values, batch, t, first_id)
        })??;
    }
    Ok(())
}

/// Calls `f` with the tensor's values as a contiguous f32 slice, borrowing the CPU storage
/// when possible (no copy) and copying otherwise.
fn with_f32_slice<R>(t: &candle_core::Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            if let Ok(all) = cpu.as_slice::<f32>() {
                return Ok(f(&all[start..end]));
            }
        }
    }
    let copy: Vec<f32> = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    Ok(f(&copy))
}

/// Writes one hook's rows of a batch: token rows without padding, and each pool.
fn write_hook_rows(
    w: &mut HookWriters,
    values: &[f32],
    batch: &TokenBatch,
    t: usize,
    first_id: u64,
) -> Result<()> {
    let width = w.width;
    let mut ids = Vec::new();
    let mut positions = Vec::new();
    let mut rows = Vec::new();
    let mut pooled: Vec<Vec<f32>> = vec![Vec::new(); w.pools.len()];
    let mut pooled_ids = Vec::with_capacity(batch.lengths.len());
    let mut out = vec![0f32; width];
    for (i, &len) in batch.lengths.iter().enumerate() {
        let id = first_id + i as u64;
        let example = &values[i * t * width..(i * t + len) * width];
        if w.tokens.is_some() {
            ids.extend(std::iter::repeat_n(id, len));
            positions.extend(0..len as u32);
            rows.extend_from_slice(example);
        }
        for (j, (pool, _)) in w.pools.iter().enumerate() {
            pool.apply(example, width, &mut out);
            pooled[j].extend_from_slice(&out);
        }
        pooled_ids.push(id);
    }
    if let Some(tokens) = w.tokens.as_mut() {
        tokens.write(&ids, Some(&positions), &rows)?;
    }
    for ((_, writer), values) in w.pools.iter_mut().zip(&pooled) {
        writer.write(&pooled_ids, None, values)?;
    }
    Ok(())
}
