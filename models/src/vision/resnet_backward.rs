//! The ResNet backward pass, hand-written like EfficientNet's: from a weighted sum of the
//! outputs back to any hook and to the pixels, for TCAV on images, saliency, integrated
//! gradients, SmoothGrad and Grad-CAM — no autograd graph.
//!
//! One taped forward ([`ResNet::run`]) keeps each ReLU's output (ReLU passes gradient where its
//! output is positive, as PyTorch's `threshold_backward` does) and the max pool's input. The
//! gradient flows through the classifier, the spatial mean, each residual layer in reverse —
//! the ReLU after the add, the main path's convolutions and ReLUs, the shortcut (a projection
//! or the identity) — then through the max pool (to each window's first maximum) and the
//! stem's ReLU and convolution. Convolutions pass gradient by their transpose: `g · W` for a
//! 1 × 1, stride-1 one, else the patch gradients scattered onto their taps. Gradients are
//! reported at a hook with respect to the hooked value itself (after the add and ReLU).

use super::backward_parts::{
    self, check_request, hook_seed, mask_where, pooled_hook_gradients, Recorder,
};
use super::conv::{conv_dense_input_gradient, max_pool_backward, symmetric_padding, Nhwc};
use super::resnet::{Conv, ResNet, Tape};
use crate::batch::ImageBatch;
use crate::hooks::{Capture, HookPoint};
use crate::kernels::{matmul_w, zeros};
use crate::model::{GradientSeed, HookGradients, HookedModel, PixelGradients};
use crate::{ModelError, Result};
use std::collections::BTreeMap;

/// `g *= 1[y > 0]`: the ReLU derivative from its output.
fn relu_mask(g: &mut [f32], y: &[f32]) {
    mask_where(g, y, |y| y > 0.0);
}

impl Conv {
    /// `∂f/∂input` from `∂f/∂output` (`g`, of `output`'s shape) for an input of `input`'s shape.
    fn input_gradient(&self, g: &[f32], output: Nhwc, input: Nhwc) -> Vec<f32> {
        if self.kernel == 1 && self.stride == 1 {
            let mut dx = zeros(input.len());
            matmul_w(g, self.cout, &self.f.weight, self.cin, &mut dx);
            return dx;
        }
        let pad = self.kernel / 2;
        let padding = (
            symmetric_padding(input.height, self.kernel, self.stride, pad),
            symmetric_padding(input.width, self.kernel, self.stride, pad),
        );
        conv_dense_input_gradient(
            g,
            output,
            &self.f.weight,
            self.kernel,
            self.stride,
            padding,
            input,
        )
    }
}

type Backward = backward_parts::Backward<Tape>;

impl ResNet {
    /// TCAV's inputs: activations pooled over positions and gradients summed over them.
    pub(super) fn gradients(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        seed: &[f32],
    ) -> Result<HookGradients> {
        let run = self.backward(batch, points, seed, None, false)?;
        let (tape, outputs) = (&run.tape, &run.outputs);
        let out = pooled_hook_gradients(batch.batch, outputs.clone(), run.grads, |p| {
            Ok(std::borrow::Cow::Owned(activation(tape, outputs, p, self)?))
        })?;
        Ok(out)
    }

