//! The one interface every model family implements, text and vision alike (as
//! TransformerLens's `HookedRootModule` serves its text and vision models).
//!
//! A family answers what it is (family, [`Modality`], hook points and their widths) and runs a
//! forward over an [`Input`] — a token batch or an image batch — calling [`Hooks`] at every
//! hook point. What only some families have (logits over a vocabulary, a hand-written backward,
//! class labels, a text tower) are methods with a default that says "not this family", so code
//! that runs models over a run is written once and asks for a capability where it needs one.
//! The registry that builds families by `model_type` is a separate module (`registry`).

use crate::batch::{ImageBatch, TokenBatch};
use crate::hooks::{HookPoint, Hooks};
use crate::prefix::{PrefixCache, Suffixes};
use crate::{ModelError, Result};
use candle_core::Tensor;
use glassbox_data::Modality;
use std::collections::BTreeMap;

/// What a forward runs on: a batch of token sequences or a batch of images.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// A padded batch of tokenised examples (text families).
    Tokens(&'a TokenBatch),
    /// Preprocessed images, channels-last (vision families).
    Images(&'a ImageBatch),
}

impl<'a> From<&'a TokenBatch> for Input<'a> {
    fn from(batch: &'a TokenBatch) -> Self {
        Input::Tokens(batch)
    }
}

impl<'a> From<&'a ImageBatch> for Input<'a> {
    fn from(batch: &'a ImageBatch) -> Self {
        Input::Images(batch)
    }
}

impl<'a> Input<'a> {
    /// The token batch, or an error naming the family that cannot read images.
    pub fn tokens(self, family: &str) -> Result<&'a TokenBatch> {
        match self {
            Input::Tokens(b) => Ok(b),
            Input::Images(_) => Err(ModelError::Invalid(format!(
                "the {family} family reads token sequences, not images"
            ))),
        }
    }
    /// The image batch, or an error naming the family that cannot read tokens.
    pub fn images(self, family: &str) -> Result<&'a ImageBatch> {
        match self {
            Input::Images(b) => Ok(b),
            Input::Tokens(_) => Err(ModelError::Invalid(format!(
                "the {family} family reads images, not token sequences"
            ))),
        }
    }
    /// Examples in the batch.
    pub fn batch_size(&self) -> usize {
        match self {
            Input::Tokens(b) => b.lengths.len(),
            Input::Images(b) => b.batch,
        }
    }
}

/// Gradients entering blocks `first..=last` (index 0 = block `first`), packed rows
/// (`offsets[b]..offsets[b + 1]` are example `b`'s tokens).
pub struct ResidualGradients {
    /// One packed `tokens × hidden` buffer per block.
    pub entering: Vec<Vec<f32>>,
    /// Row offsets of each example in the packed buffers.
    pub offsets: Vec<usize>,
}

/// `seed(output, offsets)`: `∂f/∂output` for the packed output of the last block.
pub type GradientSeed<'a> = dyn FnMut(&[f32], &[usize]) -> Vec<f32> + 'a;

/// What [`HookedModel::hook_gradients`] returns, per hook point: `batch × width` rows.
#[derive(Debug, Default)]
pub struct HookGradients {
    /// Activations averaged over positions (what CAVs are trained on).
    pub pooled: BTreeMap<HookPoint, Vec<f32>>,
    /// Gradients summed over positions.
    pub gradient_sums: BTreeMap<HookPoint, Vec<f32>>,
    /// The logits `[batch, classes]`.
    pub logits: Vec<f32>,
}

/// What [`HookedModel::pixel_gradients`] returns: one backward from the outputs to the pixels.
#[derive(Debug, Default)]
pub struct PixelGradients {
    /// The outputs `[batch, classes]` of the forward; empty from
    /// [`HookedModel::pixel_gradients_from_hook`] where the family's forward stopped after the
    /// last hook it needed (EfficientNet, ResNet).
    pub outputs: Vec<f32>,
    /// `∂f/∂pixels`, channels-last `[batch, height, width, 3]` like [`ImageBatch::pixels`].
    pub pixels: Vec<f32>,
    /// Per requested hook, its activation and its gradient, both `[batch, positions, width]`
    /// (Grad-CAM's inputs).
    pub hooks: BTreeMap<HookPoint, (Vec<f32>, Vec<f32>)>,
}

