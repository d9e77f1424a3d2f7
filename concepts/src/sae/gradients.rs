//! The loss of one training batch and its gradients, with a hand-written sparse backward.
//!
//! Loss per batch of `B` tokens (`x` already scaled), summed over the decoder's levels `l`
//! (one level, all latents, unless Matryoshka widths are set; level `l` reconstructs with the
//! latents below its width only, Bussmann et al. 2025):
//! `L = (1 / (B·d)) Σ_l Σ_b ‖x̂_{l,b} − x_b‖²`
//! `  + λ / (B·d) · Σ_b Σ_j f_bj` (ReLU: Anthropic's `‖x − x̂‖² + λ Σ f` per token, divided by
//! d like the error term, so λ means what it means there)
//! `  + λ₀ / (B·d) · Σ_b Σ_j [pre_bj > θ_j]` (JumpReLU: the L0 penalty of Rajamanoharan et al.
//! 2024, SAELens's `l0_coefficient` divided by d in the same way)
//! `  + α · Σ_b ‖ê_b − r_b‖² / Σ_b ‖r_b − r̄‖²` (TopK and BatchTopK with dead latents: AuxK,
//! where `r = x − x̂` is held constant and `ê = W_dec · TopK_{k_aux}(pre-activations of dead
//! latents)`).
//!
//! A transcoder (Dunefsky et al. 2024) trains with the same loss against another hook's rows:
//! the encoder reads `x` uncentred (`W_enc x + b_enc`, SAELens's `Transcoder`), the decoder
//! predicts the target `y`, optionally plus a dense skip `W_skip x` (Paulo et al. 2025); see
//! [`Transcode`].
//!
//! Why not candle's autograd: it would differentiate the encoder product densely
//! (`xᵀ · ∂L/∂pre`, another `B × d × width` GEMM) although `∂L/∂pre` is zero outside the
//! `B·k` active entries. The backward here touches only those entries, so a step costs one dense
//! product. Where many latents fire (a JumpReLU SAE's first steps), dense products take over
//! (`dense_backward.rs`). `train_tests.rs` checks both against candle's autograd.

use super::codes::{select, Codes, Selection};
use super::metrics::variance_about_mean;
use super::options::Resolved;
use super::{
    axpy, batch_top_k, dense, dense_backward, dot, jumprelu, matryoshka, simd, Architecture, Sae,
};
use crate::ConceptError;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

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

/// Hyper-parameters of a step that do not live in `Resolved`.
#[derive(Debug, Clone, Copy)]
pub struct StepConfig {
    pub aux_coefficient: f32,
    pub dead_window: u64,
    pub decay_fraction: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// JumpReLU: the L0 penalty's coefficient λ₀ and the straight-through estimator's
    /// bandwidth ε.
    pub l0_coefficient: f32,
    pub bandwidth: f32,
    /// BatchTopK: the rate of the running average that becomes the inference threshold.
    pub threshold_lr: f64,
    /// The share of active (token, latent) entries from which the backward uses dense
    /// products ([`DENSE_BACKWARD_FROM`] in training).
    pub dense_from: f64,
}

/// Above about 2 % active entries three GEMMs beat the sparse backward's per-entry passes
/// (measured on the `just bench-sae` shapes; see `dense_backward.rs`).
pub const DENSE_BACKWARD_FROM: f64 = 0.02;

/// Gradients of the loss, shaped like the SAE's weights (`threshold` empty unless JumpReLU,
/// `w_skip` empty unless a transcoder with a skip connection).
#[derive(Debug, Clone)]
pub struct Gradients {
    pub w_enc: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub w_dec: Vec<f32>,
    pub b_dec: Vec<f32>,
    pub threshold: Vec<f32>,
    pub w_skip: Vec<f32>,
}

/// What turns a step into a transcoder's: the rows the decoder must predict (`rows × d`, one
/// per input row) and the skip connection's current weights (`d × d`, output-major: `ŷ +=
/// W_skip x`), if it has one. The encoder then reads `x` without subtracting `b_dec`, which
/// lives in the output space.
#[derive(Debug, Clone, Copy)]
pub struct Transcode<'a> {
    pub target: &'a [f32],
    pub skip: Option<&'a [f32]>,
}

impl Gradients {
    pub(crate) fn empty() -> Self {
        Self {
            w_enc: Vec::new(),
            b_enc: Vec::new(),
            w_dec: Vec::new(),
            b_dec: Vec::new(),
            threshold: Vec::new(),
            w_skip: Vec::new(),
        }
    }

    pub(crate) fn zeros_like(sae: &Sae) -> Self {
        Self {
            w_enc: vec![0.0; sae.w_enc.len()],
            b_enc: vec![0.0; sae.b_enc.len()],
            w_dec: vec![0.0; sae.w_dec.len()],
            b_dec: vec![0.0; sae.b_dec.len()],
            threshold: vec![0.0; sae.threshold.len()],
            w_skip: Vec::new(),
        }
    }

