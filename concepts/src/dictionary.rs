//! The `dictionary` stage's work: train (or load) an SAE per hook on the store's token rows,
//! measure it against a PCA baseline, and explain its features and the raw neurons of chosen
//! hooks. Writes under `dictionary/hook=<hook>/`:
//! `sae/` (SAELens layout), `metrics.json`, `features.parquet`, `feature_examples.parquet`,
//! `feature_labels.parquet`, `feature_directions.parquet`, and `neurons*.parquet` likewise.

pub use crate::dictionary_options::DictionaryOptions;
pub use crate::dictionary_outputs::{add_to_metrics, HookSummary};
use crate::dictionary_outputs::{model_name, summary, write_metrics};
pub use crate::dictionary_transcoder::TranscoderSpec;
use crate::dictionary_transcoder::{StageRows, Transcoders};
use crate::explain::{self, inputs, Units};
use crate::sae::fit::{evaluate, fit, FitControl};
use crate::sae::metrics::Metrics;
use crate::sae::pca::PcaBaseline;
use crate::sae::saelens::{self, Provenance};
use crate::sae::stream::{RowId, RowSource, Split, StoreRows};
use crate::sae::{Sae, SaeOptions};
use crate::sparse_probing;
use crate::ConceptError;
use glassbox_data::examples::read_examples;
use glassbox_data::grid::ImageCells;
use glassbox_data::store::PartStream;
use glassbox_data::tokens::{read_tokens, Tokens};
use glassbox_data::HookPoint;
use glassbox_data::{Progress, RunDir};
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A finished stage, or a training paused by `pause_after` (run again to continue).
#[derive(Debug, Clone)]
pub enum Outcome {
    Complete(Vec<HookSummary>),
    Paused {
        hook: HookPoint,
        step: usize,
        steps: usize,
    },
}

/// Runs the stage's work. `upstream` fingerprints the store (a trained SAE is reused when its
/// training fingerprint matches).
pub fn run_dictionary(
    run: &RunDir,
    options: &DictionaryOptions,
    upstream: &str,
    pause_after: Option<usize>,
    cells: Option<&ImageCells>,
    progress: &dyn Progress,
) -> Result<Outcome, ConceptError> {
    if options.nothing_to_do() {
        return Err(ConceptError::Invalid(
            "[dictionary] names no hooks, no SAEs to load, no transcoders and no neuron hooks: \
             nothing to do"
                .into(),
        ));
    }
    let examples = read_examples(run)?;
    // Image runs have no tokens.parquet: their cells stand in, named per hook.
    let tokens = match cells {
        Some(c) => c.run_tokens(),
        None => read_tokens(run)?,
    };
    let source = run.examples().display().to_string();
    let labels = inputs::label_targets(
        &examples,
        &tokens,
        &options.labels,
        &options.token_labels,
        &source,
    )?;
    let special: Arc<HashSet<RowId>> = Arc::new(if options.sae.include_special_tokens {
        HashSet::new()
    } else {
        (0..tokens.len())
            .filter(|&t| tokens.spans[t].is_none())
            .map(|t| (tokens.example_ids[t], tokens.positions[t]))
            .collect()
    });
    let ctx = Context {
        run,
        options,
        tokens: &tokens,
        cells,
        labels: &labels,
        examples: &examples,
        special: &special,
        progress,
    };
    let mut summaries = Vec::new();
    for &hook in &options.hooks {
        match ctx.train_hook(hook, upstream, pause_after)? {
            Some(s) => summaries.push(s),
            None => {
                let checkpoint = checkpoint_path(run, hook);
                let (step, steps) = paused_at(&checkpoint, options, &ctx, hook)?;
                return Ok(Outcome::Paused { hook, step, steps });
            }
        }
    }
    for spec in &options.transcoders {
        match ctx.transcoder(spec, upstream, pause_after)? {
            Some(s) => summaries.push(s),
            None => {
                let (step, steps) = ctx.transcoder_paused_at(spec)?;
                let hook = spec.output;
                return Ok(Outcome::Paused { hook, step, steps });
            }
        }
    }
    for spec in &options.load {
        summaries.push(ctx.load_hook(spec)?);
    }
    for &hook in &options.neurons {
        summaries.push(ctx.neuron_hook(hook)?);
    }
    Ok(Outcome::Complete(summaries))
}

