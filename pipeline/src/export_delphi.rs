//! `glassbox export delphi`: each chosen SAE of a run, encoded over the run's stored tokens and
//! written as delphi's latent cache (see `glassbox_concepts::delphi_cache`).

use crate::args_export::DelphiArgs;
use anyhow::{bail, Result};
use glassbox_concepts::delphi_cache::{write_delphi_cache, DelphiCache, DelphiOptions};
use glassbox_data::{HookPoint, Manifest, Progress, RunDir};

/// Writes every SAE of `hooks` (empty: every SAE of the run) under `args.target.out`.
pub fn export(
    run: &RunDir,
    hooks: &[HookPoint],
    args: &DelphiArgs,
    progress: &dyn Progress,
) -> Result<Vec<DelphiCache>> {
    let manifest = Manifest::load(run)?;
    if !manifest.stages.contains_key("dictionary") {
        bail!(
            "{}: no completed `dictionary` stage; run `glassbox dictionary` first",
            run.name()
        );
    }
    let Some(model) = manifest.model.as_ref() else {
        bail!("{}: the manifest names no model", run.name());
    };
    // delphi's cache indexes token ids of text sequences; an image run stores none.
    if !run.tokens().is_file() {
        bail!(
            "{}: no tokens.parquet — delphi's latent cache holds token sequences, so it is made from text runs; export an image run's SAEs with `glassbox export neuronpedia`",
            run.name()
        );
    }
    let chosen = glassbox_concepts::explain::read::sae_folders(run, hooks)?;
    let mut written = Vec::new();
    for (hook, dir) in &chosen {
        let sae = glassbox_concepts::sae::saelens::load(&dir.join("sae"))?.sae;
        let options = DelphiOptions {
            context: args.context_size,
            splits: args.splits,
            model_name: model.id.clone(),
            module: hook.to_string(),
            dataset: manifest
                .data
                .as_ref()
                .map(|d| d.path.clone())
                .unwrap_or_default(),
        };
        written.push(write_delphi_cache(
            run,
            *hook,
            &sae,
            &options,
            &args.target.out,
            progress,
        )?);
    }
    Ok(written)
}
