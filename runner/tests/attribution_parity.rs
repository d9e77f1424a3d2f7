//! Input attributions against Captum 0.9 (`scripts/reference_attribution.py`, committed output
//! in `tests/fixtures/attribution/reference.json`): saliency, gradient × input, integrated
//! gradients (Gauss–Legendre and trapezoid) and occlusion on the tiny random GPT-2 (token
//! embeddings → next-token logit) and ViT (pixels → class logit), every feature within 1e-4 of
//! the reference's largest magnitude. Also: IG's completeness, and the edge control failing
//! the randomisation check on the ViT while IG's maps change.

use glassbox_models::randomize::Randomization;
use glassbox_models::{
    load_model, load_model_randomized, resolve, LoadOptions, LoadedModel, ModelSpec,
};
use glassbox_runner::attribution::image_oracle::ImageOracle;
use glassbox_runner::attribution::methods::{
    image_windows, integrated_gradients, per_position, token_windows,
};
use glassbox_runner::attribution::oracle::{Oracle, Target, TextOracle};
use glassbox_runner::attribution::sanity::similarity;
use glassbox_runner::attribution::{IgRule, Method, MethodOptions, Subject};
use serde_json::Value;

mod common;
use common::{
    central_difference_matches, close, encoded, floats, four_methods_match, ids, next_token,
    unembedding_row,
};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    glassbox_tests::workspace_root().join("tests/fixtures")
}

fn spec(name: &str) -> ModelSpec {
    fixtures().join(name).display().to_string().parse().unwrap()
}

fn tiny(name: &str) -> LoadedModel {
    load_model(resolve(&spec(name)).unwrap(), LoadOptions::default()).unwrap()
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("attribution/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn text_oracle<'a>(model: &'a LoadedModel, r: &Value) -> TextOracle<'a> {
    let encoded = encoded(ids(&r["ids"]));
    let row = r["target_id"].as_u64().unwrap() as usize;
    TextOracle::new(model, encoded, next_token(model, row), 8).unwrap()
}

#[test]
fn text_attributions_match_captum_on_tiny_gpt2() {
    let model = tiny("tiny_gpt2");
    let all = reference();
    let r = &all["text"];
    let o = text_oracle(&model, r);
    let x = o.input().to_vec();
    let zero = vec![0f32; x.len()];
    let f = o.values(&[x.clone(), zero.clone()]).unwrap();
    let f_ref = (
        r["f_input"].as_f64().unwrap(),
        r["f_baseline"].as_f64().unwrap(),
    );
    assert!(
        (f[0] - f_ref.0).abs() < 1e-4 * f_ref.0.abs().max(1.0),
        "f(x) {} vs {}",
        f[0],
        f_ref.0
    );
    assert!((f[1] - f_ref.1).abs() < 1e-4 * f_ref.1.abs().max(1.0));
    let d = o.width();
    let ig = four_methods_match(&o, r, &token_windows(x.len() / d, d, 1, 1));
    // Captum's trapezoid weighs its n points by 1/n (ends halved), so its weights sum to
    // (n − 1)/n; glassbox's by 1/(n − 1), summing to 1. Same points: the maps differ by (n−1)/n.
    let ig_t = integrated_gradients(&o, &x, &zero, 16, IgRule::RiemannTrapezoid).unwrap();
    let scaled: Vec<f32> = ig_t.iter().map(|v| v * 15.0 / 16.0).collect();
    close(
        "IG trapezoid (× 15/16)",
        &scaled,
        &floats(&r["ig_riemann_trapezoid_16"]),
        1e-4,
    );
    // Completeness: Σ IG = f(x) − f(0) up to the quadrature's error.
    let sum: f64 = per_position(&ig, d).iter().map(|v| f64::from(*v)).sum();
    let gap = f[0] - f[1];
    assert!(
        (sum - gap).abs() < 0.05 * gap.abs(),
        "Σ IG {sum} vs gap {gap}"
    );
}

/// The tiny Gemma-2 soft-caps its final logits at 3: a token target explains the logit the
/// model outputs, `3·tanh(z/3)` (what Captum on the model explains), and `logit_diff` the
/// difference of two capped logits — not the row's reading before the cap, whose maps differ
/// by the cap's slope (1 − tanh²) and whose values are not the model's.
#[test]
fn token_targets_explain_the_soft_capped_logits_as_captum_does() {
    let model = tiny("tiny_gemma2");
    let all = reference();
    let r = &all["text_softcap"];
    assert_eq!(model.model.final_logit_softcap(), Some(3.0));
    let row = |key: &str| unembedding_row(&model, r[key].as_u64().unwrap() as usize);
    for (name, minus) in [("token", None), ("logit_diff", Some(row("other_id")))] {
        let target = Target::NextToken {
            row: row("token_id"),
            minus,
        };
        let o = TextOracle::new(&model, encoded(ids(&r["ids"])), target, 8).unwrap();
        let x = o.input().to_vec();
        let f = o.values(&[x.clone(), vec![0f32; x.len()]]).unwrap();
        let expected = &r[name];
        for (got, key) in f.iter().zip(["f_input", "f_baseline"]) {
            let want = expected[key].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-4 * want.abs().max(1.0),
                "{name} {key}: {got} vs Captum's {want}"
            );
        }
        // The cap binds: the input's logit is bent well away from its reading before the cap.
        if name == "token" {
            assert!(
                f[0].abs() > 2.5 && f[0].abs() < 3.0,
                "capped logit {}",
                f[0]
            );
        }
        let d = o.width();
        four_methods_match(&o, expected, &token_windows(x.len() / d, d, 1, 1));
    }
}

