//! One probe, start to finish: split, standardise, choose the L2 strength on the validation
//! part, score on the test part with bootstrap CIs, fit the control task, and optionally the
//! MDL code length and the neuron ranking.

use crate::logistic::{self, Logistic, Problem};
use crate::metrics::{accuracy, macro_f1, r2, r2_about};
use crate::{mdl, ridge, ProbeError, ProbeOptions, Result, Split};
use glassbox_data::rng::SeededRng;
use std::collections::HashMap;

/// Scores of one probe (or of its control task).
#[derive(Debug, Clone, Default)]
pub struct Scores {
    /// Accuracy (classification) or R² (regression) on the test part.
    pub score: f64,
    pub ci: (f64, f64),
    pub f1: Option<f64>,
    pub f1_ci: Option<(f64, f64)>,
    /// Majority-class accuracy, or the R² of predicting the training mean.
    pub baseline: f64,
    pub l2: f64,
    pub converged: bool,
}

/// A fitted probe: its scores and its weights mapped back to raw activation space
/// (`logits = weight · x + bias`; one output row for binary probes and regressions).
#[derive(Debug, Clone)]
pub struct Fitted {
    pub scores: Scores,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub outputs: usize,
    /// The predicted class of each `split.test` row, in that order (classifiers; empty for
    /// regressions): what paired comparisons of two probes on the same rows need.
    pub test_predictions: Vec<usize>,
    /// The predicted value of each `split.test` row (regressions; empty for classifiers).
    pub test_values: Vec<f64>,
}

/// Standardises with the training rows' mean and standard deviation (constant units stay 0).
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Standardizer {
    pub fn fit(x: &[f32], d: usize, train: &[usize]) -> Self {
        let n = train.len().max(1) as f64;
        let mut mean = vec![0.0; d];
        let mut sq = vec![0.0; d];
        for &r in train {
            for (u, v) in x[r * d..(r + 1) * d].iter().enumerate() {
                mean[u] += *v as f64;
                sq[u] += (*v as f64) * (*v as f64);
            }
        }
        let mean: Vec<f64> = mean.iter().map(|m| m / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let var = (s / n - m * m).max(0.0);
                if var.sqrt() > 1e-8 {
                    var.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        Self { mean, std }
    }

    /// Standardised copies of `rows`, optionally restricted to `units`.
    pub fn gather(&self, x: &[f32], d: usize, rows: &[usize], units: Option<&[usize]>) -> Vec<f32> {
        let all: Vec<usize>;
        let units = match units {
            Some(u) => u,
            None => {
                all = (0..d).collect();
                &all
            }
        };
        let mut out = Vec::with_capacity(rows.len() * units.len());
        for &r in rows {
            let row = &x[r * d..(r + 1) * d];
            out.extend(
                units
                    .iter()
                    .map(|&u| ((row[u] as f64 - self.mean[u]) / self.std[u]) as f32),
            );
        }
        out
    }
}

/// The probed rows: raw activations (row-major `n × d`), their split, and the training
/// rows' standardisation.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub x: &'a [f32],
    pub d: usize,
    pub split: &'a Split,
    pub std: &'a Standardizer,
}

impl Rows<'_> {
    /// Standardised features of `rows`, optionally restricted to `units`.
    pub fn features(&self, rows: &[usize], units: Option<&[usize]>) -> Vec<f32> {
        self.std.gather(self.x, self.d, rows, units)
    }
}

/// The arithmetic mean (0 for no values).
fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

pub(crate) fn pick<T: Copy>(values: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|&r| values[r]).collect()
}

