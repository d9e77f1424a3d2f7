//! The CLI on a causal LM with no download: the committed tiny GPT-2 (see
//! `scripts/reference_tiny_gpt2.py`) lists its TransformerLens hooks, extracts token and pooled
//! activations, and a small SAE trains on them.

use glassbox_data::RunDir;
use glassbox_tests::*;

#[test]
fn tiny_gpt2_extracts_and_trains_an_sae() {
    let model = workspace_root().join("tests/fixtures/tiny_gpt2");
    let out = glassbox().arg("hooks").arg(&model).output().unwrap();
    assert_success(&out, "hooks");
    let hooks = String::from_utf8_lossy(&out.stdout);
    for want in [
        "hook_embed",
        "blocks.1.attn.hook_z",
        "blocks.1.mlp.hook_post",
        "ln_final.hook_normalized",
    ] {
        assert!(hooks.lines().any(|l| l == want), "{want} missing:\n{hooks}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(workspace_root().join("data/sets/default.jsonl"))
        .args([
            "--hooks",
            "blocks.*.hook_resid_post,ln_final.hook_normalized",
            "--max-length",
            "64",
            "--pools",
            "mean,last",
            "--run",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "extract");
    let r = RunDir::new(&run);
    let manifest = r.require_stage("extract").unwrap();
    assert_eq!(manifest.model.unwrap().family, "gpt2");
    assert_eq!(r.stored_hooks(false).unwrap().len(), 3);
    let out = glassbox()
        .args(["dictionary", "--run"])
        .arg(&run)
        .args([
            "--hook",
            "blocks.1.hook_resid_post",
            "--width",
            "64",
            "--k",
            "4",
            "--train-tokens",
            "50000",
            "--batch-size",
            "256",
            "--json",
        ])
        .output()
        .unwrap();
    assert_success(&out, "dictionary");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ev = summary[0]["metrics"]["explained_variance"]
        .as_f64()
        .unwrap();
    assert!(ev > 0.3, "held-out explained variance {ev}");
}

#[test]
fn decoder_bad_inputs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = workspace_root().join("tests/fixtures/tiny_llama");
    let model = fixture_copy(
        &src,
        &["config.json", "model.safetensors", "tokenizer.json"],
        tmp.path(),
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let hooks = |cfg: &serde_json::Value| {
        std::fs::write(model.join("config.json"), cfg.to_string()).unwrap();
        glassbox().arg("hooks").arg(&model).output().unwrap()
    };
    let mut c = config.clone();
    c["model_type"] = "mamba".into();
    assert_bad_input(
        &hooks(&c),
        &["unsupported architecture `mamba`", "gpt2", "llama", "qwen2"],
    );
    let mut c = config.clone();
    c["num_hidden_layers"] = 3.into();
    assert_bad_input(&hooks(&c), &["model.layers.2.", "missing"]);
    let mut c = config.clone();
    // Qwen2-VL's multimodal rotary: not a scaling glassbox implements.
    c["rope_parameters"]["rope_type"] = "mrope".into();
    assert_bad_input(
        &hooks(&c),
        &["rope type `mrope` is not supported", "llama3", "yarn"],
    );
    // A vocabulary size that disagrees with the embedding names the tensor and both shapes.
    let mut c = config.clone();
    c["vocab_size"] = 256.into();
    assert_bad_input(
        &hooks(&c),
        &["embed_tokens.weight", "[512, 32]", "[256, 32]"],
    );
    let mut c = config.clone();
    c["num_key_value_heads"] = 3.into();
    assert_bad_input(
        &hooks(&c),
        &["num_attention_heads 4", "num_key_value_heads 3"],
    );
    // Values that would make every activation NaN are named, not blamed on the weights.
    let mut c = config.clone();
    c["rms_norm_eps"] = (-1.0).into();
    assert_bad_input(&hooks(&c), &["config.json", "rms_norm_eps = -1.0"]);
    let mut c = config.clone();
    c["rope_parameters"]["rope_theta"] = 0.0.into();
    assert_bad_input(&hooks(&c), &["config.json", "`rope_theta` = 0.0"]);
}

#[test]
fn token_targets_give_tcav_scores_on_a_causal_lm() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_decoder_run("tiny_llama", &run, true, Some("topic"));
    let tcav = |target: &str| gradients_then_tcav(&run, target);
    let out = tcav("token: the");
    assert_success(&out, "tcav on a token target");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4, "2 concepts × 2 hooks");
    assert!(rows
        .iter()
        .all(|r| r["target"] == "token: the" && r["score"].as_f64().unwrap() <= 1.0));
    assert_bad_input(
        &tcav("token:the chef"),
        &["`the chef` is", "tokens", "not one"],
    );
}

/// TCAV of a text classifier's own class (`class:<label>`, BERT's pooler and classifier on
/// `[CLS]`): scores for every concept at the hooks before the head; an unknown class lists the
/// classes; a causal LM has no class head to read.
#[test]
fn class_targets_give_tcav_scores_on_a_text_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_decoder_run("tiny_bert_classifier", &run, true, Some("topic"));
    let out = gradients_then_tcav(&run, "class:positive");
    assert_success(&out, "tcav on a class target");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(
        rows.len(),
        2,
        "2 concepts × the hook before the head: {rows:?}"
    );
    assert!(rows
        .iter()
        .all(|r| r["target"] == "class:positive" && r["score"].as_f64().unwrap() <= 1.0));
    assert_bad_input(
        &gradients_then_tcav(&run, "class:sarcastic"),
        &["no class `sarcastic`", "negative; neutral; positive"],
    );
    let lm = tmp.path().join("lm");
    tiny_decoder_run("tiny_gpt2", &lm, false, Some("topic"));
    assert_bad_input(
        &gradients_then_tcav(&lm, "class:positive"),
        &["no class head"],
    );
}

