//! `glassbox dictionary` on a small real run: bad inputs are named (exit 2, nothing marked
//! complete), and an interrupted training — paused, or killed outright — resumes from its last
//! checkpoint to the very weights an uninterrupted run produces.

use glassbox_data::RunDir;
use glassbox_tests::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const HOOK: &str = "blocks.1.hook_resid_post";

fn small_run(dir: &Path) -> Option<PathBuf> {
    glassbox_tests::small_topic_run(dir, HOOK)
}

fn dictionary(run: &Path, extra: &[&str]) -> Output {
    glassbox()
        .args(["dictionary", "--run"])
        .arg(run)
        .args(extra)
        .output()
        .unwrap()
}

fn not_complete(run: &Path) {
    let manifest = RunDir::new(run).require_stage("extract").unwrap();
    assert!(
        !manifest.stages.contains_key("dictionary"),
        "dictionary must not be marked complete"
    );
}

/// An unfinished re-run leaves the run's completed dictionary as it was: still marked
/// complete, with the same weights.
fn earlier_result_intact(run: &Path, reference: &[u8]) {
    let manifest = RunDir::new(run).require_stage("dictionary").unwrap();
    assert!(manifest.stages.contains_key("dictionary"));
    assert!(weights(run) == reference, "the earlier SAE was changed");
}

#[test]
fn bad_dictionary_inputs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(run) = small_run(tmp.path()) else {
        return;
    };
    assert_bad_input(
        &dictionary(&run, &["--hook", HOOK, "--width", "16", "--k", "16"]),
        &["k = 16", "smaller than width = 16"],
    );
    assert_bad_input(
        &dictionary(&run, &["--hook", HOOK, "--width", "0"]),
        &["width must be at least 1"],
    );
    assert_bad_input(
        &dictionary(&run, &["--hook", "blocks.4.hook_resid_post"]),
        &["hook `blocks.4.hook_resid_post` is not in the store", HOOK],
    );
    assert_bad_input(
        &dictionary(&run, &["--hook", HOOK, "--architecture", "gated"]),
        &["unknown architecture `gated`"],
    );
    assert_bad_input(
        &dictionary(
            &run,
            &[
                "--load-sae",
                &format!("{HOOK}={}", tmp.path().join("nowhere").display()),
            ],
        ),
        &["nowhere", "cfg.json", "SAELens"],
    );
    assert_bad_input(&dictionary(&run, &[]), &["nothing to do"]);
    // A dictionary_learning pickle: read on request only, then checked against the hook.
    let pickled = workspace_root().join("tests/fixtures/sae_suites/dictionary_learning/standard");
    let spec = format!("{HOOK}={}", pickled.display());
    assert_bad_input(
        &dictionary(&run, &["--load-sae", &spec]),
        &["ae.pt", "pickle", "--allow-pickle"],
    );
    let out = dictionary(&run, &["--load-sae", &spec, "--allow-pickle"]);
    assert_bad_input(&out, &["d_in", "8", "384"]);
    not_complete(&run);
    // NaN in activations written by another tool: named by example, position and unit.
    let part = RunDir::new(&run)
        .activations_dir(glassbox_tests::hook_point(HOOK))
        .join("part-00000.parquet");
    poison_with_nan(&part);
    assert_bad_input(
        &dictionary(&run, &["--hook", HOOK, "--width", "32", "--k", "4"]),
        &[&format!("hook `{HOOK}`"), "example 3", "unit 5", "NaN"],
    );
    not_complete(&run);
}

fn weights(run: &Path) -> Vec<u8> {
    std::fs::read(
        RunDir::new(run)
            .dictionary_dir(glassbox_tests::hook_point(HOOK))
            .join("sae/sae_weights.safetensors"),
    )
    .unwrap()
}

