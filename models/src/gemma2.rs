//! Gemma-2 (`model_type` `gemma2`), mirroring `transformers/models/gemma2/modeling_gemma2.py`:
//! RMSNorm as `x̂ · (1 + w)`, embeddings scaled by √hidden, sandwich norms (before and after
//! both attention and MLP: `Gemma2DecoderLayer`), GeGLU with the tanh GELU, scores scaled by
//! `query_pre_attn_scalar^-½` and soft-capped (`attn_logit_softcapping`) before the mask,
//! logits soft-capped (`final_logit_softcapping`), and layers alternating between a sliding
//! window and global attention (`layer_types`; `transformers` 4 configs: even layers slide).
//! Runs on the shared `decoder::Decoder`.

use crate::decoder::config::DecoderConfig;
use crate::decoder::parts::rms_norm;
use crate::decoder::{Attention, Decoder, Dims, Layer, Mlp};
use crate::layers::Activation;
use crate::weights::Weights;
use crate::{ModelError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

fn default_query_pre_attn_scalar() -> f64 {
    256.0
}
fn default_attn_cap() -> Option<f64> {
    Some(50.0)
}
fn default_final_cap() -> Option<f64> {
    Some(30.0)
}

/// A Gemma-2 `config.json` (defaults as `Gemma2Config`'s where a field is absent).
#[derive(Debug, Clone, Deserialize)]
pub struct Gemma2Config {
    #[serde(flatten)]
    pub base: DecoderConfig,
    #[serde(default = "default_query_pre_attn_scalar")]
    pub query_pre_attn_scalar: f64,
    #[serde(default = "default_attn_cap")]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default = "default_final_cap")]
    pub final_logit_softcapping: Option<f64>,
}

impl Gemma2Config {
    pub fn from_json(path: &Path, value: Value) -> Result<Self> {
        let cfg: Gemma2Config = serde_json::from_value(value).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("not a Gemma-2 config: {e}"),
        })?;
        cfg.check().map_err(|message| ModelError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.base.check("gelu_pytorch_tanh")?;
        check_attention_scalars(
            self.query_pre_attn_scalar,
            self.attn_logit_softcapping,
            self.final_logit_softcapping,
        )?;
        self.sliding().map(|_| ())
    }

    /// `transformers` 4 Gemma-2 configs have no `layer_types`: even layers slide.
    fn sliding(&self) -> std::result::Result<Vec<bool>, String> {
        self.base.sliding(|i| i % 2 == 0)
    }
}

/// Gemma's attention scale `query_pre_attn_scalar^-½` and soft caps `c·tanh(x / c)`: a scalar
/// of 0 or a cap of 0 would turn every logit into NaN, so they are refused by name (shared by
/// Gemma-3, whose configs carry the same fields).
pub(crate) fn check_attention_scalars(
    query_pre_attn_scalar: f64,
    attn_cap: Option<f64>,
    final_cap: Option<f64>,
) -> std::result::Result<(), String> {
    if !(query_pre_attn_scalar.is_finite() && query_pre_attn_scalar > 0.0) {
        return Err(format!(
            "query_pre_attn_scalar = {query_pre_attn_scalar}; the attention scale is its \
             inverse square root, so it must be a finite positive number (usually the head \
             dimension)"
        ));
    }
    for (name, cap) in [
        ("attn_logit_softcapping", attn_cap),
        ("final_logit_softcapping", final_cap),
    ] {
        if let Some(c) = cap.filter(|c| !(c.is_finite() && *c != 0.0)) {
            return Err(format!(
                "{name} = {c}; a soft cap c·tanh(x / c) needs a finite non-zero c (null for none)"
            ));
        }
    }
    Ok(())
}

