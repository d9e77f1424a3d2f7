//! Single-threaded kernels over a block of rows; the parent module runs them on row chunks
//! across the rayon pool.
//!
//! Each kernel runs inside [`simd`], compiled for the best instruction set the CPU has, and
//! is written with `for` loops: `Iterator::for_each` and friends lower to `fold`, which the
//! compiler may keep out of line, and an out-of-line function loses the AVX-512 target the
//! dispatch compiled the caller for (it measured as a scalar softmax taking 7% of a forward).
//! The softmax's exponentials are written on pulp's vector types instead, for its reductions.

use pulp::Simd;

/// The element-wise function applied after a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    /// Exact GELU, `torch.nn.functional.gelu`.
    GeluErf,
    /// Tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
    /// `min(max(x, 0), 6)`, the mobile networks' ReLU6.
    Relu6,
    /// `x · σ(x)`.
    Silu,
    /// `x · σ(1.702 x)`, CLIP's activation.
    QuickGelu,
}

/// Runs `f` compiled for the best instruction set this CPU has (AVX-512, AVX2+FMA or
/// baseline), so plain loops inside it auto-vectorise wide. Safe: pulp checks the CPU.
#[inline(always)]
pub(super) fn simd<R>(f: impl FnOnce() -> R) -> R {
    glassbox_data::simd::arch().dispatch(f)
}

/// An element-wise loop written once and run with each activation as an inlinable closure
/// by [`with_act`].
trait ActLoop {
    fn run(self, act: impl Fn(f32) -> f32);
}

/// Runs `job` with `act`'s function: one monomorphised, vectorised loop per activation (a
/// `match` inside the loop would not vectorise).
#[inline(always)]
fn with_act(act: Act, job: impl ActLoop) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    match act {
        Act::Identity => job.run(|v| v),
        Act::GeluErf => job.run(|v| 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))),
        Act::GeluTanh => {
            job.run(|v| 0.5 * v * (1.0 + tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v))))
        }
        Act::Relu => job.run(|v| v.max(0.0)),
        Act::Relu6 => job.run(|v| v.clamp(0.0, 6.0)),
        Act::Silu => job.run(|v| v * sigmoid(v)),
        Act::QuickGelu => job.run(|v| v * sigmoid(1.702 * v)),
    }
}

/// `x = act(x + bias)` on every row (`bias.len()` wide); `act(x)` when `bias` is empty.
pub fn bias_act(x: &mut [f32], bias: &[f32], act: Act) {
    with_act(act, BiasAct { x, bias })
}

struct BiasAct<'a> {
    x: &'a mut [f32],
    bias: &'a [f32],
}

impl ActLoop for BiasAct<'_> {
    #[inline(always)]
    fn run(self, act: impl Fn(f32) -> f32) {
        let (x, bias) = (self.x, self.bias);
        simd(
            #[inline(always)]
            || {
                if bias.is_empty() {
                    for v in x.iter_mut() {
                        *v = act(*v);
                    }
                    return;
                }
                for row in x.chunks_exact_mut(bias.len()) {
                    for (v, b) in row.iter_mut().zip(bias) {
                        *v = act(*v + b);
                    }
                }
            },
        )
    }
}

/// `grad *= act'(pre)` element-wise: the backward of an activation at its pre-activation.
pub fn mul_act_derivative(grad: &mut [f32], pre: &[f32], act: Act) {
    const C: f32 = 0.797_884_6; // √(2/π)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let job = ActDerivative { grad, pre };
    match act {
        Act::Identity => {}
        Act::GeluErf => job.run(|u| {
            let cdf = 0.5 * (1.0 + erf(u * std::f32::consts::FRAC_1_SQRT_2));
            u.mul_add(INV_SQRT_2PI * exp_nonpositive(-0.5 * u * u), cdf)
        }),
        Act::GeluTanh => job.run(|u| {
            let t = tanh(C * (u + 0.044_715 * u * u * u));
            0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * C * (1.0 + 3.0 * 0.044_715 * u * u)
        }),
        Act::Relu => job.run(|u| if u > 0.0 { 1.0 } else { 0.0 }),
        Act::Relu6 => job.run(|u| if u > 0.0 && u < 6.0 { 1.0 } else { 0.0 }),
        Act::Silu => job.run(|u| {
            let s = sigmoid(u);
            s * (1.0 + u * (1.0 - s))
        }),
        Act::QuickGelu => job.run(|u| {
            let s = sigmoid(1.702 * u);
            s * (1.0 + 1.702 * u * (1.0 - s))
        }),
    }
}

