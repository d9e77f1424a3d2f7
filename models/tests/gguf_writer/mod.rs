//! GGUF files written from the tiny safetensors fixtures the way llama.cpp's converter lays
//! them out (its tensor names, Llama's permuted q/k rows and biases, Gemma's `1 + w` norms,
//! `rope_freqs`/longrope factor tensors, `rope.scaling.*` metadata, the BPE vocabulary), whole or
//! cut into `gguf-split` parts, and what the GGUF tests compare: the loaded model's rows at every
//! block, the final norm and the logits. Each test binary uses part of it.
#![allow(dead_code)]

use crate::decoder_parity::{real_rows, right_padded, unpadded_ids};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use glassbox_models::{
    load_model, resolve, Capture, HookPoint, LoadOptions, LoadedModel, ModelSpec, WeightsDtype,
};
use std::collections::HashMap;
use std::path::Path;

/// Hugging Face tensor names → llama.cpp's (Gemma-2's four norms per block have names of their
/// own; its norm before the MLP takes Llama's `ffn_norm`).
pub fn gguf_name(hf: &str, arch: &str) -> String {
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
pub fn permute(t: &Tensor, heads: usize) -> Tensor {
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
pub fn llama3_factors(p: &serde_json::Value, head_dim: usize) -> Vec<f32> {
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
pub fn write_gguf(dir: &Path, arch: &str, matrices: GgmlDType, tokenizer_model: &str, path: &Path) {
    write_gguf_parts(dir, arch, matrices, tokenizer_model, path, 1);
}

/// [`write_gguf`] as `parts` files the way llama.cpp's `gguf-split` cuts one: `path`'s stem
/// `-0000K-of-0000N.gguf`, all metadata in the first, the tensors dealt out in turn, each part
/// with `split.no`, `split.count` and `split.tensors.count` (one part: `path` itself, no split
/// keys).
pub fn write_gguf_parts(
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

pub fn load(path: &Path, weights_dtype: WeightsDtype) -> LoadedModel {
    let spec: ModelSpec = path.to_str().unwrap().parse().unwrap();
    let options = LoadOptions {
        weights_dtype,
        ..Default::default()
    };
    load_model(resolve(&spec).unwrap(), options).unwrap()
}

pub const TEXTS: [&str; 3] = [
    "the cat sat on the mat and looked at the dog",
    "Hi",
    "rivers run to the sea, 42 times over",
];

/// Real rows of every block's output, the final norm and the logits for `TEXTS` as one
/// right-padded batch, with the token ids.
pub fn run(model: &LoadedModel) -> (Vec<Vec<u32>>, HashMap<HookPoint, Vec<f32>>) {
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
pub fn worst(a: &HashMap<HookPoint, Vec<f32>>, b: &HashMap<HookPoint, Vec<f32>>) -> f32 {
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
