//! The `probe` stage.

use super::invalidate_from;
use crate::config::{ProbeSection, RunConfig};
use crate::fingerprint::fingerprint;
use anyhow::Result;
use glassbox_data::manifest::now_rfc3339;
use glassbox_data::{Manifest, Progress, RunDir, StageRecord};
use glassbox_probes::{run_probes, write_results, ProbeResult};

pub fn run_probe(
    run: &RunDir,
    settings: &ProbeSection,
    force: bool,
    json: bool,
    progress: &dyn Progress,
) -> Result<()> {
    let manifest = run.require_stage("extract")?;
    let upstream = manifest
        .stage_fingerprint("extract")
        .unwrap_or_default()
        .to_owned();
    let params = serde_json::json!({ "extract": upstream, "probe": settings });
    let fp = fingerprint("probe", &params);
    if !force && manifest.stage_fingerprint("probe") == Some(fp.as_str()) {
        progress.note("probe: up to date; --force re-runs it");
        return Ok(());
    }
    let mut manifest: Manifest = invalidate_from(run, "probe")?;
    let results = run_probes(run, settings, progress)?;
    write_results(run, &results)?;
    let mut config = RunConfig::load(run);
    config.probe = Some(settings.clone());
    config.save(run)?;
    manifest.stages.insert(
        "probe".into(),
        StageRecord {
            fingerprint: fp,
            finished_at: now_rfc3339(),
            seed: Some(settings.seed),
            params,
        },
    );
    manifest.save(run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", table(&results));
    }
    Ok(())
}

/// A fixed-width table of probe results for the terminal.
pub fn table(results: &[ProbeResult]) -> String {
    let hook_w = results
        .iter()
        .map(|r| r.hook.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let label_w = results
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<label_w$}  {:<hook_w$}  {:>8}  {:>8}  {:>7}  {:>6}\n",
        "label", "hook", "accuracy", "majority", "n_train", "n_test"
    );
    for r in results {
        out.push_str(&format!(
            "{:<label_w$}  {:<hook_w$}  {:>8.3}  {:>8.3}  {:>7}  {:>6}\n",
            r.label, r.hook, r.accuracy, r.majority_baseline, r.n_train, r.n_test
        ));
    }
    out
}
