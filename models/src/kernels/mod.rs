//! CPU kernels for the fast inference path: matrix multiplies through `gemm` into reused
//! buffers, and fused, multi-threaded element-wise work (bias + GELU, residual + LayerNorm,
//! scaled softmax attention). Activations are *packed*: the tokens of every example one after
//! another, no padding, `offsets[b]..offsets[b + 1]` being example `b`'s rows.

mod attend;
mod attention;
pub mod bf16_dot;
pub mod gemm;
pub mod input_grad_linear;
mod recycle;
mod rows;
pub mod skinny;

pub use self::attention::{
    attention, attention_after_prefix, attention_prepared, attention_prob_offsets, split_examples,
    Heads, Prepare,
};
use self::gemm::{matmul, View};
pub use self::recycle::Recycler;
pub use self::rows::{erf, Act};
use rayon::prelude::*;

/// Rows per parallel task for row-wise kernels.
const ROWS_PER_TASK: usize = 16;
/// Elements per parallel task for purely element-wise kernels.
const ELEMENTS_PER_TASK: usize = 16 * 1024;

pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Fewer floats than this (1 MB) are zeroed on the calling thread, as `vec!` does: such a fill
/// is a small share of the work around it, and the buffers that cost time are 20–80 MB.
const PARALLEL_ZEROS_FROM: usize = 1 << 18;

/// `n` zeros, written by the pool's threads. `vec![0.0; n]` zeroes on the calling thread:
/// glibc's `calloc` clears reused heap memory with one `memset`, and since every block is served
/// from the heap (`pipeline/src/allocator.rs`) the image models' fresh activation and gradient
/// buffers (up to 77 MB at batch 16) were cleared one core at a time while the other waited —
/// 11% of integrated gradients' samples on EfficientNet-Lite0.
pub fn zeros(n: usize) -> Vec<f32> {
    if n < PARALLEL_ZEROS_FROM || threads() <= 1 {
        return vec![0.0; n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0f32, n));
    v
}

/// `dst[rows×out] = x[rows×in] · wᵀ` (no bias: callers fuse it into the next kernel), with `w`
/// in the `[out, in]` layout of PyTorch's `nn.Linear`.
pub fn matmul_wt(x: &[f32], in_dim: usize, w: &[f32], out_dim: usize, dst: &mut [f32]) {
    let (layout, cols) = (WeightLayout::OutIn, (0, out_dim));
    matmul_into(x, in_dim, w, layout, out_dim, dst, cols, false);
}

/// `dst[rows×out] = x[rows×in] · w` with `w` in the `[in, out]` layout: a `Linear` weight
/// transposed once at load, which `gemm` runs 0–5% faster than the `[out, in]` view (its
/// microkernel then broadcasts weights from one row instead of six).
pub fn matmul_in_out(x: &[f32], in_dim: usize, w: &[f32], out_dim: usize, dst: &mut [f32]) {
    let (layout, cols) = (WeightLayout::InOut, (0, out_dim));
    matmul_into(x, in_dim, w, layout, out_dim, dst, cols, false);
}

/// A row-major `[rows, cols]` matrix transposed to `[cols, rows]`.
pub fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    debug_assert_eq!(w.len(), rows * cols);
    let mut t = vec![0f32; w.len()];
    for (r, row) in w.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

/// How a projection's weight matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[out, in]`, PyTorch's `nn.Linear`.
    OutIn,
    /// `[in, out]`, GPT-2's `Conv1D`.
    InOut,
}

/// Columns `first .. first + out_dim` of `dst` (rows `stride` wide) `= x[rows×in] · W`, or
/// `+=` with `accumulate`; `W` is stored as `layout` says.
#[allow(clippy::too_many_arguments)]
pub fn matmul_into(
    x: &[f32],
    in_dim: usize,
    w: &[f32],
    layout: WeightLayout,
    out_dim: usize,
    dst: &mut [f32],
    (first, stride): (usize, usize),
    accumulate: bool,
) {
    let rows = x.len() / in_dim;
    debug_assert_eq!(dst.len(), rows * stride);
    // Without vector instructions (`GLASSBOX_SIMD=scalar`) the dot products run at 1 GFLOP/s,
    // and `gemm`'s register-blocked scalar kernels stay faster.
    let vectors = glassbox_data::simd::level() != glassbox_data::simd::SimdLevel::Scalar;
    if layout == WeightLayout::OutIn && rows <= skinny::MAX_ROWS && vectors {
        skinny::matmul_wt_rows(x, in_dim, w, out_dim, dst, (first, stride), accumulate);
        return;
    }
    let rhs = match layout {
        WeightLayout::OutIn => View::transposed(0, in_dim),
        WeightLayout::InOut => View::rows(0, out_dim),
    };
    matmul(
        (rows, in_dim, out_dim),
        dst,
        View {
            offset: first,
            row_stride: stride,
            col_stride: 1,
        },
        x,
        View::rows(0, in_dim),
        w,
        rhs,
        1.0,
        accumulate,
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
    bias_act(x, bias, Act::Identity);
}

/// `x = act(x + bias)` on every row, rows in parallel; `act(x)` when `bias` is empty.
pub fn bias_act(x: &mut [f32], bias: &[f32], act: Act) {
    let chunk = if bias.is_empty() {
        ELEMENTS_PER_TASK
    } else {
        bias.len() * ROWS_PER_TASK
    };
    x.par_chunks_mut(chunk)
        .for_each(|c| rows::bias_act(c, bias, act));
}

/// `grad *= act'(pre)` (an activation's backward), in parallel.
pub fn mul_act_derivative(grad: &mut [f32], pre: &[f32], act: Act) {
    debug_assert_eq!(grad.len(), pre.len());
    grad.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(pre.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(g, p)| rows::mul_act_derivative(g, p, act));
}

/// `x = gelu(x + bias)`, exact (erf) GELU as `torch.nn.functional.gelu`.
pub fn bias_gelu_erf(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, Act::GeluErf);
}