struct ActDerivative<'a> {
    grad: &'a mut [f32],
    pre: &'a [f32],
}

impl ActLoop for ActDerivative<'_> {
    #[inline(always)]
    fn run(self, derivative: impl Fn(f32) -> f32) {
        let (grad, pre) = (self.grad, self.pre);
        simd(
            #[inline(always)]
            || {
                for (g, &u) in grad.iter_mut().zip(pre) {
                    *g *= derivative(u);
                }
            },
        )
    }
}

/// erf(x) as a branch-free rational approximation on [-4, 4] (outside, erf is ±1 in f32),
/// which the compiler vectorises. Max abs error vs libm's `erff` < 1e-6 (tested); the same
/// form as Eigen's and XLA's float erf.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    // Fused multiply-adds: one instruction per step inside `simd` (Rust does not contract a
    // plain `a * b + c` into one).
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906e-4);
    p = x2.mul_add(p, -2.954_600_1e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329e-3);
    q = x2.mul_add(q, -1.426_474e-2);
    x * p / q
}

/// `x = LayerNorm(x + bias + residual)` row by row (`bias` and `residual` may be empty;
/// `residual` has `x`'s shape). Two-pass mean and variance (of deviations), as PyTorch
/// computes them.
pub fn layer_norm(
    x: &mut [f32],
    bias: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let width = gamma.len();
    let bias = (!bias.is_empty()).then_some(bias);
    simd(
        #[inline(always)]
        || {
            if residual.is_empty() {
                for row in x.chunks_exact_mut(width) {
                    normalise_row(row, bias, None, gamma, beta, eps);
                }
            } else {
                for (row, res) in x.chunks_exact_mut(width).zip(residual.chunks_exact(width)) {
                    normalise_row(row, bias, Some(res), gamma, beta, eps);
                }
            }
        },
    )
}

