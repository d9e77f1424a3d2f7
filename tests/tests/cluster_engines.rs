//! Sharded extraction on real cluster engines: a local Ray cluster through
//! `scripts/ray_shards.py`, a single-node Slurm (slurmctld + slurmd) running the job-array script
//! `scripts/slurm_array.py` writes, and the Kubernetes Indexed Job manifest's container command
//! run once per completion index. Each must leave the single-process run, byte for byte.

use glassbox_tests::sharded::{
    assert_same_run, extract_args, sharded_extract, tiny_gpt2, ATTRIBUTE, GRADIENTS, PROBE,
};
use glassbox_tests::*;
use std::path::Path;
use std::process::Command;

const HOOKS: &str = "blocks.*.hook_resid_post";

/// The single-process run the engines' runs are compared with.
fn single_run(dir: &Path) -> std::path::PathBuf {
    let single = dir.join("single");
    let out = sharded_extract(&tiny_gpt2(), HOOKS, &single, &[])
        .output()
        .unwrap();
    assert_success(&out, "single-process extract");
    single
}

#[test]
fn ray_tasks_run_a_three_shard_extract_gradients_and_attributions() {
    let Some(python) = python_or_skip(
        "ray_tasks_run_a_three_shard_extract_gradients_and_attributions",
        "ray",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("ray");
    let out = Command::new(python)
        .arg(workspace_root().join("scripts/ray_shards.py"))
        .args(["--shards", "3", "--glassbox"])
        .arg(glassbox_bin())
        .arg("--")
        .args(extract_args(&tiny_gpt2(), HOOKS, &run))
        // A private local cluster, whatever RAY_ADDRESS the environment has.
        .env_remove("RAY_ADDRESS")
        .env("RAY_AUTH_MODE", "disabled")
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .output()
        .unwrap();
    assert_success(&out, "ray_shards.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("all 3 shards complete"), "{stdout}");
    assert_eq!(stdout.matches("run committed").count(), 2, "{stdout}");
    let single = single_run(tmp.path());
    assert_same_run(&single, &run);

    // Later stages through the same driver: gradients (a step outside the manifest) and
    // attributions, against the same stages run by one process.
    for r in [&single, &run] {
        let out = glassbox().args(PROBE).arg("--run").arg(r).output().unwrap();
        assert_success(&out, "probe");
    }
    for args in [GRADIENTS, ATTRIBUTE] {
        let out = glassbox()
            .args(args)
            .arg("--run")
            .arg(&single)
            .output()
            .unwrap();
        assert_success(&out, &format!("single-process {}", args[0]));
        let out = Command::new(python_with("ray").unwrap())
            .arg(workspace_root().join("scripts/ray_shards.py"))
            .args(["--shards", "3", "--glassbox"])
            .arg(glassbox_bin())
            .arg("--")
            .args(args)
            .arg("--run")
            .arg(&run)
            .env_remove("RAY_ADDRESS")
            .env("RAY_AUTH_MODE", "disabled")
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .output()
            .unwrap();
        assert_success(&out, &format!("ray_shards.py {}", args[0]));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("all 3 shards complete"), "{stdout}");
    }
    assert_same_files(
        &single,
        &run,
        "the Ray-sharded gradients and attributions",
        Compare::WithFolders,
    );
}

/// Stops the private Slurm cluster however the test ends.
struct LocalSlurm(std::path::PathBuf);

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(workspace_root().join("scripts/slurm_local.sh"))
            .arg("stop")
            .arg(&self.0)
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_slurm_job_array_runs_a_three_shard_extract() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = tmp.path().join("slurm");
    let started = Command::new("bash")
        .arg(workspace_root().join("scripts/slurm_local.sh"))
        .arg("start")
        .arg(&cluster)
        .args([free_port().to_string(), free_port().to_string()])
        .output()
        .unwrap();
    let _stop = LocalSlurm(cluster.clone());
    if started.status.code() == Some(3) {
        return skip(
            "a_slurm_job_array_runs_a_three_shard_extract",
            String::from_utf8_lossy(&started.stderr).trim(),
        );
    }
    assert_success(&started, "a single-node Slurm");
    let conf = String::from_utf8_lossy(&started.stdout).trim().to_owned();

    let run = tmp.path().join("slurm-run");
    let script = tmp.path().join("extract.sbatch");
    let out = Command::new("python3")
        .arg(workspace_root().join("scripts/slurm_array.py"))
        .args(["--shards", "3", "--cpus", "1", "--glassbox"])
        .arg(glassbox_bin())
        .arg("--output")
        .arg(cluster.join("task-%a.out"))
        .arg("--out")
        .arg(&script)
        .arg("--")
        .args(extract_args(&tiny_gpt2(), HOOKS, &run))
        .output()
        .unwrap();
    assert_success(&out, "slurm_array.py");
    // A node that never takes the job must fail the test, not hang it.
    let out = Command::new("timeout")
        .args(["300", "sbatch", "--wait"])
        .arg(&script)
        .env("SLURM_CONF", &conf)
        .output()
        .unwrap();
    let logs: String = (0..3)
        .map(|i| std::fs::read_to_string(cluster.join(format!("task-{i}.out"))).unwrap_or_default())
        .collect();
    assert_success(&out, &format!("sbatch --wait (task output:\n{logs})"));
    assert_eq!(logs.matches("run committed").count(), 1, "{logs}");
    assert_same_run(&single_run(tmp.path()), &run);
}

