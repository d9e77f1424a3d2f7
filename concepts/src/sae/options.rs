//! Training options (`[dictionary]` in a pipeline config), with the defaults documented here
//! and in the README.

use crate::ConceptError;
use serde::{Deserialize, Serialize};

/// The activation function and sparsity mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Architecture {
    /// Keep the `k` largest pre-activations, then ReLU.
    TopK { k: usize },
    /// Keep the `k · B` largest positive pre-activations of a batch of `B` tokens (Bussmann et
    /// al. 2024). Training only: a trained BatchTopK SAE runs as the JumpReLU with its learnt
    /// batch threshold (see `batch_top_k.rs`).
    BatchTopK { k: usize },
    /// ReLU with an L1 penalty `l1_coefficient · Σ_j f_j` on the codes (decoder rows are kept
    /// at unit norm, so this is the norm-weighted penalty of Anthropic's SAEs too).
    Relu { l1_coefficient: f32 },
    /// JumpReLU: a latent is its pre-activation where that exceeds the latent's threshold
    /// (Gemma Scope, Llama Scope, SAELens `jumprelu`; BatchTopK and Matryoshka SAEs at
    /// inference). Trained with straight-through threshold estimates (see `jumprelu.rs`).
    JumpRelu,
    /// Gated (SAELens `gated`): a ReLU gate decides which latents fire, a rescaled encoder
    /// their magnitude. Read, not trained here.
    Gated,
}

impl Architecture {
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::TopK { .. } => "topk",
            Architecture::BatchTopK { .. } => "batchtopk",
            Architecture::Relu { .. } => "relu",
            Architecture::JumpRelu => "jumprelu",
            Architecture::Gated => "gated",
        }
    }
}

/// How the decoder bias starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BDecInit {
    /// The mean of the first buffer of (scaled) training rows.
    Mean,
    /// Their geometric median (Weiszfeld iterations), robust to outlier tokens.
    GeometricMedian,
}

/// Which architecture to train (its parameters are separate options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchitectureName {
    /// TopK (Gao et al. 2024), with the AuxK loss.
    Topk,
    /// ReLU with an L1 penalty.
    Relu,
    /// BatchTopK (Bussmann et al. 2024), with the AuxK loss; saved as a JumpReLU.
    Batchtopk,
    /// JumpReLU with the L0 penalty (Rajamanoharan et al. 2024).
    Jumprelu,
}

impl std::fmt::Display for ArchitectureName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArchitectureName::Topk => "topk",
            ArchitectureName::Relu => "relu",
            ArchitectureName::Batchtopk => "batchtopk",
            ArchitectureName::Jumprelu => "jumprelu",
        })
    }
}

impl std::str::FromStr for ArchitectureName {
    type Err = ConceptError;
    fn from_str(s: &str) -> Result<Self, ConceptError> {
        match s {
            "topk" => Ok(ArchitectureName::Topk),
            "relu" => Ok(ArchitectureName::Relu),
            "batchtopk" => Ok(ArchitectureName::Batchtopk),
            "jumprelu" => Ok(ArchitectureName::Jumprelu),
            other => Err(ConceptError::Invalid(format!(
                "unknown architecture `{other}`; use topk, batchtopk, jumprelu or relu"
            ))),
        }
    }
}

