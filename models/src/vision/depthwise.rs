//! Depthwise convolution on channels-last activations, forward and its transpose (the input
//! gradient EfficientNet's backward takes): every channel filtered by its own `k × k` kernel.
//! Both loops run per pixel over the channels, compiled for the SIMD level through `pulp`
//! (plain closures ran as baseline SSE2), and sum in the taps' order, so every level gives the
//! same bits.

use super::conv::{same_padding, taps_inside, Nhwc, Padded};
use crate::kernels::{threads, Recycler};
use rayon::prelude::*;

/// `[c, 1, k, k]` → `[k, k, c]`: per tap, one weight per channel.
pub fn depthwise_weight(w: &[f32], channels: usize, kernel: usize) -> Vec<f32> {
    let mut r = vec![0f32; w.len()];
    for c in 0..channels {
        for t in 0..kernel * kernel {
            r[t * channels + c] = w[c * kernel * kernel + t];
        }
    }
    r
}

/// Depthwise convolution plus bias: every channel filtered by its own `k×k` kernel
/// (`weight_taps` from [`depthwise_weight`]). Parallel over output rows; the channel loop is
/// the vectorised one. The output comes from `spare` (each pixel starts from the bias, so
/// stale contents never matter).
#[allow(clippy::too_many_arguments)]
pub fn conv_depthwise(
    spare: &Recycler,
    x: &[f32],
    shape: Nhwc,
    weight_taps: &[f32],
    bias: &[f32],
    kernel: usize,
    stride: usize,
    pad: (Padded, Padded),
) -> (Vec<f32>, Nhwc) {
    let mut out = spare.take(depthwise_output(shape, pad).len());
    let filter = DepthwiseFilter {
        weight_taps,
        bias,
        kernel,
        stride,
        pad,
    };
    let out_shape = conv_depthwise_into(&mut out, x, shape, filter);
    (out, out_shape)
}

/// The output shape of a depthwise convolution of `shape` with `pad`.
pub(super) fn depthwise_output(shape: Nhwc, (ph, pw): (Padded, Padded)) -> Nhwc {
    Nhwc {
        batch: shape.batch,
        height: ph.output,
        width: pw.output,
        channels: shape.channels,
    }
}

/// A depthwise convolution's taps, bias and geometry.
#[derive(Clone, Copy)]
pub(super) struct DepthwiseFilter<'a> {
    pub(super) weight_taps: &'a [f32],
    pub(super) bias: &'a [f32],
    pub(super) kernel: usize,
    pub(super) stride: usize,
    pub(super) pad: (Padded, Padded),
}

/// [`conv_depthwise`] into `out` (every value overwritten), for a slice of a batch's images.
pub(super) fn conv_depthwise_into(
    out: &mut [f32],
    x: &[f32],
    shape: Nhwc,
    filter: DepthwiseFilter<'_>,
) -> Nhwc {
    let DepthwiseFilter {
        weight_taps,
        bias,
        kernel,
        stride,
        pad,
    } = filter;
    let (ph, pw) = pad;
    let c = shape.channels;
    let out_shape = depthwise_output(shape, pad);
    debug_assert_eq!(out.len(), out_shape.len());
    let min_rows = (shape.batch * ph.output / (4 * threads())).max(1);
    out.par_chunks_mut(pw.output * c)
        .with_min_len(min_rows)
        .enumerate()
        .for_each(|(row, dst)| {
            let (b, oy) = (row / ph.output, row % ph.output);
            glassbox_data::simd::arch().dispatch(DepthwiseRow {
                dst,
                x,
                shape,
                weight_taps,
                bias,
                kernel,
                stride,
                pad,
                image: b,
                oy,
            })
        });
    out_shape
}

/// One output row of [`conv_depthwise`], compiled for the SIMD level (`pulp` inlines
/// `with_simd` into a function with the level's target features, so the channel loops of
/// [`depthwise_pixel`] vectorise wide).
struct DepthwiseRow<'a> {
    dst: &'a mut [f32],
    x: &'a [f32],
    shape: Nhwc,
    weight_taps: &'a [f32],
    bias: &'a [f32],
    kernel: usize,
    stride: usize,
    pad: (Padded, Padded),
    image: usize,
    oy: usize,
}

