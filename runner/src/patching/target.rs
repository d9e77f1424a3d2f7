//! Patching for models without a next-token output — encoders and vision classifiers — and for
//! probe targets on any model: each pair names a `target`, a linear head over classes (a probe
//! of the run on a pooled hook, or a classifier's own output), and a run's metric is read from
//! its class logits `z`: `logit_diff` = z_target − max of the other classes (a binary probe's
//! ±logit), `logprob` / `prob` of the target class, or `kl` = KL(clean ‖ run) over the classes.
//!
//! Positions are tokens for text and feature-map cells (or patches) for images, at each hook's
//! own resolution. Attribution patching differentiates the same metric through the family's
//! differentiable forward.

use super::forward::{Overwrite, Source};
use super::{check_patchable, Direction, Metric, PatchOptions, PatchRow, Positions};
use candle_core::Tensor;
use glassbox_data::{HookPoint, Pool};
use glassbox_models::tokenizer::Encoded;
use glassbox_models::{
    Capture, Hooks, ImageBatch, Input, LoadedModel, ModelError, Result, TokenBatch,
};
use std::collections::BTreeMap;

/// One side of a pair, as the model reads it.
#[derive(Debug, Clone)]
pub enum PairInput {
    /// A tokenised text.
    Tokens(Encoded),
    /// One preprocessed image, channels-last `height × width × 3`.
    Image {
        /// The pixels.
        pixels: Vec<f32>,
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
}

impl PairInput {
    /// What the pairs table shows for it: the tokens, or nothing for an image.
    pub fn tokens(&self) -> Vec<String> {
        match self {
            PairInput::Tokens(e) => e.tokens.clone(),
            PairInput::Image { .. } => Vec::new(),
        }
    }
}

/// A linear head over classes: a probe on a pooled hook, or the model's output logits.
#[derive(Debug, Clone)]
pub struct TargetHead {
    /// The hook the probe reads; `None`: the model's output are the class logits.
    pub hook: Option<HookPoint>,
    /// How the probe pools positions.
    pub pool: Pool,
    /// `outputs × width`, row-major (one output: a binary probe's logit of class 1).
    pub weight: Vec<f32>,
    /// One per output.
    pub bias: Vec<f32>,
}

/// A pair with a target, checked.
#[derive(Debug, Clone)]
pub struct TargetPair {
    /// Row in the pairs file (0-based).
    pub row: usize,
    /// The clean input.
    pub clean: PairInput,
    /// The corrupted input (the same length or image size).
    pub corrupted: PairInput,
    /// The target spec as written.
    pub target: String,
    /// What reads it.
    pub head: TargetHead,
    /// Its class index among the head's classes.
    pub class: usize,
}

/// A target pair's clean and corrupted metrics.
#[derive(Debug, Clone, Copy)]
pub struct TargetMetrics {
    /// The clean run's metric.
    pub clean: f64,
    /// The corrupted run's metric.
    pub corrupted: f64,
}

enum Batch {
    Tokens(TokenBatch),
    Images(ImageBatch),
}

fn copies(model: &LoadedModel, input: &PairInput, k: usize) -> Result<Batch> {
    Ok(match input {
        PairInput::Tokens(e) => {
            let refs: Vec<&Encoded> = vec![e; k];
            Batch::Tokens(TokenBatch::from_encoded(
                &refs,
                model.pad_id,
                &model.device,
            )?)
        }
        PairInput::Image {
            pixels,
            height,
            width,
        } => Batch::Images(ImageBatch {
            pixels: pixels
                .iter()
                .copied()
                .cycle()
                .take(k * pixels.len())
                .collect(),
            batch: k,
            height: *height,
            width: *width,
        }),
    })
}

fn input(batch: &Batch) -> Input<'_> {
    match batch {
        Batch::Tokens(b) => b.into(),
        Batch::Images(b) => b.into(),
    }
}

