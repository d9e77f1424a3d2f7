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

use super::backward_parts::{
    self, check_request, hook_seed, mask_where, pooled_hook_gradients, Recorder,
};
use super::conv::{conv_dense_input_gradient, same_padding, Nhwc};
use super::depthwise::{depthwise_backward, Relu6Masks};
use super::efficientnet::{Block, EfficientNet, HEAD, STEM};
use super::efficientnet_forward::Tape;
use crate::batch::ImageBatch;
use crate::hooks::{Capture, ConvPart, HookPoint};
use crate::kernels::matmul_w;
use crate::model::{GradientSeed, HookGradients, HookedModel, PixelGradients};
use crate::Result;
use std::collections::BTreeMap;

/// `g *= 1[0 < y < 6]`: the ReLU6 derivative from its output.
fn relu6_mask(g: &mut [f32], y: &[f32]) {
    mask_where(g, y, |y| y > 0.0 && y < 6.0);
}

type Backward = backward_parts::Backward<Tape>;

impl EfficientNet {
    pub(super) fn gradients(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        seed: &[f32],
    ) -> Result<HookGradients> {
        let run = self.backward(batch, points, seed, None, false)?;
        let (tape, logits) = (&run.tape, run.outputs.clone());
        let out = pooled_hook_gradients(batch.batch, run.outputs, run.grads, |p| {
            // The logits are the forward's result, not on the tape.
            Ok(match p {
                HookPoint::Logits => std::borrow::Cow::Borrowed(&logits[..]),
                _ => std::borrow::Cow::Borrowed(tape.get(p)?.0),
            })
        })?;
        run.tape.into_buffers().for_each(|v| self.spare.give(v));
        self.spare.end_batch();
        Ok(out)
    }

    pub(super) fn pixel_backward(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        seed: &[f32],
        from_hook: Option<(HookPoint, &mut GradientSeed<'_>)>,
    ) -> Result<PixelGradients> {
        let mut run = self.backward(batch, points, seed, from_hook, true)?;
        let mut hooks = BTreeMap::new();
        for (p, (g, _)) in run.grads {
            let a = match p {
                HookPoint::Logits => run.outputs.clone(),
                _ => run.tape.remove(p)?,
            };
            hooks.insert(p, (a, g));
        }
        run.tape.into_buffers().for_each(|v| self.spare.give(v));
        self.spare.end_batch();
        Ok(PixelGradients {
            outputs: run.outputs,
            pixels: run.pixels.unwrap_or_default(),
            hooks,
        })
    }

    /// `∂f/∂pixels` of a target read off the activation at `point` (see
    /// [`HookedModel::pixel_gradients_from_hook`]): the backward from a zero seed on the
    /// outputs, with `seed`'s gradient entering at `point`.
    pub(super) fn pixel_backward_from_hook(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        point: HookPoint,
        seed: &mut GradientSeed<'_>,
    ) -> Result<PixelGradients> {
        let zero = vec![0f32; batch.batch * self.cfg.num_classes];
        self.pixel_backward(batch, points, &zero, Some((point, seed)))
    }

    fn backward(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        seed: &[f32],
        from_hook: Option<(HookPoint, &mut GradientSeed<'_>)>,
        to_pixels: bool,
    ) -> Result<Backward> {
        let classes = self.cfg.num_classes;
        let b = batch.batch;
        check_request(self, b, classes, points, seed)?;
        let available = self.hook_points();
        // Every activation the backward needs, each in its own buffer, read in place. Seeded at
        // a hook, the forward stops after the last block anyone asked about.
        let mut tape = Tape::default();
        let index = |q: HookPoint| match q {
            HookPoint::Conv { stage, block, .. } => self
                .blocks
                .iter()
                .position(|b| (b.stage, b.index_in_stage) == (stage as usize, block as usize)),
            _ => None,
        };
        let seeded = from_hook.as_ref().map(|(p, _)| *p);
        let last_block =
            backward_parts::last_block_needed(points, seeded, self.blocks.len(), index);
        let logits = self.run(batch, &mut Capture::new([]), Some(&mut tape), last_block)?;
        let inject = match from_hook {
            Some((p, f)) => {
                check_request(self, b, classes, &[p], seed)?;
                let activation = match p {
                    HookPoint::Logits => &logits[..],
                    _ => tape.get(p)?.0,
                };
                Some((p, hook_seed(activation, b, self.hook_width(p), f)?))
            }
            None => None,
        };
        let spare = &self.spare;
        // The blocks' outputs are never read by the backward (ReLU6 masks read the expansions,
        // depthwise outputs, head and stem): unless wanted, back to the recycler before the
        // first gradient buffer is taken, and each other activation as soon as the backward
        // has passed it — so the gradients reuse the tape's memory.
        for blk in &self.blocks {
            self.release(&mut tape, points, Self::block_point(blk, ConvPart::Out));
        }
        let mut record = Recorder::new(points, inject);
        // Nothing after the last block ran: its output's gradient is zero (and the blocks after
        // it pass zeros without reading the tape, below).
        let mut g_x = match last_block {
            Some(_) => Vec::new(),
            None => self.head_backward(b, seed, &mut tape, &mut record)?,
        };
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
        let position = |p: HookPoint| available.iter().position(|a| *a == p);
        for (blk, &input_hw) in self.blocks.iter().zip(&sizes).rev() {
            let out_point = Self::block_point(blk, ConvPart::Out);
            record.at(out_point, &mut g_x, blk.output)?;
            if position(out_point).unwrap_or(0) <= earliest {
                break;
            }
            // A block wholly after a hook-seeded target's hook passes gradient zero.
            let first = if blk.expand.is_some() {
                ConvPart::Expand
            } else {
                ConvPart::Depthwise
            };
            let seeded = record.pending().and_then(position);
            if matches!((seeded, position(Self::block_point(blk, first))), (Some(s), Some(f)) if s < f)
            {
                let n = b * input_hw.0 * input_hw.1 * blk.input;
                spare.give(std::mem::replace(&mut g_x, crate::kernels::zeros(n)));
                continue;
            }
            g_x = if Self::chunks_backward(blk, &record) {
                let input = Nhwc {
                    batch: b,
                    height: input_hw.0,
                    width: input_hw.1,
                    channels: blk.input,
                };
                self.block_backward_chunked(blk, input, g_x, &mut tape)?
            } else {
                self.block_backward(blk, b, input_hw, g_x, &mut tape, &mut record)?
            };
        }
        record.at(HookPoint::Stem, &mut g_x, STEM)?;
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
            outputs: logits,
            tape,
            grads: record.finish(self.family())?,
            pixels,
        })
    }

