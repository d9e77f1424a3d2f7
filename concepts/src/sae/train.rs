//! One SAE training step: the batch's gradients (`gradients.rs`), Adam, the thresholds'
//! projection and running estimates, decoder re-normalisation — and the state a checkpoint
//! must hold to resume it.

use super::gradients::gradients_into;
pub use super::gradients::{
    gradients, transcoder_gradients, Gradients, StepConfig, StepStats, Transcode,
    DENSE_BACKWARD_FROM,
};
use super::options::Resolved;
use super::{dot, Architecture, Sae};
use crate::ConceptError;
use rayon::prelude::*;

/// Adam moments for each weight.
#[derive(Debug, Clone)]
pub struct AdamState {
    pub m: Gradients,
    pub v: Gradients,
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
    /// BatchTopK: the running average of the smallest activation each batch kept (SAELens's
    /// `topk_threshold`, in f64 as there), the threshold the SAE has at inference.
    pub batch_threshold: f64,
    /// A transcoder's training: batches hold `[x | y]` rows (`2 · d_in` wide) and the encoder
    /// reads `x` uncentred (see [`Transcode`]).
    pub transcoder: bool,
    /// The skip connection `W_skip` (`d × d`, output-major; empty without one).
    pub w_skip: Vec<f32>,
    /// Reused between steps: the weights' size, so allocating it per step would page-fault.
    scratch: Gradients,
    /// A transcoder batch's input and target halves, reused between steps.
    halves: (Vec<f32>, Vec<f32>),
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
            batch_threshold: 0.0,
            transcoder: false,
            w_skip: Vec::new(),
            halves: Default::default(),
        }
    }

    /// A transcoder's trainer (`skip`: with a zero-initialised skip connection, as SAELens's
    /// `SkipTranscoder` starts). `sae` holds the uncentred encoder (`W_enc x + b_enc`).
    pub fn transcoder(sae: Sae, resolved: Resolved, config: StepConfig, skip: bool) -> Self {
        let d = sae.d_in;
        let mut trainer = Self::new(sae, resolved, config);
        trainer.transcoder = true;
        if skip {
            trainer.w_skip = vec![0.0; d * d];
            trainer.adam.m.w_skip = vec![0.0; d * d];
            trainer.adam.v.w_skip = vec![0.0; d * d];
            trainer.scratch.w_skip = vec![0.0; d * d];
        }
        trainer
    }

    /// The SAE as it runs on new data: a BatchTopK SAE becomes the JumpReLU that applies the
    /// learnt batch threshold to every latent (what SAELens saves, too).
    pub fn inference_sae(&self) -> Sae {
        let mut sae = self.sae.clone();
        if let Architecture::BatchTopK { .. } = sae.architecture {
            sae.architecture = Architecture::JumpRelu;
            sae.threshold = vec![self.batch_threshold as f32; sae.width];
        }
        sae
    }

    /// Latents that have not fired within the dead window.
    pub fn dead_latents(&self) -> Vec<u32> {
        let window = self.config.dead_window;
        (0..self.sae.width as u32)
            .filter(|&j| self.tokens_seen.saturating_sub(self.last_fired[j as usize]) > window)
            .collect()
    }

    /// Trains on one batch (`rows × d_in`, scaled; a transcoder's `rows × 2·d_in`, `[x | y]`).
    pub fn step(&mut self, batch: &[f32]) -> Result<StepStats, ConceptError> {
        let dead = self.dead_latents();
        let mut grads = std::mem::replace(&mut self.scratch, Gradients::empty());
        let (mut x, mut y) = std::mem::take(&mut self.halves);
        let (input, transcode) = if self.transcoder {
            let d = self.sae.d_in;
            x.clear();
            y.clear();
            for row in batch.chunks_exact(2 * d) {
                x.extend_from_slice(&row[..d]);
                y.extend_from_slice(&row[d..]);
            }
            let skip = (!self.w_skip.is_empty()).then_some(self.w_skip.as_slice());
            (x.as_slice(), Some(Transcode { target: &y, skip }))
        } else {
            (batch, None)
        };
        let result = gradients_into(
            &self.sae,
            input,
            transcode,
            &dead,
            &self.resolved,
            &self.config,
            &mut grads,
        );
        self.halves = (x, y);
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
        // θ ≥ 0: below zero the jump would pass negative pre-activations.
        self.sae.threshold.iter_mut().for_each(|t| *t = t.max(0.0));
        if let (Architecture::BatchTopK { .. }, Some(min)) = (
            self.sae.architecture,
            codes.value.iter().copied().reduce(f32::min),
        ) {
            let rate = self.config.threshold_lr;
            self.batch_threshold = (1.0 - rate) * self.batch_threshold + rate * min as f64;
        }
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
        update(
            &mut sae.threshold,
            &g.threshold,
            &mut m.threshold,
            &mut v.threshold,
        );
        update(&mut self.w_skip, &g.w_skip, &mut m.w_skip, &mut v.w_skip);
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

#[cfg(test)]
#[path = "train_tests.rs"]
pub(crate) mod tests;
