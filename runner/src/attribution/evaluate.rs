//! Which attribution to believe: faithfulness by perturbation curves (deletion and insertion,
//! most- and least-relevant first; ERASER's comprehensiveness and sufficiency for text), and
//! the similarity measures of the sanity checks (Spearman's ρ, SSIM).
//!
//! A *unit* is what gets removed: a token (its embedding replaced by the baseline's) or a cell
//! of pixels (replaced by the baseline image's).

use super::oracle::Oracle;
use glassbox_models::Result;

/// The four perturbation curves of one attribution, `f` at each fraction of units changed.
#[derive(Debug, Clone, Default)]
pub struct Curves {
    /// Fractions of units removed (deletion) or inserted (insertion), 0 to 1.
    pub fractions: Vec<f64>,
    /// Removing the most relevant units first: a faithful map makes `f` drop fast.
    pub deletion_morf: Vec<f64>,
    /// Removing the least relevant first: `f` should hold.
    pub deletion_lerf: Vec<f64>,
    /// Inserting the most relevant first into the baseline: `f` should rise fast.
    pub insertion_morf: Vec<f64>,
    /// Inserting the least relevant first.
    pub insertion_lerf: Vec<f64>,
}

/// Area under a curve over fractions in [0, 1] (trapezoids).
pub fn area(fractions: &[f64], values: &[f64]) -> f64 {
    fractions
        .windows(2)
        .zip(values.windows(2))
        .map(|(f, v)| (f[1] - f[0]) * (v[0] + v[1]) / 2.0)
        .sum()
}

/// Unit indices by descending score (ties by index, so the order is deterministic).
pub fn most_relevant_first(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// `x` with the units `chosen` taken from `from` instead.
fn mix(x: &[f32], from: &[f32], units: &[Vec<usize>], chosen: &[usize]) -> Vec<f32> {
    let mut out = x.to_vec();
    for &u in chosen {
        for &i in &units[u] {
            out[i] = from[i];
        }
    }
    out
}

/// Units changed at each of `points + 1` evenly spaced fractions.
fn counts(units: usize, points: usize) -> Vec<usize> {
    let points = points.max(1);
    let mut v: Vec<usize> = (0..=points)
        .map(|k| ((k * units) as f64 / points as f64).round() as usize)
        .collect();
    v.dedup();
    v
}

/// The deletion and insertion curves of `scores` (one per unit).
pub fn curves(
    o: &dyn Oracle,
    x: &[f32],
    baseline: &[f32],
    units: &[Vec<usize>],
    scores: &[f32],
    points: usize,
) -> Result<Curves> {
    let morf = most_relevant_first(scores);
    let lerf: Vec<usize> = morf.iter().rev().copied().collect();
    let ks = counts(units.len(), points);
    let mut inputs = Vec::with_capacity(4 * ks.len());
    for order in [&morf, &lerf] {
        for &k in &ks {
            inputs.push(mix(x, baseline, units, &order[..k]));
        }
    }
    for order in [&morf, &lerf] {
        for &k in &ks {
            inputs.push(mix(baseline, x, units, &order[..k]));
        }
    }
    let f = o.values(&inputs)?;
    let n = ks.len();
    Ok(Curves {
        fractions: ks
            .iter()
            .map(|k| *k as f64 / units.len().max(1) as f64)
            .collect(),
        deletion_morf: f[0..n].to_vec(),
        deletion_lerf: f[n..2 * n].to_vec(),
        insertion_morf: f[2 * n..3 * n].to_vec(),
        insertion_lerf: f[3 * n..4 * n].to_vec(),
    })
}

/// ERASER's comprehensiveness and sufficiency (DeYoung et al. 2020), averaged over the top
/// 1, 5, 10, 20 and 50 % of units (at least one): `f(x) − f(x without them)` and
/// `f(x) − f(only them)` — higher comprehensiveness and lower sufficiency are better.
pub fn comprehensiveness_sufficiency(
    o: &dyn Oracle,
    x: &[f32],
    baseline: &[f32],
    units: &[Vec<usize>],
    scores: &[f32],
    f_x: f64,
) -> Result<(f64, f64)> {
    const BINS: [f64; 5] = [0.01, 0.05, 0.10, 0.20, 0.50];
    let order = most_relevant_first(scores);
    let ks: Vec<usize> = BINS
        .iter()
        .map(|b| ((b * units.len() as f64).ceil() as usize).clamp(1, units.len().max(1)))
        .collect();
    let mut inputs = Vec::new();
    for &k in &ks {
        inputs.push(mix(x, baseline, units, &order[..k]));
        inputs.push(mix(baseline, x, units, &order[..k]));
    }
    let f = o.values(&inputs)?;
    let (mut comp, mut suff) = (0.0, 0.0);
    for pair in f.chunks_exact(2) {
        comp += f_x - pair[0];
        suff += f_x - pair[1];
    }
    Ok((comp / ks.len() as f64, suff / ks.len() as f64))
}

/// Spearman's rank correlation of two maps (the patching tables' estimator, ties averaged);
/// `None` when either side is constant.
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    let widen = |v: &[f32]| -> Vec<f64> { v.iter().map(|x| f64::from(*x)).collect() };
    let rho = crate::patching::spearman(&widen(a), &widen(b));
    rho.is_finite().then_some(rho)
}

