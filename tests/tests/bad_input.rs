//! Bad inputs get a clear message naming what is wrong, exit code 2, and never a run that is
//! marked complete.

use glassbox_data::RunDir;
use glassbox_tests::*;
use std::path::Path;

fn extract(model: &str, data: &Path, hooks: &str, run: &Path) -> std::process::Output {
    glassbox()
        .args(["extract", "--model", model, "--data"])
        .arg(data)
        .args(["--hooks", hooks, "--run"])
        .arg(run)
        .output()
        .unwrap()
}

fn assert_not_complete(run: &Path) {
    assert!(
        RunDir::new(run).require_stage("extract").is_err(),
        "{} must not be marked complete",
        run.display()
    );
}

fn write(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// A later stage pointed at a run directory that does not exist says so, and leaves nothing.
#[test]
fn a_run_that_does_not_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("no_such_run");
    for args in [
        vec!["probe", "--label", "topic"],
        vec!["causal"],
        vec!["report"],
    ] {
        let out = glassbox()
            .args(&args)
            .arg("--run")
            .arg(&run)
            .output()
            .unwrap();
        assert_bad_input(&out, &["no such run directory", "glassbox extract --run"]);
        assert!(!run.exists(), "{args:?} left {}", run.display());
    }
}

#[test]
fn missing_data_file() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = extract(
        MINILM,
        &tmp.path().join("nope.jsonl"),
        "blocks.0.hook_resid_post",
        &run,
    );
    assert_bad_input(&out, &["nope.jsonl", "does not exist"]);
    assert_not_complete(&run);
}

#[test]
fn row_without_text() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(
        tmp.path(),
        "d.jsonl",
        "{\"text\":\"fine\"}\n{\"label\":\"x\"}\n",
    );
    let run = tmp.path().join("run");
    let out = extract(MINILM, &data, "blocks.0.hook_resid_post", &run);
    assert_bad_input(&out, &["d.jsonl", "row 2", "`text`"]);
    assert_not_complete(&run);
}

#[test]
fn empty_data_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(tmp.path(), "d.csv", "text,label\n");
    let run = tmp.path().join("run");
    let out = extract(MINILM, &data, "blocks.0.hook_resid_post", &run);
    assert_bad_input(&out, &["d.csv", "empty"]);
    assert_not_complete(&run);
}

#[test]
fn unknown_hook_name_suggests_a_fix() {
    if require_minilm("unknown_hook_name").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = write(tmp.path(), "d.jsonl", "{\"text\":\"a\"}\n");
    let run = tmp.path().join("run");
    let out = extract(MINILM, &data, "blocks.*.hook_resid_psot", &run);
    assert_bad_input(
        &out,
        &[
            "unknown hook `blocks.*.hook_resid_psot`",
            "did you mean `blocks.0.hook_resid_post`",
        ],
    );
    let out = extract(MINILM, &data, "blocks.9.hook_resid_post", &run);
    assert_bad_input(&out, &["unknown hook `blocks.9.hook_resid_post`"]);
    assert_not_complete(&run);
}

