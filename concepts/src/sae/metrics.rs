//! Reconstruction and sparsity metrics, with their definitions written down once here and
//! copied into every `metrics.json`, so a reader never has to guess what "explained variance"
//! meant (SAELens once shipped one computed per token rather than about the mean).
//!
//! Sums run in f64 over a whole evaluation pass; `x̄` is the per-dimension mean of the
//! evaluation rows, `n` their number, `d` the width.

use super::codes::Codes;
use super::ev_bootstrap::{interval, Bootstrap, TextBootstrap};
use super::stream::RowId;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Metric name → definition, in output order.
pub const DEFINITIONS: &[(&str, &str)] = &[
    (
        "tokens",
        "n, the number of evaluation rows (tokens) the metrics are computed over",
    ),
    ("l0", "mean number of active (non-zero) latents per token"),
    (
        "explained_variance",
        "1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the per-dimension mean over the evaluation tokens: \
         0 for predicting x̄, 1 for perfect reconstruction",
    ),
    (
        "explained_variance_ci",
        "expanded percentile 95% interval (Hesterberg 2015: widened for few texts) of \
         explained_variance over 1,000 bootstrap resamples of the evaluation texts (a text's tokens are not independent; Poisson weights per text, seeded; \
         each resample's Σ‖x − x̄‖² about the evaluation rows' x̄)",
    ),
    (
        "texts",
        "the evaluation texts (images for vision runs) the interval resamples",
    ),
    (
        "fvu",
        "fraction of variance unexplained, Σ‖x − x̂‖² / Σ‖x − x̄‖² = 1 − explained_variance",
    ),
    (
        "mse",
        "Σ‖x − x̂‖² / (n·d), the mean squared error per element",
    ),
    (
        "normalised_mse",
        "Σ‖x − x̂‖² / Σ‖x‖²: the error relative to predicting zero",
    ),
    (
        "cosine",
        "mean over tokens of cos(x, x̂) = ⟨x, x̂⟩ / (‖x‖ ‖x̂‖) (tokens with x = 0 or x̂ = 0 count 0)",
    ),
    (
        "dead_fraction",
        "fraction of latents with no activation on any evaluation token (the training-time \
         count over the last dead_window tokens is in `dead_fraction_training`)",
    ),
    (
        "dense_fraction",
        "fraction of latents active on more than dense_threshold of the tokens",
    ),
    (
        "density_histogram",
        "latent counts by log10 firing density (fraction of tokens active): bins of width 0.5 \
         from −∞ (never) through [−0.5, 0]",
    ),
];

/// Firing densities above this make a latent "dense".
pub const DENSE_THRESHOLD: f64 = 0.1;

/// One bin of the density histogram: `[lo, hi)` in log10 density (`lo = −inf`: never fires).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DensityBin {
    pub log10_lo: f64,
    pub log10_hi: f64,
    pub latents: u64,
}

/// Metrics of one evaluation pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub tokens: u64,
    pub l0: f64,
    pub explained_variance: f64,
    /// Bootstrap 95% interval over the evaluation texts (`None` without text ids or with one).
    #[serde(default)]
    pub explained_variance_ci: Option<(f64, f64)>,
    /// Texts the interval resamples (0 without text ids).
    #[serde(default)]
    pub texts: u64,
    pub fvu: f64,
    pub mse: f64,
    pub normalised_mse: f64,
    pub cosine: f64,
    pub dead_fraction: f64,
    pub dense_fraction: f64,
    pub density_histogram: Vec<DensityBin>,
    /// Firing density of each latent (fraction of evaluation tokens where it is active).
    #[serde(skip)]
    pub density: Vec<f64>,
    /// `explained_variance` in each bootstrap resample (a paired comparison's other half).
    #[serde(skip)]
    pub resampled_explained_variance: Vec<f64>,
}

/// Accumulates the sums behind [`Metrics`] batch by batch.
#[derive(Debug, Clone)]
pub struct MetricSums {
    d: usize,
    n: u64,
    sum_x: Vec<f64>,
    sum_sq_x: f64,
    sse: f64,
    cosine: f64,
    active: u64,
    fired: Vec<u64>,
    bootstrap: Option<TextBootstrap>,
}

impl MetricSums {
    pub fn new(d: usize, latents: usize) -> Self {
        Self {
            d,
            n: 0,
            sum_x: vec![0.0; d],
            sum_sq_x: 0.0,
            sse: 0.0,
            cosine: 0.0,
            active: 0,
            fired: vec![0; latents],
            bootstrap: None,
        }
    }

