//! How sure an explained variance is: a bootstrap over the evaluation *texts* (a text's tokens
//! are not independent), streamed in one pass.
//!
//! Resampling texts with replacement would need every text's sums kept until the end. The
//! Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012) draws instead, for every
//! text and resample `b`, a weight `w_bg ~ Poisson(1)` — how many times text `g` is in resample
//! `b` — and adds the text's sums with that weight to each resample's running sums as the text
//! ends. A weight depends only on `(seed, text, b)`, so two models evaluated on the same rows
//! with the same seed see the same resamples: their difference gets a paired interval (an SAE
//! against the PCA baseline).

use glassbox_data::rng::SeededRng;

/// Bootstrap settings: resamples and the seed of the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
}

impl Bootstrap {
    /// No resamples: metrics without an interval.
    pub const NONE: Bootstrap = Bootstrap {
        resamples: 0,
        seed: 0,
    };
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            resamples: 1000,
            seed: 0,
        }
    }
}

/// Running sums of every resample, and the text being read.
#[derive(Debug, Clone)]
pub(super) struct TextBootstrap {
    settings: Bootstrap,
    d: usize,
    texts: u64,
    // The text being read: its id, rows, Σx, Σ‖x‖², Σ‖x − x̂‖².
    current: Option<u64>,
    n: f64,
    sum_x: Vec<f64>,
    sum_sq: f64,
    sse: f64,
    // Per resample: the same sums, weighted.
    r_n: Vec<f64>,
    r_sum_x: Vec<f64>,
    r_sum_sq: Vec<f64>,
    r_sse: Vec<f64>,
}

impl TextBootstrap {
    pub fn new(d: usize, settings: Bootstrap) -> Self {
        let b = settings.resamples;
        Self {
            settings,
            d,
            texts: 0,
            current: None,
            n: 0.0,
            sum_x: vec![0.0; d],
            sum_sq: 0.0,
            sse: 0.0,
            r_n: vec![0.0; b],
            r_sum_x: vec![0.0; b * d],
            r_sum_sq: vec![0.0; b],
            r_sse: vec![0.0; b],
        }
    }

    /// One evaluation row of `text`: `x`, and its `‖x‖²` and `‖x − x̂‖²`.
    pub fn row(&mut self, text: u64, x: &[f32], sq: f64, se: f64) {
        if self.current != Some(text) {
            self.end_text();
            self.current = Some(text);
        }
        self.n += 1.0;
        self.sum_x
            .iter_mut()
            .zip(x)
            .for_each(|(s, &v)| *s += v as f64);
        self.sum_sq += sq;
        self.sse += se;
    }

