//! Held-out metrics and their bootstrap confidence intervals.
//!
//! Definitions (written to the run's report too):
//! - accuracy: fraction of test rows whose predicted class is the true class;
//! - macro-F1: the unweighted mean over classes present in the test set (true or predicted) of
//!   `2·precision·recall / (precision + recall)`, 0 for a class with no true positives;
//! - R²: `1 − Σ(y − ŷ)² / Σ(y − ȳ_test)²`;
//! - 95% CI: expanded percentile bootstrap — the test rows (or texts) are resampled with
//!   replacement `B` times (seeded) and the metric's percentiles at `level / 2` and
//!   `1 − level / 2` are reported, `level` from [`expanded_level`] (Hesterberg 2015: 5% widened
//!   for few units, 3.75% at 30); a resample's R² keeps the whole test set's ȳ.

use glassbox_data::rng::SeededRng;

pub fn accuracy(truth: &[usize], predicted: &[usize]) -> f64 {
    let correct = truth.iter().zip(predicted).filter(|(a, b)| a == b).count();
    correct as f64 / truth.len().max(1) as f64
}

pub fn macro_f1(truth: &[usize], predicted: &[usize], n_classes: usize) -> f64 {
    let mut tp = vec![0usize; n_classes];
    let mut fp = vec![0usize; n_classes];
    let mut fn_ = vec![0usize; n_classes];
    for (&t, &p) in truth.iter().zip(predicted) {
        if t == p {
            tp[t] += 1;
        } else {
            fp[p] += 1;
            fn_[t] += 1;
        }
    }
    let mut sum = 0.0;
    let mut present = 0;
    for c in 0..n_classes {
        if tp[c] + fp[c] + fn_[c] == 0 {
            continue;
        }
        present += 1;
        sum += 2.0 * tp[c] as f64 / (2 * tp[c] + fp[c] + fn_[c]) as f64;
    }
    if present == 0 {
        0.0
    } else {
        sum / present as f64
    }
}

pub fn r2(truth: &[f64], predicted: &[f64]) -> f64 {
    let mean = truth.iter().sum::<f64>() / truth.len().max(1) as f64;
    r2_about(truth, predicted, mean)
}

/// `1 − Σ(y − ŷ)² / Σ(y − mean)²` about a given `mean`: a bootstrap resample of the test rows
/// keeps the test set's ȳ, as the estimate does. About each resample's own mean the total
/// shrinks by the spread of that mean (a factor of about (n − 1)/n, more where texts are
/// resampled whole), and every resampled R² with it — the interval would sit below the estimate.
pub fn r2_about(truth: &[f64], predicted: &[f64], mean: f64) -> f64 {
    let total: f64 = truth.iter().map(|y| (y - mean).powi(2)).sum();
    let residual: f64 = truth
        .iter()
        .zip(predicted)
        .map(|(y, p)| (y - p).powi(2))
        .sum();
    if total == 0.0 {
        if residual == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        1.0 - residual / total
    }
}

/// Expanded percentile-bootstrap 95% interval of `metric` over resampled row indices.
pub fn bootstrap_ci(
    n: usize,
    resamples: usize,
    seed: u64,
    metric: impl Fn(&[usize]) -> f64,
) -> (f64, f64) {
    if n == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut values = Vec::with_capacity(resamples);
    each_resample(n, resamples, seed, |sample| values.push(metric(sample)));
    expanded_percentile_interval(values, n)
}

/// Calls `visit` with each of `resamples` bootstrap resamples of `n` rows (indices drawn with
/// replacement): the draws [`bootstrap_ci`] makes with the same seed.
pub fn each_resample(n: usize, resamples: usize, seed: u64, mut visit: impl FnMut(&[usize])) {
    let mut rng = SeededRng::new(seed);
    let mut sample = vec![0usize; n];
    for _ in 0..resamples {
        sample.iter_mut().for_each(|s| *s = rng.below(n));
        visit(&sample);
    }
}

/// Calls `visit` with each of `resamples` resamples of whole clusters: the draws
/// [`cluster_bootstrap_ci`] makes with the same seed.
pub fn each_cluster_resample(
    clusters: &[Vec<usize>],
    resamples: usize,
    seed: u64,
    mut visit: impl FnMut(&[usize]),
) {
    let mut rng = SeededRng::new(seed);
    let mut sample = Vec::new();
    for _ in 0..resamples {
        sample.clear();
        for _ in 0..clusters.len() {
            sample.extend_from_slice(&clusters[rng.below(clusters.len())]);
        }
        visit(&sample);
    }
}

