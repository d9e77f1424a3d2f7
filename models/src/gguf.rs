//! GGUF checkpoints (llama.cpp's format): metadata → a `config.json`-shaped value, tensors under
//! Hugging Face names, and the tokenizer rebuilt from the metadata (`gguf_tokenizer`), the way
//! `transformers` does for `from_pretrained(…, gguf_file=…)`.
//!
//! Block-quantised matrices (Q4_1, Q8_0, Q4_K, …) are kept as their blocks under
//! [`Holding::Blocks`] and dequantised one matrix at a time by the forward that uses them
//! ([`crate::quantized`]); other tensors (norms, f16/bf16 matrices) are plain tensors. Under
//! [`Holding::Dense`] every tensor is dequantised at load, one at a time, to the dtype asked for
//! — what `transformers` does.
//!
//! llama.cpp's converter permutes the rows of Llama's q/k projections for its interleaved rotary
//! layout; they are permuted back here so the `rotate_half` forward applies unchanged.

use crate::gguf_attention;
use crate::gguf_split::{unsigned, GgufParts};
use crate::quantized::QuantizedMatrix;
use crate::{ModelError, Result};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

/// Architectures (`general.architecture`) this build maps to a family.
pub const GGUF_ARCHITECTURES: &[&str] = &[
    "llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "olmo2",
];
/// Tensor types read as plain tensors; the block formats are `quantized::BLOCK_TYPES`.
const PLAIN_TYPES: &[GgmlDType] = &[GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16];

fn supported(dtype: GgmlDType) -> bool {
    PLAIN_TYPES.contains(&dtype) || crate::quantized::is_block_quantised(dtype)
}

fn supported_list() -> String {
    PLAIN_TYPES
        .iter()
        .chain(crate::quantized::BLOCK_TYPES)
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a GGUF file's tensors are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Block-quantised matrices as blocks, dequantised per use; f16/bf16 tensors as stored;
    /// everything else f32.
    Blocks,
    /// Every tensor dequantised (or converted) at load to this dtype.
    Dense(DType),
}

/// A GGUF file read into what the loader needs.
pub struct GgufModel {
    /// Shaped like the family's `config.json` (with `model_type`).
    pub config: serde_json::Value,
    /// Plain tensors under Hugging Face names (`model.` prefix included, `lm_head.weight` at the
    /// root).
    pub tensors: HashMap<String, Tensor>,
    /// Block-quantised matrices held as blocks (under [`Holding::Blocks`]), same naming.
    pub quantized: HashMap<String, QuantizedMatrix>,
    /// The tokenizer rebuilt from the metadata, or why it cannot be (the loader then reads a
    /// `tokenizer.json` beside the file, if there is one).
    pub tokenizer: std::result::Result<tokenizers::Tokenizer, String>,
}

