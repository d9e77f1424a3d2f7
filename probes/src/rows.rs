//! Row kernels for the probes' skinny products: a probe has a handful of outputs (1 for
//! binary, one per class otherwise) against hundreds of units, so `X · W` and `Xᵀ · G` are a
//! few dot products and scaled additions per row. Done four rows at a time, each block of
//! rows is read from cache once for both, and each weight vector loaded serves four rows.
//! General matrix-multiply routines (ndarray's `matrixmultiply`) repack the whole chunk of
//! `X` for every product, which took as long as the arithmetic.
//!
//! The kernels take pulp's `Simd` token, so callers run them inside `Arch::dispatch` with
//! explicit vector types (the auto-vectoriser split a 16-lane `f32` sum into 2-wide pieces).

use pulp::Simd;

/// `a · b` in f32, four vector accumulators wide (independent chains, so the multiply-adds
/// are not bound by each other's latency).
#[inline(always)]
pub(crate) fn dot<S: Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (a_vec, a_tail) = S::as_simd_f32s(a);
    let (b_vec, b_tail) = S::as_simd_f32s(b);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [zero; 4];
    let (a4, b4) = (a_vec.chunks_exact(4), b_vec.chunks_exact(4));
    let (a_rest, b_rest) = (a4.remainder(), b4.remainder());
    for (x, y) in a4.zip(b4) {
        for i in 0..4 {
            acc[i] = simd.mul_add_f32s(x[i], y[i], acc[i]);
        }
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        acc[0] = simd.mul_add_f32s(*x, *y, acc[0]);
    }
    let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    simd.reduce_sum_f32s(sum) + tail
}

/// Rows handled together by [`dot_block`] and [`add_scaled_block`]: each weight (or gradient)
/// vector loaded serves four rows.
pub(crate) const ROWS: usize = 4;

/// Outputs handled together (at most): each row vector loaded serves this many of them, so a
/// block does `ROWS × J` multiply-adds for `ROWS + J` loads. Four fill AVX-512's 32 registers
/// (16 accumulators); AVX2's 16 take two.
pub(crate) fn outputs_per_block<S: Simd>() -> usize {
    if S::F32_LANES >= 16 {
        4
    } else {
        2
    }
}

/// `z[r][j] = x[r] · w[j]` for `ROWS` rows and `J` weight vectors, all of one length.
#[inline(always)]
pub(crate) fn dot_block<S: Simd, const J: usize>(
    simd: S,
    x: [&[f32]; ROWS],
    w: [&[f32]; J],
) -> [[f32; J]; ROWS] {
    let len = x[0].len();
    assert!(x.iter().all(|r| r.len() == len) && w.iter().all(|v| v.len() == len));
    let rows = x.map(|r| S::as_simd_f32s(r));
    let ws = w.map(|v| S::as_simd_f32s(v));
    // Every slice cut to the same count of whole vectors, so the loop's index checks fold
    // away (with them the row pointers were reloaded from the stack on every step).
    let vectors = rows[0].0.len();
    let xs = rows.map(|r| &r.0[..vectors]);
    let wvs = ws.map(|w| &w.0[..vectors]);
    let mut acc = [[simd.splat_f32s(0.0); J]; ROWS];
    for i in 0..vectors {
        let wv: [S::f32s; J] = std::array::from_fn(|j| wvs[j][i]);
        for r in 0..ROWS {
            let xv = xs[r][i];
            for j in 0..J {
                acc[r][j] = simd.mul_add_f32s(xv, wv[j], acc[r][j]);
            }
        }
    }
    let mut out = [[0f32; J]; ROWS];
    for r in 0..ROWS {
        for j in 0..J {
            let tail: f32 = rows[r].1.iter().zip(ws[j].1).map(|(a, b)| a * b).sum();
            out[r][j] = simd.reduce_sum_f32s(acc[r][j]) + tail;
        }
    }
    out
}

/// `g[j] += Σᵣ scale[r][j] · x[r]` for `ROWS` rows and `J` gradient vectors.
#[inline(always)]
pub(crate) fn add_scaled_block<S: Simd, const J: usize>(
    simd: S,
    g: [&mut [f32]; J],
    scale: [[f32; J]; ROWS],
    x: [&[f32]; ROWS],
) {
    let len = x[0].len();
    assert!(x.iter().all(|r| r.len() == len) && g.iter().all(|v| v.len() == len));
    let rows = x.map(|r| S::as_simd_f32s(r));
    let mut gs = g.map(|v| S::as_mut_simd_f32s(v));
    // As in `dot_block`: one vector count for every slice, so the index checks fold away.
    let vectors = rows[0].0.len();
    let xs = rows.map(|r| &r.0[..vectors]);
    let s = scale.map(|row| row.map(|v| simd.splat_f32s(v)));
    for (i, _) in xs[0].iter().enumerate() {
        let xv: [S::f32s; ROWS] = std::array::from_fn(|r| xs[r][i]);
        for (j, (gv, _)) in gs.iter_mut().enumerate() {
            let a = &mut gv[..vectors][i];
            let mut v = *a;
            for r in 0..ROWS {
                v = simd.mul_add_f32s(s[r][j], xv[r], v);
            }
            *a = v;
        }
    }
    for (j, (_, tail)) in gs.iter_mut().enumerate() {
        for (i, a) in tail.iter_mut().enumerate() {
            for r in 0..ROWS {
                *a = scale[r][j].mul_add(rows[r].1[i], *a);
            }
        }
    }
}

