//! The `probe` stage.

use super::{Completion, Stage, Transaction};
use crate::config::ProbeSection;
use crate::fingerprint::fingerprint;
use anyhow::Result;
use glassbox_data::{Progress, RunDir};
use glassbox_probes::{
    run_probes, write_neurons, write_results, write_topk, write_weights, ProbeResult,
};

pub fn run_probe(
    run: &RunDir,
    settings: &ProbeSection,
    force: bool,
    json: bool,
    progress: &dyn Progress,
) -> Result<()> {
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
        progress.note("probe: up to date; --force re-runs it");
        return Ok(());
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
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&results)?)?;
    } else {
        crate::out!("{}", table(&results))?;
    }
    Ok(())
}

/// A fixed-width table of probe results for the terminal.
pub fn table(results: &[ProbeResult]) -> String {
    let width = |f: fn(&ProbeResult) -> usize, min: usize| {
        results.iter().map(f).max().unwrap_or(min).max(min)
    };
    let hook_w = width(|r| r.hook.to_string().len(), 4);
    let label_w = width(|r| r.label.len() + r.level.len() + 3, 5);
    let mut out = format!(
        "{:<label_w$}  {:<hook_w$}  {:>6}  {:>15}  {:>6}  {:>8}  {:>7}  {:>11}  {:>7}\n",
        "label (level)",
        "hook",
        "metric",
        "score [95% CI]",
        "f1",
        "majority",
        "control",
        "selectivity",
        "n_test"
    );
    for r in results {
        let f1 = r.f1.map_or("-".to_owned(), |f| format!("{f:.3}"));
        out.push_str(&format!(
            "{:<label_w$}  {:<hook_w$}  {:>6}  {:>5.3} [{:.2},{:.2}]  {:>6}  {:>8.3}  {:>7.3}  {:>11.3}  {:>7}\n",
            format!("{} ({})", r.label, r.level),
            r.hook,
            if r.metric == "accuracy" { "acc" } else { "r2" },
            r.score,
            r.ci_low,
            r.ci_high,
            f1,
            r.majority,
            r.control_score,
            r.selectivity,
            r.n_test
        ));
    }
    out
}
