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
    let extract = RunConfig::load(run).extract;
    let options = LoadOptions {
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
    };
    let spec: ModelSpec = run_model_spec(run)?.parse()?;
    Ok(load_model(resolve(&spec)?, options)?)
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
    let dataset = glassbox_data::images::read_image_dataset(std::path::Path::new(&data.path))?;
    let first = dataset.path(0);
    let img = glassbox_data::images::load_rgb(&first)?;
    let (_, h, w) = pre.apply(&img, &first)?;
    Ok((h as usize, w as usize))
}