/// A classifier's logits from its forward's output: the output itself for image models, the
/// class head on the last hidden state for text classifiers.
fn model_logits(model: &LoadedModel, output: &Tensor, batch: &Batch) -> Result<Tensor> {
    let lengths = match batch {
        Batch::Tokens(b) => b.lengths.as_slice(),
        Batch::Images(_) => &[],
    };
    match model.model.classify(output, lengths) {
        Some(logits) => logits,
        None => Ok(output.clone()),
    }
}

/// Class logits `[copies][classes]` of a forward's output and captured head hook.
fn class_logits(
    model: &LoadedModel,
    batch: &Batch,
    output: &Tensor,
    capture: &Capture,
    head: &TargetHead,
) -> Result<Vec<Vec<f64>>> {
    let rows: Vec<Vec<f32>> = match head.hook {
        None => model_logits(model, output, batch)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2()?,
        Some(hook) => {
            let h = capture.get(hook, model.model.family())?;
            pooled(h, head.pool)?.to_vec2()?
        }
    };
    Ok(rows
        .into_iter()
        .map(|x| match head.hook {
            None => x.iter().map(|v| *v as f64).collect(),
            Some(_) => outputs(&x, head),
        })
        .collect())
}

/// `[k, t, w]` → `[k, w]` over every position (copies of one input have no padding).
fn pooled(h: &Tensor, pool: Pool) -> candle_core::Result<Tensor> {
    let h = h.to_dtype(candle_core::DType::F32)?;
    let t = h.dim(1)?;
    match pool {
        Pool::Mean => h.mean(1),
        Pool::Max => h.max(1),
        Pool::Cls => h.narrow(1, 0, 1)?.squeeze(1),
        Pool::Last => h.narrow(1, t - 1, 1)?.squeeze(1),
    }
}

/// A probe's class logits: one output `z` is the binary logit, read as classes `[0, z]`.
fn outputs(x: &[f32], head: &TargetHead) -> Vec<f64> {
    let x: Vec<f64> = x.iter().map(|v| *v as f64).collect();
    let z = crate::gradients::head_outputs(&head.weight, &head.bias, &x);
    if z.len() == 1 {
        vec![0.0, z[0]]
    } else {
        z
    }
}

fn log_softmax(z: &[f64]) -> Vec<f64> {
    let top = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = z.iter().map(|v| (v - top).exp()).sum::<f64>().ln() + top;
    z.iter().map(|v| v - lse).collect()
}

/// A run's metric from its class logits.
pub fn target_score(metric: Metric, z: &[f64], class: usize, clean_logp: &[f64]) -> f64 {
    let logp = log_softmax(z);
    match metric {
        Metric::LogitDiff => {
            let rival = z
                .iter()
                .enumerate()
                .filter(|(c, _)| *c != class)
                .map(|(_, v)| *v)
                .fold(f64::NEG_INFINITY, f64::max);
            z[class] - rival
        }
        Metric::Logprob => logp[class],
        Metric::Prob => logp[class].exp(),
        Metric::Kl => clean_logp
            .iter()
            .zip(&logp)
            .map(|(c, r)| c.exp() * (c - r))
            .sum(),
    }
}

/// Captures the cached hooks and the head's hook.
fn cached(
    model: &LoadedModel,
    pair: &TargetPair,
    input_: &PairInput,
    hooks: &[HookPoint],
) -> Result<(BTreeMap<HookPoint, Tensor>, Vec<f64>)> {
    let batch = copies(model, input_, 1)?;
    let mut capture = Capture::new(hooks.iter().copied().chain(pair.head.hook));
    let output = model.model.forward(input(&batch), &mut capture)?;
    let z = class_logits(model, &batch, &output, &capture, &pair.head)?.remove(0);
    let mut acts = BTreeMap::new();
    for &h in hooks {
        acts.insert(
            h,
            capture
                .get(h, model.model.family())?
                .to_dtype(candle_core::DType::F32)?,
        );
    }
    Ok((acts, z))
}

