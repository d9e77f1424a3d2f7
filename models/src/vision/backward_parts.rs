//! What the hand-written CNN backwards (EfficientNet's, ResNet's) share: an activation's
//! derivative applied from its output, and sums over positions for TCAV.

use crate::hooks::HookPoint;
use crate::model::{GradientSeed, HookGradients, HookedModel};
use crate::{ModelError, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// One taped forward and the backward from a seed: what a family's TCAV and pixel-gradient
/// entry points read.
pub(super) struct Backward<T> {
    /// The model's outputs `[batch, outputs]`.
    pub(super) outputs: Vec<f32>,
    pub(super) tape: T,
    /// `[batch, positions, width]` gradients at the wanted hooks, with their width.
    pub(super) grads: BTreeMap<HookPoint, (Vec<f32>, usize)>,
    /// `∂f/∂pixels`, when asked for.
    pub(super) pixels: Option<Vec<f32>>,
}

/// Where the backward reads the gradient at each hook it passes and, for a target read off a
/// hook (a probe on its pooled activation), adds that target's seed: every hook's gradient goes
/// through [`Recorder::at`] as the backward reaches it.
pub(super) struct Recorder<'p> {
    points: &'p [HookPoint],
    /// `[batch, positions, width]` gradients at the wanted hooks, with their width.
    pub(super) grads: BTreeMap<HookPoint, (Vec<f32>, usize)>,
    /// `∂f/∂activation` at one hook, added to the gradient arriving there.
    inject: Option<(HookPoint, Vec<f32>)>,
}

impl<'p> Recorder<'p> {
    /// Keeps the gradients at `points`; adds `inject`'s seed at its hook.
    pub(super) fn new(points: &'p [HookPoint], inject: Option<(HookPoint, Vec<f32>)>) -> Self {
        Self {
            points,
            grads: BTreeMap::new(),
            inject,
        }
    }

    /// The hooks whose gradients are kept.
    pub(super) fn points(&self) -> &'p [HookPoint] {
        self.points
    }

    /// The seeded hook, while its seed has not been added.
    pub(super) fn pending(&self) -> Option<HookPoint> {
        self.inject.as_ref().map(|(p, _)| *p)
    }

    /// The gradient `g` (`[batch, positions, width]`) at `p` as the backward reaches it: the
    /// injected seed added when `p` is its hook, then kept when `p` is wanted.
    pub(super) fn at(&mut self, p: HookPoint, g: &mut [f32], width: usize) -> Result<()> {
        if self.pending() == Some(p) {
            let (_, seed) = self.inject.take().expect("pending");
            if seed.len() != g.len() {
                return Err(ModelError::Invalid(format!(
                    "the seed at `{p}` has {} values, its gradient {}",
                    seed.len(),
                    g.len()
                )));
            }
            g.iter_mut().zip(&seed).for_each(|(g, s)| *g += s);
        }
        if self.points.contains(&p) {
            self.grads.insert(p, (g.to_vec(), width));
        }
        Ok(())
    }

    /// The kept gradients; an error when the seeded hook was never reached.
    pub(super) fn finish(self, family: &str) -> Result<BTreeMap<HookPoint, (Vec<f32>, usize)>> {
        match self.inject {
            Some((p, _)) => Err(ModelError::UnknownHook {
                name: p.to_string(),
                hint: format!(
                    " (the {family} backward never passes it; read the target off another hook)"
                ),
            }),
            None => Ok(self.grads),
        }
    }
}

/// A target's seed at a hook from that hook's activation (`[batch, positions, width]`, the
/// same number of positions for every image): `seed(activation, offsets)` with image `b`'s rows
/// at `offsets[b]..offsets[b + 1]`, checked to return one value per activation value.
pub(super) fn hook_seed(
    activation: &[f32],
    batch: usize,
    width: usize,
    seed: &mut GradientSeed<'_>,
) -> Result<Vec<f32>> {
    let positions = activation.len() / (batch * width).max(1);
    let offsets: Vec<usize> = (0..=batch).map(|b| b * positions).collect();
    let d = seed(activation, &offsets);
    if d.len() != activation.len() {
        return Err(ModelError::Invalid(format!(
            "the hook seed has {} values for an activation of {}",
            d.len(),
            activation.len()
        )));
    }
    Ok(d)
}

/// Refuses a backward request before any work: a seed that is not one weight per output of
/// every image, or a hook the model does not have.
pub(super) fn check_request(
    model: &dyn HookedModel,
    batch: usize,
    outputs: usize,
    points: &[HookPoint],
    seed: &[f32],
) -> Result<()> {
    if seed.len() != batch * outputs {
        return Err(ModelError::Invalid(format!(
            "gradient seed has {} values, expected batch {batch} × {outputs} outputs",
            seed.len()
        )));
    }
    let available = model.hook_points();
    match points.iter().find(|p| !available.contains(p)) {
        Some(p) => Err(ModelError::UnknownHook {
            name: p.to_string(),
            hint: format!(" (not a hook point of this {} model)", model.family()),
        }),
        None => Ok(()),
    }
}

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

/// Sums `[batch, positions, width]` over positions (TCAV's gradient sums).
pub fn position_sums(x: &[f32], batch: usize, width: usize) -> Vec<f32> {
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

/// The index of the last block (or layer) of `blocks` that a backward seeded at hook `seeded`
/// needs the forward to run: the latest block the seeded hook or any of `points` lies in
/// (`block_of` for a block's points; the stem's is block 0, which tapes it). `None` when the
/// backward starts at the outputs (`seeded` is `None`), a point lies after every block (head,
/// pooled features, outputs), or the last block is needed anyway.
pub(super) fn last_block_needed(
    points: &[HookPoint],
    seeded: Option<HookPoint>,
    blocks: usize,
    block_of: impl Fn(HookPoint) -> Option<usize>,
) -> Option<usize> {
    let mut last = 0;
    for &p in points.iter().chain([&seeded?]) {
        last = last.max(match p {
            HookPoint::Stem => 0,
            HookPoint::Conv { .. } => block_of(p)?,
            _ => return None,
        });
    }
    (last + 1 < blocks).then_some(last)
}