struct Context<'a> {
    run: &'a RunDir,
    options: &'a DictionaryOptions,
    tokens: &'a Tokens,
    cells: Option<&'a ImageCells>,
    labels: &'a [explain::LabelTarget],
    examples: &'a glassbox_data::examples::Examples,
    /// Shared by every row source the stage opens (one per pass).
    special: &'a Arc<HashSet<RowId>>,
    progress: &'a dyn Progress,
}

fn checkpoint_path(run: &RunDir, hook: HookPoint) -> PathBuf {
    run.dictionary_dir(hook).join("checkpoint.safetensors")
}

fn paused_at(
    checkpoint: &Path,
    options: &DictionaryOptions,
    ctx: &Context<'_>,
    hook: HookPoint,
) -> Result<(usize, usize), ConceptError> {
    let (_, meta) = crate::sae::tensors_metadata(checkpoint)?;
    let step = meta.get("step").and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut rows = ctx.rows(hook, Split::Train)?;
    let resolved = options.sae.resolve(rows.width(), rows.count()?)?;
    Ok((step, resolved.steps))
}

impl StageRows for Context<'_> {
    fn run(&self) -> &RunDir {
        self.run
    }
    fn sae_options(&self) -> &SaeOptions {
        &self.options.sae
    }
    fn progress(&self) -> &dyn Progress {
        self.progress
    }
    fn rows(&self, hook: HookPoint, split: Split) -> Result<StoreRows, ConceptError> {
        Context::rows(self, hook, split)
    }
    fn explain_units_at(
        &self,
        hook: HookPoint,
        directions_at: HookPoint,
        dir: &Path,
        units: Units<'_>,
    ) -> Result<(), ConceptError> {
        Context::explain_units_at(self, hook, directions_at, dir, units, "feature")
    }
}

