//! The `dictionary` stage: SAEs and unit explanations (see `glassbox_concepts::dictionary`).

use super::{Completion, Stage, Transaction};
use crate::config::DictionarySection;
use crate::fingerprint::fingerprint;
use anyhow::{Context, Result};
use glassbox_concepts::dictionary::{run_dictionary, HookSummary, Outcome};
use glassbox_concepts::dictionary_check::check;
use glassbox_data::grid::ImageCells;
use glassbox_data::HookPoint;
use glassbox_data::{Progress, RunDir};

/// How a dictionary stage run ended.
#[derive(Debug)]
pub enum DictionaryRun {
    /// Already up to date: nothing new.
    UpToDate,
    /// Finished: what each hook got.
    Complete(Vec<HookSummary>),
    /// SAE training paused by `pause_after` (run again to resume).
    Paused {
        /// The hook whose SAE was training.
        hook: HookPoint,
        /// Steps done.
        step: usize,
        /// Steps in all.
        steps: usize,
    },
}

/// Runs the stage.
pub fn run_dictionary_stage(
    run: &RunDir,
    settings: &DictionarySection,
    force: bool,
    pause_after: Option<usize>,
    progress: &dyn Progress,
) -> Result<DictionaryRun> {
    let started = std::time::Instant::now();
    let manifest = run.require_stage("extract")?;
    // Settings first: NaN serialises as null, so `--lr NaN` would otherwise match the default's
    // fingerprint and pass as up to date.
    check(run, settings)?;
    let cells = if super::run_model::run_modality(run) == glassbox_data::Modality::Vision {
        Some(image_cells(run, settings)?)
    } else {
        None
    };
    let extract = manifest
        .stage_fingerprint("extract")
        .unwrap_or_default()
        .to_owned();
    // Probe weights and CAVs enter the explanations (cosines), so their stages count too.
    let params = serde_json::json!({
        "extract": extract,
        "probe": manifest.stage_fingerprint("probe"),
        "tcav": manifest.stage_fingerprint("tcav"),
        "dictionary": settings,
    });
    let fp = fingerprint("dictionary", &params);
    if !force
        && manifest.stage_fingerprint("dictionary") == Some(fp.as_str())
        && !Transaction::pending(run, "dictionary", &fp)
    {
        crate::fingerprint::note_up_to_date(progress, &manifest, "dictionary", "");
        return Ok(DictionaryRun::UpToDate);
    }
    // The SAEs' causal-LM extras reload the model after training and explaining: find it now.
    if !settings.hooks.is_empty() || !settings.load.is_empty() || !settings.transcoders.is_empty() {
        super::run_model::require_run_model(run)?;
    }
    // --force retrains from scratch: no reused SAE, no checkpoint.
    let tx = Transaction::begin(run, "dictionary", vec!["dictionary".into()], &fp, !force)?;
    if !force && !tx.resumed() {
        seed_reusable_saes(run, tx.run())?;
    }
    match run_dictionary(
        tx.run(),
        settings,
        &extract,
        pause_after,
        cells.as_ref(),
        progress,
    )? {
        Outcome::Paused { hook, step, steps } => {
            tx.keep_for_resume();
            Ok(DictionaryRun::Paused { hook, step, steps })
        }
        Outcome::Complete(summaries) => {
            // Causal LMs: promoted tokens and next-token loss with the SAE spliced in.
            let sae_hooks: Vec<HookPoint> = summaries
                .iter()
                .filter(|s| s.source == "trained" || s.source == "loaded")
                .map(|s| s.hook)
                .collect();
            if !sae_hooks.is_empty() || !settings.transcoders.is_empty() {
                let model = super::run_model::load_run_model(run)?;
                if model.model.unembedding().is_some() {
                    progress.note("dictionary: splicing the SAEs and transcoders into the causal LM (CE loss recovered, KL) and reading promoted tokens");
                    super::dictionary_lm::add_lm_outputs(tx.run(), &model, &sae_hooks)?;
                    super::dictionary_lm::add_transcoder_outputs(
                        tx.run(),
                        &model,
                        &settings.transcoders,
                    )?;
                }
            }
            let done = Completion {
                stage: Stage::Dictionary,
                fingerprint: fp,
                seed: Some(settings.sae.seed),
                params,
                started,
            };
            tx.commit(
                done,
                |_| {},
                |config| config.dictionary = Some(settings.clone()),
            )?;
            Ok(DictionaryRun::Complete(summaries))
        }
    }
}

