//! Sparse autoencoders over cached activations: TopK (Gao et al. 2024) by default; BatchTopK,
//! JumpReLU and ReLU + L1 as alternatives, each optionally Matryoshka; gated SAEs are read from
//! the suites that ship them.
//!
//! Encode: `f = σ(W_enc (x − b_dec) + b_enc)` with σ = TopK-then-ReLU, ReLU, JumpReLU
//! (`pre · [pre > θ_j]`, Rajamanoharan et al. 2024) or gated (`[pre > 0] ·
//! ReLU(e^{r_j} W_enc_j (x − b_dec) + b_mag_j)`, the gate's bias being `b_enc`);
//! decode: `x̂ = W_dec f + b_dec`. Weights are stored latent-major: row `j` of `w_enc` is latent
//! `j`'s encoder vector (SAELens's `W_enc[:, j]`), row `j` of `w_dec` its decoder direction
//! (SAELens's `W_dec[j, :]`), so every sparse access reads one contiguous row.

mod batch_top_k;
pub mod checkpoint;
pub mod codes;
pub mod curve;
mod dense;
mod dense_backward;
pub mod ev_bootstrap;
pub mod fit;
pub mod formats;
pub mod gradients;
pub mod input_norm;
mod jumprelu;
mod matryoshka;
pub mod metrics;
pub mod options;
pub mod pca;
pub mod saelens;
pub mod stream;
mod tensors;
pub mod train;
pub mod transcoder;
pub mod transcoder_formats;

pub use codes::{select, Codes, Selection};
pub use input_norm::{InputNorm, RowStats};
pub use options::{Architecture, BDecInit, SaeOptions};
pub(crate) use tensors::read as tensors_metadata;
pub use transcoder::Transcoder;

use crate::ConceptError;
use rayon::prelude::*;

/// A sparse autoencoder's weights. In raw activation space once training has folded the input
/// scaling back in (decoder rows then have norm `1 / scale`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sae {
    pub d_in: usize,
    pub width: usize,
    pub architecture: Architecture,
    /// `width × d_in`.
    pub w_enc: Vec<f32>,
    pub b_enc: Vec<f32>,
    /// `width × d_in`.
    pub w_dec: Vec<f32>,
    pub b_dec: Vec<f32>,
    /// JumpReLU: one threshold per latent (empty otherwise).
    pub threshold: Vec<f32>,
    /// Gated SAEs: the magnitude path's per-latent scale and bias (`None` otherwise).
    pub gate: Option<Gate>,
    /// Per-row normalisation before encoding (SAELens `normalize_activations`); codes,
    /// decoder rows and [`Sae::decode`] live in the normalised space, [`Sae::reconstruct`]
    /// maps back.
    pub input_norm: InputNorm,
}

/// The magnitude path of a gated SAE (Rajamanoharan et al. 2024, SAELens `GatedSAE`): its
/// encoder is the gate's with row `j` scaled by `e^{r_mag_j}`, plus its own bias.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub r_mag: Vec<f32>,
    pub b_mag: Vec<f32>,
}

