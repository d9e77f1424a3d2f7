//! EleutherAI sparsify (`eai-sparsify`, `SparseCoder.save_to_disk`): `cfg.json` (`d_in`,
//! `num_latents` or `expansion_factor`, `k`, `activation`, `transcode`, `skip_connection`)
//! and `sae.safetensors` with `encoder.weight` `[m, d]`, `encoder.bias`, `W_dec` `[m, d]`,
//! `b_dec`. Encode: TopK of `ReLU(W_enc (x − b_dec) + b_enc)` (`SparseCoder.encode`). The
//! folder is named for the HF module it reads (`layers.6`, `layers.6.mlp`, `embed_tokens`),
//! mapped to a hook; the model is the parent folder's `config.json` `model`, if any.

use super::super::saelens::{take_tensor, LoadedSae};
use super::super::{tensors, Architecture, Sae};
use super::hook_from_module_path;
use crate::ConceptError;
use serde_json::Value;
use std::path::Path;

/// `sae.safetensors`' TopK coder as stored (its encoder bias as sparsify applies it) and its
/// `W_skip` `[d, d]` when there is one (skip transcoders).
pub(crate) fn read_weights(
    file: &Path,
    k: usize,
    d: usize,
    m: usize,
) -> Result<(Sae, Option<Vec<f32>>), ConceptError> {
    let (mut t, _) = tensors::read(file)?;
    let has_skip = t.contains_key("W_skip");
    let mut take = |name: &str, shape: &[usize]| take_tensor(&mut t, file, name, shape, (d, m));
    let sae = Sae {
        input_norm: Default::default(),
        d_in: d,
        width: m,
        architecture: Architecture::TopK { k },
        w_enc: take("encoder.weight", &[m, d])?,
        b_enc: take("encoder.bias", &[m])?,
        w_dec: take("W_dec", &[m, d])?,
        b_dec: take("b_dec", &[d])?,
        threshold: Vec::new(),
        gate: None,
    };
    let w_skip = if has_skip {
        Some(take("W_skip", &[d, d])?)
    } else {
        None
    };
    Ok((sae, w_skip))
}

pub(super) fn load(dir: &Path) -> Result<LoadedSae, ConceptError> {
    let cfg_path = dir.join("cfg.json");
    let bad = |m: String| ConceptError::Invalid(format!("{}: {m}", cfg_path.display()));
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let int = |k: &str| cfg.get(k).and_then(Value::as_u64).map(|v| v as usize);
    let d = int("d_in").ok_or_else(|| bad("`d_in` is missing".into()))?;
    let m = match int("num_latents").filter(|&n| n > 0) {
        Some(n) => n,
        None => d * int("expansion_factor").unwrap_or(32),
    };
    let k = int("k").ok_or_else(|| bad("`k` is missing".into()))?;
    let flag = |key: &str| cfg.get(key).and_then(Value::as_bool).unwrap_or(false);
    if let Some(a) = cfg
        .get("activation")
        .and_then(Value::as_str)
        .filter(|a| *a != "topk")
    {
        return Err(bad(format!("activation `{a}` is not supported (topk)")));
    }
    if flag("transcode") || flag("skip_connection") {
        return Err(bad(
            "a transcoder (transcode or skip_connection set): load it with --transcoder IN->OUT=FOLDER".into(),
        ));
    }
    let file = dir.join("sae.safetensors");
    let (sae, _) = read_weights(&file, k, d, m)?;
    sae.validate(&file.display().to_string())?;
    let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let model_name = dir
        .parent()
        .map(|p| p.join("config.json"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|c| c.get("model").and_then(Value::as_str).map(str::to_owned));
    Ok(LoadedSae {
        sae,
        hook_name: hook_from_module_path(folder),
        model_name,
        fingerprint: None,
        format: "sparsify",
    })
}
