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
        pooler: None,
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

/// The hand-written backward from the token embeddings (what every gradient method uses for
/// a probe on a residual hook of a BERT model) against candle autograd through the graph
/// forward, for heads at three depths, three pools, binary and three-class, on the input and a
/// point on the straight path from zero: every feature within 1e-4 of the largest magnitude.
#[test]
fn minilm_hand_backward_matches_autograd() {
    let Some(snapshot) = glassbox_tests::require_minilm("minilm_hand_backward_matches_autograd")
    else {
        return;
    };
    let spec: ModelSpec = snapshot.display().to_string().parse().unwrap();
    let model = load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap();
    let ids: Vec<u32> = vec![101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102];
    let heads = [
        (HookPoint::ResidPost(5), Pool::Mean, 1, 1),
        (HookPoint::ResidPost(2), Pool::Cls, 3, 2),
        (HookPoint::ResidPre(4), Pool::Last, 3, 0),
    ];
    hand_backward_matches_autograd(&model, ids, 384, &heads);
}

/// The same for the tiny RoBERTa (positions from pad + 1) and DistilBERT (no token types)
/// classifiers of `tests/fixtures/`, on their reference texts' tokens.
#[test]
fn roberta_and_distilbert_hand_backward_matches_autograd() {
    for name in ["tiny_roberta_classifier", "tiny_distilbert_classifier"] {
        let dir = glassbox_tests::workspace_root()
            .join("tests/fixtures")
            .join(name);
        let spec: ModelSpec = dir.display().to_string().parse().unwrap();
        let model = load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap();
        let reference: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let heads = [
            (HookPoint::ResidPost(1), Pool::Mean, 1, 1),
            (HookPoint::ResidPost(0), Pool::Cls, 3, 2),
            (HookPoint::ResidPre(1), Pool::Last, 3, 0),
        ];
        hand_backward_matches_autograd(&model, ids(&reference["texts"][0]["ids"]), 32, &heads);
    }
}

/// For each `(hook, pool, outputs, class)` head: the hand-written backward's values and
/// gradients against autograd's, on the input and a point on the straight path from zero.
fn hand_backward_matches_autograd(
    model: &glassbox_models::LoadedModel,
    ids: Vec<u32>,
    hidden: usize,
    heads: &[(HookPoint, Pool, usize, usize)],
) {
    // Deterministic, varied head weights (no RNG crate needed).
    let weights = |outputs: usize| -> Vec<f32> {
        (0..outputs * hidden)
            .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 0.2)
            .collect()
    };
    for &(hook, pool, outputs, class) in heads {
        let head = LinearHead {
            hook,
            pool,
            weight: weights(outputs),
            bias: (0..outputs).map(|o| 0.1 * o as f32).collect(),
            n_classes: outputs.max(2),
            class,
            pooler: None,
        };
        let hand =
            TextOracle::new(model, encoded(ids.clone()), Target::Probe(head.clone()), 4).unwrap();
        let auto = TextOracle::new(model, encoded(ids.clone()), Target::Probe(head), 4)
            .unwrap()
            .with_autograd();
        let x = hand.input().to_vec();
        let inputs = vec![x.clone(), x.iter().map(|v| 0.3 * v).collect()];
        let (f_hand, g_hand) = hand.gradients(&inputs).unwrap();
        let (f_auto, g_auto) = auto.gradients(&inputs).unwrap();
        for (a, b) in f_hand.iter().zip(&f_auto) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{hook}: f {a} vs {b}"
            );
        }
        for (gh, ga) in g_hand.iter().zip(&g_auto) {
            let scale = ga.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0, "{hook}: zero gradient");
            let worst = gh
                .iter()
                .zip(ga)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                worst <= 1e-4 * scale,
                "{hook} {pool:?}: hand backward differs from autograd by {worst} (scale {scale})"
            );
        }
    }
}