impl pulp::WithSimd for DepthwiseRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Self {
            dst,
            x,
            shape,
            weight_taps,
            bias,
            kernel,
            stride,
            pad: (ph, pw),
            image,
            oy,
        } = self;
        let c = shape.channels;
        // (input pixel offset, tap) of each tap inside the image, in (ky, kx) order.
        let mut taps = Vec::with_capacity(kernel * kernel);
        let first_pixel = image * shape.height * shape.width;
        for ox in 0..pw.output {
            taps.clear();
            let inside = taps_inside(
                (oy, ox),
                kernel,
                stride,
                (ph, pw),
                (shape.height, shape.width),
            );
            taps.extend(inside.map(|(tap, pixel)| ((first_pixel + pixel) * c, tap)));
            depthwise_pixel(
                simd,
                &mut dst[ox * c..(ox + 1) * c],
                bias,
                &taps,
                x,
                weight_taps,
            );
        }
    }
}

/// One output pixel of [`conv_depthwise`]: `dst = bias + Σ x[src + ·] ⊙ w[tap]` over `taps`,
/// multiplied and added separately in the taps' order (so every level gives the same bits as
/// the scalar loop), a block of channels at a time held in registers across all taps instead
/// of read and written back per tap.
#[inline(always)]
fn depthwise_pixel<S: pulp::Simd>(
    simd: S,
    dst: &mut [f32],
    bias: &[f32],
    taps: &[(usize, usize)],
    x: &[f32],
    weight_taps: &[f32],
) {
    let c = dst.len();
    // Four vectors of channels per block (64 on AVX-512, 32 on AVX2), one per named
    // accumulator below: an array of accumulators was kept on the stack.
    let block = 4 * std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>();
    let mut c0 = 0;
    while c0 + block <= c {
        let b = S::as_simd_f32s(&bias[c0..c0 + block]).0;
        let (mut a0, mut a1, mut a2, mut a3) = (b[0], b[1], b[2], b[3]);
        for &(src, tap) in taps {
            let (xs, _) = S::as_simd_f32s(&x[src + c0..src + c0 + block]);
            let (ws, _) = S::as_simd_f32s(&weight_taps[tap * c + c0..tap * c + c0 + block]);
            a0 = simd.add_f32s(a0, simd.mul_f32s(xs[0], ws[0]));
            a1 = simd.add_f32s(a1, simd.mul_f32s(xs[1], ws[1]));
            a2 = simd.add_f32s(a2, simd.mul_f32s(xs[2], ws[2]));
            a3 = simd.add_f32s(a3, simd.mul_f32s(xs[3], ws[3]));
        }
        S::as_mut_simd_f32s(&mut dst[c0..c0 + block])
            .0
            .copy_from_slice(&[a0, a1, a2, a3]);
        c0 += block;
    }
    if c0 < c {
        let tail = &mut dst[c0..];
        tail.copy_from_slice(&bias[c0..]);
        for &(src, tap) in taps {
            let xs = &x[src + c0..src + c];
            let ws = &weight_taps[tap * c + c0..(tap + 1) * c];
            for ((a, v), w) in tail.iter_mut().zip(xs).zip(ws) {
                *a += v * w;
            }
        }
    }
}

/// ReLU6 outputs whose derivative [`depthwise_backward`] applies as it goes.
#[derive(Clone, Copy, Default)]
pub(super) struct Relu6Masks<'a> {
    /// The convolution's own ReLU6 output: `g` passes its derivative as it is read.
    pub(super) output: Option<&'a [f32]>,
    /// The ReLU6 output the convolution read (the expansion's): the input gradient passes its
    /// derivative once complete.
    pub(super) input: Option<&'a [f32]>,
}