/// `W` (`d × m`, row-major, as the probes store it) as `m` rows of `d` `f32`s, so each
/// output's weights are contiguous for [`dot`].
pub(crate) fn outputs_by_row(w: &[f64], d: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; d * m];
    for (u, row) in w.chunks_exact(m).enumerate().take(d) {
        for (j, &v) in row.iter().enumerate() {
            out[j * d + u] = v as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use pulp::WithSimd;

    struct Check(usize);

    impl WithSimd for Check {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let len = self.0;
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = dot(simd, &a, &b);
            assert!(
                (got as f64 - want).abs() < 1e-4,
                "len {len}: {got} vs {want}"
            );
            check_blocks::<S, 1>(simd, &a, &b);
            check_blocks::<S, 2>(simd, &a, &b);
            check_blocks::<S, 3>(simd, &a, &b);
            check_blocks::<S, 4>(simd, &a, &b);
        }
    }

    /// Rows `r·a` (r = 1..4) against weight vectors `b + j·a`: the block kernels against the
    /// sums in f64, within f32 summation's bound (`len · ε · Σ|terms|`).
    fn check_blocks<S: Simd, const J: usize>(simd: S, a: &[f32], b: &[f32]) {
        let len = a.len();
        let rows: Vec<Vec<f32>> = (1..=ROWS)
            .map(|r| a.iter().map(|v| v * r as f32).collect())
            .collect();
        let weights: Vec<Vec<f32>> = (0..J)
            .map(|j| b.iter().zip(a).map(|(b, a)| b + j as f32 * a).collect())
            .collect();
        let views: [&[f32]; ROWS] = std::array::from_fn(|r| &rows[r][..]);
        let bound = |terms: &mut dyn Iterator<Item = f64>| {
            (len as f64 + 1.0) * f32::EPSILON as f64 * terms.map(f64::abs).sum::<f64>() + 1e-30
        };
        let dots = dot_block::<S, J>(simd, views, std::array::from_fn(|j| &weights[j][..]));
        for r in 0..ROWS {
            for j in 0..J {
                let terms = || {
                    rows[r]
                        .iter()
                        .zip(&weights[j])
                        .map(|(x, w)| *x as f64 * *w as f64)
                };
                let want: f64 = terms().sum();
                let got = dots[r][j] as f64;
                assert!(
                    (got - want).abs() <= bound(&mut terms()),
                    "J {J}, len {len}, row {r}, output {j}: {got} vs {want}"
                );
            }
        }
        let scale: [[f32; J]; ROWS] =
            std::array::from_fn(|r| std::array::from_fn(|j| 0.5 - r as f32 + 0.25 * j as f32));
        let mut grads = weights.clone();
        {
            let mut it = grads.iter_mut();
            let g: [&mut [f32]; J] = std::array::from_fn(|_| &mut it.next().unwrap()[..]);
            add_scaled_block::<S, J>(simd, g, scale, views);
        }
        for j in 0..J {
            for i in 0..len {
                let terms = || {
                    std::iter::once(weights[j][i] as f64)
                        .chain((0..ROWS).map(|r| scale[r][j] as f64 * rows[r][i] as f64))
                };
                let want: f64 = terms().sum();
                let got = grads[j][i] as f64;
                // Four multiply-adds: each rounds once.
                assert!(
                    (got - want).abs()
                        <= 5.0 * f32::EPSILON as f64 * terms().map(f64::abs).sum::<f64>() + 1e-30,
                    "J {J}, len {len}, output {j}, index {i}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn dot_and_scaled_row_sums_match_their_definitions() {
        // Lengths around the vector width and the 4-vector step, so every tail path runs,
        // on the best instruction set and on the scalar fallback.
        for len in [0, 1, 15, 16, 17, 63, 64, 65, 100, 384, 576] {
            glassbox_data::simd::arch().dispatch(Check(len));
            Check(len).with_simd(pulp::Scalar::new());
        }
    }

    #[test]
    fn outputs_by_row_transposes() {
        // d = 3 units, m = 2 outputs: w[u][j] = 10u + j.
        let w = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        assert_eq!(
            outputs_by_row(&w, 3, 2),
            vec![0.0, 10.0, 20.0, 1.0, 11.0, 21.0]
        );
    }
}
