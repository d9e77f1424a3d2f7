//! BERT-family encoders (BERT, MiniLM, sentence-transformers checkpoints), hookable.
//!
//! Values at every hook are those of the unmodified Hugging Face `BertModel` (post-LayerNorm
//! blocks, no folding), so `blocks.{i}.hook_resid_post` equals `hidden_states[i + 1]` of
//! `transformers` and `blocks.0.hook_resid_pre` equals `hidden_states[0]`.
//!
//! Per block, with `h = hook_resid_pre`:
//! `hook_attn_out = O(attn(h))`, `hook_resid_mid = LN1(h + hook_attn_out)`,
//! `mlp.hook_post = act(I(hook_resid_mid))`, `hook_mlp_out = D(mlp.hook_post)`,
//! `hook_resid_post = LN2(hook_resid_mid + hook_mlp_out)`.

use crate::hooks::{at, HookPoint, Hooks};
use crate::loader::{HookableModel, TokenBatch};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::{Module, Tensor};
use candle_nn::Linear;
use serde::Deserialize;
use std::path::Path;

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

/// The fields of a BERT `config.json` this implementation uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

impl BertConfig {
    pub fn from_json(path: &Path, value: serde_json::Value) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let cfg: BertConfig =
            serde_json::from_value(value).map_err(|e| bad(format!("not a BERT config: {e}")))?;
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if cfg.position_embedding_type != "absolute" {
            return Err(bad(format!(
                "position_embedding_type `{}` is not supported; only `absolute`",
                cfg.position_embedding_type
            )));
        }
        Activation::parse(&cfg.hidden_act).map_err(bad)?;
        Ok(cfg)
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(format!(
                "hidden_act `{other}` is not supported; use gelu, gelu_new, gelu_pytorch_tanh or relu"
            )),
        }
    }
    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(w: &Weights, prefix: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.get_any(
                &[&format!("{prefix}.weight"), &format!("{prefix}.gamma")],
                &[size],
            )?,
            bias: w.get_any(
                &[&format!("{prefix}.bias"), &format!("{prefix}.beta")],
                &[size],
            )?,
            eps: eps as f32,
        })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

fn linear(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
    Ok(Linear::new(
        w.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
        Some(w.get(&format!("{prefix}.bias"), &[out_dim])?),
    ))
}

struct Block {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_output: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// A hookable BERT encoder.
pub struct Bert {
    cfg: BertConfig,
    act: Activation,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embed_norm: LayerNorm,
    blocks: Vec<Block>,
}

impl Bert {
    pub fn load(cfg: BertConfig, w: &Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            blocks.push(Block {
                query: linear(w, &format!("{p}.attention.self.query"), h, h)?,
                key: linear(w, &format!("{p}.attention.self.key"), h, h)?,
                value: linear(w, &format!("{p}.attention.self.value"), h, h)?,
                attn_output: linear(w, &format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: LayerNorm::load(w, &format!("{p}.attention.output.LayerNorm"), h, eps)?,
                intermediate: linear(
                    w,
                    &format!("{p}.intermediate.dense"),
                    h,
                    cfg.intermediate_size,
                )?,
                output: linear(w, &format!("{p}.output.dense"), cfg.intermediate_size, h)?,
                output_norm: LayerNorm::load(w, &format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Self {
            act: Activation::parse(&cfg.hidden_act).map_err(ModelError::Invalid)?,
            word_embeddings: w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            position_embeddings: w.get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type_embeddings: w.get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, h],
            )?,
            embed_norm: LayerNorm::load(w, "embeddings.LayerNorm", h, eps)?,
            blocks,
            cfg,
        })
    }

    fn embed(&self, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let (b, t) = batch.input_ids.dims2()?;
        let h = self.cfg.hidden_size;
        let lookup = |table: &Tensor, ids: &Tensor| -> candle_core::Result<Tensor> {
            table
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, t, h))
        };
        let words = at(
            hooks,
            HookPoint::Embed,
            lookup(&self.word_embeddings, &batch.input_ids)?,
        )?;
        let positions = self
            .position_embeddings
            .narrow(0, 0, t)?
            .unsqueeze(0)?
            .broadcast_as((b, t, h))?;
        let positions = at(hooks, HookPoint::PosEmbed, positions)?;
        let types = at(
            hooks,
            HookPoint::TokenTypeEmbed,
            lookup(&self.token_type_embeddings, &batch.type_ids)?,
        )?;
        Ok(self
            .embed_norm
            .forward(&(words.add(&positions)?.add(&types)?))?)
    }

