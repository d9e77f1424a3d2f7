//! Ablation: each hook's activation (or, for `attn.hook_z`, each head's slice; for
//! `mlp.hook_post` with neurons, each unit) replaced at every position of the clean prompt by
//! zeros, by its mean over the pairs' clean runs (the reference set), or by another pair's
//! clean activation of the same token count (resample ablation, the partner drawn with the
//! seed). Measured against the clean run: the metric's change and the change of the mean
//! next-token cross-entropy over the prompt, each averaged over pairs with a seeded
//! percentile-bootstrap 95% interval. A unit the model uses moves them; one it ignores leaves
//! them at zero.

use super::forward::{
    batch_of, cached_run, log_softmax, logits_and_loss_from, score, Cache, Overwrite, Source,
};
use super::{check_patchable, Metric, PreparedPair};
use glassbox_data::rng::SeededRng;
use glassbox_data::HookPoint;
use glassbox_models::{LoadedModel, ModelError, Result};
use std::collections::BTreeMap;

/// What an ablated activation is replaced by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ablation {
    /// Zeros.
    Zero,
    /// The unit's mean over every position of every pair's clean prompt.
    Mean,
    /// Another pair's clean activation, position by position (a pair with the same token
    /// count, drawn with the seed).
    Resample,
}

impl Ablation {
    /// `zero`, `mean` or `resample`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ablation::Zero => "zero",
            Ablation::Mean => "mean",
            Ablation::Resample => "resample",
        }
    }
}

/// How to ablate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AblationOptions {
    /// What replaces the activation.
    pub kind: Ablation,
    /// Ablate `attn.hook_z` head by head.
    pub heads: bool,
    /// Ablate `mlp.hook_post` unit by unit.
    pub neurons: bool,
    /// The metric whose change is measured.
    pub metric: Metric,
    /// Ablated runs per forward.
    pub batch_size: usize,
    /// Seed of the resample partners and the bootstrap intervals.
    pub seed: u64,
}

/// One unit's ablation over the pairs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AblationRow {
    /// The hook ablated.
    pub hook: HookPoint,
    /// The head (`attn.hook_z` with heads), else the whole hook.
    pub head: Option<u32>,
    /// The unit (`mlp.hook_post` with neurons), else the whole hook.
    pub neuron: Option<u32>,
    /// The dictionary feature (SAE feature ablation), else the whole hook.
    pub feature: Option<u32>,
    /// `zero`, `mean` or `resample`.
    pub ablation: &'static str,
    /// Mean over pairs of `metric(ablated) − metric(clean)`.
    pub delta: f64,
    /// Percentile-bootstrap 95% interval of `delta` (resampling pairs): lower end.
    pub ci_low: f64,
    /// Upper end.
    pub ci_high: f64,
    /// Mean over pairs of the change in mean next-token cross-entropy over the prompt (nats).
    pub loss_delta: f64,
    /// Its bootstrap 95% interval: lower end.
    pub loss_ci_low: f64,
    /// Upper end.
    pub loss_ci_high: f64,
    /// Pairs.
    pub n: u64,
}

/// The slices of a hook ablated one at a time: heads, units, or the whole width.
enum Slices {
    Whole,
    Heads(usize),
    Units(usize),
}