    /// Also room for a `d × d` skip connection's gradient.
    pub(crate) fn with_skip(mut self, d: usize) -> Self {
        self.w_skip = vec![0.0; d * d];
        self
    }
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
    let (stats, codes) = gradients_into(sae, x, None, dead, resolved, config, &mut grads)?;
    Ok((grads, stats, codes))
}

/// [`gradients`] of a transcoder's loss (see [`Transcode`]).
pub fn transcoder_gradients(
    sae: &Sae,
    x: &[f32],
    transcode: Transcode<'_>,
    dead: &[u32],
    resolved: &Resolved,
    config: &StepConfig,
) -> Result<(Gradients, StepStats, Codes), ConceptError> {
    let mut grads = Gradients::zeros_like(sae);
    if transcode.skip.is_some() {
        grads = grads.with_skip(sae.d_in);
    }
    let (stats, codes) =
        gradients_into(sae, x, Some(transcode), dead, resolved, config, &mut grads)?;
    Ok((grads, stats, codes))
}

/// [`gradients`] into buffers shaped like the weights (overwritten); a transcoder's with
/// `transcode`.
pub fn gradients_into(
    sae: &Sae,
    x: &[f32],
    transcode: Option<Transcode<'_>>,
    dead: &[u32],
    resolved: &Resolved,
    config: &StepConfig,
    grads: &mut Gradients,
) -> Result<(StepStats, Codes), ConceptError> {
    let d = sae.d_in;
    let rows = x.len() / d;
    let centre = transcode.is_none();
    let bias = if centre {
        sae.encoder_bias()
    } else {
        sae.b_enc.clone()
    };
    // What the SAE part must reproduce: x, or the target less the skip connection's share.
    let target: Cow<'_, [f32]> = match transcode {
        None => Cow::Borrowed(x),
        Some(Transcode { target, skip: None }) => Cow::Borrowed(target),
        Some(Transcode {
            target,
            skip: Some(w_skip),
        }) => {
            let mut rest = skip_product(x, w_skip, d)?;
            rest.par_iter_mut()
                .zip(target.par_iter())
                .for_each(|(r, t)| *r = t - *r);
            Cow::Owned(rest)
        }
    };
    let use_aux = matches!(
        sae.architecture,
        Architecture::TopK { .. } | Architecture::BatchTopK { .. }
    ) && !dead.is_empty()
        && config.aux_coefficient > 0.0;
    let k_aux = resolved.k_aux.min(dead.len());
    let jump = sae.architecture == Architecture::JumpRelu;
    let selection = sae.selection(&[]);
    let (mut parts, mut aux_parts, mut band_parts) = (Vec::new(), Vec::new(), Vec::new());
    dense::for_each_product_block(x, d, &sae.w_enc, |_, pre| {
        parts.push(match sae.architecture {
            // Each row's best candidates first, the batch-wide cut after (`batch_top_k`).
            Architecture::BatchTopK { k } => batch_top_k::row_candidates(
                pre,
                sae.width,
                &bias,
                batch_top_k::candidates(k, sae.width),
            ),
            _ => select(pre, sae.width, &bias, selection),
        });
        if use_aux {
            aux_parts.push(select(
                pre,
                sae.width,
                &bias,
                Selection::TopKAmong(k_aux, dead),
            ));
        }
        if jump {
            band_parts.push(jumprelu::band(
                pre,
                sae.width,
                &bias,
                &sae.threshold,
                config.bandwidth,
            ));
        }
    })?;
    let mut codes = Codes::concat(parts);
    if let Architecture::BatchTopK { k } = sae.architecture {
        codes = batch_top_k::cut(codes, k, x, sae, &bias)?;
    }
    let aux_codes = use_aux.then(|| Codes::concat(aux_parts));

    // ∂L/∂x̂ for each decoder level, summed over the levels a latent belongs to.
    let scale = 2.0 / (rows * d) as f32;
    let dense = codes.nnz() as f64 >= config.dense_from * (rows * sae.width) as f64;
    let levels = matryoshka::Levels::new(sae, &codes, &target, &resolved.levels, scale, dense)?;
    let total_variance = variance_about_mean(transcode.map_or(x, |t| t.target), d);
    let sse = levels.sse;
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
            let residual: Vec<f32> = target
                .iter()
                .zip(&levels.x_hat)
                .map(|(x, h)| x - h)
                .collect();
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
    grads.w_enc.fill(0.0);
    grads.w_dec.fill(0.0);
    grads.b_enc.fill(0.0);
    let mut sources: Vec<(&Codes, &Vec<f32>, Vec<f32>)> = Vec::new();
    let level_codes;
    if dense {
        dense_backward::accumulate(sae, x, centre, &codes, &levels, l1, grads)?;
    } else {
        // One source of entries per decoder level (each with its own ∂L/∂x̂).
        level_codes = levels.codes_by_level(&codes);
        sources.extend(
            level_codes
                .iter()
                .zip(&levels.g_out)
                .map(|(c, g)| (c.as_ref(), g, code_gradients(sae, c, g, l1))),
        );
    }
    if let (Some(a), Some(g)) = (&aux_codes, &aux_grad) {
        sources.push((a, g, code_gradients(sae, a, g, 0.0)));
    }
    accumulate_latents(sae, x, centre, &sources, grads);

    // b_dec: directly through every level's x̂, and (SAEs) through the centring x − b_dec.
    grads.b_dec.clear();
    grads.b_dec.resize(d, 0.0);
    for row in levels.g_out[0].chunks_exact(d) {
        axpy(1.0, row, &mut grads.b_dec);
    }
    if let Some(Transcode { skip: Some(_), .. }) = transcode {
        // ŷ = … + W_skip x in every level: ∂L/∂W_skip = S_0ᵀ x.
        grads.w_skip = skip_gradient(&levels.g_out[0], x, d)?;
    }
    if centre {
        subtract_through_encoder(sae, grads);
    }

    if jump {
        let band = Codes::concat(band_parts);
        grads.threshold = jumprelu::threshold_gradients(
            sae,
            &band,
            &levels.g_out[0],
            config.bandwidth,
            config.l0_coefficient / (rows * d) as f32,
        );
    }
    Ok((stats, codes))
}

