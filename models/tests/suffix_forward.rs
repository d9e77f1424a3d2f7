//! Runs over suffixes of a cached run (`forward_suffixes`) against whole forwards: copies of a
//! tiny decoder's run, each changed at its own position of its own block, computed from that
//! position on after the cached prefix, give the whole forward's final hidden state at every
//! position from there on. GPT-2 (learned positions), Llama (rotary, grouped-query heads),
//! Qwen2 (q/k/v biases), GPT-NeoX (partial rotary, parallel residual) and every family of the
//! shared decoder.

use candle_core::Tensor;
use glassbox_models::{
    load_model, resolve, Capture, HookPoint, Hooks, LoadOptions, LoadedModel, ModelSpec, Suffixes,
    TokenBatch,
};
use std::path::PathBuf;

fn load(name: &str) -> LoadedModel {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let spec: ModelSpec = dir.to_str().unwrap().parse().unwrap();
    load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap()
}

/// Adds `delta` to copy `c`'s row `rows[c]` at `point`.
struct AddAt {
    point: HookPoint,
    rows: Vec<usize>,
    delta: Vec<f32>,
}

impl Hooks for AddAt {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn visit(&mut self, _: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let (k, t, w) = x.dims3()?;
        let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
        for (c, &r) in self.rows.iter().enumerate() {
            for (d, add) in self.delta.iter().enumerate() {
                v[(c * t + r) * w + d] += add;
            }
        }
        Tensor::from_vec(v, (k, t, w), x.device())
    }
}

fn check(name: &str) {
    let model = load(name);
    let tokenizer = model.tokenizer().unwrap();
    let encoded = tokenizer
        .encode(&["the cat sat on the mat and looked at the dog"])
        .unwrap();
    let len = encoded[0].ids.len();
    assert!(len >= 6, "{name}: {len} tokens");
    let one = TokenBatch::from_encoded(&[&encoded[0]], model.pad_id, &model.device).unwrap();
    let layers = model
        .model
        .hook_points()
        .iter()
        .filter_map(|h| h.layer())
        .max()
        .unwrap()
        + 1;
    let mut capture = Capture::new((0..layers).map(HookPoint::ResidPre));
    let (kept_out, prefix) = model
        .model
        .forward_keeping_prefix(&one, &mut capture)
        .expect("the fast decoder keeps prefixes")
        .unwrap();
    let plain = model
        .model
        .forward((&one).into(), &mut Capture::new([]))
        .unwrap();
    let diff = (kept_out - &plain)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert_eq!(
        diff.to_scalar::<f32>().unwrap(),
        0.0,
        "{name}: keeping the prefix changes nothing"
    );
    let hidden = plain.dim(2).unwrap();
    let scale = plain
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let starts = vec![0, 2, len / 2, len - 1, 2];
    let delta: Vec<f32> = (0..hidden).map(|d| ((d as f32) * 0.7).sin()).collect();
    let copies: Vec<_> = starts.iter().map(|_| &encoded[0]).collect();
    let batch = TokenBatch::from_encoded(&copies, model.pad_id, &model.device).unwrap();
    for block in 0..layers {
        let point = HookPoint::ResidPre(block);
        let resid: Vec<f32> = capture
            .get(point, name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Whole forwards: copy c changed at position starts[c].
        let mut whole_hook = AddAt {
            point,
            rows: starts.clone(),
            delta: delta.clone(),
        };
        let whole: Vec<Vec<Vec<f32>>> = model
            .model
            .forward((&batch).into(), &mut whole_hook)
            .unwrap()
            .to_vec3()
            .unwrap();
        // Suffixes: copy c holds positions starts[c].., changed at its row 0.
        let suffixes = Suffixes {
            block,
            starts: &starts,
            resid_pre: &resid,
            prefix: &prefix,
        };
        let mut suffix_hook = AddAt {
            point,
            rows: vec![0; starts.len()],
            delta: delta.clone(),
        };
        let got: Vec<Vec<Vec<f32>>> = model
            .model
            .forward_suffixes(&suffixes, &mut suffix_hook)
            .expect("the fast decoder runs suffixes")
            .unwrap()
            .to_vec3()
            .unwrap();
        for (c, &start) in starts.iter().enumerate() {
            for p in start..len {
                let worst = whole[c][p]
                    .iter()
                    .zip(&got[c][p - start])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst <= 1e-5 * scale.max(1.0),
                    "{name} block {block} copy {c} position {p}: {worst}"
                );
            }
            // Rows past a copy's suffix are padding.
            assert!(got[c][len - start..].iter().flatten().all(|&v| v == 0.0));
        }
    }
}

#[test]
fn gpt2_suffixes_equal_whole_forwards() {
    check("tiny_gpt2");
}

#[test]
fn llama_suffixes_equal_whole_forwards() {
    check("tiny_llama");
}

#[test]
fn qwen2_suffixes_equal_whole_forwards() {
    check("tiny_qwen2");
}

#[test]
fn neox_suffixes_equal_whole_forwards() {
    check("tiny_neox");
}

/// The shared decoder: sandwich norms, soft-capped scores and logits and sliding windows
/// shorter than the text (Gemma-2, Gemma-3 with per-layer rotary bases), q/k norms (Qwen3,
/// OLMo-2 over the whole projection), partial rotary (Phi-3), per-layer windows (Qwen2).
#[test]
fn shared_decoder_suffixes_equal_whole_forwards() {
    for name in [
        "tiny_gemma2",
        "tiny_gemma3",
        "tiny_qwen3",
        "tiny_olmo2",
        "tiny_olmo3",
        "tiny_phi3_partial",
        "tiny_qwen2_windows",
    ] {
        check(name);
    }
}
