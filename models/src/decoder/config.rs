//! The `config.json` fields the decoder families share, as `transformers` 5 writes them (and as
//! checkpoints on the Hub written by `transformers` 4 still spell them: `rope_theta` and
//! `rope_scaling` instead of `rope_parameters`, no `layer_types`).

use super::parts::{sliding_layers, Dims};
use crate::rotary::Rotary;
use serde::Deserialize;
use serde_json::{Map, Value};

fn default_eps() -> f64 {
    1e-6
}

/// Fields every family here reads; each family's config flattens this in.
#[derive(Debug, Clone, Deserialize)]
pub struct DecoderConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Llama-style name of the MLP activation.
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// Gemma's name for it.
    #[serde(default)]
    pub hidden_activation: Option<String>,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub eos_token_id: Option<Value>,
    #[serde(default)]
    pub pad_token_id: Option<Value>,
    #[serde(default)]
    pub rope_parameters: Option<Value>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<Value>,
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

/// Reads a family's `config.json` (`what` names the family in errors) and runs `check` on it,
/// every error naming the file.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    value: Value,
    what: &str,
    check: impl FnOnce(&T) -> std::result::Result<(), String>,
) -> crate::Result<T> {
    let bad = |message: String| crate::ModelError::Config {
        path: path.to_path_buf(),
        message,
    };
    let cfg: T =
        serde_json::from_value(value).map_err(|e| bad(format!("not a {what} config: {e}")))?;
    check(&cfg).map_err(bad)?;
    Ok(cfg)
}

impl DecoderConfig {
    /// The checks every family shares: sizes, the activation (`default_act` when unnamed) and
    /// the global layers' rotary.
    pub(crate) fn check(&self, default_act: &str) -> std::result::Result<(), String> {
        self.dims()?;
        crate::layers::Activation::parse(self.activation(default_act))?;
        self.rotary("full_attention", 10_000.0, None)?;
        Ok(())
    }

    /// Sizes, checked.
    pub(crate) fn dims(&self) -> std::result::Result<Dims, String> {
        let heads = self.num_attention_heads;
        Dims {
            vocab: self.vocab_size,
            hidden: self.hidden_size,
            inner: self.intermediate_size,
            heads,
            kv_heads: self.num_key_value_heads.unwrap_or(heads),
            head_dim: self.head_dim.unwrap_or(self.hidden_size / heads.max(1)),
            max_positions: self.max_position_embeddings,
        }
        .check()
    }

    /// The padding id: `pad_token_id`, else the (first) end-of-sequence id, else 0.
    pub fn pad_id(&self) -> u32 {
        token_id(&self.pad_token_id)
            .or(token_id(&self.eos_token_id))
            .unwrap_or(0)
    }

    /// The MLP activation's name (`hidden_activation` first, as Gemma prefers it), or `default`.
    pub(crate) fn activation<'a>(&'a self, default: &'a str) -> &'a str {
        self.hidden_activation
            .as_deref()
            .or(self.hidden_act.as_deref())
            .unwrap_or(default)
    }

    /// Which layers slide: `layer_types` when present, else `fallback(i)`.
    pub(crate) fn sliding(
        &self,
        fallback: impl Fn(usize) -> bool,
    ) -> std::result::Result<Vec<bool>, String> {
        let layers = self.num_hidden_layers;
        let sliding = match &self.layer_types {
            Some(types) => sliding_layers(types, layers)?,
            None => (0..layers).map(fallback).collect(),
        };
        if sliding.iter().any(|s| *s) && self.sliding_window.is_none_or(|w| w == 0) {
            return Err("sliding_attention layers need a positive sliding_window".into());
        }
        Ok(sliding)
    }

    /// Rotary frequencies for layers of `kind` (`full_attention`, `sliding_attention`):
    /// `rope_parameters` keyed by layer kind (Gemma-3) or shared; else the transformers-4
    /// fields, `local_theta` standing in for the base of sliding layers where the family has
    /// one (Gemma-3's `rope_local_base_freq`).
    pub(crate) fn rotary(
        &self,
        kind: &str,
        default_theta: f64,
        local_theta: Option<f64>,
    ) -> std::result::Result<Rotary, String> {
        let mut params: Map<String, Value> = match &self.rope_parameters {
            Some(Value::Object(p)) if p.contains_key(kind) => match &p[kind] {
                Value::Object(per_kind) => per_kind.clone(),
                _ => return Err(format!("rope_parameters.{kind} is not an object")),
            },
            Some(Value::Object(p)) => p.clone(),
            Some(_) => return Err("rope_parameters is not an object".into()),
            None => {
                let local = kind == "sliding_attention" && local_theta.is_some();
                let mut p = match (&self.rope_scaling, local) {
                    (Some(Value::Object(s)), false) => s.clone(),
                    _ => Map::new(),
                };
                let theta = match local_theta.filter(|_| local) {
                    Some(t) => t,
                    None => self.rope_theta.unwrap_or(default_theta),
                };
                p.insert("rope_theta".into(), Value::from(theta));
                p
            }
        };
        params
            .entry("rope_theta")
            .or_insert(Value::from(default_theta));
        if let Some(f) = self.partial_rotary_factor {
            params
                .entry("partial_rotary_factor")
                .or_insert(Value::from(f));
        }
        if let Some(o) = self.original_max_position_embeddings {
            params
                .entry("original_max_position_embeddings")
                .or_insert(Value::from(o));
        }
        let dims = self.dims()?;
        Rotary::from_params(&Value::Object(params), dims.head_dim, dims.max_positions)
    }
}

/// A token id as configs write it: a number, or a list whose first entry counts (Llama 3's
/// `eos_token_id: [128001, 128008, 128009]`); `None` for null or absent.
pub(crate) fn token_id(v: &Option<Value>) -> Option<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as u32),
        Some(Value::Array(a)) => a.first().and_then(Value::as_u64).map(|n| n as u32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::token_id;
    use serde_json::json;

    #[test]
    fn token_ids_are_numbers_or_the_first_of_a_list() {
        assert_eq!(token_id(&Some(json!(2))), Some(2));
        assert_eq!(token_id(&Some(json!([128001, 128008]))), Some(128001));
        assert_eq!(token_id(&Some(json!(null))), None);
        assert_eq!(token_id(&None), None);
    }

    /// GPT-2 and GPT-NeoX configs may list several end-of-sequence ids too.
    #[test]
    fn gpt2_and_neox_configs_accept_a_list_of_eos_ids() {
        let path = std::path::Path::new("config.json");
        let gpt2 = json!({"vocab_size": 8, "n_embd": 4, "n_layer": 1, "n_head": 2,
                          "n_positions": 8, "eos_token_id": [3, 5]});
        let cfg = crate::gpt2::Gpt2Config::from_json(path, gpt2).unwrap();
        assert_eq!(token_id(&cfg.eos_token_id), Some(3));
        let neox = json!({"vocab_size": 8, "hidden_size": 4, "intermediate_size": 8,
                          "num_hidden_layers": 1, "num_attention_heads": 2,
                          "max_position_embeddings": 8, "eos_token_id": [0, 1]});
        let cfg = crate::neox::NeoxConfig::from_json(path, neox).unwrap();
        assert_eq!(token_id(&cfg.eos_token_id), Some(0));
    }
}
