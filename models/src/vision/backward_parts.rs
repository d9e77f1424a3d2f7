//! What the hand-written CNN backwards (EfficientNet's, ResNet's) share: an activation's
//! derivative applied from its output, and sums over positions for TCAV.

use crate::hooks::HookPoint;
use crate::model::HookGradients;
use crate::Result;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Elements per parallel task of [`mask_where`].
const MASK_CHUNK: usize = 1 << 16;

/// `g *= 1[keep(y)]`: an activation's derivative from its output `y` (ReLU: `y > 0`; ReLU6:
/// `0 < y < 6`). In parallel: on one thread the mask was 11% of EfficientNet's integrated
/// gradients (arrays of up to 77 MB at batch 16).
pub(super) fn mask_where(g: &mut [f32], y: &[f32], keep: impl Fn(f32) -> bool + Sync) {
    g.par_chunks_mut(MASK_CHUNK)
        .zip(y.par_chunks(MASK_CHUNK))
        .for_each(|(g, y)| {
            g.iter_mut()
                .zip(y)
                .for_each(|(g, &y)| *g = if keep(y) { *g } else { 0.0 })
        });
}

/// Sums `[batch, positions, width]` over positions.
pub(super) fn position_sums(x: &[f32], batch: usize, width: usize) -> Vec<f32> {
    let per = x.len() / batch;
    let mut out = vec![0f32; batch * width];
    for (b, o) in out.chunks_exact_mut(width).enumerate() {
        for row in x[b * per..(b + 1) * per].chunks_exact(width) {
            o.iter_mut().zip(row).for_each(|(o, v)| *o += v);
        }
    }
    out
}

/// TCAV's inputs from one backward: each wanted hook's activation (from `activation`)
/// averaged over its positions, and its gradient (`grads`: `[batch, positions, width]` and the
/// width) summed over them.
pub(super) fn pooled_hook_gradients<'t>(
    batch: usize,
    logits: Vec<f32>,
    grads: BTreeMap<HookPoint, (Vec<f32>, usize)>,
    activation: impl Fn(HookPoint) -> Result<std::borrow::Cow<'t, [f32]>>,
) -> Result<HookGradients> {
    let mut out = HookGradients {
        logits,
        ..Default::default()
    };
    for (p, (g, width)) in grads {
        let a = activation(p)?;
        let positions = a.len() / (batch * width);
        let mut pooled = position_sums(&a, batch, width);
        pooled.iter_mut().for_each(|v| *v /= positions as f32);
        out.pooled.insert(p, pooled);
        out.gradient_sums.insert(p, position_sums(&g, batch, width));
    }
    Ok(out)
}
