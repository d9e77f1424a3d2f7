//! GPT-NeoX decoders (Pythia): pre-LayerNorm blocks whose attention and MLP read the same
//! residual stream in parallel (`use_parallel_residual`, or one after the other), fused per-head
//! query/key/value projections, rotary positions over the first `rotary_pct` of each head, and
//! an untied unembedding — hookable with TransformerLens names.
//!
//! Per block, with `x = blocks.{i}.hook_resid_pre`: `hook_q/k/v` are the per-head projections of
//! `LN1(x)` (heads flattened, before rotary), `hook_z` the attention output per head,
//! `hook_attn_out = hook_z · W_O + b`; in parallel `mlp.hook_post = gelu(LN2(x) W_in + b)` and
//! `hook_mlp_out = mlp.hook_post · W_out + b`; `hook_resid_post = x + hook_attn_out +
//! hook_mlp_out`. Sequential blocks (`use_parallel_residual = false`) have
//! `hook_resid_mid = x + hook_attn_out`, and their MLP reads `LN2(hook_resid_mid)`.
//!
//! `forward` runs the shared fast path (`prenorm`, packed tokens); the candle-ops graph forward
//! here is the differentiable one and serves attention-pattern hooks.

use crate::batch::TokenBatch;
use crate::hooks::{at, HookPoint, Hooks};
use crate::kernels::{Heads, WeightLayout};
use crate::layers::{Activation, LayerNorm, Rotary};
use crate::model::{HookedModel, Input};
use crate::packed::Spare;
use crate::prenorm::{self, MlpIn, Norm, Proj, Qkv, Stack};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::{Tensor, D};
use glassbox_data::Modality;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

/// The fields of a GPT-NeoX `config.json` this implementation uses.
#[derive(Debug, Clone, Deserialize)]
pub struct NeoxConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "yes")]
    pub use_parallel_residual: bool,
    /// Whether the attention's `query_key_value` and `dense` projections have biases (the MLP's
    /// always do), as `GPTNeoXAttention` builds them.
    #[serde(default = "yes")]
    pub attention_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    /// A number, or a list whose first entry counts.
    pub eos_token_id: Option<serde_json::Value>,
    /// transformers ≥ 5.
    #[serde(default)]
    pub rope_parameters: Option<Value>,
    /// transformers 4 (Pythia's own configs).
    #[serde(default)]
    pub rotary_pct: Option<f64>,
    #[serde(default)]
    pub rotary_emb_base: Option<f64>,
}

impl NeoxConfig {
    pub fn from_json(path: &Path, value: Value) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let cfg: NeoxConfig = serde_json::from_value(value)
            .map_err(|e| bad(format!("not a GPT-NeoX config: {e}")))?;
        let heads = ("num_attention_heads", cfg.num_attention_heads);
        crate::config_ranges::heads_divide(("hidden_size", cfg.hidden_size), heads)
            .map_err(&bad)?;
        Activation::parse(&cfg.hidden_act).map_err(&bad)?;
        cfg.rotary().map_err(bad)?;
        Ok(cfg)
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    fn rotary(&self) -> std::result::Result<Rotary, String> {
        let params = match &self.rope_parameters {
            Some(p) => p.clone(),
            None => serde_json::json!({
                "rope_type": "default",
                "rope_theta": self.rotary_emb_base.unwrap_or(10_000.0),
                "partial_rotary_factor": self.rotary_pct.unwrap_or(1.0),
            }),
        };
        Rotary::from_params(&params, self.head_dim(), self.max_position_embeddings)
    }
}

/// `y = x · Wᵀ (+ b)` with `W` stored `[out, in]`.
struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    fn load(w: &Weights, name: &str, input: usize, output: usize) -> Result<Self> {
        Self::load_with(w, name, input, output, true)
    }
    fn load_with(w: &Weights, name: &str, input: usize, output: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: w.get(&format!("{name}.weight"), &[output, input])?,
            bias: match bias {
                true => Some(w.get(&format!("{name}.bias"), &[output])?),
                false => None,
            },
        })
    }
    fn fast(&self) -> Proj<'_> {
        Proj {
            weight: &self.weight,
            bias: self.bias.as_ref(),
            layout: WeightLayout::OutIn,
        }
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let y = x.reshape((b * t, d))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        y.reshape((b, t, self.weight.dim(0)?))
    }
}

struct Block {
    ln_1: LayerNorm,
    qkv: Dense,
    dense: Dense,
    ln_2: LayerNorm,
    up: Dense,
    down: Dense,
}