pub fn read(path: &Path, holding: Holding) -> Result<GgufModel> {
    let bad = |message: String| ModelError::Weights {
        path: path.to_path_buf(),
        message,
    };
    let parts = GgufParts::open(path).map_err(bad)?;
    let content = parts.content();
    let meta = |key: &str| content.metadata.get(key);
    let arch = meta("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| bad("no `general.architecture` in the metadata".into()))?;
    if !GGUF_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(ModelError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            found: arch,
            supported: GGUF_ARCHITECTURES.join(", "),
        });
    }
    for (name, info) in parts.tensor_infos() {
        if !supported(info.ggml_dtype) {
            return Err(bad(format!(
                "tensor `{name}` is quantised as {:?}, which glassbox cannot dequantise; supported: {}",
                info.ggml_dtype,
                supported_list()
            )));
        }
    }
    let u = |key: &str| -> Result<u64> {
        meta(&format!("{arch}.{key}"))
            .and_then(unsigned)
            .ok_or_else(|| bad(format!("metadata `{arch}.{key}` is missing")))
    };
    let f = |key: &str| meta(&format!("{arch}.{key}")).and_then(|v| v.to_f32().ok());
    let tokens: Vec<String> = meta("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .map(|v| {
            v.iter()
                .filter_map(|t| t.to_string().ok().cloned())
                .collect()
        })
        .unwrap_or_default();
    let (hidden, heads) = (u("embedding_length")?, u("attention.head_count")?);
    let kv_heads = u("attention.head_count_kv").unwrap_or(heads);
    let vocab = u("vocab_size").unwrap_or(tokens.len() as u64);
    // Phi-3's `rope.dimension_count` is the rotated part of a head (its partial rotary), not
    // the head.
    let head_dim = match arch.as_str() {
        "phi3" => u("attention.key_length").unwrap_or(hidden / heads.max(1)),
        _ => u("attention.key_length")
            .or_else(|_| u("rope.dimension_count"))
            .unwrap_or(hidden / heads.max(1)),
    };
    let id = |key: &str| meta(&format!("tokenizer.ggml.{key}")).and_then(|v| v.to_u32().ok());
    let tied = !parts.contains("output.weight");
    let mut config = json!({
        "model_type": arch,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": u("feed_forward_length")?,
        "num_hidden_layers": u("block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": u("context_length")?,
        "rms_norm_eps": f("attention.layer_norm_rms_epsilon").unwrap_or(1e-6) as f64,
        "rope_theta": f("rope.freq_base").unwrap_or(10_000.0) as f64,
        "tie_word_embeddings": tied,
        "eos_token_id": id("eos_token_id"),
        "pad_token_id": id("padding_token_id"),
    });
    let gemma = arch == "gemma2" || arch == "gemma3";
    if gemma {
        // What llama.cpp reads or assumes for Gemma (its `llama_model_gemma2/3` hparams): the
        // soft-caps and the window from the metadata; queries scaled by `1/√head_dim` except on
        // the 27Bs (46 layers for Gemma-2, 62 for Gemma-3), scaled by `1/√(hidden/heads)` —
        // a GGUF carries no `query_pre_attn_scalar`. Gemma-2 slides on every other layer (the
        // config's legacy default); Gemma-3 on all but every sixth, its local layers rotating
        // with base 10,000 and unscaled, its global ones with the metadata's base and scaling.
        let layers = u("block_count")?;
        let big = if arch == "gemma2" { 46 } else { 62 };
        let scalar = if layers == big {
            hidden / heads.max(1)
        } else {
            head_dim
        };
        config["query_pre_attn_scalar"] = json!(scalar);
        config["attn_logit_softcapping"] = json!(f("attn_logit_softcapping").map(f64::from));
        config["final_logit_softcapping"] = json!(f("final_logit_softcapping").map(f64::from));
        config["sliding_window"] = json!(u("attention.sliding_window").ok());
        config["hidden_activation"] = json!("gelu_pytorch_tanh");
        let per_layer =
            gguf_attention::window_layers(content, &arch, u("block_count")?).map_err(bad)?;
        if arch == "gemma3" {
            config["model_type"] = json!("gemma3_text");
            if per_layer.is_none() {
                let pattern = u("attention.sliding_window_pattern").unwrap_or(6);
                config["sliding_window_pattern"] = json!(pattern);
            }
            config["rope_local_base_freq"] = json!(10_000.0);
        }
        if let Some(types) = per_layer {
            config["layer_types"] = json!(types);
        }
    } else {
        config["hidden_act"] = json!("silu");
        if arch != "phi3" {
            gguf_attention::refuse_window(content, &arch).map_err(bad)?;
        }
    }
    // Linear and YaRN scaling (Gemma-3: its global layers'); Phi-3's longrope is its factor
    // tensors, read below.
    if let Some(scaling) = gguf_attention::rope_scaling(content, &arch).map_err(bad)? {
        config["rope_scaling"] = scaling;
    }
    let device = Device::Cpu;
    if arch == "phi3" {
        gguf_attention::phi3_config(&mut config, &parts, head_dim).map_err(bad)?;
    }
    if parts.contains("rope_freqs.weight") {
        if arch != "llama" {
            return Err(bad(format!(
                "`rope_freqs.weight` (per-pair rotary factors) is read for llama GGUFs only, not {arch}"
            )));
        }
        // Llama-3.1-style scaling as llama.cpp converts it: per-pair divisors of the frequencies.
        let factors = parts.vector("rope_freqs.weight").map_err(bad)?;
        config["rope_freq_factors"] = json!(factors);
    }
    let (mut tensors, mut quantized) = (HashMap::new(), HashMap::new());
    for (name, _) in parts.tensor_infos() {
        let Some(hf) = hf_name(name, &arch) else {
            continue; // rope_freqs / rope_factors_* went into the config above
        };
        let q = parts
            .tensor(name, &device)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        // llama.cpp permuted Llama's q/k rows (weights and biases) for its interleaved rotary
        // layout.
        let permuted_heads = match name
            .strip_suffix(".weight")
            .or_else(|| name.strip_suffix(".bias"))
            .and_then(|n| n.rsplit('.').next())
        {
            Some("attn_q") if arch == "llama" => Some((heads as usize, "head_count")),
            Some("attn_k") if arch == "llama" => Some((kv_heads as usize, "head_count_kv")),
            _ => None,
        };
        // The permutation pairs rows within each head: a head count that does not cut the
        // rows into whole pairs is metadata at odds with the tensor.
        if let Some((heads, key)) = permuted_heads {
            let rows = q.shape().dims().first().copied().unwrap_or(0);
            if heads == 0 || rows % (2 * heads) != 0 {
                return Err(bad(format!(
                    "tensor `{name}` has {rows} rows, which metadata `{arch}.attention.{key}` = {heads} does not cut into heads of whole rotary pairs"
                )));
            }
        }
        let permuted_heads = permuted_heads.map(|(heads, _)| heads);
        // Matrices only: a quantised vector (llama.cpp keeps norms and biases in f32 anyway)
        // is dequantised like any other tensor.
        if holding == Holding::Blocks
            && crate::quantized::is_block_quantised(q.dtype())
            && q.rank() == 2
        {
            let mut m =
                QuantizedMatrix::new(q).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            if let Some(heads) = permuted_heads {
                m = m
                    .with_rows_reordered(&unpermute_order(m.rows(), heads))
                    .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            }
            quantized.insert(hf, m);
            continue;
        }
        let dtype = match holding {
            Holding::Dense(dtype) => dtype,
            Holding::Blocks => match q.dtype() {
                GgmlDType::F16 => DType::F16,
                GgmlDType::BF16 => DType::BF16,
                _ => DType::F32,
            },
        };
        let mut t = q
            .dequantize(&device)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(|e| bad(format!("dequantising `{name}`: {e}")))?;
        if let Some(heads) = permuted_heads {
            t = unpermute(&t, heads)?;
        }
        if gemma && name.ends_with("norm.weight") {
            // llama.cpp stores Gemma's RMSNorm weights as `1 + w` (its norm multiplies by the
            // weight); the family adds the 1 itself, as transformers' Gemma2 does.
            t = t
                .affine(1.0, -1.0)
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        }
        tensors.insert(hf, t);
    }
    let tokenizer = crate::gguf_tokenizer::rebuild(&arch, content, &tokens);
    Ok(GgufModel {
        config,
        tensors,
        quantized,
        tokenizer,
    })
}

