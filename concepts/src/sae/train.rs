//! One SAE training step: forward, loss, hand-written sparse backward, Adam, decoder
//! re-normalisation.
//!
//! Loss per batch of `B` tokens (`x` already scaled):
//! `L = (1 / (B·d)) Σ_b ‖x̂_b − x_b‖²`
//! `  + λ / (B·d) · Σ_b Σ_j f_bj` (ReLU architecture: Anthropic's `‖x − x̂‖² + λ Σ f` per
//! token, divided by d like the error term, so λ means what it means there)
//! `  + α · Σ_b ‖ê_b − r_b‖² / Σ_b ‖r_b − r̄‖²` (TopK with dead latents: AuxK, where
//! `r = x − x̂` is held constant and `ê = W_dec · TopK_{k_aux}(pre-activations of dead latents)`).
//!
//! Why not candle's autograd: it would differentiate the encoder product densely
//! (`xᵀ · ∂L/∂pre`, another `B × d × width` GEMM) although `∂L/∂pre` is zero outside the
//! `B·k` active entries. The backward here touches only those entries, so a step costs one dense
//! product. `tests::gradients_match_candle_autograd` checks it against candle's autograd.

use super::codes::{select, Codes, Selection};
use super::metrics::variance_about_mean;
use super::options::Resolved;
use super::{axpy, dense, dot, simd, Architecture, Sae};
use crate::ConceptError;
use rayon::prelude::*;

/// Gradients of the loss, shaped like the SAE's weights.
#[derive(Debug, Clone)]
pub struct Gradients {
    pub w_enc: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub w_dec: Vec<f32>,
    pub b_dec: Vec<f32>,
}

/// What one step measured (on the scaled batch, before the update).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepStats {
    /// Mean squared error per element.
    pub mse: f64,
    /// Fraction of the batch's variance about its mean left unexplained.
    pub fvu: f64,
    /// The AuxK term (0 when no latent is dead).
    pub aux_loss: f64,
    /// Mean active latents per token.
    pub l0: f64,
    /// Latents dead at the start of the step.
    pub dead: usize,
}

/// Adam moments for each weight.
#[derive(Debug, Clone)]
pub struct AdamState {
    pub m: Gradients,
    pub v: Gradients,
}

/// Hyper-parameters of a step that do not live in `Resolved`.
#[derive(Debug, Clone, Copy)]
pub struct StepConfig {
    pub aux_coefficient: f32,
    pub dead_window: u64,
    pub decay_fraction: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// A training run's full state: everything a checkpoint must hold to resume bit-for-bit.
#[derive(Debug, Clone)]
pub struct Trainer {
    pub sae: Sae,
    pub adam: AdamState,
    /// Steps completed.
    pub step: usize,
    pub tokens_seen: u64,
    /// `tokens_seen` when each latent last fired.
    pub last_fired: Vec<u64>,
    pub resolved: Resolved,
    pub config: StepConfig,
    /// Reused between steps: the weights' size, so allocating it per step would page-fault.
    scratch: Gradients,
}

impl Gradients {
    fn empty() -> Self {
        Self {
            w_enc: Vec::new(),
            b_enc: Vec::new(),
            w_dec: Vec::new(),
            b_dec: Vec::new(),
        }
    }

    fn zeros_like(sae: &Sae) -> Self {
        Self {
            w_enc: vec![0.0; sae.w_enc.len()],
            b_enc: vec![0.0; sae.b_enc.len()],
            w_dec: vec![0.0; sae.w_dec.len()],
            b_dec: vec![0.0; sae.b_dec.len()],
        }
    }
}

impl Trainer {
    pub fn new(sae: Sae, resolved: Resolved, config: StepConfig) -> Self {
        let adam = AdamState {
            m: Gradients::zeros_like(&sae),
            v: Gradients::zeros_like(&sae),
        };
        let last_fired = vec![0; sae.width];
        let scratch = Gradients::zeros_like(&sae);
        Self {
            scratch,
            sae,
            adam,
            step: 0,
            tokens_seen: 0,
            last_fired,
            resolved,
            config,
        }
    }