#[inline(always)]
fn normalise_row(
    row: &mut [f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    if let Some(b) = bias {
        for (v, b) in row.iter_mut().zip(b) {
            *v += b;
        }
    }
    if let Some(res) = residual {
        for (v, r) in row.iter_mut().zip(res) {
            *v += r;
        }
    }
    // Statistics in f64 (8 lanes still vectorise): residual streams carry values in the
    // hundreds, where f32 sums drift past the 1e-4 parity tolerance.
    let width = row.len() as f64;
    let mean = lanes(row, 0.0, |acc, v| acc + v as f64, |a, b| a + b) / width;
    let var = lanes(
        row,
        0.0,
        |acc, v| acc + (v as f64 - mean).powi(2),
        |a, b| a + b,
    ) / width;
    let inv = 1.0 / (var + eps as f64).sqrt();
    let (mean, inv) = (mean as f32, inv as f32);
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// A reduction over 16 independent lanes, so it vectorises (a plain fold is one serial chain
/// of dependent adds, bound by instruction latency), then across the lanes.
#[inline(always)]
fn lanes<A: Copy>(x: &[f32], init: A, step: impl Fn(A, f32) -> A, merge: impl Fn(A, A) -> A) -> A {
    const L: usize = 16;
    let mut acc = [init; L];
    let chunks = x.chunks_exact(L);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..L {
            acc[i] = step(acc[i], chunk[i]);
        }
    }
    let mut total = init;
    for a in acc {
        total = merge(total, a);
    }
    for &v in tail {
        total = step(total, v);
    }
    total
}

/// `row = e^(row − max(row))` in place, on pulp's vector types (called inside a SIMD
/// dispatch); returns the sum, leaving the division by it to the caller.
///
/// Explicit vectors rather than 16 scalar lanes left to the auto-vectoriser, the max and the
/// sum ending in `reduce_*` shuffle trees: inside MiniLM's attention the softmax went from
/// 1.45 to 1.05–1.15 ms per thread per layer.
#[inline(always)]
pub(super) fn exp_shifted_row<S: Simd>(simd: S, row: &mut [f32]) -> f32 {
    let (vecs, tail) = S::as_mut_simd_f32s(row);
    let mut m = simd.splat_f32s(f32::NEG_INFINITY);
    for v in vecs.iter() {
        m = simd.max_f32s(m, *v);
    }
    let max = tail.iter().fold(simd.reduce_max_f32s(m), |a, &b| a.max(b));
    let shift = simd.splat_f32s(max);
    let mut acc = simd.splat_f32s(0.0);
    for v in vecs.iter_mut() {
        *v = exp_nonpositive_simd(simd, simd.sub_f32s(*v, shift));
        acc = simd.add_f32s(acc, *v);
    }
    let mut sum = simd.reduce_sum_f32s(acc);
    for v in tail.iter_mut() {
        *v = exp_nonpositive(*v - max);
        sum += *v;
    }
    sum
}

/// [`exp_nonpositive`] on a vector, step for step.
#[inline(always)]
fn exp_nonpositive_simd<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    const SHIFT: f32 = 12_582_912.0;
    let x = simd.max_f32s(x, simd.splat_f32s(-87.0));
    let c = |v: f32| simd.splat_f32s(v);
    let shifted = simd.mul_add_f32s(x, c(std::f32::consts::LOG2_E), c(SHIFT));
    let n = simd.sub_f32s(shifted, c(SHIFT));
    let r = simd.mul_add_f32s(n, c(-0.693_359_4), x);
    let r = simd.mul_add_f32s(n, c(2.121_944_4e-4), r);
    let mut p = c(1.987_569_1e-4);
    for k in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = simd.mul_add_f32s(p, r, c(k));
    }
    let e_r = simd.mul_add_f32s(p, simd.mul_f32s(r, r), simd.add_f32s(r, c(1.0)));
    let bits = simd.transmute_u32s_f32s(shifted);
    let biased = simd.add_u32s(
        simd.sub_u32s(bits, simd.splat_u32s(SHIFT.to_bits())),
        simd.splat_u32s(127),
    );
    let two_n = simd.wrapping_dyn_shl_u32s(biased, simd.splat_u32s(23));
    simd.mul_f32s(e_r, simd.transmute_f32s_u32s(two_n))
}

/// `x = RMSNorm(x) = x / √(mean(x²) + ε) · gamma` row by row, the mean in f64 like
/// [`layer_norm`]'s statistics.
pub fn rms_norm(x: &mut [f32], gamma: &[f32], eps: f32) {
    simd(
        #[inline(always)]
        || {
            for row in x.chunks_exact_mut(gamma.len()) {
                let sq = lanes(
                    row,
                    0.0,
                    |acc, v| acc + (v as f64) * (v as f64),
                    |a, b| a + b,
                );
                let inv = (1.0 / (sq / row.len() as f64 + eps as f64).sqrt()) as f32;
                for (v, g) in row.iter_mut().zip(gamma) {
                    *v = *v * inv * g;
                }
            }
        },
    )
}

/// `gate = act(gate) · up`, element by element (the gated MLPs' hidden units).
pub fn act_mul(gate: &mut [f32], up: &[f32], act: Act) {
    with_act(act, Gated { gate, up })
}

struct Gated<'a> {
    gate: &'a mut [f32],
    up: &'a [f32],
}

impl ActLoop for Gated<'_> {
    #[inline(always)]
    fn run(self, act: impl Fn(f32) -> f32) {
        let (gate, up) = (self.gate, self.up);
        simd(
            #[inline(always)]
            || {
                for (g, u) in gate.iter_mut().zip(up) {
                    *g = act(*g) * u;
                }
            },
        )
    }
}

