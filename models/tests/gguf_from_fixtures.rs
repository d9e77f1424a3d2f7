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

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use decoder_parity::{fixture, real_rows, right_padded, unpadded_ids};
use glassbox_models::{
    load_model, resolve, Capture, HookPoint, LoadOptions, LoadedModel, ModelSpec, WeightsDtype,
};
use std::collections::HashMap;
use std::path::Path;

/// Hugging Face tensor names → llama.cpp's (Gemma-2's four norms per block have names of their
/// own; its norm before the MLP takes Llama's `ffn_norm`).
fn gguf_name(hf: &str, arch: &str) -> String {
    let hf = hf.strip_prefix("model.").unwrap_or(hf);
    let (stem, kind) = hf.rsplit_once('.').unwrap();
    let mapped = match stem {
        "embed_tokens" => "token_embd".to_owned(),
        "norm" => "output_norm".to_owned(),
        "lm_head" => "output".to_owned(),
        _ => {
            let rest = stem.strip_prefix("layers.").unwrap();
            let (i, part) = rest.split_once('.').unwrap();
            let part = match part {
                "input_layernorm" => "attn_norm",
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "self_attn.q_norm" => "attn_q_norm",
                "self_attn.k_norm" => "attn_k_norm",
                "post_attention_layernorm" if arch.starts_with("gemma") || arch == "olmo2" => {
                    "post_attention_norm"
                }
                "post_attention_layernorm" => "ffn_norm",
                "pre_feedforward_layernorm" => "ffn_norm",
                "post_feedforward_layernorm" => "post_ffw_norm",
                "self_attn.qkv_proj" => "attn_qkv",
                "mlp.gate_up_proj" => "ffn_up",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                other => panic!("unmapped {other}"),
            };
            format!("blk.{i}.{part}")
        }
    };
    format!("{mapped}.{kind}")
}