    /// From the seed on the logits back through the classifier, the spatial mean and the
    /// head to the last block's output.
    fn head_backward(
        &self,
        b: usize,
        seed: &[f32],
        tape: &mut Tape,
        record: &mut Recorder<'_>,
    ) -> Result<Vec<f32>> {
        let classes = self.cfg.num_classes;
        let points = record.points();
        let spare = &self.spare;
        // Classifier and spatial mean.
        let mut g_logits = seed.to_vec();
        record.at(HookPoint::Logits, &mut g_logits, classes)?;
        let mut g_pooled = vec![0f32; b * HEAD];
        matmul_w(&g_logits, classes, &self.fc.weight, HEAD, &mut g_pooled);
        record.at(HookPoint::Pooled, &mut g_pooled, HEAD)?;
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
        record.at(HookPoint::Head, &mut g, HEAD)?;
        relu6_mask(&mut g, head);
        self.release(tape, points, HookPoint::Head);
        let mut g_x = spare.take(b * positions * self.head_in);
        matmul_w(&g, HEAD, &self.head.weight, self.head_in, &mut g_x);
        spare.give(g);
        Ok(g_x)
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
    fn block_backward(
        &self,
        blk: &Block,
        batch: usize,
        (in_h, in_w): (usize, usize),
        g_out: Vec<f32>,
        tape: &mut Tape,
        record: &mut Recorder<'_>,
    ) -> Result<Vec<f32>> {
        let points = record.points();
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
        record.at(dw_point, &mut g_d, blk.expanded)?;
        // The expansion's ReLU6 derivative goes inside the transpose too, unless the gradient
        // at the expansion hook itself (before that derivative) is wanted or seeded.
        let expand_point = Self::block_point(blk, ConvPart::Expand);
        let fuse_expand = blk.expand.is_some()
            && !points.contains(&expand_point)
            && record.pending() != Some(expand_point);
        let masks = Relu6Masks {
            output: Some(tape.get(dw_point)?.0),
            input: if fuse_expand {
                Some(tape.get(expand_point)?.0)
            } else {
                None
            },
        };
        let mut g_h = spare.take(input_shape.len());
        depthwise_backward(
            &mut g_h,
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
                record.at(point, &mut g_h, blk.expanded)?;
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