    /// Latents that have not fired within the dead window.
    pub fn dead_latents(&self) -> Vec<u32> {
        let window = self.config.dead_window;
        (0..self.sae.width as u32)
            .filter(|&j| self.tokens_seen.saturating_sub(self.last_fired[j as usize]) > window)
            .collect()
    }

    /// Trains on one batch (`rows × d_in`, scaled).
    pub fn step(&mut self, x: &[f32]) -> Result<StepStats, ConceptError> {
        let dead = self.dead_latents();
        let mut grads = std::mem::replace(&mut self.scratch, Gradients::empty());
        let result = gradients_into(
            &self.sae,
            x,
            &dead,
            &self.resolved,
            &self.config,
            &mut grads,
        );
        let (stats, codes) = match result {
            Ok(r) => r,
            Err(e) => {
                self.scratch = grads;
                return Err(e);
            }
        };
        let lr = self.resolved.lr_at(self.step, self.config.decay_fraction);
        self.adam_update(&grads, lr);
        self.scratch = grads;
        normalise_rows(&mut self.sae.w_dec, self.sae.d_in);
        self.tokens_seen += codes.rows() as u64;
        for &j in &codes.index {
            self.last_fired[j as usize] = self.tokens_seen;
        }
        self.step += 1;
        Ok(stats)
    }

    fn adam_update(&mut self, g: &Gradients, lr: f64) {
        let t = (self.step + 1) as i32;
        let c = &self.config;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        // Bias corrections folded into the step size and epsilon.
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let step = (lr * bc2.sqrt() / bc1) as f32;
        let eps = (c.eps * bc2.sqrt()) as f32;
        let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            p.par_chunks_mut(4096)
                .zip(g.par_chunks(4096))
                .zip(m.par_chunks_mut(4096))
                .zip(v.par_chunks_mut(4096))
                .for_each(|(((p, g), m), v)| {
                    for i in 0..p.len() {
                        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                        p[i] -= step * m[i] / (v[i].sqrt() + eps);
                    }
                });
        };
        let (sae, m, v) = (&mut self.sae, &mut self.adam.m, &mut self.adam.v);
        update(&mut sae.w_enc, &g.w_enc, &mut m.w_enc, &mut v.w_enc);
        update(&mut sae.b_enc, &g.b_enc, &mut m.b_enc, &mut v.b_enc);
        update(&mut sae.w_dec, &g.w_dec, &mut m.w_dec, &mut v.w_dec);
        update(&mut sae.b_dec, &g.b_dec, &mut m.b_dec, &mut v.b_dec);
    }
}

/// Scales each row of `w` (`rows × d`) to unit norm (rows of zeros stay zero).
pub fn normalise_rows(w: &mut [f32], d: usize) {
    w.par_chunks_mut(d).for_each(|row| {
        let norm = dot(row, row).sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    });
}

/// Loss gradients, statistics and the batch's codes. `dead` lists the latents AuxK may use.
pub fn gradients(
    sae: &Sae,
    x: &[f32],
    dead: &[u32],
    resolved: &Resolved,
    config: &StepConfig,
) -> Result<(Gradients, StepStats, Codes), ConceptError> {
    let mut grads = Gradients::zeros_like(sae);
    let (stats, codes) = gradients_into(sae, x, dead, resolved, config, &mut grads)?;
    Ok((grads, stats, codes))
}