#[test]
fn unknown_model_not_cached_and_hub_unreachable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(tmp.path(), "d.jsonl", "{\"text\":\"a\"}\n");
    let run = tmp.path().join("run");
    // An empty cache and a Hub endpoint that refuses connections.
    let out = glassbox()
        .env("HF_HOME", tmp.path().join("hf"))
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .args(["extract", "--model", "nobody/no-such-model", "--data"])
        .arg(&data)
        .args(["--hooks", "blocks.0.hook_resid_post", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_bad_input(
        &out,
        &[
            "nobody/no-such-model",
            "not in the Hugging Face cache",
            "just models",
        ],
    );
    assert_not_complete(&run);
    // Offline mode says why it did not try the Hub.
    let out = glassbox()
        .env("HF_HOME", tmp.path().join("hf"))
        .args(["hooks", "nobody/no-such-model"])
        .output()
        .unwrap();
    assert_bad_input(&out, &["HF_HUB_OFFLINE=1"]);
}

#[test]
fn corrupt_config_json() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(model) = local_minilm(tmp.path()) else {
        return;
    };
    std::fs::write(
        model.join("config.json"),
        "{\"model_type\": \"bert\", \"hidden_size\": ",
    )
    .unwrap();
    let data = write(tmp.path(), "d.jsonl", "{\"text\":\"a\"}\n");
    let run = tmp.path().join("run");
    let out = extract(
        model.to_str().unwrap(),
        &data,
        "blocks.0.hook_resid_post",
        &run,
    );
    assert_bad_input(&out, &["config.json", "not valid JSON"]);
    assert_not_complete(&run);
    std::fs::write(model.join("config.json"), "{\"model_type\": \"mamba\"}").unwrap();
    let out = extract(
        model.to_str().unwrap(),
        &data,
        "blocks.0.hook_resid_post",
        &run,
    );
    assert_bad_input(&out, &["unsupported architecture `mamba`", "bert"]);
}

#[test]
fn probe_label_missing_or_single_class() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(model) = local_minilm(tmp.path()) else {
        return;
    };
    let rows: String = (0..12)
        .map(|i| {
            format!(
                "{{\"text\":\"sentence number {i}\",\"only\":\"same\",\"parity\":\"{}\"}}\n",
                i % 2
            )
        })
        .collect();
    let data = write(tmp.path(), "d.jsonl", &rows);
    let run = tmp.path().join("run");
    let out = extract(
        model.to_str().unwrap(),
        &data,
        "blocks.0.hook_resid_post",
        &run,
    );
    assert_success(&out, "extract");
    let probe = |label: &str| {
        glassbox()
            .args(["probe", "--label", label, "--run"])
            .arg(&run)
            .output()
            .unwrap()
    };
    assert_bad_input(
        &probe("colour"),
        &["`colour`", "no such column", "only, parity"],
    );
    assert_bad_input(&probe("only"), &["`only`", "at least two classes"]);
    assert!(RunDir::new(&run).require_stage("probe").is_err());
    let probe_with = |extra: &[&str]| {
        glassbox()
            .args(["probe", "--label", "parity", "--run"])
            .arg(&run)
            .args(extra)
            .output()
            .unwrap()
    };
    // Fewer examples per class than the split has parts.
    assert_bad_input(
        &probe_with(&["--max-per-class", "2"]),
        &["`parity`", "at least two classes with 3 or more examples"],
    );
    assert_bad_input(
        &probe_with(&["--pool", "median"]),
        &["unknown pool `median`", "mean, cls, last, max"],
    );
    assert_bad_input(
        &probe_with(&["--level", "paragraph"]),
        &["'paragraph'", "sequence, token"],
    );
    assert_bad_input(
        &probe_with(&["--level", "token"]),
        &["`parity`", "per-word lists"],
    );
    assert_bad_input(
        &probe_with(&["--token-label", "@pos"]),
        &["unknown built-in token labeler `@pos`", "@word_class"],
    );
    assert!(RunDir::new(&run).require_stage("probe").is_err());
    assert_success(&probe("parity"), "probe on a valid label");

    // Activations written by something else with a NaN in them: named, not probed.
    let part = RunDir::new(&run)
        .pooled_dir(
            glassbox_tests::hook_point("blocks.0.hook_resid_post"),
            glassbox_data::Pool::Mean,
        )
        .join("part-00000.parquet");
    poison_with_nan(&part);
    assert_bad_input(
        &probe_with(&["--force"]),
        &["hook `blocks.0.hook_resid_post`", "NaN", "example 3"],
    );
}

