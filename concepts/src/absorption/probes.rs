//! The two kinds of probe the absorption metric needs: the ground-truth first-letter probe on
//! the model's activations (one-vs-rest logistic on standardised rows, as SAEBench's probes
//! are one sigmoid per letter), and the k-sparse probes on a few latents (logistic with
//! balanced class weights, as SAEBench fits them with scikit-learn's `class_weight =
//! "balanced"`); scores above 0 count as positive.

use glassbox_probes::logistic::{self, Problem};
use glassbox_probes::probe::Standardizer;

/// A letter's probe in raw activation space: `score(x) = w · x + b`.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    pub w: Vec<f64>,
    pub b: f64,
}

impl GroundTruth {
    pub fn score(&self, row: &[f32]) -> f64 {
        row.iter()
            .zip(&self.w)
            .map(|(x, w)| *x as f64 * w)
            .sum::<f64>()
            + self.b
    }

    /// The probe's unit direction (what latents' decoder rows are compared with).
    pub fn unit(&self) -> Vec<f64> {
        let n = self.w.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-30);
        self.w.iter().map(|v| v / n).collect()
    }
}

/// Fits letter `y = 1` against the rest on already standardised training rows; returns it in
/// raw space.
pub fn ground_truth(
    x_std: &[f32],
    d: usize,
    y: &[usize],
    std: &Standardizer,
    l2: f64,
) -> GroundTruth {
    let problem = Problem {
        x: x_std,
        d,
        y,
        n_classes: 2,
    };
    let model = logistic::fit(&problem, l2, 100, None);
    // w · (x − μ)/σ + b = (w/σ) · x + (b − Σ μ w/σ).
    let w: Vec<f64> = model
        .weights
        .iter()
        .zip(&std.std)
        .map(|(w, s)| w / s)
        .collect();
    let b = model.bias[0] - w.iter().zip(&std.mean).map(|(w, m)| w * m).sum::<f64>();
    GroundTruth { w, b }
}

/// Logistic regression on `n × k` features with balanced class weights (`n / (2 n_class)`) and
/// `½‖β‖²` (scikit-learn's default `C = 1`; the intercept free), by Newton's method: `(β, b)`.
pub fn balanced_logistic(x: &[f64], k: usize, y: &[bool]) -> (Vec<f64>, f64) {
    let n = y.len();
    let positives = y.iter().filter(|&&v| v).count();
    if positives == 0 || positives == n {
        return (vec![0.0; k], if positives == 0 { -1.0 } else { 1.0 });
    }
    let weight = |v: bool| n as f64 / (2.0 * if v { positives } else { n - positives } as f64);
    let p = k + 1;
    let mut theta = vec![0.0f64; p];
    for _ in 0..100 {
        let mut g = vec![0.0f64; p];
        let mut h = vec![0.0f64; p * p];
        for (i, &yi) in y.iter().enumerate() {
            let row = &x[i * k..(i + 1) * k];
            let z = row.iter().zip(&theta).map(|(a, b)| a * b).sum::<f64>() + theta[k];
            let s = 1.0 / (1.0 + (-z).exp());
            let w = weight(yi);
            let r = w * (s - f64::from(u8::from(yi)));
            let c = w * s * (1.0 - s);
            for a in 0..p {
                let xa = if a < k { row[a] } else { 1.0 };
                g[a] += r * xa;
                for b in 0..p {
                    let xb = if b < k { row[b] } else { 1.0 };
                    h[a * p + b] += c * xa * xb;
                }
            }
        }
        for a in 0..k {
            g[a] += theta[a];
            h[a * p + a] += 1.0;
        }
        h[k * p + k] += 1e-9;
        let Some(step) = solve(&mut h, &mut g, p) else {
            break;
        };
        theta.iter_mut().zip(&step).for_each(|(t, s)| *t -= s);
        if step.iter().map(|s| s * s).sum::<f64>().sqrt() < 1e-10 {
            break;
        }
    }
    let b = theta[k];
    theta.truncate(k);
    (theta, b)
}

/// Solves `a · x = b` (`p × p`) by Gaussian elimination with partial pivoting.
fn solve(a: &mut [f64], b: &mut [f64], p: usize) -> Option<Vec<f64>> {
    for col in 0..p {
        let pivot =
            (col..p).max_by(|&i, &j| a[i * p + col].abs().total_cmp(&a[j * p + col].abs()))?;
        if a[pivot * p + col].abs() < 1e-300 {
            return None;
        }
        for c in 0..p {
            a.swap(col * p + c, pivot * p + c);
        }
        b.swap(col, pivot);
        for row in col + 1..p {
            let f = a[row * p + col] / a[col * p + col];
            for c in col..p {
                a[row * p + c] -= f * a[col * p + c];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; p];
    for row in (0..p).rev() {
        let rest: f64 = (row + 1..p).map(|c| a[row * p + c] * x[c]).sum();
        x[row] = (b[row] - rest) / a[row * p + row];
    }
    Some(x)
}

/// F1 of `predicted` against `truth` (0 when nothing is predicted or true).
pub fn f1(predicted: &[bool], truth: &[bool]) -> f64 {
    let tp = predicted
        .iter()
        .zip(truth)
        .filter(|(p, t)| **p && **t)
        .count() as f64;
    let fp = predicted
        .iter()
        .zip(truth)
        .filter(|(p, t)| **p && !**t)
        .count() as f64;
    let fn_ = predicted
        .iter()
        .zip(truth)
        .filter(|(p, t)| !**p && **t)
        .count() as f64;
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fn_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_logistic_separates_a_rare_class() {
        // 5 positives at x ≈ 2, 95 negatives at x ≈ 0: balanced weights put the boundary between.
        let x: Vec<f64> = (0..100)
            .map(|i| {
                if i < 5 {
                    2.0 + 0.01 * i as f64
                } else {
                    0.01 * (i % 7) as f64
                }
            })
            .collect();
        let y: Vec<bool> = (0..100).map(|i| i < 5).collect();
        let (beta, b) = balanced_logistic(&x, 1, &y);
        let predicted: Vec<bool> = x.iter().map(|v| v * beta[0] + b > 0.0).collect();
        assert_eq!(f1(&predicted, &y), 1.0, "β {beta:?}, b {b}");
    }

    #[test]
    fn f1_by_hand() {
        let p = [true, true, false, false];
        let t = [true, false, true, false];
        assert!((f1(&p, &t) - 0.5).abs() < 1e-12);
        assert_eq!(f1(&[false; 3], &[true; 3]), 0.0);
    }
}