#[test]
fn the_kubernetes_indexed_job_command_runs_a_three_shard_extract() {
    let Some(python) = python_or_skip(
        "the_kubernetes_indexed_job_command_runs_a_three_shard_extract",
        "yaml",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("k8s-run");
    // The manifest's own container command, once per completion index, with its environment
    // pointed at local files: what each pod of the Indexed Job runs.
    let script = r#"
import os, subprocess, sys, yaml
manifest, glassbox_dir, model, data, run = sys.argv[1:6]
job = yaml.safe_load(open(manifest))
assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed", "an Indexed Job"
spec = job["spec"]
container = spec["template"]["spec"]["containers"][0]
env = {e["name"]: e["value"] for e in container["env"]}
n = spec["completions"]
assert spec["parallelism"] == n and int(env["GLASSBOX_SHARDS"]) == n, "N agrees in all three places"
env.update(GLASSBOX_MODEL=model, GLASSBOX_DATA=data, GLASSBOX_RUN=run, GLASSBOX_MAX_LENGTH="64")
env.pop("HF_HOME")
pods = []
for i in range(n):
    pod_env = dict(os.environ, **env, JOB_COMPLETION_INDEX=str(i))
    pod_env["PATH"] = glassbox_dir + os.pathsep + pod_env["PATH"]
    pods.append(subprocess.Popen(container["command"] + container["args"], env=pod_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
outs = [p.communicate() for p in pods]
for p, (o, e) in zip(pods, outs):
    sys.stdout.write(o)
    if p.returncode != 0:
        sys.exit(f"pod failed ({p.returncode}): {e}")
print(f"pods={n}")
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(workspace_root().join("deploy/kubernetes/extract-indexed-job.yaml"))
        .arg(glassbox_bin().parent().unwrap())
        .arg(tiny_gpt2())
        .arg(workspace_root().join("data/sets/default.jsonl"))
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "the Indexed Job's pods");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("pods=3"), "{stdout}");
    assert_eq!(stdout.matches("run committed").count(), 1, "{stdout}");

    // The manifest extracts with the defaults the shared arguments override, so compare with a
    // single-process run of the manifest's own settings.
    let single = tmp.path().join("single");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(tiny_gpt2())
        .arg("--data")
        .arg(workspace_root().join("data/sets/default.jsonl"))
        .args(["--hooks", HOOKS, "--max-length", "64", "--run"])
        .arg(&single)
        .output()
        .unwrap();
    assert_success(&out, "single-process extract with the manifest's settings");
    assert_same_run(&single, &run);
}
