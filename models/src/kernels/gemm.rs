//! A safe, bounds-checked wrapper around the `gemm` crate's matrix multiply.
//!
//! This is the one place in glassbox that uses `unsafe`: `gemm::gemm` takes raw pointers and
//! strides. The wrapper checks that every element the call can touch lies inside the given
//! slices; Rust's borrow rules already guarantee `dst` does not alias `lhs` or `rhs`.
#![allow(unsafe_code)]

/// A matrix view into a slice: element `(i, j)` is at `offset + i * row_stride + j * col_stride`.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl View {
    /// A dense row-major matrix with `cols` columns starting at `offset`.
    pub fn rows(offset: usize, cols: usize) -> Self {
        Self {
            offset,
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// The transpose of a dense row-major matrix with `cols` columns.
    pub fn transposed(offset: usize, cols: usize) -> Self {
        Self {
            offset,
            row_stride: 1,
            col_stride: cols,
        }
    }
    fn last(&self, rows: usize, cols: usize) -> usize {
        self.offset + (rows - 1) * self.row_stride + (cols - 1) * self.col_stride
    }
}

/// `dst[m×n] = (accumulate ? dst : 0) + scale · lhs[m×k] · rhs[k×n]`, using up to `threads`
/// threads of the rayon pool (1 = this thread only). Without `accumulate`, `dst`'s earlier
/// contents are never read (NaNs there do not leak into the result; tested), so it may be a
/// recycled buffer (`kernels::Recycler::take`).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    (m, k, n): (usize, usize, usize),
    dst: &mut [f32],
    dst_view: View,
    lhs: &[f32],
    lhs_view: View,
    rhs: &[f32],
    rhs_view: View,
    scale: f32,
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst_view.last(m, n) < dst.len(), "gemm: dst out of bounds");
    if k == 0 {
        // An empty sum: nothing for `gemm` to multiply.
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[dst_view.offset + i * dst_view.row_stride + j * dst_view.col_stride] = 0.0;
                }
            }
        }
        return;
    }
    assert!(lhs_view.last(m, k) < lhs.len(), "gemm: lhs out of bounds");
    assert!(rhs_view.last(k, n) < rhs.len(), "gemm: rhs out of bounds");
    let parallelism = if threads <= 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    // SAFETY: the assertions above keep every accessed element inside its slice; `dst` is a
    // unique borrow, so it cannot alias `lhs` or `rhs`; strides fit in isize because the
    // offsets they produce are bounded by slice lengths.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(dst_view.offset),
            dst_view.col_stride as isize,
            dst_view.row_stride as isize,
            accumulate,
            lhs.as_ptr().add(lhs_view.offset),
            lhs_view.col_stride as isize,
            lhs_view.row_stride as isize,
            rhs.as_ptr().add(rhs_view.offset),
            rhs_view.col_stride as isize,
            rhs_view.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a` (`m × k`), `b` (`k × n`) and their product by [`naive`].
    fn operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let a: Vec<f32> = (0..m * k).map(|v| (v as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|v| (v as f32 * 0.11).cos()).collect();
        let expected = naive(m, k, n, &a, &b);
        (a, b, expected)
    }

    fn naive(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulation() {
        let (m, k, n) = (7, 5, 3);
        let (a, b, expected) = operands(m, k, n);
        let mut c = vec![0.0; m * n];
        matmul(
            (m, k, n),
            &mut c,
            View::rows(0, n),
            &a,
            View::rows(0, k),
            &b,
            View::rows(0, n),
            1.0,
            false,
            2,
        );
        for (x, y) in c.iter().zip(&expected) {
            assert!((x - y).abs() < 1e-5);
        }
        // b given as its transpose (n×k row-major), like a Linear weight [out, in].
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut c2 = vec![1.0; m * n];
        matmul(
            (m, k, n),
            &mut c2,
            View::rows(0, n),
            &a,
            View::rows(0, k),
            &bt,
            View::transposed(0, k),
            2.0,
            true,
            1,
        );
        for (x, y) in c2.iter().zip(&expected) {
            assert!((x - (1.0 + 2.0 * y)).abs() < 1e-5);
        }
    }

    /// Without `accumulate` the product overwrites `dst` without reading it: NaNs left there
    /// (a recycled buffer's stale values could be anything) never reach the result, on the
    /// `gemm` microkernels' full and edge tiles, one thread and several, and for `k = 0`.
    #[test]
    fn overwriting_never_reads_the_destination() {
        for (m, k, n, threads) in [(37, 19, 29, 1), (130, 64, 70, 2), (5, 0, 3, 1)] {
            let (a, b, expected) = operands(m, k, n);
            let mut c = vec![f32::NAN; m * n];
            matmul(
                (m, k, n),
                &mut c,
                View::rows(0, n),
                &a,
                View::rows(0, k),
                &b,
                View::rows(0, n),
                1.0,
                false,
                threads,
            );
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - y).abs() < 1e-4, "{m}x{k}x{n}: {x} vs {y}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn rejects_out_of_bounds_views() {
        let mut c = vec![0.0; 4];
        matmul(
            (2, 2, 3),
            &mut c,
            View::rows(0, 3),
            &[0.0; 4],
            View::rows(0, 2),
            &[0.0; 6],
            View::rows(0, 3),
            1.0,
            false,
            1,
        );
    }
}