/// The input gradient of a depthwise convolution (`taps` `[k, k, c]`), input shape `input`,
/// into `dx` (every value overwritten; a whole batch or a slice of its images). Each image's gradient rows are built in order: a row is cleared
/// just before the first output row's taps add into it and, with `masks.input`, passed through
/// the ReLU6 derivative as soon as no later output row reaches it — both while it is in cache,
/// where a `memset` of the whole buffer first and a `relu6_mask` pass after were three more
/// streams of up to 77 MB per block. With `masks.output`, `g` passes its ReLU6 derivative
/// pixel by pixel as it is read. Bit-identical to clearing, scattering and masking in turn.
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise_backward(
    dx: &mut [f32],
    g: &[f32],
    masks: Relu6Masks<'_>,
    out: Nhwc,
    taps: &[f32],
    k: usize,
    stride: usize,
    input: Nhwc,
) {
    let per_image = input.pixels() * input.channels;
    debug_assert_eq!(dx.len(), input.len());
    dx.par_chunks_mut(per_image)
        .enumerate()
        .for_each(|(b, dxb)| {
            glassbox_data::simd::arch().dispatch(DepthwiseBackwardImage {
                dxb,
                b,
                g,
                masks,
                out,
                taps,
                k,
                stride,
                input,
            })
        });
}

/// One image of [`depthwise_backward`], compiled for the SIMD level (`pulp` inlines
/// `with_simd` into a function with the level's target features, so its channel loops
/// vectorise wide; as a plain closure they ran as baseline SSE2).
struct DepthwiseBackwardImage<'a> {
    dxb: &'a mut [f32],
    b: usize,
    g: &'a [f32],
    masks: Relu6Masks<'a>,
    out: Nhwc,
    taps: &'a [f32],
    k: usize,
    stride: usize,
    input: Nhwc,
}

