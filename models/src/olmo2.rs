//! OLMo-2 (`model_type` `olmo2`), mirroring `transformers/models/olmo2/modeling_olmo2.py`:
//! post-norm blocks — no norm before attention or the MLP, an RMSNorm on what each adds to the
//! residual stream (`post_attention_layernorm`, `post_feedforward_layernorm`) — and RMSNorm on
//! the whole query and key projections (all heads at once) before rotary. Runs on the shared
//! `decoder::Decoder`.

use crate::decoder::config::DecoderConfig;
use crate::decoder::parts::rms_norm;
use crate::decoder::{Attention, Decoder, Dims, Layer, Mlp, QkNorm};
use crate::weights::Weights;
use crate::{ModelError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// An OLMo-2 `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Olmo2Config {
    #[serde(flatten)]
    pub base: DecoderConfig,
}

impl Olmo2Config {
    pub fn from_json(path: &Path, value: Value) -> Result<Self> {
        crate::decoder::config::parse(path, value, "OLMo-2", |c: &Self| c.base.check("silu"))
    }
}

/// Loads an OLMo-2 checkpoint (names relative to `model.`).
pub fn load(cfg: Olmo2Config, w: &Weights) -> Result<Box<dyn crate::model::HookedModel>> {
    let base = &cfg.base;
    let d = base.dims().map_err(ModelError::Invalid)?;
    let rotary = base
        .rotary("full_attention", 10_000.0, None)
        .map_err(ModelError::Invalid)?;
    let mut layers = Vec::with_capacity(base.num_hidden_layers);
    for i in 0..base.num_hidden_layers {
        let p = format!("layers.{i}");
        let attn = Attention::separate(w, &format!("{p}.self_attn"), d, rotary.clone(), None)?;
        layers.push(post_norm_layer(w, &p, d, base.rms_norm_eps, attn)?);
    }
    Ok(Box::new(Decoder::plain("olmo2", base, w, layers, "silu")?))
}

/// OLMo-2's block around `attn` (OLMo-3 shares it): q/k RMSNorm over the whole projections,
/// no norm before attention or the MLP, an RMSNorm on what each adds to the stream.
pub(crate) fn post_norm_layer(
    w: &Weights,
    p: &str,
    d: Dims,
    eps: f64,
    mut attn: Attention,
) -> Result<Layer> {
    let whole = |name: &str, width: usize| -> Result<QkNorm> {
        let name = format!("{p}.self_attn.{name}.weight");
        Ok(QkNorm::Whole(rms_norm(w, &name, width, eps, false)?))
    };
    attn.q_norm = Some(whole("q_norm", d.heads * d.head_dim)?);
    attn.k_norm = Some(whole("k_norm", d.kv_heads * d.head_dim)?);
    let norm = |name: &str| rms_norm(w, &format!("{p}.{name}.weight"), d.hidden, eps, false);
    Ok(Layer {
        attn_norm: None,
        attn,
        attn_post_norm: Some(norm("post_attention_layernorm")?),
        mlp_norm: None,
        mlp: Mlp::separate(w, &format!("{p}.mlp"), d)?,
        mlp_post_norm: Some(norm("post_feedforward_layernorm")?),
    })
}
