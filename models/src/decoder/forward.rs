//! The block forward of [`super::Decoder`], with its masks and soft-capping.

use super::{Decoder, QkNorm};
use crate::batch::TokenBatch;
use crate::hooks::{at, HookPoint, Hooks};
use crate::Result;
use candle_core::{Tensor, D};
use std::collections::HashMap;

/// `cap · tanh(x / cap)` (Gemma-2's soft-capping of attention scores and logits).
pub(crate) fn softcap(x: &Tensor, cap: f64) -> candle_core::Result<Tensor> {
    (x / cap)?.tanh()? * cap
}

/// The additive masks of one forward, one per attention window, built on first use.
pub(crate) struct Masks<'b> {
    batch: &'b TokenBatch,
    built: HashMap<Option<usize>, Tensor>,
}

impl<'b> Masks<'b> {
    pub(crate) fn new(batch: &'b TokenBatch) -> Self {
        Masks {
            batch,
            built: HashMap::new(),
        }
    }

    fn get(&mut self, window: Option<usize>) -> Result<&Tensor> {
        if !self.built.contains_key(&window) {
            let mask = crate::layers::windowed_causal_mask(self.batch, window)?;
            self.built.insert(window, mask);
        }
        Ok(&self.built[&window])
    }
}

fn norm(n: &Option<crate::layers::RmsNorm>, x: &Tensor) -> candle_core::Result<Tensor> {
    match n {
        Some(n) => n.forward(x),
        None => Ok(x.clone()),
    }
}

impl Decoder {
    /// Block `i` (upstream: `Gemma2DecoderLayer`, `Olmo2DecoderLayer`, … in `transformers`).
    pub(super) fn block(
        &self,
        i: usize,
        x: Tensor,
        masks: &mut Masks<'_>,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        let layer = &self.layers[i];
        let x = at(hooks, HookPoint::ResidPre(i), x)?;
        let h = norm(&layer.attn_norm, &x)?;
        let z = self.attention(i, &h, masks, hooks)?;
        let z = at(hooks, HookPoint::AttnZ(i), z)?;
        let attn_out = norm(&layer.attn_post_norm, &layer.attn.o.forward(&z)?)?;
        let attn_out = at(hooks, HookPoint::AttnOut(i), attn_out)?;
        let mid = at(hooks, HookPoint::ResidMid(i), x.add(&attn_out)?)?;
        let h2 = norm(&layer.mlp_norm, &mid)?;
        let mlp = &layer.mlp;
        let neurons = self
            .act
            .apply(&mlp.gate.forward(&h2)?)?
            .mul(&mlp.up.forward(&h2)?)?;
        let neurons = at(hooks, HookPoint::MlpPost(i), neurons)?;
        let mlp_out = norm(&layer.mlp_post_norm, &mlp.down.forward(&neurons)?)?;
        let mlp_out = at(hooks, HookPoint::MlpOut(i), mlp_out)?;
        Ok(at(hooks, HookPoint::ResidPost(i), mid.add(&mlp_out)?)?)
    }

    /// Grouped-query attention of block `i` over normalised `h`; returns `z` as
    /// `[b, t, heads · head_dim]`.
    fn attention(
        &self,
        i: usize,
        h: &Tensor,
        masks: &mut Masks<'_>,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        let a = &self.layers[i].attn;
        let (b, t, _) = h.dims3()?;
        let (heads, kv, hd) = (self.dims.heads, self.dims.kv_heads, self.dims.head_dim);
        let q = at(hooks, HookPoint::AttnQ(i), a.q.forward(h)?)?;
        let k = at(hooks, HookPoint::AttnK(i), a.k.forward(h)?)?;
        let v = at(hooks, HookPoint::AttnV(i), a.v.forward(h)?)?;
        let whole = |n: &Option<QkNorm>, m: Tensor| -> candle_core::Result<Tensor> {
            match n {
                Some(QkNorm::Whole(n)) => n.forward(&m),
                _ => Ok(m),
            }
        };
        let per_head = |n: &Option<QkNorm>, m: Tensor| -> candle_core::Result<Tensor> {
            match n {
                Some(QkNorm::PerHead(n)) => n.forward(&m),
                _ => Ok(m),
            }
        };
        let split = |m: &Tensor, n: usize| -> candle_core::Result<Tensor> {
            m.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = per_head(&a.q_norm, split(&whole(&a.q_norm, q)?, heads)?)?;
        let k = per_head(&a.k_norm, split(&whole(&a.k_norm, k)?, kv)?)?;
        let q = a.rotary.apply(&q)?;
        let k = a.rotary.apply(&k)?;
        let v = split(&v, kv)?;
        let k = crate::layers::repeat_kv(k, heads)?;
        let v = crate::layers::repeat_kv(v, heads)?;
        let scores = (q.matmul(&k.t()?)? * self.attn_scale)?;
        let scores = match self.attn_softcap {
            Some(cap) => softcap(&scores, cap)?,
            None => scores,
        };
        let scores = scores.broadcast_add(masks.get(a.window)?)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let probs = crate::layers::pattern_hook(hooks, i, probs)?;
        Ok(probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, t, heads * hd))?)
    }
}
