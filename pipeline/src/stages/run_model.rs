//! The model a run was extracted from, loaded again for the stages that need it (TCAV's
//! gradients, the dictionary's splicing), pinned to the recorded revision.

use crate::config::RunConfig;
use anyhow::{anyhow, Result};
use glassbox_data::Modality;
use glassbox_data::RunDir;
use glassbox_models::registry::modality_of;
use glassbox_models::{load_model, resolve, LoadOptions, LoadedModel, ModelSpec};

/// The run's model spec, pinned to its recorded revision for Hub models.
pub fn run_model_spec(run: &RunDir) -> Result<String> {
    let manifest = run.require_stage("extract")?;
    let record = manifest
        .model
        .ok_or_else(|| anyhow!("{}: the manifest records no model", run.root().display()))?;
    let config = RunConfig::load(run);
    let id = config.model.map(|m| m.id).unwrap_or(record.id.clone());
    Ok(if record.source == "hub" {
        format!(
            "{}@{}",
            id.split('@').next().unwrap_or(&id),
            record.revision
        )
    } else {
        id
    })
}

/// Loads the run's model at its recorded revision, with the extraction's load options.
pub fn load_run_model(run: &RunDir) -> Result<LoadedModel> {
    let spec: ModelSpec = run_model_spec(run)?.parse()?;
    Ok(load_model(resolve(&spec)?, extraction_load_options(run))?)
}

/// How a stage that takes its own `--model` loads `model`: with the extraction's weights and
/// compute precision when it is the run's own model (an 8B Llama extracted with
/// `--weights-dtype bf16` does not fit in memory as f32), else with the defaults.
pub fn load_options_for(run: &RunDir, model: &str) -> LoadOptions {
    let unpinned = |s: &str| s.split('@').next().unwrap_or(s).to_owned();
    let own = run_model_spec(run).is_ok_and(|spec| unpinned(&spec) == unpinned(model));
    if own {
        extraction_load_options(run)
    } else {
        LoadOptions::default()
    }
}

/// The extraction's load options, from the run's config.
fn extraction_load_options(run: &RunDir) -> LoadOptions {
    let extract = RunConfig::load(run).extract;
    LoadOptions {
        max_length: extract.as_ref().map(|e| e.max_length),
        allow_pickle: extract.as_ref().is_some_and(|e| e.allow_pickle),
        weights_dtype: extract
            .as_ref()
            .map(|e| e.weights_dtype)
            .unwrap_or_default(),
        compute_dtype: extract
            .as_ref()
            .map(|e| e.compute_dtype)
            .unwrap_or_default(),
    }
}

/// Finds the run's model in the cache without loading it: stages that reload the model at the
/// end of long work call this first, so a model that is gone is named before the work starts.
pub fn require_run_model(run: &RunDir) -> Result<()> {
    let spec: ModelSpec = run_model_spec(run)?.parse()?;
    resolve(&spec)?;
    Ok(())
}

/// What the run's model reads, from the manifest (by family for runs that predate the
/// recorded modality); text when nothing is recorded.
pub fn run_modality(run: &RunDir) -> Modality {
    glassbox_data::Manifest::load_or_default(run)
        .ok()
        .and_then(|m| m.model)
        .and_then(|m| m.modality.or_else(|| modality_of(&m.family)))
        .unwrap_or(Modality::Text)
}

/// The model input size of an image run: the preprocessor's crop or fixed size, else the first
/// image's size after resizing (a preprocessor that keeps sizes must see one size throughout).
pub fn input_size(run: &RunDir, model: &LoadedModel) -> Result<(usize, usize)> {
    let pre = model.preprocessor()?;
    if let Some((h, w)) = pre.output_size() {
        return Ok((h as usize, w as usize));
    }
    let manifest = run.require_stage("extract")?;
    let data = manifest
        .data
        .ok_or_else(|| anyhow!("{}: the manifest records no data set", run.root().display()))?;
    let dataset = glassbox_data::images::read_image_dataset(&data.locate())?;
    let first = dataset.path(0);
    let img = glassbox_data::images::load_rgb(&first)?;
    let (_, h, w) = pre.apply(&img, &first)?;
    Ok((h as usize, w as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use glassbox_models::{ComputeDtype, WeightsDtype};

    /// A run extracted from `org/model` with bf16 weights and bf16 products.
    fn run_with_bf16_extraction(dir: &std::path::Path) -> RunDir {
        let manifest = serde_json::json!({
            "glassbox_version": "test",
            "model": {"id": "org/model", "revision": "abc", "source": "hub", "family": "gemma2",
                      "modality": "text", "weights_sha256": "00"},
            "stages": {"extract": {"fingerprint": "f", "finished_at": "2026-12-06T00:00:00Z",
                                   "seconds": 1.0, "params": {}}}
        });
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
        let config = crate::config::RunConfig {
            model: Some(crate::config::ModelSection {
                id: "org/model".into(),
            }),
            extract: Some(crate::config::ExtractSection {
                weights_dtype: WeightsDtype::Bf16,
                compute_dtype: ComputeDtype::Bf16,
                ..Default::default()
            }),
            ..Default::default()
        };
        std::fs::write(dir.join("config.toml"), toml::to_string(&config).unwrap()).unwrap();
        RunDir::new(dir)
    }

    #[test]
    fn the_runs_own_model_loads_as_extraction_held_it() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_with_bf16_extraction(dir.path());
        for own in ["org/model", "org/model@abc"] {
            let o = load_options_for(&run, own);
            assert_eq!(o.weights_dtype, WeightsDtype::Bf16, "{own}");
            assert_eq!(o.compute_dtype, ComputeDtype::Bf16, "{own}");
        }
        let other = load_options_for(&run, "org/other");
        assert_eq!(other.weights_dtype, WeightsDtype::Auto);
        assert_eq!(other.compute_dtype, ComputeDtype::default());
    }
}