#[test]
fn paused_and_killed_trainings_resume_to_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(run) = small_run(tmp.path()) else {
        return;
    };
    let config = tmp.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "run = 'unused'\n[model]\nid = 'unused'\n[data]\npath = 'unused'\n[dictionary]\nhooks = ['{HOOK}']\n\
             [dictionary.sae]\nwidth = 64\nk = 4\nbatch_size = 64\ntrain_tokens = 200000\ncheckpoint_every = 500\n"
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    // Uninterrupted.
    assert_success(&dictionary(&run, &args), "uninterrupted training");
    let reference = weights(&run);
    // A re-run stages its outputs (and its checkpoint) until it completes.
    let checkpoint = run
        .join(".staging/dictionary")
        .join(format!("dictionary/hook={HOOK}/checkpoint.safetensors"));
    assert!(
        !RunDir::new(&run)
            .dictionary_dir(glassbox_tests::hook_point(HOOK))
            .join("checkpoint.safetensors")
            .exists(),
        "a finished training leaves no checkpoint"
    );

    // Paused after 100 steps, then resumed.
    let paused = dictionary(
        &run,
        &[&args[..], &["--force", "--pause-after", "1000"]].concat(),
    );
    assert_success(&paused, "paused training");
    assert!(String::from_utf8_lossy(&paused.stderr).contains("paused at step 1000"));
    assert!(checkpoint.exists());
    earlier_result_intact(&run, &reference);
    let resumed = dictionary(&run, &args);
    assert_success(&resumed, "resumed training");
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains("resuming SAE training from step 1000")
    );
    assert!(
        weights(&run) == reference,
        "paused + resumed weights differ from uninterrupted ones"
    );

    // Killed (SIGKILL) once a checkpoint exists, then run again (without --force, which would
    // start over).
    let mut child = glassbox()
        .args(["dictionary", "--force", "--run"])
        .arg(&run)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !checkpoint.exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the training finished before the kill; give it more steps"
    );
    assert!(checkpoint.exists(), "the checkpoint survives the kill");
    earlier_result_intact(&run, &reference);
    let after = dictionary(&run, &args);
    assert_success(&after, "training after a kill");
    assert!(String::from_utf8_lossy(&after.stderr).contains("resuming SAE training from step"));
    assert!(
        weights(&run) == reference,
        "killed + resumed weights differ from uninterrupted ones"
    );
}

/// The saved SAE's `cfg.json` and tensor names.
fn saved(run: &Path) -> (serde_json::Value, Vec<String>) {
    let dir = RunDir::new(run)
        .dictionary_dir(glassbox_tests::hook_point(HOOK))
        .join("sae");
    let cfg = serde_json::from_slice(&std::fs::read(dir.join("cfg.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("sae_weights.safetensors")).unwrap();
    let names = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    (cfg, names)
}

#[test]
fn batch_topk_jumprelu_and_matryoshka_saes_train_and_save_as_saelens_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(run) = small_run(tmp.path()) else {
        return;
    };
    for (architecture, extra) in [
        ("jumprelu", ""),
        ("batchtopk", "matryoshka_widths = [16]\n"),
    ] {
        let config = tmp.path().join(format!("{architecture}.toml"));
        std::fs::write(
            &config,
            format!(
                "run = 'unused'\n[model]\nid = 'unused'\n[data]\npath = 'unused'\n[dictionary]\n\
                 hooks = ['{HOOK}']\n[dictionary.sae]\narchitecture = '{architecture}'\nwidth = 64\n\
                 k = 4\nbatch_size = 64\ntrain_tokens = 20000\n{extra}"
            ),
        )
        .unwrap();
        let out = dictionary(&run, &["--force", "--config", config.to_str().unwrap()]);
        assert_success(&out, architecture);
        // Both run as JumpReLU SAEs (BatchTopK with its one learnt threshold), as SAELens saves
        // them for inference.
        let (cfg, names) = saved(&run);
        assert_eq!(cfg["architecture"], "jumprelu", "{architecture}: {cfg}");
        assert!(names.iter().any(|n| n == "threshold"), "{names:?}");
        let metrics: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                RunDir::new(&run)
                    .dictionary_dir(glassbox_tests::hook_point(HOOK))
                    .join("metrics.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let l0 = metrics["sae"]["l0"].as_f64().unwrap_or(f64::NAN);
        assert!(
            l0 > 0.0 && l0 < 64.0,
            "{architecture}: L0 {l0} in {metrics}"
        );
    }
    // Matryoshka widths on an architecture they do not apply to: named, exit 2.
    let config = tmp.path().join("bad.toml");
    std::fs::write(
        &config,
        format!(
            "run = 'unused'\n[model]\nid = 'unused'\n[data]\npath = 'unused'\n[dictionary]\n\
             hooks = ['{HOOK}']\n[dictionary.sae]\narchitecture = 'relu'\nwidth = 64\n\
             matryoshka_widths = [16]\n"
        ),
    )
    .unwrap();
    assert_bad_input(
        &dictionary(&run, &["--force", "--config", config.to_str().unwrap()]),
        &["matryoshka_widths", "relu"],
    );
}