/// Rotary position embedding in place, `rotate_half` convention: in each of `heads` blocks of
/// `dim` columns starting at column `first` of rows `stride` wide, the pairs `(i, i + half)`
/// for `i < half` turn by the angle of row `r`: `cos[positions[r] · half + i]` (likewise `sin`).
/// Columns past `2 · half` in each head are left alone (partial rotary).
pub fn rotate(
    rows: &mut [f32],
    positions: &[usize],
    (first, heads, dim, stride): (usize, usize, usize, usize),
    half: usize,
    cos: &[f32],
    sin: &[f32],
) {
    simd(
        #[inline(always)]
        || {
            for (row, &p) in rows.chunks_exact_mut(stride).zip(positions) {
                let (c, s) = (
                    &cos[p * half..(p + 1) * half],
                    &sin[p * half..(p + 1) * half],
                );
                for h in 0..heads {
                    let head = &mut row[first + h * dim..first + h * dim + 2 * half];
                    let (x1, x2) = head.split_at_mut(half);
                    for i in 0..half {
                        let (a, b) = (x1[i], x2[i]);
                        x1[i] = a * c[i] + -b * s[i];
                        x2[i] = b * c[i] + a * s[i];
                    }
                }
            }
        },
    )
}

/// σ(x) = 1 / (1 + e^−x) from e^−|x| (so the exponent never overflows), branch-free: the
/// library `exp` is a call per element, which kept SiLU and QuickGELU scalar (3.5 ns per
/// element against 0.5 for the erf GELU).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let inv = 1.0 / (1.0 + e);
    if x >= 0.0 {
        inv
    } else {
        e * inv
    }
}

/// `x = cap · tanh(x / cap)` along a row (Gemma-2's soft-capped attention scores); called
/// inside a SIMD dispatch, where the branch-free [`tanh`] vectorises.
#[inline(always)]
pub(super) fn softcap_row(row: &mut [f32], cap: f32) {
    let inv = 1.0 / cap;
    for v in row.iter_mut() {
        *v = cap * tanh(*v * inv);
    }
}

/// tanh x = sign(x) · (1 − e^−2|x|) / (1 + e^−2|x|), branch-free (the library `tanh` is a call
/// per element: 12 ns, 25× the erf GELU). Within 2e-7 of `f32::tanh` in absolute terms
/// (tested); near 0 the quotient loses relative precision, which GELU's `1 + tanh` does
/// not see.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let e = exp_nonpositive(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// e^x for x ≤ 0, branch-free so it vectorises: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6
/// polynomial for e^r (Cephes' expf coefficients) and 2^n built from the exponent bits.
/// Relative error within a few ulp of `f32::exp` (tested); results below e^-87 flush to ~0.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    let x = x.max(-87.0);
    // Round to nearest by the 1.5·2^23 trick (|x·log2 e| < 2^22 here): no libm call. The
    // shifted value's low mantissa bits then hold n as an integer, read below: an `as i32`
    // cast would saturate, and its NaN and range checks compile to one scalar conversion
    // per lane (it measured as a scalar softmax, 60% of attention).
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x.mul_add(std::f32::consts::LOG2_E, SHIFT);
    let n = shifted - SHIFT;
    // Fused multiply-adds (one instruction inside `simd` on every CPU with AVX2 or NEON):
    // the polynomial is a chain of dependent steps, bound by their latency.
    let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let e_r = p.mul_add(r * r, r + 1.0);
    // 2^n: n + 127 in the exponent field; n ≥ −126 since x ≥ −87, so it is a normal float.
    let biased_exponent = shifted
        .to_bits()
        .wrapping_sub(SHIFT.to_bits())
        .wrapping_add(127);
    e_r * f32::from_bits(biased_exponent << 23)
}

#[cfg(test)]
#[path = "rows_tests.rs"]
mod tests;