/// `x = gelu_tanh(x + bias)` (`gelu_new`, `gelu_pytorch_tanh`).
pub fn bias_gelu_tanh(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, Act::GeluTanh);
}

/// `x = silu(x + bias)` (`x · σ(x)`).
pub fn bias_silu(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, Act::Silu);
}

/// `x = quick_gelu(x + bias)` (`x · σ(1.702 x)`, CLIP's activation).
pub fn bias_quick_gelu(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, Act::QuickGelu);
}

/// `x = relu(x + bias)`.
pub fn bias_relu(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, Act::Relu);
}

/// `x = min(max(x + bias, 0), 6)`, the mobile networks' ReLU6.
pub fn bias_relu6(x: &mut [f32], bias: &[f32]) {
    bias_act(x, bias, Act::Relu6);
}

/// `x = RMSNorm(x) · gamma` row by row, rows in parallel.
pub fn rms_norm(x: &mut [f32], gamma: &[f32], eps: f32) {
    x.par_chunks_mut(gamma.len() * ROWS_PER_TASK)
        .for_each(|c| rows::rms_norm(c, gamma, eps));
}

/// [`rms_norm`] on columns `first .. first + width` of rows `stride` wide, in chunks of
/// `gamma.len()` (the whole block, or each head of it), rows in parallel.
pub fn rms_norm_columns(
    x: &mut [f32],
    (first, width, stride): (usize, usize, usize),
    gamma: &[f32],
    eps: f32,
) {
    debug_assert!(width.is_multiple_of(gamma.len()) && first + width <= stride);
    x.par_chunks_mut(stride * ROWS_PER_TASK).for_each(|c| {
        for row in c.chunks_exact_mut(stride) {
            rows::rms_norm(&mut row[first..first + width], gamma, eps);
        }
    });
}

/// `gate = act(gate) · up` (gated MLPs such as SwiGLU), in parallel.
pub fn act_mul(gate: &mut [f32], up: &[f32], act: Act) {
    gate.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(up.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(g, u)| rows::act_mul(g, u, act));
}

/// `x = LayerNorm(x + bias + residual)` row by row (`bias` and `residual` may be empty),
/// rows in parallel.
pub fn layer_norm(
    x: &mut [f32],
    bias: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let chunk = gamma.len() * ROWS_PER_TASK;
    if residual.is_empty() {
        x.par_chunks_mut(chunk)
            .for_each(|c| rows::layer_norm(c, bias, &[], gamma, beta, eps));
    } else {
        x.par_chunks_mut(chunk)
            .zip(residual.par_chunks(chunk))
            .for_each(|(c, r)| rows::layer_norm(c, bias, r, gamma, beta, eps));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both routes (the calling thread below the threshold, the pool above it, on a pool of
    /// several threads) give exactly `n` zeros, also for lengths that do not split evenly.
    #[test]
    fn zeros_are_n_zeros_on_either_route() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for n in [
            0,
            1,
            1000,
            PARALLEL_ZEROS_FROM - 1,
            PARALLEL_ZEROS_FROM,
            3 * PARALLEL_ZEROS_FROM + 7,
        ] {
            let v = pool.install(|| zeros(n));
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|x| x.to_bits() == 0), "n = {n}");
        }
    }

    #[test]
    fn in_out_weights_give_the_same_product() {
        let (rows, in_dim, out_dim) = (5, 4, 3);
        let x: Vec<f32> = (0..rows * in_dim).map(|v| (v as f32 * 0.3).sin()).collect();
        let w: Vec<f32> = (0..out_dim * in_dim)
            .map(|v| (v as f32 * 0.7).cos())
            .collect();
        let t = transpose(&w, out_dim, in_dim);
        assert_eq!(t[in_dim - 1], w[1]);
        assert_eq!(transpose(&t, in_dim, out_dim), w);
        let (mut a, mut b) = (vec![0.0; rows * out_dim], vec![0.0; rows * out_dim]);
        matmul_wt(&x, in_dim, &w, out_dim, &mut a);
        matmul_in_out(&x, in_dim, &t, out_dim, &mut b);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-6);
        }
    }
}
