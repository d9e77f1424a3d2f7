//! Training an SAE end to end: options → shuffled batches → steps with checkpoints → weights
//! in raw activation space, plus the evaluation metrics.

use super::checkpoint;
use super::ev_bootstrap::Bootstrap;
use super::metrics::{MetricSums, Metrics};
use super::options::{BDecInit, Resolved, SaeOptions};
use super::stream::{MixingBuffer, RowSource};
use super::train::{normalise_rows, StepConfig, StepStats, Trainer};
use super::{dense, Architecture, Sae};
use crate::ConceptError;
use glassbox_data::rng::SeededRng;
use glassbox_data::Progress;
use rayon::prelude::*;

use std::path::Path;

pub use super::curve::CurvePoint;

/// A finished (or paused) training run.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// In raw activation space (input scaling folded in).
    pub sae: Sae,
    pub resolved: Resolved,
    /// The factor inputs were multiplied by during training.
    pub scale: f32,
    pub steps_done: usize,
    /// The step a checkpoint resumed from, if any.
    pub resumed_from: Option<usize>,
    /// Every `max(1, steps / 200)`-th step, plus the last.
    pub curve: Vec<CurvePoint>,
    /// Fraction of latents dead (no firing within `dead_window` tokens) at the end.
    pub dead_fraction_training: f64,
    /// False when `pause_after` stopped the run early (the checkpoint holds its state).
    pub complete: bool,
    /// A transcoder's skip connection (`d × d`, output-major, raw space), if trained with one.
    pub w_skip: Option<Vec<f32>>,
    /// A transcoder's target scaling factor (its input's is `scale`).
    pub target_scale: Option<f32>,
}

/// What a dictionary learns to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Its own input (an SAE).
    Reconstruct,
    /// The second half of each `[x | y]` row from the first (a transcoder), with or without a
    /// skip connection.
    Transcode { skip: bool },
}

/// Where checkpoints go and when to stop early.
#[derive(Debug, Clone, Default)]
pub struct FitControl<'a> {
    /// Checkpoint file (resumed from when present and written with the same fingerprint).
    pub checkpoint: Option<&'a Path>,
    /// Identifies options + data; a checkpoint with another fingerprint is refused.
    pub fingerprint: String,
    /// Stop after this many steps in this call (a checkpoint is written first); `None` runs
    /// to the end. For time-boxed jobs: run again to continue.
    pub pause_after: Option<usize>,
}

/// Trains an SAE on `source` (`train_rows` rows per epoch).
pub fn fit<S: RowSource>(
    source: S,
    train_rows: u64,
    options: &SaeOptions,
    control: &FitControl<'_>,
    progress: &dyn Progress,
) -> Result<Fitted, ConceptError> {
    fit_for(
        Objective::Reconstruct,
        source,
        train_rows,
        options,
        control,
        progress,
    )
}

