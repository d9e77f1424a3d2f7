//! Runs on object storage (`--run s3://bucket/prefix`) against a real S3-compatible server
//! process (moto's standalone server): the bucket ends up holding the local run byte for byte
//! (read back with boto3), later stages stream the activations by range without copying them,
//! shard workers with separate mirrors (separate machines, as far as they know) write the
//! single-process run together, a killed one is re-run alone, a forced re-extraction leaves no
//! stale parts, and bad locations, missing credentials and a held lease are named with exit 2
//! and the run left alone.

use glassbox_tests::s3_server::S3Server;
use glassbox_tests::sharded::{
    assert_no_staging_or_leases, extract_args, patch_args, run_workers_together, tiny_gpt2,
    ATTRIBUTE, GRADIENTS, PROBE,
};
use glassbox_tests::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const HOOKS: &str = "blocks.*.hook_resid_post";
const BUCKET: &str = "glassbox-test";

fn server(test: &str) -> Option<S3Server> {
    match S3Server::start() {
        Ok(s) => {
            s.create_bucket(BUCKET);
            Some(s)
        }
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

/// `extract` of the tiny GPT-2 (the sharded tests' settings) into `run`, with `extra`.
fn extract(s3: &S3Server, cache: &Path, run: &str, extra: &[&str]) -> Output {
    extract_parts_of(s3, cache, run, "4", extra)
}

/// [`extract`] with `shard_size` examples per part.
fn extract_parts_of(
    s3: &S3Server,
    cache: &Path,
    run: &str,
    shard_size: &str,
    extra: &[&str],
) -> Output {
    let mut args = extract_args(&tiny_gpt2(), HOOKS, Path::new(run));
    let at = args.iter().position(|a| a == "--shard-size").unwrap() + 1;
    args[at] = shard_size.to_owned();
    s3.glassbox(cache).args(args).args(extra).output().unwrap()
}

/// `glassbox ARGS --run RUN` against the server, `cache` as the mirrors' root.
fn stage_command(s3: &S3Server, cache: &Path, run: &str, args: &[&str]) -> Command {
    let mut cmd = s3.glassbox(cache);
    cmd.args(args).args(["--run", run]);
    cmd
}

fn stage(s3: &S3Server, cache: &Path, run: &str, args: &[&str]) -> Output {
    stage_command(s3, cache, run, args).output().unwrap()
}

const DICTIONARY: [&str; 7] = [
    "dictionary",
    "--hook",
    "blocks.1.hook_resid_post",
    "--width",
    "32",
    "--k",
    "4",
];

fn stage_fingerprints(root: &Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).unwrap()).unwrap();
    let stages = m["stages"].as_object().unwrap();
    stages
        .iter()
        .map(|(k, v)| (k.clone(), v["fingerprint"].clone()))
        .collect()
}

/// Asserts the bucket's run (downloaded) is the local run: every file byte for byte, and the
/// same stage fingerprints.
fn assert_bucket_is_local_run(local: &Path, downloaded: &Path) {
    assert_same_files(local, downloaded, "the bucket's run", Compare::FilesOnly);
    assert_eq!(stage_fingerprints(local), stage_fingerprints(downloaded));
}

/// `part-*.parquet` files present in the mirror folders under `cache`.
fn mirrored_parts(cache: &Path) -> Vec<String> {
    snapshot(cache)
        .into_keys()
        .filter(|k| {
            k.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet"))
        })
        .collect()
}

