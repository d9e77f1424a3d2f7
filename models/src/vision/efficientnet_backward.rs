//! The EfficientNet-Lite backward pass, for TCAV on images: from a weighted sum of logits back
//! to any hook, without an autograd graph.
//!
//! One forward records every hook's activation (each activation function's output is all the
//! backward needs: ReLU6 passes gradient where `0 < y < 6`), then the gradient flows through
//! the classifier, the spatial mean, the head, and each block in reverse — projection, ReLU6,
//! depthwise convolution (its transpose: a scatter with the same taps), ReLU6, expansion, plus
//! the skip connection — and, for input attributions, through the stem's ReLU6 and convolution
//! to the pixels. Gradients are reported at a hook *before* its activation's mask, i.e.
//! with respect to the hooked value itself.

use super::conv::{conv_dense_input_gradient, same_padding, Nhwc};
use super::efficientnet::{Block, EfficientNet, HEAD, STEM};
use super::efficientnet_forward::Tape;
use crate::batch::ImageBatch;
use crate::hooks::{Capture, ConvPart, HookPoint};
use crate::kernels::{matmul_w, Recycler};
use crate::model::{HookGradients, HookedModel, PixelGradients};
use crate::{ModelError, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Receives a hook's gradient (`[batch, positions, width]`) during the backward.
type Record<'a> = dyn FnMut(HookPoint, &[f32], usize) -> Result<()> + 'a;

/// Elements per parallel task of [`relu6_mask`].
const MASK_CHUNK: usize = 1 << 16;

/// `g *= 1[0 < y < 6]`: the ReLU6 derivative from its output. In parallel: on one thread the
/// mask was 11% of integrated gradients' time (arrays of up to 77 MB at batch 16).
fn relu6_mask(g: &mut [f32], y: &[f32]) {
    g.par_chunks_mut(MASK_CHUNK)
        .zip(y.par_chunks(MASK_CHUNK))
        .for_each(|(g, y)| {
            g.iter_mut()
                .zip(y)
                .for_each(|(g, &y)| *g = if y > 0.0 && y < 6.0 { *g } else { 0.0 })
        });
}

/// ReLU6 outputs whose derivative [`depthwise_backward`] applies as it goes.
#[derive(Clone, Copy, Default)]
struct Relu6Masks<'a> {
    /// The convolution's own ReLU6 output: `g` passes its derivative as it is read.
    output: Option<&'a [f32]>,
    /// The ReLU6 output the convolution read (the expansion's): the input gradient passes its
    /// derivative once complete.
    input: Option<&'a [f32]>,
}

/// The input gradient of a depthwise convolution (`taps` `[k, k, c]`), input shape `input`,
/// in a buffer from `spare`. Each image's gradient rows are built in order: a row is cleared
/// just before the first output row's taps add into it and, with `masks.input`, passed through
/// the ReLU6 derivative as soon as no later output row reaches it — both while it is in cache,
/// where a `memset` of the whole buffer first and a [`relu6_mask`] pass after were three more
/// streams of up to 77 MB per block. With `masks.output`, `g` passes its ReLU6 derivative
/// pixel by pixel as it is read. Bit-identical to clearing, scattering and masking in turn.
#[allow(clippy::too_many_arguments)]
fn depthwise_backward(
    spare: &Recycler,
    g: &[f32],
    masks: Relu6Masks<'_>,
    out: Nhwc,
    taps: &[f32],
    k: usize,
    stride: usize,
    input: Nhwc,
) -> Vec<f32> {
    let c = input.channels;
    let (ph, pw) = (
        same_padding(input.height, k, stride),
        same_padding(input.width, k, stride),
    );
    let per_image = input.pixels() * c;
    let row_len = input.width * c;
    let height = input.height as isize;
    let mut dx = spare.take(input.len());
    dx.par_chunks_mut(per_image)
        .enumerate()
        .for_each(|(b, dxb)| {
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
        });
    dx
}

/// Sums `[batch, positions, width]` over positions.
fn position_sums(x: &[f32], batch: usize, width: usize) -> Vec<f32> {
    let per = x.len() / batch;
    let mut out = vec![0f32; batch * width];
    for (b, o) in out.chunks_exact_mut(width).enumerate() {
        for row in x[b * per..(b + 1) * per].chunks_exact(width) {
            o.iter_mut().zip(row).for_each(|(o, v)| *o += v);
        }
    }
    out
}

/// One taped forward and the backward from a seed: what both public entry points read.
struct Backward {
    logits: Vec<f32>,
    tape: Tape,
    /// `[batch, positions, width]` gradients at the wanted hooks, with their width.
    grads: BTreeMap<HookPoint, (Vec<f32>, usize)>,
    /// `∂f/∂pixels`, when asked for.
    pixels: Option<Vec<f32>>,
}

