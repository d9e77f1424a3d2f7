//! Kill each stage at a point where it has started writing (its staging folder exists), then
//! run it again: the earlier result stays intact meanwhile, and the re-run ends with the same
//! outputs as an uninterrupted run.

use crate::harness::*;
use glassbox_data::Manifest;
use glassbox_data::RunDir;
use glassbox_tests::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A run's outputs without the records that carry wall-clock times (`manifest.json`'s
/// `finished_at`/`seconds`, and the report's copy of them); the manifest's fingerprints are
/// compared separately.
/// A dictionary's `metrics.json` records the step training resumed from (provenance, not a
/// result): that one field is left out of the comparison.
fn outputs(run: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut snap = snapshot(run);
    snap.retain(|k, _| k != "manifest.json" && !k.starts_with("report/"));
    for (name, bytes) in snap.iter_mut() {
        if name.ends_with("metrics.json") {
            let mut v: serde_json::Value = serde_json::from_slice(bytes.as_ref().unwrap()).unwrap();
            if let Some(t) = v.get_mut("training").and_then(|t| t.as_object_mut()) {
                t.remove("resumed_from");
            }
            *bytes = Some(v.to_string().into_bytes());
        }
    }
    snap
}

fn fingerprints(run: &Path) -> BTreeMap<String, String> {
    Manifest::load(&RunDir::new(run))
        .unwrap()
        .stages
        .into_iter()
        .map(|(k, v)| (k, v.fingerprint))
        .collect()
}