#[test]
fn a_run_on_s3_is_the_local_run_and_its_parts_are_read_by_range() {
    let Some(s3) = server("a_run_on_s3_is_the_local_run_and_its_parts_are_read_by_range") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (local, cache) = (tmp.path().join("local"), tmp.path().join("cache"));
    let local_run = local.display().to_string();
    let remote = format!("s3://{BUCKET}/runs/tiny");
    for run in [&local_run, &remote] {
        assert_success(&extract(&s3, &cache, run, &[]), &format!("extract → {run}"));
        assert_success(&stage(&s3, &cache, run, PROBE), &format!("probe on {run}"));
        // TCAV reads the stored gradients by range too; the report reads every stage.
        let gradients = ["gradients", "--target", "probe:topic=sports"];
        assert_success(&stage(&s3, &cache, run, &gradients), "gradients");
        let concepts = workspace_root().join("data/concepts");
        let concepts = format!(
            "{},{}",
            concepts.join("food.jsonl").display(),
            concepts.join("numbers.jsonl").display()
        );
        let tcav = [
            "tcav",
            "--random-runs",
            "3",
            "--target",
            "probe:topic=sports",
            "--concepts",
            &concepts,
        ];
        assert_success(&stage(&s3, &cache, run, &tcav), &format!("tcav on {run}"));
        let out = stage(&s3, &cache, run, &DICTIONARY);
        assert_success(&out, &format!("dictionary on {run}"));
        assert_success(
            &stage(&s3, &cache, run, &["report"]),
            &format!("report of {run}"),
        );
    }
    assert!(
        mirrored_parts(&cache).is_empty(),
        "probe, dictionary and TCAV read the activation and gradient parts by range, never into the mirror: {:?}",
        mirrored_parts(&cache)
    );
    let downloaded = tmp.path().join("downloaded");
    s3.download(BUCKET, "runs/tiny", &downloaded);
    assert!(
        !downloaded.join(".glassbox.lock").exists(),
        "the writer's lease is released"
    );
    assert_bucket_is_local_run(&local, &downloaded);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(downloaded.join("report/summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        summary["run"],
        remote.as_str(),
        "the report names the run by its URL"
    );
    assert!(summary["tcav"].as_array().is_some_and(|t| !t.is_empty()));

    // A second machine (a fresh mirror) reads the run and finds every stage up to date.
    let other_cache = tmp.path().join("other-cache");
    let out = stage(&s3, &other_cache, &remote, PROBE);
    assert_success(&out, "probe from a fresh mirror");
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
    let out = s3
        .glassbox(&other_cache)
        .args(["inspect", &remote])
        .output()
        .unwrap();
    assert_success(&out, "inspect");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("run: {remote}")), "{stdout}");
    assert!(stdout.contains("stage dictionary"), "{stdout}");
}

#[test]
fn a_forced_re_extraction_leaves_no_stale_parts_in_the_bucket() {
    let Some(s3) = server("a_forced_re_extraction_leaves_no_stale_parts_in_the_bucket") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (local, cache) = (tmp.path().join("local"), tmp.path().join("cache"));
    let remote = format!("s3://{BUCKET}/runs/redo");
    assert_success(&extract(&s3, &cache, &remote, &[]), "first extract");
    assert_success(&stage(&s3, &cache, &remote, PROBE), "probe");
    // Fewer, larger parts: the old part files and the (now void) probes must go.
    // A discarded attempt's staging left in the bucket (other settings, a part this attempt
    // does not write) must not end up in the run.
    for key in [
        "runs/redo/.staging/extract/FINGERPRINT",
        "runs/redo/.staging/extract/activations/hook=blocks.0.hook_resid_post/part-00099.parquet",
    ] {
        s3.put_object(BUCKET, key, b"stale");
    }
    let out = extract_parts_of(&s3, &cache, &remote, "128", &["--force"]);
    assert_success(&out, "forced re-extract");
    let out = extract_parts_of(&s3, &cache, &local.display().to_string(), "128", &[]);
    assert_success(&out, "local extract");
    let downloaded = tmp.path().join("downloaded");
    s3.download(BUCKET, "runs/redo", &downloaded);
    assert!(!downloaded.join("probes").exists(), "void probes removed");
    assert!(
        !downloaded.join(".staging").exists(),
        "stale staging removed"
    );
    assert_bucket_is_local_run(&local, &downloaded);
}