/// Everything that decides an SAE's training. Same options and data ⇒ same weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaeOptions {
    /// `"topk"` (default), `"batchtopk"`, `"jumprelu"` or `"relu"`.
    pub architecture: ArchitectureName,
    /// Number of latents. Default: 8 × the hook's width.
    pub width: Option<usize>,
    /// Active latents per token (TopK; the batch's mean for BatchTopK). Default 32.
    pub k: usize,
    /// Matryoshka levels (TopK and BatchTopK): increasing widths, each level reconstructing
    /// with the latents below it; the full width is added as the last level when missing.
    /// Default: none (one level).
    pub matryoshka_widths: Vec<usize>,
    /// JumpReLU: the L0 penalty's coefficient, per token `‖x − x̂‖² + λ₀ L0` divided by d
    /// (SAELens's `l0_coefficient`). Default 1.0.
    pub l0_coefficient: f32,
    /// JumpReLU: the straight-through estimator's kernel width ε (SAELens default 0.05).
    pub jumprelu_bandwidth: f32,
    /// JumpReLU: every threshold's starting value (SAELens's default is 0.01). Unset (the
    /// default): each latent's threshold starts at the level its pre-activation exceeds on
    /// `k / width` of the first buffer's rows, so training starts at L0 ≈ k — sparse, and on
    /// the sparse backward — instead of with half the latents firing until the L0 penalty has
    /// lifted the thresholds (thousands of dense steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jumprelu_init_threshold: Option<f32>,
    /// BatchTopK: the rate of the running average of the smallest kept activation that
    /// becomes the inference threshold (SAELens default 0.01).
    pub topk_threshold_lr: f64,
    /// L1 coefficient (ReLU architecture), in Anthropic's convention: per token the loss is
    /// `‖x − x̂‖² + λ Σ_j f_j` (both divided by d). Default 5.0 (inputs scaled to mean norm √d).
    pub l1_coefficient: f32,
    /// Dead latents revived per token by the AuxK loss. Default: the power of two nearest
    /// d_in / 2, as in Gao et al.
    pub k_aux: Option<usize>,
    /// Weight of the AuxK loss. Default 1/32.
    pub aux_coefficient: f32,
    /// A latent is dead when it has not fired in this many training tokens. Default 100,000.
    pub dead_window: u64,
    /// Adam learning rate. Default: 2e-4 / √(width / 16384), Gao et al.'s scaling rule.
    pub lr: Option<f64>,
    /// Linear warm-up steps. Default: 5 % of the steps (at most 1,000).
    pub warmup_steps: Option<usize>,
    /// The learning rate decays linearly to zero over this final fraction of steps. Default 0.2.
    pub decay_fraction: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Tokens per step. Default 4,096 (fewer when the store holds fewer training tokens).
    pub batch_size: usize,
    /// Training tokens in all (the store is cycled through as often as needed). Default 2,000,000.
    pub train_tokens: u64,
    /// Rows in the shuffling buffer between the store and the batches. Default 65,536
    /// (about 100 MB at width 384).
    pub buffer_rows: usize,
    /// Scale inputs so their mean norm is √d_in during training (folded back afterwards).
    pub scale_inputs: bool,
    pub b_dec_init: BDecInit,
    /// Fraction of examples held out for the evaluation metrics. Default 0.1.
    pub eval_fraction: f64,
    /// Train on special tokens (`[CLS]`, `[SEP]`, BOS…) too. Default false: their activations are
    /// outliers that dominate the reconstruction loss.
    pub include_special_tokens: bool,
    /// Write a resumable checkpoint every this many steps. Default 100.
    pub checkpoint_every: usize,
    pub seed: u64,
}

impl Default for SaeOptions {
    fn default() -> Self {
        Self {
            architecture: ArchitectureName::Topk,
            width: None,
            k: 32,
            matryoshka_widths: Vec::new(),
            l0_coefficient: 1.0,
            jumprelu_bandwidth: 0.05,
            jumprelu_init_threshold: None,
            topk_threshold_lr: 0.01,
            l1_coefficient: 5.0,
            k_aux: None,
            aux_coefficient: 1.0 / 32.0,
            dead_window: 100_000,
            lr: None,
            warmup_steps: None,
            decay_fraction: 0.2,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 6.25e-10,
            batch_size: 4096,
            train_tokens: 2_000_000,
            buffer_rows: 65_536,
            scale_inputs: true,
            b_dec_init: BDecInit::Mean,
            eval_fraction: 0.1,
            include_special_tokens: false,
            checkpoint_every: 100,
            seed: 0,
        }
    }
}

/// Options resolved against a hook's width and the training rows available.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub d_in: usize,
    pub width: usize,
    pub architecture: Architecture,
    /// Matryoshka level ends, the last being `width`; empty for one level.
    pub levels: Vec<usize>,
    pub k_aux: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub batch_size: usize,
    pub steps: usize,
}

