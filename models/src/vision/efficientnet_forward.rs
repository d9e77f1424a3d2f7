//! EfficientNet-Lite's forward on channels-last buffers, shared by `HookedModel::forward`
//! (hooks see each activation) and the backward's taped forward (every activation kept on a
//! [`Tape`] for the backward to read, then handed back to the model's
//! [`Recycler`](crate::kernels::Recycler)).
//!
//! In a taped forward every large output comes from the model's recycler uncleared: each is
//! overwritten entirely (a product without `accumulate`, a depthwise convolution that starts
//! each pixel from its bias) before anything reads it.

use super::conv::{conv_dense, global_mean, same_padding, Nhwc};
use super::depthwise::conv_depthwise;
use super::efficientnet::{EfficientNet, HEAD, STEM};
use super::folded::{hold, visit, Held};
use crate::batch::ImageBatch;
use crate::hooks::{ConvPart, HookPoint, Hooks};
use crate::kernels::{add_bias, bias_relu6, matmul_wt, Recycler};
use crate::{ModelError, Result};
use std::collections::BTreeMap;

/// Every activation of one taped forward, in its own buffer, with its shape.
#[derive(Default)]
pub(super) struct Tape {
    kept: BTreeMap<HookPoint, (Vec<f32>, Nhwc)>,
}

impl Tape {
    /// The activation at `point` and its shape.
    pub(super) fn get(&self, point: HookPoint) -> Result<(&[f32], Nhwc)> {
        self.kept
            .get(&point)
            .map(|(v, s)| (v.as_slice(), *s))
            .ok_or_else(|| Self::missing(point))
    }

    /// The activation at `point`, moved out of the tape.
    pub(super) fn remove(&mut self, point: HookPoint) -> Result<Vec<f32>> {
        self.kept
            .remove(&point)
            .map(|(v, _)| v)
            .ok_or_else(|| Self::missing(point))
    }

    fn missing(point: HookPoint) -> ModelError {
        ModelError::UnknownHook {
            name: point.to_string(),
            hint: " (the efficientnet_lite forward did not keep it)".into(),
        }
    }

    /// Keeps `v` (of `shape`) as the activation at `point`.
    pub(super) fn keep(&mut self, point: HookPoint, v: Vec<f32>, shape: Nhwc) {
        self.kept.insert(point, (v, shape));
    }

    /// Every buffer still on the tape.
    pub(super) fn into_buffers(self) -> impl Iterator<Item = Vec<f32>> {
        self.kept.into_values().map(|(v, _)| v)
    }
}

