//! LEACE: least-squares concept erasure in closed form (Belrose et al. 2023, "LEACE: Perfect
//! linear concept erasure in closed form", <https://arxiv.org/abs/2306.03819>, §4).
//!
//! With `Σ` the activations' covariance and `C = Cov(x, z)` the cross-covariance with the
//! one-hot concept `z`, the eraser is `r(x) = x − E (x − μ)` with `E = W⁺ P W`, `W = Σ^{-1/2}`
//! and `P` the orthogonal projector onto the columns of `W C`. Written without square roots:
//! `E = C (Cᵀ Σ⁻¹ C)⁺ Cᵀ Σ⁻¹` — the oblique projector onto `span C` along the `Σ⁻¹`-orthogonal
//! complement, which needs only solves with `Σ` (a Cholesky factor) and a pseudo-inverse of a
//! `k × k` matrix. After erasure no linear classifier predicts `z` better than a constant one
//! (on the fitted rows), which the causal stage checks by refitting the probe.
//!
//! The matched random baseline erases a random subspace of the same rank in the same whitened
//! geometry: `W⁺ P_R W` with `R` Gaussian in whitened coordinates equals the formula above with
//! `C = Σ^{1/2} R`, whose columns are distributed as `N(0, Σ)` — random combinations of the
//! centred rows, so no square root of `Σ` is formed either.

use crate::ConceptError;
use glassbox_data::rng::SeededRng;

/// An affine eraser `x ↦ x − E (x − μ)` on `width`-wide rows.
#[derive(Debug, Clone)]
pub struct Eraser {
    /// `E`, `width × width`, row-major.
    pub matrix: Vec<f64>,
    /// `μ`, the fitted rows' mean.
    pub mean: Vec<f64>,
    /// Activation width.
    pub width: usize,
    /// Rank of `E` (≤ classes − 1).
    pub rank: usize,
}

/// The fitted rows' statistics the erasers share: mean, covariance's Cholesky factor, centred
/// rows (for random baselines).
pub struct Geometry {
    width: usize,
    mean: Vec<f64>,
    /// Lower-triangular `L` with `L Lᵀ = Σ + εI`, row-major.
    cholesky: Vec<f64>,
    centred: Vec<f64>,
    rows: usize,
}

impl Geometry {
    /// Statistics of the `rows` of `x` (row-major, `width` wide).
    pub fn fit(x: &[f32], width: usize, rows: &[usize]) -> Result<Self, ConceptError> {
        let n = rows.len();
        if n < 2 {
            return Err(ConceptError::Invalid(format!(
                "erasure needs at least 2 rows to estimate a covariance, got {n}"
            )));
        }
        let mut mean = vec![0.0; width];
        for &r in rows {
            for (m, v) in mean.iter_mut().zip(&x[r * width..(r + 1) * width]) {
                *m += *v as f64 / n as f64;
            }
        }
        let mut centred = Vec::with_capacity(n * width);
        for &r in rows {
            centred.extend(
                x[r * width..(r + 1) * width]
                    .iter()
                    .zip(&mean)
                    .map(|(v, m)| *v as f64 - m),
            );
        }
        let mut cov = vec![0.0; width * width];
        for row in centred.chunks(width) {
            for i in 0..width {
                let a = row[i];
                if a == 0.0 {
                    continue;
                }
                for (c, b) in cov[i * width..=i * width + i].iter_mut().zip(row) {
                    *c += a * b;
                }
            }
        }
        let trace: f64 = (0..width).map(|i| cov[i * width + i]).sum::<f64>() / n as f64;
        // A ridge far below every direction the rows span: with fewer rows than units `Σ` is
        // singular, and `span C` lies in the rows' span, where the ridge changes `Σ⁻¹ C` by a
        // relative `ε / λ`.
        let ridge = 1e-9 * trace / width as f64 + f64::MIN_POSITIVE;
        for i in 0..width {
            for j in 0..=i {
                cov[i * width + j] /= n as f64;
            }
            cov[i * width + i] += ridge;
        }
        let cholesky = cholesky_lower(cov, width)?;
        Ok(Self {
            width,
            mean,
            cholesky,
            centred,
            rows: n,
        })
    }

