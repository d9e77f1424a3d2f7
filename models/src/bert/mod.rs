//! BERT-family encoders (BERT, MiniLM, sentence-transformers checkpoints; RoBERTa, XLM-RoBERTa,
//! CamemBERT and DistilBERT, whose blocks are BERT's: see [`variant`]), hookable.
//!
//! Values at every hook are those of the unmodified Hugging Face `BertModel` (post-LayerNorm
//! blocks, no folding), so `blocks.{i}.hook_resid_post` equals `hidden_states[i + 1]` of
//! `transformers` and `blocks.0.hook_resid_pre` equals `hidden_states[0]`.
//!
//! Per block, with `h = hook_resid_pre`:
//! `hook_attn_out = O(attn(h))`, `hook_resid_mid = LN1(h + hook_attn_out)`,
//! `mlp.hook_post = act(I(hook_resid_mid))`, `hook_mlp_out = D(mlp.hook_post)`,
//! `hook_resid_post = LN2(hook_resid_mid + hook_mlp_out)`.
//!
//! Two implementations share the weights: [`fast`] (the default `forward`: packed tokens, no
//! padding, fused multi-threaded kernels) and [`graph`] (candle ops, differentiable, kept as an
//! independent cross-check and for gradients).

mod backward;
mod classifier;
pub mod fast;
pub mod graph;
pub mod variant;

pub use variant::Variant;

use crate::batch::TokenBatch;
use crate::hooks::HookPoint;
pub(crate) use crate::layers::Activation;
use crate::model::{GradientSeed, HookedModel, Input, ResidualGradients};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::Tensor;
use glassbox_data::Modality;
use serde::Deserialize;
use std::path::Path;

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

/// The fields of a BERT `config.json` this implementation uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// BERT, RoBERTa or DistilBERT (from `model_type`, not a config field).
    #[serde(skip)]
    pub variant: Variant,
}

impl BertConfig {
    pub fn from_json(path: &Path, value: serde_json::Value) -> Result<Self> {
        Self::from_json_as(path, value, Variant::Bert)
    }

    /// The config of a `variant` (DistilBERT's keys read as BERT's).
    pub fn from_json_as(path: &Path, value: serde_json::Value, variant: Variant) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let value = variant.bert_config(path, value)?;
        let mut cfg: BertConfig = serde_json::from_value(value)
            .map_err(|e| bad(format!("not a {} config: {e}", variant.family())))?;
        cfg.variant = variant;
        if cfg.max_position_embeddings <= variant.reserved_positions(cfg.pad_token_id) {
            return Err(bad(format!(
                "max_position_embeddings {} leaves no position for a token (a {} model's first \
                 position row is pad_token_id + 1 = {})",
                cfg.max_position_embeddings,
                variant.family(),
                variant.reserved_positions(cfg.pad_token_id)
            )));
        }
        let heads = ("num_attention_heads", cfg.num_attention_heads);
        crate::config_ranges::heads_divide(("hidden_size", cfg.hidden_size), heads)
            .map_err(&bad)?;
        if cfg.position_embedding_type != "absolute" {
            return Err(bad(format!(
                "position_embedding_type `{}` is not supported; only `absolute`",
                cfg.position_embedding_type
            )));
        }
        Activation::parse(&cfg.hidden_act).map_err(bad)?;
        Ok(cfg)
    }

    /// Tokens per sequence the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.variant.reserved_positions(self.pad_token_id)
    }

    /// An error for a sequence longer than [`Self::max_tokens`].
    pub(crate) fn check_length(&self, tokens: usize) -> Result<()> {
        if tokens > self.max_tokens() {
            return Err(ModelError::Invalid(format!(
                "sequence of {tokens} tokens exceeds the {} positions of this {} model \
                 (max_position_embeddings {}); pass a smaller --max-length",
                self.max_tokens(),
                self.variant.family(),
                self.max_position_embeddings
            )));
        }
        Ok(())
    }
}

/// A hookable BERT encoder.
pub struct Bert {
    pub(crate) cfg: BertConfig,
    /// A sequence classifier's pooler and classifier (`BertForSequenceClassification`).
    head: Option<classifier::ClassHead>,
    pub(crate) act: Activation,
    pub(crate) graph: graph::GraphWeights,
    pub(crate) fast: fast::FastWeights,
    /// The hand-written backward's tape and gradient buffers between batches (`backward.rs`).
    pub(crate) spare: crate::kernels::Recycler,
}

impl Bert {
    /// `config` is the checkpoint's `config.json`, read for a classifier's class names.
    pub fn load(cfg: BertConfig, config: &serde_json::Value, w: &Weights) -> Result<Self> {
        let graph = graph::GraphWeights::load(&cfg, w)?;
        let fast = fast::FastWeights::from_graph(&graph)?;
        let head = classifier::ClassHead::load(w.path(), config, w, cfg.hidden_size, cfg.variant)?;
        Ok(Self {
            head,
            act: Activation::parse(&cfg.hidden_act).map_err(ModelError::Invalid)?,
            cfg,
            graph,
            fast,
            spare: crate::kernels::Recycler::default(),
        })
    }
}

