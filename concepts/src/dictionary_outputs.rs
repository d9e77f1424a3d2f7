//! What the dictionary stage records per hook besides the units: the summary it returns and
//! `metrics.json` (the SAE's metrics with their definitions, the PCA baseline, the training).

use crate::sae::fit::Fitted;
use crate::sae::metrics::{Metrics, DEFINITIONS};
use crate::sae::{Architecture, Sae, SaeOptions};
use crate::ConceptError;
use glassbox_data::{atomic, HookPoint, RunDir};
use serde::Serialize;
use serde_json::json;
use std::path::Path;

/// What the stage did at one hook.
#[derive(Debug, Clone, Serialize)]
pub struct HookSummary {
    pub hook: HookPoint,
    /// `"trained"`, `"loaded"` or `"neurons"`.
    pub source: String,
    pub units: usize,
    pub architecture: Option<String>,
    pub k: Option<usize>,
    pub metrics: Option<Metrics>,
    pub pca: Option<Metrics>,
    pub steps: Option<usize>,
    pub resumed_from: Option<usize>,
    /// Sparse probing per k (empty when it did not run).
    pub sparse_probing: Vec<crate::sparse_probing::AtK>,
    /// First-letter feature absorption (`None` when it did not run).
    pub absorption: Option<crate::absorption::AbsorptionSummary>,
}

/// The run's model id (empty when the manifest names none).
pub(crate) fn model_name(run: &RunDir) -> String {
    glassbox_data::Manifest::load(run)
        .ok()
        .and_then(|m| m.model.map(|m| m.id))
        .unwrap_or_default()
}

pub(crate) fn summary(
    hook: HookPoint,
    source: &str,
    sae: &Sae,
    metrics: Metrics,
    pca: Option<Metrics>,
    training: Option<&Fitted>,
) -> HookSummary {
    HookSummary {
        hook,
        source: source.to_owned(),
        units: sae.width,
        architecture: Some(sae.architecture.name().to_owned()),
        k: match sae.architecture {
            Architecture::TopK { k } => Some(k),
            _ => None,
        },
        metrics: Some(metrics),
        pca,
        steps: training.map(|t| t.steps_done),
        resumed_from: training.and_then(|t| t.resumed_from),
        sparse_probing: Vec::new(),
        absorption: None,
    }
}

/// Sets `key` of the `metrics.json` in `dir` to `value` (a later step's block: absorption, a
/// transcoder's description, the splice), rewriting the file atomically.
pub fn add_to_metrics(dir: &Path, key: &str, value: serde_json::Value) -> Result<(), ConceptError> {
    let path = dir.join("metrics.json");
    let bad = |e: &dyn std::fmt::Display| ConceptError::Invalid(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(&path).map_err(|e| bad(&e))?;
    let mut metrics: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e))?;
    metrics[key] = value;
    let text = serde_json::to_string_pretty(&metrics).expect("JSON values serialise");
    atomic::write_bytes(&path, text.as_bytes())?;
    Ok(())
}

/// The SAE's explained variance minus the PCA baseline's, with a paired interval: both were
/// evaluated on the same rows with the same bootstrap seed, so resample `b` of each holds the
/// same texts. `None` when either has no resamples.
fn sae_minus_pca(sae: &Metrics, pca: &Metrics) -> Option<serde_json::Value> {
    let (a, b) = (
        &sae.resampled_explained_variance,
        &pca.resampled_explained_variance,
    );
    if a.is_empty() || a.len() != b.len() {
        return None;
    }
    let differences: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let ci = crate::sae::ev_bootstrap::interval(&differences, sae.texts.min(pca.texts))?;
    Some(json!({
        "explained_variance": sae.explained_variance - pca.explained_variance,
        "ci_low": ci.0,
        "ci_high": ci.1,
    }))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn write_metrics(
    dir: &Path,
    hook: HookPoint,
    source: &str,
    metrics: &Metrics,
    pca: Option<&Metrics>,
    training: Option<&Fitted>,
    train_rows: u64,
    eval_rows: u64,
    options: &SaeOptions,
) -> Result<(), ConceptError> {
    let mut definitions: serde_json::Map<String, serde_json::Value> = DEFINITIONS
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    definitions.insert(
        "sae_minus_pca".into(),
        json!("the SAE's explained variance minus the PCA baseline's on the same rows, with a paired expanded percentile 95% interval (the same bootstrap resamples of the texts for both)"),
    );
    let training = training.map(|t| {
        json!({
            "steps": t.steps_done,
            "batch_size": t.resolved.batch_size,
            "lr": t.resolved.lr,
            "warmup_steps": t.resolved.warmup_steps,
            "k_aux": t.resolved.k_aux,
            "input_scale": t.scale,
            "resumed_from": t.resumed_from,
            "dead_fraction_training": t.dead_fraction_training,
            "curve": t.curve,
        })
    });
    let value = json!({
        "hook": hook,
        "source": source,
        "train_rows": train_rows,
        "eval_rows": eval_rows,
        "sae": metrics,
        "pca_baseline": pca,
        "sae_minus_pca": pca.and_then(|p| sae_minus_pca(metrics, p)),
        "definitions": definitions,
        "dense_threshold": crate::sae::metrics::DENSE_THRESHOLD,
        "training": training,
        "options": options,
    });
    let text = serde_json::to_string_pretty(&value).expect("JSON values serialise");
    atomic::write_bytes(&dir.join("metrics.json"), text.as_bytes())?;
    Ok(())
}