/// Fits a classifier on `split.train` for every L2 strength in the grid (strongest first,
/// warm-started), keeps the one with the best validation accuracy (ties: the stronger), and
/// scores it on `split.test`.
pub fn fit_classifier(
    rows: Rows<'_>,
    classes: &[usize],
    n_classes: usize,
    opts: &ProbeOptions,
    seed: u64,
) -> Fitted {
    let (d, split) = (rows.d, rows.split);
    let x_train = rows.features(&split.train, None);
    let y_train = pick(classes, &split.train);
    let train = Problem {
        x: &x_train,
        d,
        y: &y_train,
        n_classes,
    };
    let mut grid = opts.l2_grid.clone();
    grid.sort_by(|a, b| b.total_cmp(a));
    let mut best: Option<(f64, f64, Logistic)> = None;
    let mut previous: Option<Logistic> = None;
    if grid.len() > 1 && !split.validation.is_empty() {
        let x_val = rows.features(&split.validation, None);
        let y_val = pick(classes, &split.validation);
        for &l2 in &grid {
            let model = logistic::fit(&train, l2, opts.max_iterations, previous.as_ref());
            let acc = accuracy(&y_val, &model.predict(&x_val));
            if best.as_ref().is_none_or(|(a, _, _)| acc > *a) {
                best = Some((acc, l2, model.clone()));
            }
            previous = Some(model);
        }
    } else {
        let l2 = grid.first().copied().unwrap_or(1.0);
        best = Some((
            f64::NAN,
            l2,
            logistic::fit(&train, l2, opts.max_iterations, None),
        ));
    }
    let (_, l2, model) = best.expect("the grid is not empty");
    let x_test = rows.features(&split.test, None);
    let y_test = pick(classes, &split.test);
    let predicted = model.predict(&x_test);
    let mut counts = vec![0usize; n_classes];
    y_train.iter().for_each(|&c| counts[c] += 1);
    let majority = (0..n_classes)
        .max_by_key(|&c| (counts[c], std::cmp::Reverse(c)))
        .unwrap_or(0);
    let boot = |f: &dyn Fn(&[usize], &[usize]) -> f64, salt: u64| {
        split.test_bootstrap_ci(opts.bootstrap, seed ^ salt, |s| {
            f(&pick(&y_test, s), &pick(&predicted, s))
        })
    };
    let score = accuracy(&y_test, &predicted);
    // `bootstrap = 0` asks for no intervals at all, Wilson's included.
    let ci = if opts.bootstrap == 0 {
        (f64::NAN, f64::NAN)
    } else {
        accuracy_interval(split, &y_test, &predicted, || {
            boot(&|t, p| accuracy(t, p), 1)
        })
    };
    let scores = Scores {
        score,
        ci,
        f1: Some(macro_f1(&y_test, &predicted, n_classes)),
        f1_ci: Some(boot(&|t, p| macro_f1(t, p, n_classes), 2)),
        baseline: y_test.iter().filter(|&&c| c == majority).count() as f64
            / y_test.len().max(1) as f64,
        l2,
        converged: model.converged,
    };
    let (weight, bias, outputs) = to_raw_space(&model.weights, &model.bias, rows.std, d);
    Fitted {
        scores,
        weight,
        bias,
        outputs,
        test_predictions: predicted,
        test_values: Vec::new(),
    }
}

/// The 95% interval of test accuracy: Wilson's over independent test rows; over clustered
/// rows (a text's tokens) the cluster bootstrap `resampled`, except at an accuracy of 1 or 0,
/// where every resample agrees and it would be a point — there Wilson's over the clusters,
/// each then wholly right (or wrong).
fn accuracy_interval(
    split: &Split,
    truth: &[usize],
    predicted: &[usize],
    resampled: impl FnOnce() -> (f64, f64),
) -> (f64, f64) {
    let right = truth.iter().zip(predicted).filter(|(t, p)| t == p).count();
    if split.test_clusters.is_empty() {
        crate::metrics::wilson_interval(right, truth.len())
    } else if right == truth.len() || right == 0 {
        let units = split.test_units();
        crate::metrics::wilson_interval(if right == 0 { 0 } else { units }, units)
    } else {
        resampled()
    }
}

