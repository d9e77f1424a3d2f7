//! What a family whose fast forward is a [`Decoder`] implements ([`FastDecoder`]), and the
//! `HookedModel` methods it then gets from the fast forward, written once for GPT-2, Llama and
//! GPT-NeoX.

use super::{forward_from, forward_keeping_prefix, forward_suffixes, Decoder};
use crate::batch::TokenBatch;
use crate::hooks::Hooks;
use crate::packed::Spare;
use crate::prefix::PrefixCache;
use crate::Result;
use candle_core::Tensor;

/// A family whose fast forward is a [`Decoder`]: what the generic entry points below need, so
/// that each family's `HookedModel` methods for them are one line.
pub(crate) trait FastDecoder {
    /// The decoder's weights as the kernels read them, and the family's spare buffers.
    fn parts(&self) -> (Decoder<'_>, &Spare);
    /// An error when the batch is longer than the family can run.
    fn fits(&self, batch: &TokenBatch) -> Result<()>;
}

/// [`forward_from`] for a family, after its length check.
pub(crate) fn from_block(
    m: &impl FastDecoder,
    batch: &TokenBatch,
    first: usize,
    resid_pre: &Tensor,
    hooks: &mut dyn Hooks,
) -> Option<Result<Tensor>> {
    if let Err(e) = m.fits(batch) {
        return Some(Err(e));
    }
    let (d, spare) = m.parts();
    forward_from(&d, batch, first, resid_pre, hooks, spare)
}

/// [`forward_keeping_prefix`] for a family, after its length check.
pub(crate) fn keeping_prefix(
    m: &impl FastDecoder,
    batch: &TokenBatch,
    hooks: &mut dyn Hooks,
) -> Option<Result<(Tensor, PrefixCache)>> {
    if let Err(e) = m.fits(batch) {
        return Some(Err(e));
    }
    let (d, spare) = m.parts();
    forward_keeping_prefix(&d, batch, hooks, spare)
}

/// [`forward_suffixes`] for a family (the cached run passed its length check).
pub(crate) fn suffixes(
    m: &impl FastDecoder,
    suffixes: &crate::prefix::Suffixes<'_>,
    hooks: &mut dyn Hooks,
) -> Option<Result<Tensor>> {
    let (d, spare) = m.parts();
    forward_suffixes(&d, suffixes, hooks, spare)
}

/// The `HookedModel` methods a [`FastDecoder`] family serves from the fast forward, written
/// once: `prenorm::fast_decoder_methods!();` inside the family's `impl HookedModel`.
macro_rules! fast_decoder_methods {
    () => {
        fn forward_from(
            &self,
            batch: &$crate::batch::TokenBatch,
            block: usize,
            resid_pre: &candle_core::Tensor,
            hooks: &mut dyn $crate::hooks::Hooks,
        ) -> Option<$crate::Result<candle_core::Tensor>> {
            $crate::prenorm::from_block(self, batch, block, resid_pre, hooks)
        }
        fn forward_keeping_prefix(
            &self,
            batch: &$crate::batch::TokenBatch,
            hooks: &mut dyn $crate::hooks::Hooks,
        ) -> Option<$crate::Result<(candle_core::Tensor, $crate::prefix::PrefixCache)>> {
            $crate::prenorm::keeping_prefix(self, batch, hooks)
        }
        fn forward_suffixes(
            &self,
            suffixes: &$crate::prefix::Suffixes<'_>,
            hooks: &mut dyn $crate::hooks::Hooks,
        ) -> Option<$crate::Result<candle_core::Tensor>> {
            $crate::prenorm::suffixes(self, suffixes, hooks)
        }
    };
}
pub(crate) use fast_decoder_methods;
