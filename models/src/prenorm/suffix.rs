//! Runs that share a prefix with a cached run (causal decoders): a run changed at position `p`
//! has exactly the cached run's activations at every position before `p`, in every block, so
//! only positions `p ..` are computed, their attention reading the cached run's keys and values
//! for the positions before. Activation patching sweeps positions; on average this halves the
//! rows each patched run computes.

use super::{finish, run, usable, Decoder, Kv, Start};
use crate::batch::TokenBatch;
use crate::hooks::Hooks;
use crate::packed::{take, Layout, Spare};
use crate::prefix::{PrefixCache, Suffixes};
use crate::{ModelError, Result};
use candle_core::Tensor;

/// The decoder's forward over one example, keeping each block's prepared attention rows for
/// [`forward_suffixes`]. `None` where the fast path cannot run (see [`usable`]).
pub(crate) fn forward_keeping_prefix(
    d: &Decoder,
    batch: &TokenBatch,
    hooks: &mut dyn Hooks,
    spare: &Spare,
) -> Option<Result<(Tensor, PrefixCache)>> {
    let layers = d.stack.blocks.len();
    if !usable(d.embed.device(), layers, hooks) {
        return None;
    }
    Some((|| {
        let t = prefix_length(batch)?;
        let mut kept = Vec::with_capacity(layers);
        let out = run(
            d,
            batch,
            Start::Embeddings,
            hooks,
            spare,
            &mut Kv::Keep(&mut kept),
        )?;
        let width = d.stack.heads.qkv_width();
        Ok((out, PrefixCache::new(kept, t, width)))
    })())
}

/// Copies of the cached run, copy `c` recomputed from position `suffixes.starts[c]` and block
/// `suffixes.block` on (the blocks before are the cached run's); hooks see `[copies, longest
/// suffix, width]` tensors whose row `r` of copy `c` is position `starts[c] + r`. Returns the
/// final norm's output in that layout. `None` where the fast path cannot run.
pub(crate) fn forward_suffixes(
    d: &Decoder,
    suffixes: &Suffixes<'_>,
    hooks: &mut dyn Hooks,
    spare: &Spare,
) -> Option<Result<Tensor>> {
    let layers = d.stack.blocks.len();
    if !usable(d.embed.device(), layers, hooks) || !d.stack.heads.causal {
        return None;
    }
    Some((|| {
        let hidden = d.embed.dim(1)?;
        let mut pool = spare.take_all();
        let qkv_width = d.stack.heads.qkv_width();
        let (layout, x) = suffix_rows(suffixes, (layers, hidden, qkv_width), &mut pool)?;
        let side = take(&mut pool, layout.rows() * hidden);
        let mut kv = Kv::AfterPrefix {
            prefix: suffixes.prefix,
            starts: suffixes.starts,
        };
        let pool_and_spare = (pool, spare);
        finish(
            d,
            &layout,
            (x, side),
            hooks,
            pool_and_spare,
            (suffixes.block, &mut kv),
        )
    })())
}

/// The length of the one unpadded example a prefix is kept from (an error for anything else).
pub(crate) fn prefix_length(batch: &TokenBatch) -> Result<usize> {
    let (b, t) = batch.input_ids.dims2()?;
    if b != 1 || batch.lengths.first() != Some(&t) {
        return Err(ModelError::Invalid(format!(
            "a prefix is kept from one unpadded example, not a batch of {b}"
        )));
    }
    Ok(t)
}

/// The suffixes' packed rows, checked against a model of `(layers, hidden, qkv_width)`: their
/// layout and the cached residual stream entering `suffixes.block` at each copy's positions
/// (in a buffer from `pool`).
pub(crate) fn suffix_rows(
    suffixes: &Suffixes<'_>,
    (layers, hidden, qkv_width): (usize, usize, usize),
    pool: &mut Vec<Vec<f32>>,
) -> Result<(Layout, Vec<f32>)> {
    check_suffixes(suffixes, layers, hidden, qkv_width)?;
    let len = suffixes.prefix.len();
    let lengths: Vec<usize> = suffixes.starts.iter().map(|&s| len - s).collect();
    let layout = Layout::new(&lengths, lengths.iter().copied().max().unwrap_or(0));
    let mut x = take(pool, layout.rows() * hidden);
    for (c, &start) in suffixes.starts.iter().enumerate() {
        let rows = &suffixes.resid_pre[start * hidden..len * hidden];
        x[layout.offsets[c] * hidden..layout.offsets[c + 1] * hidden].copy_from_slice(rows);
    }
    Ok((layout, x))
}

/// The suffixes fit the cache and the model: every start inside the cached run, the residual
/// stream the cached run's length, the cache from a model of these blocks and widths.
fn check_suffixes(s: &Suffixes<'_>, layers: usize, hidden: usize, qkv_width: usize) -> Result<()> {
    let len = s.prefix.len();
    let fault = if s.block >= layers {
        Some(format!("block {} is past the model's {layers}", s.block))
    } else if s.prefix.blocks.len() != layers || s.prefix.width != qkv_width {
        Some(format!(
            "the prefix holds {} blocks of {}-wide rows; this model has {layers} of {qkv_width}",
            s.prefix.blocks.len(),
            s.prefix.width
        ))
    } else if s.resid_pre.len() != len * hidden {
        Some(format!(
            "the residual stream holds {} values, not the prefix's {len} positions × {hidden}",
            s.resid_pre.len()
        ))
    } else {
        s.starts
            .iter()
            .find(|&&p| p >= len)
            .map(|start| format!("start {start} is past the prefix's {len} positions"))
    };
    match fault {
        Some(why) => Err(ModelError::Invalid(format!("suffix forward: {why}"))),
        None => Ok(()),
    }
}