/// A hookable GPT-NeoX.
pub struct Neox {
    cfg: NeoxConfig,
    act: Activation,
    rotary: Rotary,
    embed: Tensor,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    /// `embed_out.weight`, or the embedding when tied; `None` for an untied checkpoint saved
    /// without its head (a base model).
    unembed: Option<Tensor>,
    /// The fast forward's buffers, kept between batches.
    spare: Spare,
    /// A sequence classifier's `score` head (`…ForSequenceClassification`).
    score: Option<crate::score_head::ScoreHead>,
}

impl Neox {
    pub fn load(cfg: NeoxConfig, w: &Weights) -> Result<Self> {
        let (d, inner, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let bias = cfg.attention_bias;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("layers.{i}");
            blocks.push(Block {
                ln_1: LayerNorm::load(w, &format!("{p}.input_layernorm"), d, eps)?,
                qkv: Dense::load_with(
                    w,
                    &format!("{p}.attention.query_key_value"),
                    d,
                    3 * d,
                    bias,
                )?,
                dense: Dense::load_with(w, &format!("{p}.attention.dense"), d, d, bias)?,
                ln_2: LayerNorm::load(w, &format!("{p}.post_attention_layernorm"), d, eps)?,
                up: Dense::load(w, &format!("{p}.mlp.dense_h_to_4h"), d, inner)?,
                down: Dense::load(w, &format!("{p}.mlp.dense_4h_to_h"), inner, d)?,
            });
        }
        let embed = w.get("embed_in.weight", &[cfg.vocab_size, d])?;
        // An untied checkpoint saved without its head (a base model such as `GPTNeoXModel`, as
        // `AutoModel` saves it) has no unembedding: hidden states only, no next-token logits.
        let unembed = if cfg.tie_word_embeddings {
            Some(embed.clone())
        } else {
            w.get_root("embed_out.weight", &[cfg.vocab_size, d])?
        };
        Ok(Self {
            act: Activation::parse(&cfg.hidden_act).map_err(ModelError::Invalid)?,
            rotary: cfg.rotary().map_err(ModelError::Invalid)?,
            final_norm: LayerNorm::load(w, "final_layer_norm", d, eps)?,
            embed,
            unembed,
            blocks,
            cfg,
            spare: Spare::default(),
            score: None,
        })
    }

    /// The weights as the shared fast decoder forward reads them.
    fn fast(&self) -> prenorm::Decoder<'_> {
        let (heads, hd) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let scale = 1.0 / (hd as f32).sqrt();
        prenorm::Decoder {
            embed: &self.embed,
            positions: None,
            stack: Stack {
                blocks: self
                    .blocks
                    .iter()
                    .map(|b| prenorm::Block {
                        norm1: Norm::Layer(&b.ln_1),
                        qkv: Qkv::FusedPerHead(b.qkv.fast()),
                        out: b.dense.fast(),
                        norm2: Norm::Layer(&b.ln_2),
                        mlp_in: MlpIn::Plain(b.up.fast()),
                        down: b.down.fast(),
                        parallel: self.cfg.use_parallel_residual,
                        scale,
                        window: None,
                    })
                    .collect(),
                heads: Heads {
                    heads,
                    kv_heads: heads,
                    dim: hd,
                    causal: true,
                    scale,
                    softcap: None,
                    window: None,
                },
                act: self.act.kernel(),
                inner: self.cfg.intermediate_size,
                rotary: Some(&self.rotary),
            },
            final_norm: Norm::Layer(&self.final_norm),
            unembed: self.unembed.as_ref(),
        }
    }

    fn graph_forward(&self, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let x = at(
            hooks,
            HookPoint::Embed,
            crate::layers::embed(&self.embed, batch)?,
        )?;
        self.run_from(batch, 0, x, hooks)
    }

    fn check_length(&self, batch: &TokenBatch) -> Result<()> {
        crate::layers::check_positions(
            batch,
            self.cfg.max_position_embeddings,
            "max_position_embeddings",
        )
    }

    fn block(&self, i: usize, x: Tensor, mask: &Tensor, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let blk = &self.blocks[i];
        let (b, t, d) = x.dims3()?;
        let (heads, hd) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let x = at(hooks, HookPoint::ResidPre(i), x)?;
        // Fused projection laid out per head as [q | k | v] (each head_dim wide).
        let qkv = blk
            .qkv
            .forward(&blk.ln_1.forward(&x)?)?
            .reshape((b, t, heads, 3 * hd))?;
        let part = |k: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(D::Minus1, k * hd, hd)?
                .contiguous()?
                .reshape((b, t, d))
        };
        let q = at(hooks, HookPoint::AttnQ(i), part(0)?)?;
        let k = at(hooks, HookPoint::AttnK(i), part(1)?)?;
        let v = at(hooks, HookPoint::AttnV(i), part(2)?)?;
        let split = |m: &Tensor| -> candle_core::Result<Tensor> {
            m.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = self.rotary.apply(&split(&q)?)?;
        let k = self.rotary.apply(&split(&k)?)?;
        let v = split(&v)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let z = crate::layers::attention(&q, &k, &v, mask, scale, hooks, i)?;
        let z = at(hooks, HookPoint::AttnZ(i), z)?;
        let attn_out = at(hooks, HookPoint::AttnOut(i), blk.dense.forward(&z)?)?;
        let (mlp_in, mid) = if self.cfg.use_parallel_residual {
            (blk.ln_2.forward(&x)?, None)
        } else {
            let mid = at(hooks, HookPoint::ResidMid(i), x.add(&attn_out)?)?;
            (blk.ln_2.forward(&mid)?, Some(mid))
        };
        let neurons = at(
            hooks,
            HookPoint::MlpPost(i),
            self.act.apply(&blk.up.forward(&mlp_in)?)?,
        )?;
        let mlp_out = at(hooks, HookPoint::MlpOut(i), blk.down.forward(&neurons)?)?;
        let post = match mid {
            Some(mid) => mid.add(&mlp_out)?,
            None => x.add(&attn_out)?.add(&mlp_out)?,
        };
        Ok(at(hooks, HookPoint::ResidPost(i), post)?)
    }

    fn run_from(
        &self,
        batch: &TokenBatch,
        first: usize,
        mut x: Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        self.check_length(batch)?;
        let mask = crate::layers::causal_mask(batch)?;
        for i in first..self.blocks.len() {
            x = self.block(i, x, &mask, hooks)?;
            if hooks.satisfied() {
                return Ok(x);
            }
        }
        crate::layers::final_hooks(hooks, self.final_norm.forward(&x)?, self.unembed.as_ref())
    }
}