    /// The current text's Poisson(1) weight in each resample: a function of the seed and the
    /// text id alone.
    fn weights(&self, text: u64) -> Vec<f64> {
        let mut rng = SeededRng::new(
            self.settings.seed ^ 0xB007_5EED ^ text.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        (0..self.settings.resamples)
            .map(|_| poisson_one(&mut rng))
            .collect()
    }

    /// Adds the current text to every resample with its weights. A text whose rows come back
    /// later is added again with the same weights, which is the same as adding it once whole.
    fn end_text(&mut self) {
        let Some(text) = self.current.take() else {
            return;
        };
        self.texts += 1;
        for (b, w) in self.weights(text).into_iter().enumerate() {
            if w == 0.0 {
                continue;
            }
            self.r_n[b] += w * self.n;
            self.r_sum_sq[b] += w * self.sum_sq;
            self.r_sse[b] += w * self.sse;
            let sums = &mut self.r_sum_x[b * self.d..(b + 1) * self.d];
            sums.iter_mut()
                .zip(&self.sum_x)
                .for_each(|(r, s)| *r += w * s);
        }
        self.n = 0.0;
        self.sum_x.iter_mut().for_each(|s| *s = 0.0);
        self.sum_sq = 0.0;
        self.sse = 0.0;
    }

    /// Texts seen (a text interleaved with others counts each time it resumes).
    pub fn texts(&self) -> u64 {
        self.texts + u64::from(self.current.is_some())
    }

    /// The explained variance of every resample (NaN where a resample has no variance), the
    /// text still being read included. `mean` is the evaluation rows' own per-dimension mean
    /// (the estimate's `x̄`): each resample's total is its texts' `Σ‖x − x̄‖²` about that fixed
    /// mean, a sum of per-text terms like its `Σ‖x − x̂‖²`. About each resample's own mean the
    /// total would shrink by the between-text spread of the mean (by ~1/texts of the
    /// between-text variance), and every resample's explained variance with it: with 26 texts
    /// the estimate fell outside its own interval.
    pub fn explained_variances(&self, mean: &[f64]) -> Vec<f64> {
        let pending = match self.current {
            Some(text) => self.weights(text),
            None => vec![0.0; self.settings.resamples],
        };
        let mean_sq: f64 = mean.iter().map(|m| m * m).sum();
        (0..self.settings.resamples)
            .map(|b| {
                let w = pending[b];
                let n = self.r_n[b] + w * self.n;
                if n == 0.0 {
                    return f64::NAN;
                }
                // Σ‖x − x̄‖² = Σ‖x‖² − 2 x̄·Σx + n‖x̄‖².
                let sums = &self.r_sum_x[b * self.d..(b + 1) * self.d];
                let cross: f64 = sums
                    .iter()
                    .zip(&self.sum_x)
                    .zip(mean)
                    .map(|((r, s), m)| (r + w * s) * m)
                    .sum();
                let total = self.r_sum_sq[b] + w * self.sum_sq - 2.0 * cross + n * mean_sq;
                if total > 0.0 {
                    1.0 - (self.r_sse[b] + w * self.sse) / total
                } else {
                    f64::NAN
                }
            })
            .collect()
    }
}

/// A Poisson(1) draw by inversion of its distribution function.
fn poisson_one(rng: &mut SeededRng) -> f64 {
    let u = rng.unit_f64();
    let (mut k, mut p) = (0u32, (-1.0f64).exp());
    let mut cdf = p;
    while u > cdf && k < 20 {
        k += 1;
        p /= k as f64;
        cdf += p;
    }
    k as f64
}

/// The expanded percentile 95% interval of the finite values over `texts` resampled texts
/// (`glassbox_probes::metrics::expanded_level`); `None` with fewer than two texts or no finite
/// value.
pub fn interval(values: &[f64], texts: u64) -> Option<(f64, f64)> {
    let finite: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    (texts >= 2 && !finite.is_empty())
        .then(|| glassbox_probes::metrics::expanded_percentile_interval(finite, texts as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_weights_have_mean_and_variance_one() {
        let mut rng = SeededRng::new(5);
        let draws: Vec<f64> = (0..200_000).map(|_| poisson_one(&mut rng)).collect();
        let n = draws.len() as f64;
        let mean = draws.iter().sum::<f64>() / n;
        let var = draws.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // Standard errors: 1/√n ≈ 0.0022 for the mean, √(2/n)·… ≈ 0.004 for the variance.
        assert!(
            (mean - 1.0).abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );
        let zeros = draws.iter().filter(|&&w| w == 0.0).count() as f64 / n;
        assert!((zeros - (-1.0f64).exp()).abs() < 0.005, "{zeros}");
    }

    /// Two models on the same rows with the same seed draw the same resamples: identical
    /// errors give a difference of exactly 0 in every resample; another seed other resamples.
    #[test]
    fn the_same_seed_pairs_the_resamples() {
        let settings = Bootstrap {
            resamples: 50,
            seed: 3,
        };
        let feed = |boot: &mut TextBootstrap, scale: f64| {
            for g in 0..10u64 {
                for r in 0..5 {
                    let x = [g as f32 + r as f32, 1.0 - r as f32];
                    let xx = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
                    boot.row(g, &x, xx, scale * (1.0 + (g % 3) as f64));
                }
            }
        };
        let (mut a, mut b, mut c) = (
            TextBootstrap::new(2, settings),
            TextBootstrap::new(2, settings),
            TextBootstrap::new(
                2,
                Bootstrap {
                    seed: 4,
                    ..settings
                },
            ),
        );
        feed(&mut a, 1.0);
        feed(&mut b, 1.0);
        feed(&mut c, 1.0);
        // x̄ of the fed rows: (4.5 + 2, 1 − 2).
        let mean = [6.5, -1.0];
        assert_eq!(a.explained_variances(&mean), b.explained_variances(&mean));
        assert_ne!(a.explained_variances(&mean), c.explained_variances(&mean));
        let mut worse = TextBootstrap::new(2, settings);
        feed(&mut worse, 2.0);
        let gaps: Vec<f64> = a
            .explained_variances(&mean)
            .iter()
            .zip(worse.explained_variances(&mean))
            .map(|(x, y)| x - y)
            .collect();
        assert!(
            gaps.iter().all(|g| *g > 0.0),
            "twice the error in every resample: {gaps:?}"
        );
        assert_eq!(a.texts(), 10);
    }

    /// Texts that differ in their mean activation (a text-level offset, a fifth of the
    /// variance) and in how well they are reconstructed (each its own noise level): the
    /// (expanded) interval over texts covers the explained variance of the population in about
    /// 95% of data sets, and holds the estimate itself.
    #[test]
    fn the_interval_covers_the_population_value() {
        let (sets, texts, len, d) = (400, 30, 12, 3);
        let mut rng = SeededRng::new(17);
        let (mut covered, mut holds_estimate) = (0, 0);
        for set in 0..sets {
            let mut boot = TextBootstrap::new(
                d,
                Bootstrap {
                    resamples: 400,
                    seed: set,
                },
            );
            let (mut n, mut sum, mut sq, mut sse) = (0.0, vec![0.0; d], 0.0, 0.0);
            for g in 0..texts {
                // x = μ_g + z, μ_g ~ N(0, 0.25 I), z ~ N(0, I); x̂ = x + e, e ~ N(0, s_g² I).
                let offset: Vec<f64> = (0..d).map(|_| 0.5 * rng.gaussian()).collect();
                let scale = 0.25 + 0.5 * rng.unit_f64();
                for _ in 0..len {
                    let x: Vec<f32> = offset.iter().map(|m| (m + rng.gaussian()) as f32).collect();
                    let e: f64 = (0..d).map(|_| (scale * rng.gaussian()).powi(2)).sum();
                    let xx: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
                    boot.row(g, &x, xx, e);
                    n += 1.0;
                    sum.iter_mut().zip(&x).for_each(|(s, &v)| *s += v as f64);
                    sq += xx;
                    sse += e;
                }
            }
            let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
            let estimate = 1.0 - sse / (sq - n * mean.iter().map(|m| m * m).sum::<f64>());
            // E‖e‖² / E‖x − μ‖² = E[s²] / 1.25, E[s²] for s ~ U(0.25, 0.75) = 0.25/12 + 0.25.
            let truth = 1.0 - (0.25 / 12.0 + 0.25) / 1.25;
            let (lo, hi) = interval(&boot.explained_variances(&mean), boot.texts()).unwrap();
            covered += usize::from(lo <= truth && truth <= hi);
            holds_estimate += usize::from(lo <= estimate && estimate <= hi);
        }
        eprintln!("covered in {covered} of {sets}, the estimate inside in {holds_estimate}");
        // 376 of 400 (94%) with the expanded interval, 371 with the plain percentile one.
        assert!(
            covered as u64 * 100 >= 91 * sets,
            "covered in {covered} of {sets}"
        );
        assert_eq!(holds_estimate as u64, sets);
    }
}
