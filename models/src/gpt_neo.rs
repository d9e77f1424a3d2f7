//! GPT-Neo (EleutherAI's `GPTNeoForCausalLM`; the TinyStories models) on GPT-2's blocks, mirroring
//! `transformers/models/gpt_neo/modeling_gpt_neo.py`. The block is GPT-2's — pre-LayerNorm,
//! learned positions, GELU MLP, tied unembedding — with three differences:
//! - attention scores are **not** scaled by `1/√d_head` (`GPTNeoSelfAttention._attn`);
//! - `attention_types` (e.g. `[[["global", "local"], 12]]`) makes layers alternate between global
//!   causal attention and `local` attention over a sliding window: query `p` sees keys `k` with
//!   `p − k < window_size` (the `bias ^ tril(bias, −window_size)` mask);
//! - bias-free `q_proj`/`k_proj`/`v_proj` and `out_proj`, `c_fc`, `c_proj` as `nn.Linear`
//!   (`[out, in]`), which load into GPT-2's fused Conv1D layout (`c_attn = [q | k | v]`,
//!   `[in, out]`, a zero bias), so every GPT-2 path — fast and differentiable forwards,
//!   patching's prefix reuse, attributions — runs GPT-Neo unchanged.
//!
//! Hook names are GPT-2's (TransformerLens's for GPT-Neo); `family()` is `gpt_neo`.

use crate::gpt2::{Gpt2, Gpt2Config};
use crate::gpt2_layout::Gpt2Layout;
use crate::weights::Weights;
use crate::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

fn default_act() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_window() -> usize {
    256
}
fn yes() -> bool {
    true
}

/// The fields of a GPT-Neo `config.json` this implementation reads.
#[derive(Debug, Clone, Deserialize)]
pub struct GptNeoConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub max_position_embeddings: usize,
    /// `None`: 4 × hidden.
    #[serde(default)]
    pub intermediate_size: Option<usize>,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `[[["global", "local"], 12]]`: a pattern of layer kinds and how often it repeats.
    pub attention_types: serde_json::Value,
    #[serde(default = "default_window")]
    pub window_size: usize,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

impl GptNeoConfig {
    pub fn from_json(path: &Path, value: serde_json::Value) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let cfg: GptNeoConfig =
            serde_json::from_value(value).map_err(|e| bad(format!("not a GPT-Neo config: {e}")))?;
        let (width, heads) = (
            ("hidden_size", cfg.hidden_size),
            ("num_heads", cfg.num_heads),
        );
        crate::config_ranges::heads_divide(width, heads).map_err(bad)?;
        crate::gpt2::check_activation(&cfg.activation_function).map_err(bad)?;
        if cfg.window_size == 0 {
            return Err(bad("window_size must be positive".into()));
        }
        cfg.windows().map_err(bad)?;
        Ok(cfg)
    }

    /// Per layer, the local layers' window (`None` for global ones), from `attention_types`.
    pub fn windows(&self) -> std::result::Result<Vec<Option<usize>>, String> {
        let shape =
            "attention_types must be a list of [[kind, …], repeats] (kinds `global` or `local`)";
        let groups = self.attention_types.as_array().ok_or(shape)?;
        let mut windows = Vec::new();
        for group in groups {
            let (kinds, repeats) = match group.as_array().map(Vec::as_slice) {
                Some([kinds, repeats]) => (
                    kinds.as_array().ok_or(shape)?,
                    repeats.as_u64().ok_or(shape)?,
                ),
                _ => return Err(shape.into()),
            };
            for _ in 0..repeats {
                for kind in kinds {
                    windows.push(match kind.as_str() {
                        Some("global") => None,
                        Some("local") => Some(self.window_size),
                        _ => return Err(format!("{shape}; found {kind}")),
                    });
                }
            }
        }
        if windows.len() != self.num_layers {
            return Err(format!(
                "attention_types names {} layers but num_layers is {}",
                windows.len(),
                self.num_layers
            ));
        }
        Ok(windows)
    }

    /// GPT-2's config of the same blocks (unscaled scores).
    fn as_gpt2(&self) -> Gpt2Config {
        Gpt2Config {
            vocab_size: self.vocab_size,
            n_embd: self.hidden_size,
            n_layer: self.num_layers,
            n_head: self.num_heads,
            n_positions: self.max_position_embeddings,
            n_inner: self.intermediate_size,
            activation_function: self.activation_function.clone(),
            layer_norm_epsilon: self.layer_norm_epsilon,
            eos_token_id: self.eos_token_id.clone(),
            scale_attn_weights: false,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: self.tie_word_embeddings,
        }
    }
}