/// llama.cpp's `permute`: rows `(head, half, pair)` to `(head, pair, half)`, of a projection's
/// weight or its bias.
fn permute(t: &Tensor, heads: usize) -> Tensor {
    let out = t.dim(0).unwrap();
    let inp = t.elem_count() / out;
    t.reshape((heads, 2, out / heads / 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape(t.shape())
        .unwrap()
}

/// llama.cpp's `rope_freqs` for `llama3` parameters (`generate_extra_tensors` of its Llama
/// converter), in f32 as it computes them.
fn llama3_factors(p: &serde_json::Value, head_dim: usize) -> Vec<f32> {
    let num = |k: &str| p[k].as_f64().unwrap() as f32;
    let (theta, factor) = (num("rope_theta"), num("factor"));
    let (low, high) = (num("low_freq_factor"), num("high_freq_factor"));
    let old = num("original_max_position_embeddings");
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// Writes the checkpoint in `dir` as a GGUF of architecture `arch`, 2-D matrices as
/// `matrices`, the vocabulary under `tokenizer.ggml.model = tokenizer_model`.
fn write_gguf(dir: &Path, arch: &str, matrices: GgmlDType, tokenizer_model: &str, path: &Path) {
    write_gguf_parts(dir, arch, matrices, tokenizer_model, path, 1);
}

/// [`write_gguf`] as `parts` files the way llama.cpp's `gguf-split` cuts one: `path`'s stem
/// `-0000K-of-0000N.gguf`, all metadata in the first, the tensors dealt out in turn, each part
/// with `split.no`, `split.count` and `split.tensors.count` (one part: `path` itself, no split
/// keys).
fn write_gguf_parts(
    dir: &Path,
    arch: &str,
    matrices: GgmlDType,
    tokenizer_model: &str,
    path: &Path,
    parts: usize,
) {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let c = |k: &str| config[k].as_u64().unwrap() as u32;
    let (heads, kv_heads) = (c("num_attention_heads"), c("num_key_value_heads"));
    let head_dim = config["head_dim"]
        .as_u64()
        .map_or(c("hidden_size") / heads, |d| d as u32);
    let tied = config["tie_word_embeddings"].as_bool() == Some(true);
    let mut quantized: Vec<(String, QTensor)> = Vec::new();
    for (hf, t) in &tensors {
        if tied && hf == "lm_head.weight" {
            continue;
        }
        let gguf = gguf_name(hf, arch);
        let mut t = t.to_dtype(DType::F32).unwrap();
        // llama.cpp permutes Llama's q/k weights and biases alike.
        if arch == "llama" && gguf.contains("attn_q.") {
            t = permute(&t, heads as usize);
        } else if arch == "llama" && gguf.contains("attn_k.") {
            t = permute(&t, kv_heads as usize);
        }
        if arch.starts_with("gemma") && gguf.ends_with("norm.weight") {
            // llama.cpp stores Gemma's norm weights as 1 + w.
            t = t.affine(1.0, 1.0).unwrap();
        }
        let dtype = if t.rank() == 2 {
            matrices
        } else {
            GgmlDType::F32
        };
        quantized.push((gguf, QTensor::quantize(&t, dtype).unwrap()));
    }
    // Gemma-3 nests its rotary per layer kind; the GGUF carries the global layers'.
    let rope = match config["rope_parameters"].get("full_attention") {
        Some(global) => global,
        None => &config["rope_parameters"],
    };
    if rope["rope_type"] == "longrope" {
        // Phi-3's converter writes the per-pair factors as tensors of their own.
        for (list, tensor) in [
            ("short_factor", "rope_factors_short.weight"),
            ("long_factor", "rope_factors_long.weight"),
        ] {
            let v: Vec<f32> = rope[list]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_f64().unwrap() as f32)
                .collect();
            let n = v.len();
            let t = Tensor::from_vec(v, n, &Device::Cpu).unwrap();
            quantized.push((
                tensor.into(),
                QTensor::quantize(&t, GgmlDType::F32).unwrap(),
            ));
        }
    }
    if rope["rope_type"] == "llama3" {
        let factors = llama3_factors(rope, head_dim as usize);
        let n = factors.len();
        let t = Tensor::from_vec(factors, n, &Device::Cpu).unwrap();
        quantized.push((
            "rope_freqs.weight".into(),
            QTensor::quantize(&t, GgmlDType::F32).unwrap(),
        ));
    }
    // The tokenizer: vocabulary by id, merges as "a b", the special token as control (3).
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = token.clone();
    }
    let specials: Vec<&str> = tok["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["content"].as_str().unwrap())
        .collect();
    let merges: Vec<Value> = tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let pair = m.as_array().unwrap();
            Value::String(format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            ))
        })
        .collect();
    let theta = rope["rope_theta"].as_f64().unwrap() as f32;
    let float = |k: &str| Value::F32(config[k].as_f64().unwrap() as f32);
    let key = |k: &str| format!("{arch}.{k}");
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (
            key("context_length"),
            Value::U32(c("max_position_embeddings")),
        ),
        (key("embedding_length"), Value::U32(c("hidden_size"))),
        (key("block_count"), Value::U32(c("num_hidden_layers"))),
        (
            key("feed_forward_length"),
            Value::U32(c("intermediate_size")),
        ),
        (key("attention.head_count"), Value::U32(heads)),
        (key("attention.head_count_kv"), Value::U32(kv_heads)),
        (key("rope.freq_base"), Value::F32(theta)),
        (
            key("attention.layer_norm_rms_epsilon"),
            Value::F32(config["rms_norm_eps"].as_f64().unwrap() as f32),
        ),
        (key("vocab_size"), Value::U32(c("vocab_size"))),
        (
            "tokenizer.ggml.model".into(),
            Value::String(tokenizer_model.into()),
        ),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(c("eos_token_id")),
        ),
    ];
    if arch == "phi3" {
        // llama.cpp's Phi-3 converter: no key length, the rotated width of a head as the rope
        // dimension, a window of 0 for none, the original context and the attention factor it
        // computes for longrope.
        let partial = config["partial_rotary_factor"].as_f64().unwrap_or(1.0);
        let rotated = (partial * c("hidden_size") as f64) as u32 / heads;
        meta.push((key("rope.dimension_count"), Value::U32(rotated)));
        let window = config["sliding_window"].as_u64().unwrap_or(0) as u32;
        meta.push((key("attention.sliding_window"), Value::U32(window)));
        let original = rope["original_max_position_embeddings"].as_f64().unwrap();
        let scale = c("max_position_embeddings") as f64 / original;
        let attn_factor = (1.0 + scale.ln() / original.ln()).sqrt().max(1.0) as f32;
        meta.push((
            key("rope.scaling.original_context_length"),
            Value::U32(original as u32),
        ));
        meta.push((key("rope.scaling.attn_factor"), Value::F32(attn_factor)));
    } else {
        meta.push((key("attention.key_length"), Value::U32(head_dim)));
    }
    if arch.starts_with("gemma") {
        for cap in ["attn_logit_softcapping", "final_logit_softcapping"] {
            if config[cap].is_number() {
                meta.push((key(cap), float(cap)));
            }
        }
        meta.push((
            key("attention.sliding_window"),
            Value::U32(c("sliding_window")),
        ));
    }
    if arch == "gemma3" {
        // The fixture's pattern (llama.cpp assumes 6 without the key).
        let kinds = config["layer_types"].as_array().unwrap();
        let first_global = kinds.iter().position(|k| k == "full_attention").unwrap();
        meta.push((
            key("attention.sliding_window_pattern"),
            Value::U32(first_global as u32 + 1),
        ));
    }
    // Linear and YaRN scaling as llama.cpp's `TextModel.set_gguf_parameters` writes them (of
    // Gemma-3's global layers).
    if rope["rope_type"] == "linear" || rope["rope_type"] == "yarn" {
        let kind = rope["rope_type"].as_str().unwrap();
        meta.push((key("rope.scaling.type"), Value::String(kind.into())));
        let factor = rope["factor"].as_f64().unwrap() as f32;
        meta.push((key("rope.scaling.factor"), Value::F32(factor)));
    }
    if rope["rope_type"] == "yarn" {
        let original = rope["original_max_position_embeddings"].as_u64().unwrap() as u32;
        meta.push((
            key("rope.scaling.original_context_length"),
            Value::U32(original),
        ));
        for (hf, gguf) in [
            ("beta_fast", "yarn_beta_fast"),
            ("beta_slow", "yarn_beta_slow"),
            ("attention_factor", "yarn_attn_factor"),
        ] {
            if let Some(v) = rope[hf].as_f64() {
                meta.push((key(&format!("rope.scaling.{gguf}")), Value::F32(v as f32)));
            }
        }
    }
    let types: Vec<Value> = tokens
        .iter()
        .map(|t| Value::I32(if specials.contains(&t.as_str()) { 3 } else { 1 }))
        .collect();
    meta.push(("tokenizer.ggml.token_type".into(), Value::Array(types)));
    let tokens: Vec<Value> = tokens.into_iter().map(Value::String).collect();
    meta.push(("tokenizer.ggml.tokens".into(), Value::Array(tokens)));
    if parts == 1 {
        let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            quantized.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut f = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
        return;
    }
    let stem = path.file_stem().unwrap().to_str().unwrap();
    let total = Value::I32(quantized.len() as i32);
    let count = Value::U16(parts as u16);
    for k in 0..parts {
        let no = Value::U16(k as u16);
        let mut meta_refs: Vec<(&str, &Value)> = vec![
            ("split.no", &no),
            ("split.count", &count),
            ("split.tensors.count", &total),
        ];
        if k == 0 {
            meta_refs.extend(meta.iter().map(|(key, v)| (key.as_str(), v)));
        }
        let tensor_refs: Vec<(&str, &QTensor)> = quantized
            .iter()
            .skip(k)
            .step_by(parts)
            .map(|(key, v)| (key.as_str(), v))
            .collect();
        let name = format!("{stem}-{:05}-of-{parts:05}.gguf", k + 1);
        let mut f = std::fs::File::create(path.with_file_name(name)).unwrap();
        gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
    }
}

