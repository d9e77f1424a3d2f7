//! One configurable causal decoder for the families whose blocks differ from Llama's only in
//! where the norms sit and what the attention adds: Gemma-2 and Gemma-3 (sandwich norms,
//! soft-capping, scaled embeddings, local/global layers), Qwen3 (q/k norms), OLMo-2 (post-norm
//! blocks) and Phi-3 (fused projections, split at load). Each family's file reads its config
//! and names its weights; this module runs them — as TransformerLens runs every family through
//! one `HookedTransformer` configured per architecture.
//!
//! Per block, with `x = blocks.{i}.hook_resid_pre`:
//! `hook_q/k/v` = the projections of `norm(x)` (before any q/k norm and before rotary),
//! `hook_z` = attention output per query head, `hook_attn_out` = what the attention adds to the
//! residual stream (after the output projection and, where the family has one, the norm after
//! attention), `hook_resid_mid = x + hook_attn_out`, `mlp.hook_post = act(gate) ⊙ up`,
//! `hook_mlp_out` = what the MLP adds (after its post-norm, if any), `hook_resid_post`.
//! `hook_embed` is the token embedding as it enters the stream (Gemma: times √d).
//! `forward` runs the packed fast path (`fast.rs`); the candle-ops graph forward (`forward.rs`)
//! is the differentiable one and serves attention-pattern hooks.

pub(crate) mod config;
mod fast;
pub(crate) mod forward;
pub(crate) mod parts;

pub(crate) use parts::{Attention, Dims, Layer, Mlp, QkNorm};

use crate::batch::TokenBatch;
use crate::held::Held;
use crate::hooks::{HookPoint, Hooks};
use crate::layers::{Activation, RmsNorm};
use crate::model::{FinalNorm, HookedModel, Input};
use crate::Result;
use candle_core::Tensor;
use glassbox_data::Modality;

/// A decoder described by its family's file.
pub(crate) struct Decoder {
    /// The family as the manifest records it (`gemma2`, `qwen3`, …).
    pub(crate) family: &'static str,
    pub(crate) dims: Dims,
    pub(crate) act: Activation,
    /// `[vocab, hidden]`, as held (GGUF blocks stay blocks: rows are dequantised as looked up).
    pub(crate) embed: Held,
    /// Gemma multiplies embeddings by √hidden (rounded to f32, as `transformers` does).
    pub(crate) embed_scale: Option<f32>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: RmsNorm,
    /// `[vocab, hidden]`: the output head, or the embedding when tied, as held; `None` for an
    /// untied checkpoint saved without its head (a base model).
    pub(crate) unembed: Option<Held>,
    /// A quantised head dequantised once, on first use (the logits, the logit lens and direct
    /// logit attribution read it whole).
    pub(crate) unembed_f32: std::sync::OnceLock<Tensor>,
    /// Attention scores' scale (Gemma: `query_pre_attn_scalar^-½`, else `head_dim^-½`).
    pub(crate) attn_scale: f64,
    /// Gemma-2: scores become `cap · tanh(scores / cap)` before the mask.
    pub(crate) attn_softcap: Option<f64>,
    /// Gemma-2: logits become `cap · tanh(logits / cap)`.
    pub(crate) final_softcap: Option<f64>,
    /// The precision of the fast forward's matrix products (`--compute-dtype`).
    pub(crate) compute: crate::ComputeDtype,
    /// The fast forward's buffers, kept between calls.
    pub(crate) spare: crate::packed::Spare,
    /// A sequence classifier's `score` head (`…ForSequenceClassification`).
    pub(crate) score: Option<crate::score_head::ScoreHead>,
}

impl Decoder {
    /// A decoder with unscaled embeddings, a plain RMSNorm at the end, scores scaled by
    /// `head_dim^-½` and no soft-capping; the head is `lm_head` unless the config ties it.
    pub(crate) fn plain(
        family: &'static str,
        base: &config::DecoderConfig,
        w: &crate::weights::Weights,
        layers: Vec<Layer>,
        default_act: &str,
    ) -> Result<Self> {
        use crate::ModelError;
        let d = base.dims().map_err(ModelError::Invalid)?;
        let (embed, unembed) = tables(w, d, base.tie_word_embeddings != Some(true))?;
        Ok(Decoder {
            family,
            dims: d,
            act: Activation::parse(base.activation(default_act)).map_err(ModelError::Invalid)?,
            embed,
            embed_scale: None,
            layers,
            norm: RmsNorm::load(w, "norm.weight", d.hidden, base.rms_norm_eps)?,
            unembed,
            unembed_f32: Default::default(),
            attn_scale: (d.head_dim as f64).powf(-0.5),
            attn_softcap: None,
            final_softcap: None,
            compute: Default::default(),
            spare: Default::default(),
            score: None,
        })
    }

