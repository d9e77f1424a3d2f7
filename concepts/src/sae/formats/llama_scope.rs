//! Llama Scope (He et al. 2024; `fnlp/Llama3_1-8B-Base-L*`): `hyperparams.json` (`d_model`,
//! `d_sae`, `hook_point_in`/`hook_point_out`, `jump_relu_threshold`,
//! `dataset_average_activation_norm.in`) and `checkpoints/final.safetensors` in `nn.Linear`
//! layouts (`encoder.weight` `[m, d]`, `decoder.weight` `[d, m]`, biases). Inputs are scaled
//! by `√d / norm_in`, the encoder reads them uncentred, one threshold serves every latent —
//! read as SAELens's `llama_scope_sae_huggingface_loader` reads them (the threshold times the
//! scale, the scale folded into the weights), so codes act on raw activations.

use super::super::saelens::{fold_uncentred_input, take_tensor, transpose, LoadedSae};
use super::super::{tensors, Architecture, Sae};
use super::hook_from_module_path;
use crate::ConceptError;
use serde_json::Value;
use std::path::Path;

pub(super) fn load(dir: &Path) -> Result<LoadedSae, ConceptError> {
    let cfg_path = dir.join("hyperparams.json");
    let bad = |m: String| ConceptError::Invalid(format!("{}: {m}", cfg_path.display()));
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let int = |k: &str| {
        cfg.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("`{k}` is missing or not a whole number")))
    };
    let (d, m) = (int("d_model")?, int("d_sae")?);
    let hook_in = cfg.get("hook_point_in").and_then(Value::as_str);
    let hook_out = cfg.get("hook_point_out").and_then(Value::as_str);
    if hook_out.is_some() && hook_out != hook_in {
        return Err(bad(format!(
            "a transcoder ({} → {}); glassbox reads Llama Scope SAEs, transcoders are not supported yet",
            hook_in.unwrap_or("?"),
            hook_out.unwrap_or("?")
        )));
    }
    let norm_in = cfg
        .get("dataset_average_activation_norm")
        .and_then(|n| n.get("in"))
        .and_then(Value::as_f64);
    let scale = match norm_in {
        Some(n) if n > 0.0 => ((d as f64).sqrt() / n) as f32,
        Some(n) => return Err(bad(format!("dataset_average_activation_norm.in = {n}"))),
        None => 1.0,
    };
    let act = cfg
        .get("act_fn")
        .and_then(Value::as_str)
        .unwrap_or("jumprelu");
    let file = dir.join("checkpoints/final.safetensors");
    let (mut t, _) = tensors::read(&file)?;
    let mut take = |name: &str, shape: &[usize]| take_tensor(&mut t, &file, name, shape, (d, m));
    let w_enc = take("encoder.weight", &[m, d])?;
    let b_enc = take("encoder.bias", &[m])?;
    let w_dec = transpose(&take("decoder.weight", &[d, m])?, d, m);
    let b_dec = take("decoder.bias", &[d])?;
    let (architecture, threshold) = match act {
        "jumprelu" => {
            let theta = cfg
                .get("jump_relu_threshold")
                .and_then(Value::as_f64)
                .ok_or_else(|| bad("`jump_relu_threshold` is missing".into()))?;
            (Architecture::JumpRelu, vec![theta as f32 * scale; m])
        }
        "topk" => (Architecture::TopK { k: int("top_k")? }, Vec::new()),
        "relu" => (
            Architecture::Relu {
                l1_coefficient: 0.0,
            },
            Vec::new(),
        ),
        other => {
            return Err(bad(format!(
                "act_fn `{other}` is not supported (jumprelu, topk, relu)"
            )))
        }
    };
    let mut sae = Sae {
        input_norm: Default::default(),
        d_in: d,
        width: m,
        architecture,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        threshold,
        gate: None,
    };
    fold_uncentred_input(&mut sae);
    sae.fold_input_scale(scale);
    sae.validate(&file.display().to_string())?;
    Ok(LoadedSae {
        sae,
        hook_name: hook_in.and_then(hook_from_module_path),
        model_name: cfg
            .get("model_name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(Some("meta-llama/Llama-3.1-8B".into())),
        fingerprint: None,
        format: "llama_scope",
    })
}
