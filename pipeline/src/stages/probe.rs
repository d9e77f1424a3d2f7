//! The `probe` stage.

use super::{Completion, Stage, Transaction};
use crate::config::ProbeSection;
use crate::fingerprint::fingerprint;
use anyhow::Result;
use glassbox_data::{Progress, RunDir};
use glassbox_probes::{
    run_probes, write_neurons, write_results, write_topk, write_weights, ProbeResult,
};

/// Runs the stage; returns the new results, or `None` when the run was up to date.
pub fn run_probe(
    run: &RunDir,
    settings: &ProbeSection,
    force: bool,
    progress: &dyn Progress,
) -> Result<Option<Vec<ProbeResult>>> {
    let started = std::time::Instant::now();
    // Settings first: NaN serialises as null, so an invalid setting could otherwise match a
    // valid run's fingerprint and pass as up to date.
    settings.validate()?;
    let manifest = run.require_stage("extract")?;
    let upstream = manifest
        .stage_fingerprint("extract")
        .unwrap_or_default()
        .to_owned();
    let params = serde_json::json!({ "extract": upstream, "probe": settings });
    let fp = fingerprint("probe", &params);
    if !force && manifest.stage_fingerprint("probe") == Some(fp.as_str()) {
        crate::fingerprint::note_up_to_date(progress, &manifest, "probe", "");
        return Ok(None);
    }
    let tx = Transaction::begin(run, "probe", vec!["probes".into()], &fp, false)?;
    let out = run_probes(run, settings, progress)?;
    let staged = tx.run();
    // Results last: its presence is what marks the stage's tables complete.
    write_neurons(staged, &out.neurons)?;
    write_topk(staged, &out.topk)?;
    write_weights(staged, &out.weights)?;
    write_results(staged, &out.results)?;
    let results = out.results;
    let done = Completion {
        stage: Stage::Probe,
        fingerprint: fp,
        seed: Some(settings.seed),
        params,
        started,
    };
    tx.commit(done, |_| {}, |config| config.probe = Some(settings.clone()))?;
    Ok(Some(results))
}
