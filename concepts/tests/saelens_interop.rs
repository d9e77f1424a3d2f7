//! SAELens interop against fixtures written by SAELens itself (`scripts/reference_saelens.py`):
//! its TopK, standard, JumpReLU and gated SAEs, BatchTopK and Matryoshka SAEs saved for
//! inference, and a SAELens 5 TopK config load here and encode/decode like SAELens; an SAE saved here has
//! SAELens's config keys, tensor names and shapes, and loads back unchanged.

use glassbox_concepts::sae::saelens::{self, Provenance};
use glassbox_concepts::sae::Architecture;
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/saelens")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
        .unwrap()
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

#[test]
fn saelens_saes_encode_and_decode_like_saelens() {
    let reference = reference();
    let inputs = matrix(&reference["inputs"]);
    let x: Vec<f32> = inputs.concat();
    for (name, architecture) in [
        ("topk", "topk"),
        ("standard", "relu"),
        ("jumprelu", "jumprelu"),
        ("gated", "gated"),
        ("batchtopk", "jumprelu"),
        ("matryoshka", "jumprelu"),
        ("legacy_topk", "topk"),
        ("norm_rescale", "relu"),
        ("norm_layer", "topk"),
        ("topk_rescaled", "topk"),
    ] {
        let loaded = saelens::load(&fixtures().join(name)).unwrap();
        assert_eq!(
            loaded.hook_name.as_deref(),
            Some("blocks.0.hook_resid_post")
        );
        let sae = &loaded.sae;
        assert_eq!(sae.architecture.name(), architecture, "{name}");
        if let Architecture::TopK { k } = sae.architecture {
            assert_eq!(k, 4, "{name}");
        }
        let codes = sae.encode(&x).unwrap();
        let want = matrix(&reference[name]["codes"]);
        for (r, want_row) in want.iter().enumerate() {
            let mut dense = vec![0.0f32; sae.width];
            for (j, v) in codes.row(r) {
                dense[j] = v;
            }
            for (j, (g, w)) in dense.iter().zip(want_row).enumerate() {
                // Relative past 1: the rescaled fixture's codes reach ~2·10³, where one f32
                // rounding step is ~10⁻⁴.
                assert!(
                    (g - w).abs() < 1e-4 * w.abs().max(1.0),
                    "{name} row {r} latent {j}: {g} vs SAELens {w}"
                );
            }
        }
        // SAELens decodes right after encoding, with the rows' normalisation statistics.
        let recon = sae.reconstruct(&x).unwrap();
        let want = matrix(&reference[name]["reconstructions"]).concat();
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in recon.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() < 1e-4 * scale,
                "{name} reconstruction {i}: {g} vs SAELens {w}"
            );
        }
        let expected_norm = match name {
            "norm_rescale" => "constant_norm_rescale",
            "norm_layer" => "layer_norm",
            _ => "none",
        };
        assert_eq!(sae.input_norm.name(), expected_norm, "{name}");
    }
}

#[test]
fn saved_saes_have_the_saelens_layout_and_round_trip() {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    for name in ["topk", "standard", "jumprelu", "gated"] {
        let original = saelens::load(&fixtures().join(name)).unwrap().sae;
        let out = dir.path().join(name);
        let provenance = Provenance {
            model_name: "m".into(),
            hook_name: "blocks.0.hook_resid_post".into(),
            ..Provenance::default()
        };
        saelens::save(&out, &original, &provenance).unwrap();
        // Config: the same keys as SAELens writes (values of `metadata` aside).
        let ours: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("cfg.json")).unwrap()).unwrap();
        let theirs: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(name).join("cfg.json")).unwrap(),
        )
        .unwrap();
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&ours), keys(&theirs), "{name} cfg.json keys");
        for key in [
            "architecture",
            "d_in",
            "d_sae",
            "k",
            "apply_b_dec_to_input",
            "normalize_activations",
        ] {
            assert_eq!(ours.get(key), theirs.get(key), "{name} cfg.json `{key}`");
        }
        // Tensors: SAELens's names and shapes.
        let bytes = std::fs::read(out.join("sae_weights.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut shapes: Vec<(String, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.shape().to_vec()))
            .collect();
        shapes.sort();
        let mut want: Vec<(String, Vec<usize>)> = reference[name]["keys"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap() as usize)
                        .collect(),
                )
            })
            .collect();
        want.sort();
        assert_eq!(shapes, want, "{name} tensor names and shapes");
        let back = saelens::load(&out).unwrap().sae;
        assert!(back == original, "{name}: round trip changed the weights");
    }
}

#[test]
fn unsupported_saelens_configs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("jump");
    std::fs::create_dir_all(&out).unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("topk/cfg.json")).unwrap())
            .unwrap();
    cfg["architecture"] = "jumprelu".into();
    std::fs::write(out.join("cfg.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        fixtures().join("topk/sae_weights.safetensors"),
        out.join("sae_weights.safetensors"),
    )
    .unwrap();
    // A JumpReLU config over weights without thresholds.
    let e = saelens::load(&out).unwrap_err().to_string();
    assert!(e.contains("log_threshold") && e.contains("missing"), "{e}");
    cfg["architecture"] = "temporal".into();
    std::fs::write(out.join("cfg.json"), cfg.to_string()).unwrap();
    let e = saelens::load(&out).unwrap_err().to_string();
    assert!(e.contains("temporal") && e.contains("jumprelu"), "{e}");
    cfg["architecture"] = "topk".into();
    cfg["normalize_activations"] = "covariance_whitening".into();
    std::fs::write(out.join("cfg.json"), cfg.to_string()).unwrap();
    let e = saelens::load(&out).unwrap_err().to_string();
    assert!(
        e.contains("covariance_whitening") && e.contains("layer_norm"),
        "{e}"
    );
    cfg["normalize_activations"] = "none".into();
    cfg["d_sae"] = 17.into();
    std::fs::write(out.join("cfg.json"), cfg.to_string()).unwrap();
    let e = saelens::load(&out).unwrap_err().to_string();
    assert!(e.contains("`W_enc`") && e.contains("[8, 17]"), "{e}");
}
