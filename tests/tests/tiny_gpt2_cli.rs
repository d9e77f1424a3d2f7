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
