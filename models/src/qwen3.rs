//! Qwen3 (`model_type` `qwen3`), mirroring `transformers/models/qwen3/modeling_qwen3.py`:
//! Llama's pre-norm block without q/k/v biases (unless `attention_bias`), plus RMSNorm on each
//! query and key head before rotary (`Qwen3Attention.q_norm`/`k_norm`), and sliding-window
//! attention on layers `max_window_layers` and up when `use_sliding_window` is set (or as
//! `layer_types` says). Runs on the shared `decoder::Decoder`.

use crate::decoder::config::DecoderConfig;
use crate::decoder::parts::pre_norm_layer;
use crate::decoder::{Attention, Decoder, Mlp};
use crate::weights::Weights;
use crate::{ModelError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// A Qwen3 `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3Config {
    #[serde(flatten)]
    pub base: DecoderConfig,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub max_window_layers: usize,
}

impl Qwen3Config {
    pub fn from_json(path: &Path, value: Value) -> Result<Self> {
        crate::decoder::config::parse(path, value, "Qwen3", |c: &Self| {
            c.base.check("silu")?;
            c.sliding().map(|_| ())
        })
    }

    fn sliding(&self) -> std::result::Result<Vec<bool>, String> {
        // Qwen3Config: layer_types default to sliding from max_window_layers on, if enabled.
        let (on, from) = (self.use_sliding_window, self.max_window_layers);
        let sliding = self.base.sliding(|i| on && i >= from)?;
        Ok(sliding.into_iter().map(|s| s && on).collect())
    }
}

/// Loads a Qwen3 checkpoint (names relative to `model.`).
pub fn load(cfg: Qwen3Config, w: &Weights) -> Result<Box<dyn crate::model::HookedModel>> {
    let base = &cfg.base;
    let d = base.dims().map_err(ModelError::Invalid)?;
    let eps = base.rms_norm_eps;
    let sliding = cfg.sliding().map_err(ModelError::Invalid)?;
    let rotary = base
        .rotary("full_attention", 10_000.0, None)
        .map_err(ModelError::Invalid)?;
    let mut layers = Vec::with_capacity(base.num_hidden_layers);
    for (i, slides) in sliding.into_iter().enumerate() {
        let p = format!("layers.{i}");
        let window = base.sliding_window.filter(|_| slides);
        let mut attn =
            Attention::separate(w, &format!("{p}.self_attn"), d, rotary.clone(), window)?;
        attn.load_head_norms(w, &format!("{p}.self_attn"), d.head_dim, eps, false)?;
        let mlp = Mlp::separate(w, &format!("{p}.mlp"), d)?;
        layers.push(pre_norm_layer(w, &p, d, eps, attn, mlp)?);
    }
    Ok(Box::new(Decoder::plain("qwen3", base, w, layers, "silu")?))
}
