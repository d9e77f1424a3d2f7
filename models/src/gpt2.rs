//! GPT-2 (pre-LayerNorm causal decoder, learned positions, tied unembedding), hookable with
//! TransformerLens names.
//!
//! Per block, with `x = blocks.{i}.hook_resid_pre`:
//! `q, k, v = split(LN1(x) · W_attn + b)`, `hook_z = causal_softmax(q kᵀ / √d_head) v`,
//! `hook_attn_out = hook_z · W_O + b`, `hook_resid_mid = x + hook_attn_out`,
//! `mlp.hook_post = act(LN2(hook_resid_mid) · W_fc + b)`, `hook_mlp_out = mlp.hook_post · W_proj + b`,
//! `hook_resid_post = hook_resid_mid + hook_mlp_out`; then `ln_final.hook_normalized = LN_f(x)`
//! and the logits `ln_final · W_teᵀ`. `hidden_states[i]` of `transformers` is
//! `blocks.{i}.hook_resid_pre` for i < n_layer, and its last entry is `ln_final.hook_normalized`.
//!
//! `forward` runs the shared fast path (`prenorm`, packed tokens); the candle-ops graph forward
//! here is the differentiable one and serves attention-pattern hooks. Padding is on the right,
//! so the causal mask already keeps real tokens from seeing it.

use crate::batch::TokenBatch;
use crate::hooks::{at, HookPoint, Hooks};
use crate::kernels::{Heads, WeightLayout};
use crate::layers::{Activation, LayerNorm};
use crate::model::{HookedModel, Input};
use crate::packed::Spare;
use crate::prenorm::{self, MlpIn, Norm, Proj, Qkv, Stack};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::{Tensor, D};
use glassbox_data::Modality;
use serde::Deserialize;
use std::path::Path;

fn default_act() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

/// The fields of a GPT-2 `config.json` this implementation uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_positions: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default)]
    /// A number, or a list whose first entry counts.
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// `false`: the logits come from the checkpoint's own `lm_head.weight` rather than `wte`.
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

impl Gpt2Config {
    pub fn from_json(path: &Path, value: serde_json::Value) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let cfg: Gpt2Config =
            serde_json::from_value(value).map_err(|e| bad(format!("not a GPT-2 config: {e}")))?;
        let (width, heads) = (("n_embd", cfg.n_embd), ("n_head", cfg.n_head));
        crate::config_ranges::heads_divide(width, heads).map_err(&bad)?;
        check_activation(&cfg.activation_function).map_err(bad)?;
        Ok(cfg)
    }

    fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

/// `Err` unless `activation_function` — the GPT-2-shaped families' name for it (GPT-2, GPT-Neo,
/// OPT), not `hidden_act` — is one glassbox runs.
pub(crate) fn check_activation(activation_function: &str) -> std::result::Result<(), String> {
    Activation::parse(activation_function)
        .map(|_| ())
        .map_err(|e| e.replacen("hidden_act", "activation_function", 1))
}

/// `y = x · W + b` with `W` stored `[in, out]` (GPT-2's Conv1D layout).
struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    fn load(w: &Weights, prefix: &str, input: usize, output: usize) -> Result<Self> {
        Ok(Self {
            weight: w.get(&format!("{prefix}.weight"), &[input, output])?,
            bias: w.get(&format!("{prefix}.bias"), &[output])?,
        })
    }
    fn fast(&self) -> Proj<'_> {
        Proj {
            weight: &self.weight,
            bias: Some(&self.bias),
            layout: WeightLayout::InOut,
        }
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b * t, d))?
            .matmul(&self.weight)?
            .broadcast_add(&self.bias)?
            .reshape((b, t, self.weight.dim(1)?))
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Conv1D,
    c_proj: Conv1D,
    ln_2: LayerNorm,
    c_fc: Conv1D,
    mlp_proj: Conv1D,
}

