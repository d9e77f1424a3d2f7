//! Transcoders (Dunefsky, Chlenski & Nanda 2024, "Transcoders find interpretable LLM feature
//! circuits"; skip transcoders: Paulo, Shabalin & Belrose 2025): a sparse dictionary that reads
//! one hook (the MLP's input side, e.g. `blocks.L.hook_resid_mid`) and predicts another (the
//! MLP's output, `blocks.L.hook_mlp_out`), so its features stand in for the MLP's computation.
//!
//! `f = σ(W_enc x + b_enc)`, `ŷ = W_dec f + b_dec (+ W_skip x)`: as SAELens's `Transcoder` /
//! `SkipTranscoder`, sparsify's `SparseCoder(transcode=True)` and circuit-tracer's
//! `SingleLayerTranscoder`. The encoder does not subtract `b_dec`, which lives in the output
//! space. The weights are kept as an [`Sae`] whose `b_enc` folds that in (`b_enc + W_enc b_dec`,
//! so [`Sae::encode`] computes the transcoder's codes and [`Sae::decode`] its prediction
//! without the skip); [`Transcoder::input_bias`] gives the transcoder's own `b_enc` back.

use super::codes::Codes;
use super::ev_bootstrap::Bootstrap;
use super::metrics::{MetricSums, Metrics};
use super::stream::{for_each_chunk, RowSource};
use super::{dot, Architecture, Sae};
use crate::ConceptError;
use rayon::prelude::*;

/// A transcoder's weights in raw activation space.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcoder {
    /// Encoder, decoder, thresholds; `b_enc` folded as described in the module docs.
    pub sae: Sae,
    /// `d × d`, output-major (`ŷ += W_skip x`; SAELens's and sparsify's `W_skip`).
    pub w_skip: Option<Vec<f32>>,
}

impl Transcoder {
    /// From the weights as the suites store them: `b_enc` applied to the uncentred input.
    pub fn from_uncentred(mut sae: Sae, w_skip: Option<Vec<f32>>) -> Self {
        super::saelens::fold_uncentred_input(&mut sae);
        Self { sae, w_skip }
    }

    /// Checks shapes and values; `what` names the source in errors.
    pub fn validate(&self, what: &str) -> Result<(), ConceptError> {
        self.sae.validate(what)?;
        if self.sae.architecture == Architecture::Gated {
            return Err(ConceptError::Invalid(format!(
                "{what}: a gated transcoder is not supported (TopK, ReLU, JumpReLU are)"
            )));
        }
        if let Some(w) = &self.w_skip {
            let d = self.sae.d_in;
            if w.len() != d * d {
                return Err(ConceptError::Invalid(format!(
                    "{what}: W_skip has {} values, expected {d} × {d}",
                    w.len()
                )));
            }
            if let Some(i) = w.iter().position(|v| !v.is_finite()) {
                return Err(ConceptError::Invalid(format!(
                    "{what}: W_skip value {i} is not finite"
                )));
            }
        }
        Ok(())
    }

    /// The encoder bias as the transcoder applies it to `x` (`W_enc x + b_enc`).
    pub fn input_bias(&self) -> Vec<f32> {
        self.sae.encoder_bias()
    }

    /// Sparse codes of input rows (`rows × d`).
    pub fn encode(&self, x: &[f32]) -> Result<Codes, ConceptError> {
        self.sae.encode(x)
    }

    /// The predicted target rows of input rows `x`.
    pub fn predict(&self, x: &[f32]) -> Result<Vec<f32>, ConceptError> {
        let codes = self.encode(x)?;
        Ok(self.predict_from(x, &codes))
    }

    /// The prediction from codes already computed for `x`.
    pub fn predict_from(&self, x: &[f32], codes: &Codes) -> Vec<f32> {
        let mut out = self.sae.decode(codes);
        if let Some(w) = &self.w_skip {
            let d = self.sae.d_in;
            out.par_chunks_mut(d)
                .zip(x.par_chunks(d))
                .for_each(|(row, x)| {
                    for (o, w_row) in row.iter_mut().zip(w.chunks_exact(d)) {
                        *o += dot(w_row, x);
                    }
                });
        }
        out
    }
}

/// Training ran on `(s_x · x, s_y · y)` with the uncentred encoder: back to raw space
/// (`W_enc · s_x`, `W_dec / s_y`, `b_dec / s_y`, `W_skip · s_x / s_y`), then `b_dec` folded in.
pub(crate) fn fold_training_scales(
    mut sae: Sae,
    w_skip: Option<Vec<f32>>,
    s_x: f32,
    s_y: f32,
) -> Transcoder {
    sae.w_enc.par_iter_mut().for_each(|w| *w *= s_x);
    sae.w_dec.par_iter_mut().for_each(|w| *w /= s_y);
    sae.b_dec.iter_mut().for_each(|b| *b /= s_y);
    let w_skip = w_skip.map(|mut w| {
        w.par_iter_mut().for_each(|v| *v *= s_x / s_y);
        w
    });
    Transcoder::from_uncentred(sae, w_skip)
}

/// Metrics of `transcoder` over one epoch of `[x | y]` rows: reconstruction terms against `y`.
pub fn evaluate<S: RowSource>(
    transcoder: &Transcoder,
    source: &mut S,
    bootstrap: Bootstrap,
) -> Result<Metrics, ConceptError> {
    let d = transcoder.sae.d_in;
    let mut sums = MetricSums::new(d, transcoder.sae.width).with_bootstrap(bootstrap);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for_each_chunk(source, 4096, |rows, ids| {
        x.clear();
        y.clear();
        for row in rows.chunks_exact(2 * d) {
            x.extend_from_slice(&row[..d]);
            y.extend_from_slice(&row[d..]);
        }
        let codes = transcoder.encode(&x)?;
        let y_hat = transcoder.predict_from(&x, &codes);
        sums.add_rows(ids, &y, &y_hat, Some(&codes));
        Ok(())
    })?;
    Ok(sums.finish())
}

#[cfg(test)]
#[path = "transcoder_tests.rs"]
mod tests;