    /// Also resample the evaluation texts for an interval of the explained variance; rows
    /// then come through [`MetricSums::add_rows`], with their ids.
    pub fn with_bootstrap(mut self, settings: Bootstrap) -> Self {
        self.bootstrap = (settings.resamples > 0).then(|| TextBootstrap::new(self.d, settings));
        self
    }

    /// [`MetricSums::add`] for rows with ids: `ids[r].0` is row r's text.
    pub fn add_rows(&mut self, ids: &[RowId], x: &[f32], x_hat: &[f32], codes: Option<&Codes>) {
        self.add_with(Some(ids), x, x_hat, codes);
    }

    /// Adds rows `x` with reconstructions `x_hat` (both `rows × d`) and their codes (`None`
    /// for reconstructions without latents, such as PCA).
    pub fn add(&mut self, x: &[f32], x_hat: &[f32], codes: Option<&Codes>) {
        self.add_with(None, x, x_hat, codes);
    }

    /// One pass over the rows: the sums, and each row's `‖x‖²` and `‖x − x̂‖²` handed to the
    /// text bootstrap when there are ids.
    fn add_with(&mut self, ids: Option<&[RowId]>, x: &[f32], x_hat: &[f32], codes: Option<&Codes>) {
        let rows = x.chunks_exact(self.d).zip(x_hat.chunks_exact(self.d));
        for (r, (row, rec)) in rows.enumerate() {
            let (mut xx, mut hh, mut xh, mut ee) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
            for ((s, &a), &b) in self.sum_x.iter_mut().zip(row).zip(rec) {
                let (a, b) = (a as f64, b as f64);
                *s += a;
                xx += a * a;
                hh += b * b;
                xh += a * b;
                ee += (a - b) * (a - b);
            }
            self.n += 1;
            self.sum_sq_x += xx;
            self.sse += ee;
            if xx > 0.0 && hh > 0.0 {
                self.cosine += xh / (xx.sqrt() * hh.sqrt());
            }
            if let (Some(boot), Some(ids)) = (&mut self.bootstrap, ids) {
                boot.row(ids[r].0, row, xx, ee);
            }
        }
        if let Some(codes) = codes {
            self.active += codes.nnz() as u64;
            for &j in &codes.index {
                self.fired[j as usize] += 1;
            }
        }
    }

    pub fn finish(&self) -> Metrics {
        let n = self.n.max(1) as f64;
        // Σ‖x − x̄‖² = Σ‖x‖² − n‖x̄‖².
        let mean_sq: f64 = self.sum_x.iter().map(|s| (s / n).powi(2)).sum();
        let total = (self.sum_sq_x - n * mean_sq).max(0.0);
        let fvu = if total > 0.0 {
            self.sse / total
        } else {
            f64::NAN
        };
        let latents = self.fired.len();
        let density: Vec<f64> = self.fired.iter().map(|&f| f as f64 / n).collect();
        let dead = self.fired.iter().filter(|&&f| f == 0).count();
        let dense = density.iter().filter(|&&p| p > DENSE_THRESHOLD).count();
        let per_latent = |c: usize| {
            if latents == 0 {
                0.0
            } else {
                c as f64 / latents as f64
            }
        };
        let (resampled, texts) = match &self.bootstrap {
            Some(boot) => {
                let mean: Vec<f64> = self.sum_x.iter().map(|s| s / n).collect();
                (boot.explained_variances(&mean), boot.texts())
            }
            None => (Vec::new(), 0),
        };
        Metrics {
            tokens: self.n,
            l0: self.active as f64 / n,
            explained_variance: 1.0 - fvu,
            explained_variance_ci: interval(&resampled, texts),
            texts,
            resampled_explained_variance: resampled,
            fvu,
            mse: self.sse / (n * self.d as f64),
            normalised_mse: if self.sum_sq_x > 0.0 {
                self.sse / self.sum_sq_x
            } else {
                f64::NAN
            },
            cosine: self.cosine / n,
            dead_fraction: per_latent(dead),
            dense_fraction: per_latent(dense),
            density_histogram: histogram(&density),
            density,
        }
    }
}

/// Latent counts by log10 density: "never", then half-decade bins from the lowest density seen
/// (at least −8) up to 0.
fn histogram(density: &[f64]) -> Vec<DensityBin> {
    let never = density.iter().filter(|&&p| p == 0.0).count() as u64;
    let lowest = density
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|p| p.log10())
        .fold(0.0f64, f64::min)
        .max(-8.0);
    let first = (lowest * 2.0).floor() / 2.0;
    let mut bins = vec![DensityBin {
        log10_lo: f64::NEG_INFINITY,
        log10_hi: first,
        latents: never,
    }];
    let mut lo = first;
    while lo < 0.0 {
        let hi = lo + 0.5;
        let count = density
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|p| p.log10().max(-8.0))
            .filter(|&l| l >= lo && (l < hi || (hi >= 0.0 && l <= 0.0)))
            .count() as u64;
        bins.push(DensityBin {
            log10_lo: lo,
            log10_hi: hi,
            latents: count,
        });
        lo = hi;
    }
    bins
}

