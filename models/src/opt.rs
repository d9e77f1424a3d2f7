//! OPT (Meta's `OPTForCausalLM`, 125M–66B) on GPT-2's blocks, mirroring
//! `transformers/models/opt/modeling_opt.py`. With `do_layer_norm_before` (every size but 350M)
//! the block is GPT-2's — pre-LayerNorm, learned positions, an MLP of `ffn_dim` (ReLU), a final
//! LayerNorm, tied unembedding — and the differences are layouts:
//! - the position table has two extra leading rows (`OPTLearnedPositionalEmbedding.offset`):
//!   token `p` of a right-padded text reads row `p + 2`, so rows `2..` are GPT-2's `wpe`;
//! - separate q/k/v projections (queries scaled by `head_dim^-½` after their bias, as GPT-2
//!   scales the scores) and `nn.Linear` layouts, folded into GPT-2's fused Conv1D layout;
//! - `enable_bias: false` and `layer_norm_elementwise_affine: false` become zero biases and unit
//!   scales.
//!
//! OPT-350M's post-LayerNorm blocks and its `project_in`/`project_out` (word embeddings
//! narrower than the stream) are refused by name. Hook names are GPT-2's; `family()` is `opt`.

use crate::gpt2::{Gpt2, Gpt2Config};
use crate::gpt2_layout::Gpt2Layout;
use crate::weights::Weights;
use crate::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

fn default_act() -> String {
    "relu".into()
}
fn yes() -> bool {
    true
}

/// The fields of an OPT `config.json` this implementation reads.
#[derive(Debug, Clone, Deserialize)]
pub struct OptConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub ffn_dim: usize,
    pub max_position_embeddings: usize,
    /// The embeddings' width; `None`: `hidden_size`.
    #[serde(default)]
    pub word_embed_proj_dim: Option<usize>,
    #[serde(default = "yes")]
    pub do_layer_norm_before: bool,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "yes")]
    pub enable_bias: bool,
    #[serde(default = "yes")]
    pub layer_norm_elementwise_affine: bool,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

impl OptConfig {
    pub fn from_json(path: &Path, value: serde_json::Value) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let cfg: OptConfig =
            serde_json::from_value(value).map_err(|e| bad(format!("not an OPT config: {e}")))?;
        let d = cfg.hidden_size;
        let heads = ("num_attention_heads", cfg.num_attention_heads);
        crate::config_ranges::heads_divide(("hidden_size", d), heads).map_err(bad)?;
        if !cfg.do_layer_norm_before {
            return Err(bad(
                "do_layer_norm_before: false (OPT-350M's post-LayerNorm blocks) is not supported; the other OPT sizes are pre-LayerNorm".into(),
            ));
        }
        if cfg.word_embed_proj_dim.is_some_and(|w| w != d) {
            return Err(bad(format!(
                "word_embed_proj_dim {} differs from hidden_size {d} (OPT-350M's project_in/project_out) and is not supported",
                cfg.word_embed_proj_dim.unwrap_or(d)
            )));
        }
        crate::gpt2::check_activation(&cfg.activation_function).map_err(bad)?;
        Ok(cfg)
    }

    /// The padding token: `pad_token_id`, else end-of-text.
    pub fn pad_id(&self) -> u32 {
        self.pad_token_id
            .or(crate::decoder::config::token_id(&self.eos_token_id))
            .unwrap_or(0)
    }

    /// GPT-2's config of the same blocks (scores scaled by `head_dim^-½`).
    fn as_gpt2(&self) -> Gpt2Config {
        Gpt2Config {
            vocab_size: self.vocab_size,
            n_embd: self.hidden_size,
            n_layer: self.num_hidden_layers,
            n_head: self.num_attention_heads,
            n_positions: self.max_position_embeddings,
            n_inner: Some(self.ffn_dim),
            activation_function: self.activation_function.clone(),
            layer_norm_epsilon: 1e-5,
            eos_token_id: self.eos_token_id.clone(),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: self.tie_word_embeddings,
        }
    }
}

/// An OPT checkpoint (the decoder's tensors under `model.decoder.` or `decoder.`, detected by the
/// registry) as a hookable model on GPT-2's blocks.
pub fn load(cfg: OptConfig, w: &Weights) -> Result<Gpt2> {
    let (d, inner, biased) = (cfg.hidden_size, cfg.ffn_dim, cfg.enable_bias);
    let affine = cfg.layer_norm_elementwise_affine;
    let mut layout = Gpt2Layout::default();
    layout.copy(w, "embed_tokens.weight", "wte.weight", &[cfg.vocab_size, d])?;
    let positions = ("embed_positions.weight", "wpe.weight");
    layout.rows_from(w, positions, 2, (cfg.max_position_embeddings, d))?;
    layout.layer_norm(w, "final_layer_norm", "ln_f", d, affine)?;
    for i in 0..cfg.num_hidden_layers {
        let (p, h) = (format!("layers.{i}"), format!("h.{i}"));
        let attn_norm = format!("{p}.self_attn_layer_norm");
        layout.layer_norm(w, &attn_norm, &format!("{h}.ln_1"), d, affine)?;
        let mlp_norm = format!("{p}.final_layer_norm");
        layout.layer_norm(w, &mlp_norm, &format!("{h}.ln_2"), d, affine)?;
        let qkv = ["q_proj", "k_proj", "v_proj"].map(|m| format!("{p}.self_attn.{m}"));
        let qkv = [qkv[0].as_str(), qkv[1].as_str(), qkv[2].as_str()];
        layout.fused_qkv(w, qkv, &format!("{h}.attn.c_attn"), d, biased)?;
        let out = (
            format!("{p}.self_attn.out_proj"),
            format!("{h}.attn.c_proj"),
        );
        layout.linear(w, (&out.0, &out.1), (d, d), biased)?;
        let fc1 = (format!("{p}.fc1"), format!("{h}.mlp.c_fc"));
        layout.linear(w, (&fc1.0, &fc1.1), (d, inner), biased)?;
        let fc2 = (format!("{p}.fc2"), format!("{h}.mlp.c_proj"));
        layout.linear(w, (&fc2.0, &fc2.1), (inner, d), biased)?;
    }
    layout.head(w, &[cfg.vocab_size, d])?;
    Ok(Gpt2::load(cfg.as_gpt2(), &layout.into_weights(w.path()))?.named("opt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_350m_shapes_are_refused_by_name() {
        let base = serde_json::json!({
            "vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2,
            "ffn_dim": 8, "max_position_embeddings": 16
        });
        for (field, value, says) in [
            (
                "do_layer_norm_before",
                serde_json::json!(false),
                "post-LayerNorm",
            ),
            ("word_embed_proj_dim", serde_json::json!(2), "project_in"),
        ] {
            let mut config = base.clone();
            config[field] = value;
            let e = OptConfig::from_json(Path::new("config.json"), config)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
        OptConfig::from_json(Path::new("config.json"), base).unwrap();
    }
}
