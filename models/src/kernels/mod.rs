//! CPU kernels for the fast inference path: matrix multiplies through `gemm` into reused
//! buffers, and fused, multi-threaded element-wise work (bias + GELU, residual + LayerNorm,
//! scaled softmax attention). Activations are *packed*: the tokens of every example one after
//! another, no padding, `offsets[b]..offsets[b + 1]` being example `b`'s rows.

pub mod gemm;

use self::gemm::{matmul, View};
use rayon::prelude::*;

/// Rows per parallel task for row-wise kernels.
const ROWS_PER_TASK: usize = 16;

pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// `dst[rows×out] = x[rows×in] · wᵀ` (no bias: callers fuse it into the next kernel), with `w`
/// in the `[out, in]` layout of PyTorch's `nn.Linear`.
pub fn matmul_wt(x: &[f32], in_dim: usize, w: &[f32], out_dim: usize, dst: &mut [f32]) {
    let rows = x.len() / in_dim;
    debug_assert_eq!(dst.len(), rows * out_dim);
    matmul(
        (rows, in_dim, out_dim),
        dst,
        View::rows(0, out_dim),
        x,
        View::rows(0, in_dim),
        w,
        View::transposed(0, in_dim),
        1.0,
        false,
        threads(),
    );
}

/// `dst[rows×in] = dy[rows×out] · w` with `w` in the `[out, in]` layout: the input gradient
/// of [`matmul_wt`].
pub fn matmul_w(dy: &[f32], out_dim: usize, w: &[f32], in_dim: usize, dst: &mut [f32]) {
    let rows = dy.len() / out_dim;
    debug_assert_eq!(dst.len(), rows * in_dim);
    matmul(
        (rows, out_dim, in_dim),
        dst,
        View::rows(0, in_dim),
        dy,
        View::rows(0, out_dim),
        w,
        View::rows(0, in_dim),
        1.0,
        false,
        threads(),
    );
}

/// `x += bias` on every row.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, |v| v);
}

/// Runs `f` compiled for the best instruction set this CPU has (AVX-512, AVX2+FMA or
/// baseline), so plain loops inside it auto-vectorise wide. Safe: pulp checks the CPU.
#[inline(always)]
fn simd<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// `x = act(x + bias)` row by row, for an element-wise activation.
#[inline(always)]
fn bias_act(x: &mut [f32], bias: &[f32], act: impl Fn(f32) -> f32 + Sync) {
    let width = bias.len();
    x.par_chunks_mut(width * ROWS_PER_TASK).for_each(|c| {
        simd(
            #[inline(always)]
            || {
                c.chunks_exact_mut(width)
                    .for_each(|row| row.iter_mut().zip(bias).for_each(|(v, b)| *v = act(*v + b)))
            },
        )
    });
}

/// `x = gelu(x + bias)`, exact (erf) GELU as `torch.nn.functional.gelu`.
pub fn bias_gelu_erf(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, |v| {
        0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
    });
}

/// erf(x) as a branch-free rational approximation on [-4, 4] (outside, erf is ±1 in f32),
/// which the compiler vectorises. Max abs error vs libm's `erff` < 1e-6 (tested); the same
/// form as Eigen's and XLA's float erf.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906e-4;
    p = x2 * p + -2.954_600_1e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

/// `x = gelu_tanh(x + bias)` (`gelu_new`, `gelu_pytorch_tanh`).
pub fn bias_gelu_tanh(x: &mut [f32], bias: &[f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    bias_act(x, bias, |v| {
        0.5 * v * (1.0 + (C * (v + 0.044715 * v * v * v)).tanh())
    });
}

/// `x = relu(x + bias)`.
/// `x = silu(x + bias)` (`x · σ(x)`).
pub fn bias_silu(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, |v| v / (1.0 + (-v).exp()));
}

/// `x = quick_gelu(x + bias)` (`x · σ(1.702 x)`, CLIP's activation).
pub fn bias_quick_gelu(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, |v| v / (1.0 + (-1.702 * v).exp()));
}

pub fn bias_relu(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, |v| v.max(0.0));
}

/// `x = min(max(x + bias, 0), 6)`, the mobile networks' ReLU6.
pub fn bias_relu6(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, |v| v.clamp(0.0, 6.0));
}

/// `x = LayerNorm(x + bias + residual)` row by row (`bias` and `residual` may be empty).
/// Two-pass mean and variance (of deviations), as PyTorch computes them.
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
    let body =
        |row: &mut [f32], res: Option<&[f32]>| normalise_row(row, bias, res, gamma, beta, eps);
    if residual.is_empty() {
        x.par_chunks_mut(width * ROWS_PER_TASK).for_each(|c| {
            simd(
                #[inline(always)]
                || c.chunks_exact_mut(width).for_each(|row| body(row, None)),
            )
        });
    } else {
        x.par_chunks_mut(width * ROWS_PER_TASK)
            .zip(residual.par_chunks(width * ROWS_PER_TASK))
            .for_each(|(c, r)| {
                simd(
                    #[inline(always)]
                    || {
                        c.chunks_exact_mut(width)
                            .zip(r.chunks_exact(width))
                            .for_each(|(row, res)| body(row, Some(res)))
                    },
                )
            });
    }
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
        row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
    }
    if let Some(res) = residual {
        row.iter_mut().zip(res).for_each(|(v, r)| *v += r);
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
    let mut total = acc.into_iter().fold(init, &merge);
    for &v in tail {
        total = step(total, v);
    }
    total
}

