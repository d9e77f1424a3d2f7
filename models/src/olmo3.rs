//! OLMo-3 (`model_type` `olmo3`), mirroring `transformers/models/olmo3/modular_olmo3.py`:
//! OLMo-2's post-norm block (see [`crate::olmo2`]) with a sliding window on three layers of
//! four (`layer_types`; by default every fourth layer is global) and rotary parameters per
//! layer kind — a long-context scaling (`yarn` in the released checkpoints) applies to the
//! global layers only, never to the sliding ones. Runs on the shared `decoder::Decoder`.

use crate::decoder::config::DecoderConfig;
use crate::decoder::{Attention, Decoder};
use crate::olmo2::post_norm_layer;
use crate::weights::Weights;
use crate::{ModelError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// `Olmo3Config.default_theta`.
const DEFAULT_THETA: f64 = 500_000.0;
/// `Olmo3Config.sliding_window`'s default, where a config leaves the key out.
const DEFAULT_WINDOW: usize = 4096;

/// An OLMo-3 `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Olmo3Config {
    #[serde(flatten)]
    pub base: DecoderConfig,
}

impl Olmo3Config {
    pub fn from_json(path: &Path, mut value: Value) -> Result<Self> {
        // Absent is the default window; an explicit null stays "no window" and is refused
        // below if a layer slides.
        if let Value::Object(m) = &mut value {
            m.entry("sliding_window").or_insert(DEFAULT_WINDOW.into());
        }
        crate::decoder::config::parse(path, value, "OLMo-3", |c: &Self| {
            c.base.check("silu")?;
            for kind in ["full_attention", "sliding_attention"] {
                c.rotary(kind)?;
            }
            c.sliding().map(|_| ())
        })
    }

    /// Which layers slide: `layer_types`, else all but every fourth.
    fn sliding(&self) -> std::result::Result<Vec<bool>, String> {
        self.base.sliding(|i| !(i + 1).is_multiple_of(4))
    }

    /// `rope_parameters` per kind (transformers 5), or transformers 4's `rope_theta` for both
    /// kinds and `rope_scaling` for the global layers only.
    fn rotary(&self, kind: &str) -> std::result::Result<crate::rotary::Rotary, String> {
        let local =
            (kind == "sliding_attention").then(|| self.base.rope_theta.unwrap_or(DEFAULT_THETA));
        self.base.rotary(kind, DEFAULT_THETA, local)
    }
}

/// Loads an OLMo-3 checkpoint (names relative to `model.`).
pub fn load(cfg: Olmo3Config, w: &Weights) -> Result<Box<dyn crate::model::HookedModel>> {
    let base = &cfg.base;
    let d = base.dims().map_err(ModelError::Invalid)?;
    let sliding = cfg.sliding().map_err(ModelError::Invalid)?;
    let mut layers = Vec::with_capacity(base.num_hidden_layers);
    for (i, slides) in sliding.into_iter().enumerate() {
        let p = format!("layers.{i}");
        let kind = (slides, base.sliding_window);
        let attn = Attention::of_kind(w, &format!("{p}.self_attn"), d, kind, |k| cfg.rotary(k))?;
        layers.push(post_norm_layer(w, &p, d, base.rms_norm_eps, attn)?);
    }
    Ok(Box::new(Decoder::plain("olmo3", base, w, layers, "silu")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A transformers 4 config (what the released checkpoints carry): `rope_theta` for both
    /// kinds, `rope_scaling` (yarn) for the global layers only; no `layer_types` (every fourth
    /// layer global) and no `sliding_window` (4,096).
    #[test]
    fn legacy_rope_scaling_reaches_the_global_layers_only() {
        let config = json!({"model_type": "olmo3", "vocab_size": 16, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 8, "num_attention_heads": 2,
            "max_position_embeddings": 65536, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "yarn", "factor": 8.0, "attention_factor": 1.2,
                             "original_max_position_embeddings": 8192}});
        let cfg = Olmo3Config::from_json(Path::new("config.json"), config).unwrap();
        let sliding = cfg.sliding().unwrap();
        let global: Vec<usize> = (0..8).filter(|&i| !sliding[i]).collect();
        assert_eq!(global, [3, 7]);
        assert_eq!(cfg.base.sliding_window, Some(DEFAULT_WINDOW));
        // Position 0's cosine is the attention factor: 1.2 on global layers, 1 on sliding ones.
        let (global_cos, _) = cfg.rotary("full_attention").unwrap().tables(1);
        let (local_cos, _) = cfg.rotary("sliding_attention").unwrap().tables(1);
        assert_eq!((global_cos[0], local_cos[0]), (1.2, 1.0));
        let plain =
            crate::rotary::Rotary::from_params(&json!({"rope_theta": 500000.0}), 4, 1).unwrap();
        let local = cfg.rotary("sliding_attention").unwrap();
        assert_eq!(local.inv_freq, plain.inv_freq);
    }

    /// An explicit `"sliding_window": null` with sliding layers is refused, naming the field.
    #[test]
    fn sliding_layers_without_a_window_are_refused() {
        let config = json!({"model_type": "olmo3", "vocab_size": 16, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2,
            "max_position_embeddings": 64, "sliding_window": null});
        let e = Olmo3Config::from_json(Path::new("config.json"), config).unwrap_err();
        assert!(e.to_string().contains("sliding_window"), "{e}");
    }
}