fn image_oracle<'a>(model: &'a LoadedModel, r: &Value) -> ImageOracle<'a> {
    let mut weights = vec![0f32; model.model.labels().len()];
    weights[r["target"].as_u64().unwrap() as usize] = 1.0;
    ImageOracle::new(
        model,
        floats(&r["pixels"]),
        (32, 32),
        &Target::Outputs { weights },
        8,
    )
    .unwrap()
}

#[test]
fn image_attributions_match_captum_on_tiny_vit() {
    let model = tiny("tiny_vit");
    let all = reference();
    let r = &all["image"];
    let o = image_oracle(&model, r);
    let x = o.input().to_vec();
    let f = o.values(std::slice::from_ref(&x)).unwrap();
    assert!((f[0] - r["f_input"].as_f64().unwrap()).abs() < 1e-4);
    four_methods_match(&o, r, &image_windows(32, 32, 8, 4));
}

/// Adebayo et al.'s check on the tiny ViT: with every layer group destroyed, the edge control's
/// map is unchanged (ρ = 1: it never read the model) while integrated gradients' changes.
#[test]
fn randomisation_fails_the_edge_control_and_changes_ig() {
    let all = reference();
    let r = &all["image"];
    let model = tiny("tiny_vit");
    let (randomized, done) = load_model_randomized(
        resolve(&spec("tiny_vit")).unwrap(),
        LoadOptions::default(),
        &Randomization::Cascade(usize::MAX - 1),
        3,
    )
    .unwrap();
    assert!(done.groups >= 3 && !done.changed.is_empty());
    let opts = MethodOptions {
        steps: 16,
        rule: IgRule::GaussLegendre,
        samples: 4,
        noise: 0.1,
        seed: 0,
        window: 8,
        stride: 4,
        cam_hook: None,
    };
    let trained = Subject::Image(image_oracle(&model, r));
    let destroyed = Subject::Image(image_oracle(&randomized, r));
    let x = floats(&r["pixels"]);
    let zero = vec![0f32; x.len()];
    let map = |s: &Subject<'_>, m: Method| s.explain(m, &x, &zero, &opts).unwrap().positions;
    let edges = similarity(
        &map(&trained, Method::Edges),
        &map(&destroyed, Method::Edges),
        Some((32, 32)),
    );
    assert_eq!(edges.spearman, Some(1.0));
    let ig = similarity(
        &map(&trained, Method::IntegratedGradients),
        &map(&destroyed, Method::IntegratedGradients),
        Some((32, 32)),
    );
    assert!(ig.spearman.unwrap().abs() < 0.5, "IG ρ {:?}", ig.spearman);
}

/// The autograd forward of every decoder family gives the gradient of the fast forward's `f`:
/// a central difference along the gradient itself matches |∇f|² (tiny GPT-2, Llama, NeoX,
/// Qwen2, and the shared decoder's Gemma-2 with its soft-caps, Gemma-3, Qwen3, OLMo-2, Phi-3;
/// Mistral through its sliding window).
#[test]
fn decoder_gradients_match_central_differences() {
    for name in [
        "tiny_gpt2",
        "tiny_llama",
        "tiny_neox",
        "tiny_qwen2",
        "tiny_gemma2",
        "tiny_gemma3",
        "tiny_gemma3_scaled",
        "tiny_qwen3",
        "tiny_olmo2",
        "tiny_olmo3",
        "tiny_phi3",
        "tiny_phi3_partial",
        "tiny_mistral",
    ] {
        let model = tiny(name);
        let encoded = model
            .tokenizer()
            .unwrap()
            .encode(&["the cat sat on the mat"])
            .unwrap()
            .remove(0);
        let o = TextOracle::new(&model, encoded, next_token(&model, 7), 8).unwrap();
        // A step of 3e-3 along the gradient: the random fixtures curve enough that 1e-2 misses
        // |∇f|² by 3 % on Phi-3 with partial rotary (and converges as the step shrinks).
        central_difference_matches(name, &o, o.input(), 3e-3);
    }
}
