//! The candle-graph BERT forward: candle ops end to end, so it is differentiable (LayerNorm and
//! softmax are composed from primitive ops because candle-nn's fused ones have no backward).
//! TCAV's gradients come from here; the fast forward is checked against it at every hook.

use super::{Bert, BertConfig};
use crate::batch::TokenBatch;
use crate::hooks::{at, HookPoint, Hooks};
pub(crate) use crate::layers::LayerNorm;
use crate::weights::Weights;
use crate::Result;
use candle_core::Tensor;
use candle_nn::Linear;

/// `x · Wᵀ + b` for `x` `[batch, seq, in]`, with no weight gradient in a backward (see
/// `kernels::input_grad_linear`).
fn lin(l: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    let y = crate::kernels::input_grad_linear::linear_no_weight_grad(
        &x.reshape((b * t, d))?,
        l.weight(),
    )?;
    let y = match l.bias() {
        Some(bias) => y.broadcast_add(bias)?,
        None => y,
    };
    y.reshape((b, t, l.weight().dim(0)?))
}

fn linear(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
    Ok(Linear::new(
        w.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
        Some(w.get(&format!("{prefix}.bias"), &[out_dim])?),
    ))
}

pub(crate) struct Block {
    pub(crate) query: Linear,
    pub(crate) key: Linear,
    pub(crate) value: Linear,
    pub(crate) attn_output: Linear,
    pub(crate) attn_norm: LayerNorm,
    pub(crate) intermediate: Linear,
    pub(crate) output: Linear,
    pub(crate) output_norm: LayerNorm,
}

/// The weights as candle tensors.
pub(crate) struct GraphWeights {
    pub(crate) word_embeddings: Tensor,
    pub(crate) position_embeddings: Tensor,
    pub(crate) token_type_embeddings: Tensor,
    pub(crate) embed_norm: LayerNorm,
    pub(crate) blocks: Vec<Block>,
}

impl GraphWeights {
    pub(crate) fn load(cfg: &BertConfig, w: &Weights) -> Result<Self> {
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let n = cfg.variant.block_names(i);
            blocks.push(Block {
                query: linear(w, &n.query, h, h)?,
                key: linear(w, &n.key, h, h)?,
                value: linear(w, &n.value, h, h)?,
                attn_output: linear(w, &n.attn_output, h, h)?,
                attn_norm: LayerNorm::load(w, &n.attn_norm, h, eps)?,
                intermediate: linear(w, &n.intermediate, h, cfg.intermediate_size)?,
                output: linear(w, &n.output, cfg.intermediate_size, h)?,
                output_norm: LayerNorm::load(w, &n.output_norm, h, eps)?,
            });
        }
        // DistilBERT has no token types: one zero row, which adds nothing.
        let token_type_embeddings = if cfg.variant.has_token_types() {
            w.get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, h],
            )?
        } else {
            Tensor::zeros((1, h), candle_core::DType::F32, &candle_core::Device::Cpu)?
        };
        Ok(Self {
            word_embeddings: w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            position_embeddings: w.get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type_embeddings,
            embed_norm: LayerNorm::load(w, "embeddings.LayerNorm", h, eps)?,
            blocks,
        })
    }
}

fn embed(m: &Bert, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor> {
    let g = &m.graph;
    let (b, t) = batch.input_ids.dims2()?;
    let h = m.cfg.hidden_size;
    let lookup = |table: &Tensor, ids: &Tensor| -> candle_core::Result<Tensor> {
        table
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, h))
    };
    let words = at(
        hooks,
        HookPoint::Embed,
        lookup(&g.word_embeddings, &batch.input_ids)?,
    )?;
    let ids = |rows: Vec<Vec<u32>>| -> candle_core::Result<Tensor> {
        let flat: Vec<u32> = rows.into_iter().flatten().collect();
        Tensor::from_vec(flat, (b, t), batch.input_ids.device())
    };
    let position_ids = ids(m.cfg.variant.position_ids(batch, m.cfg.pad_token_id)?)?;
    let type_ids = ids(m.cfg.variant.type_ids(batch)?)?;
    let positions = lookup(&g.position_embeddings, &position_ids)?;
    let positions = at(hooks, HookPoint::PosEmbed, positions)?;
    let types = at(
        hooks,
        HookPoint::TokenTypeEmbed,
        lookup(&g.token_type_embeddings, &type_ids)?,
    )?;
    Ok(g.embed_norm
        .forward(&(words.add(&positions)?.add(&types)?))?)
}

