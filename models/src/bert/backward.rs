//! Input gradients through BERT blocks by hand, for TCAV: a forward of blocks `first..=last`
//! on packed tokens with the fast kernels that keeps what the chain rule needs (a tape), then
//! the vector–Jacobian products backwards with `gemm` — no autograd graph, no weight
//! gradients. Checked against finite differences through the candle-graph forward
//! (`tests/gradients_minilm.rs`) and, from the token embeddings, against candle autograd
//! (`runner/tests/attribution_encoder.rs`, `minilm_hand_backward_matches_autograd`).

use super::fast::FastBlock;
use super::Bert;
use crate::kernels::gemm::{matmul, View};
use crate::kernels::{self, matmul_wt, split_examples, Recycler};
use rayon::prelude::*;

/// What one block's backward needs from its forward.
struct BlockTape {
    qkv: Vec<f32>,
    /// Softmax probabilities, per example then head, `len × len` each.
    probs: Vec<f32>,
    /// Normalised (pre-γ/β) residual sums of the two LayerNorms and their inverse std.
    xhat1: Vec<f32>,
    inv1: Vec<f32>,
    xhat2: Vec<f32>,
    inv2: Vec<f32>,
    /// MLP pre-activation.
    pre_act: Vec<f32>,
}

impl BlockTape {
    /// Hands the tape's buffers back for the next batch.
    fn recycle(self, spare: &Recycler) {
        for v in [self.qkv, self.probs, self.xhat1, self.xhat2, self.pre_act] {
            spare.give(v);
        }
    }
}

/// `x = LayerNorm(x)` keeping `x̂` and `1/σ` (statistics in f64, as the fast kernel); `x̂` in a
/// buffer from `spare` (every row is written).
fn layer_norm_taped(
    spare: &Recycler,
    x: &mut [f32],
    ln: &(Vec<f32>, Vec<f32>, f32),
) -> (Vec<f32>, Vec<f32>) {
    let (gamma, beta, eps) = ln;
    let width = gamma.len();
    let mut xhat = spare.take(x.len());
    let mut inv = vec![0f32; x.len() / width];
    x.par_chunks_mut(width)
        .zip(xhat.par_chunks_mut(width))
        .zip(inv.par_iter_mut())
        .for_each(|((row, xh), iv)| {
            let n = width as f64;
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv_std = 1.0 / (var + *eps as f64).sqrt();
            *iv = inv_std as f32;
            for (((v, h), g), b) in row.iter_mut().zip(xh.iter_mut()).zip(gamma).zip(beta) {
                *h = ((*v as f64 - mean) * inv_std) as f32;
                *v = *h * g + b;
            }
        });
    (xhat, inv)
}

/// `dx` of `y = γ x̂ + β` given `dy`: `σ⁻¹ (dx̂ − mean(dx̂) − x̂ · mean(dx̂ ⊙ x̂))`, `dx̂ = dy ⊙ γ`.
fn layer_norm_backward(dy: &mut [f32], xhat: &[f32], inv: &[f32], gamma: &[f32]) {
    let width = gamma.len();
    dy.par_chunks_mut(width)
        .zip(xhat.par_chunks(width))
        .zip(inv.par_iter())
        .for_each(|((d, xh), iv)| {
            let n = width as f32;
            let mut mean_d = 0f32;
            let mut mean_dx = 0f32;
            for ((dv, g), h) in d.iter_mut().zip(gamma).zip(xh) {
                *dv *= g;
                mean_d += *dv;
                mean_dx += *dv * h;
            }
            mean_d /= n;
            mean_dx /= n;
            for (dv, h) in d.iter_mut().zip(xh) {
                *dv = iv * (*dv - mean_d - h * mean_dx);
            }
        });
}

