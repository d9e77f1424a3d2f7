//! The fast BERT forward: packed tokens (no padding anywhere), weights as plain `f32` slices,
//! matrix multiplies through `gemm` into buffers reused across layers, and fused
//! multi-threaded kernels for bias + activation, residual + LayerNorm and attention.
//!
//! Hooks see the same `[batch, seq, width]` tensors as with the graph forward (padding rows
//! zero); a hook that returns a different tensor has its values copied back into the stream.

use super::{graph::GraphWeights, Bert};
use crate::batch::TokenBatch;
use crate::hooks::{HookPoint, Hooks};
use crate::kernels::{self, Heads, Prepare};
use crate::packed::{take, Layout, Spare, Stream};
use crate::{ModelError, Result};
use candle_core::Tensor;

/// One block's weights as plain slices; the projection matrices transposed to `[in, out]`
/// (see [`kernels::matmul_in_out`]).
pub(crate) struct FastBlock {
    /// Query, key and value projections side by side: `[H, 3H]`.
    pub(super) qkv_w: Vec<f32>,
    pub(super) qkv_b: Vec<f32>,
    pub(super) attn_out_w: Vec<f32>,
    pub(super) attn_out_b: Vec<f32>,
    pub(super) ln1: (Vec<f32>, Vec<f32>, f32),
    pub(super) inter_w: Vec<f32>,
    pub(super) inter_b: Vec<f32>,
    pub(super) out_w: Vec<f32>,
    pub(super) out_b: Vec<f32>,
    pub(super) ln2: (Vec<f32>, Vec<f32>, f32),
}

pub(crate) struct FastWeights {
    word: Vec<f32>,
    pub(super) position: Vec<f32>,
    pub(super) token_type: Vec<f32>,
    pub(super) embed_ln: (Vec<f32>, Vec<f32>, f32),
    pub(super) blocks: Vec<FastBlock>,
    spare: Spare,
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1()?)
}

/// A linear layer's weight transposed to `[in, out]`, and its bias.
fn linear_parts(l: &candle_nn::Linear) -> Result<(Vec<f32>, Vec<f32>)> {
    let bias = l
        .bias()
        .ok_or_else(|| ModelError::Invalid("BERT linear layers have biases".into()))?;
    let (out_dim, in_dim) = l.weight().dims2()?;
    Ok((
        kernels::transpose(&flat(l.weight())?, out_dim, in_dim),
        flat(bias)?,
    ))
}

fn ln_parts(l: &super::graph::LayerNorm) -> Result<(Vec<f32>, Vec<f32>, f32)> {
    Ok((flat(&l.weight)?, flat(&l.bias)?, l.eps))
}

impl FastWeights {
    pub(crate) fn from_graph(g: &GraphWeights) -> Result<Self> {
        let mut blocks = Vec::with_capacity(g.blocks.len());
        for b in &g.blocks {
            let (qw, qb) = linear_parts(&b.query)?;
            let (kw, kb) = linear_parts(&b.key)?;
            let (vw, vb) = linear_parts(&b.value)?;
            let (attn_out_w, attn_out_b) = linear_parts(&b.attn_output)?;
            let (inter_w, inter_b) = linear_parts(&b.intermediate)?;
            let (out_w, out_b) = linear_parts(&b.output)?;
            // [H, 3H]: row i is input unit i's weights into q, then k, then v.
            let qkv_w = qw
                .chunks_exact(qb.len())
                .zip(kw.chunks_exact(kb.len()))
                .zip(vw.chunks_exact(vb.len()))
                .flat_map(|((q, k), v)| [q, k, v].concat())
                .collect();
            blocks.push(FastBlock {
                qkv_w,
                qkv_b: [qb, kb, vb].concat(),
                attn_out_w,
                attn_out_b,
                ln1: ln_parts(&b.attn_norm)?,
                inter_w,
                inter_b,
                out_w,
                out_b,
                ln2: ln_parts(&b.output_norm)?,
            });
        }
        Ok(Self {
            word: flat(&g.word_embeddings)?,
            position: flat(&g.position_embeddings)?,
            token_type: flat(&g.token_type_embeddings)?,
            embed_ln: ln_parts(&g.embed_norm)?,
            blocks,
            spare: Default::default(),
        })
    }
}