impl Context<'_> {
    fn rows(&self, hook: HookPoint, split: Split) -> Result<StoreRows, ConceptError> {
        let dir = self.run.activations_dir(hook);
        if !dir.is_dir() {
            let stored = self.run.stored_hooks(false).unwrap_or_default();
            return Err(ConceptError::Invalid(format!(
                "hook `{hook}` is not in the store's token-level activations ({}); stored hooks: {}. \
                 Extract it (with token_level = true) or pick a stored one",
                dir.display(),
                if stored.is_empty() { "none".to_owned() } else { glassbox_data::hook_point::join(&stored) }
            )));
        }
        let special = (!self.options.sae.include_special_tokens).then(|| Arc::clone(self.special));
        StoreRows::open(
            PartStream::open(&dir)?,
            hook,
            split,
            self.options.sae.eval_fraction,
            self.options.sae.seed,
            special,
        )
    }

    /// `None` when training paused before the end.
    fn train_hook(
        &self,
        hook: HookPoint,
        upstream: &str,
        pause_after: Option<usize>,
    ) -> Result<Option<HookSummary>, ConceptError> {
        let dir = self.run.dictionary_dir(hook);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ConceptError::Invalid(format!("{}: {e}", dir.display())))?;
        let mut train = self.rows(hook, Split::Train)?;
        let train_rows = train.count()?;
        let fingerprint = glassbox_data::hash::sha256_bytes(
            json!({ "upstream": upstream, "hook": hook, "sae": self.options.sae })
                .to_string()
                .as_bytes(),
        );
        let sae_dir = dir.join("sae");
        let reusable = saelens::load(&sae_dir)
            .ok()
            .filter(|l| l.fingerprint.as_deref() == Some(fingerprint.as_str()));
        let (sae, training) = match reusable {
            Some(loaded) => {
                self.progress.note(&format!(
                    "dictionary: SAE at `{hook}` is up to date; re-explaining"
                ));
                (loaded.sae, None)
            }
            None => {
                let checkpoint = checkpoint_path(self.run, hook);
                let control = FitControl {
                    checkpoint: Some(&checkpoint),
                    fingerprint: fingerprint.clone(),
                    pause_after,
                };
                let fitted = fit(
                    train,
                    train_rows,
                    &self.options.sae,
                    &control,
                    self.progress,
                )?;
                if !fitted.complete {
                    return Ok(None);
                }
                (fitted.sae.clone(), Some(fitted))
            }
        };
        let mut eval = self.rows(hook, Split::Eval)?;
        let mut eval_rows = eval.count()?;
        let metrics = if eval_rows > 0 {
            evaluate(&sae, &mut eval, self.bootstrap())?
        } else {
            self.progress.note("dictionary: no held-out examples (eval_fraction too small); metrics are on the training rows");
            let mut train = self.rows(hook, Split::Train)?;
            eval_rows = train_rows;
            evaluate(&sae, &mut train, self.bootstrap())?
        };
        let pca = if self.options.pca_baseline {
            Some(self.pca_baseline(hook, &metrics, eval_rows > 0 && eval_rows != train_rows)?)
        } else {
            None
        };
        let mut extra = serde_json::Map::new();
        extra.insert("glassbox_fingerprint".into(), json!(fingerprint));
        extra.insert("glassbox_options".into(), json!(self.options.sae));
        saelens::save(
            &sae_dir,
            &sae,
            &Provenance {
                model_name: model_name(self.run),
                hook_name: hook.to_string(),
                extra,
            },
        )?;
        write_metrics(
            &dir,
            hook,
            "trained",
            &metrics,
            pca.as_ref(),
            training.as_ref(),
            train_rows,
            eval_rows,
            &self.options.sae,
        )?;
        let checkpoint = checkpoint_path(self.run, hook);
        if checkpoint.exists() {
            std::fs::remove_file(&checkpoint)
                .map_err(|e| ConceptError::Invalid(format!("{}: {e}", checkpoint.display())))?;
        }
        self.explain_units(hook, &dir, Units::Features(&sae), "feature")?;
        let sparse = self.sparse_probe(hook, &sae)?;
        let absorption = self.absorption(hook, &sae)?;
        Ok(Some(HookSummary {
            sparse_probing: sparse,
            absorption,
            ..summary(hook, "trained", &sae, metrics, pca, training.as_ref())
        }))
    }

    fn pca_baseline(
        &self,
        hook: HookPoint,
        metrics: &Metrics,
        held_out: bool,
    ) -> Result<Metrics, ConceptError> {
        let mut train = self.rows(hook, Split::Train)?;
        let (mut rows, mut ids) = (Vec::new(), Vec::new());
        while ids.len() < 65_536 && train.next_rows(&mut rows, &mut ids)? {}
        let components = (metrics.l0.round() as usize).max(1);
        let pca = PcaBaseline::fit(&rows, train.width(), components)?;
        let mut eval = self.rows(hook, if held_out { Split::Eval } else { Split::Train })?;
        pca.evaluate(&mut eval, self.bootstrap())
    }

    fn load_hook(&self, spec: &str) -> Result<HookSummary, ConceptError> {
        let (hook, folder) = match spec.split_once('=') {
            Some((h, f)) if !h.contains('/') => (Some(h.to_owned()), PathBuf::from(f)),
            _ => (None, PathBuf::from(spec)),
        };
        let loaded = crate::sae::formats::load_with(&folder, self.options.allow_pickle)?;
        let hook = hook.or(loaded.hook_name.clone()).ok_or_else(|| {
            ConceptError::Invalid(format!(
                "{}: the {} SAE's files name no hook; give it as <hook>={}",
                folder.display(),
                loaded.format,
                folder.display()
            ))
        })?;
        let hook: HookPoint = hook.parse().map_err(|e| {
            ConceptError::Invalid(format!(
                "{}: {e}; give the SAE's glassbox hook as <hook>={}",
                folder.display(),
                folder.display()
            ))
        })?;
        let mut all = self.rows(hook, Split::All)?;
        if all.width() != loaded.sae.d_in {
            return Err(ConceptError::Invalid(format!(
                "{}: the SAE's d_in is {} but hook `{hook}` has width {}; load it for a hook of that width",
                folder.display(),
                loaded.sae.d_in,
                all.width()
            )));
        }
        let rows = all.count()?;
        let metrics = evaluate(&loaded.sae, &mut all, self.bootstrap())?;
        let dir = self.run.dictionary_dir(hook);
        let mut extra = serde_json::Map::new();
        extra.insert("loaded_from".into(), json!(folder.display().to_string()));
        saelens::save(
            &dir.join("sae"),
            &loaded.sae,
            &Provenance {
                model_name: loaded.model_name.clone().unwrap_or_default(),
                hook_name: hook.to_string(),
                extra,
            },
        )?;
        write_metrics(
            &dir,
            hook,
            "loaded",
            &metrics,
            None,
            None,
            0,
            rows,
            &self.options.sae,
        )?;
        self.explain_units(hook, &dir, Units::Features(&loaded.sae), "feature")?;
        let sparse = self.sparse_probe(hook, &loaded.sae)?;
        let absorption = self.absorption(hook, &loaded.sae)?;
        Ok(HookSummary {
            sparse_probing: sparse,
            absorption,
            ..summary(hook, "loaded", &loaded.sae, metrics, None, None)
        })
    }

    fn neuron_hook(&self, hook: HookPoint) -> Result<HookSummary, ConceptError> {
        let width = self.rows(hook, Split::All)?.width();
        let dir = self.run.dictionary_dir(hook);
        self.explain_units(hook, &dir, Units::Neurons { width }, "neuron")?;
        Ok(HookSummary {
            hook,
            source: "neurons".into(),
            units: width,
            architecture: None,
            k: None,
            metrics: None,
            pca: None,
            steps: None,
            resumed_from: None,
            sparse_probing: Vec::new(),
            absorption: None,
        })
    }

    /// Feature absorption of the SAE at `hook` (text runs: image cells spell no words).
    fn absorption(
        &self,
        hook: HookPoint,
        sae: &Sae,
    ) -> Result<Option<crate::absorption::AbsorptionSummary>, ConceptError> {
        if self.cells.is_some() {
            return Ok(None);
        }
        let mut rows = self.rows(hook, Split::All)?;
        let dir = self.run.dictionary_dir(hook);
        let options = &self.options.absorption;
        let summary = crate::absorption::run_for_hook(
            &dir,
            sae,
            &mut rows,
            self.tokens,
            options,
            self.progress,
        )?;
        if let Some(s) = &summary {
            let block = crate::absorption::metrics_block(s, options);
            add_to_metrics(&dir, "absorption", block)?;
        }
        Ok(summary)
    }

    /// Sparse probing of the SAE's features against the hook's neurons (pooled per example).
    fn sparse_probe(
        &self,
        hook: HookPoint,
        sae: &Sae,
    ) -> Result<Vec<sparse_probing::AtK>, ConceptError> {
        let label_names = inputs::sequence_label_names(self.examples, &self.options.labels);
        let mut rows = self.rows(hook, Split::All)?;
        let rows = sparse_probing::run_for_hook(
            &self.run.dictionary_dir(hook),
            sparse_probing::HookInputs {
                sae,
                rows: &mut rows,
                examples: self.examples,
                label_names: &label_names,
                source: &self.run.examples().display().to_string(),
            },
            &self.options.sparse_probing,
            self.progress,
        )?;
        Ok(sparse_probing::by_k(&rows))
    }

    /// Explains `units` over `hook`'s rows into `dir`.
    fn explain_units(
        &self,
        hook: HookPoint,
        dir: &Path,
        units: Units<'_>,
        unit: &str,
    ) -> Result<(), ConceptError> {
        self.explain_units_at(hook, hook, dir, units, unit)
    }

    /// [`Self::explain_units`] with the units' directions compared with the probe and CAV
    /// directions found at `directions_at` (a transcoder's output hook).
    fn explain_units_at(
        &self,
        hook: HookPoint,
        directions_at: HookPoint,
        dir: &Path,
        units: Units<'_>,
        unit: &str,
    ) -> Result<(), ConceptError> {
        let mut all = self.rows(hook, Split::All)?;
        let directions = inputs::run_directions(self.run, directions_at)?;
        let hook_cells = self.cells.and_then(|c| c.hook_tokens(hook));
        let e = explain::explain(
            units,
            &mut all,
            hook_cells.as_ref().unwrap_or(self.tokens),
            self.labels,
            &directions,
            &self.options.explain,
            self.progress,
        )?;
        let grid = self.cells.and_then(|c| Some((c, c.grids.get(&hook)?)));
        if let Some((_, grid)) = grid {
            // Where each position sits in the model input, for notebooks (and the report).
            let json = serde_json::to_vec_pretty(grid).expect("a grid serialises");
            glassbox_data::atomic::write_bytes(&dir.join("grid.json"), &json)?;
        }
        let columns = grid.map(|(cells, grid)| explain::write::CellColumns {
            grid,
            image_paths: &cells.image_paths,
            source_sizes: &cells.source_sizes,
            preprocessor: cells.preprocessor.as_ref(),
        });
        explain::write::write_with_cells(dir, unit, &e, columns.as_ref())
    }
}
