//! What the decoder parity tests share: the fixtures, their `transformers` references, and
//! the comparison of every block's hidden state, the final norm and the logits (≤ 1e-4), one
//! text at a time and as one right-padded batch. Each test binary uses part of it.
#![allow(dead_code)]

use candle_core::Tensor;
use glassbox_models::LoadOptions;
use glassbox_models::{
    load_model, resolve, Capture, HookPoint, LoadedModel, ModelSpec, TokenBatch,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

pub fn load(dir: &Path) -> LoadedModel {
    let spec: ModelSpec = dir.to_str().unwrap().parse().unwrap();
    load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap()
}

pub struct Reference {
    pub text: String,
    pub ids: Vec<u32>,
    /// `[layers + 1][tokens][32]`: embeddings, the input of each later block, the final norm.
    pub hidden: Vec<Vec<Vec<f32>>>,
    pub last_block: Vec<Vec<f32>>,
    pub logits: Vec<Vec<f32>>,
}

pub fn references(dir: &Path) -> Vec<Reference> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let tensors = candle_core::safetensors::load(
        dir.join("reference.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let get = |k: &str| -> &Tensor { &tensors[k] };
    json["texts"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(t, r)| Reference {
            text: r["text"].as_str().unwrap().to_owned(),
            ids: r["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect(),
            hidden: get(&format!("{t}.hidden_states")).to_vec3().unwrap(),
            last_block: get(&format!("{t}.last_block")).to_vec2().unwrap(),
            logits: get(&format!("{t}.logits")).to_vec2().unwrap(),
        })
        .collect()
}

pub fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "token count");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

/// One text's rows (`tokens × width`).
pub type Rows = Vec<Vec<f32>>;

/// Runs `texts` as one right-padded batch; returns per text the rows of each hook and the logits.
pub fn run(model: &LoadedModel, refs: &[&Reference]) -> Vec<(HashMap<HookPoint, Rows>, Rows)> {
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let encoded = model.tokenizer().unwrap().encode(&texts).unwrap();
    for (e, r) in encoded.iter().zip(refs) {
        assert_eq!(e.ids, r.ids, "token ids of {:?}", r.text);
    }
    let batch = TokenBatch::from_encoded(
        &encoded.iter().collect::<Vec<_>>(),
        model.pad_id,
        &model.device,
    )
    .unwrap();
    let layers = refs[0].hidden.len() - 1;
    let mut points: Vec<HookPoint> = (0..layers).map(HookPoint::ResidPre).collect();
    points.extend([HookPoint::ResidPost(layers - 1), HookPoint::LnFinal]);
    let mut capture = Capture::new(points.clone());
    let last = model.model.forward((&batch).into(), &mut capture).unwrap();
    let logits = model
        .model
        .unembed(&last)
        .expect("GPT-2 has an unembedding")
        .unwrap();
    let logits: Vec<Vec<Vec<f32>>> = logits.to_vec3().unwrap();
    (0..refs.len())
        .map(|i| {
            let n = encoded[i].ids.len();
            let rows = points
                .iter()
                .map(|p| {
                    let all: Vec<Vec<Vec<f32>>> = capture.captured[p].to_vec3().unwrap();
                    (*p, all[i][..n].to_vec())
                })
                .collect();
            (rows, logits[i][..n].to_vec())
        })
        .collect()
}

pub fn check(model: &LoadedModel, refs: &[&Reference]) {
    for ((rows, logits), r) in run(model, refs).iter().zip(refs) {
        let layers = r.hidden.len() - 1;
        let mut worst: Vec<(String, f32)> = (0..layers)
            .map(|l| {
                let d = max_diff(&rows[&HookPoint::ResidPre(l)], &r.hidden[l]);
                (format!("hidden_states[{l}]"), d)
            })
            .collect();
        worst.extend([
            (
                format!("block {} output", layers - 1),
                max_diff(&rows[&HookPoint::ResidPost(layers - 1)], &r.last_block),
            ),
            (
                "ln_f".into(),
                max_diff(&rows[&HookPoint::LnFinal], &r.hidden[layers]),
            ),
            ("logits".into(), max_diff(logits, &r.logits)),
        ]);
        for (what, d) in worst {
            assert!(d <= 1e-4, "{:?} {what}: max |diff| {d}", r.text);
        }
    }
}

pub fn one_at_a_time(name: &str, family: &str) {
    one_at_a_time_in(&fixture(name), family);
}

pub fn padded_batch(name: &str) {
    padded_batch_in(&fixture(name));
}

pub fn one_at_a_time_in(dir: &Path, family: &str) {
    let model = load(dir);
    assert_eq!(model.model.family(), family);
    for r in &references(dir) {
        check(&model, &[r]);
    }
}

pub fn padded_batch_in(dir: &Path) {
    let model = load(dir);
    let refs = references(dir);
    let all: Vec<&Reference> = refs.iter().collect();
    let lengths: std::collections::HashSet<usize> = all.iter().map(|r| r.ids.len()).collect();
    assert!(lengths.len() > 1, "lengths differ, so padding is exercised");
    check(&model, &all);
}

/// The fixture's reference texts as one right-padded batch.
pub fn reference_batch(model: &LoadedModel, dir: &Path) -> TokenBatch {
    let refs = references(dir);
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    right_padded(model, &texts)
}

/// `texts` through the model's tokenizer as one right-padded batch.
pub fn right_padded(model: &LoadedModel, texts: &[&str]) -> TokenBatch {
    let encoded = model.tokenizer().unwrap().encode(texts).unwrap();
    TokenBatch::from_encoded(
        &encoded.iter().collect::<Vec<_>>(),
        model.pad_id,
        &model.device,
    )
    .unwrap()
}

/// Each example's token ids without its padding.
pub fn unpadded_ids(batch: &TokenBatch) -> Vec<Vec<u32>> {
    let rows: Vec<Vec<u32>> = batch.input_ids.to_vec2().unwrap();
    rows.into_iter()
        .zip(&batch.lengths)
        .map(|(row, &n)| row[..n].to_vec())
        .collect()
}

/// A `[batch, seq, width]` tensor's real rows (the first `lengths[b]` of example `b`), flat.
pub fn real_rows(t: &Tensor, lengths: &[usize]) -> Vec<f32> {
    let all: Vec<Vec<Vec<f32>>> = t.to_vec3().unwrap();
    all.into_iter()
        .zip(lengths)
        .flat_map(|(rows, &n)| rows.into_iter().take(n).flatten())
        .collect()
}
