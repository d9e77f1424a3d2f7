//! The statistics of an intervention test: a dose-response slope per example, its bootstrap
//! interval, and the comparison with the same intervention along random directions.
//!
//! Steering at `α ∈ A` gives each example `i` effects `e_i(α)` (readout edited − unedited).
//! Its slope through the origin, `s_i = Σ_α α e_i(α) / Σ_α α²`, uses the whole grid; with a
//! grid symmetric about 0 the even-order terms of the response (what every direction of that
//! norm does, e.g. through a later normalisation) cancel. For readouts without a sign (a KL
//! divergence) the slope is `Σ_α |α| e_i(α) / Σ_α α²`. The direction's effect is the mean of
//! `s_i`, with an expanded percentile-bootstrap 95% interval over examples.
//!
//! The baseline is the effect of `K` random directions: with `m` and `sd` their mean and
//! standard deviation, `t = (effect − m) / (sd · √(1 + 1/K))` is Student-t with `K − 1` degrees of
//! freedom when the direction behaves like one more random direction (a prediction interval:
//! random effects are projections of the response's gradient on random unit vectors, close to
//! normal). Signed claims take the two-sided p (the sign is checked by the verdict); `moves`
//! claims (a KL, a loss increase) the one-sided p of a larger effect.

use crate::stats::{bootstrap_mean_ci, mean, student_t_two_sided, variance};
use serde::Serialize;

/// What a finding says the intervention should do to its readout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Claim {
    /// Adding the direction raises the readout.
    Raises,
    /// Adding the direction (or erasing the concept) lowers the readout.
    Lowers,
    /// The intervention changes the readout (a KL) more than random ones do.
    Moves,
}

impl Claim {
    /// `raises`, `lowers`, `moves`.
    pub fn as_str(self) -> &'static str {
        match self {
            Claim::Raises => "raises",
            Claim::Lowers => "lowers",
            Claim::Moves => "moves",
        }
    }
}

/// The outcome of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// The effect differs from the random directions' at the corrected level, as claimed.
    #[serde(rename = "causally supported")]
    Supported,
    /// It does not (or goes against the claim).
    #[serde(rename = "not supported")]
    NotSupported,
    /// The test cannot be run (the reason says why).
    #[serde(rename = "not testable")]
    NotTestable,
}

impl Verdict {
    /// As the tables and report spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Supported => "causally supported",
            Verdict::NotSupported => "not supported",
            Verdict::NotTestable => "not testable",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Supported, Self::NotSupported, Self::NotTestable]
            .into_iter()
            .find(|v| v.as_str() == text)
    }
}

/// One direction's effect against the random baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Mean effect (slope) over examples.
    pub effect: f64,
    /// Percentile-bootstrap 95% interval of `effect`.
    pub ci: (f64, f64),
    /// Mean and standard deviation of the random directions' effects.
    pub random_mean: f64,
    /// Standard deviation of the random directions' effects.
    pub random_sd: f64,
    /// The t statistic (see the module docs).
    pub t: f64,
    /// Its p-value (two-sided for signed claims, one-sided for `moves`).
    pub p: f64,
    /// Examples with a finite effect.
    pub examples: usize,
}

/// Per-example dose-response slopes from effects `[alpha][example]`; NaN where an example has
/// no value at some `α`.
pub fn slopes(alphas: &[f64], effects: &[Vec<f64>], signed: bool) -> Vec<f64> {
    let denominator: f64 = alphas.iter().map(|a| a * a).sum();
    let n = effects.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            alphas
                .iter()
                .zip(effects)
                .map(|(a, e)| if signed { *a } else { a.abs() } * e[i])
                .sum::<f64>()
                / denominator
        })
        .collect()
}

/// The mean of the finite values.
pub fn finite_mean(values: &[f64]) -> f64 {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        f64::NAN
    } else {
        mean(&finite)
    }
}

