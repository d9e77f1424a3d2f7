//! Reusing a causal run's unchanged prefix: what [`crate::HookedModel::forward_keeping_prefix`]
//! keeps and [`crate::HookedModel::forward_suffixes`] reads.

/// One run's attention inputs at every block: the `[q | k | v]` rows of each position after
/// the projections' bias and the rotary embedding, as attention reads them. Runs that equal
/// this one before some position reuse them instead of recomputing those positions.
#[derive(Debug, Clone)]
pub struct PrefixCache {
    /// Per block, `len` rows `width` wide.
    pub(crate) blocks: Vec<Vec<f32>>,
    pub(crate) len: usize,
    pub(crate) width: usize,
}

impl PrefixCache {
    pub(crate) fn new(blocks: Vec<Vec<f32>>, len: usize, width: usize) -> Self {
        debug_assert!(blocks.iter().all(|b| b.len() == len * width));
        Self { blocks, len, width }
    }

    /// Positions of the cached run.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Copies of a cached run, each recomputed from its own position on: copy `c` holds positions
/// `starts[c] .. prefix.len()` and runs blocks `block ..`, starting from the cached run's
/// residual stream entering `block` at those positions (a hook then changes it). Valid for
/// causal models, where positions before `starts[c]` cannot see the change.
pub struct Suffixes<'a> {
    /// The first block run.
    pub block: usize,
    /// Per copy, its first position.
    pub starts: &'a [usize],
    /// The cached run's residual stream entering `block`, `[prefix.len() × hidden]`.
    pub resid_pre: &'a [f32],
    /// The cached run's attention inputs.
    pub prefix: &'a PrefixCache,
}
