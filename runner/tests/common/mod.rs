//! Helpers the attribution tests share: reference arrays, the closeness check against a
//! reference's largest magnitude, a token sequence from ids, and the central-difference check
//! of a gradient.
#![allow(dead_code)] // each test binary uses its own subset

use glassbox_models::tokenizer::Encoded;
use glassbox_runner::attribution::methods::{
    gradient_x_input, integrated_gradients, occlusion, saliency,
};
use glassbox_runner::attribution::oracle::{Oracle, Target};
use glassbox_runner::attribution::IgRule;
use serde_json::Value;

/// The unembedding row of token `id` of an LM (what a `token:` target reads).
pub fn unembedding_row(model: &glassbox_models::LoadedModel, id: usize) -> Vec<f32> {
    let u = model.model.unembedding().expect("a causal LM");
    u.get(id).unwrap().to_vec1().unwrap()
}

/// The next-token logit of token `id` (a `token:` target).
pub fn next_token(model: &glassbox_models::LoadedModel, id: usize) -> Target {
    Target::NextToken {
        row: unembedding_row(model, id),
        minus: None,
    }
}

/// A JSON array of numbers as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Asserts every value within `rel` of the reference's largest magnitude.
pub fn close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    eprintln!("{what}: worst {:.2e} of scale", worst / scale);
    assert!(
        worst <= rel * scale,
        "{what}: worst difference {worst:e} > {rel:e} × {scale:e}"
    );
}

/// A sequence of token ids (no tokens' text, segment 0) as the tokenizer would hand it over.
pub fn encoded(ids: Vec<u32>) -> Encoded {
    let n = ids.len();
    Encoded {
        ids,
        type_ids: vec![0; n],
        tokens: vec![String::new(); n],
        spans: vec![None; n],
    }
}

/// The ids of a reference's `ids` array.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Asserts that a central difference of `f` along its own gradient at `x` (step
/// `scale / |∇f|`) matches `|∇f|²` within 1 %.
pub fn central_difference_matches(what: &str, o: &dyn Oracle, x: &[f32], scale: f64) {
    let (_, g) = o.gradients(&[x.to_vec()]).unwrap();
    let g = &g[0];
    let norm2: f64 = g.iter().map(|v| f64::from(*v).powi(2)).sum();
    let h = scale / norm2.sqrt();
    let step = |s: f64| -> Vec<f32> {
        x.iter()
            .zip(g)
            .map(|(x, g)| x + (s * f64::from(*g)) as f32)
            .collect()
    };
    let f = o.values(&[step(h), step(-h)]).unwrap();
    let fd = (f[0] - f[1]) / (2.0 * h);
    eprintln!("{what}: |∇f|² {norm2:.6}, central difference {fd:.6}");
    assert!(
        (fd - norm2).abs() < 1e-2 * norm2,
        "{what}: central difference {fd} vs |∇f|² {norm2}"
    );
}

/// Saliency, gradient × input, IG (16 Gauss–Legendre steps) and occlusion (`windows`) from a
/// zero baseline, each within 1e-4 of the reference's `saliency`, `gradient_x_input`,
/// `ig_gausslegendre_16` and `occlusion`; returns the IG map.
pub fn four_methods_match(o: &dyn Oracle, r: &Value, windows: &[Vec<usize>]) -> Vec<f32> {
    let x = o.input().to_vec();
    let zero = vec![0f32; x.len()];
    close(
        "saliency",
        &saliency(o, &x).unwrap().1,
        &floats(&r["saliency"]),
        1e-4,
    );
    close(
        "gradient × input",
        &gradient_x_input(o, &x).unwrap().1,
        &floats(&r["gradient_x_input"]),
        1e-4,
    );
    let ig = integrated_gradients(o, &x, &zero, 16, IgRule::GaussLegendre).unwrap();
    close(
        "IG gausslegendre",
        &ig,
        &floats(&r["ig_gausslegendre_16"]),
        1e-4,
    );
    close(
        "occlusion",
        &occlusion(o, &x, &zero, windows).unwrap().1,
        &floats(&r["occlusion"]),
        1e-4,
    );
    ig
}

/// SmolLM2-135M from the HF cache, or `None` after reporting why `test` cannot run.
pub fn smollm2(test: &str) -> Option<glassbox_models::LoadedModel> {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let spec: glassbox_models::ModelSpec =
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF".parse().unwrap();
    match glassbox_models::resolve(&spec) {
        Ok(r) => {
            Some(glassbox_models::load_model(r, glassbox_models::LoadOptions::default()).unwrap())
        }
        Err(e) => {
            glassbox_tests::skip(
                test,
                &format!("SmolLM2 is not in the cache ({e}); run `just models`"),
            );
            None
        }
    }
}
