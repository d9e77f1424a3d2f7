//! How a GGUF file's attention rotates and which layers it windows, read from llama.cpp's
//! metadata back into `config.json` fields: `{arch}.rope.scaling.*` (written by llama.cpp's
//! converter, `TextModel.set_gguf_parameters`, from the checkpoint's `rope_parameters`) as
//! `rope_scaling`, and `{arch}.attention.sliding_window(_pattern)` as `sliding_window` and
//! `layer_types`; Phi-3's partial rotary, window and longrope factor tensors. What glassbox cannot honour is refused naming the key — a scaling read past
//! would rotate every position wrongly with nothing to show for it.

use crate::gguf_split::GgufParts;
use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{json, Value as Json};

/// A metadata value of `{arch}.{key}`.
fn meta<'a>(content: &'a Content, arch: &str, key: &str) -> Option<&'a Value> {
    content.metadata.get(&format!("{arch}.{key}"))
}

fn number(content: &Content, arch: &str, key: &str) -> Option<f64> {
    let v = meta(content, arch, key)?;
    v.to_f32()
        .map(f64::from)
        .or_else(|_| v.to_f64())
        .or_else(|_| v.to_u32().map(f64::from))
        .or_else(|_| v.to_u64().map(|n| n as f64))
        .ok()
}

/// `{arch}.rope.scaling.type` and its parameters as the `rope_scaling` of a transformers
/// config, or `None` for unscaled rotary. Phi-3's `longrope` is left to its factor tensors
/// (`None` here); llama.cpp's Llama-3.1 scaling is a `rope_freqs` tensor, not a type.
pub(crate) fn rope_scaling(content: &Content, arch: &str) -> Result<Option<Json>, String> {
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let kind = match meta(content, arch, "rope.scaling.type") {
        None => return Ok(None),
        Some(v) => v
            .to_string()
            .map_err(|_| format!("metadata `{}` is not a string", key("type")))?
            .clone(),
    };
    let factor = || {
        number(content, arch, "rope.scaling.factor").ok_or_else(|| {
            format!(
                "metadata `{}` is `{kind}` without `{}`",
                key("type"),
                key("factor")
            )
        })
    };
    match kind.as_str() {
        "none" => Ok(None),
        "linear" => Ok(Some(json!({"rope_type": "linear", "factor": factor()?}))),
        "yarn" => {
            // transformers' YaRN has no extrapolation mix other than 1 and derives its
            // attention factor from the scale (or `attention_factor`); a log multiplier
            // (DeepSeek's `mscale_all_dim`) is not modelled by the families read here.
            if let Some(ext) = number(content, arch, "rope.scaling.yarn_ext_factor") {
                if ext != 1.0 {
                    return Err(format!(
                        "metadata `{}` is {ext}; glassbox's YaRN (transformers') mixes with factor 1 only",
                        key("yarn_ext_factor")
                    ));
                }
            }
            if number(content, arch, "rope.scaling.yarn_log_multiplier").is_some_and(|m| m != 0.0) {
                return Err(format!(
                    "metadata `{}` (DeepSeek-style YaRN mscale) is not supported for {arch}",
                    key("yarn_log_multiplier")
                ));
            }
            let original = number(content, arch, "rope.scaling.original_context_length")
                .ok_or_else(|| {
                    format!(
                        "metadata `{}` is `yarn` without `{}`",
                        key("type"),
                        key("original_context_length")
                    )
                })?;
            let mut scaling = json!({
                "rope_type": "yarn",
                "factor": factor()?,
                "original_max_position_embeddings": original as u64,
            });
            for (gguf, hf) in [
                ("yarn_beta_fast", "beta_fast"),
                ("yarn_beta_slow", "beta_slow"),
                ("yarn_attn_factor", "attention_factor"),
            ] {
                if let Some(v) = number(content, arch, &format!("rope.scaling.{gguf}")) {
                    scaling[hf] = json!(v);
                }
            }
            Ok(Some(scaling))
        }
        "longrope" if arch == "phi3" => Ok(None),
        other => Err(format!(
            "metadata `{}` is `{other}`; glassbox reads none, linear and yarn{}",
            key("type"),
            if arch == "phi3" { " and longrope" } else { "" }
        )),
    }
}