impl Sae {
    /// Checks shapes and values; `what` names the source in errors.
    pub fn validate(&self, what: &str) -> Result<(), ConceptError> {
        let bad = |m: String| ConceptError::Invalid(format!("{what}: {m}"));
        if self.d_in == 0 || self.width == 0 {
            return Err(bad(format!(
                "d_in {} and width {} must both be at least 1",
                self.d_in, self.width
            )));
        }
        for (name, v, want) in [
            ("W_enc", &self.w_enc, self.width * self.d_in),
            ("b_enc", &self.b_enc, self.width),
            ("W_dec", &self.w_dec, self.width * self.d_in),
            ("b_dec", &self.b_dec, self.d_in),
        ] {
            if v.len() != want {
                return Err(bad(format!(
                    "{name} has {} values, expected {want}",
                    v.len()
                )));
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(format!("{name} value {i} is not finite")));
            }
        }
        if let Architecture::TopK { k } | Architecture::BatchTopK { k } = self.architecture {
            if k == 0 || k >= self.width {
                return Err(bad(format!(
                    "k = {k} must be at least 1 and below the width {}",
                    self.width
                )));
            }
        }
        let thresholds = if self.architecture == Architecture::JumpRelu {
            self.width
        } else {
            0
        };
        if self.threshold.len() != thresholds {
            return Err(bad(format!(
                "{} thresholds for a {} SAE of width {}",
                self.threshold.len(),
                self.architecture.name(),
                self.width
            )));
        }
        match (&self.gate, self.architecture) {
            (Some(g), Architecture::Gated)
                if g.r_mag.len() == self.width && g.b_mag.len() == self.width => {}
            (None, a) if a != Architecture::Gated => {}
            _ => {
                return Err(bad(format!(
                    "a gated SAE needs r_mag and b_mag of width {}, other SAEs neither",
                    self.width
                )))
            }
        }
        Ok(())
    }

    /// The selection rule of this SAE's activation function; `magnitude_bias` is
    /// [`Self::magnitude_bias`] for gated SAEs (ignored otherwise).
    pub fn selection<'a>(&'a self, magnitude_bias: &'a [f32]) -> Selection<'a> {
        match self.architecture {
            Architecture::TopK { k } => Selection::TopK(k),
            // The batch-wide selection exists in training only (`gradients.rs`); a finished
            // BatchTopK SAE is a JumpReLU. Per token, TopK is its nearest rule.
            Architecture::BatchTopK { k } => Selection::TopK(k),
            Architecture::Relu { .. } => Selection::Relu,
            Architecture::JumpRelu => Selection::JumpRelu(&self.threshold),
            Architecture::Gated => match &self.gate {
                Some(g) => Selection::Gated {
                    r_mag: &g.r_mag,
                    magnitude_bias,
                },
                None => Selection::Relu,
            },
        }
    }

    /// Gated SAEs: `b_mag − e^{r_j} W_enc_j · b_dec`, the magnitude path's bias once the input
    /// centring is folded in (empty for other SAEs).
    pub fn magnitude_bias(&self) -> Vec<f32> {
        let Some(g) = &self.gate else {
            return Vec::new();
        };
        self.w_enc
            .par_chunks(self.d_in)
            .zip(g.r_mag.par_iter().zip(&g.b_mag))
            .map(|(w, (r, b))| b - r.exp() * dot(w, &self.b_dec))
            .collect()
    }

    /// `b_enc − W_enc b_dec`: folding the input centring into the bias turns the encoder into
    /// one product with the raw rows.
    pub fn encoder_bias(&self) -> Vec<f32> {
        self.w_enc
            .par_chunks(self.d_in)
            .zip(&self.b_enc)
            .map(|(w, b)| b - dot(w, &self.b_dec))
            .collect()
    }

    /// Sparse codes of `x` (`rows × d_in`), normalised first when the SAE asks for it.
    pub fn encode(&self, x: &[f32]) -> Result<Codes, ConceptError> {
        if self.input_norm == InputNorm::None {
            return self.encode_normalised(x);
        }
        let mut normalised = x.to_vec();
        self.input_norm.apply(&mut normalised, self.d_in);
        self.encode_normalised(&normalised)
    }

    /// `x` through the SAE and back, in `x`'s own space: [`Sae::decode`] of the codes, each
    /// row mapped back with its own normalisation statistics.
    pub fn reconstruct(&self, x: &[f32]) -> Result<Vec<f32>, ConceptError> {
        let (codes, stats) = self.encode_with_stats(x)?;
        Ok(self.decode_with_stats(&codes, &stats))
    }

    /// [`Sae::encode`], with what maps each row's reconstruction back to its own space (empty
    /// for SAEs that do not normalise).
    pub fn encode_with_stats(&self, x: &[f32]) -> Result<(Codes, Vec<RowStats>), ConceptError> {
        if self.input_norm == InputNorm::None {
            return Ok((self.encode_normalised(x)?, Vec::new()));
        }
        let mut normalised = x.to_vec();
        let stats = self.input_norm.apply(&mut normalised, self.d_in);
        Ok((self.encode_normalised(&normalised)?, stats))
    }

    /// [`Sae::decode`] mapped back to the input's space with [`Sae::encode_with_stats`]'s
    /// statistics.
    pub fn decode_with_stats(&self, codes: &Codes, stats: &[RowStats]) -> Vec<f32> {
        let mut x_hat = self.decode(codes);
        self.input_norm.undo(&mut x_hat, self.d_in, stats);
        x_hat
    }

    /// Sparse codes of rows already in the SAE's input space.
    fn encode_normalised(&self, x: &[f32]) -> Result<Codes, ConceptError> {
        let bias = self.encoder_bias();
        let magnitude = self.magnitude_bias();
        let mut parts = Vec::new();
        dense::for_each_product_block(x, self.d_in, &self.w_enc, |_, pre| {
            parts.push(select(pre, self.width, &bias, self.selection(&magnitude)))
        })?;
        Ok(Codes::concat(parts))
    }

    /// Reconstructions (`rows × d_in`) of `codes`, in the SAE's input space (see
    /// [`Sae::reconstruct`] for SAEs that normalise their input).
    pub fn decode(&self, codes: &Codes) -> Vec<f32> {
        let d = self.d_in;
        let mut out = vec![0.0f32; codes.rows() * d];
        const ROWS: usize = 64;
        out.par_chunks_mut(d * ROWS)
            .enumerate()
            .for_each(|(c, block)| {
                simd(
                    #[inline(always)]
                    || {
                        for (i, row) in block.chunks_exact_mut(d).enumerate() {
                            row.copy_from_slice(&self.b_dec);
                            for (j, v) in codes.row(c * ROWS + i) {
                                axpy(v, &self.w_dec[j * d..(j + 1) * d], row);
                            }
                        }
                    },
                )
            });
        out
    }

    /// Rescales an SAE trained on `scale · x` so it acts on raw `x` with the same codes:
    /// `W_enc ← scale · W_enc`, `W_dec ← W_dec / scale`, `b_dec ← b_dec / scale`.
    pub fn fold_input_scale(&mut self, scale: f32) {
        self.w_enc.par_iter_mut().for_each(|w| *w *= scale);
        self.w_dec.par_iter_mut().for_each(|w| *w /= scale);
        self.b_dec.iter_mut().for_each(|b| *b /= scale);
    }

    /// Latent `j`'s decoder direction (raw space, not normalised).
    pub fn decoder_row(&self, j: usize) -> &[f32] {
        &self.w_dec[j * self.d_in..(j + 1) * self.d_in]
    }
}