impl EfficientNet {
    pub(super) fn gradients(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        seed: &[f32],
    ) -> Result<HookGradients> {
        let run = self.backward(batch, points, seed, false)?;
        let mut out = HookGradients {
            logits: run.logits,
            ..Default::default()
        };
        for (p, (g, width)) in run.grads {
            let (a, shape) = run.tape.get(p)?;
            let mut pooled = position_sums(a, batch.batch, width);
            pooled.iter_mut().for_each(|v| *v /= shape.pixels() as f32);
            out.pooled.insert(p, pooled);
            out.gradient_sums
                .insert(p, position_sums(&g, batch.batch, width));
        }
        run.tape.into_buffers().for_each(|v| self.spare.give(v));
        self.spare.end_batch();
        Ok(out)
    }

    pub(super) fn pixel_backward(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        seed: &[f32],
    ) -> Result<PixelGradients> {
        let mut run = self.backward(batch, points, seed, true)?;
        let mut hooks = BTreeMap::new();
        for (p, (g, _)) in run.grads {
            hooks.insert(p, (run.tape.remove(p)?, g));
        }
        run.tape.into_buffers().for_each(|v| self.spare.give(v));
        self.spare.end_batch();
        Ok(PixelGradients {
            outputs: run.logits,
            pixels: run.pixels.unwrap_or_default(),
            hooks,
        })
    }

    fn backward(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        seed: &[f32],
        to_pixels: bool,
    ) -> Result<Backward> {
        let classes = self.cfg.num_classes;
        let b = batch.batch;
        if seed.len() != b * classes {
            return Err(ModelError::Invalid(format!(
                "gradient seed has {} values, expected batch {b} × {classes} classes",
                seed.len()
            )));
        }
        let available = self.hook_points();
        if let Some(p) = points.iter().find(|p| !available.contains(p)) {
            return Err(ModelError::UnknownHook {
                name: p.to_string(),
                hint: " (not a hook point of this efficientnet_lite model)".into(),
            });
        }
        // Every activation the backward needs, each in its own buffer, read in place.
        let mut tape = Tape::default();
        let logits = self.run(batch, &mut Capture::new([]), Some(&mut tape))?;
        let spare = &self.spare;
        // The blocks' outputs are never read by the backward (ReLU6 masks read the expansions,
        // depthwise outputs, head and stem): unless wanted, back to the recycler before the
        // first gradient buffer is taken, and each other activation as soon as the backward
        // has passed it — so the gradients reuse the tape's memory.
        for blk in &self.blocks {
            self.release(&mut tape, points, Self::block_point(blk, ConvPart::Out));
        }
        let mut grads = BTreeMap::new();
        let mut record = |p: HookPoint, g: &[f32], width: usize| -> Result<()> {
            if points.contains(&p) {
                grads.insert(p, (g.to_vec(), width));
            }
            Ok(())
        };
        // Classifier and spatial mean.
        let mut g_pooled = vec![0f32; b * HEAD];
        matmul_w(seed, classes, &self.fc.weight, HEAD, &mut g_pooled);
        record(HookPoint::Pooled, &g_pooled, HEAD)?;
        let (head, head_shape) = tape.get(HookPoint::Head)?;
        let positions = head_shape.pixels();
        // Every row is written below.
        let mut g = spare.take(head.len());
        for (bi, gp) in g_pooled.chunks_exact(HEAD).enumerate() {
            for row in g[bi * positions * HEAD..(bi + 1) * positions * HEAD].chunks_exact_mut(HEAD)
            {
                row.iter_mut()
                    .zip(gp)
                    .for_each(|(r, v)| *r = v / positions as f32);
            }
        }
        record(HookPoint::Head, &g, HEAD)?;
        relu6_mask(&mut g, head);
        self.release(&mut tape, points, HookPoint::Head);
        let mut g_x = spare.take(b * positions * self.head_in);
        matmul_w(&g, HEAD, &self.head.weight, self.head_in, &mut g_x);
        spare.give(g);
        // Spatial sizes entering each block, from the input size and the strides.
        let stem_hw = (
            same_padding(batch.height, 3, 2),
            same_padding(batch.width, 3, 2),
        );
        let mut sizes = Vec::with_capacity(self.blocks.len());
        let mut hw = (stem_hw.0.output, stem_hw.1.output);
        for blk in &self.blocks {
            sizes.push(hw);
            hw = (
                same_padding(hw.0, blk.kernel, blk.stride).output,
                same_padding(hw.1, blk.kernel, blk.stride).output,
            );
        }
        // The earliest hook anyone asked for (the stem for pixels): no need to go further back.
        let earliest = if to_pixels {
            0
        } else {
            points
                .iter()
                .filter_map(|p| available.iter().position(|a| a == p))
                .min()
                .unwrap_or(available.len())
        };
        for (blk, &input_hw) in self.blocks.iter().zip(&sizes).rev() {
            let out_point = Self::block_point(blk, ConvPart::Out);
            record(out_point, &g_x, blk.output)?;
            if available.iter().position(|a| *a == out_point).unwrap_or(0) <= earliest {
                break;
            }
            g_x = self.block_backward(blk, b, input_hw, g_x, &mut tape, points, &mut record)?;
        }
        record(HookPoint::Stem, &g_x, STEM)?;
        let pixels = if to_pixels {
            // Through the stem's ReLU6 and its convolution, to the pixels.
            let (stem, _) = tape.get(HookPoint::Stem)?;
            relu6_mask(&mut g_x, stem);
            self.release(&mut tape, points, HookPoint::Stem);
            let input = Nhwc {
                batch: b,
                height: batch.height,
                width: batch.width,
                channels: 3,
            };
            let out = Nhwc {
                batch: b,
                height: stem_hw.0.output,
                width: stem_hw.1.output,
                channels: STEM,
            };
            Some(conv_dense_input_gradient(
                &g_x,
                out,
                &self.stem.weight,
                3,
                2,
                stem_hw,
                input,
            ))
        } else {
            None
        };
        spare.give(g_x);
        Ok(Backward {
            logits,
            tape,
            grads,
            pixels,
        })
    }

