//! Input attributions of an encoder (all-MiniLM-L6-v2, BERT family, from `just models`) against
//! Captum 0.9 (`scripts/reference_attribution.py`'s `encoder` section): a fixed linear head on
//! the mean-pooled last hidden state (what a `probe:` target reads), the word embeddings as
//! input — saliency, gradient × input, integrated gradients (16 Gauss–Legendre steps) and
//! token occlusion, every feature within 1e-4 of the reference's largest magnitude. Skips
//! (fails under `CI=true`) without the model.

use glassbox_models::{load_model, resolve, HookPoint, LoadOptions, ModelSpec, Pool};
use glassbox_runner::attribution::methods::token_windows;
use glassbox_runner::attribution::oracle::{Oracle, Target, TextOracle};
use glassbox_runner::gradients::LinearHead;
use serde_json::Value;

mod common;
use common::{encoded, floats, four_methods_match, ids};

#[test]
fn minilm_attributions_match_captum() {
    let Some(snapshot) = glassbox_tests::require_minilm("minilm_attributions_match_captum") else {
        return;
    };
    let text = std::fs::read_to_string(
        glassbox_tests::workspace_root().join("tests/fixtures/attribution/reference.json"),
    )
    .unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    let r = &all["encoder"];
    assert!(r.is_object(), "reference.json lacks the encoder section; run `just reference-attribution` with MiniLM cached");
    let spec: ModelSpec = snapshot.display().to_string().parse().unwrap();
    let model = load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap();
    let ids = ids(&r["ids"]);
    let n = ids.len();
    let encoded = encoded(ids);
    let head = LinearHead {
        hook: HookPoint::ResidPost(5),
        pool: Pool::Mean,
        weight: floats(&r["head_weight"]),
        bias: vec![r["head_bias"].as_f64().unwrap() as f32],
        n_classes: 2,
        class: 1,
    };
    let o = TextOracle::new(&model, encoded, Target::Probe(head), 8).unwrap();
    let x = o.input().to_vec();
    let f = o.values(std::slice::from_ref(&x)).unwrap()[0];
    let want = r["f_input"].as_f64().unwrap();
    assert!(
        (f - want).abs() < 1e-4 * want.abs().max(1.0),
        "f(x) {f} vs {want}"
    );
    let d = o.width();
    four_methods_match(&o, r, &token_windows(n, d, 1, 1));
}