impl HookedModel for Bert {
    fn family(&self) -> &'static str {
        self.cfg.variant.family()
    }
    fn modality(&self) -> Modality {
        Modality::Text
    }

    fn hook_points(&self) -> Vec<HookPoint> {
        use HookPoint::*;
        let mut points = vec![Embed, PosEmbed];
        if self.cfg.variant.has_token_types() {
            points.push(TokenTypeEmbed);
        }
        for i in 0..self.cfg.num_hidden_layers {
            points.extend(HookPoint::block(i));
        }
        points
    }

    fn hook_width(&self, point: HookPoint) -> usize {
        match point {
            HookPoint::MlpPost(_) => self.cfg.intermediate_size,
            _ => self.cfg.hidden_size,
        }
    }

    fn max_positions(&self) -> Option<usize> {
        Some(self.cfg.max_tokens())
    }

    fn attention_heads(&self) -> Option<usize> {
        Some(self.cfg.num_attention_heads)
    }
    fn vocab_size(&self) -> Option<usize> {
        Some(self.cfg.vocab_size)
    }

    fn labels(&self) -> &[String] {
        self.head.as_ref().map_or(&[], |h| &h.labels)
    }

    fn class_head_parts(&self) -> Option<Result<crate::class_head::ClassHeadParts>> {
        Some(self.head.as_ref()?.parts(self.cfg.num_hidden_layers))
    }

    fn classify(&self, last_hidden: &Tensor, _lengths: &[usize]) -> Option<Result<Tensor>> {
        let head = self.head.as_ref()?;
        Some(head.forward(last_hidden).map_err(Into::into))
    }

    fn forward(&self, input: Input<'_>, hooks: &mut dyn crate::hooks::Hooks) -> Result<Tensor> {
        let batch = input.tokens(self.family())?;
        fast::forward(self, batch, hooks)
    }

    fn forward_from(
        &self,
        batch: &crate::TokenBatch,
        block: usize,
        resid_pre: &Tensor,
        hooks: &mut dyn crate::hooks::Hooks,
    ) -> Option<Result<Tensor>> {
        Some(fast::forward_from(self, batch, block, resid_pre, hooks))
    }

    fn forward_differentiable(
        &self,
        input: Input<'_>,
        hooks: &mut dyn crate::hooks::Hooks,
    ) -> Result<Tensor> {
        let batch = input.tokens(self.family())?;
        graph::forward(self, batch, hooks)
    }

    fn forward_differentiable_from(
        &self,
        batch: &TokenBatch,
        block: usize,
        resid_pre: Tensor,
        hooks: &mut dyn crate::hooks::Hooks,
    ) -> Result<Tensor> {
        graph::forward_from(self, batch, block, resid_pre, hooks)
    }

    fn residual_gradients(
        &self,
        batch: &TokenBatch,
        first: usize,
        last: usize,
        seed: &mut GradientSeed<'_>,
    ) -> Option<Result<ResidualGradients>> {
        if last >= self.cfg.num_hidden_layers || first > last {
            return None;
        }
        Some((|| {
            let entry = HookPoint::ResidPre(first);
            let mut capture = crate::Capture::only([entry]);
            fast::forward(self, batch, &mut capture)?;
            let padded = capture.captured.remove(&entry).ok_or_else(|| {
                ModelError::Invalid(format!("the fast forward did not produce `{entry}`"))
            })?;
            let (_, t, h) = padded.dims3()?;
            let values = padded.flatten_all()?.to_vec1::<f32>()?;
            let mut offsets = vec![0];
            let mut x = Vec::new();
            for (b, &n) in batch.lengths.iter().enumerate() {
                x.extend_from_slice(&values[b * t * h..(b * t + n) * h]);
                offsets.push(offsets.last().copied().unwrap_or(0) + n);
            }
            let mut seed_packed = |out: &[f32]| seed(out, &offsets);
            let entering =
                backward::residual_gradients(self, x, &offsets, first, last, &mut seed_packed);
            Ok(ResidualGradients { entering, offsets })
        })())
    }

    fn embedding_gradients(
        &self,
        batch: &TokenBatch,
        embeds: &[f32],
        last: usize,
        seed: &mut GradientSeed<'_>,
    ) -> Option<Result<Vec<f32>>> {
        if last >= self.cfg.num_hidden_layers {
            return None;
        }
        Some((|| {
            let h = self.cfg.hidden_size;
            let (_, t) = batch.input_ids.dims2()?;
            let offsets = crate::packed::Layout::new(&batch.lengths, t).offsets;
            let rows = offsets.last().copied().unwrap_or(0);
            if embeds.len() != rows * h {
                return Err(ModelError::Invalid(format!(
                    "replacement embeddings hold {} values; the batch's {rows} tokens need {} ({h} each)",
                    embeds.len(),
                    rows * h
                )));
            }
            if let Some(&n) = batch.lengths.iter().max() {
                self.cfg.check_length(n)?;
            }
            let variant = self.cfg.variant;
            let (types, positions) = (
                variant.type_ids(batch)?,
                variant.position_ids(batch, self.cfg.pad_token_id)?,
            );
            let (mut type_ids, mut position_ids) =
                (Vec::with_capacity(rows), Vec::with_capacity(rows));
            for ((tys, ps), &n) in types.iter().zip(&positions).zip(&batch.lengths) {
                type_ids.extend_from_slice(&tys[..n]);
                position_ids.extend_from_slice(&ps[..n]);
            }
            if let Some(ty) = type_ids
                .iter()
                .find(|&&ty| ty as usize >= self.cfg.type_vocab_size)
            {
                return Err(ModelError::Invalid(format!(
                    "token type id {ty} is outside the table of {} types",
                    self.cfg.type_vocab_size
                )));
            }
            let mut seed_packed = |out: &[f32]| seed(out, &offsets);
            Ok(backward::embedding_gradients(
                self,
                embeds,
                &position_ids,
                &type_ids,
                &offsets,
                last,
                &mut seed_packed,
            ))
        })())
    }
}