/// [`gradients`] into buffers shaped like the weights (overwritten).
pub fn gradients_into(
    sae: &Sae,
    x: &[f32],
    dead: &[u32],
    resolved: &Resolved,
    config: &StepConfig,
    grads: &mut Gradients,
) -> Result<(StepStats, Codes), ConceptError> {
    let d = sae.d_in;
    let rows = x.len() / d;
    let bias = sae.encoder_bias();
    let use_aux = matches!(sae.architecture, Architecture::TopK { .. })
        && !dead.is_empty()
        && config.aux_coefficient > 0.0;
    let k_aux = resolved.k_aux.min(dead.len());
    let (mut parts, mut aux_parts) = (Vec::new(), Vec::new());
    dense::for_each_product_block(x, d, &sae.w_enc, |_, pre| {
        parts.push(select(pre, sae.width, &bias, sae.selection(&[])));
        if use_aux {
            aux_parts.push(select(
                pre,
                sae.width,
                &bias,
                Selection::TopKAmong(k_aux, dead),
            ));
        }
    })?;
    let codes = Codes::concat(parts);
    let aux_codes = use_aux.then(|| Codes::concat(aux_parts));
    let x_hat = sae.decode(&codes);

    // ∂L/∂x̂ and the loss statistics.
    let scale = 2.0 / (rows * d) as f32;
    let mut g_out = vec![0.0f32; rows * d];
    let sse: f64 = g_out
        .par_chunks_mut(d * 64)
        .zip(x_hat.par_chunks(d * 64))
        .zip(x.par_chunks(d * 64))
        .map(|((g, h), x)| {
            simd(
                #[inline(always)]
                || {
                    let mut sse = 0.0f32;
                    for ((g, h), x) in g.iter_mut().zip(h).zip(x) {
                        let e = h - x;
                        *g = scale * e;
                        sse += e * e;
                    }
                    sse as f64
                },
            )
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    let total_variance = variance_about_mean(x, d);
    let mut stats = StepStats {
        mse: sse / (rows * d) as f64,
        fvu: if total_variance > 0.0 {
            sse / total_variance
        } else {
            f64::NAN
        },
        aux_loss: 0.0,
        l0: codes.nnz() as f64 / rows as f64,
        dead: dead.len(),
    };

    // AuxK: the dead latents' reconstruction of the (constant) residual.
    let aux_grad = match &aux_codes {
        Some(aux) => {
            let residual: Vec<f32> = x.iter().zip(&x_hat).map(|(x, h)| x - h).collect();
            let mut e_hat = vec![0.0f32; rows * d];
            e_hat.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
                for (j, v) in aux.row(r) {
                    axpy(v, sae.decoder_row(j), row);
                }
            });
            let denom = variance_about_mean(&residual, d).max(1e-12);
            let aux_sse: f64 = e_hat
                .iter()
                .zip(&residual)
                .map(|(e, r)| ((e - r) as f64).powi(2))
                .sum();
            stats.aux_loss = config.aux_coefficient as f64 * aux_sse / denom;
            let s = (2.0 * config.aux_coefficient as f64 / denom) as f32;
            Some(
                e_hat
                    .iter()
                    .zip(&residual)
                    .map(|(e, r)| s * (e - r))
                    .collect::<Vec<f32>>(),
            )
        }
        None => None,
    };

    let l1 = match sae.architecture {
        Architecture::Relu { l1_coefficient } => l1_coefficient / (rows * d) as f32,
        _ => 0.0,
    };
    let g_pre_main = code_gradients(sae, &codes, &g_out, l1);
    let g_pre_aux = match (&aux_codes, &aux_grad) {
        (Some(a), Some(g)) => code_gradients(sae, a, g, 0.0),
        _ => Vec::new(),
    };

    // Per-latent accumulation: group the entries by latent so every latent's rows are written
    // by one task (no atomics, deterministic order).
    let mut sources = vec![(&codes, &g_out, &g_pre_main)];
    if let (Some(a), Some(g)) = (&aux_codes, &aux_grad) {
        sources.push((a, g, &g_pre_aux));
    }
    let by_latent = group_by_latent(sae.width, &sources);
    // The encoder sees x − b_dec.
    let mut centred = x.to_vec();
    centred
        .par_chunks_mut(d)
        .for_each(|row| axpy(-1.0, &sae.b_dec, row));
    const LATENTS: usize = 32;
    grads.b_dec.clear();
    grads.b_dec.resize(d, 0.0);
    grads
        .w_dec
        .par_chunks_mut(d * LATENTS)
        .zip(grads.w_enc.par_chunks_mut(d * LATENTS))
        .zip(grads.b_enc.par_chunks_mut(LATENTS))
        .enumerate()
        .for_each(|(c, ((g_dec, g_enc), g_b))| {
            simd(
                #[inline(always)]
                || {
                    g_dec.fill(0.0);
                    g_enc.fill(0.0);
                    g_b.fill(0.0);
                    for i in 0..g_b.len() {
                        let j = c * LATENTS + i;
                        let (g_dec, g_enc) = (
                            &mut g_dec[i * d..(i + 1) * d],
                            &mut g_enc[i * d..(i + 1) * d],
                        );
                        let span = by_latent.offsets[j]..by_latent.offsets[j + 1];
                        for &(source, r, v, g_pre) in &by_latent.entries[span] {
                            let r = r as usize;
                            axpy(v, &sources[source as usize].1[r * d..(r + 1) * d], g_dec);
                            axpy(g_pre, &centred[r * d..(r + 1) * d], g_enc);
                            g_b[i] += g_pre;
                        }
                    }
                },
            )
        });
    // b_dec: directly through x̂, and through the centring x − b_dec in the encoder.
    for row in g_out.chunks_exact(d) {
        axpy(1.0, row, &mut grads.b_dec);
    }
    let partials: Vec<Vec<f32>> = grads
        .b_enc
        .par_chunks(256)
        .zip(sae.w_enc.par_chunks(256 * d))
        .map(|(gb, w)| {
            let mut acc = vec![0.0f32; d];
            for (&g, w) in gb.iter().zip(w.chunks_exact(d)) {
                if g != 0.0 {
                    axpy(g, w, &mut acc);
                }
            }
            acc
        })
        .collect();
    let mut through_encoder = vec![0.0f32; d];
    for p in &partials {
        axpy(1.0, p, &mut through_encoder);
    }
    axpy(-1.0, &through_encoder, &mut grads.b_dec);
    Ok((stats, codes))
}