#[test]
fn bad_remote_locations_are_named_and_leave_the_run_alone() {
    let Some(s3) = server("bad_remote_locations_are_named_and_leave_the_run_alone") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let remote = format!("s3://{BUCKET}/runs/bad");
    assert_success(&extract(&s3, &cache, &remote, &[]), "extract");
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let out = stage(&s3, &cache, "s3://no-such-bucket/runs/x", PROBE);
    assert_bad_input(
        &out,
        &["s3://no-such-bucket/runs/x", "Check the bucket name"],
    );

    let out = stage_command(&s3, &cache, &remote, PROBE)
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{closed_port}"),
        )
        .output()
        .unwrap();
    assert_bad_input(&out, &[&remote, "could not be reached"]);

    let out = stage_command(&s3, &cache, &remote, PROBE)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env(
            "AWS_METADATA_ENDPOINT",
            format!("http://127.0.0.1:{closed_port}"),
        )
        .output()
        .unwrap();
    assert_bad_input(
        &out,
        &[&remote, "No credentials were found", "AWS_ACCESS_KEY_ID"],
    );

    // Another machine's writer holds the lease.
    let lease = r#"{"host":"other-host","pid":4242,"command":"glassbox probe","since":"2026-12-04T00:00:00Z"}"#;
    s3.put_object(BUCKET, "runs/bad/.glassbox.lock", lease.as_bytes());
    let out = stage(&s3, &cache, &remote, PROBE);
    assert_bad_input(&out, &["pid 4242 on other-host", "runs/bad/.glassbox.lock"]);
    s3.delete_object(BUCKET, "runs/bad/.glassbox.lock");

    let out = extract(&s3, &cache, &remote, &["--shard", "0/2", "--force"]);
    assert_bad_input(&out, &["--force cannot be combined with --shard"]);
    let out = stage(&s3, &cache, "ftp://host/run", PROBE);
    assert_bad_input(&out, &["unknown scheme `ftp`"]);

    // Nothing of the refused probes reached the bucket.
    let downloaded = tmp.path().join("downloaded");
    s3.download(BUCKET, "runs/bad", &downloaded);
    assert!(!downloaded.join("probes").exists());
    let stages = stage_fingerprints(&downloaded);
    assert_eq!(stages.as_object().unwrap().len(), 1, "{stages}");
}

#[test]
fn credentials_region_and_endpoint_come_from_the_aws_cli_profile() {
    let Some(s3) = server("credentials_region_and_endpoint_come_from_the_aws_cli_profile") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/credentials"),
        "[default]\naws_access_key_id = wrong\n\n[lab]\naws_access_key_id = glassbox-test\naws_secret_access_key = glassbox-test\n",
    )
    .unwrap();
    std::fs::write(
        home.join(".aws/config"),
        format!(
            "[profile lab]\nregion = us-east-1\nendpoint_url = {}\ns3 =\n  addressing_style = path\n",
            s3.endpoint()
        ),
    )
    .unwrap();
    // Nothing from the environment: the profile `AWS_PROFILE` names is all there is.
    let mut cmd = glassbox();
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        cmd.env_remove(key);
    }
    let run = format!("s3://{BUCKET}/runs/profile");
    let out = cmd
        .current_dir(workspace_root())
        .env("HOME", &home)
        .env("AWS_PROFILE", "lab")
        .env("GLASSBOX_REMOTE_CACHE", tmp.path().join("cache"))
        .args(extract_args(&tiny_gpt2(), HOOKS, Path::new(&run)))
        .output()
        .unwrap();
    assert_success(&out, "extract with the AWS CLI profile");
    let downloaded = tmp.path().join("downloaded");
    s3.download(BUCKET, "runs/profile", &downloaded);
    assert!(downloaded.join("manifest.json").is_file());
}

