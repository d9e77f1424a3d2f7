//! Stage orchestration: fingerprints, skipping, invalidation of downstream stages.

pub mod dictionary;
mod dictionary_lm;
pub mod extract;
pub mod probe;
pub mod report;
mod targets;
pub mod tcav;
pub mod tcav_vision;

use crate::config::RunConfig;
use anyhow::Result;
use glassbox_data::manifest::now_rfc3339;
use glassbox_data::{Manifest, RunDir, StageRecord};

/// Stages in order; re-running one invalidates those after it.
pub const STAGES: &[&str] = &["extract", "probe", "tcav", "dictionary", "report"];

/// Forgets `stage` and every stage after it in the manifest, so an interrupted re-run is never
/// mistaken for a complete one.
pub fn invalidate_from(run: &RunDir, stage: &str) -> Result<Manifest> {
    let mut manifest = Manifest::load_or_default(run)?;
    let start = STAGES.iter().position(|s| *s == stage).unwrap_or(0);
    let mut changed = false;
    for s in &STAGES[start..] {
        changed |= manifest.stages.remove(*s).is_some();
    }
    if changed {
        manifest.save(run)?;
    }
    // Stored target gradients come from the probes: re-probing or re-extracting voids them.
    if start < STAGES.iter().position(|s| *s == "tcav").unwrap_or(0) {
        remove_path(&run.root().join("gradients"))?;
    }
    Ok(manifest)
}

/// What a finished stage records in the manifest.
pub(crate) struct Completion {
    pub stage: &'static str,
    pub fingerprint: String,
    pub seed: Option<u64>,
    pub params: serde_json::Value,
    pub started: std::time::Instant,
}

/// Writes the stage's resolved settings into the run's `config.toml` (`record`), then records
/// the stage as complete in the manifest — last, so its presence means the stage's outputs are
/// all in place.
pub(crate) fn complete_stage(
    run: &RunDir,
    manifest: &mut Manifest,
    done: Completion,
    record: impl FnOnce(&mut RunConfig),
) -> Result<()> {
    let mut config = RunConfig::load(run);
    record(&mut config);
    config.save(run)?;
    let seconds = (done.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    manifest.stages.insert(
        done.stage.into(),
        StageRecord {
            fingerprint: done.fingerprint,
            finished_at: now_rfc3339(),
            seconds: Some(seconds),
            seed: done.seed,
            params: done.params,
        },
    );
    manifest.save(run)?;
    Ok(())
}

/// Removes a file or folder if it exists.
pub(crate) fn remove_path(path: &std::path::Path) -> Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path)?;
    } else if path.exists() {
        std::fs::remove_file(path)?;
    }
    Ok(())
}
