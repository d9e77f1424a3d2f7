//! `glassbox gradients|attribute|patch --shard i/N` on the committed tiny GPT-2: workers
//! started together write the single-process run byte for byte (the run-wide tables included,
//! made by the last worker from every part); a shard left out is named by `inspect` and run
//! alone later; a worker started with other settings is refused, naming the setting; and a
//! killed single-process attempt resumes from its last part.

use glassbox_tests::sharded::{copy_run, patch_args, run_workers_together, ATTRIBUTE, GRADIENTS};
use glassbox_tests::*;
use std::path::Path;
use std::process::Command;

/// The manifest's record of `stage` but its time.
fn record(run: &Path, stage: &str) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let r = &m["stages"][stage];
    serde_json::json!({"fingerprint": r["fingerprint"], "params": r["params"], "seed": r["seed"]})
}

fn assert_same(single: &Path, sharded: &Path, what: &str) {
    assert_same_files(single, sharded, what, Compare::WithFolders);
}

fn gradients(run: &Path, extra: &[&str]) -> Command {
    let mut cmd = glassbox();
    cmd.args(GRADIENTS).arg("--run").arg(run).args(extra);
    cmd
}

fn attribute(run: &Path, extra: &[&str]) -> Command {
    let mut cmd = glassbox();
    cmd.args(ATTRIBUTE).arg("--run").arg(run).args(extra);
    cmd
}

fn patch(run: &Path, extra: &[&str]) -> Command {
    let mut cmd = glassbox();
    cmd.args(patch_args()).arg("--run").arg(run).args(extra);
    cmd
}

fn workers(make: impl Fn(&[&str]) -> Command) -> Vec<Command> {
    (0..3)
        .map(|i| make(&["--shard", &format!("{i}/3")]))
        .collect()
}

#[test]
fn sharded_gradients_attributions_and_patching_are_the_single_process_run() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny_decoder_run("tiny_gpt2", &base, false, Some("topic"));
    let (single, sharded) = (tmp.path().join("single"), tmp.path().join("sharded"));
    copy_run(&base, &single);
    copy_run(&base, &sharded);

    for (name, cmd) in [
        ("gradients", gradients(&single, &[])),
        ("attribute", attribute(&single, &[])),
        ("patch", patch(&single, &[])),
    ] {
        let mut cmd = cmd;
        assert_success(&cmd.output().unwrap(), &format!("single-process {name}"));
    }

    // Gradients: three workers at once.
    run_workers_together(workers(|extra| gradients(&sharded, extra)));

    // Attributions: shards 0 and 2 first; the missing one is named, then run alone.
    for i in [0, 2] {
        let out = attribute(&sharded, &["--shard", &format!("{i}/3")])
            .output()
            .unwrap();
        assert_success(&out, &format!("attribute shard {i}/3"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("waiting for 1/3 not started"), "{stdout}");
    }
    let out = glassbox().arg("inspect").arg(&sharded).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("shard 1/3 of `attribute`: not started"),
        "{text}"
    );
    assert!(text.contains("glassbox attribute … --shard i/N"), "{text}");
    assert!(!sharded.join("attributions").exists(), "nothing committed");
    // A worker started with other settings is refused, naming the setting; nothing changes.
    let before = snapshot(&sharded);
    let out = attribute(&sharded, &["--shard", "1/3", "--seed", "7"])
        .output()
        .unwrap();
    assert_bad_input(
        &out,
        &["attribute.seed (the shards already started use 0, this one 7)"],
    );
    assert_eq!(
        before,
        snapshot(&sharded),
        "a refused worker changes nothing"
    );
    let out = attribute(&sharded, &["--shard", "1/3"]).output().unwrap();
    assert_success(&out, "attribute shard 1/3");
    assert!(String::from_utf8_lossy(&out.stdout).contains("run committed"));

    // Patching (mean ablation: over every pair, by the worker that commits): three at once.
    run_workers_together(workers(|extra| patch(&sharded, extra)));

    assert_same(&single, &sharded, "gradients, attributions and patching");
    for stage in ["attribute", "patch"] {
        assert_eq!(record(&single, stage), record(&sharded, stage), "{stage}");
    }
    assert!(!sharded.join(".staging").exists(), "no staging left");
    // One part file per part of the work, in the stores that keep per-example rows.
    let names = snapshot(&sharded);
    for store in ["gradients/", "attributions/method=saliency/"] {
        assert!(
            names
                .keys()
                .any(|k| k.starts_with(store) && k.ends_with("part-00001.parquet")),
            "{store}: parts"
        );
    }
}

#[test]
fn an_interrupted_attribution_resumes_from_its_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_decoder_run("tiny_gpt2", &run, false, Some("topic"));
    let reference = tmp.path().join("reference");
    copy_run(&run, &reference);
    assert_success(
        &attribute(&reference, &[]).output().unwrap(),
        "attribute (uninterrupted)",
    );
    // Shard 0/3 writes parts 0 and 3 of five; no other worker comes. The whole-run command
    // finds those parts (the same settings) and computes only the rest.
    let out = attribute(&run, &["--shard", "0/3"]).output().unwrap();
    assert_success(&out, "attribute shard 0/3");
    // Meanwhile the report says what it leaves out (reports are not compared: they name the run).
    let out = glassbox()
        .args(["report", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "report of a run with an unfinished sharded stage");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the sharded `attribute` is incomplete (shards 1/3 (not started), 2/3 (not started) not finished)"),
        "{stderr}"
    );
    let out = attribute(&run, &[]).output().unwrap();
    assert_success(&out, "attribute (finishing)");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resuming"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&reference, &run, "resumed attribution");
}
