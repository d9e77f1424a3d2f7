//! GGUF files written here from the tiny safetensors fixtures the way llama.cpp's converter lays
//! them out — llama.cpp tensor names, Llama's q/k rows permuted for its interleaved rotary,
//! Llama-3.1-style `llama3` scaling as a `rope_freqs` tensor of per-pair factors, an untied
//! head as `output.weight`, the byte-level BPE vocabulary and merges in the metadata — load to
//! the same model: the same token ids and, from f32 tensors, the same hidden states and logits
//! (≤ 1e-5 of scale) as the safetensors checkpoint (itself at parity with `transformers`). From
//! Q8_0 blocks, the model holding the blocks and the model dequantised at load agree.
//! Llama (GQA, tied, llama3 rotary), Qwen3 (q/k norms, untied), Gemma-2 (norms stored as 1 + w,
//! soft-caps, sliding windows), Gemma-3 (q/k norms, local and scaled global rotary), Phi-3
//! (fused projections, longrope factor tensors, partial rotary) and OLMo-2 (post-norm blocks).

mod decoder_parity;
mod gguf_writer;

use candle_core::quantized::GgmlDType;
use decoder_parity::fixture;
use gguf_writer::*;
use glassbox_models::WeightsDtype;
use std::path::Path;

fn check(name: &str, arch: &str) {
    check_against(name, arch, &fixture(name));
}

/// The checkpoint in `reference_dir` written as GGUF files (f32 and Q8_0) loads to the model
/// the safetensors checkpoint is.
fn check_against(name: &str, arch: &str, reference_dir: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let reference = run(&load(reference_dir, WeightsDtype::Auto));

    let f32_path = dir.path().join("f32.gguf");
    write_gguf(reference_dir, arch, GgmlDType::F32, "gpt2", &f32_path);
    let from_gguf = run(&load(&f32_path, WeightsDtype::Auto));
    assert_eq!(from_gguf.0, reference.0, "{name}: token ids");
    let d = worst(&from_gguf.1, &reference.1);
    assert!(
        d <= 1e-5,
        "{name}: GGUF vs safetensors, scaled max diff {d}"
    );

    let q8_path = dir.path().join("q8.gguf");
    write_gguf(reference_dir, arch, GgmlDType::Q8_0, "gpt2", &q8_path);
    let held = run(&load(&q8_path, WeightsDtype::Auto));
    let dense = run(&load(&q8_path, WeightsDtype::F32));
    let d = worst(&held.1, &dense.1);
    assert!(
        d <= 1e-5,
        "{name}: Q8_0 blocks held vs dequantised at load: {d}"
    );
    // Quantisation moves the model, but by far less than the values themselves (a wrong
    // dequantisation is off by their whole size; tiny random Gemma-2's soft-caps move 16 %).
    let d = worst(&held.1, &reference.1);
    assert!(d > 0.0 && d < 0.5, "{name}: Q8_0 vs f32 weights: {d}");
}

#[test]
fn llama_with_llama3_rotary_from_gguf_is_the_safetensors_model() {
    check("tiny_llama", "llama");
}

/// Gemma-2: norms stored as 1 + w, four per block, soft-caps and the window from the metadata,
/// every other layer sliding. A GGUF has no `query_pre_attn_scalar`: llama.cpp scales queries by
/// `1/√head_dim` (the 27B aside), so the reference is the fixture with that scalar.
#[test]
fn gemma2_from_gguf_is_the_safetensors_model_llama_cpp_runs() {
    let reference = tempfile::tempdir().unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(
            fixture("tiny_gemma2").join(file),
            reference.path().join(file),
        )
        .unwrap();
    }
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny_gemma2").join("config.json")).unwrap(),
    )
    .unwrap();
    config["query_pre_attn_scalar"] = config["head_dim"].clone();
    std::fs::write(reference.path().join("config.json"), config.to_string()).unwrap();
    check_against("tiny_gemma2", "gemma2", reference.path());
}

/// Gemma-3 as its 4B+ checkpoints ship: q/k norms (stored as 1 + w too), local layers rotating
/// with base 10,000, global ones with linear scaling from the metadata, a final soft-cap.
#[test]
fn gemma3_from_gguf_is_the_safetensors_model() {
    check("tiny_gemma3_scaled", "gemma3");
}

/// Phi-3 as llama.cpp converts it: fused `attn_qkv` and gate/up under `ffn_up`, longrope
/// factors as tensors (the fixture's 8-token original context, so the long factors apply),
/// the window from the metadata; and with a partial rotary given only as the rope dimension.
#[test]
fn phi3_from_gguf_is_the_safetensors_model() {
    check("tiny_phi3", "phi3");
    check("tiny_phi3_partial", "phi3");
}

/// OLMo-2: post-norm blocks (`post_attention_norm`, `post_ffw_norm`, no `attn_norm`), q/k
/// norms over the whole projections, rotate-half rotary (no q/k permutation).
#[test]
fn olmo2_from_gguf_is_the_safetensors_model() {
    check("tiny_olmo2", "olmo2");
}

#[test]
fn qwen3_from_gguf_is_the_safetensors_model() {
    check("tiny_qwen3", "qwen3");
}

/// A copy of fixture `name` whose config's `rope_parameters` are `rope` (the reference is
/// glassbox on that safetensors checkpoint, whose rotary scalings are at parity with
/// `transformers`).
fn with_rope(name: &str, rope: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture(name).join(file), dir.path().join(file)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap())
            .unwrap();
    config["rope_parameters"] = rope;
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

/// Linear and YaRN rotary scaling reach a GGUF only as `rope.scaling.*` metadata (llama.cpp's
/// converter writes them for every architecture); read past, every position would rotate as if
/// unscaled. YaRN here with an 8-token original context, shorter than the texts, and its
/// converter-written betas and attention factor.
#[test]
fn linear_and_yarn_scaling_from_gguf_metadata_rotate_as_the_checkpoint() {
    let linear = with_rope(
        "tiny_qwen3",
        serde_json::json!({"rope_type": "linear", "factor": 4.0, "rope_theta": 1000000.0}),
    );
    check_against("tiny_qwen3 (linear)", "qwen3", linear.path());
    let yarn = with_rope(
        "tiny_olmo2",
        serde_json::json!({"rope_type": "yarn", "factor": 4.0, "rope_theta": 500000.0,
            "original_max_position_embeddings": 8, "beta_fast": 16.0, "beta_slow": 2.0,
            "attention_factor": 1.2}),
    );
    check_against("tiny_olmo2 (yarn)", "olmo2", yarn.path());
}

/// llama.cpp permutes the rows of a Llama q/k projection's bias as it does the weight's (Llama
/// checkpoints with `attention_bias`, Qwen-style blocks converted as `llama`): Qwen2's biased
/// blocks written as a `llama` GGUF load to the Qwen2 checkpoint, here with YaRN scaling too.
#[test]
fn llama_gguf_q_k_biases_are_unpermuted_like_their_weights() {
    let dir = with_rope(
        "tiny_qwen2",
        serde_json::json!({"rope_type": "yarn", "factor": 2.0, "rope_theta": 1000000.0,
            "original_max_position_embeddings": 8}),
    );
    check_against("tiny_qwen2 as llama", "llama", dir.path());
}
