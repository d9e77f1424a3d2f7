//! Helpers the attribution tests share: reference arrays, the closeness check against a
//! reference's largest magnitude, a token sequence from ids, and the central-difference check
//! of a gradient.
#![allow(dead_code)] // each test binary uses its own subset

use glassbox_models::tokenizer::Encoded;
use glassbox_runner::attribution::oracle::Oracle;
use serde_json::Value;

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