/// Scales a map to [0, 1] by its range (a constant map becomes zeros).
fn unit_range(v: &[f32]) -> Vec<f64> {
    let (lo, hi) = v
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), x| {
            (l.min(*x), h.max(*x))
        });
    let span = f64::from(hi - lo);
    v.iter()
        .map(|x| {
            if span > 0.0 {
                f64::from(x - lo) / span
            } else {
                0.0
            }
        })
        .collect()
}

/// Structural similarity of two `rows × cols` maps, each scaled to [0, 1], over 7×7 windows
/// (scikit-image's `structural_similarity` defaults: uniform window, K₁ = 0.01, K₂ = 0.03,
/// sample covariance), averaged over the windows that fit.
pub fn ssim(a: &[f32], b: &[f32], rows: usize, cols: usize) -> Option<f64> {
    const WIN: usize = 7;
    if rows < WIN || cols < WIN || a.len() != rows * cols || b.len() != a.len() {
        return None;
    }
    let (a, b) = (unit_range(a), unit_range(b));
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let n = (WIN * WIN) as f64;
    let cov_norm = n / (n - 1.0);
    let (mut total, mut count) = (0.0, 0usize);
    for y in 0..=rows - WIN {
        for x in 0..=cols - WIN {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for dy in 0..WIN {
                for dx in 0..WIN {
                    let i = (y + dy) * cols + x + dx;
                    sa += a[i];
                    sb += b[i];
                    saa += a[i] * a[i];
                    sbb += b[i] * b[i];
                    sab += a[i] * b[i];
                }
            }
            let (ma, mb) = (sa / n, sb / n);
            let va = cov_norm * (saa / n - ma * ma);
            let vb = cov_norm * (sbb / n - mb * mb);
            let vab = cov_norm * (sab / n - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * vab + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            count += 1;
        }
    }
    Some(total / count as f64)
}

/// `‖a − b‖₂ / ‖a‖₂` (Quantus's max-sensitivity ratio, per perturbation); `None` for a zero map.
pub fn relative_change(a: &[f32], b: &[f32]) -> Option<f64> {
    let norm: f64 = a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    (norm > 0.0).then(|| diff / norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f(x) = Σ xᵢ: removing a unit lowers f by exactly its sum.
    fn sum(x: Vec<f32>) -> crate::attribution::test_oracles::Separable {
        crate::attribution::test_oracles::Separable {
            c: vec![1.0; x.len()],
            x,
            phi: |_, v| f64::from(v),
            dphi: |_, _| 1.0,
        }
    }

    #[test]
    fn the_true_attribution_beats_its_reverse_on_every_curve() {
        let x = vec![5.0f32, 1.0, 3.0, 0.0];
        let o = sum(x.clone());
        let units: Vec<Vec<usize>> = (0..4).map(|i| vec![i]).collect();
        let zero = vec![0.0; 4];
        let good = curves(&o, &x, &zero, &units, &x, 4).unwrap();
        let reverse: Vec<f32> = x.iter().map(|v| -v).collect();
        let bad = curves(&o, &x, &zero, &units, &reverse, 4).unwrap();
        assert_eq!(good.deletion_morf, vec![9.0, 4.0, 1.0, 0.0, 0.0]);
        let a = |c: &Vec<f64>, f: &Vec<f64>| area(f, c);
        assert!(a(&good.deletion_morf, &good.fractions) < a(&bad.deletion_morf, &bad.fractions));
        assert!(a(&good.insertion_morf, &good.fractions) > a(&bad.insertion_morf, &bad.fractions));
        let (comp, suff) = comprehensiveness_sufficiency(&o, &x, &zero, &units, &x, 9.0).unwrap();
        // Four units: the 1–20 % bins take the top unit (5: removing it costs 5, keeping only
        // it costs 4), the 50 % bin the top two (5 + 3: costs 8 and 1).
        assert!((comp - (4.0 * 5.0 + 8.0) / 5.0).abs() < 1e-12, "{comp}");
        assert!((suff - (4.0 * 4.0 + 1.0) / 5.0).abs() < 1e-12, "{suff}");
    }

    #[test]
    fn spearman_and_ssim_of_a_map_with_itself_are_one() {
        let a: Vec<f32> = (0..100).map(|i| ((i * 37) % 17) as f32).collect();
        assert!((spearman(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        let rev: Vec<f32> = a.iter().map(|v| -v).collect();
        assert!((spearman(&a, &rev).unwrap() + 1.0).abs() < 1e-12);
        assert!((ssim(&a, &a, 10, 10).unwrap() - 1.0).abs() < 1e-12);
        assert!(ssim(&a, &rev, 10, 10).unwrap() < 0.5);
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    }
}