/// When `point` is hooked, adds `bias` now so the hook sees the true output and returns no bias
/// for the next kernel; otherwise returns `bias` for the next kernel to fuse.
fn biased_for_hook<'b>(
    hooks: &dyn Hooks,
    point: HookPoint,
    x: &mut [f32],
    bias: &'b [f32],
) -> &'b [f32] {
    if hooks.wants(point) {
        kernels::add_bias(x, bias);
        &[]
    } else {
        bias
    }
}

/// Row `i` of an embedding table `h` wide.
fn table_row(table: &[f32], i: usize, h: usize) -> &[f32] {
    &table[i * h..(i + 1) * h]
}

pub(crate) fn forward(m: &Bert, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor> {
    run(m, batch, 0, None, hooks)
}

/// The forward from block `first` on, given the residual stream entering it (`[batch, seq,
/// hidden]`, `blocks.{first}.hook_resid_pre`, whose hook is called first): the embeddings and
/// the blocks before it are not run. Same values and hooks as [`forward`] from there on.
pub(crate) fn forward_from(
    m: &Bert,
    batch: &TokenBatch,
    first: usize,
    resid_pre: &Tensor,
    hooks: &mut dyn Hooks,
) -> Result<Tensor> {
    if first >= m.fast.blocks.len() {
        return Err(ModelError::Invalid(format!(
            "no block {first}: the model has {}",
            m.fast.blocks.len()
        )));
    }
    run(m, batch, first, Some(resid_pre), hooks)
}

fn run(
    m: &Bert,
    batch: &TokenBatch,
    first: usize,
    resid_pre: Option<&Tensor>,
    hooks: &mut dyn Hooks,
) -> Result<Tensor> {
    let cfg = &m.cfg;
    let w = &m.fast;
    let (b, t) = batch.input_ids.dims2()?;
    cfg.check_length(*batch.lengths.iter().max().unwrap_or(&0))?;
    debug_assert_eq!(batch.lengths.len(), b);
    let layout = Layout::new(&batch.lengths, t);
    let rows = layout.rows();
    let h = cfg.hidden_size;
    let ids = batch.input_ids.to_vec2::<u32>()?;
    let type_ids = cfg.variant.type_ids(batch)?;
    let position_ids = cfg.variant.position_ids(batch, cfg.pad_token_id)?;

    // Embeddings, each hookable, then LayerNorm.
    let mut spare = w.spare.take_all();
    let mut take = |len: usize| take(&mut spare, len);
    for (ids, tys) in ids.iter().zip(&type_ids) {
        if let Some((id, ty)) = ids
            .iter()
            .zip(tys)
            .find(|&(&id, &ty)| id as usize >= cfg.vocab_size || ty as usize >= cfg.type_vocab_size)
        {
            return Err(ModelError::Invalid(format!(
                "token id {id} or type id {ty} is outside the embedding tables"
            )));
        }
    }
    // Packed row of each token ← the table row `pick(example, position)` names.
    let rows_of = |table: &[f32], pick: &dyn Fn(usize, usize) -> usize, out: &mut [f32]| {
        for e in 0..b {
            for p in 0..batch.lengths[e] {
                let row = layout.offsets[e] + p;
                out[row * h..(row + 1) * h].copy_from_slice(table_row(table, pick(e, p), h));
            }
        }
    };
    let word = |e: usize, p: usize| ids[e][p] as usize;
    let position = |e: usize, p: usize| position_ids[e][p] as usize;
    let token_type = |e: usize, p: usize| type_ids[e][p] as usize;
    let embed_points = [
        HookPoint::Embed,
        HookPoint::PosEmbed,
        HookPoint::TokenTypeEmbed,
    ];
    // Taken in the same order every time, so each comes back to the same role (and size).
    let (mut x, mut positions, mut types) = (take(rows * h), take(rows * h), take(rows * h));
    if let Some(resid) = resid_pre {
        // The stream entering block `first`, packed; the embeddings are not computed.
        layout.unpad(resid, h, HookPoint::ResidPre(first), &mut x)?;
    } else if embed_points.iter().any(|&p| hooks.wants(p)) {
        // Each table's rows in a buffer of its own, so its hook sees (and may replace) it.
        rows_of(&w.word, &word, &mut x);
        rows_of(&w.position, &position, &mut positions);
        rows_of(&w.token_type, &token_type, &mut types);
        layout.hook(hooks, HookPoint::Embed, &mut x, h)?;
        layout.hook(hooks, HookPoint::PosEmbed, &mut positions, h)?;
        layout.hook(hooks, HookPoint::TokenTypeEmbed, &mut types, h)?;
        for ((v, p), ty) in x.iter_mut().zip(&positions).zip(&types) {
            *v += p + ty;
        }
    } else {
        // The sum in one pass: no hook needs the tables' rows on their own.
        for e in 0..b {
            for p in 0..batch.lengths[e] {
                let row = layout.offsets[e] + p;
                let out = &mut x[row * h..(row + 1) * h];
                let (wd, ps, ty) = (
                    table_row(&w.word, word(e, p), h),
                    table_row(&w.position, position(e, p), h),
                    table_row(&w.token_type, token_type(e, p), h),
                );
                for (((o, a), b), c) in out.iter_mut().zip(wd).zip(ps).zip(ty) {
                    *o = a + b + c;
                }
            }
        }
    }
    if resid_pre.is_none() {
        let (g, beta, eps) = &w.embed_ln;
        kernels::layer_norm(&mut x, &[], &[], g, beta, *eps);
    }
    // The residual stream: handed to its hooks without a copy when there is no padding.
    let mut x = Stream::Owned(x);

    let heads = cfg.num_attention_heads;
    let inter = cfg.intermediate_size;
    let mut qkv = take(rows * 3 * h);
    let mut z = take(rows * h);
    let mut a = take(rows * h);
    let mut neurons = take(rows * inter);
    for (i, blk) in w.blocks.iter().enumerate().skip(first) {
        x.hook(&layout, hooks, HookPoint::ResidPre(i), h)?;
        x.read(|x| kernels::matmul_in_out(x, h, &blk.qkv_w, 3 * h, &mut qkv))?;
        let shape = Heads::full(heads, h / heads);
        let qkv_points = [
            HookPoint::AttnQ(i),
            HookPoint::AttnK(i),
            HookPoint::AttnV(i),
        ];
        if qkv_points.iter().any(|&p| hooks.wants(p)) {
            kernels::add_bias(&mut qkv, &blk.qkv_b);
            for (k, point) in qkv_points.into_iter().enumerate() {
                layout.hook_columns(hooks, point, &mut qkv, (k * h, h, 3 * h))?;
            }
            kernels::attention(&qkv, &layout.offsets, shape, &mut z, None);
        } else {
            let prepare = Prepare {
                bias: Some(&blk.qkv_b),
                rotary: None,
            };
            kernels::attention_prepared(&mut qkv, &layout.offsets, shape, &mut z, prepare);
        }
        layout.hook(hooks, HookPoint::AttnZ(i), &mut z, h)?;
        kernels::matmul_in_out(&z, h, &blk.attn_out_w, h, &mut a);
        // a := LN1(attn_out + x) = resid_mid, the bias fused in unless a hook must see it first.
        let bias = biased_for_hook(hooks, HookPoint::AttnOut(i), &mut a, &blk.attn_out_b);
        layout.hook(hooks, HookPoint::AttnOut(i), &mut a, h)?;
        let (g, beta, eps) = &blk.ln1;
        x.read(|x| kernels::layer_norm(&mut a, bias, x, g, beta, *eps))?;
        layout.hook(hooks, HookPoint::ResidMid(i), &mut a, h)?;
        kernels::matmul_in_out(&a, h, &blk.inter_w, inter, &mut neurons);
        kernels::bias_act(&mut neurons, &blk.inter_b, m.act.kernel());
        layout.hook(hooks, HookPoint::MlpPost(i), &mut neurons, inter)?;
        let out = x.overwrite(rows * h);
        kernels::matmul_in_out(&neurons, inter, &blk.out_w, h, out);
        // x := LN2(mlp_out + resid_mid) = resid_post
        let bias = biased_for_hook(hooks, HookPoint::MlpOut(i), out, &blk.out_b);
        layout.hook(hooks, HookPoint::MlpOut(i), out, h)?;
        kernels::layer_norm(out, bias, &a, &blk.ln2.0, &blk.ln2.1, blk.ln2.2);
        x.hook(&layout, hooks, HookPoint::ResidPost(i), h)?;
        if hooks.satisfied() {
            break;
        }
    }
    let (out, x) = x.finish(&layout, h)?;
    // In reverse order of taking, so each buffer comes back to the same role (a stream buffer
    // a hook kept is replaced by a fresh one next time).
    w.spare.keep(vec![
        neurons,
        a,
        z,
        qkv,
        types,
        positions,
        x.unwrap_or_default(),
    ]);
    Ok(out)
}
