//! The decode and the backward through the codes with dense products, for batches where many
//! latents fire.
//!
//! The sparse backward (`gradients.rs`) costs about three `d`-long passes per active entry,
//! memory-bound; dense products cost three `rows × width × d` GEMMs whatever fires. TopK's
//! 32 of 6,144 latents (0.5 %) are far on the sparse side, but a JumpReLU SAE starts with half
//! its latents above their 0.01 thresholds and stays dense for many steps (so does a ReLU SAE
//! before its L1 penalty bites): past `StepConfig::dense_from` of the entries, the three
//! products win. Both paths compute the same gradients (`train_tests.rs` runs each).
//!
//! For level `g` (latents `[lo, hi)`, gradient `S_g`, one level without Matryoshka) and the
//! dense codes `F`: `∂L/∂F[:, lo..hi] = S_g · W_dec[lo..hi]ᵀ`, `∂L/∂W_dec[lo..hi] = F[:,
//! lo..hi]ᵀ · S_g`; then `∂L/∂pre = mask ⊙ (∂L/∂F + l1)`, `∂L/∂W_enc = (∂L/∂pre)ᵀ · (x −
//! b_dec)` and `∂L/∂b_enc` its column sums. Rows go in blocks so the dense matrices stay small.

use super::codes::Codes;
use super::gradients::Gradients;
use super::matryoshka::Levels;
use super::{add_into, axpy, simd, Sae};
use crate::ConceptError;
use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// Adds the gradients through `codes` (all levels) to `grads`.
pub(crate) fn accumulate(
    sae: &Sae,
    x: &[f32],
    centre: bool,
    codes: &Codes,
    levels: &Levels,
    l1: f32,
    grads: &mut Gradients,
) -> Result<(), ConceptError> {
    let (d, width) = (sae.d_in, sae.width);
    let w_dec = tensor(&sae.w_dec, (width, d))?;
    for (start, len) in row_blocks(codes.rows(), width) {
        let f = dense_codes(codes, start, len, width);
        let f_t = tensor(&f, (len, width))?;
        let mut g_f = vec![0.0f32; len * width];
        for (g, (lo, hi)) in levels.spans().enumerate() {
            let s_g = tensor(&levels.g_out[g][start * d..(start + len) * d], (len, d))?;
            let w_level = w_dec.narrow(0, lo, hi - lo).map_err(candle)?;
            // ∂L/∂F for this level's columns.
            let part = values(&s_g.matmul(&w_level.t().map_err(candle)?).map_err(candle)?)?;
            g_f.par_chunks_mut(width)
                .zip(part.par_chunks(hi - lo))
                .for_each(|(row, p)| row[lo..hi].copy_from_slice(p));
            // ∂L/∂W_dec for this level's rows.
            let f_level = f_t.narrow(1, lo, hi - lo).map_err(candle)?;
            let g_dec = values(&f_level.t().map_err(candle)?.matmul(&s_g).map_err(candle)?)?;
            add_into(&mut grads.w_dec[lo * d..hi * d], &g_dec);
        }
        // ∂L/∂pre: where a latent fired, ∂L/∂F plus the L1 term; zero elsewhere.
        g_f.par_chunks_mut(width)
            .zip(f.par_chunks(width))
            .for_each(|(g, f)| {
                simd(
                    #[inline(always)]
                    || {
                        for (g, f) in g.iter_mut().zip(f) {
                            *g = if *f != 0.0 { *g + l1 } else { 0.0 };
                        }
                    },
                )
            });
        for row in g_f.chunks_exact(width) {
            axpy(1.0, row, &mut grads.b_enc);
        }
        let mut centred = x[start * d..(start + len) * d].to_vec();
        if centre {
            centred
                .par_chunks_mut(d)
                .for_each(|row| axpy(-1.0, &sae.b_dec, row));
        }
        let g_pre = tensor(&g_f, (len, width))?;
        let centred = tensor(&centred, (len, d))?;
        let g_enc = values(
            &g_pre
                .t()
                .map_err(candle)?
                .matmul(&centred)
                .map_err(candle)?,
        )?;
        add_into(&mut grads.w_enc, &g_enc);
    }
    Ok(())
}

/// Each level's own contribution `F[:, lo..hi] · W_dec[lo..hi]` into `buffers` (zeroed,
/// `rows × d` each), level 0 plus `b_dec`: what the sparse decode in `Levels::new` computes.
pub(crate) fn decode_levels(
    sae: &Sae,
    codes: &Codes,
    widths: &[usize],
    buffers: &mut [Vec<f32>],
) -> Result<(), ConceptError> {
    let (d, width) = (sae.d_in, sae.width);
    let w_dec = tensor(&sae.w_dec, (width, d))?;
    for (start, len) in row_blocks(codes.rows(), width) {
        let f = tensor(&dense_codes(codes, start, len, width), (len, width))?;
        for (l, buffer) in buffers.iter_mut().enumerate() {
            let (lo, hi) = (if l == 0 { 0 } else { widths[l - 1] }, widths[l]);
            let part = f
                .narrow(1, lo, hi - lo)
                .and_then(|f| f.matmul(&w_dec.narrow(0, lo, hi - lo)?))
                .map_err(candle)?;
            buffer[start * d..(start + len) * d].copy_from_slice(&values(&part)?);
            if l == 0 {
                buffer[start * d..(start + len) * d]
                    .par_chunks_mut(d)
                    .for_each(|row| axpy(1.0, &sae.b_dec, row));
            }
        }
    }
    Ok(())
}

/// `(start, len)` of each block of rows, sized so a block's dense codes stay under
/// [`BLOCK_BYTES`].
fn row_blocks(rows: usize, width: usize) -> impl Iterator<Item = (usize, usize)> {
    let block_rows = (BLOCK_BYTES / (4 * width)).clamp(1, rows.max(1));
    (0..rows)
        .step_by(block_rows)
        .map(move |start| (start, block_rows.min(rows - start)))
}

/// Rows `start..start + len` of `codes` as a dense `len × width` matrix.
fn dense_codes(codes: &Codes, start: usize, len: usize, width: usize) -> Vec<f32> {
    let mut f = vec![0.0f32; len * width];
    f.par_chunks_mut(width).enumerate().for_each(|(i, row)| {
        for (j, v) in codes.row(start + i) {
            row[j] = v;
        }
    });
    f
}

fn tensor(v: &[f32], shape: (usize, usize)) -> Result<Tensor, ConceptError> {
    Tensor::from_slice(v, shape, &Device::Cpu).map_err(candle)
}

fn values(t: &Tensor) -> Result<Vec<f32>, ConceptError> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle)
}

/// Rows per block: the dense codes and their gradient stay under 64 MB each.
const BLOCK_BYTES: usize = 64 << 20;

fn candle(e: candle_core::Error) -> ConceptError {
    ConceptError::Invalid(format!("candle: {e}"))
}