#[test]
fn bad_pipeline_config_names_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write(
        tmp.path(),
        "c.toml",
        "run = 'r'\n[model]\nid = 'a/b'\n[data]\npath = 'd.jsonl'\n[extract]\nhook = ['x']\n",
    );
    let out = glassbox()
        .args(["pipeline", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_bad_input(&out, &["c.toml", "unknown field `hook`"]);
}

/// A config naming a block the model lacks (the default config's TCAV and dictionary hooks are
/// MiniLM's blocks 1 and 3; the tiny GPT-2 has 2 blocks) fails right after extraction, with the
/// model's block range — not in the TCAV stage after the probes have run.
#[test]
fn pipeline_hooks_beyond_the_model_fail_before_the_probes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = glassbox_tests::workspace_root();
    let model = root.join("tests/fixtures/tiny_gpt2");
    let data = write(
        tmp.path(),
        "d.jsonl",
        &(0..12)
            .map(|i| {
                format!(
                    "{{\"text\": \"sentence number {i} here\", \"parity\": \"{}\"}}\n",
                    i % 2
                )
            })
            .collect::<String>(),
    );
    let config = write(
        tmp.path(),
        "c.toml",
        &format!(
            "run = 'r'\n[model]\nid = '{}'\n[data]\npath = '{}'\n[extract]\nhooks = ['blocks.*.hook_resid_post']\n[probe]\nlabels = ['parity']\n[dictionary]\nhooks = ['blocks.3.hook_resid_post']\n",
            model.display(),
            data.display()
        ),
    );
    let run = tmp.path().join("r");
    let out = glassbox()
        .args(["pipeline", "--config"])
        .arg(&config)
        .args(["--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_bad_input(
        &out,
        &[
            "[dictionary] hooks",
            "blocks.3.hook_resid_post",
            "the model has 2 blocks, blocks.0 to blocks.1",
        ],
    );
    assert!(RunDir::new(&run).require_stage("extract").is_ok());
    assert!(RunDir::new(&run).require_stage("probe").is_err());
}

#[test]
fn f16_storage_matches_f32_within_half_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(model) = local_minilm(tmp.path()) else {
        return;
    };
    let data = write(
        tmp.path(),
        "d.csv",
        "text,label\nA short one.,a\nAnother sentence here.,b\n",
    );
    let runs: Vec<std::path::PathBuf> = ["f32", "f16"]
        .iter()
        .map(|dtype| {
            let run = tmp.path().join(dtype);
            let out = glassbox()
                .args(["extract", "--model", model.to_str().unwrap(), "--data"])
                .arg(&data)
                .args([
                    "--hooks",
                    "blocks.1.hook_resid_post",
                    "--dtype",
                    dtype,
                    "--run",
                ])
                .arg(&run)
                .output()
                .unwrap();
            assert_success(&out, "extract");
            run
        })
        .collect();
    let read = |run: &std::path::Path| {
        glassbox_data::store::read_pooled_matrix(&RunDir::new(run).pooled_dir(
            glassbox_tests::hook_point("blocks.1.hook_resid_post"),
            glassbox_data::Pool::Mean,
        ))
        .unwrap()
    };
    let (full, half) = (read(&runs[0]), read(&runs[1]));
    assert_eq!(full.example_ids, half.example_ids);
    for (a, b) in full.values.iter().zip(&half.values) {
        // f16 keeps 11 significant bits: relative error ≤ 2^-11.
        assert!((a - b).abs() <= a.abs() * 1e-3 + 1e-4, "{a} vs {b}");
    }
    let part = RunDir::new(&runs[1])
        .pooled_dir(
            glassbox_tests::hook_point("blocks.1.hook_resid_post"),
            glassbox_data::Pool::Mean,
        )
        .join("part-00000.parquet");
    let kv = glassbox_data::store::read_metadata(&part).unwrap();
    assert_eq!(kv["glassbox.dtype"], "f16");
}

