//! Killing `glassbox extract` midway and re-running it completes the run with no lost or
//! duplicated rows, and the killed run is never taken for a complete one.

use glassbox_data::examples::read_examples;
use glassbox_data::store::{read_parts, read_pooled_matrix};
use glassbox_data::RunDir;
use glassbox_tests::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const HOOKS: &str = "blocks.0.hook_resid_pre,blocks.5.hook_resid_post,blocks.2.mlp.hook_post";

fn extract_cmd(run: &std::path::Path) -> std::process::Command {
    let mut cmd = glassbox();
    cmd.args([
        "extract",
        "--model",
        MINILM,
        "--data",
        "data/sets/default.jsonl",
        "--hooks",
        HOOKS,
        // Small shards and batches: many resumption points in a short run.
        "--shard-size",
        "4",
        "--batch-size",
        "2",
        "--run",
    ])
    .arg(run);
    cmd
}

#[test]
fn killed_extraction_resumes_without_lost_or_duplicated_rows() {
    if require_minilm("killed_extraction_resumes").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let run = RunDir::new(&run_dir);
    let marker = run.progress_dir("extract").join("shard-00003.done");

    let mut child = extract_cmd(&run_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "no shard completed within 2 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "extraction ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up.
    child.wait().unwrap();

    // The interrupted run is not marked complete, and later stages refuse it.
    assert!(run.require_stage("extract").is_err());
    let out = glassbox()
        .args(["probe", "--label", "topic", "--run"])
        .arg(&run_dir)
        .output()
        .unwrap();
    assert_bad_input(&out, &["has not completed"]);
    let out = glassbox().arg("inspect").arg(&run_dir).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("interrupted"));
    // `--run DIR`, as every other command takes it, says the same.
    let flagged = glassbox()
        .args(["inspect", "--run"])
        .arg(&run_dir)
        .output()
        .unwrap();
    assert_eq!(flagged.stdout, out.stdout);

    let out = extract_cmd(&run_dir).output().unwrap();
    assert_success(&out, "resumed extract");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resumed: kept"),
        "resumption is reported:\n{stderr}"
    );
    run.require_stage("extract")
        .expect("complete after the re-run");

    let examples = read_examples(&run).unwrap();
    let n = examples.example_ids.len() as u64;
    let expected_tokens: usize = examples.n_tokens.iter().map(|&t| t as usize).sum();
    for hook in HOOKS.split(',') {
        let hook: glassbox_data::HookPoint = hook.parse().unwrap();
        let mut keys = BTreeSet::new();
        let mut rows = 0;
        read_parts(&run.activations_dir(hook), |b| {
            let pos = b.positions.unwrap();
            for (i, id) in b.example_ids.iter().enumerate() {
                keys.insert((*id, pos[i]));
            }
            rows += b.example_ids.len();
            Ok(())
        })
        .unwrap();
        assert_eq!(
            rows, expected_tokens,
            "{hook}: no lost or duplicated token rows"
        );
        assert_eq!(
            keys.len(),
            expected_tokens,
            "{hook}: every (example, position) once"
        );
        let expected: BTreeSet<(u64, u32)> = examples
            .example_ids
            .iter()
            .zip(&examples.n_tokens)
            .flat_map(|(&id, &t)| (0..t).map(move |p| (id, p)))
            .collect();
        assert_eq!(keys, expected);
        for pool in [glassbox_data::Pool::Mean, glassbox_data::Pool::Cls] {
            let m = read_pooled_matrix(&run.pooled_dir(hook, pool)).unwrap();
            assert_eq!(m.example_ids, (0..n).collect::<Vec<_>>(), "{hook}/{pool}");
        }
    }
    let leftovers: Vec<_> = walk(&run_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