fn load(path: &Path, weights_dtype: WeightsDtype) -> LoadedModel {
    let spec: ModelSpec = path.to_str().unwrap().parse().unwrap();
    let options = LoadOptions {
        weights_dtype,
        ..Default::default()
    };
    load_model(resolve(&spec).unwrap(), options).unwrap()
}

const TEXTS: [&str; 3] = [
    "the cat sat on the mat and looked at the dog",
    "Hi",
    "rivers run to the sea, 42 times over",
];

/// Real rows of every block's output, the final norm and the logits for `TEXTS` as one
/// right-padded batch, with the token ids.
fn run(model: &LoadedModel) -> (Vec<Vec<u32>>, HashMap<HookPoint, Vec<f32>>) {
    let batch = right_padded(model, &TEXTS);
    let points: Vec<HookPoint> = model
        .model
        .hook_points()
        .into_iter()
        .filter(|p| {
            matches!(
                p,
                HookPoint::ResidPost(_) | HookPoint::LnFinal | HookPoint::Logits
            )
        })
        .collect();
    let mut capture = Capture::new(points.clone());
    model.model.forward((&batch).into(), &mut capture).unwrap();
    let rows = points
        .iter()
        .map(|p| (*p, real_rows(&capture.captured[p], &batch.lengths)))
        .collect();
    (unpadded_ids(&batch), rows)
}

/// Largest difference relative to `b`'s largest magnitude (at least 1), at every hook.
fn worst(a: &HashMap<HookPoint, Vec<f32>>, b: &HashMap<HookPoint, Vec<f32>>) -> f32 {
    assert_eq!(a.len(), b.len());
    b.iter()
        .map(|(p, want)| {
            let got = &a[p];
            assert_eq!(got.len(), want.len(), "{p}");
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            got.iter()
                .zip(want)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
                / scale
        })
        .fold(0f32, f32::max)
}

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