    fn block(
        &self,
        i: usize,
        block: &Block,
        x: Tensor,
        mask_bias: &Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let heads = self.cfg.num_attention_heads;
        let head_dim = h / heads;
        let x = at(hooks, HookPoint::ResidPre(i), x)?;
        let q = at(hooks, HookPoint::AttnQ(i), block.query.forward(&x)?)?;
        let k = at(hooks, HookPoint::AttnK(i), block.key.forward(&x)?)?;
        let v = at(hooks, HookPoint::AttnV(i), block.value.forward(&x)?)?;
        let split = |m: &Tensor| -> candle_core::Result<Tensor> {
            m.reshape((b, t, heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(&q)?, split(&k)?, split(&v)?);
        let scale = 1.0 / (head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask_bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let z = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        let z = at(hooks, HookPoint::AttnZ(i), z)?;
        let attn_out = at(hooks, HookPoint::AttnOut(i), block.attn_output.forward(&z)?)?;
        let mid = block.attn_norm.forward(&x.add(&attn_out)?)?;
        let mid = at(hooks, HookPoint::ResidMid(i), mid)?;
        let neurons = self.act.apply(&block.intermediate.forward(&mid)?)?;
        let neurons = at(hooks, HookPoint::MlpPost(i), neurons)?;
        let mlp_out = at(hooks, HookPoint::MlpOut(i), block.output.forward(&neurons)?)?;
        let post = block.output_norm.forward(&mid.add(&mlp_out)?)?;
        Ok(at(hooks, HookPoint::ResidPost(i), post)?)
    }
}

impl HookableModel for Bert {
    fn family(&self) -> &'static str {
        "bert"
    }

    fn hook_points(&self) -> Vec<HookPoint> {
        use HookPoint::*;
        let mut points = vec![Embed, PosEmbed, TokenTypeEmbed];
        for i in 0..self.cfg.num_hidden_layers {
            points.extend([
                ResidPre(i),
                AttnQ(i),
                AttnK(i),
                AttnV(i),
                AttnZ(i),
                AttnOut(i),
                ResidMid(i),
                MlpPost(i),
                MlpOut(i),
                ResidPost(i),
            ]);
        }
        points
    }

    fn hook_width(&self, point: HookPoint) -> usize {
        match point {
            HookPoint::MlpPost(_) => self.cfg.intermediate_size,
            _ => self.cfg.hidden_size,
        }
    }

    fn max_positions(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn forward(&self, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let (b, t) = batch.input_ids.dims2()?;
        if t > self.cfg.max_position_embeddings {
            return Err(ModelError::Invalid(format!(
                "sequence of {t} tokens exceeds max_position_embeddings {}",
                self.cfg.max_position_embeddings
            )));
        }
        // Additive mask as in `transformers`: 0 for real tokens, the most negative f32 for
        // padding. mask * (-MIN) + MIN is exactly 0 for mask = 1 and MIN for mask = 0.
        let min = f32::MIN as f64;
        let mask_bias = batch.mask.affine(-min, min)?.reshape((b, 1, 1, t))?;
        let mut x = self.embed(batch, hooks)?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = self.block(i, block, x, &mask_bias, hooks)?;
        }
        Ok(x)
    }
}