impl EfficientNet {
    /// The logits (`[batch, classes]`, row-major). Hooks see every hook point they want; with a
    /// `tape`, every hook point's activation is also kept on it (pass hooks that want nothing:
    /// a tensor a hook keeps cannot go on the tape). With `last_block`, the forward stops after
    /// that block (its output on the tape) and returns no logits: a backward seeded at a hook
    /// inside the network needs nothing after it.
    pub(super) fn run(
        &self,
        batch: &ImageBatch,
        hooks: &mut dyn Hooks,
        mut tape: Option<&mut Tape>,
        last_block: Option<usize>,
    ) -> Result<Vec<f32>> {
        let shape = Nhwc::of_batch(batch, 3)?;
        let pad = |s: Nhwc, k, stride| {
            (
                same_padding(s.height, k, stride),
                same_padding(s.width, k, stride),
            )
        };
        // Only a taped forward draws on the model's recycler: its buffers all stay alive on the
        // tape anyway, and the backward hands them back for the next step. A plain forward
        // frees each buffer once read (a fresh, throwaway recycler clears what it hands out),
        // so its peak stays a few activations: kept in the recycler, one batch's every
        // activation of every size stayed resident (ResNet-50, forward only: 2.7 GB against
        // 0.8 GB peak, measured 2026-12-06).
        let throwaway = Recycler::default();
        let spare = if tape.is_some() {
            &self.spare
        } else {
            &throwaway
        };
        let (mut x, mut shape) = conv_dense(
            spare,
            &batch.pixels,
            shape,
            &self.stem.weight,
            STEM,
            3,
            2,
            pad(shape, 3, 2),
        );
        bias_relu6(&mut x, &self.stem.bias);
        // Each hooked activation is read where the hooks left it (`hold`): no copy back.
        let mut x = hold(hooks, HookPoint::Stem, x, shape)?;
        let mut x_point = HookPoint::Stem;
        for (i, b) in self.blocks.iter().enumerate() {
            let chunked = Self::inner_points(b)
                .into_iter()
                .flatten()
                .all(|p| !hooks.wants(p));
            let (out, out_shape) = if chunked {
                let input_view = x.view()?;
                self.block_forward_chunked(
                    spare,
                    b,
                    input_view.slice()?,
                    shape,
                    tape.as_deref_mut(),
                )
            } else {
                let input_view = x.view()?;
                let input = input_view.slice()?;
                let mut hs = shape;
                let expanded = match &b.expand {
                    Some(e) => {
                        let mut out = spare.take(shape.batch * shape.pixels() * b.expanded);
                        matmul_wt(input, b.input, &e.weight, b.expanded, &mut out);
                        bias_relu6(&mut out, &e.bias);
                        hs.channels = b.expanded;
                        let point = Self::block_point(b, ConvPart::Expand);
                        Some(hold(hooks, point, out, hs)?)
                    }
                    None => None,
                };
                let (mut d, ds) = {
                    let expanded_view = expanded.as_ref().map(|h| h.view()).transpose()?;
                    let h = match &expanded_view {
                        Some(v) => v.slice()?,
                        None => input,
                    };
                    conv_depthwise(
                        spare,
                        h,
                        hs,
                        &b.depthwise.weight,
                        &b.depthwise.bias,
                        b.kernel,
                        b.stride,
                        pad(hs, b.kernel, b.stride),
                    )
                };
                if let Some(e) = expanded {
                    Self::retire(&mut tape, Self::block_point(b, ConvPart::Expand), e, hs);
                }
                bias_relu6(&mut d, &[]);
                let dw_point = Self::block_point(b, ConvPart::Depthwise);
                let d = hold(hooks, dw_point, d, ds)?;
                let mut out = spare.take(ds.batch * ds.pixels() * b.output);
                matmul_wt(
                    d.view()?.slice()?,
                    b.expanded,
                    &b.project.weight,
                    b.output,
                    &mut out,
                );
                Self::retire(&mut tape, dw_point, d, ds);
                add_bias(&mut out, &b.project.bias);
                if b.skip() {
                    out.iter_mut().zip(input).for_each(|(o, i)| *o += i);
                }
                let out_shape = Nhwc {
                    channels: b.output,
                    ..ds
                };
                (out, out_shape)
            };
            Self::retire(&mut tape, x_point, x, shape);
            shape = out_shape;
            x_point = Self::block_point(b, ConvPart::Out);
            x = hold(hooks, x_point, out, shape)?;
            if last_block == Some(i) || hooks.satisfied() {
                Self::retire(&mut tape, x_point, x, shape);
                return Ok(Vec::new());
            }
        }
        let mut head = spare.take(shape.batch * shape.pixels() * HEAD);
        matmul_wt(
            x.view()?.slice()?,
            self.head_in,
            &self.head.weight,
            HEAD,
            &mut head,
        );
        Self::retire(&mut tape, x_point, x, shape);
        bias_relu6(&mut head, &self.head.bias);
        let head_shape = Nhwc {
            channels: HEAD,
            ..shape
        };
        visit(hooks, HookPoint::Head, &mut head, head_shape)?;
        let pooled_shape = Nhwc {
            height: 1,
            width: 1,
            ..head_shape
        };
        let mut pooled = global_mean(&head, head_shape);
        Self::retire(&mut tape, HookPoint::Head, Held::Owned(head), head_shape);
        visit(hooks, HookPoint::Pooled, &mut pooled, pooled_shape)?;
        let classes = self.cfg.num_classes;
        let mut logits = vec![0f32; shape.batch * classes];
        matmul_wt(&pooled, HEAD, &self.fc.weight, classes, &mut logits);
        Self::retire(
            &mut tape,
            HookPoint::Pooled,
            Held::Owned(pooled),
            pooled_shape,
        );
        add_bias(&mut logits, &self.fc.bias);
        visit(
            hooks,
            HookPoint::Logits,
            &mut logits,
            Nhwc {
                channels: classes,
                ..pooled_shape
            },
        )?;
        Ok(logits)
    }

    /// Done with the activation at `point`: onto the tape when there is one, else freed. A
    /// tensor the hooks returned stays theirs.
    fn retire(tape: &mut Option<&mut Tape>, point: HookPoint, held: Held, shape: Nhwc) {
        if let (Held::Owned(v), Some(t)) = (held, tape) {
            t.keep(point, v, shape);
        }
    }
}