/// Ridge regression with the penalty chosen on the validation part by R².
pub fn fit_regression(
    rows: Rows<'_>,
    values: &[f64],
    opts: &ProbeOptions,
    seed: u64,
) -> Result<Fitted> {
    let (d, split) = (rows.d, rows.split);
    let x_train = rows.features(&split.train, None);
    let y_train = pick(values, &split.train);
    let mut best: Option<(f64, f64, ridge::Ridge)> = None;
    let x_val = rows.features(&split.validation, None);
    let y_val = pick(values, &split.validation);
    for &l2 in &opts.l2_grid {
        // The grid is in sklearn's `1/C` units over summed losses; ridge's penalty is per row.
        let model = ridge::fit(&x_train, d, &y_train, l2 / y_train.len() as f64)?;
        let score = if y_val.is_empty() {
            f64::NAN
        } else {
            r2(&y_val, &model.predict(&x_val))
        };
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, l2, model));
        }
    }
    let (_, l2, model) = best.ok_or_else(|| ProbeError::Invalid("empty l2 grid".into()))?;
    let x_test = rows.features(&split.test, None);
    let y_test = pick(values, &split.test);
    let predicted = model.predict(&x_test);
    let train_mean = mean(&y_train);
    let scores = Scores {
        score: r2(&y_test, &predicted),
        ci: split.test_bootstrap_ci(opts.bootstrap, seed ^ 1, |s| {
            r2_about(&pick(&y_test, s), &pick(&predicted, s), mean(&y_test))
        }),
        f1: None,
        f1_ci: None,
        baseline: r2(&y_test, &vec![train_mean; y_test.len()]),
        l2,
        converged: true,
    };
    let (weight, bias, outputs) = to_raw_space(&model.weights, &[model.intercept], rows.std, d);
    Ok(Fitted {
        scores,
        weight,
        bias,
        outputs,
        test_predictions: Vec::new(),
        test_values: predicted,
    })
}