/// Trains an SAE, or a transcoder on `[x | y]` rows (a `PairedRows` source), on `source`.
pub fn fit_for<S: RowSource>(
    objective: Objective,
    source: S,
    train_rows: u64,
    options: &SaeOptions,
    control: &FitControl<'_>,
    progress: &dyn Progress,
) -> Result<Fitted, ConceptError> {
    let transcoder = objective != Objective::Reconstruct;
    let segments = if transcoder { 2 } else { 1 };
    let d = source.width() / segments;
    if transcoder && !options.matryoshka_widths.is_empty() {
        return Err(ConceptError::Invalid(
            "Matryoshka levels are for SAEs; train the transcoder without `matryoshka_widths`"
                .into(),
        ));
    }
    let resolved = options.resolve(d, train_rows)?;
    let capacity = (options.buffer_rows as u64).min(train_rows) as usize;
    let mut buffer = MixingBuffer::with_segments(
        source,
        capacity,
        resolved.batch_size,
        options.seed,
        options.scale_inputs,
        segments,
    )?;
    let scales = buffer.scales().to_vec();
    let config = StepConfig {
        aux_coefficient: options.aux_coefficient,
        dead_window: options.dead_window,
        decay_fraction: options.decay_fraction,
        beta1: options.adam_beta1,
        beta2: options.adam_beta2,
        eps: options.adam_eps,
        l0_coefficient: options.l0_coefficient,
        bandwidth: options.jumprelu_bandwidth,
        threshold_lr: options.topk_threshold_lr,
        dense_from: super::train::DENSE_BACKWARD_FROM,
    };
    let mut trainer = match objective {
        Objective::Reconstruct => Trainer::new(
            initial_sae(&resolved, options, buffer.contents()),
            resolved.clone(),
            config,
        ),
        Objective::Transcode { skip } => {
            // b_dec is the output's bias: initialised from the targets.
            let targets: Vec<f32> = buffer
                .contents()
                .chunks_exact(2 * d)
                .flat_map(|row| row[d..].iter().copied())
                .collect();
            Trainer::transcoder(
                initial_sae(&resolved, options, &targets),
                resolved.clone(),
                config,
                skip,
            )
        }
    };
    let mut resumed_from = None;
    let mut curve = Vec::new();
    if let Some(path) = control.checkpoint.filter(|p| p.exists()) {
        let (saved_scales, saved_curve) =
            checkpoint::load(path, &mut trainer, &control.fingerprint)?;
        curve = saved_curve;
        let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        if bits(&saved_scales) != bits(&scales) {
            return Err(ConceptError::Invalid(format!(
                "checkpoint {}: its input scale {saved_scales:?} differs from this data's \
                 {scales:?}; delete it (or rerun with --force)",
                path.display()
            )));
        }
        resumed_from = Some(trainer.step);
        progress.note(&format!(
            "resuming SAE training from step {} of {} ({})",
            trainer.step,
            resolved.steps,
            path.display()
        ));
        // Batches are a seeded function of the step: replay the stream up to it.
        for _ in 0..trainer.step {
            buffer.next_batch()?;
        }
    }

    let every = (resolved.steps / 200).max(1);
    let start = trainer.step;
    progress.start(
        "SAE training (tokens)",
        (resolved.steps * resolved.batch_size) as u64,
    );
    progress.advance((start * resolved.batch_size) as u64);
    while trainer.step < resolved.steps {
        let lr = resolved.lr_at(trainer.step, options.decay_fraction);
        let batch = buffer.next_batch()?;
        let last: StepStats = trainer.step(batch)?;
        if !last.mse.is_finite() {
            return Err(ConceptError::Invalid(format!(
                "SAE training diverged at step {} (loss {}); lower `lr` in [dictionary]",
                trainer.step, last.mse
            )));
        }
        progress.advance(resolved.batch_size as u64);
        if trainer.step.is_multiple_of(every) || trainer.step == resolved.steps {
            curve.push(CurvePoint {
                step: trainer.step,
                lr,
                stats: last,
            });
        }
        let paused = control
            .pause_after
            .is_some_and(|n| trainer.step - start >= n);
        if let Some(path) = control.checkpoint {
            if trainer.step.is_multiple_of(options.checkpoint_every) || paused {
                checkpoint::save(path, &trainer, &scales, &control.fingerprint, &curve)?;
            }
        }
        if paused && trainer.step < resolved.steps {
            progress.finish();
            return Ok(finish(trainer, &scales, resumed_from, curve, false));
        }
    }
    progress.finish();
    Ok(finish(trainer, &scales, resumed_from, curve, true))
}

fn finish(
    trainer: Trainer,
    scales: &[f32],
    resumed_from: Option<usize>,
    curve: Vec<CurvePoint>,
    complete: bool,
) -> Fitted {
    let dead = trainer.dead_latents().len();
    let mut sae = trainer.inference_sae();
    let (mut w_skip, mut target_scale) = (None, None);
    if trainer.transcoder {
        let (sx, sy) = (scales[0], scales[1]);
        let skip = (!trainer.w_skip.is_empty()).then(|| trainer.w_skip.clone());
        let folded = super::transcoder::fold_training_scales(sae, skip, sx, sy);
        sae = folded.sae;
        w_skip = folded.w_skip;
        target_scale = Some(sy);
    } else {
        sae.fold_input_scale(scales[0]);
    }
    Fitted {
        dead_fraction_training: dead as f64 / sae.width as f64,
        sae,
        resolved: trainer.resolved.clone(),
        scale: scales[0],
        steps_done: trainer.step,
        resumed_from,
        curve,
        complete,
        w_skip,
        target_scale,
    }
}

/// Decoder rows: seeded Gaussian directions of unit norm; encoder = decoder transposed (Gao et
/// al.); `b_enc = 0`; `b_dec` = mean or geometric median of the first buffer.
fn initial_sae(resolved: &Resolved, options: &SaeOptions, rows: &[f32]) -> Sae {
    let (d, width) = (resolved.d_in, resolved.width);
    // A stream of its own, so the buffer's shuffles do not shift with the width.
    let mut rng = SeededRng::new(options.seed ^ 0x5AE_DEC0_DE00);
    let mut w_dec: Vec<f32> = (0..width * d).map(|_| rng.gaussian() as f32).collect();
    normalise_rows(&mut w_dec, d);
    let b_dec = match options.b_dec_init {
        BDecInit::Mean => mean(rows, d),
        BDecInit::GeometricMedian => geometric_median(rows, d),
    };
    let mut sae = Sae {
        input_norm: Default::default(),
        d_in: d,
        width,
        architecture: resolved.architecture,
        w_enc: w_dec.clone(),
        b_enc: vec![0.0; width],
        w_dec,
        b_dec,
        threshold: Vec::new(),
        gate: None,
    };
    if resolved.architecture == Architecture::JumpRelu {
        sae.threshold = match options.jumprelu_init_threshold {
            Some(theta) => vec![theta; width],
            None => quantile_thresholds(&sae, rows, options.k),
        };
    }
    sae
}