/// A hookable GPT-2.
pub struct Gpt2 {
    cfg: Gpt2Config,
    act: Activation,
    wte: Tensor,
    wpe: Tensor,
    /// `wte` itself unless the config unties the head; `None` for an untied checkpoint saved
    /// without its head (a base model).
    unembed: Option<Tensor>,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// The fast forward's buffers, kept between batches.
    spare: Spare,
    /// A sequence classifier's `score` head (`…ForSequenceClassification`).
    score: Option<crate::score_head::ScoreHead>,
    /// Per block, the sliding window of a local-attention layer (GPT-Neo); `None`: global.
    windows: Vec<Option<usize>>,
    /// `gpt2`, or a family built on GPT-2's blocks (`gpt_neo`).
    family: &'static str,
}

impl Gpt2 {
    pub fn load(cfg: Gpt2Config, w: &Weights) -> Result<Self> {
        let (d, inner, eps) = (cfg.n_embd, cfg.inner(), cfg.layer_norm_epsilon);
        let cfg_layers = cfg.n_layer;
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("h.{i}");
            blocks.push(Block {
                ln_1: LayerNorm::load(w, &format!("{p}.ln_1"), d, eps)?,
                c_attn: Conv1D::load(w, &format!("{p}.attn.c_attn"), d, 3 * d)?,
                c_proj: Conv1D::load(w, &format!("{p}.attn.c_proj"), d, d)?,
                ln_2: LayerNorm::load(w, &format!("{p}.ln_2"), d, eps)?,
                c_fc: Conv1D::load(w, &format!("{p}.mlp.c_fc"), d, inner)?,
                mlp_proj: Conv1D::load(w, &format!("{p}.mlp.c_proj"), inner, d)?,
            });
        }
        let wte = w.get("wte.weight", &[cfg.vocab_size, d])?;
        // An untied checkpoint saved without its head (a base model such as `GPT2Model`, as
        // `AutoModel` saves it) has no unembedding: hidden states only, no next-token logits.
        let unembed = if cfg.tie_word_embeddings {
            Some(wte.clone())
        } else {
            w.get_root("lm_head.weight", &[cfg.vocab_size, d])?
        };
        Ok(Self {
            act: Activation::parse(&cfg.activation_function).map_err(ModelError::Invalid)?,
            wte,
            unembed,
            wpe: w.get("wpe.weight", &[cfg.n_positions, d])?,
            ln_f: LayerNorm::load(w, "ln_f", d, eps)?,
            blocks,
            cfg,
            spare: Spare::default(),
            score: None,
            windows: vec![None; cfg_layers],
            family: "gpt2",
        })
    }

    /// The same blocks as another `family` (GPT-Neo, OPT), which names them in errors and runs.
    pub(crate) fn named(mut self, family: &'static str) -> Self {
        self.family = family;
        self
    }

    /// Layers that attend through per-layer sliding `windows` (`None`: global; GPT-Neo's).
    pub(crate) fn with_windows(mut self, windows: Vec<Option<usize>>) -> Result<Self> {
        if windows.len() != self.blocks.len() || windows.contains(&Some(0)) {
            return Err(ModelError::Invalid(format!(
                "{} per-layer windows for {} layers (each a positive width or global)",
                windows.len(),
                self.blocks.len()
            )));
        }
        self.windows = windows;
        Ok(self)
    }

    /// The attention scores' scale in block `i`.
    fn scale(&self, i: usize) -> f64 {
        let mut scale = 1.0;
        if self.cfg.scale_attn_weights {
            scale /= ((self.cfg.n_embd / self.cfg.n_head) as f64).sqrt();
        }
        if self.cfg.scale_attn_by_inverse_layer_idx {
            scale /= (i + 1) as f64;
        }
        scale
    }

    /// The weights as the shared fast decoder forward reads them.
    fn fast(&self) -> prenorm::Decoder<'_> {
        prenorm::Decoder {
            embed: &self.wte,
            positions: Some(&self.wpe),
            stack: Stack {
                blocks: self
                    .blocks
                    .iter()
                    .enumerate()
                    .map(|(i, b)| prenorm::Block {
                        norm1: Norm::Layer(&b.ln_1),
                        qkv: Qkv::Fused(b.c_attn.fast()),
                        out: b.c_proj.fast(),
                        norm2: Norm::Layer(&b.ln_2),
                        mlp_in: MlpIn::Plain(b.c_fc.fast()),
                        down: b.mlp_proj.fast(),
                        parallel: false,
                        scale: self.scale(i) as f32,
                        window: self.windows[i],
                    })
                    .collect(),
                heads: Heads {
                    heads: self.cfg.n_head,
                    kv_heads: self.cfg.n_head,
                    dim: self.cfg.n_embd / self.cfg.n_head,
                    causal: true,
                    scale: self.scale(0) as f32,
                    softcap: None,
                    window: None,
                },
                act: self.act.kernel(),
                inner: self.cfg.inner(),
                rotary: None,
            },
            final_norm: Norm::Layer(&self.ln_f),
            unembed: self.unembed.as_ref(),
        }
    }

    fn check_length(&self, batch: &TokenBatch) -> Result<()> {
        crate::layers::check_positions(batch, self.cfg.n_positions, "n_positions")
    }

    fn embed(&self, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let (b, t) = batch.input_ids.dims2()?;
        let d = self.cfg.n_embd;
        let tokens = at(
            hooks,
            HookPoint::Embed,
            crate::layers::embed(&self.wte, batch)?,
        )?;
        let positions = self
            .wpe
            .narrow(0, 0, t)?
            .unsqueeze(0)?
            .broadcast_as((b, t, d))?;
        let positions = at(hooks, HookPoint::PosEmbed, positions)?;
        Ok(tokens.add(&positions)?)
    }

    fn block(&self, i: usize, x: Tensor, mask: &Tensor, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let blk = &self.blocks[i];
        let (b, t, d) = x.dims3()?;
        let heads = self.cfg.n_head;
        let head_dim = d / heads;
        let x = at(hooks, HookPoint::ResidPre(i), x)?;
        let qkv = blk.c_attn.forward(&blk.ln_1.forward(&x)?)?;
        let q = at(
            hooks,
            HookPoint::AttnQ(i),
            qkv.narrow(D::Minus1, 0, d)?.contiguous()?,
        )?;
        let k = at(
            hooks,
            HookPoint::AttnK(i),
            qkv.narrow(D::Minus1, d, d)?.contiguous()?,
        )?;
        let v = at(
            hooks,
            HookPoint::AttnV(i),
            qkv.narrow(D::Minus1, 2 * d, d)?.contiguous()?,
        )?;
        let split = |m: &Tensor| -> candle_core::Result<Tensor> {
            m.reshape((b, t, heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(&q)?, split(&k)?, split(&v)?);
        let z = crate::layers::attention(&q, &k, &v, mask, self.scale(i), hooks, i)?;
        let z = at(hooks, HookPoint::AttnZ(i), z)?;
        let attn_out = at(hooks, HookPoint::AttnOut(i), blk.c_proj.forward(&z)?)?;
        let mid = at(hooks, HookPoint::ResidMid(i), x.add(&attn_out)?)?;
        let neurons = self
            .act
            .apply(&blk.c_fc.forward(&blk.ln_2.forward(&mid)?)?)?;
        let neurons = at(hooks, HookPoint::MlpPost(i), neurons)?;
        let mlp_out = at(hooks, HookPoint::MlpOut(i), blk.mlp_proj.forward(&neurons)?)?;
        Ok(at(hooks, HookPoint::ResidPost(i), mid.add(&mlp_out)?)?)
    }

    fn run_from(
        &self,
        batch: &TokenBatch,
        first: usize,
        mut x: Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        self.check_length(batch)?;
        // One causal mask per distinct window (GPT-Neo: global and local).
        let mut masks: Vec<(Option<usize>, Tensor)> = Vec::new();
        for &window in &self.windows[first..] {
            if !masks.iter().any(|(w, _)| *w == window) {
                masks.push((window, crate::layers::windowed_causal_mask(batch, window)?));
            }
        }
        for i in first..self.blocks.len() {
            let mask = masks
                .iter()
                .find(|(w, _)| *w == self.windows[i])
                .map(|(_, m)| m)
                .expect("a mask per window");
            x = self.block(i, x, mask, hooks)?;
            if hooks.satisfied() {
                return Ok(x);
            }
        }
        crate::layers::final_hooks(hooks, self.ln_f.forward(&x)?, self.unembed.as_ref())
    }
}

impl prenorm::FastDecoder for Gpt2 {
    fn parts(&self) -> (prenorm::Decoder<'_>, &Spare) {
        (self.fast(), &self.spare)
    }
    fn fits(&self, batch: &TokenBatch) -> Result<()> {
        self.check_length(batch)
    }
}

impl HookedModel for Gpt2 {
    crate::score_head::score_head_methods!();

    fn family(&self) -> &'static str {
        self.family
    }
    fn modality(&self) -> Modality {
        Modality::Text
    }
    fn hook_points(&self) -> Vec<HookPoint> {
        let mut v = vec![HookPoint::Embed, HookPoint::PosEmbed];
        for i in 0..self.cfg.n_layer {
            v.extend(HookPoint::decoder_block(i));
        }
        v.push(HookPoint::LnFinal);
        v.push(HookPoint::Logits);
        crate::score_head::hooks_of(v, self.unembedding().is_some())
    }
    fn hook_width(&self, point: HookPoint) -> usize {
        match point {
            HookPoint::MlpPost(_) => self.cfg.inner(),
            HookPoint::AttnPattern(_) => self.cfg.n_head * self.cfg.n_positions,
            HookPoint::Logits => self.cfg.vocab_size,
            _ => self.cfg.n_embd,
        }
    }
    fn max_positions(&self) -> Option<usize> {
        Some(self.cfg.n_positions)
    }
    fn attention_heads(&self) -> Option<usize> {
        Some(self.cfg.n_head)
    }
    fn vocab_size(&self) -> Option<usize> {
        Some(self.cfg.vocab_size)
    }
    fn forward(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let batch = input.tokens(self.family())?;
        // Before the embedding: the position table has only n_positions rows.
        self.check_length(batch)?;
        if prenorm::usable(self.wte.device(), self.blocks.len(), hooks) {
            return prenorm::forward(&self.fast(), batch, hooks, &self.spare);
        }
        let x = self.embed(batch, hooks)?;
        self.run_from(batch, 0, x, hooks)
    }
    prenorm::fast_decoder_methods!();
    fn forward_differentiable(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let batch = input.tokens(self.family())?;
        self.check_length(batch)?;
        let x = self.embed(batch, hooks)?;
        self.run_from(batch, 0, x, hooks)
    }
    fn forward_differentiable_from(
        &self,
        batch: &TokenBatch,
        block: usize,
        resid_pre: Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        self.run_from(batch, block, resid_pre, hooks)
    }
    fn final_norm(&self, residual: &Tensor) -> Option<Result<Tensor>> {
        Some(self.ln_f.forward(residual).map_err(Into::into))
    }
    fn final_norm_parts(&self) -> Option<crate::model::FinalNorm<'_>> {
        Some(crate::model::FinalNorm::Layer {
            weight: &self.ln_f.weight,
            bias: &self.ln_f.bias,
            eps: self.ln_f.eps as f64,
        })
    }
    fn unembedding(&self) -> Option<&Tensor> {
        // A sequence classifier has no language-model head (its `score` head is the output).
        self.unembed.as_ref().filter(|_| self.score.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_activation_is_named_by_gpt2s_own_field() {
        let config = serde_json::json!({
            "vocab_size": 8, "n_embd": 4, "n_layer": 1, "n_head": 2, "n_positions": 8,
            "activation_function": "tanh"
        });
        let e = Gpt2Config::from_json(Path::new("config.json"), config)
            .unwrap_err()
            .to_string();
        assert!(e.contains("activation_function `tanh`"), "{e}");
    }
}