    /// The LEACE eraser of the classes `classes[r]` (of the same `rows` as [`Self::fit`]).
    pub fn concept_eraser(&self, classes: &[usize], n_classes: usize) -> Eraser {
        let (d, n) = (self.width, self.rows);
        let mut c = vec![0.0; d * n_classes];
        for (row, &class) in self.centred.chunks(d).zip(classes) {
            for (i, v) in row.iter().enumerate() {
                c[i * n_classes + class] += v / n as f64;
            }
        }
        self.eraser(c, n_classes)
    }

    /// A random eraser of rank `rank` in the same geometry (see the module docs).
    pub fn random_eraser(&self, rank: usize, rng: &mut SeededRng) -> Eraser {
        let (d, n) = (self.width, self.rows);
        let mut c = vec![0.0; d * rank];
        for row in self.centred.chunks(d) {
            let g: Vec<f64> = (0..rank).map(|_| rng.gaussian()).collect();
            for (i, v) in row.iter().enumerate() {
                for (k, gk) in g.iter().enumerate() {
                    c[i * rank + k] += v * gk / (n as f64).sqrt();
                }
            }
        }
        self.eraser(c, rank)
    }

    /// `E = C (Cᵀ Σ⁻¹ C)⁺ Cᵀ Σ⁻¹` for `C` `width × k`, row-major.
    fn eraser(&self, c: Vec<f64>, k: usize) -> Eraser {
        let d = self.width;
        // Y = Σ⁻¹ C, column by column.
        let mut y = vec![0.0; d * k];
        for j in 0..k {
            let col: Vec<f64> = (0..d).map(|i| c[i * k + j]).collect();
            let solved = cholesky_solve(&self.cholesky, d, &col);
            for i in 0..d {
                y[i * k + j] = solved[i];
            }
        }
        // M = Cᵀ Y (k × k, symmetric PSD), then its pseudo-inverse by eigendecomposition.
        let mut m = vec![0.0; k * k];
        for i in 0..d {
            for a in 0..k {
                for b in 0..k {
                    m[a * k + b] += c[i * k + a] * y[i * k + b];
                }
            }
        }
        let (values, vectors) = jacobi_eigen(m, k);
        let top = values.iter().cloned().fold(0.0f64, f64::max);
        let mut pinv = vec![0.0; k * k];
        let mut rank = 0;
        for (e, &lambda) in values.iter().enumerate() {
            if lambda <= top * 1e-10 || lambda <= 0.0 {
                continue;
            }
            rank += 1;
            for a in 0..k {
                for b in 0..k {
                    pinv[a * k + b] += vectors[a * k + e] * vectors[b * k + e] / lambda;
                }
            }
        }
        // E = (C M⁺) Yᵀ.
        let mut cm = vec![0.0; d * k];
        for i in 0..d {
            for a in 0..k {
                cm[i * k + a] = (0..k).map(|b| c[i * k + b] * pinv[b * k + a]).sum();
            }
        }
        let mut matrix = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                matrix[i * d + j] = (0..k).map(|a| cm[i * k + a] * y[j * k + a]).sum();
            }
        }
        Eraser {
            matrix,
            mean: self.mean.clone(),
            width: d,
            rank,
        }
    }
}

impl Eraser {
    /// Erases every row of `x` (row-major, `width` wide) in place.
    pub fn apply(&self, x: &mut [f32]) {
        let d = self.width;
        let mut centred = vec![0.0f64; d];
        for row in x.chunks_mut(d) {
            for ((c, v), m) in centred.iter_mut().zip(row.iter()).zip(&self.mean) {
                *c = *v as f64 - m;
            }
            for (i, v) in row.iter_mut().enumerate() {
                let e = &self.matrix[i * d..(i + 1) * d];
                let delta: f64 = e.iter().zip(&centred).map(|(a, b)| a * b).sum();
                *v = (*v as f64 - delta) as f32;
            }
        }
    }
}

