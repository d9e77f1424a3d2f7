//! Helpers for the sharded-run tests: one small extraction, and the check that a run written by
//! shard workers is the single-process run.

use crate::{glassbox, snapshot, workspace_root};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The committed tiny GPT-2.
pub fn tiny_gpt2() -> PathBuf {
    workspace_root().join("tests/fixtures/tiny_gpt2")
}

/// The extraction arguments the sharded tests share, after `glassbox` (`extract … --run RUN`,
/// without `--shard`): small parts, so each worker owns several.
pub fn extract_args(model: &Path, hooks: &str, run: &Path) -> Vec<String> {
    let root = workspace_root();
    [
        "extract",
        "--model",
        &model.display().to_string(),
        "--data",
        &root.join("data/sets/default.jsonl").display().to_string(),
        "--hooks",
        hooks,
        "--max-length",
        "64",
        "--shard-size",
        "4",
        "--batch-size",
        "2",
        "--pools",
        "mean,last",
        "--run",
        &run.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `glassbox` with [`extract_args`] and `extra`.
pub fn sharded_extract(model: &Path, hooks: &str, run: &Path, extra: &[&str]) -> Command {
    let mut cmd = glassbox();
    cmd.args(extract_args(model, hooks, run))
        .args(extra)
        .current_dir(workspace_root());
    cmd
}

/// Every file of the run but its manifest (which records times) and lock files.
fn stored(run: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut files = snapshot(run);
    files.remove("manifest.json");
    files
}

/// The manifest's extraction record: fingerprint, settings, data and model.
fn manifest_extract(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::json!({
        "fingerprint": m["stages"]["extract"]["fingerprint"],
        "params": m["stages"]["extract"]["params"],
        "data": m["data"],
        "model": m["model"],
    })
}

/// Asserts the two runs hold the same files byte for byte (the manifest's extraction record
/// too), with activations and pools among them, and no staging left.
pub fn assert_same_run(single: &Path, sharded: &Path) {
    let (a, b) = (stored(single), stored(sharded));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (name, bytes) in &a {
        assert!(
            bytes == &b[name],
            "{name} differs from the single-process run"
        );
    }
    assert!(a.keys().any(|k| k.starts_with("activations/")));
    assert!(a.keys().any(|k| k.starts_with("pooled/")));
    assert_eq!(manifest_extract(single), manifest_extract(sharded));
}

/// Starts every worker at once, waits for all, and asserts that each succeeded and that exactly
/// one (the last to finish) committed the run. Returns their outputs.
pub fn run_workers_together(workers: Vec<Command>) -> Vec<std::process::Output> {
    let children: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            w.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for (i, out) in outs.iter().enumerate() {
        crate::assert_success(out, &format!("worker {i} of {}", outs.len()));
    }
    let committed = outs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stdout).contains("run committed"))
        .count();
    assert_eq!(
        committed, 1,
        "exactly one worker (the last) commits the run"
    );
    outs
}

/// Copies the run `from` (every file and folder) to `to`.
pub fn copy_run(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (path, dest) = (entry.path(), to.join(entry.file_name()));
        if path.is_dir() {
            copy_run(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// `glassbox gradients` as the sharded tests run it (after `glassbox`, without `--run`):
/// parts of 3 examples.
pub const GRADIENTS: &[&str] = &[
    "gradients",
    "--target",
    "probe:topic=sports",
    "--part-size",
    "3",
    "--batch-size",
    "2",
];

/// `glassbox attribute` as the sharded tests run it: two targets, five examples in parts of one.
pub const ATTRIBUTE: &[&str] = &[
    "attribute",
    "--target",
    "token: the",
    "--target",
    "probe:topic=sports",
    "--method",
    "saliency,ig,occlusion",
    "--max-examples",
    "5",
    "--steps",
    "8",
    "--samples",
    "2",
    "--sanity-examples",
    "2",
    "--curve-points",
    "4",
    "--part-size",
    "1",
];

/// `glassbox patch` as the sharded tests run it: the three fixture pairs in parts of one, with
/// mean ablation (made over every pair by the worker that commits).
pub fn patch_args() -> Vec<String> {
    let pairs = workspace_root().join("tests/fixtures/patching/pairs.jsonl");
    [
        "patch",
        "--model",
        &tiny_gpt2().display().to_string(),
        "--pairs",
        &pairs.display().to_string(),
        "--hooks",
        "blocks.*.hook_resid_pre",
        "--ablate",
        "mean",
        "--part-size",
        "1",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Asserts that a run as a bucket holds it (downloaded to `root`) has no staging and no lease
/// object left: what finished workers and writers must remove. Reads the folder itself, since
/// [`crate::snapshot`] leaves lock files out.
pub fn assert_no_staging_or_leases(root: &Path) {
    assert!(
        !root.join(".staging").exists(),
        "the bucket's shared staging is gone"
    );
    let leases: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".glassbox"))
        .collect();
    assert!(leases.is_empty(), "leases left behind: {leases:?}");
}

/// `glassbox probe` as the sharded tests run it on their runs (after `glassbox`, without
/// `--run`): the topic label, no neuron ranking, 20 bootstrap resamples.
pub const PROBE: &[&str] = &[
    "probe",
    "--label",
    "topic",
    "--no-neurons",
    "--bootstrap",
    "20",
];