/// Ablates every hook (and head of `attn.hook_z`, unit of `mlp.hook_post`, as asked) on every
/// pair's clean prompt.
pub fn ablate(
    model: &LoadedModel,
    pairs: &[PreparedPair],
    hooks: &[HookPoint],
    opts: &AblationOptions,
) -> Result<Vec<AblationRow>> {
    for &hook in hooks {
        check_patchable(hook)?;
    }
    let partners = partners(pairs, opts)?;
    let mut cached: Vec<HookPoint> = hooks.to_vec();
    cached.extend(
        hooks
            .iter()
            .filter_map(|h| h.layer().map(HookPoint::ResidPre)),
    );
    cached.sort();
    cached.dedup();
    let runs: Vec<(Cache, Vec<f32>)> = pairs
        .iter()
        .map(|p| cached_run(model, &p.clean, &cached, false).map(|run| (run.acts, run.logits)))
        .collect::<Result<_>>()?;
    let fills: BTreeMap<HookPoint, Vec<f32>> = hooks
        .iter()
        .map(|&h| (h, fill_for(opts.kind, h, model.model.hook_width(h), &runs)))
        .collect();
    let n_heads = model.model.attention_heads();
    // (hook, slice) → per-pair (metric delta, loss delta)
    type Deltas = (HookPoint, Vec<f64>, Vec<f64>);
    let mut deltas: BTreeMap<(String, Option<usize>), Deltas> = BTreeMap::new();
    for (i, (pair, (acts, logits))) in pairs.iter().zip(&runs).enumerate() {
        let (clean_logp, clean, clean_loss) = clean_scores(model, pair, logits, opts.metric)?;
        for &hook in hooks {
            let width = model.model.hook_width(hook);
            let slices = match (hook, n_heads) {
                (HookPoint::AttnZ(_), Some(h)) if opts.heads && h > 0 && width % h == 0 => {
                    Slices::Heads(h)
                }
                (HookPoint::MlpPost(_), _) if opts.neurons => Slices::Units(width),
                _ => Slices::Whole,
            };
            let (count, slice_width) = match slices {
                Slices::Whole => (0, width),
                Slices::Heads(h) => (h, width / h),
                Slices::Units(u) => (u, 1),
            };
            let jobs: Vec<Option<usize>> = match slices {
                Slices::Whole => vec![None],
                _ => (0..count).map(Some).collect(),
            };
            let source = match opts.kind {
                Ablation::Resample => match partners[i] {
                    Some(j) => Source::Rows(&runs[j].0[&hook]),
                    None => continue,
                },
                _ => Source::Fill(&fills[&hook]),
            };
            let start = hook
                .layer()
                .and_then(|l| acts.get(&HookPoint::ResidPre(l)).map(|r| (l, r.as_slice())));
            for chunk in jobs.chunks(opts.batch_size.max(1)) {
                let batch = batch_of(model, &pair.clean, chunk.len())?;
                let targets: Vec<_> = chunk.iter().map(|h| (None, *h)).collect();
                let mut hooks_impl = Overwrite {
                    point: hook,
                    jobs: &targets,
                    source,
                    head_dim: slice_width,
                    shift: &[],
                };
                let (out, losses) =
                    logits_and_loss_from(model, &batch, start, &mut hooks_impl, &pair.clean.ids)?;
                let metrics = score(opts.metric, &out, pair, &clean_logp);
                for ((slice, m), loss) in chunk.iter().zip(metrics).zip(losses) {
                    let e = deltas.entry((hook.to_string(), *slice)).or_insert((
                        hook,
                        Vec::new(),
                        Vec::new(),
                    ));
                    e.1.push(m - clean);
                    e.2.push(loss - clean_loss);
                }
            }
        }
    }
    let mut rng = SeededRng::new(opts.seed);
    Ok(deltas
        .into_iter()
        .map(|((_, slice), (hook, d, loss))| {
            let slice = slice.map(|s| s as u32);
            let unit = match hook {
                HookPoint::MlpPost(_) => (None, slice, None),
                _ => (slice, None, None),
            };
            ablation_row(hook, unit, opts.kind, (&d, &loss), &mut rng)
        })
        .collect())
}

/// A sparse dictionary at one hook, whose features are ablated through it: the activation keeps
/// the dictionary's reconstruction error, and feature `j`'s share `a_j · d_j` is replaced.
pub struct FeatureDictionary<'a> {
    /// The hook the dictionary reads and writes.
    pub hook: HookPoint,
    /// Rows (`n × d`, row-major) → dense codes (`n × features`).
    pub encode: &'a crate::interventions::Reconstruct<'a>,
    /// Decoder rows, `features × d`.
    pub decoder: &'a [f32],
    /// Features.
    pub features: usize,
}

/// Feature `j` ablated in every copy `j` of a batch: `x += (fill − a_j) · d_j` at every
/// position, from the clean prompt's codes.
struct FeatureEdit<'a> {
    point: HookPoint,
    features: &'a [usize],
    /// `[t × F]` codes of the prompt at the hook.
    codes: &'a [f32],
    /// `[t × F]` replacement codes (zeros, means, a partner's codes).
    fill: &'a [f32],
    decoder: &'a [f32],
    n_features: usize,
}

