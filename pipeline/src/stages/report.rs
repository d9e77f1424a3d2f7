//! The `report` stage.

use crate::fingerprint::fingerprint;
use anyhow::Result;
use glassbox_data::{Progress, RunDir};

pub fn run_report(run: &RunDir, force: bool, progress: &dyn Progress) -> Result<()> {
    let started = std::time::Instant::now();
    let manifest = run.require_stage("probe")?;
    let upstream = serde_json::json!({
        "extract": manifest.stage_fingerprint("extract"),
        "probe": manifest.stage_fingerprint("probe"),
        "tcav": manifest.stage_fingerprint("tcav"),
        "dictionary": manifest.stage_fingerprint("dictionary"),
    });
    let fp = fingerprint("report", &upstream);
    let index = run.report_dir().join("index.html");
    if !force && manifest.stage_fingerprint("report") == Some(fp.as_str()) && index.exists() {
        progress.note("report: up to date; --force re-runs it");
        crate::outln!("report: {}", index.display())?;
        print_findings(&glassbox_reports::summarise(run)?)?;
        return Ok(());
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
    crate::outln!("report: {}", index.display())?;
    print_findings(&summary)?;
    Ok(())
}

fn print_findings(summary: &glassbox_reports::Summary) -> Result<()> {
    crate::outln!("top findings:")?;
    for line in glassbox_reports::top_findings(summary, 3) {
        crate::outln!("  - {line}")?;
    }
    Ok(())
}