impl SaeOptions {
    /// Checks the options against a hook of width `d_in` with `train_rows` training tokens.
    pub fn resolve(&self, d_in: usize, train_rows: u64) -> Result<Resolved, ConceptError> {
        let bad = |m: String| ConceptError::Invalid(format!("[dictionary] {m}"));
        let width = self.width.unwrap_or(8 * d_in);
        if width < 1 {
            return Err(bad("width must be at least 1".into()));
        }
        // The encoder and the decoder, each with Adam's two moments: a floor on what training
        // holds, so a width no machine here could hold is refused before anything is allocated.
        let floor = 24.0 * width as f64 * d_in as f64;
        if let Some(total) = glassbox_data::limits::total_memory_bytes() {
            if floor > total as f64 {
                use glassbox_data::limits::gigabytes;
                return Err(bad(format!(
                    "width = {width} at hook width {d_in} needs at least {} for the SAE's weights \
                     and Adam state (encoder and decoder, 3 copies each, 4 bytes a value), more \
                     than this machine's {}; choose a smaller width (the default is 8 × {d_in} = {})",
                    gigabytes(floor),
                    gigabytes(total as f64),
                    8 * d_in
                )));
            }
        }
        let check_k = || {
            if self.k == 0 || self.k >= width {
                return Err(bad(format!(
                    "k = {} must be at least 1 and smaller than width = {width}",
                    self.k
                )));
            }
            Ok(self.k)
        };
        let architecture = match self.architecture {
            ArchitectureName::Topk => Architecture::TopK { k: check_k()? },
            ArchitectureName::Batchtopk => Architecture::BatchTopK { k: check_k()? },
            ArchitectureName::Jumprelu => {
                let positive = |v: f32| v.is_finite() && v > 0.0;
                let init = self.jumprelu_init_threshold.unwrap_or(0.0);
                if !(positive(self.jumprelu_bandwidth)
                    && init.is_finite()
                    && init >= 0.0
                    && self.l0_coefficient.is_finite()
                    && self.l0_coefficient >= 0.0)
                {
                    return Err(bad(format!(
                        "jumprelu_bandwidth = {} must be positive, jumprelu_init_threshold = {} \
                         and l0_coefficient = {} finite and 0 or more",
                        self.jumprelu_bandwidth, init, self.l0_coefficient
                    )));
                }
                Architecture::JumpRelu
            }
            ArchitectureName::Relu => {
                if !(self.l1_coefficient.is_finite() && self.l1_coefficient >= 0.0) {
                    return Err(bad(format!(
                        "l1_coefficient = {} must be a finite number, 0 or more",
                        self.l1_coefficient
                    )));
                }
                Architecture::Relu {
                    l1_coefficient: self.l1_coefficient,
                }
            }
        };
        let levels = self.levels(width, architecture)?;
        if !(self.topk_threshold_lr.is_finite() && (0.0..=1.0).contains(&self.topk_threshold_lr)) {
            return Err(bad(format!(
                "topk_threshold_lr = {} must lie in [0, 1]",
                self.topk_threshold_lr
            )));
        }
        if train_rows == 0 {
            return Err(bad("no training tokens (the store is empty after the evaluation hold-out and special-token filter)".into()));
        }
        if self.batch_size == 0 || self.buffer_rows == 0 || self.checkpoint_every == 0 {
            return Err(bad(
                "batch_size, buffer_rows and checkpoint_every must be at least 1".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.eval_fraction) || !(0.0..=1.0).contains(&self.decay_fraction)
        {
            return Err(bad(
                "eval_fraction must lie in [0, 1) and decay_fraction in [0, 1]".into(),
            ));
        }
        let batch_size = self
            .batch_size
            .min(train_rows as usize)
            .min(self.buffer_rows);
        let steps = self.train_tokens.div_ceil(batch_size as u64).max(1) as usize;
        let k_aux = self.k_aux.unwrap_or_else(|| {
            let half = (d_in / 2).max(1);
            let up = half.next_power_of_two();
            let down = up / 2;
            if down > 0 && half - down < up - half {
                down
            } else {
                up
            }
        });
        let lr = self
            .lr
            .unwrap_or_else(|| 2e-4 / (width as f64 / 16384.0).sqrt());
        if !(lr.is_finite() && lr > 0.0) {
            return Err(bad(format!("lr = {lr} must be a finite positive number")));
        }
        let unit = |v: f64| (0.0..1.0).contains(&v);
        if !(unit(self.adam_beta1) && unit(self.adam_beta2)) {
            return Err(bad(format!(
                "adam_beta1 = {} and adam_beta2 = {} must lie in [0, 1)",
                self.adam_beta1, self.adam_beta2
            )));
        }
        if !(self.adam_eps.is_finite() && self.adam_eps > 0.0) {
            return Err(bad(format!(
                "adam_eps = {} must be a finite positive number",
                self.adam_eps
            )));
        }
        if !(self.aux_coefficient.is_finite() && self.aux_coefficient >= 0.0) {
            return Err(bad(format!(
                "aux_coefficient = {} must be a finite number, 0 or more",
                self.aux_coefficient
            )));
        }
        if self.train_tokens == 0 {
            return Err(bad("train_tokens must be at least 1".into()));
        }
        let warmup_steps = self.warmup_steps.unwrap_or_else(|| (steps / 20).min(1000));
        Ok(Resolved {
            d_in,
            width,
            architecture,
            levels,
            k_aux: k_aux.min(width),
            lr,
            warmup_steps,
            batch_size,
            steps,
        })
    }
}

impl SaeOptions {
    /// The Matryoshka level ends: strictly increasing, positive, ending at `width`.
    fn levels(&self, width: usize, architecture: Architecture) -> Result<Vec<usize>, ConceptError> {
        let bad = |m: String| ConceptError::Invalid(format!("[dictionary] matryoshka_widths {m}"));
        if self.matryoshka_widths.is_empty() {
            return Ok(Vec::new());
        }
        if !matches!(
            architecture,
            Architecture::TopK { .. } | Architecture::BatchTopK { .. }
        ) {
            return Err(bad(format!(
                "apply to topk and batchtopk SAEs, not {}; drop them or change the architecture",
                architecture.name()
            )));
        }
        let mut levels = self.matryoshka_widths.clone();
        if levels.last() != Some(&width) {
            levels.push(width);
        }
        if levels[0] == 0 || levels.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad(format!(
                "{:?} must be positive, strictly increasing and at most the width {width}",
                self.matryoshka_widths
            )));
        }
        Ok(levels)
    }
}

