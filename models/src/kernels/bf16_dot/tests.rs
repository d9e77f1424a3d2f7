//! Tests of the bf16 product kernels (and `gated_into`) against their definitions.
use super::*;

fn values(n: usize, seed: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + seed) * 0.7548).sin() * 1.5)
        .collect()
}

/// The product in f64 of the bf16-rounded inputs, and the sum of |products| that bounds
/// the f32 summation error.
fn reference(x: &[f32], w: &[u16], rows: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; rows * n];
    let mut scale = vec![0.0; rows * n];
    for i in 0..rows {
        for j in 0..n {
            for p in 0..k {
                let a = f64::from(round(x[i * k + p]));
                let b = f64::from(f32::from_bits(u32::from(w[j * k + p]) << 16));
                out[i * n + j] += a * b;
                scale[i * n + j] += (a * b).abs();
            }
        }
    }
    (out, scale)
}

/// Which kernel [`check`] runs.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// Whatever `matmul_wt` picks on this CPU (AMX where it has it and `k % 32 == 0`).
    Dispatch,
    /// The `VDPBF16PS` register tiles, where the CPU has them.
    Vector,
    /// The bf16-rounded f32 GEMM.
    F32,
}

fn check(rows: usize, k: usize, n: usize, route: Route) {
    if matches!(route, Route::Vector) && !(native() && k.is_multiple_of(2)) {
        return;
    }
    let x = values(rows * k, 1.0);
    let w: Vec<u16> = values(n * k, 7.0).iter().map(|&v| round_bits(v)).collect();
    let (expected, scale) = reference(&x, &w, rows, k, n);
    // Columns 3.. of rows 3 + n wide, accumulated onto 0.5 to check both write modes.
    let stride = n + 3;
    let mut packed = Packed::default();
    packed.fill(&x, k);
    for accumulate in [false, true] {
        let mut dst = vec![0.5f32; rows * stride];
        let mut scratch = Vec::new();
        match route {
            Route::F32 => f32_route(&x, &w, n, &mut dst, (3, stride), accumulate, &mut scratch),
            Route::Dispatch => matmul_wt(
                &packed,
                &x,
                &w,
                n,
                &mut dst,
                (3, stride),
                accumulate,
                &mut scratch,
            ),
            #[cfg(target_arch = "x86_64")]
            Route::Vector => {
                let words: Vec<u32> = bytemuck::pod_collect_to_vec(&w);
                // SAFETY: checked on entry: `native` (the CPU's features) and an even `k`.
                unsafe { tiles(&packed, &words, n, &mut dst, (3, stride), accumulate) };
            }
            #[cfg(not(target_arch = "x86_64"))]
            Route::Vector => unreachable!("checked on entry"),
        }
        for i in 0..rows {
            assert_eq!(
                &dst[i * stride..i * stride + 3],
                &[0.5; 3],
                "columns before"
            );
            for j in 0..n {
                let got = f64::from(dst[i * stride + 3 + j]) - if accumulate { 0.5 } else { 0.0 };
                // f32 summation of k products (two roundings per pair step at most), and
                // the 0.5 added back in f32.
                let bound = 2.0 * k as f64 * f64::from(f32::EPSILON) * scale[i * n + j] + 1e-7;
                let err = (got - expected[i * n + j]).abs();
                assert!(
                    err <= bound,
                    "({i},{j}) of {rows}x{k}x{n}: error {err} > {bound}"
                );
            }
        }
    }
}

/// `gated_into` packs exactly what the products written out, `act_mul` and `fill` pack, on
/// each kernel (each checked against its own products): two panels (the second partial), one
/// weight block, sums long enough for several blocks (8,192 inputs), 100 neurons (not whole
/// AMX tiles: on AMX the dispatch declines, the register tiles' last block has 4 rows) and
/// 100 inputs (not whole AMX tiles: the register tiles run both products), both activations.
#[test]
fn gated_packing_equals_the_products_activated_then_packed() {
    for (rows, k, n) in [(70, 96, 64), (70, 8192, 96), (70, 8192, 100), (70, 100, 64)] {
        for route in [Route::Dispatch, Route::Vector] {
            check_gated(rows, k, n, route);
        }
    }
}

