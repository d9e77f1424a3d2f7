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

/// Rows handled together by [`dot_rows`] and [`add_scaled_rows`]: each weight (or gradient)
/// vector loaded serves four rows, where one row at a time was bound by those loads.
pub(crate) const ROWS: usize = 4;

/// `[x₀ · w, x₁ · w, x₂ · w, x₃ · w]` for four rows of `w.len()` values.
#[inline(always)]
pub(crate) fn dot_rows<S: Simd>(simd: S, x: [&[f32]; ROWS], w: &[f32]) -> [f32; ROWS] {
    let (w_vec, w_tail) = S::as_simd_f32s(w);
    let rows = x.map(|r| S::as_simd_f32s(r));
    let mut acc = [simd.splat_f32s(0.0); ROWS];
    for (i, wv) in w_vec.iter().enumerate() {
        for r in 0..ROWS {
            acc[r] = simd.mul_add_f32s(rows[r].0[i], *wv, acc[r]);
        }
    }
    let mut out = [0f32; ROWS];
    for r in 0..ROWS {
        let tail: f32 = rows[r].1.iter().zip(w_tail).map(|(a, b)| a * b).sum();
        out[r] = simd.reduce_sum_f32s(acc[r]) + tail;
    }
    out
}

/// `acc += Σᵣ scale[r] · x[r]` for four rows.
#[inline(always)]
pub(crate) fn add_scaled_rows<S: Simd>(
    simd: S,
    acc: &mut [f32],
    scale: [f32; ROWS],
    x: [&[f32]; ROWS],
) {
    let (acc_vec, acc_tail) = S::as_mut_simd_f32s(acc);
    let rows = x.map(|r| S::as_simd_f32s(r));
    let s = scale.map(|v| simd.splat_f32s(v));
    for (i, a) in acc_vec.iter_mut().enumerate() {
        let mut v = *a;
        for r in 0..ROWS {
            v = simd.mul_add_f32s(s[r], rows[r].0[i], v);
        }
        *a = v;
    }
    for (i, a) in acc_tail.iter_mut().enumerate() {
        for r in 0..ROWS {
            *a = scale[r].mul_add(rows[r].1[i], *a);
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
            // Four rows: a scaled by 1, 2, 3, 4.
            let rows: Vec<Vec<f32>> = (1..=ROWS)
                .map(|r| a.iter().map(|v| v * r as f32).collect())
                .collect();
            let views = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            let dots = dot_rows(simd, views, &b);
            for (r, got) in dots.iter().enumerate() {
                let want = want * (r + 1) as f64;
                assert!(
                    (*got as f64 - want).abs() < 1e-3,
                    "len {len}, row {r}: {got} vs {want}"
                );
            }
            let mut acc = b.clone();
            add_scaled_rows(simd, &mut acc, [1.0, -1.0, 0.5, 0.25], views);
            // b + a·(1 − 2 + 1.5 + 1) = b + 1.5 a
            for i in 0..len {
                assert!(
                    (acc[i] - (b[i] + 1.5 * a[i])).abs() < 1e-5,
                    "len {len}, index {i}"
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