/// `{arch}.attention.sliding_window_pattern` written as one flag per layer (true = windowed)
/// as `layer_types`, or `None` when it is absent or a period (Gemma-3's integer).
pub(crate) fn window_layers(
    content: &Content,
    arch: &str,
    layers: u64,
) -> Result<Option<Vec<String>>, String> {
    let key = format!("{arch}.attention.sliding_window_pattern");
    let Some(Value::Array(flags)) = content.metadata.get(&key) else {
        return Ok(None);
    };
    if flags.len() as u64 != layers {
        return Err(format!(
            "metadata `{key}` lists {} layers but `{arch}.block_count` is {layers}",
            flags.len()
        ));
    }
    flags
        .iter()
        .map(|f| match f {
            Value::Bool(true) => Ok("sliding_attention".to_owned()),
            Value::Bool(false) => Ok("full_attention".to_owned()),
            _ => Err(format!("metadata `{key}` holds a non-boolean entry")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Architectures whose GGUF files glassbox reads without windows (Llama, Qwen2/3, OLMo-2) must
/// not carry one: llama.cpp's converter writes `attention.sliding_window` for them only from a
/// windowed checkpoint, which these loaders would run with full attention.
pub(crate) fn refuse_window(content: &Content, arch: &str) -> Result<(), String> {
    match number(content, arch, "attention.sliding_window") {
        Some(w) if w > 0.0 => Err(format!(
            "metadata `{arch}.attention.sliding_window` is {w}: glassbox reads {arch} GGUF files with full attention only; load the original checkpoint (its config.json windows the layers)"
        )),
        _ => Ok(()),
    }
}

/// Phi-3's config fields from llama.cpp's metadata (its `Phi3MiniModel` converter): the
/// partial rotary as `rope.dimension_count` of a head; the window, 0 for none (Phi-4); longrope
/// (`su`) scaling as `rope_factors_short`/`rope_factors_long` tensors of per-pair factors with
/// the original context and the attention factor it computed from the config.
pub(crate) fn phi3_config(
    config: &mut serde_json::Value,
    parts: &GgufParts,
    head_dim: u64,
) -> std::result::Result<(), String> {
    let meta = |key: &str| parts.content().metadata.get(&format!("phi3.{key}"));
    let int = |key: &str| meta(key).and_then(crate::gguf_split::unsigned);
    if let Some(rotated) = int("rope.dimension_count").filter(|&r| r != head_dim) {
        if rotated > head_dim || rotated % 2 == 1 {
            return Err(format!(
                "metadata `phi3.rope.dimension_count` is {rotated}, which cannot be the rotated part of {head_dim}-wide heads"
            ));
        }
        config["partial_rotary_factor"] = json!(rotated as f64 / head_dim as f64);
    }
    config["sliding_window"] = json!(int("attention.sliding_window").filter(|&w| w > 0));
    let factors = |name: &str| -> std::result::Result<Option<Vec<f32>>, String> {
        match parts.contains(name) {
            true => parts.vector(name).map(Some),
            false => Ok(None),
        }
    };
    match (
        factors("rope_factors_short.weight")?,
        factors("rope_factors_long.weight")?,
    ) {
        (None, None) => {}
        (Some(short), Some(long)) => {
            let original = int("rope.scaling.original_context_length").ok_or(
                "longrope factors without metadata `phi3.rope.scaling.original_context_length`",
            )?;
            let mut scaling = json!({
                "rope_type": "longrope",
                "short_factor": short,
                "long_factor": long,
                "original_max_position_embeddings": original,
            });
            if let Some(a) = meta("rope.scaling.attn_factor").and_then(|v| v.to_f32().ok()) {
                scaling["attention_factor"] = json!(a as f64);
            }
            config["original_max_position_embeddings"] = json!(original);
            config["rope_scaling"] = scaling;
        }
        _ => {
            return Err(
                "one of `rope_factors_short.weight` / `rope_factors_long.weight` without the other; longrope needs both".into(),
            )
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    use candle_core::{DType, Device, Tensor};

    /// The metadata of a GGUF file written with `meta` (and one tensor).
    fn content(meta: &[(&str, Value)]) -> Content {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let t = Tensor::ones(32, DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
        let refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
        let mut f = std::fs::File::create(&path).unwrap();
        gguf_file::write(&mut f, &refs, &[("x", &q)]).unwrap();
        Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap()
    }

    fn text(s: &str) -> Value {
        Value::String(s.into())
    }

    #[test]
    fn yarn_reads_back_as_transformers_parameters() {
        let c = content(&[
            ("qwen2.rope.scaling.type", text("yarn")),
            ("qwen2.rope.scaling.factor", Value::F32(4.0)),
            (
                "qwen2.rope.scaling.original_context_length",
                Value::U32(32768),
            ),
            ("qwen2.rope.scaling.yarn_beta_fast", Value::F32(16.0)),
        ]);
        let got = rope_scaling(&c, "qwen2").unwrap().unwrap();
        assert_eq!(
            got,
            json!({"rope_type": "yarn", "factor": 4.0,
                   "original_max_position_embeddings": 32768, "beta_fast": 16.0})
        );
        let none = content(&[("llama.rope.scaling.type", text("none"))]);
        assert_eq!(rope_scaling(&none, "llama").unwrap(), None);
    }

    /// What glassbox cannot rotate as the checkpoint did is refused naming the key.
    #[test]
    fn scalings_it_cannot_honour_are_named() {
        let cases = [
            (
                vec![("llama.rope.scaling.type", text("longrope"))],
                "llama.rope.scaling.type",
            ),
            (
                vec![("llama.rope.scaling.type", text("linear"))],
                "llama.rope.scaling.factor",
            ),
            (
                vec![
                    ("olmo2.rope.scaling.type", text("yarn")),
                    ("olmo2.rope.scaling.factor", Value::F32(4.0)),
                ],
                "olmo2.rope.scaling.original_context_length",
            ),
            (
                vec![
                    ("llama.rope.scaling.type", text("yarn")),
                    ("llama.rope.scaling.factor", Value::F32(4.0)),
                    ("llama.rope.scaling.original_context_length", Value::U32(8)),
                    ("llama.rope.scaling.yarn_ext_factor", Value::F32(0.5)),
                ],
                "llama.rope.scaling.yarn_ext_factor",
            ),
        ];
        for (meta, key) in cases {
            let arch = key.split('.').next().unwrap();
            let e = rope_scaling(&content(&meta), arch).unwrap_err();
            assert!(e.contains(key), "{e}");
        }
        let phi3 = content(&[("phi3.rope.scaling.type", text("longrope"))]);
        assert_eq!(rope_scaling(&phi3, "phi3").unwrap(), None);
    }

    #[test]
    fn windows_are_per_layer_flags_or_refused_where_unread() {
        let flags = Value::Array(vec![Value::Bool(true), Value::Bool(false)]);
        let c = content(&[("gemma3.attention.sliding_window_pattern", flags)]);
        assert_eq!(
            window_layers(&c, "gemma3", 2).unwrap().unwrap(),
            ["sliding_attention", "full_attention"]
        );
        let e = window_layers(&c, "gemma3", 3).unwrap_err();
        assert!(e.contains("gemma3.block_count"), "{e}");
        let period = content(&[("gemma3.attention.sliding_window_pattern", Value::U32(6))]);
        assert_eq!(window_layers(&period, "gemma3", 6).unwrap(), None);

        let windowed = content(&[("qwen3.attention.sliding_window", Value::U32(4096))]);
        let e = refuse_window(&windowed, "qwen3").unwrap_err();
        assert!(
            e.contains("qwen3.attention.sliding_window") && e.contains("4096"),
            "{e}"
        );
        let off = content(&[("llama.attention.sliding_window", Value::U32(0))]);
        assert!(refuse_window(&off, "llama").is_ok());
    }
}
