//! A safe, bounds-checked wrapper around the `gemm` crate's matrix multiply.
//!
//! This is the one place in glassbox that uses `unsafe`: `gemm::gemm` takes raw pointers and
//! strides. The wrapper checks that every element the call can touch lies inside the given
//! slices; Rust's borrow rules already guarantee `dst` does not alias `lhs` or `rhs`.
//!
//! Which of `gemm`'s kernels runs follows glassbox's SIMD level (`glassbox_data::simd::level`,
//! the CPU's best capped by `GLASSBOX_SIMD`), as every other kernel does: at the CPU's best level
//! `gemm::gemm` picks them itself; below it, `level_gemm` calls `gemm`'s AVX2 + FMA or scalar
//! kernels by their public parts (`gemm::gemm` has no override of its own). So
//! `GLASSBOX_SIMD=avx2` on an AVX-512 machine runs the products an AVX2-only CPU runs — the
//! tests at each level (`just test-simd`) and the AVX2 benchmark (`just bench-avx2`) depend on
//! it. Candle's own matmuls (the autograd paths) still take the CPU's best.
#![allow(unsafe_code)]

use glassbox_data::simd::{self, SimdLevel};
use std::sync::OnceLock;

/// `gemm::gemm`'s signature for f32: sizes, then destination, left and right operands as
/// pointer, column stride and row stride, then `read_dst`'s `alpha`, `beta`, three conjugation
/// flags and the parallelism.
type GemmFn = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    isize,
    isize,
    bool,
    *const f32,
    isize,
    isize,
    *const f32,
    isize,
    isize,
    f32,
    f32,
    bool,
    bool,
    bool,
    gemm::Parallelism,
);

/// The product for glassbox's SIMD level, chosen once.
fn level_gemm() -> GemmFn {
    static CHOSEN: OnceLock<GemmFn> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let best = simd::available_levels().last().copied();
        match simd::level() {
            level if Some(level) == best => gemm::gemm::<f32> as GemmFn,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => avx2_fma_gemm as GemmFn,
            _ => scalar_gemm as GemmFn,
        }
    })
}

/// Generates a function with [`GemmFn`]'s signature running one of `gemm_f32`'s kernel sets
/// through `gemm_common`'s driver, exactly as `gemm::gemm` does for the level it picks
/// (`gemm_common::gemm::__inject_mod`): `$lanes` is the kernel's f32 lanes, `$simd` the
/// instruction-set token that the driver checks the CPU for.
macro_rules! kernel_set_gemm {
    ($name:ident, $kernels:path, $simd:ty, $lanes:expr) => {
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            m: usize,
            n: usize,
            k: usize,
            dst: *mut f32,
            dst_cs: isize,
            dst_rs: isize,
            read_dst: bool,
            lhs: *const f32,
            lhs_cs: isize,
            lhs_rs: isize,
            rhs: *const f32,
            rhs_cs: isize,
            rhs_rs: isize,
            alpha: f32,
            beta: f32,
            conj_dst: bool,
            conj_lhs: bool,
            conj_rhs: bool,
            parallelism: gemm::Parallelism,
        ) {
            use gemm_common::simd::MixedSimd;
            use $kernels as kernels;
            let isa = <$simd as MixedSimd<f32, f32, f32, f32>>::try_new()
                .expect("glassbox's SIMD level is capped by what the CPU has");
            gemm_common::gemm::gemm_basic_generic::<
                _,
                f32,
                { $lanes },
                { kernels::MR_DIV_N * $lanes },
                { kernels::NR },
                { kernels::MR_DIV_N },
                { kernels::H_M },
                { kernels::H_N },
            >(
                isa,
                m,
                n,
                k,
                dst,
                dst_cs,
                dst_rs,
                read_dst,
                lhs,
                lhs_cs,
                lhs_rs,
                rhs,
                rhs_cs,
                rhs_rs,
                alpha,
                beta,
                conj_dst,
                conj_lhs,
                conj_rhs,
                |a, b, c| a * b + c,
                &kernels::UKR,
                &kernels::H_UKR,
                false,
                parallelism,
            )
        }
    };
}

// Lane counts as `gemm_f32` instantiates them (`gemm_def!(f32, 2)`: scalar 1, fma 4 × 2).
#[cfg(target_arch = "x86_64")]
kernel_set_gemm!(
    avx2_fma_gemm,
    gemm_f32::microkernel::fma::f32,
    gemm_common::simd::V3,
    8
);
kernel_set_gemm!(
    scalar_gemm,
    gemm_f32::microkernel::scalar::f32,
    gemm_common::simd::Scalar,
    1
);

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
    matmul_with(
        level_gemm(),
        (m, k, n),
        (dst, dst_view),
        (lhs, lhs_view),
        (rhs, rhs_view),
        scale,
        accumulate,
        threads,
    )
}

/// [`matmul`] on a given kernel set (the tests run each one the CPU has).
#[allow(clippy::too_many_arguments)]
fn matmul_with(
    kernel: GemmFn,
    (m, k, n): (usize, usize, usize),
    (dst, dst_view): (&mut [f32], View),
    (lhs, lhs_view): (&[f32], View),
    (rhs, rhs_view): (&[f32], View),
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
        kernel(
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

    /// Every kernel set this CPU can run — the one `gemm` picks, AVX2 + FMA, scalar — gives the
    /// product, whichever level `GLASSBOX_SIMD` selected for this process: full and edge tiles,
    /// a transposed operand, accumulation, one thread and two, NaNs in an overwritten `dst`.
    #[test]
    fn every_kernel_set_gives_the_product() {
        let mut sets: Vec<(&str, GemmFn)> = vec![
            ("gemm's choice", gemm::gemm::<f32> as GemmFn),
            ("scalar", scalar_gemm as GemmFn),
        ];
        #[cfg(target_arch = "x86_64")]
        if simd::available_levels().contains(&SimdLevel::Avx2) {
            sets.push(("avx2+fma", avx2_fma_gemm as GemmFn));
        }
        for (name, kernel) in sets {
            for (m, k, n, threads) in [(37, 19, 29, 1), (130, 64, 70, 2), (1, 300, 17, 1)] {
                let (a, b, expected) = operands(m, k, n);
                let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
                let mut c = vec![f32::NAN; m * n];
                matmul_with(
                    kernel,
                    (m, k, n),
                    (&mut c, View::rows(0, n)),
                    (&a, View::rows(0, k)),
                    (&bt, View::transposed(0, k)),
                    1.0,
                    false,
                    threads,
                );
                let mut acc = vec![1.0; m * n];
                matmul_with(
                    kernel,
                    (m, k, n),
                    (&mut acc, View::rows(0, n)),
                    (&a, View::rows(0, k)),
                    (&b, View::rows(0, n)),
                    2.0,
                    true,
                    threads,
                );
                // |a|, |b| ≤ 1: each sum is off by at most k ulps of k, whatever the order.
                let tol = k as f32 * k as f32 * f32::EPSILON;
                for ((x, y), e) in c.iter().zip(&acc).zip(&expected) {
                    assert!((x - e).abs() <= tol, "{name} {m}x{k}x{n}: {x} vs {e}");
                    assert!(
                        (y - (1.0 + 2.0 * e)).abs() <= 2.0 * tol + 1e-6,
                        "{name}: {y}"
                    );
                }
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