/// `∂L/∂pre` for every active entry: `⟨∂L/∂out_r, W_dec[j]⟩ + l1` (ReLU passes it through since
/// every kept activation is positive).
fn code_gradients(sae: &Sae, codes: &Codes, g_out: &[f32], l1: f32) -> Vec<f32> {
    let d = sae.d_in;
    let mut out = vec![0.0f32; codes.nnz()];
    const ROWS: usize = 64;
    // Split the output at row-block boundaries so each task owns its rows' entries.
    let mut pieces = Vec::new();
    let mut rest = out.as_mut_slice();
    let mut start = 0;
    while start < codes.rows() {
        let end = (start + ROWS).min(codes.rows());
        let (piece, tail) = rest.split_at_mut(codes.offsets[end] - codes.offsets[start]);
        pieces.push((start, end, piece));
        rest = tail;
        start = end;
    }
    pieces.into_par_iter().for_each(|(start, end, piece)| {
        simd(
            #[inline(always)]
            || {
                let mut e = 0;
                for r in start..end {
                    let g_row = &g_out[r * d..(r + 1) * d];
                    for (j, _) in codes.row(r) {
                        piece[e] = dot(g_row, sae.decoder_row(j)) + l1;
                        e += 1;
                    }
                }
            },
        )
    });
    out
}

/// Entries `(source, row, activation, ∂L/∂pre)` grouped by latent (counting sort).
struct ByLatent {
    offsets: Vec<usize>,
    entries: Vec<(u8, u32, f32, f32)>,
}

fn group_by_latent(width: usize, sources: &[(&Codes, &Vec<f32>, &Vec<f32>)]) -> ByLatent {
    let mut counts = vec![0usize; width + 1];
    for (codes, _, _) in sources {
        for &j in &codes.index {
            counts[j as usize + 1] += 1;
        }
    }
    for j in 0..width {
        counts[j + 1] += counts[j];
    }
    let offsets = counts.clone();
    let mut fill = counts;
    let total = offsets[width];
    let mut entries = vec![(0u8, 0u32, 0.0f32, 0.0f32); total];
    for (s, (codes, _, g_pre)) in sources.iter().enumerate() {
        for r in 0..codes.rows() {
            for e in codes.offsets[r]..codes.offsets[r + 1] {
                let j = codes.index[e] as usize;
                entries[fill[j]] = (s as u8, r as u32, codes.value[e], g_pre[e]);
                fill[j] += 1;
            }
        }
    }
    ByLatent { offsets, entries }
}

#[cfg(test)]
#[path = "train_tests.rs"]
mod tests;
