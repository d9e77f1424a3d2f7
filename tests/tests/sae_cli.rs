//! `glassbox sae inspect` on every suite's fixture (`scripts/reference_saelens.py`,
//! `scripts/reference_sae_suites.py`): format, architecture, widths and hook from config and
//! tensor headers, as JSON; a folder of no known layout exits 2 naming the layouts.

use glassbox_tests::*;

#[test]
fn sae_inspect_reads_every_suite() {
    let fixtures = workspace_root().join("tests/fixtures");
    for (folder, format, architecture, hook) in [
        (
            "saelens/jumprelu",
            "saelens",
            "jumprelu",
            "blocks.0.hook_resid_post",
        ),
        (
            "saelens/legacy_topk",
            "saelens",
            "topk",
            "blocks.0.hook_resid_post",
        ),
        (
            "sae_suites/gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_5",
            "gemma_scope",
            "jumprelu",
            "blocks.3.hook_resid_post",
        ),
        (
            "sae_suites/gemma-scope-2-1b-pt/resid_post/layer_2_width_16k_l0_small",
            "gemma_scope_2",
            "jumprelu",
            "blocks.2.hook_resid_post",
        ),
        (
            "sae_suites/llama-scope/Llama3_1-8B-Base-L4R-8x",
            "llama_scope",
            "jumprelu",
            "blocks.4.hook_resid_post",
        ),
        (
            "sae_suites/sparsify/layers.5",
            "sparsify",
            "topk",
            "blocks.5.hook_resid_post",
        ),
    ] {
        let out = glassbox()
            .args(["sae", "inspect", "--json", "--check"])
            .arg(fixtures.join(folder))
            .output()
            .unwrap();
        assert_success(&out, folder);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["format"], format, "{folder}");
        assert_eq!(v["architecture"], architecture, "{folder}");
        assert_eq!(v["hook_name"], hook, "{folder}");
        assert_eq!(
            (v["d_in"].as_u64(), v["d_sae"].as_u64()),
            (Some(8), Some(16))
        );
        assert!(!v["tensors"].as_array().unwrap().is_empty(), "{folder}");
        assert_eq!(v["check"]["loads"], true, "{folder}: {}", v["check"]);
        assert_eq!(v["notes"], serde_json::json!([]), "{folder}");
    }
    // The headers say what a folder claims; --check loads it as `dictionary --load-sae` would.
    let bad = tempfile::tempdir().unwrap();
    let source = fixtures.join("saelens/standard");
    for file in ["cfg.json", "sae_weights.safetensors"] {
        std::fs::copy(source.join(file), bad.path().join(file)).unwrap();
    }
    let cfg = bad.path().join("cfg.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["d_in"] = 9.into();
    std::fs::write(&cfg, c.to_string()).unwrap();
    let inspect = |check: bool| {
        let mut cmd = glassbox();
        cmd.args(["sae", "inspect"]).arg(bad.path());
        if check {
            cmd.arg("--check");
        }
        cmd.output().unwrap()
    };
    let headers = inspect(false);
    assert_success(&headers, "inspect reads headers only");
    let text = String::from_utf8_lossy(&headers.stdout);
    assert!(
        text.contains("note          tensor `W_enc` [8, 16] has a side that is neither d_in 9"),
        "the headers' disagreement with the config is noted: {text}"
    );
    assert_bad_input(&inspect(true), &["W_enc", "[8, 16]", "expected [9, 16]"]);
    let tmp = tempfile::tempdir().unwrap();
    let out = glassbox()
        .args(["sae", "inspect"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_bad_input(&out, &["no SAE format recognised", "params.npz"]);
}