/// Each latent's threshold at the level its pre-activation exceeds on `k / width` of (up to
/// 1,024 of) `rows`, at least 0: the initial SAE fires about `k` latents per row.
fn quantile_thresholds(sae: &Sae, rows: &[f32], k: usize) -> Vec<f32> {
    let d = sae.d_in;
    let n = (rows.len() / d).min(1024);
    if n == 0 {
        return vec![0.0; sae.width];
    }
    let bias = sae.encoder_bias();
    let mut pre = vec![0.0f32; n * sae.width];
    let mut at = 0;
    let filled = dense::for_each_product_block(&rows[..n * d], d, &sae.w_enc, |_, block| {
        pre[at..at + block.len()].copy_from_slice(block);
        at += block.len();
    });
    if filled.is_err() {
        return vec![0.0; sae.width];
    }
    // The rank counted from the top that k / width of the rows exceed.
    let above = ((n as f64 * k as f64 / sae.width as f64).round() as usize).clamp(1, n);
    (0..sae.width)
        .into_par_iter()
        .map(|j| {
            let mut column: Vec<f32> = (0..n).map(|r| pre[r * sae.width + j] + bias[j]).collect();
            if above >= n {
                return 0.0;
            }
            // Strictly above the (n − above)-th smallest: `above` rows (ties aside).
            let (_, value, _) = column.select_nth_unstable_by(n - above - 1, |a, b| a.total_cmp(b));
            value.max(0.0)
        })
        .collect()
}

fn mean(rows: &[f32], d: usize) -> Vec<f32> {
    let n = (rows.len() / d).max(1) as f64;
    let mut sum = vec![0.0f64; d];
    for row in rows.chunks_exact(d) {
        sum.iter_mut().zip(row).for_each(|(s, v)| *s += *v as f64);
    }
    sum.iter().map(|s| (s / n) as f32).collect()
}

/// Weiszfeld's iterations from the mean (at most 100, stopping when the point moves < 1e-6).
pub fn geometric_median(rows: &[f32], d: usize) -> Vec<f32> {
    let mut point: Vec<f64> = mean(rows, d).iter().map(|&v| v as f64).collect();
    for _ in 0..100 {
        let mut num = vec![0.0f64; d];
        let mut den = 0.0f64;
        for row in rows.chunks_exact(d) {
            let dist = row
                .iter()
                .zip(&point)
                .map(|(v, p)| (*v as f64 - p).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            den += 1.0 / dist;
            num.iter_mut()
                .zip(row)
                .for_each(|(n, v)| *n += *v as f64 / dist);
        }
        let next: Vec<f64> = num.iter().map(|n| n / den).collect();
        let moved = next
            .iter()
            .zip(&point)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        point = next;
        if moved < 1e-6 {
            break;
        }
    }
    point.iter().map(|&v| v as f32).collect()
}

/// Metrics of `sae` on every row of `source` (one epoch), in chunks of 4,096 rows, with the
/// explained variance's interval over `bootstrap` resamples of the texts.
pub fn evaluate<S: RowSource>(
    sae: &Sae,
    source: &mut S,
    bootstrap: Bootstrap,
) -> Result<Metrics, ConceptError> {
    let mut sums = MetricSums::new(sae.d_in, sae.width).with_bootstrap(bootstrap);
    super::stream::for_each_chunk(source, 4096, |rows, ids| {
        let (codes, stats) = sae.encode_with_stats(rows)?;
        let x_hat = sae.decode_with_stats(&codes, &stats);
        sums.add_rows(ids, rows, &x_hat, Some(&codes));
        Ok(())
    })?;
    Ok(sums.finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn jumprelu_thresholds_start_at_l0_near_k() {
        use super::super::options::ArchitectureName;
        let (d, n) = (24, 2000);
        let mut rng = glassbox_data::rng::SeededRng::new(9);
        let rows: Vec<f32> = (0..n * d).map(|_| rng.gaussian() as f32).collect();
        let options = super::SaeOptions {
            architecture: ArchitectureName::Jumprelu,
            width: Some(200),
            k: 10,
            ..Default::default()
        };
        let resolved = options.resolve(d, n as u64).unwrap();
        let sae = super::initial_sae(&resolved, &options, &rows);
        let l0 = sae.encode(&rows).unwrap().nnz() as f64 / n as f64;
        assert!((8.0..12.0).contains(&l0), "initial L0 {l0}");
        // An explicit start is taken as given.
        let fixed = super::SaeOptions {
            jumprelu_init_threshold: Some(0.01),
            ..options
        };
        let sae = super::initial_sae(&resolved, &fixed, &rows);
        assert!(sae.threshold.iter().all(|&t| t == 0.01));
    }

    #[test]
    fn geometric_median_resists_an_outlier() {
        let rows = [0.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 100.0, 100.0];
        let gm = super::geometric_median(&rows, 2);
        assert!(gm[0] < 1.5 && gm[1] < 1.5, "{gm:?}");
        let mean = super::mean(&rows, 2);
        assert!(mean[0] > 20.0);
    }
}