/// Expanded percentile-bootstrap 95% interval of `metric` resampling whole clusters of row indices
/// (Davison & Hinkley 1997, §3.8): as many clusters as there are, drawn with replacement, their
/// rows concatenated. Rows that are not independent — the tokens of one text — widen the
/// interval as they should. Singleton clusters `[0], [1], …` give [`bootstrap_ci`]'s interval.
pub fn cluster_bootstrap_ci(
    clusters: &[Vec<usize>],
    resamples: usize,
    seed: u64,
    metric: impl Fn(&[usize]) -> f64,
) -> (f64, f64) {
    if clusters.is_empty() || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut values = Vec::with_capacity(resamples);
    each_cluster_resample(clusters, resamples, seed, |sample| {
        values.push(metric(sample))
    });
    expanded_percentile_interval(values, clusters.len())
}

/// Wilson's score 95% interval for `k` successes in `n` independent trials (Wilson 1927):
/// what accuracy over independent test rows gets. The percentile bootstrap of a proportion is
/// the Wald interval in disguise, which under-covers near 0 and 1 (Brown, Cai & DasGupta
/// 2001) and collapses to a point at the edge — 60 test rows all right read "1.000 [1.000,
/// 1.000]", a certainty no test set of 60 gives. Equals statsmodels'
/// `proportion_confint(k, n, method="wilson")`.
pub fn wilson_interval(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    /// The normal quantile at 0.975, as scipy's `norm.ppf(0.975)`.
    const Z: f64 = 1.959_963_984_540_054;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z * Z;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    // At the edges the bound is exactly 0 or 1; rounding would leave it a hair inside, and the
    // interval would miss its own estimate.
    let low = if k == 0.0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let high = if k == n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (low, high)
}

/// The 2.5th and 97.5th percentiles of the resampled values (NaN for none).
pub fn percentile_interval(values: Vec<f64>) -> (f64, f64) {
    percentiles(values, 0.05)
}

/// The `level / 2` and `1 − level / 2` quantiles of the resampled values (NaN for none).
fn percentiles(mut values: Vec<f64>, level: f64) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let resamples = values.len();
    values.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| values[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (at(level / 2.0), at(1.0 - level / 2.0))
}

/// The two-sided level whose percentiles make the *expanded* percentile interval for `units`
/// independent resampling units (rows, or texts of a cluster bootstrap): Hesterberg (2015,
/// "What teachers should know about the bootstrap", §5.2), `2·Φ(−√(n/(n−1))·t_{0.975, n−1})`.
/// The plain percentile interval runs narrow with few units — it is a z interval on a standard
/// error shrunk by √((n−1)/n) — and the expansion restores the t interval's width: 3.75% instead
/// of 5% at 30 units (the 1.9th and 98.1st percentiles), 1.7% at 10, 0.19% at 5, 5% in the
/// limit. Fewer than two units give the plain level (every resample is then the same).
pub fn expanded_level(units: usize) -> f64 {
    if units < 2 {
        return 0.05;
    }
    let n = units as f64;
    let t = crate::distributions::student_t_critical(0.05, n - 1.0);
    2.0 * crate::distributions::normal_upper_tail((n / (n - 1.0)).sqrt() * t)
}

