//! The interface every text model family implements (`HookableModel`), with the gradient
//! types of its backward. The families live one per file; `registry` builds them by
//! `model_type`.

use crate::hooks::{HookPoint, Hooks};
use crate::Result;
use candle_core::Tensor;

pub use crate::batch::TokenBatch;

/// Gradients entering blocks `first..=last` (index 0 = block `first`), packed rows
/// (`offsets[b]..offsets[b + 1]` are example `b`'s tokens).
pub struct ResidualGradients {
    pub entering: Vec<Vec<f32>>,
    pub offsets: Vec<usize>,
}

/// `seed(output, offsets)`: `∂f/∂output` for the packed output of the last block.
pub type GradientSeed<'a> = dyn FnMut(&[f32], &[usize]) -> Vec<f32> + 'a;

/// A model whose forward pass calls hooks at TransformerLens-named points.
pub trait HookableModel: Send + Sync {
    /// The family name (`bert`, …).
    fn family(&self) -> &'static str;
    /// Every hook point, in forward order.
    fn hook_points(&self) -> Vec<HookPoint>;
    /// Width of the activation at a hook point (the last dimension).
    fn hook_width(&self, point: HookPoint) -> usize;
    /// Longest sequence the model accepts.
    fn max_positions(&self) -> usize;
    /// Vocabulary size of the embedding matrix.
    fn vocab_size(&self) -> usize;
    /// Runs the batch, calling `hooks` at every point; returns the final hidden state.
    fn forward(&self, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor>;
    /// The same forward in candle ops that support autograd (slower); same hooks and values.
    fn forward_differentiable(&self, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor>;
    /// The differentiable forward from block `block` on, given the residual stream entering it
    /// (`blocks.{block}.hook_resid_pre`, whose hook is called first); for gradients at deep
    /// hooks without running the early blocks differentiably.
    fn forward_differentiable_from(
        &self,
        batch: &TokenBatch,
        block: usize,
        resid_pre: Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor>;
    /// A hand-written backward through blocks `first..=last`, where the family has one:
    /// `seed(output, offsets)` receives the packed output of block `last` and returns
    /// `∂f/∂output`; the result holds the gradient entering each block. `None`: use autograd.
    fn residual_gradients(
        &self,
        _batch: &TokenBatch,
        _first: usize,
        _last: usize,
        _seed: &mut GradientSeed<'_>,
    ) -> Option<Result<ResidualGradients>> {
        None
    }
    /// The unembedding matrix `[vocab, hidden]` (rows are tokens' output directions), for
    /// families that have one (causal LMs).
    fn unembedding(&self) -> Option<&Tensor> {
        None
    }
    /// Logits `[b, t, vocab]` from the final normalised hidden state; `None` for encoders.
    fn unembed(&self, normalized: &Tensor) -> Option<Result<Tensor>> {
        self.unembedding()
            .map(|u| crate::layers::unembed(normalized, u))
    }
}
