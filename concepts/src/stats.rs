//! The statistics of TCAV significance: Welch's two-sided t-test (Student's t distribution via
//! the regularised incomplete beta function), Holm–Bonferroni adjustment, Cohen's d and a
//! percentile bootstrap of the mean.

use glassbox_data::rng::SeededRng;

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

/// `P(|T| ≥ |t|)` for Student's t with `df` degrees of freedom: `I_{df/(df+t²)}(df/2, 1/2)`.
pub fn student_t_two_sided(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return 0.0;
    }
    regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
}

/// `I_x(a, b)` by its continued fraction (modified Lentz), using the symmetry
/// `I_x(a, b) = 1 − I_{1−x}(b, a)` where the fraction converges faster.
pub fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=500 {
        let m = m as f64;
        // Even step.
        let num = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + num / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        // Odd step.
        let num = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + num / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9; ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
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

/// P(Z > z) for a standard normal Z, from the complementary error function (Chebyshev fit of
/// Press et al., Numerical Recipes §6.2: relative error below 1.2e-7 everywhere).
pub fn normal_upper_tail(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = [
        -1.26551223,
        1.00002368,
        0.37409196,
        0.09678418,
        -0.18628806,
        0.27886807,
        -1.13520398,
        1.48851587,
        -0.82215223,
        0.17087277,
    ]
    .iter()
    .rev()
    .fold(0.0, |acc, c| c + t * acc);
    let erfc_abs = t * (-x * x + poly).exp();
    0.5 * if x >= 0.0 { erfc_abs } else { 2.0 - erfc_abs }
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

/// Percentile-bootstrap 95% interval of the mean of `x`.
pub fn bootstrap_mean_ci(x: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let n = x.len();
    if n == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SeededRng::new(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| x[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Γ(5) = 24, Γ(0.5) = √π.
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
        // I_x(1, 1) = x; I_x(a, 1) = x^a.
        assert!((regularized_incomplete_beta(0.3, 1.0, 1.0) - 0.3).abs() < 1e-14);
        assert!((regularized_incomplete_beta(0.3, 2.5, 1.0) - 0.3f64.powf(2.5)).abs() < 1e-14);
        // t = 2.228 with 10 df is the two-sided 5% critical value; t = 1 with 1 df gives p = 0.5.
        assert!((student_t_two_sided(2.228_138_851_986_27, 10.0) - 0.05).abs() < 1e-9);
        assert!((student_t_two_sided(1.0, 1.0) - 0.5).abs() < 1e-12);
    }

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
    fn normal_tail_matches_known_quantiles() {
        for (z, p) in [
            (0.0, 0.5),
            (1.959963985, 0.025),
            (3.090232306, 0.001),
            (-1.644853627, 0.95),
            (6.0, 9.865876e-10),
        ] {
            let got = normal_upper_tail(z);
            assert!((got - p).abs() <= 2e-7 * p.max(1e-3), "z {z}: {got} vs {p}");
        }
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