#[test]
fn tcav_bad_inputs_name_the_concept_target_or_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(model) = local_minilm(tmp.path()) else {
        return;
    };
    let rows: String = (0..24)
        .map(|i| {
            format!(
                "{{\"text\":\"{} number {i}\",\"kind\":\"{}\"}}\n",
                if i % 2 == 0 {
                    "A cat sat on mat"
                } else {
                    "Stocks fell on day"
                },
                if i % 2 == 0 { "pets" } else { "markets" }
            )
        })
        .collect();
    let data = write(tmp.path(), "d.jsonl", &rows);
    let run = tmp.path().join("run");
    let out = extract(
        model.to_str().unwrap(),
        &data,
        "blocks.*.hook_resid_post",
        &run,
    );
    assert_success(&out, "extract");
    let probe = glassbox()
        .args(["probe", "--label", "kind", "--no-neurons", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&probe, "probe");
    let concepts = tmp.path().join("concepts");
    std::fs::create_dir(&concepts).unwrap();
    let full = write(
        &concepts,
        "animals.jsonl",
        &(0..12)
            .map(|i| format!("{{\"text\":\"the dog number {i} barks\"}}\n"))
            .collect::<String>(),
    );
    let empty = write(&concepts, "nothing.jsonl", "");
    let small = write(
        &concepts,
        "tiny.jsonl",
        "{\"text\":\"one\"}\n{\"text\":\"two\"}\n",
    );
    let tcav = |concept: &Path, target: &str, extra: &[&str]| {
        glassbox()
            .args(["tcav", "--run"])
            .arg(&run)
            .arg("--concepts")
            .arg(concept)
            .args(["--target", target, "--random-runs", "3"])
            .args(extra)
            .output()
            .unwrap()
    };
    assert_bad_input(
        &tcav(&empty, "probe:kind=pets", &[]),
        &["nothing.jsonl", "empty"],
    );
    assert_bad_input(
        &tcav(&small, "probe:kind=pets", &[]),
        &["tiny.jsonl", "2 example(s)", "minimum of 10"],
    );
    assert_bad_input(
        &tcav(&full, "probe:kind=birds", &[]),
        &["class `birds` unknown", "markets, pets"],
    );
    assert_bad_input(
        &tcav(
            &full,
            "probe:kind=pets",
            &["--hooks", "blocks.1.hook_resid_post"],
        ),
        &[
            "hook `blocks.1.hook_resid_post` has no gradients",
            "glassbox gradients",
        ],
    );
    // With its gradients stored, the same command succeeds.
    let gradients = glassbox()
        .args(["gradients", "--run"])
        .arg(&run)
        .args([
            "--target",
            "probe:kind=pets",
            "--hooks",
            "blocks.1.hook_resid_post",
        ])
        .output()
        .unwrap();
    assert_success(&gradients, "gradients");
    let ok = tcav(
        &full,
        "probe:kind=pets",
        &["--hooks", "blocks.1.hook_resid_post", "--json"],
    );
    assert_success(&ok, "tcav");
    let scores: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(scores.as_array().unwrap().len(), 1);
    assert_eq!(scores[0]["convention"], "logit");
}

#[test]
fn a_folder_as_text_data_or_a_file_as_the_run_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = workspace_root().join("tests/fixtures/tiny_gpt2");
    let model = model.to_str().unwrap();
    let run = tmp.path().join("run");
    let out = extract(model, tmp.path(), "blocks.0.hook_resid_post", &run);
    assert_bad_input(&out, &["is a folder", "JSONL, CSV, TSV or Parquet"]);
    assert!(!run.exists(), "nothing written");

    let data = write(tmp.path(), "d.jsonl", "{\"text\":\"fine\"}\n");
    let not_a_folder = write(tmp.path(), "run.txt", "mine");
    let out = extract(model, &data, "blocks.0.hook_resid_post", &not_a_folder);
    assert_bad_input(&out, &["run.txt", "is a file", "--run"]);
    assert_eq!(std::fs::read_to_string(&not_a_folder).unwrap(), "mine");
}