/// One block forward on packed rows `x` (replaced by the block's output), with its tape.
/// Every buffer comes from the model's recycler uncleared: products, attention (each kept
/// probability row is written whole, zeros past the row's length included), LayerNorm and the
/// copies below write every value before anything reads it.
fn block_forward(m: &Bert, blk: &FastBlock, x: &mut Vec<f32>, offsets: &[usize]) -> BlockTape {
    let spare = &m.spare;
    let h = m.cfg.hidden_size;
    let heads = m.cfg.num_attention_heads;
    let head_dim = h / heads;
    let inter = m.cfg.intermediate_size;
    let n = x.len() / h;
    let mut qkv = spare.take(n * 3 * h);
    kernels::matmul_in_out(x, h, &blk.qkv_w, 3 * h, &mut qkv);
    kernels::add_bias(&mut qkv, &blk.qkv_b);
    let mut probs = spare.take(
        *kernels::attention_prob_offsets(offsets, heads)
            .last()
            .unwrap_or(&0),
    );
    let mut z = spare.take(n * h);
    kernels::attention(
        &qkv,
        offsets,
        kernels::Heads::full(heads, head_dim),
        &mut z,
        Some(&mut probs),
    );
    // mid = LN1(x + z·Woᵀ + bo)
    let mut mid = spare.take(n * h);
    kernels::matmul_in_out(&z, h, &blk.attn_out_w, h, &mut mid);
    spare.give(z);
    mid.par_iter_mut()
        .zip(x.par_iter())
        .enumerate()
        .for_each(|(i, (v, r))| *v += blk.attn_out_b[i % h] + r);
    let (xhat1, inv1) = layer_norm_taped(spare, &mut mid, &blk.ln1);
    // out = LN2(mid + act(mid·W1ᵀ + b1)·W2ᵀ + b2)
    let mut pre_act = spare.take(n * inter);
    kernels::matmul_in_out(&mid, h, &blk.inter_w, inter, &mut pre_act);
    kernels::add_bias(&mut pre_act, &blk.inter_b);
    // The activation from a copy of the pre-activation (which the tape keeps), a cache-sized
    // chunk at a time: copied and activated while the chunk is in L2, not in two passes.
    let mut act = spare.take(n * inter);
    act.par_chunks_mut(1 << 14)
        .zip(pre_act.par_chunks(1 << 14))
        .for_each(|(a, p)| {
            a.copy_from_slice(p);
            kernels::bias_act(a, &[], m.act.kernel());
        });
    let mut out = spare.take(n * h);
    kernels::matmul_in_out(&act, inter, &blk.out_w, h, &mut out);
    spare.give(act);
    out.par_iter_mut()
        .zip(mid.par_iter())
        .enumerate()
        .for_each(|(i, (v, r))| *v += blk.out_b[i % h] + r);
    spare.give(mid);
    let (xhat2, inv2) = layer_norm_taped(spare, &mut out, &blk.ln2);
    spare.give(std::mem::replace(x, out));
    BlockTape {
        qkv,
        probs,
        xhat1,
        inv1,
        xhat2,
        inv2,
        pre_act,
    }
}

/// One block backward: `d` (gradient at the block's output) becomes the gradient at its input.
fn block_backward(
    m: &Bert,
    blk: &FastBlock,
    tape: &BlockTape,
    d: &mut Vec<f32>,
    offsets: &[usize],
) {
    let h = m.cfg.hidden_size;
    let heads = m.cfg.num_attention_heads;
    let head_dim = h / heads;
    let inter = m.cfg.intermediate_size;
    let n = d.len() / h;
    // Every buffer below is written whole by a product (the attention's per-head products
    // cover all of `d_qkv`'s columns), so none is cleared.
    let spare = &m.spare;
    // Through LN2: d now is the gradient at mid + mlp_out.
    layer_norm_backward(d, &tape.xhat2, &tape.inv2, &blk.ln2.0);
    // Through the MLP, plus the residual into mid.
    let mut d_act = spare.take(n * inter);
    matmul_wt(d, h, &blk.out_w, inter, &mut d_act);
    kernels::mul_act_derivative(&mut d_act, &tape.pre_act, m.act.kernel());
    let mut d_mid = spare.take(n * h);
    matmul_wt(&d_act, inter, &blk.inter_w, h, &mut d_mid);
    spare.give(d_act);
    d_mid
        .par_iter_mut()
        .zip(d.par_iter())
        .for_each(|(a, b)| *a += b);
    // Through LN1: the gradient at x + attn_out.
    layer_norm_backward(&mut d_mid, &tape.xhat1, &tape.inv1, &blk.ln1.0);
    let mut d_z = spare.take(n * h);
    matmul_wt(&d_mid, h, &blk.attn_out_w, h, &mut d_z);
    // Through attention, per example and head, into d_qkv.
    let poff = kernels::attention_prob_offsets(offsets, heads);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut d_qkv = spare.take(n * 3 * h);
    split_examples(&mut d_qkv, offsets, 3 * h)
        .into_par_iter()
        .enumerate()
        .for_each(|(b, dq_b)| {
            let (start, end) = (offsets[b], offsets[b + 1]);
            let len = end - start;
            let rows = &tape.qkv[start * 3 * h..end * 3 * h];
            let dz = &d_z[start * h..end * h];
            let mut dp = vec![0f32; len * len];
            for head in 0..heads {
                let col = head * head_dim;
                let p = &tape.probs[poff[b] + head * len * len..poff[b] + (head + 1) * len * len];
                // dP = dZ_h · V_hᵀ
                matmul(
                    (len, head_dim, len),
                    &mut dp,
                    View::rows(0, len),
                    dz,
                    View {
                        offset: col,
                        row_stride: h,
                        col_stride: 1,
                    },
                    rows,
                    View {
                        offset: 2 * h + col,
                        row_stride: 1,
                        col_stride: 3 * h,
                    },
                    1.0,
                    false,
                    1,
                );
                // dV_h = Pᵀ · dZ_h
                matmul(
                    (len, len, head_dim),
                    dq_b,
                    View {
                        offset: 2 * h + col,
                        row_stride: 3 * h,
                        col_stride: 1,
                    },
                    p,
                    View::transposed(0, len),
                    dz,
                    View {
                        offset: col,
                        row_stride: h,
                        col_stride: 1,
                    },
                    1.0,
                    false,
                    1,
                );
                // dS = P ⊙ (dP − rowsum(dP ⊙ P)), then the 1/√d scale.
                for (dr, pr) in dp.chunks_exact_mut(len).zip(p.chunks_exact(len)) {
                    let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                    dr.iter_mut()
                        .zip(pr)
                        .for_each(|(a, b)| *a = b * (*a - dot) * scale);
                }
                // dQ_h = dS · K_h ; dK_h = dSᵀ · Q_h
                matmul(
                    (len, len, head_dim),
                    dq_b,
                    View {
                        offset: col,
                        row_stride: 3 * h,
                        col_stride: 1,
                    },
                    &dp,
                    View::rows(0, len),
                    rows,
                    View {
                        offset: h + col,
                        row_stride: 3 * h,
                        col_stride: 1,
                    },
                    1.0,
                    false,
                    1,
                );
                matmul(
                    (len, len, head_dim),
                    dq_b,
                    View {
                        offset: h + col,
                        row_stride: 3 * h,
                        col_stride: 1,
                    },
                    &dp,
                    View::transposed(0, len),
                    rows,
                    View {
                        offset: col,
                        row_stride: 3 * h,
                        col_stride: 1,
                    },
                    1.0,
                    false,
                    1,
                );
            }
        });
    spare.give(d_z);
    // dx = dmid (residual) + dqkv · Wqkv
    let mut dx = spare.take(n * h);
    matmul_wt(&d_qkv, 3 * h, &blk.qkv_w, h, &mut dx);
    spare.give(d_qkv);
    dx.par_iter_mut()
        .zip(d_mid.par_iter())
        .for_each(|(a, b)| *a += b);
    spare.give(d_mid);
    spare.give(std::mem::replace(d, dx));
}