impl Resolved {
    /// The learning rate at `step` (0-based): linear warm-up, constant, linear decay to 0.
    pub fn lr_at(&self, step: usize, decay_fraction: f64) -> f64 {
        let warm = if self.warmup_steps > 0 && step < self.warmup_steps {
            (step + 1) as f64 / self.warmup_steps as f64
        } else {
            1.0
        };
        let decay_steps = (self.steps as f64 * decay_fraction).round() as usize;
        let decay_start = self.steps - decay_steps.min(self.steps);
        let decay = if decay_steps > 0 && step >= decay_start {
            (self.steps - step) as f64 / decay_steps as f64
        } else {
            1.0
        };
        self.lr * warm * decay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_like_the_paper() {
        let r = SaeOptions::default().resolve(384, 1_000_000).unwrap();
        assert_eq!(r.width, 3072);
        assert_eq!(r.k_aux, 256);
        assert!((r.lr - 2e-4 / (3072.0f64 / 16384.0).sqrt()).abs() < 1e-12);
        assert_eq!(r.batch_size, 4096);
        assert_eq!(r.steps, 489);
    }

    #[test]
    fn bad_k_and_width_are_refused() {
        let o = SaeOptions {
            width: Some(16),
            k: 16,
            ..SaeOptions::default()
        };
        let e = o.resolve(8, 100).unwrap_err().to_string();
        assert!(e.contains("k = 16") && e.contains("width = 16"), "{e}");
        let o = SaeOptions {
            width: Some(0),
            ..SaeOptions::default()
        };
        assert!(o.resolve(8, 100).unwrap_err().to_string().contains("width"));
    }

    #[test]
    fn schedule_warms_up_and_decays_to_zero() {
        let mut r = SaeOptions::default().resolve(384, 4096 * 100).unwrap();
        r.warmup_steps = 10;
        assert!((r.lr_at(0, 0.2) - r.lr * 0.1).abs() < 1e-15);
        assert!((r.lr_at(50, 0.2) - r.lr).abs() < 1e-15);
        assert!(r.lr_at(r.steps - 1, 0.2) < r.lr * 0.06);
        assert!(r.lr_at(r.steps - 1, 0.2) > 0.0);
    }
}