fn check_gated(rows: usize, k: usize, n: usize, route: Route) {
    use super::super::{act_mul, Act};
    let x = values(rows * k, 1.0);
    let round_all = |v: Vec<f32>| -> Vec<u16> { v.iter().map(|&v| round_bits(v)).collect() };
    let (gate, up) = (round_all(values(n * k, 7.0)), round_all(values(n * k, 3.0)));
    let mut packed = Packed::default();
    packed.fill(&x, k);
    for act in [Act::GeluTanh, Act::Silu] {
        let mut fused = Packed::default();
        // Stale contents first: every word must be rewritten.
        fused.fill(&values(rows * n, 9.0), n);
        let (mut g, mut u) = (vec![0f32; rows * n], vec![0f32; rows * n]);
        match route {
            Route::Dispatch => {
                if !gated_into(&packed, &gate, &up, n, act, &mut fused) {
                    // Only where no bf16 kernel runs, or AMX takes the inputs but not the
                    // neurons (the products must come from the kernel `matmul_wt` uses).
                    #[cfg(target_arch = "x86_64")]
                    assert!(
                        !native() || (amx::takes(k) && !amx::takes(n)),
                        "{rows}x{k}x{n}"
                    );
                    return;
                }
                let mut scratch = Vec::new();
                matmul_wt(&packed, &x, &gate, n, &mut g, (0, n), false, &mut scratch);
                matmul_wt(&packed, &x, &up, n, &mut u, (0, n), false, &mut scratch);
            }
            #[cfg(target_arch = "x86_64")]
            Route::Vector if native() => {
                let words = |w: &[u16]| -> Vec<u32> { bytemuck::pod_collect_to_vec(w) };
                let (gw, uw) = (words(&gate), words(&up));
                fused.reset(rows, n);
                // SAFETY: `native` checked the CPU's features; the weights hold `n` rows of
                // `k / 2` words.
                unsafe {
                    tiles_gated(&packed, &gw, &uw, n, act, &mut fused);
                    tiles(&packed, &gw, n, &mut g, (0, n), false);
                    tiles(&packed, &uw, n, &mut u, (0, n), false);
                }
            }
            _ => return,
        }
        act_mul(&mut g, &u, act);
        let mut expected = Packed::default();
        expected.fill(&g, n);
        let bits = |p: &Packed| -> Vec<u32> { bytemuck::cast_slice(&p.lanes).to_vec() };
        assert_eq!((fused.rows, fused.pairs), (expected.rows, expected.pairs));
        assert!(
            bits(&fused) == bits(&expected),
            "{rows}x{k}x{n} {act:?} {route:?}"
        );
    }
}

#[test]
fn rounds_to_nearest_even_like_half() {
    let specials = [
        0.0f32,
        -0.0,
        1.0,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-40,
        f32::INFINITY,
    ];
    let ties = [f32::from_bits(0x3F80_8000), f32::from_bits(0x3F81_8000)];
    let all = values(5000, 0.3).into_iter().chain(specials).chain(ties);
    for v in all.flat_map(|v| [v, -v]) {
        assert_eq!(round_bits(v), half::bf16::from_f32(v).to_bits(), "{v:e}");
    }
    assert!(round(f32::NAN).is_nan());
}

#[test]
fn products_equal_the_bf16_rounded_product_on_either_route() {
    // Panels and tiles with ragged edges (70 tokens, 13 columns), a long sum, a single
    // token, an odd input width (which takes the f32 route), and a sum long enough that
    // the weight rows come in blocks (30 rows each at 4,096 pairs on the register tiles,
    // 32 on AMX's: 45 = 32 + 13) over three panels; on AMX (inputs a multiple of 32),
    // three 2 × 2 blocks and 4 rows on the register tile in one weight block over four
    // panels (200 × 96 × 100), and a width below one block (64 × 512 × 6).
    let cases = [
        (70, 38, 13),
        (64, 512, 6),
        (1, 10, 7),
        (130, 37, 5),
        (130, 8192, 45),
        (200, 96, 100),
    ];
    for (rows, k, n) in cases {
        for route in [Route::Dispatch, Route::Vector, Route::F32] {
            check(rows, k, n, route);
        }
    }
}