/// Overwrites one point and captures the head's hook.
struct PatchAndRead<'a> {
    patch: Overwrite<'a>,
    capture: Capture,
}

impl Hooks for PatchAndRead<'_> {
    fn wants(&self, point: HookPoint) -> bool {
        self.patch.wants(point) || self.capture.wants(point)
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let x = self.patch.visit(point, x)?;
        self.capture.visit(point, x)
    }
}

/// Patches every (hook, position[, head]) of one target pair; its rows and metrics.
pub fn patch_target_pair(
    model: &LoadedModel,
    pair: &TargetPair,
    opts: &PatchOptions,
) -> Result<(Vec<PatchRow>, TargetMetrics)> {
    for &hook in &opts.hooks {
        check_patchable(hook)?;
        if let Some(h) = pair.head.hook {
            if hook.depth() >= h.depth() && hook != h {
                return Err(ModelError::Invalid(format!(
                    "pairs row {}: `{hook}` comes after the target's hook `{h}`, so patching it cannot change `{}`; patch earlier hooks",
                    pair.row + 1,
                    pair.target
                )));
            }
        }
    }
    let (clean_acts, clean_z) = cached(model, pair, &pair.clean, &opts.hooks)?;
    let (corrupted_acts, corrupted_z) = cached(model, pair, &pair.corrupted, &opts.hooks)?;
    let clean_logp = log_softmax(&clean_z);
    let metrics = TargetMetrics {
        clean: target_score(opts.metric, &clean_z, pair.class, &clean_logp),
        corrupted: target_score(opts.metric, &corrupted_z, pair.class, &clean_logp),
    };
    let (base, source_acts, base_acts) = match opts.direction {
        Direction::Denoise => (&pair.corrupted, &clean_acts, &corrupted_acts),
        Direction::Noise => (&pair.clean, &corrupted_acts, &clean_acts),
    };
    let atp = if opts.atp {
        Some(atp_gradients(
            model,
            pair,
            base,
            &opts.hooks,
            opts.metric,
            &clean_logp,
        )?)
    } else {
        None
    };
    let heads = model.model.attention_heads();
    let mut rows = Vec::new();
    for &hook in &opts.hooks {
        let source = &source_acts[&hook];
        let (_, t, width) = source.dims3()?;
        let source_rows: Vec<f32> = source.flatten_all()?.to_vec1()?;
        let base_rows: Vec<f32> = base_acts[&hook].flatten_all()?.to_vec1()?;
        let positions: Vec<usize> = match &opts.positions {
            Positions::All => (0..t).collect(),
            Positions::Last => vec![t - 1],
            Positions::Listed(v) => {
                if let Some(p) = v.iter().find(|&&p| p >= t) {
                    return Err(ModelError::Invalid(format!(
                        "pairs row {}: position {p} is past `{hook}`'s {t} positions",
                        pair.row + 1
                    )));
                }
                v.clone()
            }
        };
        let per_head = super::per_head(opts.heads, hook, heads, width);
        let head_dim = per_head.map_or(width, |h| width / h);
        let jobs = super::jobs(&positions, per_head);
        for chunk in jobs.chunks(opts.batch_size.max(1)) {
            let batch = copies(model, base, chunk.len())?;
            let targets: Vec<_> = chunk.iter().map(|(p, h)| (Some(*p), *h)).collect();
            let mut hooks = PatchAndRead {
                patch: Overwrite {
                    point: hook,
                    jobs: &targets,
                    source: Source::Rows(&source_rows),
                    head_dim,
                    shift: &[],
                },
                capture: Capture::new(pair.head.hook),
            };
            let output = model.model.forward(input(&batch), &mut hooks)?;
            let zs = class_logits(model, &batch, &output, &hooks.capture, &pair.head)?;
            for (&job, z) in chunk.iter().zip(zs) {
                let metric = target_score(opts.metric, &z, pair.class, &clean_logp);
                let atp_metric = atp.as_ref().map(|(base_metric, grads)| {
                    let values = (source_rows.as_slice(), base_rows.as_slice());
                    super::atp_estimate(*base_metric, &grads[&hook], values, job, (width, head_dim))
                });
                let ends = (metrics.clean, metrics.corrupted);
                rows.push(super::patch_row(
                    pair.row, hook, job, metric, ends, atp_metric,
                ));
            }
        }
    }
    Ok((rows, metrics))
}