/// Splits a packed buffer of `width`-wide rows into one mutable slice per example.
pub fn split_examples<'a>(
    mut buf: &'a mut [f32],
    offsets: &[usize],
    width: usize,
) -> Vec<&'a mut [f32]> {
    let mut parts = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        let (head, tail) = buf.split_at_mut((w[1] - w[0]) * width);
        parts.push(head);
        buf = tail;
    }
    parts
}

/// Where each example's attention probabilities start in a buffer of `heads × len × len`
/// blocks per example (for [`attention`]'s `probs`).
pub fn attention_prob_offsets(offsets: &[usize], heads: usize) -> Vec<usize> {
    let mut out = vec![0];
    for w in offsets.windows(2) {
        let len = w[1] - w[0];
        out.push(out.last().copied().unwrap_or(0) + heads * len * len);
    }
    out
}

/// Multi-head self-attention over packed `qkv` rows (`[q | k | v]`, each `heads × head_dim`
/// wide) into `z` (`heads × head_dim` wide). Each example attends only to its own tokens, so
/// no mask is needed: padding does not exist here. With `probs` (sized by
/// [`attention_prob_offsets`]) the softmax probabilities are kept, for a backward pass.
pub fn attention(
    qkv: &[f32],
    offsets: &[usize],
    heads: usize,
    head_dim: usize,
    z: &mut [f32],
    probs: Option<&mut [f32]>,
) {
    let h = heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let z_parts = split_examples(z, offsets, h);
    let prob_parts: Vec<Option<&mut [f32]>> = match probs {
        Some(p) => split_examples(p, &attention_prob_offsets(offsets, heads), 1)
            .into_iter()
            .map(Some)
            .collect(),
        None => z_parts.iter().map(|_| None).collect(),
    };
    z_parts
        .into_par_iter()
        .zip(prob_parts)
        .enumerate()
        .for_each(|(b, (z_b, mut kept))| {
            let (start, end) = (offsets[b], offsets[b + 1]);
            let len = end - start;
            let rows = &qkv[start * 3 * h..end * 3 * h];
            let mut local = Vec::new();
            for head in 0..heads {
                let col = head * head_dim;
                let scores: &mut [f32] = match kept.as_deref_mut() {
                    Some(p) => &mut p[head * len * len..(head + 1) * len * len],
                    None => {
                        local.resize(len * len, 0.0);
                        &mut local
                    }
                };
                // scores = scale · Q Kᵀ
                matmul(
                    (len, head_dim, len),
                    scores,
                    View::rows(0, len),
                    rows,
                    View {
                        offset: col,
                        row_stride: 3 * h,
                        col_stride: 1,
                    },
                    rows,
                    View {
                        offset: h + col,
                        row_stride: 1,
                        col_stride: 3 * h,
                    },
                    scale,
                    false,
                    1,
                );
                simd(
                    #[inline(always)]
                    || scores.chunks_exact_mut(len).for_each(softmax),
                );
                // z_head = P V
                matmul(
                    (len, len, head_dim),
                    z_b,
                    View {
                        offset: col,
                        row_stride: h,
                        col_stride: 1,
                    },
                    scores,
                    View::rows(0, len),
                    rows,
                    View {
                        offset: 2 * h + col,
                        row_stride: 3 * h,
                        col_stride: 1,
                    },
                    1.0,
                    false,
                    1,
                );
            }
        });
}

#[inline(always)]
fn softmax(row: &mut [f32]) {
    let max = lanes(row, f32::NEG_INFINITY, f32::max, f32::max);
    row.iter_mut().for_each(|v| *v = exp_nonpositive(*v - max));
    let sum = lanes(row, 0.0, |a, v| a + v, |a, b| a + b);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// e^x for x ≤ 0, branch-free so it vectorises: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6
/// polynomial for e^r (Cephes' expf coefficients) and 2^n built from the exponent bits.
/// Relative error within a few ulp of `f32::exp` (tested); results below e^-87 flush to ~0.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    let x = x.max(-87.0);
    // Round to nearest by the 1.5·2^23 trick (|x·log2 e| < 2^22 here): no libm call.
    const SHIFT: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std() {
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let (a, b) = (exp_nonpositive(x), x.exp());
            assert!((a - b).abs() <= b * 4e-7 + 1e-37, "exp({x}): {a} vs {b}");
        }
    }

    #[test]
    fn fast_erf_matches_libm() {
        let worst = (-60_000..=60_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| (erf(x) - candle_core::cpu::erf::erf_f32(x)).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "max abs error {worst}");
    }

    #[test]
    fn layer_norm_normalises() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        layer_norm(&mut x, &[], &[], &[1.0; 4], &[0.5; 4], 1e-12);
        let row = &x[..4];
        let mean: f32 = row.iter().sum::<f32>() / 4.0;
        assert!((mean - 0.5).abs() < 1e-6);
        assert!((row[3] - row[0] - 2.0 * 1.5 / 1.25f32.sqrt()).abs() < 1e-5);
        assert!(
            x[4..].iter().all(|v| (v - 0.5).abs() < 1e-6),
            "constant rows map to beta"
        );
    }

    #[test]
    fn attention_of_one_token_returns_its_value() {
        // One example of one token: softmax over a single key is 1, so z = v.
        let (heads, dim) = (2, 3);
        let qkv: Vec<f32> = (0..18).map(|v| v as f32).collect();
        let mut z = vec![0.0; 6];
        attention(&qkv, &[0, 1], heads, dim, &mut z, None);
        assert_eq!(z, qkv[12..18].to_vec());
    }

    #[test]
    fn softmax_sums_to_one_and_is_stable() {
        let mut row = vec![1000.0, 1001.0, 999.0];
        softmax(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[1] > row[0] && row[0] > row[2]);
    }
}