/// A checkpoint cut into parts by `gguf-split` loads from its first part — or from the folder
/// holding the set — to the model the single file is, from f32 tensors and Q8_0 blocks.
#[test]
fn a_split_gguf_loads_as_the_single_file() {
    let dir = tempfile::tempdir().unwrap();
    for (matrices, tag) in [(GgmlDType::F32, "f32"), (GgmlDType::Q8_0, "q8")] {
        let single = dir.path().join(format!("{tag}.gguf"));
        write_gguf(&fixture("tiny_qwen3"), "qwen3", matrices, "gpt2", &single);
        let split_dir = dir.path().join(tag);
        std::fs::create_dir(&split_dir).unwrap();
        let split = split_dir.join("m.gguf");
        write_gguf_parts(&fixture("tiny_qwen3"), "qwen3", matrices, "gpt2", &split, 3);
        let want = run(&load(&single, WeightsDtype::Auto));
        for spec in [split_dir.join("m-00001-of-00003.gguf"), split_dir.clone()] {
            let got = run(&load(&spec, WeightsDtype::Auto));
            assert_eq!(got.0, want.0, "{tag}: token ids");
            assert_eq!(worst(&got.1, &want.1), 0.0, "{tag}: {}", spec.display());
        }
    }
}

/// A split GGUF in a Hugging Face cache: named by its first part (`ORG/NAME:FILE`, whose other
/// parts are fetched with it) or as a GGUF-only repo holding the one set, it loads as the
/// single file. (The only test in this binary that sets `HF_HOME`; the others load local
/// paths, which never read it.)
#[test]
fn a_split_gguf_resolves_from_the_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let single = tmp.path().join("single.gguf");
    write_gguf(
        &fixture("tiny_qwen3"),
        "qwen3",
        GgmlDType::Q8_0,
        "gpt2",
        &single,
    );
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let repo = tmp.path().join("hf/hub/models--org--tiny-split-GGUF");
    let snap = repo.join("snapshots").join(sha);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), sha).unwrap();
    let first = snap.join("m.gguf");
    write_gguf_parts(
        &fixture("tiny_qwen3"),
        "qwen3",
        GgmlDType::Q8_0,
        "gpt2",
        &first,
        2,
    );
    std::env::set_var("HF_HOME", tmp.path().join("hf"));
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let want = run(&load(&single, WeightsDtype::Auto));
    for id in [
        "org/tiny-split-GGUF:m-00001-of-00002.gguf",
        "org/tiny-split-GGUF",
    ] {
        let spec: ModelSpec = id.parse().unwrap();
        let resolved = resolve(&spec).unwrap();
        assert!(resolved.weights.ends_with("m-00001-of-00002.gguf"), "{id}");
        let model = load_model(resolved, LoadOptions::default()).unwrap();
        assert_eq!(worst(&run(&model).1, &want.1), 0.0, "{id}");
    }
}

/// A vocabulary glassbox cannot rebuild from the metadata (T5's unigram `t5`) is refused naming
/// what to do; with the model's `tokenizer.json` beside the file, that one is used.
#[test]
fn a_gguf_tokenizer_that_cannot_be_rebuilt_falls_back_to_tokenizer_json_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_gguf(&fixture("tiny_qwen3"), "qwen3", GgmlDType::F32, "t5", &path);
    let spec: ModelSpec = path.to_str().unwrap().parse().unwrap();
    let e = load_model(resolve(&spec).unwrap(), LoadOptions::default())
        .err()
        .expect("no tokenizer to use")
        .to_string();
    assert!(e.contains("`t5`") && e.contains("tokenizer.json"), "{e}");
    std::fs::copy(
        fixture("tiny_qwen3").join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let (ids, _) = run(&load(&path, WeightsDtype::Auto));
    let (want, _) = run(&load(&fixture("tiny_qwen3"), WeightsDtype::Auto));
    assert_eq!(ids, want);
}

/// A `tokenizer.json` beside a GGUF is used over the vocabulary in its metadata, as
/// `transformers` uses one in the GGUF's folder: here one that lowercases first, so its ids
/// differ from the rebuilt tokenizer's.
#[test]
fn a_tokenizer_json_beside_a_gguf_is_taken_over_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_gguf(
        &fixture("tiny_qwen3"),
        "qwen3",
        GgmlDType::F32,
        "gpt2",
        &path,
    );
    let (rebuilt, _) = run(&load(&path, WeightsDtype::Auto));
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny_qwen3").join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    json["normalizer"] = serde_json::json!({"type": "Lowercase"});
    let beside = dir.path().join("tokenizer.json");
    std::fs::write(&beside, json.to_string()).unwrap();
    let (ids, _) = run(&load(&path, WeightsDtype::Auto));
    let lowercasing = tokenizers::Tokenizer::from_file(&beside).unwrap();
    let want: Vec<Vec<u32>> = TEXTS
        .iter()
        .map(|t| lowercasing.encode(*t, true).unwrap().get_ids().to_vec())
        .collect();
    assert_eq!(ids, want);
    assert_ne!(
        ids, rebuilt,
        "the lowercasing tokenizer must cut these texts differently"
    );
}
