//! The one hook mechanism that serves capture and replacement.
//!
//! A model calls [`Hooks::visit`] at every hook point, in forward order, with the activation as
//! `[batch, seq, width]`; the model continues with whatever tensor the hook returns. Capturing
//! returns the input unchanged (candle tensors are reference-counted, so keeping one is cheap);
//! patching or splicing returns a different tensor. The points themselves
//! ([`HookPoint`]) live in `glassbox_data`, so every crate names hooks with the same type.

use candle_core::Tensor;
use std::collections::{BTreeMap, BTreeSet};

pub use glassbox_data::hook_point::{glob_match, select, ConvPart, HookError, HookPoint};

/// Receives every hook point during a forward pass.
pub trait Hooks {
    /// Whether this hook point is of interest. Models skip work (e.g. reshaping q/k/v into the
    /// stored layout) for hook points nobody wants.
    fn wants(&self, point: HookPoint) -> bool;
    /// Called with the activation `[batch, seq, width]`; returns the tensor the model continues with.
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor>;
    /// Whether the tensors returned by [`Self::visit`] must stay connected to the rest of the
    /// forward for autograd: then models run their candle-graph forward, since the fast
    /// forwards copy a replacement's values into their own buffers.
    fn needs_graph(&self) -> bool {
        false
    }
    /// Whether the hooks already have all they need and the caller will not read the
    /// forward's output (a target read off a hook inside the network, extraction): forwards
    /// then skip the blocks after the current one. The text families' differentiable forwards
    /// return that block's residual stream; what other forwards return then is not the model's
    /// output (the CNNs' is empty).
    fn satisfied(&self) -> bool {
        false
    }
}

/// Records the activations at a set of hook points.
#[derive(Debug, Default)]
pub struct Capture {
    wanted: BTreeSet<HookPoint>,
    pub captured: BTreeMap<HookPoint, Tensor>,
    /// The caller reads only the captured activations, not the forward's output.
    only: bool,
}

impl Capture {
    pub fn new(points: impl IntoIterator<Item = HookPoint>) -> Self {
        Self {
            wanted: points.into_iter().collect(),
            captured: BTreeMap::new(),
            only: false,
        }
    }

    /// A capture whose caller reads the activations and not the forward's output (extraction,
    /// a probe's value): once every point is captured it is [`Hooks::satisfied`], and the
    /// forward skips the blocks after the last one.
    pub fn only(points: impl IntoIterator<Item = HookPoint>) -> Self {
        Self {
            only: true,
            ..Self::new(points)
        }
    }

    /// The activation captured at `point`, or an error naming it when the `family`'s forward
    /// never reached it.
    pub fn get(&self, point: HookPoint, family: &str) -> crate::Result<&Tensor> {
        self.captured
            .get(&point)
            .ok_or_else(|| crate::ModelError::UnknownHook {
                name: point.to_string(),
                hint: format!(" (the {family} forward never reached it)"),
            })
    }
}

impl Hooks for Capture {
    fn wants(&self, point: HookPoint) -> bool {
        self.wanted.contains(&point)
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        if self.wanted.contains(&point) {
            self.captured.insert(point, x.clone());
        }
        Ok(x)
    }
    fn satisfied(&self) -> bool {
        self.only
            && !self.wanted.is_empty()
            && self.wanted.iter().all(|p| self.captured.contains_key(p))
    }
}

/// Calls `hooks` at `point` when it wants it; otherwise passes `x` through untouched.
pub(crate) fn at(
    hooks: &mut dyn Hooks,
    point: HookPoint,
    x: Tensor,
) -> candle_core::Result<Tensor> {
    if hooks.wants(point) {
        hooks.visit(point, x)
    } else {
        Ok(x)
    }
}
