//! The `report` stage.

use crate::fingerprint::fingerprint;
use anyhow::Result;
use glassbox_data::{Progress, RunDir};

/// The written (or up-to-date) report.
pub struct ReportDone {
    /// `report/index.html` in the run.
    pub index: std::path::PathBuf,
    /// The findings it shows.
    pub summary: glassbox_reports::Summary,
}

/// The stages a report presents; it needs at least one.
const ANALYSES: [&str; 7] = [
    "probe",
    "tcav",
    "dictionary",
    "patch",
    "causal",
    "attribute",
    "dissect",
];

/// Runs the stage; an up-to-date report is read back, so the caller can show its findings.
pub fn run_report(run: &RunDir, force: bool, progress: &dyn Progress) -> Result<ReportDone> {
    let started = std::time::Instant::now();
    let manifest = run.require_stage("extract")?;
    if !ANALYSES.iter().any(|s| manifest.stages.contains_key(*s)) {
        anyhow::bail!(
            "run {}: nothing to report yet: no `probe`, `tcav`, `dictionary`, `patch`, `causal`, `attribute` or `dissect` stage has completed here; run one first (e.g. `glassbox probe --run {0} --label LABEL`)",
            run.root().display()
        );
    }
    note_unfinished_shards(run, progress)?;
    let upstream = serde_json::json!({
        "extract": manifest.stage_fingerprint("extract"),
        "probe": manifest.stage_fingerprint("probe"),
        "tcav": manifest.stage_fingerprint("tcav"),
        "dictionary": manifest.stage_fingerprint("dictionary"),
        "patch": manifest.stage_fingerprint("patch"),
        "causal": manifest.stage_fingerprint("causal"),
        "attribute": manifest.stage_fingerprint("attribute"),
        "dissect": manifest.stage_fingerprint("dissect"),
    });
    let fp = fingerprint("report", &upstream);
    let index = run.report_dir().join("index.html");
    if !force && manifest.stage_fingerprint("report") == Some(fp.as_str()) && index.exists() {
        crate::fingerprint::note_up_to_date(progress, &manifest, "report", "");
        let summary = glassbox_reports::summarise(run)?;
        return Ok(ReportDone { index, summary });
    }
    let tx = super::Transaction::begin(run, "report", vec!["report".into()], &fp, false)?;
    let (written, summary) = glassbox_reports::write_report(tx.run())?;
    let done = super::Completion {
        stage: super::Stage::Report,
        fingerprint: fp,
        seed: None,
        params: upstream,
        started,
    };
    tx.commit(done, |_| {}, |_| {})?;
    let index = run.report_dir().join(
        written
            .index
            .file_name()
            .expect("the report's index is a file"),
    );
    Ok(ReportDone { index, summary })
}

/// Says which sharded stages (gradients, patching, attributions) are still being written: the
/// report shows what is committed and leaves them out until their last shard commits.
fn note_unfinished_shards(run: &RunDir, progress: &dyn Progress) -> Result<()> {
    for stage in glassbox_data::shards::SHARDED_STAGES {
        let Some(plan) = glassbox_data::shards::ShardPlan::load(run.root(), stage)? else {
            continue;
        };
        let missing: Vec<String> = plan
            .incomplete(run.root())
            .iter()
            .map(|s| format!("{}/{} ({})", s.index, s.count, s.state()))
            .collect();
        let state = if missing.is_empty() {
            "has every part but is not committed yet".to_owned()
        } else {
            format!("is incomplete (shards {} not finished)", missing.join(", "))
        };
        progress.note(&format!(
            "report: the sharded `{stage}` {state}; the report leaves it out until it commits (`glassbox inspect` shows every shard)"
        ));
    }
    Ok(())
}