/// `glassbox gradients` for `target`, then (if it succeeded) `glassbox tcav --json` of the
/// shipped food and numbers concepts with 3 random runs; the last command's output.
fn gradients_then_tcav(run: &std::path::Path, target: &str) -> std::process::Output {
    let out = glassbox()
        .args(["gradients", "--target", target, "--run"])
        .arg(run)
        .output()
        .unwrap();
    if !out.status.success() {
        return out;
    }
    let concepts = workspace_root().join("data/concepts");
    glassbox()
        .args([
            "tcav",
            "--json",
            "--random-runs",
            "3",
            "--target",
            target,
            "--run",
        ])
        .arg(run)
        .arg("--concepts")
        .arg(format!(
            "{},{}",
            concepts.join("food.jsonl").display(),
            concepts.join("numbers.jsonl").display()
        ))
        .output()
        .unwrap()
}

/// `glassbox hooks MODEL | head`: a reader that closed the pipe gets no panic message and the
/// command exits 0 (the read end is closed before glassbox writes, so the write fails).
#[test]
fn closed_stdout_is_not_a_panic() {
    let model = workspace_root().join("tests/fixtures/tiny_gpt2");
    let mut child = glassbox()
        .arg("hooks")
        .arg(&model)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// Activations beyond f16's range (here the token embeddings scaled by 1e6) are refused when
/// stored as f16 — where they would otherwise be written as infinities — naming the example,
/// the unit and `--dtype f32`, exit 2, the run unchanged; stored as f32 they extract.
#[test]
fn f16_storage_refuses_activations_beyond_its_range() {
    let tmp = tempfile::tempdir().unwrap();
    let src = workspace_root().join("tests/fixtures/tiny_gpt2");
    let model = fixture_copy(&src, &["config.json", "tokenizer.json"], tmp.path());
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let scaled = scaled_tensors(&bytes, |name| name.ends_with("wte.weight"), 1e6);
    std::fs::write(model.join("model.safetensors"), scaled).unwrap();
    let data = tmp.path().join("texts.jsonl");
    std::fs::write(
        &data,
        "{\"text\": \"hello world\"}\n{\"text\": \"a second text\"}\n",
    )
    .unwrap();
    let run = tmp.path().join("run");
    let extract = |dtype: &str| {
        glassbox()
            .args(["extract", "--quiet", "--hooks", "blocks.0.hook_resid_pre"])
            .args(["--dtype", dtype, "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--run")
            .arg(&run)
            .output()
            .unwrap()
    };
    let before = snapshot(&run);
    assert_bad_input(
        &extract("f16"),
        &[
            "beyond f16's range",
            "example_id 0",
            "--dtype f32",
            "blocks.0.hook_resid_pre",
        ],
    );
    assert_eq!(snapshot(&run), before, "the refused run is unchanged");
    assert_success(&extract("f32"), "extract as f32");
}

/// `files` of the fixture folder `src` copied into `<tmp>/model`, which is returned.
fn fixture_copy(
    src: &std::path::Path,
    files: &[&str],
    tmp: &std::path::Path,
) -> std::path::PathBuf {
    let model = tmp.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in files {
        std::fs::copy(src.join(f), model.join(f)).unwrap();
    }
    model
}

/// Every stage records the build and the instruction set that computed it; a stage kept from
/// another build says so when found up to date, and `inspect` names it.
#[test]
fn stages_record_their_build_and_a_kept_stage_from_another_build_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // The lowest vector level this CPU has: the record must follow the cap, not the CPU.
    let level = glassbox_data::simd::available_levels()[0];
    let extract = || {
        glassbox()
            .env("GLASSBOX_SIMD", level.as_str())
            .args(["extract", "--model"])
            .arg(workspace_root().join("tests/fixtures/tiny_gpt2"))
            .arg("--data")
            .arg(workspace_root().join("data/sets/default.jsonl"))
            .args(["--hooks", "blocks.0.hook_resid_post", "--max-length", "16"])
            .arg("--run")
            .arg(&run)
            .output()
            .unwrap()
    };
    assert_success(&extract(), "extract");
    let version = glassbox().arg("--version").output().unwrap();
    assert_success(&version, "--version");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let manifest_path = run.join("manifest.json");
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap()
    };
    let build = read()["stages"]["extract"]["build"].clone();
    assert_eq!(build["simd"], level.as_str(), "{build}");
    assert_eq!(build["glassbox_version"], env!("CARGO_PKG_VERSION"));
    let source = build["source"].as_str().unwrap().to_owned();
    assert!(
        source.len() == 16 && version.contains(&format!("source {source}")),
        "the manifest's source {source} is this binary's: {version}"
    );

    let again = extract();
    assert_success(&again, "extract again");
    let note = String::from_utf8_lossy(&again.stderr);
    assert!(
        note.contains("extract: up to date") && !note.contains("another glassbox build"),
        "{note}"
    );

    let mut manifest = read();
    manifest["stages"]["extract"]["build"]["source"] = "feedfacefeedface".into();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let kept = extract();
    assert_success(&kept, "extract after a rebuild");
    let note = String::from_utf8_lossy(&kept.stderr);
    assert!(
        note.contains("up to date")
            && note.contains("from another glassbox build (source feedfacefeedface"),
        "{note}"
    );
    let inspect = glassbox().arg("inspect").arg(&run).output().unwrap();
    assert_success(&inspect, "inspect");
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("another build, source feedfacefeedface"),
        "{text}"
    );
}