    /// Input attributions' inputs: the pixels' gradient, and each hook's activation and
    /// gradient (Grad-CAM).
    pub(super) fn pixel_backward(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        seed: &[f32],
        from_hook: Option<(HookPoint, &mut GradientSeed<'_>)>,
    ) -> Result<PixelGradients> {
        let run = self.backward(batch, points, seed, from_hook, true)?;
        let mut hooks = BTreeMap::new();
        for (p, (g, _)) in run.grads {
            hooks.insert(p, (activation(&run.tape, &run.outputs, p, self)?, g));
        }
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
        let outputs = self
            .classifier
            .as_ref()
            .map_or(self.width(), |_| self.cfg.num_classes);
        let zero = vec![0f32; batch.batch * outputs];
        self.pixel_backward(batch, points, &zero, Some((point, seed)))
    }

    /// From the seed on the outputs back through the classifier (if any) and the spatial mean
    /// to the last layer's output.
    fn head_backward(
        &self,
        b: usize,
        seed: &[f32],
        tape: &Tape,
        record: &mut Recorder<'_>,
    ) -> Result<Vec<f32>> {
        let width = self.width();
        let out_width = self
            .classifier
            .as_ref()
            .map_or(width, |_| self.cfg.num_classes);
        // The classifier (absent: the seed weighs the pooled features) and the spatial mean.
        let mut g_pooled = match &self.classifier {
            Some(fc) => {
                let mut g_out = seed.to_vec();
                record.at(HookPoint::Logits, &mut g_out, out_width)?;
                let mut g = vec![0f32; b * width];
                matmul_w(&g_out, out_width, &fc.weight, width, &mut g);
                g
            }
            None => seed.to_vec(),
        };
        record.at(HookPoint::Pooled, &mut g_pooled, width)?;
        let last = tape.layers.last().map_or(tape.stem.1, |l| l.out.1);
        let positions = last.pixels();
        let mut g = zeros(last.len());
        for (row, gp) in g
            .chunks_exact_mut(positions * width)
            .zip(g_pooled.chunks_exact(width))
        {
            for px in row.chunks_exact_mut(width) {
                px.iter_mut()
                    .zip(gp)
                    .for_each(|(v, p)| *v = p / positions as f32);
            }
        }
        Ok(g)
    }

    fn backward(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        seed: &[f32],
        from_hook: Option<(HookPoint, &mut GradientSeed<'_>)>,
        to_pixels: bool,
    ) -> Result<Backward> {
        let b = batch.batch;
        let width = self.width();
        let out_width = self
            .classifier
            .as_ref()
            .map_or(width, |_| self.cfg.num_classes);
        check_request(self, b, out_width, points, seed)?;
        let available = self.hook_points();
        let mut tape = Tape::default();
        // Seeded at a hook, the forward stops after the last layer anyone asked about.
        let index = |q: HookPoint| self.layers.iter().position(|l| Self::point(l) == q);
        let seeded = from_hook.as_ref().map(|(p, _)| *p);
        let last_layer =
            backward_parts::last_block_needed(points, seeded, self.layers.len(), index);
        let outputs = self.run(batch, &mut Capture::new([]), Some(&mut tape), last_layer)?;
        let inject = match from_hook {
            Some((p, f)) => {
                check_request(self, b, out_width, &[p], seed)?;
                let a = activation(&tape, &outputs, p, self)?;
                Some((p, hook_seed(&a, b, self.hook_width(p), f)?))
            }
            None => None,
        };
        let mut record = Recorder::new(points, inject);
        // Nothing after the last layer ran: its output's gradient is zero (the backward below
        // runs over the taped layers only).
        let last = tape.layers.last().map_or(tape.stem.1, |l| l.out.1);
        let mut g = match last_layer {
            Some(_) => zeros(last.len()),
            None => self.head_backward(b, seed, &tape, &mut record)?,
        };
        // The earliest hook asked for (the stem for pixels): no need to go further back.
        let earliest = if to_pixels {
            0
        } else {
            points
                .iter()
                .filter_map(|p| available.iter().position(|a| a == p))
                .min()
                .unwrap_or(available.len())
        };
        for (layer, taped) in self.layers.iter().zip(&tape.layers).rev() {
            let point = Self::point(layer);
            record.at(point, &mut g, taped.out.1.channels)?;
            if available.iter().position(|a| *a == point).unwrap_or(0) <= earliest {
                return Ok(Backward {
                    outputs,
                    tape,
                    grads: record.finish(self.family())?,
                    pixels: None,
                });
            }
            // A layer after a hook-seeded target's hook passes gradient zero.
            let seeded = record
                .pending()
                .and_then(|s| available.iter().position(|a| *a == s));
            if matches!(seeded, Some(s) if s < available.iter().position(|a| *a == point).unwrap_or(0))
            {
                g = zeros(taped.input.len());
                continue;
            }
            // The ReLU after the residual add, then the main path back to the layer's input.
            relu_mask(&mut g, &taped.out.0);
            let mut shapes = vec![taped.input];
            shapes.extend(taped.inner.iter().map(|(_, s)| *s));
            shapes.push(taped.out.1);
            let mut gh: Option<Vec<f32>> = None;
            for (i, conv) in layer.convs.iter().enumerate().rev() {
                let mut gi = gh.take().unwrap_or_else(|| g.clone());
                if i + 1 < layer.convs.len() {
                    relu_mask(&mut gi, &taped.inner[i].0);
                }
                gh = Some(conv.input_gradient(&gi, shapes[i + 1], shapes[i]));
            }
            let mut g_x = gh.expect("a layer has convolutions");
            match &layer.shortcut {
                Some(sc) => {
                    let g_sc = sc.input_gradient(&g, taped.out.1, taped.input);
                    g_x.iter_mut().zip(&g_sc).for_each(|(a, v)| *a += v);
                }
                None => g_x.iter_mut().zip(&g).for_each(|(a, v)| *a += v),
            }
            g = g_x;
        }
        record.at(HookPoint::Stem, &mut g, tape.stem.1.channels)?;
        let grads = record.finish(self.family())?;
        if !to_pixels {
            return Ok(Backward {
                outputs,
                tape,
                grads,
                pixels: None,
            });
        }
        let (stem_conv, conv_shape) = (&tape.stem_conv.0, tape.stem_conv.1);
        let mut g_conv = max_pool_backward(stem_conv, conv_shape, &g, (3, 2, 1));
        relu_mask(&mut g_conv, stem_conv);
        let input = Nhwc {
            batch: b,
            height: batch.height,
            width: batch.width,
            channels: self.cfg.num_channels,
        };
        let pixels = self.stem.input_gradient(&g_conv, conv_shape, input);
        Ok(Backward {
            outputs,
            tape,
            grads,
            pixels: Some(pixels),
        })
    }
}

/// A hook's activation from the tape, `[batch, positions, width]`.
fn activation(tape: &Tape, outputs: &[f32], p: HookPoint, model: &ResNet) -> Result<Vec<f32>> {
    let layer = || {
        model
            .layers
            .iter()
            .zip(&tape.layers)
            .find(|(l, _)| ResNet::point(l) == p)
            .map(|(_, t)| t.out.0.clone())
    };
    match p {
        HookPoint::Stem => Some(tape.stem.0.clone()),
        HookPoint::Pooled => Some(tape.pooled.clone()),
        HookPoint::Logits => Some(outputs.to_vec()),
        HookPoint::Conv { .. } => layer(),
        _ => None,
    }
    .ok_or_else(|| ModelError::UnknownHook {
        name: p.to_string(),
        hint: " (not a hook point of this resnet model)".into(),
    })
}
