//! Phi-3 (`model_type` `phi3`), mirroring `transformers/models/phi3/modeling_phi3.py`: Llama's
//! pre-norm block with the query, key and value projections fused into `qkv_proj` (rows
//! `[q | k | v]`) and gate and up into `gate_up_proj` (rows `[gate | up]`), both split at
//! load; rotary with `longrope` (`su`) scaling and a partial rotary factor where configured;
//! sliding-window attention on every layer when `sliding_window` is set. Runs on the shared
//! `decoder::Decoder`.

use crate::decoder::config::DecoderConfig;
use crate::decoder::parts::{pre_norm_layer, rows_of};
use crate::decoder::{Attention, Decoder, Mlp};
use crate::layers::Linear;
use crate::weights::Weights;
use crate::{ModelError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// A Phi-3 `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Phi3Config {
    #[serde(flatten)]
    pub base: DecoderConfig,
}

impl Phi3Config {
    pub fn from_json(path: &Path, value: Value) -> Result<Self> {
        crate::decoder::config::parse(path, value, "Phi-3", |c: &Self| c.base.check("silu"))
    }
}

/// Loads a Phi-3 checkpoint (names relative to `model.`).
pub fn load(cfg: Phi3Config, w: &Weights) -> Result<Box<dyn crate::model::HookedModel>> {
    let base = &cfg.base;
    let d = base.dims().map_err(ModelError::Invalid)?;
    let (q, kv) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    let rotary = base
        .rotary("full_attention", 10_000.0, None)
        .map_err(ModelError::Invalid)?;
    let mut layers = Vec::with_capacity(base.num_hidden_layers);
    for i in 0..base.num_hidden_layers {
        let p = format!("layers.{i}");
        // As held, like every other projection: a bf16 checkpoint's fused matrices stay bf16,
        // a GGUF's stay blocks.
        let qkv = w.get_held(
            &format!("{p}.self_attn.qkv_proj.weight"),
            &[q + 2 * kv, d.hidden],
        )?;
        let o = Linear::load_stored(w, &format!("{p}.self_attn.o_proj"), q, d.hidden)?;
        let attn = Attention {
            q: rows_of(&qkv, 0, q)?,
            k: rows_of(&qkv, q, kv)?,
            v: rows_of(&qkv, q + kv, kv)?,
            o,
            q_norm: None,
            k_norm: None,
            rotary: rotary.clone(),
            window: base.sliding_window,
        };
        let gate_up = w.get_held(
            &format!("{p}.mlp.gate_up_proj.weight"),
            &[2 * d.inner, d.hidden],
        )?;
        let mlp = Mlp {
            gate: rows_of(&gate_up, 0, d.inner)?,
            up: rows_of(&gate_up, d.inner, d.inner)?,
            down: Linear::load_stored(w, &format!("{p}.mlp.down_proj"), d.inner, d.hidden)?,
        };
        layers.push(pre_norm_layer(w, &p, d, base.rms_norm_eps, attn, mlp)?);
    }
    Ok(Box::new(Decoder::plain("phi3", base, w, layers, "silu")?))
}