/// Runs `f` compiled for the best instruction set this CPU has (AVX-512, AVX2+FMA or the
/// baseline), so the plain loops inside it (and the `#[inline(always)]` helpers below)
/// auto-vectorise wide. Safe: pulp checks the CPU at run time.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    glassbox_data::simd::arch().dispatch(f)
}

#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Sixteen independent accumulators: vectorises without reassociating a serial sum.
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// `into += from`, element by element, in parallel.
pub(crate) fn add_into(into: &mut [f32], from: &[f32]) {
    into.par_chunks_mut(1 << 14)
        .zip(from.par_chunks(1 << 14))
        .for_each(|(a, b)| simd(|| axpy(1.0, b, a)));
}

#[inline(always)]
pub(crate) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Sae {
        Sae {
            input_norm: Default::default(),
            d_in: 2,
            width: 3,
            architecture: Architecture::TopK { k: 1 },
            w_enc: vec![1.0, 0.0, 0.0, 1.0, -1.0, -1.0],
            b_enc: vec![0.0, 0.0, 0.0],
            w_dec: vec![1.0, 0.0, 0.0, 1.0, -0.5, -0.5],
            b_dec: vec![0.5, 0.5],
            threshold: Vec::new(),
            gate: None,
        }
    }

    #[test]
    fn encode_and_decode_by_hand() {
        let sae = tiny();
        // x = (3, 1): centred (2.5, 0.5) → pre (2.5, 0.5, −3) → top-1 = latent 0 at 2.5.
        let codes = sae.encode(&[3.0, 1.0]).unwrap();
        assert_eq!(codes.row(0).collect::<Vec<_>>(), vec![(0, 2.5)]);
        assert_eq!(sae.decode(&codes), vec![3.0, 0.5]);
    }

    #[test]
    fn folding_the_scale_keeps_codes_and_scales_reconstructions() {
        let sae = tiny();
        let x = [1.2f32, -0.7, 0.3, 2.0];
        let scale = 4.0;
        let scaled: Vec<f32> = x.iter().map(|v| v * scale).collect();
        let codes = sae.encode(&scaled).unwrap();
        let mut raw = sae.clone();
        raw.fold_input_scale(scale);
        let raw_codes = raw.encode(&x).unwrap();
        assert_eq!(codes.index, raw_codes.index);
        for (a, b) in codes.value.iter().zip(&raw_codes.value) {
            assert!((a - b).abs() < 1e-5);
        }
        for (a, b) in sae.decode(&codes).iter().zip(raw.decode(&raw_codes)) {
            assert!((a / scale - b).abs() < 1e-5);
        }
    }

    #[test]
    fn validate_names_the_problem() {
        let mut sae = tiny();
        sae.architecture = Architecture::TopK { k: 3 };
        let e = sae.validate("test").unwrap_err().to_string();
        assert!(e.contains("k = 3") && e.contains("width 3"), "{e}");
        let mut sae = tiny();
        sae.w_dec[2] = f32::NAN;
        assert!(sae
            .validate("x")
            .unwrap_err()
            .to_string()
            .contains("W_dec value 2"));
    }
}