/// An image run's cells in place of tokens: each dictionary hook's grid at the model's input
/// size. A hook with a single position (pooled features, logits) has no cells to explain and
/// is refused by name; token-level labels have no words to attach to.
fn image_cells(run: &RunDir, settings: &DictionarySection) -> Result<ImageCells> {
    if let Some(l) = settings.token_labels.first() {
        anyhow::bail!(
            "[dictionary] token_labels = [\"{l}\"]: token-level labels label words, and this is an image run; use sequence labels (`labels`), which apply to every cell of an image"
        );
    }
    if !settings.load.is_empty() {
        anyhow::bail!(
            "[dictionary] load: pretrained SAE suites are for language models; on an image run train one (`hooks`) or explain the channels (`neurons`)"
        );
    }
    let model = super::run_model::load_run_model(run)?;
    let input = super::run_model::input_size(run, &model)?;
    let examples = glassbox_data::examples::read_examples(run)?;
    // The files' own sizes (headers only), to map cells back onto them.
    let data_root = run
        .require_stage("extract")?
        .data
        .map(|d| d.locate())
        .map(|p| {
            if p.is_dir() {
                p
            } else {
                p.parent().map(|q| q.to_path_buf()).unwrap_or_default()
            }
        });
    let source_sizes = examples
        .example_ids
        .iter()
        .zip(&examples.texts)
        .filter_map(|(id, text)| {
            let file = data_root.as_ref()?.join(text);
            Some((*id, image::image_dimensions(file).ok()?))
        })
        .collect();
    let mut cells = ImageCells {
        source_sizes,
        preprocessor: Some(model.preprocessor()?),
        image_paths: examples
            .example_ids
            .iter()
            .copied()
            .zip(examples.texts.iter().cloned())
            .collect(),
        example_ids: examples.example_ids,
        ..Default::default()
    };
    for &hook in settings.hooks.iter().chain(&settings.neurons) {
        match model.model.hook_grid(hook, input).filter(|g| g.cells() >= 2) {
            Some(grid) => {
                cells.grids.insert(hook, grid);
            }
            None => anyhow::bail!(
                "[dictionary] hook `{hook}` has a single position per image (pooled features, logits): an SAE there would explain whole images, not regions; choose a feature-map or patch-token hook"
            ),
        }
    }
    Ok(cells)
}

/// Copies the run's trained SAEs (`dictionary/hook=*/sae/`) into the staging folder, where the
/// stage reuses each one whose training fingerprint still matches instead of retraining it.
fn seed_reusable_saes(live: &RunDir, staged: &RunDir) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(live.dictionary_root()) else {
        return Ok(());
    };
    // SAEs in `sae/`; transcoders in `sparsify/` or `saelens/`.
    for entry in entries.flatten() {
        for folder in ["sae", "sparsify", "saelens"] {
            let saved = entry.path().join(folder);
            if !saved.is_dir() {
                continue;
            }
            let to = staged
                .dictionary_root()
                .join(entry.file_name())
                .join(folder);
            std::fs::create_dir_all(&to)
                .with_context(|| format!("cannot create {}", to.display()))?;
            for file in std::fs::read_dir(&saved)?.flatten() {
                let from = file.path();
                if from.is_file() {
                    // A copy, not a hard link: nothing written in staging may reach the run.
                    std::fs::copy(&from, to.join(file.file_name()))
                        .with_context(|| format!("cannot copy {}", from.display()))?;
                }
            }
        }
    }
    Ok(())
}