/// Runs blocks `first..=last` on `x` (packed rows entering block `first`), calls `seed` with
/// the output to get `∂f/∂output`, and returns the gradient entering each block
/// `first..=last` (index 0 = block `first`), packed like `x`.
pub(crate) fn residual_gradients(
    m: &Bert,
    mut x: Vec<f32>,
    offsets: &[usize],
    first: usize,
    last: usize,
    seed: &mut dyn FnMut(&[f32]) -> Vec<f32>,
) -> Vec<Vec<f32>> {
    let blocks = &m.fast.blocks[first..=last];
    let mut tapes: Vec<BlockTape> = blocks
        .iter()
        .map(|blk| block_forward(m, blk, &mut x, offsets))
        .collect();
    let mut d = seed(&x);
    m.spare.give(x);
    let mut entering = vec![Vec::new(); blocks.len()];
    for (i, blk) in blocks.iter().enumerate().rev() {
        let tape = tapes.pop().expect("one tape per block");
        block_backward(m, blk, &tape, &mut d, offsets);
        tape.recycle(&m.spare);
        entering[i] = d.clone();
    }
    m.spare.give(d);
    m.spare.end_batch();
    entering
}

/// The gradient of `f` at the token embeddings (`hook_embed`): `embeds` holds packed rows
/// (example `b` at `offsets[b]..offsets[b + 1]`), to which the position and token-type rows of
/// the real tokens are added (`position_ids`, `type_ids`, packed like `embeds`) before the
/// embedding LayerNorm,
/// as in the forward; blocks `0..=last` run on the result, `seed` turns block `last`'s packed
/// output into `∂f/∂output`, and the chain rule runs back through the blocks and the LayerNorm
/// (the sum passes the gradient on to the word embeddings unchanged).
pub(crate) fn embedding_gradients(
    m: &Bert,
    embeds: &[f32],
    position_ids: &[u32],
    type_ids: &[u32],
    offsets: &[usize],
    last: usize,
    seed: &mut dyn FnMut(&[f32]) -> Vec<f32>,
) -> Vec<f32> {
    let h = m.cfg.hidden_size;
    let w = &m.fast;
    let mut x = embeds.to_vec();
    for bounds in offsets.windows(2) {
        for row in bounds[0]..bounds[1] {
            let (p, ty) = (position_ids[row] as usize, type_ids[row] as usize);
            let (pos, typ) = (
                &w.position[p * h..(p + 1) * h],
                &w.token_type[ty * h..(ty + 1) * h],
            );
            for ((v, a), b) in x[row * h..(row + 1) * h].iter_mut().zip(pos).zip(typ) {
                *v += a + b;
            }
        }
    }
    let (xhat, inv) = layer_norm_taped(&m.spare, &mut x, &w.embed_ln);
    let mut entering = residual_gradients(m, x, offsets, 0, last, seed);
    let mut d = entering.swap_remove(0);
    layer_norm_backward(&mut d, &xhat, &inv, &w.embed_ln.0);
    m.spare.give(xhat);
    d
}