    fn graph_forward(&self, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor> {
        // Rows of a reduced-precision table are upcast after the lookup.
        let x = self
            .embed
            .embedding(batch)?
            .to_dtype(candle_core::DType::F32)?;
        let x = match self.embed_scale {
            Some(s) => (x * f64::from(s))?,
            None => x,
        };
        let x = crate::hooks::at(hooks, HookPoint::Embed, x)?;
        self.run_from(batch, 0, x, hooks)
    }

    fn run_from(
        &self,
        batch: &TokenBatch,
        first: usize,
        mut x: Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        crate::layers::check_positions(batch, self.dims.max_positions, "max_position_embeddings")?;
        let mut masks = forward::Masks::new(batch);
        for i in first..self.layers.len() {
            x = self.block(i, x, &mut masks, hooks)?;
            if hooks.satisfied() {
                return Ok(x);
            }
        }
        let normalized = crate::hooks::at(hooks, HookPoint::LnFinal, self.norm.forward(&x)?)?;
        if hooks.wants(HookPoint::Logits) {
            let logits = self.logits(&normalized)?;
            crate::hooks::at(hooks, HookPoint::Logits, logits)?;
        }
        Ok(normalized)
    }

    /// The output head as a tensor: as held, or (GGUF blocks) dequantised on first use and kept;
    /// `None` without one.
    fn unembed_tensor(&self) -> Result<Option<&Tensor>> {
        Ok(match &self.unembed {
            None => None,
            Some(Held::Tensor(t)) => Some(t),
            Some(Held::Quantized(q)) => Some(match self.unembed_f32.get() {
                Some(t) => t,
                None => {
                    let t = q.to_tensor()?;
                    self.unembed_f32.get_or_init(|| t)
                }
            }),
        })
    }

    /// The unembedding of a normalised stream, soft-capped where the family caps logits.
    fn logits(&self, normalized: &Tensor) -> Result<Tensor> {
        let unembed = self.unembed_tensor()?.ok_or_else(|| {
            crate::ModelError::Invalid(format!("this checkpoint {}", crate::layers::NO_LM_HEAD))
        })?;
        let logits = if unembed.dtype() == normalized.dtype() {
            crate::layers::unembed(normalized, unembed)?
        } else {
            // One transient copy of the head in the stream's precision.
            crate::layers::unembed(normalized, &unembed.to_dtype(normalized.dtype())?)?
        };
        self.cap_logits(&logits)
    }
}

impl HookedModel for Decoder {
    crate::score_head::score_head_methods!();