/// `L` with `L Lᵀ = a` (symmetric positive definite, lower triangle read), row-major.
fn cholesky_lower(mut a: Vec<f64>, n: usize) -> Result<Vec<f64>, ConceptError> {
    for j in 0..n {
        let mut diag = a[j * n + j];
        for k in 0..j {
            diag -= a[j * n + k] * a[j * n + k];
        }
        if diag <= 0.0 || !diag.is_finite() {
            return Err(ConceptError::Invalid(format!(
                "erasure: the activations' covariance is not positive definite at unit {j} (non-finite or degenerate activations)"
            )));
        }
        let diag = diag.sqrt();
        a[j * n + j] = diag;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / diag;
        }
        for k in j + 1..n {
            a[j * n + k] = 0.0;
        }
    }
    Ok(a)
}

/// Solves `L Lᵀ x = b`.
fn cholesky_solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = b.to_vec();
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (y[i] - s) / l[i * n + i];
    }
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * y[k]).sum();
        y[i] = (y[i] - s) / l[i * n + i];
    }
    y
}

/// Eigenvalues and eigenvectors (columns of the row-major result) of a small symmetric matrix,
/// by cyclic Jacobi rotations.
fn jacobi_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let scale: f64 = (0..n).map(|i| a[i * n + i] * a[i * n + i]).sum();
        if off <= 1e-30 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planted(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        // Three classes shifted along two directions of a correlated cloud.
        let mut rng = SeededRng::new(seed);
        let mut x = Vec::with_capacity(n * d);
        let mut classes = Vec::with_capacity(n);
        for r in 0..n {
            let class = r % 3;
            let shared = rng.gaussian();
            for u in 0..d {
                let mut v = rng.gaussian() + 0.5 * shared * (u % 2) as f64;
                if u == 0 && class == 1 {
                    v += 3.0;
                }
                if u == 1 && class == 2 {
                    v -= 2.0;
                }
                x.push(v as f32);
            }
            classes.push(class);
        }
        (x, classes)
    }

    #[test]
    fn erased_rows_have_no_class_conditional_mean_difference() {
        let (n, d) = (600, 6);
        let (mut x, classes) = planted(n, d, 1);
        let rows: Vec<usize> = (0..n).collect();
        let g = Geometry::fit(&x, d, &rows).unwrap();
        let e = g.concept_eraser(&classes, 3);
        assert_eq!(e.rank, 2);
        e.apply(&mut x);
        // LEACE's guarantee: Cov(r(x), z) = 0, i.e. every class mean equals the overall mean.
        let overall: Vec<f64> = (0..d)
            .map(|u| (0..n).map(|r| x[r * d + u] as f64).sum::<f64>() / n as f64)
            .collect();
        for c in 0..3 {
            let members: Vec<usize> = (0..n).filter(|&r| classes[r] == c).collect();
            for u in 0..d {
                let m = members.iter().map(|&r| x[r * d + u] as f64).sum::<f64>()
                    / members.len() as f64;
                assert!(
                    (m - overall[u]).abs() < 1e-4,
                    "class {c} unit {u}: {m} vs {}",
                    overall[u]
                );
            }
        }
    }

    #[test]
    fn the_eraser_is_a_projection_and_random_ones_match_its_rank() {
        let (n, d) = (300, 5);
        let (x, classes) = planted(n, d, 2);
        let rows: Vec<usize> = (0..n).collect();
        let g = Geometry::fit(&x, d, &rows).unwrap();
        for e in [
            g.concept_eraser(&classes, 3),
            g.random_eraser(2, &mut SeededRng::new(7)),
        ] {
            assert_eq!(e.rank, 2);
            // E² = E.
            for i in 0..d {
                for j in 0..d {
                    let sq: f64 = (0..d)
                        .map(|k| e.matrix[i * d + k] * e.matrix[k * d + j])
                        .sum();
                    assert!((sq - e.matrix[i * d + j]).abs() < 1e-8);
                }
            }
        }
    }

    #[test]
    fn jacobi_finds_known_eigenvalues() {
        let (values, _) = jacobi_eigen(vec![2.0, 1.0, 1.0, 2.0], 2);
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        assert!((v[0] - 1.0).abs() < 1e-12 && (v[1] - 3.0).abs() < 1e-12);
    }
}
