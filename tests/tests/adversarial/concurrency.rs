//! Two writers on one run: the second is refused (exit 2, naming the holder's pid and command)
//! while the first works, and the run the first leaves is complete and consistent.

use crate::harness::*;
use glassbox_data::RunDir;
use glassbox_tests::*;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn spawn(run: &Path, args: &[&str]) -> Child {
    glassbox()
        .args(args)
        .arg("--run")
        .arg(run)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts `first`, waits until it holds the lock and is writing (its staging folder exists),
/// runs `second`: it must be refused naming the first's pid; the first must succeed.
fn second_writer_is_refused(run: &Path, first: &[&str], stage: &str, second: &[&str]) {
    let mut child = spawn(run, first);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !run.join(".staging").join(stage).exists() {
        assert!(Instant::now() < deadline, "{first:?} never started writing");
        assert!(
            child.try_wait().unwrap().is_none(),
            "{first:?} ended before the second started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = glassbox()
        .args(second)
        .arg("--run")
        .arg(run)
        .output()
        .unwrap();
    let stderr = assert_bad_input(&out, &["another glassbox process is writing"]);
    assert!(stderr.contains(&format!("pid {}", child.id())), "{stderr}");
    assert!(
        stderr.contains(first[0]),
        "names the holder's command: {stderr}"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{first:?} failed after the refusal");
    assert!(!run.join(".staging").exists(), "staging left behind");
}

/// A copy of the fixture's run (extract and probe done) in a fresh folder.
fn fixture_copy(fx: &Fixture) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    copy_tree(&fx.run(), &run);
    (tmp, run)
}

#[test]
fn two_extracts() {
    let Some(fx) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let data = fx.data();
    let extract = [
        "extract",
        "--model",
        MINILM,
        "--hooks",
        "blocks.0.hook_resid_post",
        "--shard-size",
        "4",
        "--batch-size",
        "2",
        "--data",
        data.to_str().unwrap(),
    ];
    second_writer_is_refused(&run, &extract, "extract", &extract);
    let out = glassbox()
        .args(["probe", "--label", "topic", "--bootstrap", "20", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "probe after the concurrent extracts");
}

#[test]
fn two_probes_with_different_labels() {
    let Some(fx) = fixture() else { return };
    let (_tmp, run) = fixture_copy(fx);
    second_writer_is_refused(
        &run,
        &[
            "probe",
            "--label",
            "sentence_type",
            "--force",
            "--bootstrap",
            "500",
        ],
        "probe",
        &["probe", "--label", "topic", "--force"],
    );
    let results = glassbox_probes::read_results(&RunDir::new(&run)).unwrap();
    assert!(
        results.iter().all(|r| r.label == "sentence_type"),
        "mixed labels"
    );
    let manifest = RunDir::new(&run).require_stage("probe").unwrap();
    assert_eq!(
        manifest.stages["probe"].params["probe"]["labels"][0],
        "sentence_type"
    );
}

#[test]
fn extract_and_probe() {
    let Some(fx) = fixture() else { return };
    let (_tmp, run) = fixture_copy(fx);
    let data = fx.data();
    second_writer_is_refused(
        &run,
        &[
            "extract",
            "--model",
            MINILM,
            "--force",
            "--shard-size",
            "4",
            "--batch-size",
            "2",
            "--hooks",
            "blocks.0.hook_resid_post,blocks.1.hook_resid_post,blocks.2.hook_resid_post",
            "--data",
            data.to_str().unwrap(),
        ],
        "extract",
        &["probe", "--label", "topic", "--force"],
    );
    // The forced extraction replaced the run: the old probe is gone, not mixed in.
    let manifest = RunDir::new(&run).require_stage("extract").unwrap();
    assert!(!manifest.stages.contains_key("probe"));
}

#[test]
fn probe_and_report() {
    let Some(fx) = fixture() else { return };
    let (_tmp, run) = fixture_copy(fx);
    second_writer_is_refused(
        &run,
        &[
            "probe",
            "--label",
            "topic,sentence_type",
            "--force",
            "--bootstrap",
            "500",
        ],
        "probe",
        &["report"],
    );
    report_reads(&run, "sentence_type");
}

/// The report written after the first writer finished shows `needle`: it read the new results.
fn report_reads(run: &Path, needle: &str) {
    let out = glassbox()
        .args(["report", "--run"])
        .arg(run)
        .output()
        .unwrap();
    assert_success(&out, "report after the first writer");
    let md = std::fs::read_to_string(run.join("report/summary.md")).unwrap();
    assert!(md.contains(needle), "the report lacks {needle:?}:\n{md}");
}

#[test]
fn causal_and_report() {
    let Some(fx) = fixture() else { return };
    let (_tmp, run) = fixture_copy(fx);
    second_writer_is_refused(
        &run,
        &["causal", "--examples", "16", "--bootstrap", "200"],
        "causal",
        &["report"],
    );
    report_reads(&run, "## Causal tests");
}