/// Compares a direction's per-example effects with the random directions' mean effects.
pub fn compare(
    per_example: &[f64],
    random_effects: &[f64],
    claim: Claim,
    resamples: usize,
    seed: u64,
) -> Comparison {
    let finite: Vec<f64> = per_example
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let effect = if finite.is_empty() {
        f64::NAN
    } else {
        mean(&finite)
    };
    let ci = bootstrap_mean_ci(&finite, resamples, seed);
    let k = random_effects.len() as f64;
    let random_mean = mean(random_effects);
    let random_sd = variance(random_effects).sqrt();
    let scale = random_sd * (1.0 + 1.0 / k).sqrt();
    let t = if scale > 0.0 {
        (effect - random_mean) / scale
    } else if effect == random_mean {
        0.0
    } else {
        (effect - random_mean).signum() * f64::INFINITY
    };
    let two_sided = if t.is_nan() {
        f64::NAN
    } else {
        student_t_two_sided(t, k - 1.0)
    };
    let p = match claim {
        Claim::Raises | Claim::Lowers => two_sided,
        Claim::Moves if t > 0.0 => two_sided / 2.0,
        Claim::Moves => 1.0 - two_sided / 2.0,
    };
    Comparison {
        effect,
        ci,
        random_mean,
        random_sd,
        t,
        p,
        examples: finite.len(),
    }
}

/// The verdict of a test with Holm-adjusted `p_holm` at level `alpha`, and why.
pub fn verdict(c: &Comparison, claim: Claim, p_holm: f64, alpha: f64) -> (Verdict, String) {
    let towards = match claim {
        Claim::Raises | Claim::Moves => c.effect > c.random_mean,
        Claim::Lowers => c.effect < c.random_mean,
    };
    if !p_holm.is_finite() {
        return (
            Verdict::NotTestable,
            "no finite effect (no example had a value for the readout)".into(),
        );
    }
    if p_holm < alpha && towards {
        (
            Verdict::Supported,
            format!(
                "{} the readout beyond the random directions (t = {:.2}, p_holm = {:.1e})",
                claim.as_str(),
                c.t,
                p_holm
            ),
        )
    } else if p_holm < alpha {
        (
            Verdict::NotSupported,
            format!(
                "significant, but against the claim: the effect is {} the random band (t = {:.2})",
                if c.effect > c.random_mean {
                    "above"
                } else {
                    "below"
                },
                c.t
            ),
        )
    } else {
        (
            Verdict::NotSupported,
            format!(
                "within the random directions' spread (t = {:.2}, p_holm = {:.2})",
                c.t, p_holm
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes_cancel_even_terms_on_a_symmetric_grid() {
        let alphas = [-1.0, -0.5, 0.5, 1.0];
        // e(α) = 2α + 3α²: the quadratic part cancels, the slope is 2.
        let effects: Vec<Vec<f64>> = alphas.iter().map(|a| vec![2.0 * a + 3.0 * a * a]).collect();
        assert!((slopes(&alphas, &effects, true)[0] - 2.0).abs() < 1e-12);
        // Unsigned: e(α) = |α| gives 1.
        let effects: Vec<Vec<f64>> = alphas.iter().map(|a: &f64| vec![a.abs()]).collect();
        assert!((slopes(&alphas, &effects, false)[0] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_large_effect_is_significant_and_a_random_one_is_not() {
        let randoms: Vec<f64> = (0..20)
            .map(|i| ((i * 7919) % 13) as f64 / 13.0 - 0.5)
            .collect();
        let big = compare(&[5.0, 5.1, 4.9], &randoms, Claim::Raises, 200, 1);
        assert!(big.p < 1e-6, "{big:?}");
        let (v, _) = verdict(&big, Claim::Raises, big.p, 0.05);
        assert_eq!(v, Verdict::Supported);
        let (v, why) = verdict(&big, Claim::Lowers, big.p, 0.05);
        assert_eq!(v, Verdict::NotSupported);
        assert!(why.contains("against the claim"));
        let typical = compare(&[randoms[3]], &randoms, Claim::Raises, 200, 1);
        assert!(typical.p > 0.2, "{typical:?}");
        let moves = compare(&[-5.0], &randoms, Claim::Moves, 200, 1);
        assert!(moves.p > 0.99, "a smaller KL is no support: {moves:?}");
    }
}