/// A block's attention output after its projection and post-norm (see
/// [`HookedModel::attention_post_norm`]).
#[derive(Debug, Clone)]
pub struct AttentionOutput<'a> {
    /// The output projection `[hidden, heads · head_dim]`, as held (a quantised one
    /// dequantised to f32).
    pub weight: Tensor,
    /// Its bias `[hidden]`, where it has one.
    pub bias: Option<&'a Tensor>,
    /// The norm applied to the projection's output before the residual add.
    pub norm: FinalNorm<'a>,
}

/// The parameters of a decoder's final normalisation, for reading residual components through
/// it with the normalisation scale frozen (direct logit attribution).
#[derive(Debug, Clone, Copy)]
pub enum FinalNorm<'a> {
    /// `γ ⊙ (x − mean x) / sqrt(var x + eps) + β`.
    Layer {
        /// γ, `[hidden]`.
        weight: &'a Tensor,
        /// β, `[hidden]`.
        bias: &'a Tensor,
        /// Added to the variance.
        eps: f64,
    },
    /// `γ ⊙ x / sqrt(mean x² + eps)`.
    Rms {
        /// γ, `[hidden]`.
        weight: &'a Tensor,
        /// Added to the mean square.
        eps: f64,
    },
}

/// A model whose forward pass calls hooks at TransformerLens-named points.
pub trait HookedModel: Send + Sync {
    /// The family name (`bert`, `efficientnet_lite`, …).
    fn family(&self) -> &'static str;
    /// Whether the model reads token sequences or images.
    fn modality(&self) -> Modality;
    /// Every hook point, in forward order.
    fn hook_points(&self) -> Vec<HookPoint>;
    /// Width of the activation at a hook point (the last dimension).
    fn hook_width(&self, point: HookPoint) -> usize;
    /// Runs the batch, calling `hooks` at every point. Returns the model's output: the final
    /// hidden state for text families (normalised where the family normalises it), the logits
    /// `[batch, classes]` (or the image embedding) for vision families.
    fn forward(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor>;
    /// The same forward in candle ops that support autograd; same hooks and values. Vision
    /// families' forwards are candle graphs already, hence the default.
    fn forward_differentiable(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        self.forward(input, hooks)
    }
    /// Sets the precision of [`HookedModel::forward`]'s matrix products; families that compute
    /// in f32 only refuse anything else.
    fn set_compute_dtype(&mut self, dtype: crate::ComputeDtype) -> Result<()> {
        match dtype {
            crate::ComputeDtype::F32 => Ok(()),
            other => Err(crate::ModelError::Invalid(format!(
                "--compute-dtype {}: the {} family computes in f32; bf16 products are supported for {} and for Llama-family checkpoints held in bf16 (--weights-dtype bf16)",
                other.as_str(),
                self.family(),
                crate::precision::BF16_COMPUTE_FAMILIES.join(", ")
            ))),
        }
    }

    // ---- token sequences --------------------------------------------------------------
    /// Longest sequence the model accepts (text families).
    fn max_positions(&self) -> Option<usize> {
        None
    }
    /// Attention heads per layer (transformers): the head count of `attn.hook_z`, whose width
    /// is heads × head dimension.
    fn attention_heads(&self) -> Option<usize> {
        None
    }
    /// Vocabulary size of the embedding matrix (text families).
    fn vocab_size(&self) -> Option<usize> {
        None
    }
    /// The differentiable forward from block `block` on, given the residual stream entering it
    /// (`blocks.{block}.hook_resid_pre`, whose hook is called first); for gradients at deep
    /// hooks without running the early blocks differentiably.
    fn forward_differentiable_from(
        &self,
        _batch: &TokenBatch,
        _block: usize,
        _resid_pre: Tensor,
        _hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        Err(ModelError::Invalid(format!(
            "the {} family has no residual-stream forward",
            self.family()
        )))
    }
    /// The forward from block `block` on, given the residual stream entering it (`[batch, seq,
    /// hidden]`, `blocks.{block}.hook_resid_pre`, whose hook is called first), on the fast path
    /// where the family has one: patching a hook of block `block` need not rerun the blocks
    /// before it. `None`: not available (run the whole forward).
    fn forward_from(
        &self,
        _batch: &TokenBatch,
        _block: usize,
        _resid_pre: &Tensor,
        _hooks: &mut dyn Hooks,
    ) -> Option<Result<Tensor>> {
        None
    }
    /// The forward over one unpadded example that also keeps each block's attention inputs,
    /// for [`Self::forward_suffixes`]; same output and hooks as [`Self::forward`]. `None`: the
    /// family has no such path (or the hooks need the graph forward).
    fn forward_keeping_prefix(
        &self,
        _batch: &TokenBatch,
        _hooks: &mut dyn Hooks,
    ) -> Option<Result<(Tensor, PrefixCache)>> {
        None
    }
    /// Copies of a run kept by [`Self::forward_keeping_prefix`], copy `c` recomputed from
    /// position `starts[c]` and block `block` on (causal decoders: the positions before cannot
    /// see what changes). Hooks see `[copies, longest suffix, width]` tensors whose row `r` of
    /// copy `c` is position `starts[c] + r` (padding rows zero). Returns the final normalised
    /// hidden state in that layout. `None`: not available (run whole forwards).
    fn forward_suffixes(
        &self,
        _suffixes: &Suffixes<'_>,
        _hooks: &mut dyn Hooks,
    ) -> Option<Result<Tensor>> {
        None
    }
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
    /// A hand-written backward from the token embeddings, where the family has one: the
    /// forward of `batch`'s tokens with `hook_embed` replaced by `embeds` (packed rows, example
    /// `b` at `offsets[b]..offsets[b + 1]` for the offsets of `batch.lengths`; position and
    /// token-type embeddings stay the real tokens') through block `last`, whose packed output
    /// `seed(output, offsets)` turns into `∂f/∂output`; returns `∂f/∂embeds`, packed like
    /// `embeds`. `None`: use autograd through [`Self::forward_differentiable`].
    fn embedding_gradients(
        &self,
        _batch: &TokenBatch,
        _embeds: &[f32],
        _last: usize,
        _seed: &mut GradientSeed<'_>,
    ) -> Option<Result<Vec<f32>>> {
        None
    }
    /// The unembedding matrix `[vocab, hidden]` (rows are tokens' output directions), for
    /// families that have one (causal LMs).
    fn unembedding(&self) -> Option<&Tensor> {
        None
    }
    /// The final normalisation (`ln_final`) applied to a residual stream `[b, t, hidden]`, for
    /// decoders: with [`Self::unembed`], the logit lens at any layer.
    fn final_norm(&self, _residual: &Tensor) -> Option<Result<Tensor>> {
        None
    }
    /// The final normalisation's parameters (decoders).
    fn final_norm_parts(&self) -> Option<FinalNorm<'_>> {
        None
    }
    /// The final logit soft-cap `c` (logits = `c · tanh(x / c)`, Gemma-2), where the family
    /// applies one: [`Self::unembedding`] reads the logit before it.
    fn final_logit_softcap(&self) -> Option<f64> {
        None
    }
    /// Logits read off the unembedding (`normalized · rowᵀ`, any shape) as the model outputs
    /// them: through its final soft-cap where it has one, else unchanged. Differentiable, so a
    /// target on a few rows (attribution's `token:`) need not compute the whole vocabulary.
    fn cap_logits(&self, logits: &Tensor) -> Result<Tensor> {
        Ok(match self.final_logit_softcap() {
            Some(cap) => crate::decoder::forward::softcap(logits, cap)?,
            None => logits.clone(),
        })
    }
    /// Block `layer`'s attention output as the residual stream receives it, where that is not
    /// linear in the heads' `attn.hook_z` — a norm after the output projection (Gemma's and
    /// OLMo-2's post-norms): the projection and the norm, so per-head read-outs can freeze the
    /// norm's scale. `None`: `hook_attn_out` is linear in `hook_z`.
    fn attention_post_norm(&self, _layer: usize) -> Option<Result<AttentionOutput<'_>>> {
        None
    }
    /// Logits `[b, t, vocab]` from the final normalised hidden state; `None` for encoders.
    fn unembed(&self, normalized: &Tensor) -> Option<Result<Tensor>> {
        self.unembedding()
            .map(|u| crate::layers::unembed(normalized, u))
    }

    // ---- images -----------------------------------------------------------------------
    /// The input size `(height, width)` the weights were trained at (vision families).
    fn image_size(&self) -> Option<(usize, usize)> {
        None
    }
    /// Where a hook's positions sit in an `image = (height, width)` input (cells of a feature
    /// map or patch tokens, each with its receptive field), for hooks with a spatial layout;
    /// `None` for pooled features, logits and text models. Convolutional maps follow the input
    /// size; ViT and CLIP take their configured size whatever `image` says.
    fn hook_grid(
        &self,
        _point: HookPoint,
        _image: (usize, usize),
    ) -> Option<glassbox_data::grid::CellGrid> {
        None
    }
    /// The family's documented preprocessing, for checkpoints that ship no
    /// `preprocessor_config.json` (vision families that have a convention).
    fn default_preprocessor(&self) -> Option<glassbox_data::images::Preprocessor> {
        None
    }
    /// Class names, index = logit (classifiers); empty when the model has no class head.
    fn labels(&self) -> &[String] {
        &[]
    }
    /// A text classifier's logits (`[batch, classes]`, differentiable) from the last hidden
    /// states [`Self::forward`] returns for sequences of `lengths` real tokens: an encoder's
    /// pooler and classifier on `[CLS]`, a decoder's `score` head at the last token. `None`
    /// when the model has no class head; image classifiers' forwards return their logits.
    fn classify(&self, _last_hidden: &Tensor, _lengths: &[usize]) -> Option<Result<Tensor>> {
        None
    }
    /// A text classifier's class head as numbers, for targets that read it off a hook (TCAV):
    /// `None` when the model has none.
    fn class_head_parts(&self) -> Option<Result<crate::class_head::ClassHeadParts>> {
        None
    }
    /// Takes a sequence classifier's `score` head (`…ForSequenceClassification` decoders);
    /// `false` when the family has nowhere to put it.
    fn attach_score_head(&mut self, _head: crate::score_head::ScoreHead) -> bool {
        false
    }
    /// Forgets the language-model head of a checkpoint whose own head is left unread (a token
    /// classifier: its tied embedding read out as logits is no output of that model).
    fn drop_lm_head(&mut self) {}
    /// A hand-written (or autograd) backward, where the family has one: the gradient of
    /// `Σ_b Σ_k seed[b·classes + k] · output[b, k]` with respect to the activation at each of
    /// `points`, summed over positions (TCAV's `G_i`), with the activations mean-pooled over
    /// positions. `None`: no backward for this family.
    fn hook_gradients(
        &self,
        _input: Input<'_>,
        _points: &[HookPoint],
        _seed: &[f32],
    ) -> Option<Result<HookGradients>> {
        None
    }
    /// The gradient of `Σ_b Σ_k seed[b·classes + k] · output[b, k]` with respect to the input
    /// pixels, and the activation and gradient at each of `points` (input attribution on
    /// images). `None`: this family has no backward to its pixels.
    fn pixel_gradients(
        &self,
        _batch: &ImageBatch,
        _points: &[HookPoint],
        _seed: &[f32],
    ) -> Option<Result<PixelGradients>> {
        None
    }
    /// [`Self::pixel_gradients`] for a target read off the activation at `point` (a probe on
    /// its pooled activation) instead of the outputs: `seed(activation, offsets)` receives that
    /// activation (`[batch, positions, width]`, image `b`'s rows at `offsets[b]..offsets[b +
    /// 1]`) and returns `∂f/∂activation`; the gradients at `points` are those of the same
    /// target. `None`: this family has no backward to its pixels.
    fn pixel_gradients_from_hook(
        &self,
        _batch: &ImageBatch,
        _points: &[HookPoint],
        _point: HookPoint,
        _seed: &mut GradientSeed<'_>,
    ) -> Option<Result<PixelGradients>> {
        None
    }
    /// For image–text models: the output-space direction whose dot product with the model's
    /// output is the zero-shot logit of the prompt `ids` (a TCAV `text:` target).
    fn text_target(&self, _ids: &[u32]) -> Option<Result<Vec<f32>>> {
        None
    }
    /// Unit-normalised text embeddings (`n × width` of [`HookPoint::Embeds`]) of prompts, for
    /// image–text models: text-defined concepts in the space the images are embedded in.
    fn embed_texts(&self, _ids: &[Vec<u32>]) -> Option<Result<Vec<f32>>> {
        None
    }
    /// The end-of-text token a prompt must end with, for image–text models.
    fn eos_token_id(&self) -> Option<u32> {
        None
    }
}

/// Why `model` gives no next-token logits (its [`HookedModel::unembedding`] is `None`), for the
/// errors of what needs them: a classifier, an encoder, or a decoder checkpoint saved without its
/// language-model head.
pub fn why_no_next_token(model: &dyn HookedModel) -> String {
    let family = model.family();
    if !model.labels().is_empty() {
        format!("the {family} model is a classifier: it outputs its classes, not next-token logits")
    } else if model.final_norm_parts().is_some() {
        format!("this {family} checkpoint {}", crate::layers::NO_LM_HEAD)
    } else {
        format!("the {family} model is not a causal LM: it has no unembedding")
    }
}