/// llama.cpp tensor names → Hugging Face names (`ffn_norm` is the norm before the MLP: Llama's
/// `post_attention_layernorm`, Gemma's `pre_feedforward_layernorm`).
fn hf_name(name: &str, arch: &str) -> Option<String> {
    let (stem, kind) = name.rsplit_once('.')?;
    let direct = match stem {
        "token_embd" => Some("model.embed_tokens".to_owned()),
        "output_norm" => Some("model.norm".to_owned()),
        "output" => Some("lm_head".to_owned()),
        _ => None,
    };
    let mapped = match direct {
        Some(d) => d,
        None => {
            let rest = stem.strip_prefix("blk.")?;
            let (i, part) = rest.split_once('.')?;
            let hf = match part {
                "attn_norm" => "input_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                "ffn_norm" if arch.starts_with("gemma") => "pre_feedforward_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "post_attention_norm" => "post_attention_layernorm",
                "post_ffw_norm" => "post_feedforward_layernorm",
                "attn_qkv" => "self_attn.qkv_proj",
                "ffn_gate" => "mlp.gate_proj",
                // Phi-3 fuses gate and up (rows `[gate | up]`) under llama.cpp's `ffn_up`.
                "ffn_up" if arch == "phi3" => "mlp.gate_up_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{i}.{hf}")
        }
    };
    Some(format!("{mapped}.{kind}"))
}

/// [`unpermute`] as a row order: row `i` of the result is row `order[i]` of llama.cpp's.
fn unpermute_order(rows: usize, heads: usize) -> Vec<usize> {
    let half = rows / heads / 2;
    (0..rows)
        .map(|i| {
            let (head, within) = (i / (2 * half), i % (2 * half));
            let (side, pair) = (within / half, within % half);
            head * 2 * half + pair * 2 + side
        })
        .collect()
}