/// What a probe was trained to predict, per probed row.
#[derive(Clone, Copy)]
pub enum Targets<'a> {
    Classes(&'a [usize]),
    Values(&'a [f64]),
}

/// A probe's predictions on the test rows, in `split.test` order.
#[derive(Clone, Copy)]
pub(crate) enum Predicted<'a> {
    Classes(&'a [usize]),
    Values(&'a [f64]),
}

/// The score (accuracy, or R² for values) of `predicted` on the test positions `sample` (a
/// bootstrap resample); NaN when the predictions and targets are of different kinds.
pub(crate) fn resampled_score(
    split: &Split,
    predicted: Predicted<'_>,
    truth: Targets<'_>,
    sample: &[usize],
) -> f64 {
    match (predicted, truth) {
        (Predicted::Classes(p), Targets::Classes(all)) => {
            let t: Vec<usize> = sample.iter().map(|&i| all[split.test[i]]).collect();
            accuracy(&t, &pick(p, sample))
        }
        (Predicted::Values(p), Targets::Values(all)) => {
            let t: Vec<f64> = sample.iter().map(|&i| all[split.test[i]]).collect();
            let test_mean =
                split.test.iter().map(|&i| all[i]).sum::<f64>() / split.test.len().max(1) as f64;
            r2_about(&t, &pick(p, sample), test_mean)
        }
        _ => f64::NAN,
    }
}

/// Paired percentile-bootstrap 95% interval of the selectivity, `score − control score`:
/// both probes are scored on the same resampled test rows (texts, where the split clusters
/// them), so the interval is that of their difference, not of each score alone. `None`
/// without resamples.
pub fn selectivity_ci(
    split: &Split,
    probe: (&Fitted, Targets<'_>),
    control: (&Fitted, Targets<'_>),
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    if resamples == 0 {
        return None;
    }
    let score = |(fitted, targets): (&Fitted, Targets<'_>), sample: &[usize]| {
        let predicted = match targets {
            Targets::Classes(_) => Predicted::Classes(&fitted.test_predictions),
            Targets::Values(_) => Predicted::Values(&fitted.test_values),
        };
        resampled_score(split, predicted, targets, sample)
    };
    Some(split.test_bootstrap_ci(resamples, seed ^ 3, |sample| {
        score(probe, sample) - score(control, sample)
    }))
}

/// Folds the standardisation into the weights: `w_raw[u] = w[u] / std[u]`,
/// `b_raw = b − Σ_u w[u]·mean[u]/std[u]`. `weights` is `d × outputs` row-major.
fn to_raw_space(
    weights: &[f64],
    bias: &[f64],
    std: &Standardizer,
    d: usize,
) -> (Vec<f32>, Vec<f32>, usize) {
    let m = bias.len();
    let mut weight = vec![0.0f32; m * d];
    let mut raw_bias: Vec<f64> = bias.to_vec();
    for u in 0..d {
        for j in 0..m {
            let w = weights[u * m + j] / std.std[u];
            weight[j * d + u] = w as f32;
            raw_bias[j] -= w * std.mean[u];
        }
    }
    (weight, raw_bias.iter().map(|&b| b as f32).collect(), m)
}

/// Hewitt & Liang's control task: every type (word, or text for sequence labels) gets a
/// target drawn from the empirical distribution of `targets` (classes or numbers). The draw
/// depends only on the seed and the label's rows, never on the hook, so control scores are
/// comparable across hooks.
pub fn control_targets<T: Copy>(types: &[String], targets: &[T], seed: u64) -> Vec<T> {
    let mut rng = SeededRng::new(seed ^ 0x0063_6f6e_7472_6f6c);
    let mut distinct: Vec<&str> = types.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let assigned: HashMap<&str, T> = distinct
        .into_iter()
        .map(|t| (t, targets[rng.below(targets.len())]))
        .collect();
    types.iter().map(|t| assigned[t.as_str()]).collect()
}

/// Voita & Titov's online code on the training and validation rows, with the chosen L2. With
/// `texts` (each row's text, when the split keeps texts whole) whole texts are sent in a
/// shuffled order and blocks end only where a text does; otherwise rows are shuffled.
pub fn mdl_of(
    rows: Rows<'_>,
    classes: &[usize],
    n_classes: usize,
    l2: f64,
    opts: &ProbeOptions,
    seed: u64,
    texts: Option<&[u64]>,
) -> mdl::Mdl {
    let mut order: Vec<usize> = rows
        .split
        .train
        .iter()
        .chain(&rows.split.validation)
        .copied()
        .collect();
    let mut rng = SeededRng::new(seed ^ 0x006d_646c);
    let ends = match texts {
        None => {
            rng.shuffle(&mut order);
            None
        }
        Some(texts) => {
            let (grouped, ends) = by_text(&order, texts, &mut rng);
            order = grouped;
            Some(ends)
        }
    };
    let xs = rows.features(&order, None);
    let ys = pick(classes, &order);
    mdl::online_code(
        &xs,
        rows.d,
        &ys,
        n_classes,
        l2,
        opts.max_iterations,
        ends.as_deref(),
    )
}

/// `rows` grouped by text (`texts[r]` is row `r`'s), the texts in a seeded random order, each
/// text's rows in their order; and where each text's rows end.
fn by_text(rows: &[usize], texts: &[u64], rng: &mut SeededRng) -> (Vec<usize>, Vec<usize>) {
    let mut of_text: Vec<(u64, Vec<usize>)> = Vec::new();
    let mut slot: HashMap<u64, usize> = HashMap::new();
    for &r in rows {
        let s = *slot.entry(texts[r]).or_insert_with(|| {
            of_text.push((texts[r], Vec::new()));
            of_text.len() - 1
        });
        of_text[s].1.push(r);
    }
    rng.shuffle(&mut of_text);
    let mut order = Vec::with_capacity(rows.len());
    let mut ends = Vec::with_capacity(of_text.len());
    for (_, members) in of_text {
        order.extend(members);
        ends.push(order.len());
    }
    (order, ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_sent_text_by_text() {
        // Rows 0..12 of texts 30, 10, 20 interleaved; rows 3 and 9 are not sent.
        let texts: Vec<u64> = (0..12).map(|r| [30, 10, 20][r % 3]).collect();
        let rows: Vec<usize> = (0..12).filter(|r| *r != 3 && *r != 9).collect();
        let (order, ends) = by_text(&rows, &texts, &mut SeededRng::new(4));
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, rows, "every row once");
        assert_eq!(ends.len(), 3);
        assert_eq!(*ends.last().unwrap(), order.len());
        let mut start = 0;
        for &end in &ends {
            let text = texts[order[start]];
            assert!(order[start..end].iter().all(|&r| texts[r] == text));
            assert!(order[start..end].windows(2).all(|w| w[0] < w[1]));
            start = end;
        }
    }
}