/// A GPT-Neo checkpoint (under its `transformer.` prefix, detected by the registry) as a
/// hookable model on GPT-2's blocks.
pub fn load(cfg: GptNeoConfig, w: &Weights) -> Result<Gpt2> {
    let windows = cfg.windows().map_err(ModelError::Invalid)?;
    let (d, inner) = (
        cfg.hidden_size,
        cfg.intermediate_size.unwrap_or(4 * cfg.hidden_size),
    );
    let mut layout = Gpt2Layout::default();
    layout.copy(w, "wte.weight", "wte.weight", &[cfg.vocab_size, d])?;
    layout.copy(
        w,
        "wpe.weight",
        "wpe.weight",
        &[cfg.max_position_embeddings, d],
    )?;
    layout.layer_norm(w, "ln_f", "ln_f", d, true)?;
    for i in 0..cfg.num_layers {
        let (p, a) = (format!("h.{i}"), format!("h.{i}.attn.attention"));
        for ln in ["ln_1", "ln_2"] {
            layout.layer_norm(w, &format!("{p}.{ln}"), &format!("{p}.{ln}"), d, true)?;
        }
        let qkv = ["q_proj", "k_proj", "v_proj"].map(|m| format!("{a}.{m}"));
        let qkv = [qkv[0].as_str(), qkv[1].as_str(), qkv[2].as_str()];
        layout.fused_qkv(w, qkv, &format!("{p}.attn.c_attn"), d, false)?;
        let to = format!("{p}.attn.c_proj");
        layout.linear(w, (&format!("{a}.out_proj"), &to), (d, d), true)?;
        let fc = format!("{p}.mlp.c_fc");
        layout.linear(w, (&fc, &fc), (d, inner), true)?;
        let proj = format!("{p}.mlp.c_proj");
        layout.linear(w, (&proj, &proj), (inner, d), true)?;
    }
    layout.head(w, &[cfg.vocab_size, d])?;
    Gpt2::load(cfg.as_gpt2(), &layout.into_weights(w.path()))?
        .named("gpt_neo")
        .with_windows(windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(types: serde_json::Value, layers: usize) -> serde_json::Value {
        serde_json::json!({
            "vocab_size": 8, "hidden_size": 4, "num_layers": layers, "num_heads": 2,
            "max_position_embeddings": 16, "attention_types": types, "window_size": 3
        })
    }

    #[test]
    fn attention_types_expand_to_one_window_per_layer() {
        let cfg = GptNeoConfig::from_json(
            Path::new("config.json"),
            config(
                serde_json::json!([[["global", "local"], 2], [["local"], 1]]),
                5,
            ),
        )
        .unwrap();
        assert_eq!(
            cfg.windows().unwrap(),
            [None, Some(3), None, Some(3), Some(3)]
        );
    }

    #[test]
    fn an_unsupported_activation_is_named_by_its_field() {
        let mut value = config(serde_json::json!([[["global"], 1]]), 1);
        value["activation_function"] = "tanh".into();
        let e = GptNeoConfig::from_json(Path::new("config.json"), value)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("activation_function `tanh`") && e.contains("config.json"),
            "{e}"
        );
    }

    #[test]
    fn malformed_attention_types_are_named() {
        for (types, layers, says) in [
            (
                serde_json::json!([[["global", "local"], 2]]),
                3,
                "names 4 layers",
            ),
            (serde_json::json!([[["global", "sparse"], 1]]), 2, "sparse"),
            (serde_json::json!("global"), 1, "attention_types must be"),
        ] {
            let e = GptNeoConfig::from_json(Path::new("config.json"), config(types, layers))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