/// The centring `x − b_dec` passes `−W_encᵀ ∂L/∂pre` on to `b_dec` (`∂L/∂pre` summed over
/// the batch is `∂L/∂b_enc`).
fn subtract_through_encoder(sae: &Sae, grads: &mut Gradients) {
    let d = sae.d_in;
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
}

/// `x · W_skipᵀ` (`rows × d`): the skip connection's output.
fn skip_product(x: &[f32], w_skip: &[f32], d: usize) -> Result<Vec<f32>, ConceptError> {
    let rows = x.len() / d;
    let xt = Tensor::from_slice(x, (rows, d), &Device::Cpu).map_err(candle)?;
    let w = Tensor::from_slice(w_skip, (d, d), &Device::Cpu).map_err(candle)?;
    let out = xt.matmul(&w.t().map_err(candle)?).map_err(candle)?;
    out.flatten_all().and_then(|t| t.to_vec1()).map_err(candle)
}

/// `gᵀ · x` (`d × d`, output-major like `W_skip`).
fn skip_gradient(g: &[f32], x: &[f32], d: usize) -> Result<Vec<f32>, ConceptError> {
    let rows = x.len() / d;
    let gt = Tensor::from_slice(g, (rows, d), &Device::Cpu).map_err(candle)?;
    let xt = Tensor::from_slice(x, (rows, d), &Device::Cpu).map_err(candle)?;
    let out = gt.t().map_err(candle)?.matmul(&xt).map_err(candle)?;
    out.flatten_all().and_then(|t| t.to_vec1()).map_err(candle)
}

fn candle(e: candle_core::Error) -> ConceptError {
    ConceptError::Invalid(format!("transcoder skip product: {e}"))
}

/// Adds to the `W_dec`, `W_enc` and `b_enc` gradients, latent by latent, from every source's
/// entries `(codes, ∂L/∂x̂, ∂L/∂pre)`: grouped by latent so each latent's rows are written by
/// one task (no atomics, deterministic order).
fn accumulate_latents(
    sae: &Sae,
    x: &[f32],
    centre: bool,
    sources: &[(&Codes, &Vec<f32>, Vec<f32>)],
    grads: &mut Gradients,
) {
    let d = sae.d_in;
    let by_latent = group_by_latent(sae.width, sources);
    // An SAE's encoder sees x − b_dec; a transcoder's sees x.
    let mut centred = x.to_vec();
    if centre {
        centred
            .par_chunks_mut(d)
            .for_each(|row| axpy(-1.0, &sae.b_dec, row));
    }
    const LATENTS: usize = 32;
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
}

/// `∂L/∂pre` for every active entry: `⟨∂L/∂out_r, W_dec[j]⟩ + l1` (ReLU passes it through since
/// every kept activation is positive; so does JumpReLU above its threshold).
pub(crate) fn code_gradients(sae: &Sae, codes: &Codes, g_out: &[f32], l1: f32) -> Vec<f32> {
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

fn group_by_latent(width: usize, sources: &[(&Codes, &Vec<f32>, Vec<f32>)]) -> ByLatent {
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
            let span = codes.offsets[r]..codes.offsets[r + 1];
            let row = codes.index[span.clone()]
                .iter()
                .zip(&codes.value[span.clone()])
                .zip(&g_pre[span]);
            for ((&j, &v), &g) in row {
                let j = j as usize;
                entries[fill[j]] = (s as u8, r as u32, v, g);
                fill[j] += 1;
            }
        }
    }
    ByLatent { offsets, entries }
}