    fn family(&self) -> &'static str {
        self.family
    }
    fn modality(&self) -> Modality {
        Modality::Text
    }
    fn hook_points(&self) -> Vec<HookPoint> {
        let points = crate::layers::decoder_hook_points(self.layers.len());
        crate::score_head::hooks_of(points, self.score.is_none() && self.unembed.is_some())
    }
    fn hook_width(&self, point: HookPoint) -> usize {
        let d = &self.dims;
        match point {
            HookPoint::MlpPost(_) => d.inner,
            HookPoint::AttnQ(_) | HookPoint::AttnZ(_) => d.heads * d.head_dim,
            HookPoint::AttnK(_) | HookPoint::AttnV(_) => d.kv_heads * d.head_dim,
            HookPoint::AttnPattern(_) => d.heads * d.max_positions,
            HookPoint::Logits => d.vocab,
            _ => d.hidden,
        }
    }
    fn max_positions(&self) -> Option<usize> {
        Some(self.dims.max_positions)
    }
    fn attention_heads(&self) -> Option<usize> {
        Some(self.dims.heads)
    }
    fn vocab_size(&self) -> Option<usize> {
        Some(self.dims.vocab)
    }
    fn forward(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let batch = input.tokens(self.family)?;
        if crate::prenorm::usable(&self.embed.device(), self.layers.len(), hooks) {
            return self.fast_forward(batch, hooks);
        }
        self.graph_forward(batch, hooks)
    }
    fn forward_differentiable(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        self.graph_forward(input.tokens(self.family)?, hooks)
    }
    fn forward_keeping_prefix(
        &self,
        batch: &TokenBatch,
        hooks: &mut dyn Hooks,
    ) -> Option<Result<(Tensor, crate::prefix::PrefixCache)>> {
        let layers = self.layers.len();
        if !crate::prenorm::usable(&self.embed.device(), layers, hooks) {
            return None;
        }
        Some(self.fast_keeping_prefix(batch, hooks))
    }
    fn forward_suffixes(
        &self,
        suffixes: &crate::prefix::Suffixes<'_>,
        hooks: &mut dyn Hooks,
    ) -> Option<Result<Tensor>> {
        let layers = self.layers.len();
        if !crate::prenorm::usable(&self.embed.device(), layers, hooks) {
            return None;
        }
        Some(self.fast_suffixes(suffixes, hooks))
    }
    fn forward_from(
        &self,
        batch: &TokenBatch,
        block: usize,
        resid_pre: &Tensor,
        hooks: &mut dyn Hooks,
    ) -> Option<Result<Tensor>> {
        let layers = self.layers.len();
        if block >= layers || !crate::prenorm::usable(&self.embed.device(), layers, hooks) {
            return None;
        }
        Some(self.fast_forward_from(batch, block, resid_pre, hooks))
    }
    /// bf16 products need every projection held in bf16: the kernel reads the weights as
    /// held, and widening f32 weights would not be the bf16 model the user asked for.
    fn set_compute_dtype(&mut self, dtype: crate::ComputeDtype) -> Result<()> {
        if dtype == crate::ComputeDtype::Bf16 {
            let held = self
                .layers
                .iter()
                .flat_map(Layer::projections)
                .find(|w| !w.weight.is_bf16());
            if let Some(l) = held {
                return Err(crate::ModelError::Invalid(format!(
                    "--compute-dtype bf16: this {} model holds its weights in {}; bf16 products read bf16 weights: add --weights-dtype bf16 (or use a bf16 checkpoint with --weights-dtype auto)",
                    self.family,
                    l.weight.describe()
                )));
            }
        }
        self.compute = dtype;
        Ok(())
    }
    fn forward_differentiable_from(
        &self,
        batch: &TokenBatch,
        block: usize,
        resid_pre: Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        self.run_from(batch, block, resid_pre, hooks)
    }
    fn final_norm(&self, residual: &Tensor) -> Option<Result<Tensor>> {
        Some(self.norm.forward(residual).map_err(Into::into))
    }
    fn final_norm_parts(&self) -> Option<FinalNorm<'_>> {
        Some(FinalNorm::Rms {
            weight: &self.norm.weight,
            eps: self.norm.eps,
        })
    }
    fn final_logit_softcap(&self) -> Option<f64> {
        self.final_softcap
    }
    fn attention_post_norm(
        &self,
        layer: usize,
    ) -> Option<Result<crate::model::AttentionOutput<'_>>> {
        let l = self.layers.get(layer)?;
        let norm = l.attn_post_norm.as_ref()?;
        let weight = match &l.attn.o.weight {
            crate::held::Held::Tensor(t) => t.clone(),
            quantized => match quantized.to_dtype(candle_core::DType::F32) {
                Ok(t) => t,
                Err(e) => return Some(Err(e)),
            },
        };
        Some(Ok(crate::model::AttentionOutput {
            weight,
            bias: l.attn.o.bias.as_ref(),
            norm: FinalNorm::Rms {
                weight: &norm.weight,
                eps: norm.eps,
            },
        }))
    }
    /// The linear unembedding, in the precision the weights are held in (bf16 for a bf16
    /// checkpoint under `--weights-dtype auto`). With a final soft-cap (Gemma-2), `normalized · unembeddingᵀ`
    /// is the logit before the cap, which is monotone in it; [`HookedModel::unembed`] and the
    /// `logits` hook apply the cap.
    fn unembedding(&self) -> Option<&Tensor> {
        // A sequence classifier has no language-model head (its `score` head is the output).
        if self.score.is_some() {
            return None;
        }
        // Dequantising a GGUF head cannot fail once its blocks were checked at load.
        self.unembed_tensor().ok().flatten()
    }
    fn unembed(&self, normalized: &Tensor) -> Option<Result<Tensor>> {
        // Classifiers and base checkpoints predict no next token.
        self.unembedding()?;
        Some(self.logits(normalized))
    }
}

/// The embedding table and the output head, as held: the head is `lm_head.weight` when
/// `untied`, else the embedding itself. An untied checkpoint saved without its head (a base
/// model such as `Qwen3Model`, as `AutoModel` saves it) has none: hidden states only.
pub(crate) fn tables(
    w: &crate::weights::Weights,
    d: Dims,
    untied: bool,
) -> Result<(Held, Option<Held>)> {
    let embed = w.get_held("embed_tokens.weight", &[d.vocab, d.hidden])?;
    let unembed = if untied {
        w.get_root_held("lm_head.weight", &[d.vocab, d.hidden])?
    } else {
        Some(embed.clone())
    };
    Ok((embed, unembed))
}