/// The norms, attention and MLP of Gemma block `p` (`model.layers.{i}`), shared by Gemma-3.
pub(crate) fn gemma_layer(
    w: &Weights,
    p: &str,
    d: Dims,
    eps: f64,
    attn: Attention,
) -> Result<Layer> {
    let norm = |name: &str| rms_norm(w, &format!("{p}.{name}.weight"), d.hidden, eps, true);
    Ok(Layer {
        attn_norm: Some(norm("input_layernorm")?),
        attn,
        attn_post_norm: Some(norm("post_attention_layernorm")?),
        mlp_norm: Some(norm("pre_feedforward_layernorm")?),
        mlp: Mlp::separate(w, &format!("{p}.mlp"), d)?,
        mlp_post_norm: Some(norm("post_feedforward_layernorm")?),
    })
}

/// The Gemma decoder around `layers`: scaled, tied embeddings and the (1 + w) final norm.
pub(crate) fn gemma_decoder(
    family: &'static str,
    base: &DecoderConfig,
    w: &Weights,
    layers: Vec<Layer>,
    query_pre_attn_scalar: f64,
    caps: (Option<f64>, Option<f64>),
) -> Result<Decoder> {
    let d = base.dims().map_err(ModelError::Invalid)?;
    let untied = base.tie_word_embeddings == Some(false);
    let (embed, unembed) = crate::decoder::tables(w, d, untied)?;
    Ok(Decoder {
        family,
        dims: d,
        act: Activation::parse(base.activation("gelu_pytorch_tanh"))
            .map_err(ModelError::Invalid)?,
        embed,
        // `transformers` rounds √hidden to the activations' dtype before multiplying.
        embed_scale: Some((d.hidden as f64).sqrt() as f32),
        layers,
        norm: rms_norm(w, "norm.weight", d.hidden, base.rms_norm_eps, true)?,
        unembed,
        unembed_f32: Default::default(),
        attn_scale: query_pre_attn_scalar.powf(-0.5),
        attn_softcap: caps.0,
        final_softcap: caps.1,
        compute: Default::default(),
        spare: Default::default(),
        score: None,
    })
}

/// Loads a Gemma-2 checkpoint (names relative to `model.`).
pub fn load(cfg: Gemma2Config, w: &Weights) -> Result<Box<dyn crate::model::HookedModel>> {
    let base = &cfg.base;
    let d = base.dims().map_err(ModelError::Invalid)?;
    let sliding = cfg.sliding().map_err(ModelError::Invalid)?;
    let rotary = base
        .rotary("full_attention", 10_000.0, None)
        .map_err(ModelError::Invalid)?;
    let mut layers = Vec::with_capacity(base.num_hidden_layers);
    for (i, slides) in sliding.into_iter().enumerate() {
        let p = format!("layers.{i}");
        let window = base.sliding_window.filter(|_| slides);
        let attn = Attention::separate(w, &format!("{p}.self_attn"), d, rotary.clone(), window)?;
        layers.push(gemma_layer(w, &p, d, base.rms_norm_eps, attn)?);
    }
    Ok(Box::new(gemma_decoder(
        "gemma2",
        base,
        w,
        layers,
        cfg.query_pre_attn_scalar,
        (cfg.attn_logit_softcapping, cfg.final_logit_softcapping),
    )?))
}

#[cfg(test)]
mod tests {
    use super::check_attention_scalars;

    #[test]
    fn a_zero_scale_or_cap_is_refused_by_name() {
        assert!(check_attention_scalars(256.0, Some(50.0), None).is_ok());
        let e = check_attention_scalars(0.0, None, None).unwrap_err();
        assert!(e.starts_with("query_pre_attn_scalar = 0"), "{e}");
        let e = check_attention_scalars(256.0, Some(f64::NAN), None).unwrap_err();
        assert!(e.starts_with("attn_logit_softcapping = NaN"), "{e}");
        let e = check_attention_scalars(256.0, None, Some(0.0)).unwrap_err();
        assert!(e.starts_with("final_logit_softcapping = 0"), "{e}");
    }
}