impl glassbox_models::Hooks for FeatureEdit<'_> {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn visit(
        &mut self,
        point: HookPoint,
        x: candle_core::Tensor,
    ) -> candle_core::Result<candle_core::Tensor> {
        if point != self.point {
            return Ok(x);
        }
        let (k, t, d) = x.dims3()?;
        let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
        for (copy, &j) in self.features.iter().enumerate().take(k) {
            let dj = &self.decoder[j * d..(j + 1) * d];
            for p in 0..t {
                let change =
                    self.fill[p * self.n_features + j] - self.codes[p * self.n_features + j];
                if change == 0.0 {
                    continue;
                }
                let row = &mut v[(copy * t + p) * d..(copy * t + p + 1) * d];
                row.iter_mut().zip(dj).for_each(|(r, w)| *r += change * w);
            }
        }
        candle_core::Tensor::from_vec(v, (k, t, d), x.device())
    }
}

/// Ablates every feature of `dict` active on some pair's clean prompt, one at a time, on every
/// pair's clean prompt: zero (its share removed), mean (set to its mean over every position of
/// every clean prompt) or resample (set to a partner pair's codes, position by position).
pub fn ablate_features(
    model: &LoadedModel,
    pairs: &[PreparedPair],
    dict: &FeatureDictionary<'_>,
    opts: &AblationOptions,
) -> Result<Vec<AblationRow>> {
    check_patchable(dict.hook)?;
    let width = model.model.hook_width(dict.hook);
    if dict.decoder.len() != dict.features * width {
        return Err(ModelError::Invalid(format!(
            "the dictionary at `{}` has {} decoder values for {} features, but the hook is {width} wide",
            dict.hook,
            dict.decoder.len(),
            dict.features
        )));
    }
    let partners = partners(pairs, opts)?;
    let mut cached = vec![dict.hook];
    cached.extend(dict.hook.layer().map(HookPoint::ResidPre));
    let runs: Vec<(Cache, Vec<f32>)> = pairs
        .iter()
        .map(|p| cached_run(model, &p.clean, &cached, false).map(|run| (run.acts, run.logits)))
        .collect::<Result<_>>()?;
    let f = dict.features;
    let codes: Vec<Vec<f32>> = runs
        .iter()
        .map(|(acts, _)| (dict.encode)(&acts[&dict.hook]).map_err(ModelError::Invalid))
        .collect::<Result<_>>()?;
    let mut active = vec![false; f];
    let mut mean = vec![0f64; f];
    let mut positions = 0usize;
    for c in &codes {
        for row in c.chunks_exact(f) {
            for (j, v) in row.iter().enumerate() {
                active[j] |= *v != 0.0;
                mean[j] += *v as f64;
            }
            positions += 1;
        }
    }
    let features: Vec<usize> = (0..f).filter(|&j| active[j]).collect();
    let mut deltas: BTreeMap<usize, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (i, (pair, (acts, logits))) in pairs.iter().zip(&runs).enumerate() {
        let t = pair.clean.ids.len();
        let fill: Vec<f32> = match opts.kind {
            Ablation::Zero => vec![0.0; t * f],
            Ablation::Mean => (0..t)
                .flat_map(|_| mean.iter().map(|m| (m / positions.max(1) as f64) as f32))
                .collect(),
            Ablation::Resample => match partners[i] {
                Some(j) => codes[j].clone(),
                None => continue,
            },
        };
        let (clean_logp, clean, clean_loss) = clean_scores(model, pair, logits, opts.metric)?;
        let start = dict
            .hook
            .layer()
            .and_then(|l| acts.get(&HookPoint::ResidPre(l)).map(|r| (l, r.as_slice())));
        for chunk in features.chunks(opts.batch_size.max(1)) {
            let batch = batch_of(model, &pair.clean, chunk.len())?;
            let mut edit = FeatureEdit {
                point: dict.hook,
                features: chunk,
                codes: &codes[i],
                fill: &fill,
                decoder: dict.decoder,
                n_features: f,
            };
            let (out, losses) =
                logits_and_loss_from(model, &batch, start, &mut edit, &pair.clean.ids)?;
            let metrics = score(opts.metric, &out, pair, &clean_logp);
            for ((&j, m), loss) in chunk.iter().zip(metrics).zip(losses) {
                let e = deltas.entry(j).or_default();
                e.0.push(m - clean);
                e.1.push(loss - clean_loss);
            }
        }
    }
    let mut rng = SeededRng::new(opts.seed);
    Ok(deltas
        .into_iter()
        .map(|(j, (d, loss))| {
            let unit = (None, None, Some(j as u32));
            ablation_row(dict.hook, unit, opts.kind, (&d, &loss), &mut rng)
        })
        .collect())
}