/// Kills `child` (SIGKILL) as soon as `ready` holds, asserting it is still running then and
/// that this happens within two minutes.
fn kill_once(child: &mut std::process::Child, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(Instant::now() < deadline, "not {what} within 2 minutes");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process ended before {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `attribute` over 80 examples in parts of one, with `extra`, as the stale-staging test runs it.
fn attribute_eighty(s3: &S3Server, cache: &Path, run: &str, extra: &[&str]) -> Command {
    let mut args = ATTRIBUTE.to_vec();
    let at = args.iter().position(|a| *a == "--max-examples").unwrap() + 1;
    args[at] = "80";
    let mut cmd = stage_command(s3, cache, run, &args);
    cmd.args(extra);
    cmd
}

#[test]
fn an_attempt_with_other_settings_never_resumes_the_bucket_parts_of_an_earlier_one() {
    let Some(s3) = server("an_attempt_with_other_settings_never_resumes") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local").display().to_string();
    let remote = format!("s3://{BUCKET}/runs/stale");
    let cache = tmp.path().join("cache");
    for run in [&local, &remote] {
        assert_success(&extract(&s3, &cache, run, &[]), "extract");
        assert_success(&stage(&s3, &cache, run, PROBE), "probe");
    }
    let out = attribute_eighty(&s3, &cache, &local, &["--seed", "7"])
        .output()
        .unwrap();
    assert_success(&out, "local attribute, seed 7");
    // Shard 0/3 with seed 0 leaves its parts (0, 3, 6, …) and markers in the bucket's staging.
    let out = attribute_eighty(&s3, &cache, &remote, &["--shard", "0/3"])
        .output()
        .unwrap();
    assert_success(&out, "shard 0/3, seed 0");
    let fingerprint = "runs/stale/.staging/attribute/FINGERPRINT";
    let seed0 = s3
        .get_object(BUCKET, fingerprint)
        .expect("the shard's staging is in the bucket");
    // A whole-run attempt with seed 7 is killed as soon as its staging reaches the bucket (its
    // first upload, two seconds in), long before its 80 parts are done …
    let mut child = attribute_eighty(&s3, &cache, &remote, &["--seed", "7"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_once(&mut child, "its staging reached the bucket", || {
        s3.get_object(BUCKET, fingerprint).as_ref() != Some(&seed0)
    });
    // … and resumed on another machine: it must redo the seed-0 parts, not adopt them.
    let out = attribute_eighty(&s3, &tmp.path().join("other"), &remote, &["--seed", "7"])
        .output()
        .unwrap();
    assert_success(&out, "the seed-7 attempt resumed");
    let downloaded = tmp.path().join("downloaded");
    s3.download(BUCKET, "runs/stale", &downloaded);
    assert_no_staging_or_leases(&downloaded);
    assert_bucket_is_local_run(Path::new(&local), &downloaded);
}

#[test]
fn three_shard_workers_on_s3_write_the_single_process_run() {
    let Some(s3) = server("three_shard_workers_on_s3_write_the_single_process_run") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    let remote = format!("s3://{BUCKET}/runs/sharded");
    assert_success(
        &extract(
            &s3,
            &tmp.path().join("c"),
            &local.display().to_string(),
            &[],
        ),
        "single-process extract",
    );
    // Each worker its own mirror: nothing but the bucket is shared.
    run_workers_together(
        (0..3)
            .map(|i| {
                let mut worker = s3.glassbox(&tmp.path().join(format!("cache{i}")));
                worker
                    .args(extract_args(&tiny_gpt2(), HOOKS, Path::new(&remote)))
                    .args(["--shard", &format!("{i}/3")]);
                worker
            })
            .collect(),
    );
    let downloaded = tmp.path().join("downloaded");
    s3.download(BUCKET, "runs/sharded", &downloaded);
    assert_no_staging_or_leases(&downloaded);
    assert_bucket_is_local_run(&local, &downloaded);
}

#[test]
fn sharded_gradients_attributions_and_patching_on_s3_are_the_local_run() {
    let Some(s3) = server("sharded_gradients_attributions_and_patching_on_s3") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local").display().to_string();
    let remote = format!("s3://{BUCKET}/runs/stages");
    for run in [&local, &remote] {
        let cache = tmp.path().join("c");
        assert_success(&extract(&s3, &cache, run, &[]), "extract");
        assert_success(&stage(&s3, &cache, run, PROBE), "probe");
    }
    let patch = patch_args();
    let patch: Vec<&str> = patch.iter().map(String::as_str).collect();
    for (name, args) in [
        ("gradients", GRADIENTS),
        ("attribute", ATTRIBUTE),
        ("patch", patch.as_slice()),
    ] {
        assert_success(
            &stage(&s3, &tmp.path().join("c"), &local, args),
            &format!("local {name}"),
        );
        // Each worker its own mirror: the bucket's staging is all they share.
        run_workers_together(
            (0..3)
                .map(|i| {
                    let cache = tmp.path().join(format!("{name}-cache{i}"));
                    let mut worker = stage_command(&s3, &cache, &remote, args);
                    worker.args(["--shard", &format!("{i}/3")]);
                    worker
                })
                .collect(),
        );
    }
    let downloaded = tmp.path().join("downloaded");
    s3.download(BUCKET, "runs/stages", &downloaded);
    assert_no_staging_or_leases(&downloaded);
    assert_bucket_is_local_run(Path::new(&local), &downloaded);
}

#[test]
fn a_missing_shard_on_s3_is_named_and_a_killed_one_rerun_alone_completes_the_run() {
    let Some(minilm) = require_minilm("a_missing_shard_on_s3_is_named") else {
        return;
    };
    let Some(s3) = server("a_missing_shard_on_s3_is_named") else {
        return;
    };
    // Two of MiniLM's hooks: slow enough per part to be killed in the middle.
    let hooks = "blocks.0.hook_resid_post,blocks.5.hook_resid_post";
    let tmp = tempfile::tempdir().unwrap();
    let remote = format!("s3://{BUCKET}/runs/killed");
    let worker = |i: usize, cache: &Path| {
        let mut cmd = s3.glassbox(cache);
        cmd.args(extract_args(&minilm, hooks, Path::new(&remote)))
            .args(["--shard", &format!("{i}/3")]);
        cmd
    };
    for i in [0, 2] {
        let out = worker(i, &tmp.path().join(format!("cache{i}")))
            .output()
            .unwrap();
        assert_success(&out, &format!("shard {i}/3"));
    }
    // Another machine sees the missing shard, and a later stage is refused naming it.
    let reader = tmp.path().join("reader");
    let out = s3
        .glassbox(&reader)
        .args(["inspect", &remote])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("shard 1/3 of `extract`: not started"),
        "{text}"
    );
    let out = stage(&s3, &reader, &remote, PROBE);
    assert_bad_input(&out, &["1/3"]);

    // Shard 1 owns parts 1, 4, 7, …: killed (SIGKILL) once its second part is marked.
    let cache1 = tmp.path().join("cache1");
    let mut child = worker(1, &cache1)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The mirror folder's name carries a hash of the URL: the one folder in the cache.
    let marked = || {
        std::fs::read_dir(&cache1)
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(|e| e.ok())
            .is_some_and(|e| {
                e.path()
                    .join(".staging/extract/_progress/extract/shard-00004.done")
                    .exists()
            })
    };
    kill_once(&mut child, "its second part is marked", marked);
    // Its lease is left in the bucket, but a dead pid of this host is not a running shard.
    let out = s3
        .glassbox(&reader)
        .args(["inspect", &remote])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("shard 1/3 of `extract`: running"), "{text}");
    // Re-run alone on the same machine: its lease (a dead pid of this host) is taken over and
    // its parts are kept.
    let out = worker(1, &cache1).output().unwrap();
    assert_success(&out, "shard 1/3 again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("run committed"), "{stdout}");
    assert!(
        !stdout.contains("(0 kept"),
        "the killed worker's parts are kept: {stdout}"
    );

    let local = tmp.path().join("local");
    let out = glassbox()
        .args(extract_args(&minilm, hooks, &local))
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert_success(&out, "single-process extract");
    let downloaded = tmp.path().join("downloaded");
    s3.download(BUCKET, "runs/killed", &downloaded);
    assert_bucket_is_local_run(&local, &downloaded);
}
