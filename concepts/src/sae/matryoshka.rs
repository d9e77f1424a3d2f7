//! Matryoshka SAEs (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka
//! SAEs"; SAELens `MatryoshkaBatchTopKTrainingSAE`): the latents are split into nested levels
//! by width `w_0 < w_1 < … < w_{L−1} = width`, and the loss adds one reconstruction error per
//! level, level `l` decoding with the latents below `w_l` only (each level with `b_dec`). The
//! first latents must then reconstruct on their own, which pushes general features to the
//! front and keeps them from being absorbed by specific ones.
//!
//! The gradients stay sparse: with `g_l = ∂L/∂x̂_l`, a latent of level `g` is in every
//! reconstruction from level `g` on, so its entries see `S_g = Σ_{l≥g} g_l`; `b_dec` is in
//! all of them and sees `S_0`. One level is the plain SAE loss, computed exactly as before.

use super::codes::Codes;
use super::{add_into, axpy, dense_backward, simd, Sae};
use crate::ConceptError;
use rayon::prelude::*;
use std::borrow::Cow;

/// Every level's reconstruction gradient for one batch.
pub(crate) struct Levels {
    /// Level ends (latents `[w_{l−1}, w_l)` make up level `l`); the last is the width.
    widths: Vec<usize>,
    /// The full reconstruction (all levels), `rows × d`.
    pub x_hat: Vec<f32>,
    /// `Σ‖x̂ − x‖²` of the full reconstruction.
    pub sse: f64,
    /// `S_g = Σ_{l≥g} ∂L/∂x̂_l` per level, `rows × d` each.
    pub g_out: Vec<Vec<f32>>,
}

impl Levels {
    /// `widths`: the level ends as resolved (empty means one level); `scale` = `∂L/∂x̂ / (x̂ − x)`;
    /// `dense`: decode with dense products (many latents active, see `dense_backward.rs`).
    pub fn new(
        sae: &Sae,
        codes: &Codes,
        x: &[f32],
        widths: &[usize],
        scale: f32,
        dense: bool,
    ) -> Result<Levels, ConceptError> {
        let d = sae.d_in;
        let widths: Vec<usize> = if widths.is_empty() {
            vec![sae.width]
        } else {
            widths.to_vec()
        };
        let rows = codes.rows();
        // Each level's own latents' contribution; level 0 starts from b_dec so that one level
        // is exactly `Sae::decode`.
        let mut buffers: Vec<Vec<f32>> =
            (0..widths.len()).map(|_| vec![0.0f32; rows * d]).collect();
        if dense {
            dense_backward::decode_levels(sae, codes, &widths, &mut buffers)?;
        }
        for (l, buffer) in buffers.iter_mut().enumerate().filter(|_| !dense) {
            let lo = if l == 0 { 0 } else { widths[l - 1] };
            let hi = widths[l];
            buffer
                .par_chunks_mut(d * 64)
                .enumerate()
                .for_each(|(c, block)| {
                    simd(
                        #[inline(always)]
                        || {
                            for (i, row) in block.chunks_exact_mut(d).enumerate() {
                                if l == 0 {
                                    row.copy_from_slice(&sae.b_dec);
                                }
                                for (j, v) in codes.row(c * 64 + i) {
                                    if (lo..hi).contains(&j) {
                                        axpy(v, sae.decoder_row(j), row);
                                    }
                                }
                            }
                        },
                    )
                });
        }
        // Prefix sums: buffer l becomes x̂_l.
        for l in 1..buffers.len() {
            let (done, rest) = buffers.split_at_mut(l);
            add_into(&mut rest[0], &done[l - 1]);
        }
        let x_hat = buffers.last().expect("at least one level").clone();
        // Each x̂_l becomes g_l = scale · (x̂_l − x); the full level's error is the reported one.
        let mut sse = 0.0;
        let last = buffers.len() - 1;
        for (l, buffer) in buffers.iter_mut().enumerate() {
            let level_sse = to_gradient(buffer, x, d, scale);
            if l == last {
                sse = level_sse;
            }
        }
        // Suffix sums: buffer g becomes S_g.
        for g in (0..last).rev() {
            let (head, tail) = buffers.split_at_mut(g + 1);
            add_into(&mut head[g], &tail[0]);
        }
        Ok(Levels {
            widths,
            x_hat,
            sse,
            g_out: buffers,
        })
    }

    /// Each level's latents, `[lo, hi)`.
    pub fn spans(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.widths
            .iter()
            .enumerate()
            .map(|(l, &hi)| (if l == 0 { 0 } else { self.widths[l - 1] }, hi))
    }

    /// `codes` split by level (borrowed when there is one level).
    pub fn codes_by_level<'a>(&self, codes: &'a Codes) -> Vec<Cow<'a, Codes>> {
        if self.widths.len() == 1 {
            return vec![Cow::Borrowed(codes)];
        }
        let mut out: Vec<Codes> = (0..self.widths.len())
            .map(|_| Codes {
                offsets: vec![0],
                ..Codes::default()
            })
            .collect();
        for r in 0..codes.rows() {
            for (j, v) in codes.row(r) {
                let l = self.widths.partition_point(|&w| w <= j);
                out[l].index.push(j as u32);
                out[l].value.push(v);
            }
            for level in &mut out {
                level.offsets.push(level.index.len());
            }
        }
        out.into_iter().map(Cow::Owned).collect()
    }
}

/// Turns a reconstruction into `scale · (x̂ − x)` in place; returns `Σ (x̂ − x)²`.
fn to_gradient(x_hat: &mut [f32], x: &[f32], d: usize, scale: f32) -> f64 {
    x_hat
        .par_chunks_mut(d * 64)
        .zip(x.par_chunks(d * 64))
        .map(|(g, x)| {
            simd(
                #[inline(always)]
                || {
                    let mut sse = 0.0f32;
                    for (g, x) in g.iter_mut().zip(x) {
                        let e = *g - x;
                        *g = scale * e;
                        sse += e * e;
                    }
                    sse as f64
                },
            )
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::Architecture;

    #[test]
    fn level_gradients_sum_the_reconstructions_each_latent_is_in() {
        // d = 1, three latents with decoder 1, 2, 4; levels {0}, {1}, {2}; b_dec = 0.5.
        let sae = Sae {
            input_norm: Default::default(),
            d_in: 1,
            width: 3,
            architecture: Architecture::TopK { k: 2 },
            w_enc: vec![1.0; 3],
            b_enc: vec![0.0; 3],
            w_dec: vec![1.0, 2.0, 4.0],
            b_dec: vec![0.5],
            threshold: Vec::new(),
            gate: None,
        };
        let codes = Codes {
            offsets: vec![0, 3],
            index: vec![0, 1, 2],
            value: vec![1.0, 1.0, 1.0],
        };
        let x = [3.0f32];
        for dense in [false, true] {
            let levels = Levels::new(&sae, &codes, &x, &[1, 2, 3], 1.0, dense).unwrap();
            // x̂ = 1.5, 3.5, 7.5 → errors −1.5, 0.5, 4.5.
            assert_eq!(levels.x_hat, vec![7.5]);
            assert_eq!(levels.sse, 4.5 * 4.5);
            assert_eq!(levels.g_out, vec![vec![3.5], vec![5.0], vec![4.5]]);
        }
        let levels = Levels::new(&sae, &codes, &x, &[1, 2, 3], 1.0, false).unwrap();
        let split = levels.codes_by_level(&codes);
        assert_eq!(split.len(), 3);
        assert_eq!(split[1].index, vec![1]);
        assert_eq!(split[2].offsets, vec![0, 1]);
    }
}
