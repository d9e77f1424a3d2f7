//! The statistics of TCAV significance: Welch's two-sided t-test (Student's t distribution from
//! `glassbox_probes::distributions`), Holm–Bonferroni adjustment, Cohen's d and an expanded
//! percentile bootstrap of the mean.

use glassbox_data::rng::SeededRng;
pub use glassbox_probes::distributions::{
    ln_gamma, normal_upper_tail, regularized_incomplete_beta, student_t_two_sided,
};

pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample variance (denominator n − 1).
pub fn variance(x: &[f64]) -> f64 {
    let m = mean(x);
    x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() as f64 - 1.0)
}

/// Welch's t-test of equal means: `(t, degrees of freedom, two-sided p)`. Both samples need
/// two values; when both have zero variance, p is 1 for equal means and 0 otherwise.
pub fn welch_t_test(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (va, vb) = (variance(a) / na, variance(b) / nb);
    let diff = mean(a) - mean(b);
    if va + vb == 0.0 {
        return if diff == 0.0 {
            (0.0, f64::NAN, 1.0)
        } else {
            (diff.signum() * f64::INFINITY, f64::NAN, 0.0)
        };
    }
    let t = diff / (va + vb).sqrt();
    let df = (va + vb).powi(2) / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    (t, df, student_t_two_sided(t, df))
}

/// Exact McNemar test of two classifiers scored on the same rows: `only_first` rows only the
/// first gets right, `only_second` rows only the second. Under H0 the discordant rows split
/// as Binomial(n, ½); the two-sided p is twice the smaller tail, capped at 1 (1 when no row
/// is discordant). Exact rather than χ², since sparse probes on a few hundred test examples
/// often disagree on only a handful.
pub fn mcnemar_exact(only_first: u64, only_second: u64) -> f64 {
    let n = only_first + only_second;
    if n == 0 {
        return 1.0;
    }
    let smaller = only_first.min(only_second);
    let ln_choose = |i: u64| {
        ln_gamma(n as f64 + 1.0) - ln_gamma(i as f64 + 1.0) - ln_gamma((n - i) as f64 + 1.0)
    };
    let half_n = n as f64 * std::f64::consts::LN_2;
    let tail: f64 = (0..=smaller).map(|i| (ln_choose(i) - half_n).exp()).sum();
    (2.0 * tail).min(1.0)
}

/// Holm–Bonferroni adjusted p-values, in input order: the i-th smallest p is multiplied by
/// `m − i`, made monotone non-decreasing, and capped at 1. NaN p-values stay NaN and do not
/// count towards `m`.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let m = order.len();
    let mut adjusted = vec![f64::NAN; p.len()];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// Benjamini–Hochberg q-values (false discovery rate), in input order: the i-th smallest p
/// times `m / i`, made monotone from the largest down, capped at 1. NaN stays NaN and does not
/// count towards `m`.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let m = order.len();
    let mut adjusted = vec![f64::NAN; p.len()];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        adjusted[i] = running;
    }
    adjusted
}

/// Cohen's d with the pooled standard deviation; 0 when both samples are constant and equal.
pub fn cohens_d(a: &[f64], b: &[f64]) -> f64 {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let pooled = (((na - 1.0) * variance(a) + (nb - 1.0) * variance(b)) / (na + nb - 2.0)).sqrt();
    let diff = mean(a) - mean(b);
    if pooled == 0.0 {
        if diff == 0.0 {
            0.0
        } else {
            diff.signum() * f64::INFINITY
        }
    } else {
        diff / pooled
    }
}

/// Expanded percentile-bootstrap 95% interval of the mean of `x` (small-sample corrected; see
/// `glassbox_probes::metrics::expanded_level`).
pub fn bootstrap_mean_ci(x: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let n = x.len();
    if n == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SeededRng::new(seed);
    let means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| x[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    glassbox_probes::metrics::expanded_percentile_interval(means, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_by_hand() {
        // 1 vs 9 discordant: 2·(1 + 10)/2¹⁰ = 22/1024.
        assert!((mcnemar_exact(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        assert!((mcnemar_exact(9, 1) - 22.0 / 1024.0).abs() < 1e-12);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        // 0 vs 20: 2/2²⁰.
        assert!((mcnemar_exact(0, 20) / (2.0 / 1_048_576.0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn holm_by_hand() {
        let adjusted = holm(&[0.01, 0.04, 0.03, f64::NAN]);
        // Sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 = 0.03, 0.06, 0.04 → monotone 0.03, 0.06, 0.06.
        assert!((adjusted[0] - 0.03).abs() < 1e-15);
        assert!((adjusted[2] - 0.06).abs() < 1e-15);
        assert!((adjusted[1] - 0.06).abs() < 1e-15);
        assert!(adjusted[3].is_nan());
    }

    #[test]
    fn welch_separates_and_does_not_invent_differences() {
        let a = [0.9, 0.95, 0.85, 0.92, 0.88];
        let b = [0.5, 0.45, 0.55, 0.52, 0.48];
        let (t, _, p) = welch_t_test(&a, &b);
        assert!(t > 10.0 && p < 1e-5, "t {t} p {p}");
        let (_, _, p) = welch_t_test(&b, &[0.49, 0.51, 0.47, 0.53, 0.5]);
        assert!(p > 0.5, "p {p}");
    }

    #[test]
    fn benjamini_hochberg_matches_a_hand_computation() {
        // m = 4: sorted p 0.01, 0.02, 0.03, 0.5 → 0.04, 0.04, 0.04, 0.5.
        let q = benjamini_hochberg(&[0.03, 0.5, 0.01, 0.02, f64::NAN]);
        let want = [0.04, 0.5, 0.04, 0.04];
        for (a, b) in q.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
        assert!(q[4].is_nan());
    }
}