/// A pair's clean run: its next-token log-probabilities at the last position, its metric and
/// its mean next-token cross-entropy over the prompt.
fn clean_scores(
    model: &LoadedModel,
    pair: &PreparedPair,
    logits: &[f32],
    metric: Metric,
) -> Result<(Vec<f64>, f64, f64)> {
    let clean_logp = log_softmax(logits);
    let clean = score(
        metric,
        std::slice::from_ref(&logits.to_vec()),
        pair,
        &clean_logp,
    )[0];
    let one = batch_of(model, &pair.clean, 1)?;
    let (_, loss) = logits_and_loss_from(
        model,
        &one,
        None,
        &mut glassbox_models::Capture::new([]),
        &pair.clean.ids,
    )?;
    Ok((clean_logp, clean, loss[0]))
}

/// One ablated unit's row from its per-pair metric and loss changes, with bootstrap intervals.
fn ablation_row(
    hook: HookPoint,
    (head, neuron, feature): (Option<u32>, Option<u32>, Option<u32>),
    kind: Ablation,
    (d, loss): (&[f64], &[f64]),
    rng: &mut SeededRng,
) -> AblationRow {
    let (ci_low, ci_high) = bootstrap_mean_ci(d, 1000, rng);
    let (loss_ci_low, loss_ci_high) = bootstrap_mean_ci(loss, 1000, rng);
    AblationRow {
        hook,
        head,
        neuron,
        feature,
        ablation: kind.as_str(),
        delta: d.iter().sum::<f64>() / d.len() as f64,
        ci_low,
        ci_high,
        loss_delta: loss.iter().sum::<f64>() / loss.len() as f64,
        loss_ci_low,
        loss_ci_high,
        n: d.len() as u64,
    }
}

/// Each pair's resample partner (another pair of the same token count, drawn with the seed),
/// for resample ablation; an error when no pair has one.
fn partners(pairs: &[PreparedPair], opts: &AblationOptions) -> Result<Vec<Option<usize>>> {
    if opts.kind != Ablation::Resample {
        return Ok(vec![None; pairs.len()]);
    }
    let mut rng = SeededRng::new(opts.seed ^ 0x7265_7361_6d70);
    let chosen: Vec<Option<usize>> = (0..pairs.len())
        .map(|i| {
            let same: Vec<usize> = (0..pairs.len())
                .filter(|&j| j != i && pairs[j].clean.ids.len() == pairs[i].clean.ids.len())
                .collect();
            (!same.is_empty()).then(|| same[rng.below(same.len())])
        })
        .collect();
    if chosen.iter().all(Option::is_none) {
        return Err(ModelError::Invalid(
            "resample ablation takes each pair's activations from another pair's clean prompt of the same token count, and no two pairs have the same length; add pairs of equal length or use --ablate zero|mean".into(),
        ));
    }
    Ok(chosen)
}

/// The replacement row of a hook: zeros, or the mean over every position of every clean run.
fn fill_for(kind: Ablation, hook: HookPoint, width: usize, runs: &[(Cache, Vec<f32>)]) -> Vec<f32> {
    let mut fill = vec![0f64; width];
    if kind == Ablation::Mean {
        let mut rows = 0usize;
        for (acts, _) in runs {
            for row in acts[&hook].chunks_exact(width) {
                fill.iter_mut().zip(row).for_each(|(f, v)| *f += *v as f64);
                rows += 1;
            }
        }
        fill.iter_mut().for_each(|f| *f /= rows.max(1) as f64);
    }
    fill.into_iter().map(|v| v as f32).collect()
}

/// Expanded percentile bootstrap 95% interval of the mean of `values` (resampling with
/// replacement; small-sample corrected, `glassbox_probes::metrics::expanded_level`).
pub fn bootstrap_mean_ci(values: &[f64], resamples: usize, rng: &mut SeededRng) -> (f64, f64) {
    if values.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len();
    let means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    glassbox_probes::metrics::expanded_percentile_interval(means, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_brackets_the_mean_and_is_seeded() {
        let v: Vec<f64> = (0..40).map(|i| (i % 7) as f64).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let (lo, hi) = bootstrap_mean_ci(&v, 1000, &mut SeededRng::new(3));
        assert!(lo < mean && mean < hi, "{lo} {mean} {hi}");
        assert_eq!(
            (lo, hi),
            bootstrap_mean_ci(&v, 1000, &mut SeededRng::new(3))
        );
        assert!(bootstrap_mean_ci(&[1.0], 100, &mut SeededRng::new(0))
            .0
            .is_nan());
    }
}