impl pulp::WithSimd for DepthwiseBackwardImage<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self {
            dxb,
            b,
            g,
            masks,
            out,
            taps,
            k,
            stride,
            input,
        } = self;
        let c = input.channels;
        let (ph, pw) = (
            same_padding(input.height, k, stride),
            same_padding(input.width, k, stride),
        );
        let per_image = input.pixels() * c;
        let row_len = input.width * c;
        let height = input.height as isize;
        let mut masked = vec![0f32; if masks.output.is_some() { c } else { 0 }];
        // Rows `..cleared` are cleared; rows `..complete` have all their taps (and mask).
        let (mut cleared, mut complete) = (0usize, 0usize);
        let mut clear_to = |dxb: &mut [f32], to: usize| {
            if to > cleared {
                dxb[cleared * row_len..to * row_len].fill(0.0);
                cleared = to;
            }
        };
        for oy in 0..out.height {
            // The input rows this output row's taps reach, clipped to the image.
            let first = (oy * stride) as isize - ph.before as isize;
            clear_to(dxb, (first + k as isize).clamp(0, height) as usize);
            for ox in 0..out.width {
                let at = ((b * out.height + oy) * out.width + ox) * c;
                let go = &g[at..][..c];
                let go = match masks.output {
                    Some(y) => {
                        for ((m, &g), &y) in masked.iter_mut().zip(go).zip(&y[at..][..c]) {
                            *m = if y > 0.0 && y < 6.0 { g } else { 0.0 };
                        }
                        &masked[..]
                    }
                    None => go,
                };
                for ky in 0..k {
                    let iy = first + ky as isize;
                    if iy < 0 || iy >= height {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * stride + kx) as isize - pw.before as isize;
                        if ix < 0 || ix as usize >= input.width {
                            continue;
                        }
                        let at = (iy as usize * input.width + ix as usize) * c;
                        let w = &taps[(ky * k + kx) * c..][..c];
                        for ((d, g), w) in dxb[at..at + c].iter_mut().zip(go).zip(w) {
                            *d += g * w;
                        }
                    }
                }
            }
            // Rows above the next output row's first tap are final.
            let done = if oy + 1 == out.height {
                input.height
            } else {
                (first + stride as isize).clamp(0, height) as usize
            };
            if done > complete {
                clear_to(dxb, done);
                if let Some(h) = masks.input {
                    let rows = complete * row_len..done * row_len;
                    let h = &h[b * per_image..][rows.clone()];
                    for (d, &h) in dxb[rows].iter_mut().zip(h) {
                        *d = if h > 0.0 && h < 6.0 { *d } else { 0.0 };
                    }
                }
                complete = done;
            }
        }
        clear_to(dxb, input.height);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::conv::tests::{data, reference};

    /// `g *= 1[0 < y < 6]`, the ReLU6 derivative as a separate pass.
    fn relu6_mask(g: &mut [f32], y: &[f32]) {
        g.iter_mut()
            .zip(y)
            .for_each(|(g, &y)| *g = if y > 0.0 && y < 6.0 { *g } else { 0.0 });
    }

    /// From PyTorch's `[c, 1, k, k]` weight (through [`depthwise_weight`]) to the direct
    /// NCHW-indexed grouped convolution plus bias, for strides 1 and 2 and kernels 3 and 5.
    #[test]
    fn matches_the_direct_definition_from_torch_weights() {
        let s = Nhwc {
            batch: 2,
            height: 9,
            width: 7,
            channels: 3,
        };
        let x = data(s.len(), 1);
        for (k, stride) in [(3, 2), (3, 1), (5, 2)] {
            let pad = (same_padding(9, k, stride), same_padding(7, k, stride));
            let wd = data(3 * k * k, 3);
            let bias = [0.5f32, -1.0, 2.0];
            let taps = depthwise_weight(&wd, 3, k);
            let fresh = Recycler::default();
            let (got, _) = conv_depthwise(&fresh, &x, s, &taps, &bias, k, stride, pad);
            let want = reference(&x, s, &wd, 3, k, stride, pad, true);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - (w + bias[i % 3])).abs() < 1e-4,
                    "depthwise k{k} s{stride}"
                );
            }
        }
    }

    /// The forward's channel blocks in registers give the definition's bits — the bias, then
    /// each tap inside the image multiplied and added in (ky, kx) order — with 70 channels
    /// (whole vector blocks and a tail at every SIMD level) into a NaN-filled recycled buffer.
    #[test]
    fn blocked_channels_equal_the_definition_bit_for_bit() {
        let c = 70;
        for (size, k, stride) in [(11, 3, 2), (10, 5, 1), (9, 3, 1)] {
            let input = Nhwc {
                batch: 2,
                height: size,
                width: size + 1,
                channels: c,
            };
            let (x, taps, bias) = (data(input.len(), 1), data(k * k * c, 2), data(c, 4));
            let (ph, pw) = (
                same_padding(size, k, stride),
                same_padding(size + 1, k, stride),
            );
            let stale = Recycler::default();
            stale.give(vec![f32::NAN; input.len()]);
            let (y, out) = conv_depthwise(&stale, &x, input, &taps, &bias, k, stride, (ph, pw));
            for (pixel, got) in y.chunks_exact(c).enumerate() {
                let (b, oy, ox) = (
                    pixel / (out.height * out.width),
                    pixel / out.width % out.height,
                    pixel % out.width,
                );
                for (ch, &got) in got.iter().enumerate() {
                    let mut want = bias[ch];
                    for (ky, kx) in (0..k).flat_map(|ky| (0..k).map(move |kx| (ky, kx))) {
                        let iy = (oy * stride + ky) as isize - ph.before as isize;
                        let ix = (ox * stride + kx) as isize - pw.before as isize;
                        if iy < 0 || ix < 0 || iy >= size as isize || ix > size as isize {
                            continue;
                        }
                        let at = ((b * size + iy as usize) * (size + 1) + ix as usize) * c + ch;
                        want += x[at] * taps[(ky * k + kx) * c + ch];
                    }
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "k{k} s{stride} pixel {pixel}"
                    );
                }
            }
        }
    }

    /// The backward is the adjoint of the (bias-free) depthwise convolution:
    /// ⟨conv(x), g⟩ = ⟨x, convᵀ(g)⟩ exactly, for every size, kernel and stride.
    #[test]
    fn depthwise_backward_is_the_adjoint() {
        for (size, k, stride) in [(28, 3, 2), (9, 5, 2), (14, 5, 1), (12, 3, 1), (7, 3, 2)] {
            let input = Nhwc {
                batch: 2,
                height: size,
                width: size + 1,
                channels: 5,
            };
            let x = data(input.len(), 1);
            let taps = data(k * k * 5, 2);
            let pad = (
                same_padding(size, k, stride),
                same_padding(size + 1, k, stride),
            );
            let (y, out) = conv_depthwise(
                &Recycler::default(),
                &x,
                input,
                &taps,
                &[0.0; 5],
                k,
                stride,
                pad,
            );
            let g = data(y.len(), 3);
            let none = Relu6Masks::default();
            let mut dx = vec![0f32; input.len()];
            depthwise_backward(&mut dx, &g, none, out, &taps, k, stride, input);
            let lhs: f64 = y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "size {size} k{k} s{stride}: {lhs} vs {rhs}"
            );
        }
    }

    /// The depthwise transpose by its definition: every output pixel's gradient times each tap,
    /// added onto the input pixel that tap read.
    fn naive_transpose(
        g: &[f32],
        out: Nhwc,
        taps: &[f32],
        k: usize,
        stride: usize,
        input: Nhwc,
    ) -> Vec<f32> {
        let c = input.channels;
        let ph = same_padding(input.height, k, stride).before as isize;
        let pw = same_padding(input.width, k, stride).before as isize;
        let mut dx = vec![0f32; input.len()];
        for b in 0..out.batch {
            for oy in 0..out.height {
                for ox in 0..out.width {
                    for (ky, kx) in (0..k).flat_map(|ky| (0..k).map(move |kx| (ky, kx))) {
                        let iy = (oy * stride + ky) as isize - ph;
                        let ix = (ox * stride + kx) as isize - pw;
                        if iy < 0 || ix < 0 || iy >= input.height as isize {
                            continue;
                        }
                        if ix >= input.width as isize {
                            continue;
                        }
                        let (iy, ix) = (iy as usize, ix as usize);
                        for ch in 0..c {
                            let o = ((b * out.height + oy) * out.width + ox) * c + ch;
                            let i = ((b * input.height + iy) * input.width + ix) * c + ch;
                            dx[i] += g[o] * taps[(ky * k + kx) * c + ch];
                        }
                    }
                }
            }
        }
        dx
    }

    /// The ReLU6 derivatives applied inside the transpose (of the output as `g` is read, of the
    /// input as each gradient row completes) equal the definition followed by both masks,
    /// exactly — from a recycler holding NaN-filled buffers, so every row must be cleared
    /// before the taps add into it. Values scaled so that some fall below 0, some inside and
    /// some above 6; kernels 3 and 5, strides 1 and 2, odd sizes; 70 channels, so whole vector
    /// blocks and a tail at every SIMD level.
    #[test]
    fn fused_masks_and_row_clearing_equal_the_separate_passes() {
        for (size, k, stride) in [(64, 3, 2), (61, 5, 1), (63, 5, 2)] {
            let input = Nhwc {
                batch: 2,
                height: size,
                width: size + 2,
                channels: 70,
            };
            let x: Vec<f32> = data(input.len(), 1).iter().map(|v| v * 8.0).collect();
            let taps = data(k * k * 70, 2);
            let pad = (
                same_padding(size, k, stride),
                same_padding(size + 2, k, stride),
            );
            let fresh = Recycler::default();
            let (y, out) = conv_depthwise(&fresh, &x, input, &taps, &[0.0; 70], k, stride, pad);
            let y: Vec<f32> = y.iter().map(|v| v * 4.0).collect();
            let g = data(y.len(), 3);
            let mut g_masked = g.clone();
            relu6_mask(&mut g_masked, &y);
            let mut expected = naive_transpose(&g_masked, out, &taps, k, stride, input);
            relu6_mask(&mut expected, &x);
            let stale = Recycler::default();
            (0..2).for_each(|_| stale.give(vec![f32::NAN; input.len()]));
            let masks = Relu6Masks {
                output: Some(&y),
                input: Some(&x),
            };
            let mut fused = stale.take(input.len());
            depthwise_backward(&mut fused, &g, masks, out, &taps, k, stride, input);
            assert_eq!(fused, expected, "size {size} k{k} s{stride}");
        }
    }
}
