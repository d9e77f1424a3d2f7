//! Convolution kernels on channels-last (NHWC) activations: image rows of pixels, each pixel a
//! contiguous run of channels. In this layout a 1×1 convolution is one matrix multiply over all
//! pixels, a depthwise convolution vectorises over channels, and the activation a hook sees is
//! already `[batch, h·w, channels]`.

use crate::kernels::{matmul_wt, zeros, Recycler};
use rayon::prelude::*;

/// A spatial size and its padding for one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padded {
    pub output: usize,
    pub before: usize,
}

/// TensorFlow "SAME" padding: output `ceil(input / stride)`, the total padding split with the
/// extra pixel (if odd) after — so it can be asymmetric, unlike PyTorch's `padding=`.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> Padded {
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + kernel).saturating_sub(input);
    Padded {
        output,
        before: total / 2,
    }
}

/// Symmetric PyTorch-style padding `pad` on both sides.
pub fn symmetric_padding(input: usize, kernel: usize, stride: usize, pad: usize) -> Padded {
    Padded {
        output: (input + 2 * pad - kernel) / stride + 1,
        before: pad,
    }
}

/// Shape of a channels-last activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nhwc {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl Nhwc {
    /// The shape of an image batch of `channels`, checked against the values it holds.
    pub fn of_batch(batch: &crate::batch::ImageBatch, channels: usize) -> crate::Result<Self> {
        let shape = Nhwc {
            batch: batch.batch,
            height: batch.height,
            width: batch.width,
            channels,
        };
        if batch.pixels.len() != shape.len() {
            return Err(crate::ModelError::Invalid(format!(
                "image batch holds {} values, expected {}×{}×{}×{channels}",
                batch.pixels.len(),
                shape.batch,
                shape.height,
                shape.width
            )));
        }
        Ok(shape)
    }

    pub fn pixels(&self) -> usize {
        self.height * self.width
    }
    pub fn len(&self) -> usize {
        self.batch * self.pixels() * self.channels
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The taps of output pixel `(oy, ox)` that fall inside a `height × width` input, in (ky, kx)
/// order: `(ky · kernel + kx, input pixel index within its image)`; padding's taps are skipped.
pub(crate) fn taps_inside(
    (oy, ox): (usize, usize),
    kernel: usize,
    stride: usize,
    (ph, pw): (Padded, Padded),
    (height, width): (usize, usize),
) -> impl Iterator<Item = (usize, usize)> {
    let top = (oy * stride) as isize - ph.before as isize;
    let left = (ox * stride) as isize - pw.before as isize;
    (0..kernel)
        .flat_map(move |ky| (0..kernel).map(move |kx| (ky, kx)))
        .filter_map(move |(ky, kx)| {
            let (iy, ix) = (top + ky as isize, left + kx as isize);
            let inside = iy >= 0 && ix >= 0 && (iy as usize) < height && (ix as usize) < width;
            inside.then(|| (ky * kernel + kx, iy as usize * width + ix as usize))
        })
}

/// A dense convolution (`weight` in PyTorch's `[out, in, k, k]` layout, rearranged once by
/// [`dense_weight`]) through im2col and one matrix multiply. Meant for stems with few input
/// channels, where the patch matrix is small. The output (and the patch matrix, handed back
/// after use) come from `spare`.
#[allow(clippy::too_many_arguments)]
pub fn conv_dense(
    spare: &Recycler,
    x: &[f32],
    shape: Nhwc,
    weight_rows: &[f32],
    out_channels: usize,
    kernel: usize,
    stride: usize,
    pad: (Padded, Padded),
) -> (Vec<f32>, Nhwc) {
    let (ph, pw) = pad;
    let cin = shape.channels;
    let patch = kernel * kernel * cin;
    let out_shape = Nhwc {
        batch: shape.batch,
        height: ph.output,
        width: pw.output,
        channels: out_channels,
    };
    // Every value of the patch matrix is written: the taps outside the image as zeros.
    let mut cols = spare.take(shape.batch * out_shape.pixels() * patch);
    cols.par_chunks_mut(pw.output * patch)
        .enumerate()
        .for_each(|(row, dst)| {
            let (b, oy) = (row / ph.output, row % ph.output);
            for ox in 0..pw.output {
                for ky in 0..kernel {
                    let iy = (oy * stride + ky) as isize - ph.before as isize;
                    for kx in 0..kernel {
                        let ix = (ox * stride + kx) as isize - pw.before as isize;
                        let at = ox * patch + (ky * kernel + kx) * cin;
                        let inside = iy >= 0
                            && ix >= 0
                            && (iy as usize) < shape.height
                            && (ix as usize) < shape.width;
                        if inside {
                            let src = ((b * shape.height + iy as usize) * shape.width
                                + ix as usize)
                                * cin;
                            dst[at..at + cin].copy_from_slice(&x[src..src + cin]);
                        } else {
                            dst[at..at + cin].fill(0.0);
                        }
                    }
                }
            }
        });
    let mut out = spare.take(out_shape.len());
    matmul_wt(&cols, patch, weight_rows, out_channels, &mut out);
    spare.give(cols);
    (out, out_shape)
}

/// The input gradient of [`conv_dense`] (its transpose): `g` is `∂f/∂output` (`out_shape`),
/// the result `∂f/∂x` in `input`'s shape — each output pixel's patch gradient `g · W` scattered
/// back onto the taps that read it. Pixel attributions of a CNN end here.
pub fn conv_dense_input_gradient(
    g: &[f32],
    out_shape: Nhwc,
    weight_rows: &[f32],
    kernel: usize,
    stride: usize,
    pad: (Padded, Padded),
    input: Nhwc,
) -> Vec<f32> {
    let cin = input.channels;
    let patch = kernel * kernel * cin;
    let mut cols = zeros(out_shape.batch * out_shape.pixels() * patch);
    crate::kernels::matmul_w(g, out_shape.channels, weight_rows, patch, &mut cols);
    let per_image = input.pixels() * cin;
    let mut dx = zeros(input.len());
    dx.par_chunks_mut(per_image)
        .enumerate()
        .for_each(|(b, dxb)| {
            for oy in 0..out_shape.height {
                for ox in 0..out_shape.width {
                    let row = (b * out_shape.height + oy) * out_shape.width + ox;
                    let src = &cols[row * patch..(row + 1) * patch];
                    let image = (input.height, input.width);
                    for (tap, pixel) in taps_inside((oy, ox), kernel, stride, pad, image) {
                        let at = pixel * cin;
                        dxb[at..at + cin]
                            .iter_mut()
                            .zip(&src[tap * cin..][..cin])
                            .for_each(|(d, v)| *d += v);
                    }
                }
            }
        });
    dx
}

/// `[out, in, k, k]` → `[out, k, k, in]`, the row layout [`conv_dense`]'s patches use.
pub fn dense_weight(w: &[f32], out: usize, cin: usize, kernel: usize) -> Vec<f32> {
    let mut r = vec![0f32; w.len()];
    for o in 0..out {
        for c in 0..cin {
            for ky in 0..kernel {
                for kx in 0..kernel {
                    r[((o * kernel + ky) * kernel + kx) * cin + c] =
                        w[((o * cin + c) * kernel + ky) * kernel + kx];
                }
            }
        }
    }
    r
}

/// Max pooling (`k×k`, stride, symmetric padding that never wins: PyTorch's `MaxPool2d`).
pub fn max_pool(x: &[f32], shape: Nhwc, k: usize, stride: usize, pad: usize) -> (Vec<f32>, Nhwc) {
    let c = shape.channels;
    let ph = symmetric_padding(shape.height, k, stride, pad);
    let pw = symmetric_padding(shape.width, k, stride, pad);
    let out_shape = Nhwc {
        height: ph.output,
        width: pw.output,
        ..shape
    };
    let mut out = vec![f32::NEG_INFINITY; out_shape.len()];
    out.par_chunks_mut(pw.output * c)
        .enumerate()
        .for_each(|(row, dst)| {
            let (b, oy) = (row / ph.output, row % ph.output);
            for ox in 0..pw.output {
                let acc = &mut dst[ox * c..(ox + 1) * c];
                for ky in 0..k {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    if iy < 0 || iy as usize >= shape.height {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        if ix < 0 || ix as usize >= shape.width {
                            continue;
                        }
                        let src =
                            ((b * shape.height + iy as usize) * shape.width + ix as usize) * c;
                        acc.iter_mut()
                            .zip(&x[src..src + c])
                            .for_each(|(a, v)| *a = a.max(*v));
                    }
                }
            }
        });
    (out, out_shape)
}

/// The input gradient of [`max_pool`]: each output's gradient goes to the input its window's
/// maximum came from — the first in (ky, kx) order among equal values, as PyTorch's
/// `max_pool2d` picks its index — and overlapping windows add up.
pub fn max_pool_backward(
    x: &[f32],
    shape: Nhwc,
    g: &[f32],
    (k, stride, pad): (usize, usize, usize),
) -> Vec<f32> {
    let c = shape.channels;
    let ph = symmetric_padding(shape.height, k, stride, pad);
    let pw = symmetric_padding(shape.width, k, stride, pad);
    let per_image = shape.pixels() * c;
    let mut dx = zeros(shape.len());
    dx.par_chunks_mut(per_image)
        .enumerate()
        .for_each(|(b, dxb)| {
            let xb = &x[b * per_image..(b + 1) * per_image];
            let mut best = vec![0usize; c];
            let mut max = vec![f32::NEG_INFINITY; c];
            for oy in 0..ph.output {
                for ox in 0..pw.output {
                    let image = (shape.height, shape.width);
                    for (i, (_, pixel)) in
                        taps_inside((oy, ox), k, stride, (ph, pw), image).enumerate()
                    {
                        let at = pixel * c;
                        for ch in 0..c {
                            let v = xb[at + ch];
                            if i == 0 || v > max[ch] || v.is_nan() {
                                max[ch] = v;
                                best[ch] = at + ch;
                            }
                        }
                    }
                    let row = ((b * ph.output + oy) * pw.output + ox) * c;
                    for ch in 0..c {
                        dxb[best[ch]] += g[row + ch];
                    }
                }
            }
        });
    dx
}

/// Mean over each image's pixels: `[batch, h·w, c]` → `[batch, c]`.
pub fn global_mean(x: &[f32], shape: Nhwc) -> Vec<f32> {
    let c = shape.channels;
    let n = shape.pixels();
    let mut out = zeros(shape.batch * c);
    for (b, o) in out.chunks_exact_mut(c).enumerate() {
        for p in x[b * n * c..(b + 1) * n * c].chunks_exact(c) {
            o.iter_mut().zip(p).for_each(|(o, v)| *o += v);
        }
        o.iter_mut().for_each(|o| *o /= n as f32);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Direct NCHW-indexed reference convolution (groups = 1 or = channels).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn reference(
        x: &[f32],
        s: Nhwc,
        w: &[f32],
        out_c: usize,
        k: usize,
        stride: usize,
        pad: (Padded, Padded),
        depthwise: bool,
    ) -> Vec<f32> {
        let (ph, pw) = pad;
        let mut out = zeros(s.batch * ph.output * pw.output * out_c);
        for b in 0..s.batch {
            for oy in 0..ph.output {
                for ox in 0..pw.output {
                    for o in 0..out_c {
                        let mut acc = 0f32;
                        let inputs: Vec<usize> = if depthwise {
                            vec![o]
                        } else {
                            (0..s.channels).collect()
                        };
                        for (ci_idx, &ci) in inputs.iter().enumerate() {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * stride + ky) as isize - ph.before as isize;
                                    let ix = (ox * stride + kx) as isize - pw.before as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy as usize >= s.height
                                        || ix as usize >= s.width
                                    {
                                        continue;
                                    }
                                    let v = x[((b * s.height + iy as usize) * s.width
                                        + ix as usize)
                                        * s.channels
                                        + ci];
                                    let wi = if depthwise {
                                        (o * k + ky) * k + kx
                                    } else {
                                        ((o * s.channels + ci_idx) * k + ky) * k + kx
                                    };
                                    acc += v * w[wi];
                                }
                            }
                        }
                        out[((b * ph.output + oy) * pw.output + ox) * out_c + o] = acc;
                    }
                }
            }
        }
        out
    }

    /// Deterministic values in [-1, 1) for kernel tests (here and in the backward's).
    pub(crate) fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32
                    / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        // TF: 224 → 112 with k 3 s 2 pads 0 before, 1 after; 7 → 7 with k 5 s 1 pads 2 and 2.
        assert_eq!(
            same_padding(224, 3, 2),
            Padded {
                output: 112,
                before: 0
            }
        );
        assert_eq!(
            same_padding(7, 5, 1),
            Padded {
                output: 7,
                before: 2
            }
        );
        assert_eq!(
            same_padding(15, 5, 2),
            Padded {
                output: 8,
                before: 2
            }
        );
    }

    /// ⟨conv(x), g⟩ = ⟨x, convᵀ(g)⟩ for the bias-free dense convolution, asymmetric padding
    /// and strides included.
    #[test]
    fn dense_input_gradient_is_the_adjoint() {
        for (h, w, k, stride) in [(9, 7, 3, 2), (8, 8, 3, 1), (11, 6, 5, 2), (224, 224, 3, 2)] {
            let s = Nhwc {
                batch: 2,
                height: h,
                width: w,
                channels: 3,
            };
            let x = data(s.len(), 4);
            let pad = (same_padding(h, k, stride), same_padding(w, k, stride));
            let weight = dense_weight(&data(4 * 3 * k * k, 5), 4, 3, k);
            let (y, out) = conv_dense(&Recycler::default(), &x, s, &weight, 4, k, stride, pad);
            let g = data(y.len(), 6);
            let dx = conv_dense_input_gradient(&g, out, &weight, k, stride, pad, s);
            let lhs: f64 = y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| *a as f64 * *b as f64).sum();
            // Each side sums `patch` products of values in [-1, 1) per output in f32: an error
            // of at most patch·ε·patch per output, weighted by |g| (and the same again for the
            // scatter).
            let patch = (k * k * 3) as f64;
            let g_abs: f64 = g.iter().map(|v| v.abs() as f64).sum();
            let bound = 2.0 * patch * patch * f32::EPSILON as f64 * g_abs;
            assert!(
                (lhs - rhs).abs() < bound,
                "{h}×{w} k{k} s{stride}: {lhs} vs {rhs}"
            );
        }
    }

    /// The dense convolution writes every value of its (recycled, uncleared) buffers: from a
    /// pool holding NaN-filled buffers it gives exactly what it gives from fresh zeros (the
    /// depthwise one's test is in `depthwise`).
    #[test]
    fn stale_recycled_buffers_never_leak_into_the_output() {
        let s = Nhwc {
            batch: 4,
            height: 128,
            width: 128,
            channels: 8,
        };
        let x = data(s.len(), 5);
        let (k, stride) = (3, 2);
        let pad = (same_padding(128, k, stride), same_padding(128, k, stride));
        let stale = || {
            let pool = Recycler::default();
            (0..3).for_each(|_| pool.give(vec![f32::NAN; s.len() * k * k]));
            pool
        };
        // 16 output channels: the output (4 × 64 × 64 × 16 values) is large enough to be
        // recycled too, not only the patch matrix.
        let dense = dense_weight(&data(16 * 8 * k * k, 1), 16, 8, k);
        let fresh = conv_dense(&Recycler::default(), &x, s, &dense, 16, k, stride, pad);
        assert_eq!(
            conv_dense(&stale(), &x, s, &dense, 16, k, stride, pad),
            fresh
        );
    }

    #[test]
    fn dense_matches_the_direct_definition() {
        let s = Nhwc {
            batch: 2,
            height: 9,
            width: 7,
            channels: 3,
        };
        let x = data(s.len(), 1);
        for (k, stride) in [(3, 2), (3, 1), (5, 2)] {
            let pad = (same_padding(9, k, stride), same_padding(7, k, stride));
            let w = data(4 * 3 * k * k, 7);
            let (got, shape) = conv_dense(
                &Recycler::default(),
                &x,
                s,
                &dense_weight(&w, 4, 3, k),
                4,
                k,
                stride,
                pad,
            );
            let want = reference(&x, s, &w, 4, k, stride, pad, false);
            assert_eq!(shape.channels, 4);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "dense k{k} s{stride}: {g} vs {w}");
            }
        }
    }

    /// The max pool's backward is the derivative of the forward: each window's gradient lands
    /// on its first maximum (ties broken as PyTorch breaks them), overlapping windows add.
    #[test]
    fn max_pool_backward_routes_to_the_first_maximum() {
        let s = Nhwc {
            batch: 2,
            height: 7,
            width: 6,
            channels: 3,
        };
        // Few distinct values, so windows hold ties.
        let x: Vec<f32> = (0..s.len()).map(|i| ((i * 7919) % 5) as f32).collect();
        let (y, out) = max_pool(&x, s, 3, 2, 1);
        let g = data(out.len(), 3);
        let got = max_pool_backward(&x, s, &g, (3, 2, 1));
        let mut want = vec![0f32; s.len()];
        for b in 0..s.batch {
            for oy in 0..out.height {
                for ox in 0..out.width {
                    for c in 0..s.channels {
                        let o = ((b * out.height + oy) * out.width + ox) * s.channels + c;
                        let first = (0..9).find_map(|t| {
                            let (iy, ix) =
                                ((oy * 2 + t / 3) as isize - 1, (ox * 2 + t % 3) as isize - 1);
                            let inside = iy >= 0
                                && ix >= 0
                                && (iy as usize) < s.height
                                && (ix as usize) < s.width;
                            let i = ((b * s.height + iy.max(0) as usize) * s.width
                                + ix.max(0) as usize)
                                * s.channels
                                + c;
                            (inside && x[i] == y[o]).then_some(i)
                        });
                        want[first.expect("the maximum is in the window")] += g[o];
                    }
                }
            }
        }
        assert_eq!(got, want);
    }
}