/// Undoes llama.cpp's `permute`: rows `(head, pair, half)` back to `(head, half, pair)` — of a
/// projection's weight, or of its bias (permuted the same way, as a one-column matrix).
fn unpermute(t: &Tensor, heads: usize) -> Result<Tensor> {
    let shape = t.dims().to_vec();
    let (out, inp) = match shape[..] {
        [out] => (out, 1),
        [out, inp] => (out, inp),
        _ => return Ok(t.clone()),
    };
    let half = out / heads / 2;
    Ok(t.reshape((heads, half, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(shape)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::QTensor;

    fn write_gguf(path: &Path, dtype: GgmlDType) {
        let t = Tensor::ones((2, 64), DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dtype).unwrap();
        let arch = Value::String("llama".into());
        let n = Value::U32(2);
        let meta = [("general.architecture", &arch), ("llama.block_count", &n)];
        let mut f = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut f, &meta, &[("token_embd.weight", &q)]).unwrap();
    }

    #[test]
    fn unsupported_quantisation_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        write_gguf(&path, GgmlDType::Q8_1);
        let e = read(&path, Holding::Blocks)
            .err()
            .expect("Q8_1 is refused")
            .to_string();
        assert!(
            e.contains("token_embd.weight") && e.contains("Q8_1") && e.contains("Q4_1"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let t = QTensor::quantize(
            &Tensor::ones((2, 32), DType::F32, &Device::Cpu).unwrap(),
            GgmlDType::F32,
        )
        .unwrap();
        let arch = Value::String("mamba".into());
        let mut f = std::fs::File::create(&path).unwrap();
        gguf_file::write(&mut f, &[("general.architecture", &arch)], &[("x", &t)]).unwrap();
        let e = read(&path, Holding::Blocks).err().unwrap().to_string();
        assert!(e.contains("mamba") && e.contains("llama, qwen2"), "{e}");
    }

    /// Phi-3 metadata glassbox cannot honour is refused naming the tensor or key: one longrope
    /// factor table without the other, a rotated width wider than the head.
    #[test]
    fn inconsistent_phi3_rotary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let write = |factors: &[&str], rotated: u32| {
            let vector = |n: usize| {
                let t = Tensor::ones(n, DType::F32, &Device::Cpu).unwrap();
                QTensor::quantize(&t, GgmlDType::F32).unwrap()
            };
            let (arch, embd) = (Value::String("phi3".into()), Value::U32(32));
            let (heads, one, rot) = (Value::U32(4), Value::U32(1), Value::U32(rotated));
            let meta = [
                ("general.architecture", &arch),
                ("phi3.embedding_length", &embd),
                ("phi3.attention.head_count", &heads),
                ("phi3.feed_forward_length", &embd),
                ("phi3.block_count", &one),
                ("phi3.context_length", &embd),
                ("phi3.rope.dimension_count", &rot),
            ];
            let tensors: Vec<(&str, QTensor)> = factors.iter().map(|f| (*f, vector(2))).collect();
            let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
            let mut f = std::fs::File::create(&path).unwrap();
            gguf_file::write(&mut f, &meta, &refs).unwrap();
        };
        write(&["rope_factors_short.weight"], 8);
        let e = read(&path, Holding::Blocks).err().unwrap().to_string();
        assert!(e.contains("rope_factors_long.weight"), "{e}");
        write(&[], 12);
        let e = read(&path, Holding::Blocks).err().unwrap().to_string();
        assert!(e.contains("phi3.rope.dimension_count"), "{e}");
    }

    /// A Llama q/k tensor whose rows the metadata's head count cannot cut into rotary pairs
    /// is named with the key, not left to fail inside the un-permutation.
    #[test]
    fn a_head_count_at_odds_with_q_k_rows_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let t = Tensor::ones((8, 32), DType::F32, &Device::Cpu).unwrap();
        let k = QTensor::quantize(&t, GgmlDType::F32).unwrap();
        let (arch, width, heads) = (Value::String("llama".into()), Value::U32(32), Value::U32(4));
        let (kv, one) = (Value::U32(3), Value::U32(1));
        let meta = [
            ("general.architecture", &arch),
            ("llama.embedding_length", &width),
            ("llama.feed_forward_length", &width),
            ("llama.context_length", &width),
            ("llama.attention.head_count", &heads),
            ("llama.attention.head_count_kv", &kv),
            ("llama.block_count", &one),
        ];
        let mut f = std::fs::File::create(&path).unwrap();
        gguf_file::write(&mut f, &meta, &[("blk.0.attn_k.weight", &k)]).unwrap();
        let e = read(&path, Holding::Blocks).err().unwrap().to_string();
        assert!(
            e.contains("blk.0.attn_k.weight") && e.contains("llama.attention.head_count_kv"),
            "{e}"
        );
    }

    #[test]
    fn llama_cpp_permutation_is_undone() {
        // llama.cpp's permute: reshape(heads, 2, half, in).swapaxes(1, 2).
        let (heads, half, inp) = (2usize, 3usize, 1usize);
        let original: Vec<f32> = (0..heads * 2 * half * inp).map(|v| v as f32).collect();
        let t = Tensor::from_vec(original.clone(), (heads * 2 * half, inp), &Device::Cpu).unwrap();
        let permuted = t
            .reshape((heads, 2, half, inp))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((heads * 2 * half, inp))
            .unwrap();
        let back = unpermute(&permuted, heads).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            original
        );
        // The same undoing as a row order (what quantised q/k blocks are reordered by).
        let order = unpermute_order(heads * 2 * half, heads);
        let rows = permuted.to_vec2::<f32>().unwrap();
        let reordered: Vec<f32> = order.iter().flat_map(|&r| rows[r].clone()).collect();
        assert_eq!(reordered, original);
    }
}
