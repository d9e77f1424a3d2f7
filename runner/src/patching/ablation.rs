//! Ablation: each hook's activation (or, for `attn.hook_z`, each head's slice) replaced at every
//! position of the clean prompt by zeros or by its mean over the pairs' clean runs (the
//! reference set), and the metric's change against the clean run, averaged over pairs with a
//! seeded percentile-bootstrap 95% interval. A unit the model uses moves the metric; one it
//! ignores leaves it at zero.

use super::forward::{
    batch_of, cached_run, last_logits_from, log_softmax, score, Cache, Overwrite, Source,
};
use super::{check_patchable, Metric, PreparedPair};
use glassbox_data::rng::SeededRng;
use glassbox_data::HookPoint;
use glassbox_models::{LoadedModel, Result};
use std::collections::BTreeMap;

/// What an ablated activation is replaced by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ablation {
    /// Zeros.
    Zero,
    /// The unit's mean over every position of every pair's clean prompt.
    Mean,
}

impl Ablation {
    /// `zero` or `mean`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ablation::Zero => "zero",
            Ablation::Mean => "mean",
        }
    }
}

/// One unit's ablation over the pairs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AblationRow {
    /// The hook ablated.
    pub hook: HookPoint,
    /// The head (`attn.hook_z` with heads), else the whole hook.
    pub head: Option<u32>,
    /// `zero` or `mean`.
    pub ablation: &'static str,
    /// Mean over pairs of `metric(ablated) − metric(clean)`.
    pub delta: f64,
    /// Percentile-bootstrap 95% interval of `delta` (resampling pairs): lower end.
    pub ci_low: f64,
    /// Upper end.
    pub ci_high: f64,
    /// Pairs.
    pub n: u64,
}

/// Ablates every hook (and head of `attn.hook_z` with `heads`) on every pair's clean prompt.
#[allow(clippy::too_many_arguments)]
pub fn ablate(
    model: &LoadedModel,
    pairs: &[PreparedPair],
    hooks: &[HookPoint],
    heads: bool,
    kind: Ablation,
    metric: Metric,
    batch_size: usize,
    seed: u64,
) -> Result<Vec<AblationRow>> {
    for &hook in hooks {
        check_patchable(hook)?;
    }
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
        .map(|p| cached_run(model, &p.clean, &cached))
        .collect::<Result<_>>()?;
    let fills: BTreeMap<HookPoint, Vec<f32>> = hooks
        .iter()
        .map(|&h| (h, fill_for(kind, h, model.model.hook_width(h), &runs)))
        .collect();
    let n_heads = model.model.attention_heads();
    // (hook, head) → per-pair deltas
    let mut deltas: BTreeMap<(String, Option<usize>), (HookPoint, Vec<f64>)> = BTreeMap::new();
    for (pair, (acts, logits)) in pairs.iter().zip(&runs) {
        let clean_logp = log_softmax(logits);
        let clean = score(metric, std::slice::from_ref(logits), pair, &clean_logp)[0];
        for &hook in hooks {
            let width = model.model.hook_width(hook);
            let per_head = match (heads, hook, n_heads) {
                (true, HookPoint::AttnZ(_), Some(h)) if h > 0 && width % h == 0 => Some(h),
                _ => None,
            };
            let head_dim = per_head.map_or(width, |h| width / h);
            let jobs: Vec<Option<usize>> = match per_head {
                Some(h) => (0..h).map(Some).collect(),
                None => vec![None],
            };
            let start = hook
                .layer()
                .and_then(|l| acts.get(&HookPoint::ResidPre(l)).map(|r| (l, r.as_slice())));
            for chunk in jobs.chunks(batch_size.max(1)) {
                let batch = batch_of(model, &pair.clean, chunk.len())?;
                let targets: Vec<_> = chunk.iter().map(|h| (None, *h)).collect();
                let mut hooks_impl = Overwrite {
                    point: hook,
                    jobs: &targets,
                    source: Source::Fill(&fills[&hook]),
                    head_dim,
                };
                let out = last_logits_from(model, &batch, start, &mut hooks_impl)?;
                for (head, m) in chunk.iter().zip(score(metric, &out, pair, &clean_logp)) {
                    deltas
                        .entry((hook.to_string(), *head))
                        .or_insert((hook, Vec::new()))
                        .1
                        .push(m - clean);
                }
            }
        }
    }
    let mut rng = SeededRng::new(seed);
    Ok(deltas
        .into_iter()
        .map(|((_, head), (hook, d))| {
            let (lo, hi) = bootstrap_mean_ci(&d, 1000, &mut rng);
            AblationRow {
                hook,
                head: head.map(|h| h as u32),
                ablation: kind.as_str(),
                delta: d.iter().sum::<f64>() / d.len() as f64,
                ci_low: lo,
                ci_high: hi,
                n: d.len() as u64,
            }
        })
        .collect())
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

/// Percentile bootstrap (2.5%, 97.5%) of the mean of `values`, resampling with replacement.
pub fn bootstrap_mean_ci(values: &[f64], resamples: usize, rng: &mut SeededRng) -> (f64, f64) {
    if values.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (at(0.025), at(0.975))
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