impl prenorm::FastDecoder for Neox {
    fn parts(&self) -> (prenorm::Decoder<'_>, &Spare) {
        (self.fast(), &self.spare)
    }
    fn fits(&self, batch: &TokenBatch) -> Result<()> {
        self.check_length(batch)
    }
}

impl HookedModel for Neox {
    crate::score_head::score_head_methods!();

    fn family(&self) -> &'static str {
        "gpt_neox"
    }
    fn modality(&self) -> Modality {
        Modality::Text
    }
    fn hook_points(&self) -> Vec<HookPoint> {
        let mut v = vec![HookPoint::Embed];
        for i in 0..self.cfg.num_hidden_layers {
            v.extend(
                HookPoint::decoder_block(i)
                    .into_iter()
                    // Parallel blocks have no residual stream between attention and MLP.
                    .filter(|h| !(self.cfg.use_parallel_residual && *h == HookPoint::ResidMid(i))),
            );
        }
        v.push(HookPoint::LnFinal);
        v.push(HookPoint::Logits);
        crate::score_head::hooks_of(v, self.unembedding().is_some())
    }
    fn hook_width(&self, point: HookPoint) -> usize {
        match point {
            HookPoint::MlpPost(_) => self.cfg.intermediate_size,
            HookPoint::AttnPattern(_) => {
                self.cfg.num_attention_heads * self.cfg.max_position_embeddings
            }
            HookPoint::Logits => self.cfg.vocab_size,
            _ => self.cfg.hidden_size,
        }
    }
    fn max_positions(&self) -> Option<usize> {
        Some(self.cfg.max_position_embeddings)
    }
    fn attention_heads(&self) -> Option<usize> {
        Some(self.cfg.num_attention_heads)
    }
    fn vocab_size(&self) -> Option<usize> {
        Some(self.cfg.vocab_size)
    }
    fn forward(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let batch = input.tokens(self.family())?;
        if !prenorm::usable(self.embed.device(), self.blocks.len(), hooks) {
            return self.graph_forward(batch, hooks);
        }
        self.check_length(batch)?;
        prenorm::forward(&self.fast(), batch, hooks, &self.spare)
    }
    prenorm::fast_decoder_methods!();
    fn forward_differentiable(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let batch = input.tokens(self.family())?;
        self.graph_forward(batch, hooks)
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
        Some(self.final_norm.forward(residual).map_err(Into::into))
    }
    fn final_norm_parts(&self) -> Option<crate::model::FinalNorm<'_>> {
        Some(crate::model::FinalNorm::Layer {
            weight: &self.final_norm.weight,
            bias: &self.final_norm.bias,
            eps: self.final_norm.eps as f64,
        })
    }
    fn unembedding(&self) -> Option<&Tensor> {
        // A sequence classifier has no language-model head (its `score` head is the output).
        self.unembed.as_ref().filter(|_| self.score.is_none())
    }
}