/// The base run's metric and its gradient `[t × width]` at every hook, by autograd.
fn atp_gradients(
    model: &LoadedModel,
    pair: &TargetPair,
    base: &PairInput,
    hooks: &[HookPoint],
    metric: Metric,
    clean_logp: &[f64],
) -> Result<(f64, BTreeMap<HookPoint, Vec<f32>>)> {
    let batch = copies(model, base, 1)?;
    let mut taps = super::atp::GradientTaps::new(hooks, pair.head.hook);
    let output = model
        .model
        .forward_differentiable(input(&batch), &mut taps)?;
    let z = match (pair.head.hook, &taps.kept) {
        (None, _) => model_logits(model, &output, &batch)?.flatten_all()?,
        (Some(_), Some(h)) => {
            let x = pooled(h, pair.head.pool)?.flatten_all()?;
            let width = x.dim(0)?;
            let outputs = pair.head.bias.len();
            let w = Tensor::from_slice(&pair.head.weight, (outputs, width), x.device())?;
            let b = Tensor::from_slice(&pair.head.bias, outputs, x.device())?;
            let z = (w.matmul(&x.unsqueeze(1)?)?.squeeze(1)? + b)?;
            if outputs == 1 {
                Tensor::cat(&[&z.zeros_like()?, &z], 0)?
            } else {
                z
            }
        }
        (Some(h), None) => {
            return Err(ModelError::UnknownHook {
                name: h.to_string(),
                hint: format!(
                    " (the {} differentiable forward never reached it)",
                    model.model.family()
                ),
            })
        }
    };
    // The rival is the largest other class at the base run (held fixed, as a first-order
    // estimate holds everything but the activation fixed).
    let zs: Vec<f32> = z.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    let rival = (0..zs.len())
        .filter(|&c| c != pair.class)
        .max_by(|&a, &b| zs[a].total_cmp(&zs[b]))
        .unwrap_or(pair.class);
    let value = super::atp::metric_tensor(metric, &z, pair.class, rival, clean_logp)?;
    let base_metric = value
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    Ok((base_metric, taps.gradients(&value, model.model.family())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_metrics_from_class_logits() {
        let z = [2.0, 0.5, -1.0];
        let lp = log_softmax(&z);
        assert_eq!(target_score(Metric::LogitDiff, &z, 0, &lp), 1.5);
        assert_eq!(target_score(Metric::LogitDiff, &z, 2, &lp), -3.0);
        assert!(target_score(Metric::Kl, &z, 0, &lp).abs() < 1e-12);
        let p: f64 = (0..3).map(|c| target_score(Metric::Prob, &z, c, &lp)).sum();
        assert!((p - 1.0).abs() < 1e-12);
        // A binary probe's one output z reads as classes [0, z]: logit_diff is ±z.
        let head = TargetHead {
            hook: None,
            pool: Pool::Mean,
            weight: vec![1.0, 2.0],
            bias: vec![0.5],
        };
        let two = outputs(&[1.0, 1.0], &head);
        assert_eq!(two, vec![0.0, 3.5]);
        assert_eq!(
            target_score(Metric::LogitDiff, &two, 1, &log_softmax(&two)),
            3.5
        );
        assert_eq!(
            target_score(Metric::LogitDiff, &two, 0, &log_softmax(&two)),
            -3.5
        );
    }
}