/// The expanded percentile 95% interval (see [`expanded_level`]) of a bootstrap over `units`
/// independent units.
pub fn expanded_percentile_interval(values: Vec<f64>, units: usize) -> (f64, f64) {
    percentiles(values, expanded_level(units))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scipy 1.17: `2 * norm.sf(sqrt(n / (n - 1)) * t.ppf(0.975, n - 1))`; the normal tail's
    /// 1.2e-7 relative error bounds the agreement.
    #[test]
    fn expanded_levels_match_scipy() {
        for (n, level) in [
            (5, 0.0019082011037649814),
            (10, 0.017101278048812733),
            (30, 0.03750780055644108),
            (100, 0.04612877441417529),
            (1000, 0.049608611811128606),
        ] {
            let got = expanded_level(n);
            assert!(
                (got - level).abs() < 5e-7 * level,
                "n {n}: {got} vs {level}"
            );
        }
        assert_eq!(expanded_level(1), 0.05);
        assert!(expanded_level(2) < 1e-60);
    }

    /// statsmodels 0.15 `proportion_confint(k, n, alpha=0.05, method="wilson")`.
    #[test]
    fn wilson_matches_statsmodels() {
        for (k, n, lo, hi) in [
            (60, 60, 0.939828147858, 1.0),
            (59, 60, 0.911448702724, 0.997051840205),
            (30, 60, 0.377350242416, 0.622649757584),
            (0, 60, 0.0, 0.060171852142),
            (1, 3, 0.061491944720, 0.792340399198),
            (400, 513, 0.741858530815, 0.813437479406),
        ] {
            let (a, b) = wilson_interval(k, n);
            assert!(
                (a - lo).abs() < 1e-11 && (b - hi).abs() < 1e-11,
                "{k}/{n}: {a} {b}"
            );
        }
        assert!(wilson_interval(0, 0).0.is_nan());
        // The edges are exact, so the interval holds its own estimate.
        for n in 1..200 {
            assert_eq!(wilson_interval(n, n).1, 1.0);
            assert_eq!(wilson_interval(0, n).0, 0.0);
        }
    }

    /// Test sets of 60 independent rows at a true accuracy p: Wilson's interval covers p about
    /// 95% of the time at every p; the percentile bootstrap of the same rows falls short near 1
    /// (it collapses to [1, 1] whenever a set comes out all right: 16% of sets at p = 0.97).
    #[test]
    fn wilson_covers_accuracy_where_the_bootstrap_does_not() {
        let mut rng = SeededRng::new(5);
        let (n, sets) = (60, 2_000);
        for p in [0.7, 0.9, 0.97, 0.99] {
            let (mut wilson, mut bootstrap) = (0usize, 0usize);
            for set in 0..sets {
                let right: Vec<f64> = (0..n)
                    .map(|_| f64::from(u8::from(rng.unit_f64() < p)))
                    .collect();
                let k = right.iter().sum::<f64>() as usize;
                let (lo, hi) = wilson_interval(k, n);
                wilson += usize::from(lo <= p && p <= hi);
                let mut means = Vec::with_capacity(200);
                each_resample(n, 200, set as u64, |s| {
                    means.push(s.iter().map(|&i| right[i]).sum::<f64>() / n as f64)
                });
                let (lo, hi) = percentile_interval(means);
                bootstrap += usize::from(lo <= p && p <= hi);
            }
            let (wilson, bootstrap) = (wilson as f64 / sets as f64, bootstrap as f64 / sets as f64);
            eprintln!("p {p}: Wilson covers {wilson:.3}, the percentile bootstrap {bootstrap:.3}");
            assert!(wilson >= 0.925, "p {p}: Wilson covers {wilson}");
            if p >= 0.97 {
                assert!(bootstrap < 0.86, "p {p}: the bootstrap covers {bootstrap}");
            }
        }
    }

    /// Means of 10 and 30 independent units, skewed (exponential): the plain percentile
    /// interval covers the population mean less often than Student's t interval, the expanded
    /// one as often (skewness keeps both below 95% at 10 units).
    #[test]
    fn the_expanded_interval_restores_coverage_with_few_units() {
        let mut rng = SeededRng::new(11);
        let sets = 2_000;
        for n in [10, 30] {
            let (mut plain, mut expanded, mut student) = (0usize, 0usize, 0usize);
            let t = crate::distributions::student_t_critical(0.05, n as f64 - 1.0);
            for set in 0..sets {
                let x: Vec<f64> = (0..n).map(|_| -(1.0 - rng.unit_f64()).ln()).collect();
                let mean = x.iter().sum::<f64>() / n as f64;
                let sd =
                    (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt();
                student += usize::from((mean - 1.0).abs() <= t * sd / (n as f64).sqrt());
                let mut means = Vec::with_capacity(400);
                each_resample(n, 400, set as u64, |s| {
                    means.push(s.iter().map(|&i| x[i]).sum::<f64>() / n as f64)
                });
                let (lo, hi) = percentile_interval(means.clone());
                plain += usize::from(lo <= 1.0 && 1.0 <= hi);
                let (lo, hi) = expanded_percentile_interval(means, n);
                expanded += usize::from(lo <= 1.0 && 1.0 <= hi);
            }
            let share = |c: usize| c as f64 / sets as f64;
            let (plain, expanded, student) = (share(plain), share(expanded), share(student));
            eprintln!("{n} units: the percentile interval covers {plain:.3}, the expanded {expanded:.3}, Student's t {student:.3}");
            assert!(expanded > plain + 0.01, "{n} units: {expanded} vs {plain}");
            assert!(
                expanded >= student - 0.015,
                "{n} units: {expanded} vs t {student}"
            );
        }
    }

    /// y = signal + noise with R² = 0.5 in the population, ŷ = the signal, 12 test rows. With
    /// each resample's R² about the test set's ȳ the resamples centre on the estimate; about
    /// each resample's own ȳ every resampled total shrinks by about 1/n and the resamples sit
    /// below it (the interval shifted down by that bias).
    #[test]
    fn resampled_r2_keeps_the_test_mean() {
        let (sets, n) = (300, 12);
        let mut rng = SeededRng::new(8);
        let (mut shift_fixed, mut shift_own, mut covered) = (0.0, 0.0, 0);
        for set in 0..sets {
            let signal: Vec<f64> = (0..n).map(|_| rng.gaussian()).collect();
            let y: Vec<f64> = signal.iter().map(|s| s + rng.gaussian()).collect();
            let test_mean = y.iter().sum::<f64>() / n as f64;
            let estimate = r2(&y, &signal);
            let pick = |v: &[f64], s: &[usize]| s.iter().map(|&i| v[i]).collect::<Vec<f64>>();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            each_resample(n, 400, set as u64, |s| {
                a.push(r2_about(&pick(&y, s), &pick(&signal, s), test_mean));
                b.push(r2(&pick(&y, s), &pick(&signal, s)));
            });
            let median = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            shift_fixed += (median(a.clone()) - estimate) / sets as f64;
            shift_own += (median(b) - estimate) / sets as f64;
            let (lo, hi) = percentile_interval(a);
            covered += usize::from(lo <= 0.5 && 0.5 <= hi);
        }
        eprintln!("median − estimate: test ȳ {shift_fixed:.4}, own ȳ {shift_own:.4}; 0.5 covered {covered}/{sets}");
        assert!(
            shift_fixed.abs() < 0.02 && shift_own < -0.02,
            "{shift_fixed} {shift_own}"
        );
        assert!(covered as f64 >= 0.85 * sets as f64, "{covered} of {sets}");
    }

    #[test]
    fn hand_computed_values() {
        let truth = [0, 0, 1, 1, 2];
        let predicted = [0, 1, 1, 1, 0];
        assert_eq!(accuracy(&truth, &predicted), 0.6);
        // F1: class 0 = 2·1/(2+1+1) = 0.5, class 1 = 2·2/(4+1+0) = 0.8, class 2 = 0.
        assert!((macro_f1(&truth, &predicted, 3) - 1.3 / 3.0).abs() < 1e-12);
        assert!((r2(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]) - 0.5).abs() < 1e-12);
        // About the values' own mean R² is R²; about another mean the total grows: Σ(y − 1)² = 5.
        assert_eq!(r2_about(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0], 2.0), 0.5);
        assert!((r2_about(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0], 1.0) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_brackets_the_estimate_and_is_seeded() {
        let truth: Vec<usize> = (0..200).map(|i| i % 2).collect();
        let predicted: Vec<usize> = (0..200)
            .map(|i| usize::from(i % 5 != 0) * (i % 2))
            .collect();
        let f = |s: &[usize]| {
            let t: Vec<usize> = s.iter().map(|&i| truth[i]).collect();
            let p: Vec<usize> = s.iter().map(|&i| predicted[i]).collect();
            accuracy(&t, &p)
        };
        let a = bootstrap_ci(200, 500, 1, f);
        assert_eq!(a, bootstrap_ci(200, 500, 1, f));
        let point = accuracy(&truth, &predicted);
        assert!(a.0 < point && point < a.1, "{a:?} around {point}");
        assert!(a.1 - a.0 < 0.15);
    }

    #[test]
    fn cluster_bootstrap_of_singletons_is_the_row_bootstrap_and_clusters_widen_it() {
        let truth: Vec<usize> = (0..200).map(|i| i % 2).collect();
        // Errors clumped in runs of ten rows, as a sentence's tokens would be.
        let predicted: Vec<usize> = (0..200)
            .map(|i| if (i / 10) % 5 == 0 { 1 - i % 2 } else { i % 2 })
            .collect();
        let f = |s: &[usize]| {
            let t: Vec<usize> = s.iter().map(|&i| truth[i]).collect();
            let p: Vec<usize> = s.iter().map(|&i| predicted[i]).collect();
            accuracy(&t, &p)
        };
        let singletons: Vec<Vec<usize>> = (0..200).map(|i| vec![i]).collect();
        let rows = bootstrap_ci(200, 500, 4, f);
        assert_eq!(cluster_bootstrap_ci(&singletons, 500, 4, f), rows);
        let runs: Vec<Vec<usize>> = (0..20).map(|r| (r * 10..r * 10 + 10).collect()).collect();
        let clustered = cluster_bootstrap_ci(&runs, 500, 4, f);
        assert!(
            clustered.1 - clustered.0 > 1.5 * (rows.1 - rows.0),
            "clustered {clustered:?} against rows {rows:?}"
        );
    }
}
