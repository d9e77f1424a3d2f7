//! `glassbox extract --shard i/N`: workers started together on one run write the
//! single-process run byte for byte; a killed worker is re-run alone; a missing shard is named
//! by `inspect` and refused by later stages; workers started differently are refused.

use glassbox_tests::sharded::{
    assert_same_run, run_workers_together, sharded_extract, tiny_gpt2, PROBE,
};
use glassbox_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn extract(model: &Path, run: &Path, extra: &[&str]) -> Command {
    sharded_extract(model, "blocks.*.hook_resid_post", run, extra)
}

#[test]
fn three_workers_started_together_write_the_single_process_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (single, sharded) = (tmp.path().join("single"), tmp.path().join("sharded"));
    assert_success(
        &extract(&tiny_gpt2(), &single, &[]).output().unwrap(),
        "single-process extract",
    );
    run_workers_together(
        (0..3)
            .map(|i| extract(&tiny_gpt2(), &sharded, &["--shard", &format!("{i}/3")]))
            .collect(),
    );
    assert_same_run(&single, &sharded);
    assert!(
        !sharded.join(".staging").exists(),
        "the shared staging is gone"
    );

    // Later stages take the merged run as any other; a worker started again has nothing to do.
    let out = glassbox()
        .args(PROBE)
        .arg("--run")
        .arg(&sharded)
        .output()
        .unwrap();
    assert_success(&out, "probe on the merged run");
    let out = extract(&tiny_gpt2(), &sharded, &["--shard", "1/3"])
        .output()
        .unwrap();
    assert_success(&out, "a shard of a complete run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
}

#[test]
fn a_missing_shard_is_named_and_refused_and_differing_workers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    for i in [0, 2] {
        let out = extract(&tiny_gpt2(), &run, &["--shard", &format!("{i}/3")])
            .output()
            .unwrap();
        assert_success(&out, &format!("shard {i}/3"));
        assert!(String::from_utf8_lossy(&out.stdout).contains("waiting for 1/3 not started"));
    }
    let out = glassbox().arg("inspect").arg(&run).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("shard 1/3 of `extract`: not started"),
        "{text}"
    );
    assert!(text.contains("shard 0/3 of `extract`: complete"), "{text}");
    let out = glassbox()
        .args(["inspect", "--json"])
        .arg(&run)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["shards"][1]["state"], "not started");

    let before = snapshot(&run);
    let out = glassbox()
        .args(["probe", "--label", "topic", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_bad_input(&out, &["incomplete", "1/3 (not started)"]);
    for (args, says) in [
        (
            vec!["--shard", "1/4"],
            "shard count (the shards already started use 3, this one 4)",
        ),
        (
            vec!["--shard", "1/3", "--dtype", "f16"],
            "dtype (the shards already started use f32, this one f16)",
        ),
        (
            vec!["--shard", "1/3", "--force"],
            "--force cannot be combined with --shard",
        ),
        (vec!["--shard", "3/3"], "counted from 0"),
        (vec!["--shard", "0/0"], "at least 1"),
    ] {
        let out = extract(&tiny_gpt2(), &run, &args).output().unwrap();
        assert_bad_input(&out, &[says]);
    }
    let out = sharded_extract(
        &tiny_gpt2(),
        "blocks.0.hook_resid_post",
        &run,
        &["--shard", "1/3"],
    )
    .output()
    .unwrap();
    assert_bad_input(&out, &["hooks (the shards already started use"]);
    assert!(snapshot(&run) == before, "refusals leave the run unchanged");

    // The missing shard alone completes the run.
    let out = extract(&tiny_gpt2(), &run, &["--shard", "1/3"])
        .output()
        .unwrap();
    assert_success(&out, "shard 1/3");
    assert!(String::from_utf8_lossy(&out.stdout).contains("run committed"));
    let single = tmp.path().join("single");
    assert_success(
        &extract(&tiny_gpt2(), &single, &[]).output().unwrap(),
        "single-process extract",
    );
    assert_same_run(&single, &run);
}

#[test]
fn a_killed_shard_rerun_alone_completes_the_same_run() {
    let Some(minilm) = require_minilm("a_killed_shard_rerun_alone") else {
        return;
    };
    // Two of MiniLM's hooks: slow enough per part to be killed in the middle.
    let hooks = "blocks.0.hook_resid_post,blocks.5.hook_resid_post";
    let extract =
        |model: &Path, run: &Path, extra: &[&str]| sharded_extract(model, hooks, run, extra);
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    for i in [0, 2] {
        let out = extract(&minilm, &run, &["--shard", &format!("{i}/3")])
            .output()
            .unwrap();
        assert_success(&out, &format!("shard {i}/3"));
    }
    // Shard 1 owns parts 1, 4, 7, …: kill it (SIGKILL) once its second part is marked.
    let marker = run.join(".staging/extract/_progress/extract/shard-00004.done");
    let mut child = extract(&minilm, &run, &["--shard", "1/3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "no part marked within 2 minutes");
        assert!(
            child.try_wait().unwrap().is_none(),
            "shard 1/3 ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = glassbox().arg("inspect").arg(&run).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("shard 1/3 of `extract`: interrupted"),
        "{text}"
    );
    assert!(
        !run.join("manifest.json").exists(),
        "nothing marked complete"
    );

    let out = extract(&minilm, &run, &["--shard", "1/3"])
        .output()
        .unwrap();
    assert_success(&out, "shard 1/3 again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("run committed"), "{stdout}");
    assert!(
        !stdout.contains("(0 kept"),
        "the killed worker's parts are kept: {stdout}"
    );
    let single = tmp.path().join("single");
    assert_success(
        &extract(&minilm, &single, &[]).output().unwrap(),
        "single-process extract",
    );
    assert_same_run(&single, &run);
}
