//! Gemma-3's text decoder (`model_type` `gemma3_text`, and the language model inside a `gemma3`
//! image–text checkpoint), mirroring `transformers/models/gemma3/modeling_gemma3.py`: Gemma-2's
//! block (see [`crate::gemma2`]) plus RMSNorm `(1 + w)` on each query and key head before
//! rotary (`Gemma3Attention.q_norm`/`k_norm`), local layers rotating with their own base
//! (`rope_parameters.sliding_attention`, or `rope_local_base_freq` in `transformers` 4
//! configs) and global ones with theirs (and any scaling), five local layers per global one
//! unless `layer_types` says otherwise, and no soft-capping of attention scores (final logits
//! are capped where the config says so).

use crate::decoder::config::DecoderConfig;
use crate::decoder::Attention;
use crate::gemma2::{gemma_decoder, gemma_layer};
use crate::layers::Activation;
use crate::weights::Weights;
use crate::{ModelError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

fn default_query_pre_attn_scalar() -> f64 {
    256.0
}
fn default_pattern() -> usize {
    6
}

/// A Gemma-3 text `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Gemma3Config {
    #[serde(flatten)]
    pub base: DecoderConfig,
    #[serde(default = "default_query_pre_attn_scalar")]
    pub query_pre_attn_scalar: f64,
    /// Read but not applied: `Gemma3Attention` stores it and never passes it to the attention
    /// function (`transformers` 5.25, the fixtures' version), so a config that sets it runs uncapped there,
    /// and here too, to stay the same forward.
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    /// `transformers` 4: the base of the local layers' rotary.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// `transformers` 4: every `sliding_window_pattern`-th layer is global.
    #[serde(default = "default_pattern")]
    pub sliding_window_pattern: usize,
}

impl Gemma3Config {
    /// Reads a `gemma3_text` config, or the `text_config` of a `gemma3` image–text one.
    pub fn from_json(path: &Path, value: Value) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let value = match value.get("model_type").and_then(Value::as_str) {
            Some("gemma3") => value
                .get("text_config")
                .cloned()
                .ok_or_else(|| bad("a gemma3 config without text_config".into()))?,
            _ => value,
        };
        let mut value = value;
        if let Value::Object(m) = &mut value {
            m.entry("model_type").or_insert("gemma3_text".into());
        }
        let cfg: Gemma3Config = serde_json::from_value(value)
            .map_err(|e| bad(format!("not a Gemma-3 text config: {e}")))?;
        cfg.check().map_err(bad)?;
        Ok(cfg)
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.base.dims()?;
        Activation::parse(self.base.activation("gelu_pytorch_tanh"))?;
        if self.sliding_window_pattern == 0 {
            return Err("sliding_window_pattern must be positive".into());
        }
        crate::gemma2::check_attention_scalars(
            self.query_pre_attn_scalar,
            self.attn_logit_softcapping,
            self.final_logit_softcapping,
        )?;
        self.sliding()?;
        for kind in ["full_attention", "sliding_attention"] {
            self.rotary(kind)?;
        }
        Ok(())
    }

    fn sliding(&self) -> std::result::Result<Vec<bool>, String> {
        let pattern = self.sliding_window_pattern;
        self.base.sliding(|i| !(i + 1).is_multiple_of(pattern))
    }

    fn rotary(&self, kind: &str) -> std::result::Result<crate::rotary::Rotary, String> {
        let default = if kind == "sliding_attention" {
            10_000.0
        } else {
            1_000_000.0
        };
        self.base.rotary(
            kind,
            default,
            Some(self.rope_local_base_freq.unwrap_or(10_000.0)),
        )
    }
}

/// Loads a Gemma-3 text decoder (names relative to `model.` or `model.language_model.`).
pub fn load(cfg: Gemma3Config, w: &Weights) -> Result<Box<dyn crate::model::HookedModel>> {
    let base = &cfg.base;
    let d = base.dims().map_err(ModelError::Invalid)?;
    let eps = base.rms_norm_eps;
    let sliding = cfg.sliding().map_err(ModelError::Invalid)?;
    let mut layers = Vec::with_capacity(base.num_hidden_layers);
    for (i, slides) in sliding.into_iter().enumerate() {
        let p = format!("layers.{i}");
        let kind = (slides, base.sliding_window);
        let mut attn =
            Attention::of_kind(w, &format!("{p}.self_attn"), d, kind, |k| cfg.rotary(k))?;
        attn.load_head_norms(w, &format!("{p}.self_attn"), d.head_dim, eps, true)?;
        layers.push(gemma_layer(w, &p, d, eps, attn)?);
    }
    Ok(Box::new(gemma_decoder(
        "gemma3_text",
        base,
        w,
        layers,
        cfg.query_pre_attn_scalar,
        (None, cfg.final_logit_softcapping),
    )?))
}