fn block(
    m: &Bert,
    i: usize,
    block: &Block,
    x: Tensor,
    mask_bias: &Tensor,
    hooks: &mut dyn Hooks,
) -> Result<Tensor> {
    let (b, t, h) = x.dims3()?;
    let heads = m.cfg.num_attention_heads;
    let head_dim = h / heads;
    let x = at(hooks, HookPoint::ResidPre(i), x)?;
    let q = at(hooks, HookPoint::AttnQ(i), lin(&block.query, &x)?)?;
    let k = at(hooks, HookPoint::AttnK(i), lin(&block.key, &x)?)?;
    let v = at(hooks, HookPoint::AttnV(i), lin(&block.value, &x)?)?;
    let split = |m: &Tensor| -> candle_core::Result<Tensor> {
        m.reshape((b, t, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (split(&q)?, split(&k)?, split(&v)?);
    let scale = 1.0 / (head_dim as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask_bias)?;
    let probs = crate::layers::pattern_hook(
        hooks,
        i,
        candle_nn::ops::softmax(&scores, candle_core::D::Minus1)?,
    )?;
    let z = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
    let z = at(hooks, HookPoint::AttnZ(i), z)?;
    let attn_out = at(hooks, HookPoint::AttnOut(i), lin(&block.attn_output, &z)?)?;
    let mid = block.attn_norm.forward(&x.add(&attn_out)?)?;
    let mid = at(hooks, HookPoint::ResidMid(i), mid)?;
    let neurons = m.act.apply(&lin(&block.intermediate, &mid)?)?;
    let neurons = at(hooks, HookPoint::MlpPost(i), neurons)?;
    let mlp_out = at(hooks, HookPoint::MlpOut(i), lin(&block.output, &neurons)?)?;
    let post = block.output_norm.forward(&mid.add(&mlp_out)?)?;
    Ok(at(hooks, HookPoint::ResidPost(i), post)?)
}

pub(crate) fn forward(m: &Bert, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor> {
    check_length(m, batch)?;
    let x = embed(m, batch, hooks)?;
    forward_from(m, batch, 0, x, hooks)
}

fn check_length(m: &Bert, batch: &TokenBatch) -> Result<()> {
    let (_, t) = batch.input_ids.dims2()?;
    m.cfg.check_length(t)
}

/// Runs blocks `first..` on `x`, the residual stream entering block `first`.
pub(crate) fn forward_from(
    m: &Bert,
    batch: &TokenBatch,
    first: usize,
    mut x: Tensor,
    hooks: &mut dyn Hooks,
) -> Result<Tensor> {
    check_length(m, batch)?;
    let (b, t) = batch.input_ids.dims2()?;
    // Additive mask as in `transformers`: 0 for real tokens, the most negative f32 for
    // padding. mask * (-MIN) + MIN is exactly 0 for mask = 1 and MIN for mask = 0.
    let min = f32::MIN as f64;
    let mask_bias = batch.mask.affine(-min, min)?.reshape((b, 1, 1, t))?;
    for (i, blk) in m.graph.blocks.iter().enumerate().skip(first) {
        x = block(m, i, blk, x, &mask_bias, hooks)?;
        if hooks.satisfied() {
            break;
        }
    }
    Ok(x)
}