/// A glob over attention hooks leaves out the patterns (not storable) with a note; a glob that
/// matches nothing else is refused saying why.
#[test]
fn globs_leave_out_the_attention_patterns() {
    let tmp = tempfile::tempdir().unwrap();
    let extract = |hooks: &str, run: &str| {
        glassbox()
            .args(["extract", "--model"])
            .arg(workspace_root().join("tests/fixtures/tiny_gpt2"))
            .arg("--data")
            .arg(workspace_root().join("data/sets/default.jsonl"))
            .args(["--hooks", hooks, "--max-length", "16", "--run"])
            .arg(tmp.path().join(run))
            .output()
            .unwrap()
    };
    let out = extract("blocks.0.attn.*", "attn");
    assert_success(&out, "extract blocks.0.attn.*");
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("left out 1 attention-pattern hook(s)")
            && note.contains("blocks.0.attn.hook_pattern"),
        "{note}"
    );
    let stored = glassbox_data::RunDir::new(tmp.path().join("attn"))
        .stored_hooks(false)
        .unwrap();
    assert_eq!(stored.len(), 4, "q, k, v and z: {stored:?}");
    assert_bad_input(
        &extract("blocks.*.attn.hook_pattern", "patterns"),
        &["match only attention patterns", "Capture"],
    );
    assert!(!tmp.path().join("patterns").exists());
}