/// `Σ_r ‖x_r − x̄‖²` over the rows of `x` (`· × d`), accumulated in f64 per row block.
pub fn variance_about_mean(x: &[f32], d: usize) -> f64 {
    let rows = x.len() / d;
    if rows == 0 {
        return 0.0;
    }
    const ROWS: usize = 256;
    let sum_rows = |block: &[f32]| {
        let mut acc = vec![0.0f64; d];
        for row in block.chunks_exact(d) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += *v as f64;
            }
        }
        acc
    };
    // Per-block partial sums collected in order, then added in order: rayon's own `sum` and
    // `reduce` group by work-stealing, which would make the result (and the weights)
    // differ from run to run in the last bits.
    let partials: Vec<Vec<f64>> = x.par_chunks(d * ROWS).map(sum_rows).collect();
    let mut mean = vec![0.0f64; d];
    for p in &partials {
        mean.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    x.par_chunks(d * ROWS)
        .map(|block| {
            block
                .chunks_exact(d)
                .map(|row| {
                    row.iter()
                        .zip(&mean)
                        .map(|(v, m)| (*v as f64 - m).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>()
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: [f32; 6] = [1.0, 2.0, 3.0, 6.0, 2.0, 4.0]; // three rows of width 2

    #[test]
    fn predicting_the_mean_explains_nothing() {
        let mean = [2.0f32, 4.0];
        let x_hat: Vec<f32> = (0..3).flat_map(|_| mean).collect();
        let mut sums = MetricSums::new(2, 1);
        sums.add(&X, &x_hat, None);
        let m = sums.finish();
        assert!(
            m.explained_variance.abs() < 1e-12,
            "{}",
            m.explained_variance
        );
        assert!((m.fvu - 1.0).abs() < 1e-12);
    }

    #[test]
    fn perfect_reconstruction_explains_everything() {
        let mut sums = MetricSums::new(2, 1);
        sums.add(&X, &X, None);
        let m = sums.finish();
        assert_eq!(m.explained_variance, 1.0);
        assert_eq!(m.fvu, 0.0);
        assert_eq!(m.mse, 0.0);
        assert!((m.cosine - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_known_reconstruction_gives_the_hand_computed_values() {
        // x̂ = x with the first row's second coordinate off by 2 and the third row's first
        // coordinate off by −1: SSE = 4 + 1 = 5.
        let x_hat = [1.0f32, 4.0, 3.0, 6.0, 1.0, 4.0];
        // x̄ = (2, 4); Σ‖x − x̄‖² = (1 + 4) + (1 + 4) + (0 + 0) = 10.
        let mut sums = MetricSums::new(2, 3);
        let codes = Codes {
            offsets: vec![0, 1, 3, 3],
            index: vec![0, 0, 2],
            value: vec![1.0, 1.0, 1.0],
        };
        sums.add(&X[..2], &x_hat[..2], None);
        sums.add(&X[2..], &x_hat[2..], None);
        let mut m = sums.finish();
        assert!((m.fvu - 0.5).abs() < 1e-12);
        assert!((m.explained_variance - 0.5).abs() < 1e-12);
        assert!((m.mse - 5.0 / 6.0).abs() < 1e-12);
        // Σ‖x‖² = 5 + 45 + 20 = 70.
        assert!((m.normalised_mse - 5.0 / 70.0).abs() < 1e-12);
        // cos: row 1 (1,2)·(1,4) = 9 / (√5 √17); rows 2 and 3 exact / (2,4)·(1,4) = 18 / (√20 √17).
        let want =
            (9.0 / (5f64.sqrt() * 17f64.sqrt()) + 1.0 + 18.0 / (20f64.sqrt() * 17f64.sqrt())) / 3.0;
        assert!((m.cosine - want).abs() < 1e-12);

        // Sparsity: latents 0 (rows 1, 2) and 2 (row 2) fire, latent 1 never.
        let mut sums = MetricSums::new(2, 3);
        sums.add(&X, &x_hat, Some(&codes));
        m = sums.finish();
        assert!((m.l0 - 1.0).abs() < 1e-12);
        assert!((m.dead_fraction - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.dense_fraction - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.density, vec![2.0 / 3.0, 0.0, 1.0 / 3.0]);
        assert_eq!(m.density_histogram[0].latents, 1);
        assert_eq!(
            m.density_histogram.iter().map(|b| b.latents).sum::<u64>(),
            3
        );
    }
}