    /// The backward is done with the activation at `point`: back to the recycler, unless the
    /// caller asked for it (then it stays on the tape for the caller).
    fn release(&self, tape: &mut Tape, points: &[HookPoint], point: HookPoint) {
        if !points.contains(&point) {
            if let Ok(v) = tape.remove(point) {
                self.spare.give(v);
            }
        }
    }

    /// From the gradient at a block's output to the gradient at its input.
    #[allow(clippy::too_many_arguments)]
    fn block_backward(
        &self,
        blk: &Block,
        batch: usize,
        (in_h, in_w): (usize, usize),
        g_out: Vec<f32>,
        tape: &mut Tape,
        points: &[HookPoint],
        record: &mut Record<'_>,
    ) -> Result<Vec<f32>> {
        let dw_point = Self::block_point(blk, ConvPart::Depthwise);
        let input_shape = Nhwc {
            batch,
            height: in_h,
            width: in_w,
            channels: blk.expanded,
        };
        let out_shape = Nhwc {
            height: same_padding(in_h, blk.kernel, blk.stride).output,
            width: same_padding(in_w, blk.kernel, blk.stride).output,
            ..input_shape
        };
        let rows = out_shape.batch * out_shape.pixels();
        let in_positions = in_h * in_w;
        let spare = &self.spare;
        let mut g_d = spare.take(rows * blk.expanded);
        matmul_w(
            &g_out,
            blk.output,
            &blk.project.weight,
            blk.expanded,
            &mut g_d,
        );
        record(dw_point, &g_d, blk.expanded)?;
        // The expansion's ReLU6 derivative goes inside the transpose too, unless the gradient
        // at the expansion hook itself (before that derivative) is wanted.
        let expand_point = Self::block_point(blk, ConvPart::Expand);
        let fuse_expand = blk.expand.is_some() && !points.contains(&expand_point);
        let masks = Relu6Masks {
            output: Some(tape.get(dw_point)?.0),
            input: if fuse_expand {
                Some(tape.get(expand_point)?.0)
            } else {
                None
            },
        };
        let mut g_h = depthwise_backward(
            spare,
            &g_d,
            masks,
            out_shape,
            &blk.depthwise.weight,
            blk.kernel,
            blk.stride,
            input_shape,
        );
        self.release(tape, points, dw_point);
        spare.give(g_d);
        let mut g_in = match &blk.expand {
            Some(e) => {
                let point = expand_point;
                record(point, &g_h, blk.expanded)?;
                if !fuse_expand {
                    relu6_mask(&mut g_h, tape.get(point)?.0);
                }
                self.release(tape, points, point);
                let mut g_in = spare.take(batch * in_positions * blk.input);
                matmul_w(&g_h, blk.expanded, &e.weight, blk.input, &mut g_in);
                spare.give(g_h);
                g_in
            }
            None => g_h,
        };
        if blk.skip() {
            g_in.iter_mut().zip(&g_out).for_each(|(a, b)| *a += b);
        }
        spare.give(g_out);
        Ok(g_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::conv::conv_depthwise;
    use crate::vision::conv::tests::data;

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
                &crate::kernels::Recycler::default(),
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
            let dx =
                depthwise_backward(&Recycler::default(), &g, none, out, &taps, k, stride, input);
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
    /// some above 6; kernels 3 and 5, strides 1 and 2, odd sizes.
    #[test]
    fn fused_masks_and_row_clearing_equal_the_separate_passes() {
        for (size, k, stride) in [(64, 3, 2), (61, 5, 1), (63, 5, 2)] {
            let input = Nhwc {
                batch: 2,
                height: size,
                width: size + 2,
                channels: 64,
            };
            let x: Vec<f32> = data(input.len(), 1).iter().map(|v| v * 8.0).collect();
            let taps = data(k * k * 64, 2);
            let pad = (
                same_padding(size, k, stride),
                same_padding(size + 2, k, stride),
            );
            let fresh = Recycler::default();
            let (y, out) = conv_depthwise(&fresh, &x, input, &taps, &[0.0; 64], k, stride, pad);
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
            let fused = depthwise_backward(&stale, &g, masks, out, &taps, k, stride, input);
            assert_eq!(fused, expected, "size {size} k{k} s{stride}");
        }
    }
}