/// Spawns `args` on `run`, waits until `ready(run)`, kills it with SIGKILL.
fn kill_midway(run: &Path, args: &[String], ready: impl Fn(&Path) -> bool) {
    let mut child = glassbox()
        .args(args)
        .arg("--run")
        .arg(run)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ready(run) {
        assert!(
            Instant::now() < deadline,
            "{args:?} never reached its kill point"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{args:?} ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn staging(stage: &str) -> impl Fn(&Path) -> bool + '_ {
    move |run: &Path| {
        run.join(".staging")
            .join(stage)
            .join("FINGERPRINT")
            .exists()
    }
}

fn run_ok(run: &Path, args: &[String]) -> String {
    let out = glassbox()
        .args(args)
        .arg("--run")
        .arg(run)
        .output()
        .unwrap();
    assert_success(&out, &args.join(" "));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The kill-and-resume check for one stage command, over copies of `base`; returns the
/// folder holding both runs (`straight`, `killed`) for further checks.
fn check(base: &Path, args: &[String], ready: impl Fn(&Path) -> bool) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    copy_tree(base, &straight);
    copy_tree(base, &killed);
    run_ok(&straight, args);

    let before = snapshot(&killed);
    kill_midway(&killed, args, ready);
    // What the run had is intact: only the staging folder was written — unless the kill
    // landed inside the commit (a fast stage can reach it between the poll and the kill). Then
    // the commit marker is down, and the next writer must roll the commit forward: the resumed
    // comparison below checks that.
    let staged: Vec<std::path::PathBuf> = std::fs::read_dir(killed.join(".staging"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let mid_commit = staged.iter().any(|p| p.join("COMMIT.json").exists())
        // The commit even finished (its last step removes the staging) before the kill.
        || !staged.iter().any(|p| p.join("FINGERPRINT").exists());
    if !mid_commit {
        let mut after = snapshot(&killed);
        after.retain(|k, _| !k.starts_with(".staging"));
        assert_same(&format!("{args:?} killed"), &before, &after);
    }

    run_ok(&killed, args);
    assert!(!killed.join(".staging").exists(), "staging left behind");
    assert_same(
        &format!("{args:?} resumed"),
        &outputs(&straight),
        &outputs(&killed),
    );
    assert_eq!(fingerprints(&straight), fingerprints(&killed));
    tmp
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn extract_killed_after_a_shard_resumes_to_the_same_run() {
    let Some(fx) = fixture() else { return };
    let args = strings(&[
        "extract",
        "--model",
        MINILM,
        "--force",
        "--hooks",
        "blocks.0.hook_resid_post,blocks.1.hook_resid_post,blocks.2.hook_resid_post",
        "--shard-size",
        "4",
        "--batch-size",
        "2",
        "--data",
        fx.data().to_str().unwrap(),
    ]);
    // --force restarts rather than resumes: kill a non-forced extraction into a fresh run.
    let tmp = tempfile::tempdir().unwrap();
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    let plain: Vec<String> = args.iter().filter(|a| *a != "--force").cloned().collect();
    run_ok(&straight, &plain);
    kill_midway(&killed, &plain, |run| {
        run.join(".staging/extract/_progress/extract/shard-00002.done")
            .exists()
    });
    assert!(RunDir::new(&killed).require_stage("extract").is_err());
    let stderr = run_ok(&killed, &plain);
    assert!(stderr.contains("resum"), "{stderr}");
    assert_same("extract resumed", &outputs(&straight), &outputs(&killed));
}

#[test]
fn probe_killed_midway_keeps_the_old_result_and_resumes() {
    let Some(fx) = fixture() else { return };
    let args = strings(&[
        "probe",
        "--label",
        "topic,sentence_type",
        "--bootstrap",
        "200",
        "--force",
    ]);
    check(&fx.run(), &args, staging("probe"));
}

#[test]
fn tcav_killed_midway_resumes_to_the_same_scores() {
    let Some(fx) = fixture() else { return };
    let concepts = format!(
        "{},{}",
        fx.concept("food").display(),
        fx.concept("numbers").display()
    );
    let args = strings(&[
        "gradients",
        "--target",
        "probe:topic=food",
        "--hooks",
        "blocks.1.hook_resid_post",
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    copy_tree(&fx.run(), &base);
    run_ok(&base, &args);
    let args = strings(&[
        "tcav",
        "--concepts",
        &concepts,
        "--target",
        "probe:topic=food",
        "--hooks",
        "blocks.1.hook_resid_post",
        "--random-runs",
        "3",
    ]);
    check(&base, &args, staging("tcav"));
}

#[test]
fn dictionary_killed_midway_resumes_to_the_same_sae() {
    let Some(fx) = fixture() else { return };
    // 400 steps, a checkpoint every 100: killed after the first, resumed from it.
    let args = strings(&[
        "dictionary",
        "--hook",
        "blocks.1.hook_resid_post",
        "--width",
        "64",
        "--k",
        "4",
        "--train-tokens",
        "25600",
        "--batch-size",
        "64",
        "--no-pca",
    ]);
    let checkpoint =
        ".staging/dictionary/dictionary/hook=blocks.1.hook_resid_post/checkpoint.safetensors";
    let tmp = check(&fx.run(), &args, |run| run.join(checkpoint).exists());
    let metrics: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            tmp.path()
                .join("killed/dictionary/hook=blocks.1.hook_resid_post/metrics.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        metrics["training"]["resumed_from"]
            .as_u64()
            .is_some_and(|s| s >= 100),
        "training resumed from the checkpoint: {}",
        metrics["training"]
    );
    let curve = metrics["training"]["curve"].as_array().unwrap();
    assert_eq!(
        curve[0]["step"], 2,
        "the curve keeps the steps before the checkpoint"
    );
}

#[test]
fn report_killed_midway_resumes() {
    let Some(fx) = fixture() else { return };
    check(&fx.run(), &strings(&["report"]), staging("report"));
}

#[test]
fn causal_killed_midway_resumes_to_the_same_tests() {
    let Some(fx) = fixture() else { return };
    check(
        &fx.run(),
        &strings(&["causal", "--examples", "16", "--bootstrap", "200"]),
        staging("causal"),
    );
}

#[test]
fn patch_killed_midway_resumes_to_the_same_results() {
    let Some(fx) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"clean\": \"I cooked pasta with fresh garlic tonight.\", \"corrupted\": \"I played tennis with fresh friends tonight.\", \"target\": \"probe:topic=food\"}\n\
         {\"clean\": \"The soup tasted of ginger and lime.\", \"corrupted\": \"The match ended in a draw again.\", \"target\": \"probe:topic=food\"}\n",
    )
    .unwrap();
    let args = strings(&[
        "patch",
        "--pairs",
        &pairs.display().to_string(),
        "--hooks",
        "blocks.0.hook_resid_post,blocks.1.hook_resid_post",
    ]);
    check(&fx.run(), &args, staging("patch"));
}
