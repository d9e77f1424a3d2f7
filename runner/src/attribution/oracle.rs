//! What every attribution method asks of a model: the target's value `f` at an input, and its
//! gradient `∂f/∂input`, for a batch of inputs at once.
//!
//! An input is one example's *features*: for text the token embeddings entering the model
//! (`hook_embed`, `tokens × hidden`; position and token-type embeddings are added after it, so
//! they stay those of the real tokens — as Captum's `LayerIntegratedGradients` on the word
//! embeddings, and Inseq, do), for images the preprocessed pixels (`height × width × 3`,
//! channels-last; [`super::image_oracle`]). Methods are written once against [`Oracle`] and run
//! on either.

use crate::gradients::{head_seed, pool, target, Convention, LinearHead};
use candle_core::{Tensor, Var};
use glassbox_data::Pool;
use glassbox_models::tokenizer::Encoded;
use glassbox_models::{Capture, HookPoint, Hooks, LoadedModel, ModelError, Result, TokenBatch};
use std::collections::BTreeMap;

/// The scalar an attribution explains, for one example.
#[derive(Debug, Clone)]
pub enum Target {
    /// Text: the next-token logit of a token at the last real position — the final hidden
    /// state read along the token's unembedding row, soft-capped as the model caps its logits
    /// (Gemma-2/3's `final_logit_softcapping`: `c·tanh(z/c)`) — or, for `logit_diff`, that
    /// logit minus a second token's.
    NextToken {
        /// The explained token's unembedding row (`hidden` values).
        row: Vec<f32>,
        /// `logit_diff`'s second token's row, whose logit is subtracted.
        minus: Option<Vec<f32>>,
    },
    /// Text: a linear probe on a pooled hook activation (its class logit).
    Probe(LinearHead),
    /// A classifier's `Σ_k weights[k] · logit[k]` — one class's logit (one-hot) or a
    /// difference: an image model's outputs, or a text classifier's head on its last hidden
    /// state (`BertForSequenceClassification`).
    Outputs {
        /// One weight per model output.
        weights: Vec<f32>,
    },
}

/// The target's value and gradient at a batch of inputs (see the module doc).
pub trait Oracle {
    /// The example's own input features.
    fn input(&self) -> &[f32];
    /// Features per reported position: the hidden size for text, 3 for RGB pixels.
    fn width(&self) -> usize;
    /// `f` at each input.
    fn values(&self, inputs: &[Vec<f32>]) -> Result<Vec<f64>>;
    /// `f` and `∂f/∂input` at each input.
    fn gradients(&self, inputs: &[Vec<f32>]) -> Result<(Vec<f64>, Vec<Vec<f32>>)>;
    /// Inputs one forward (and backward) takes at a time: methods that need many inputs (IG's
    /// steps, SmoothGrad's samples, occlusion's windows) build and hand them over this many at
    /// a time, so their memory stays that of one batch.
    fn batch(&self) -> usize {
        DEFAULT_BATCH
    }
}

/// [`Oracle::batch`] where an oracle does not say (the analytic oracles of the tests).
pub const DEFAULT_BATCH: usize = 16;

/// Runs `each` over `inputs` in chunks of `batch` (memory stays bounded by the batch).
pub(super) fn chunked<T>(
    inputs: &[Vec<f32>],
    batch: usize,
    mut each: impl FnMut(&[Vec<f32>]) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(batch.max(1)) {
        out.extend(each(chunk)?);
    }
    Ok(out)
}

/// `f` at one input and `∂f/∂input`.
type ValueAndGradient = (f64, Vec<f32>);

/// One tokenised example of a text model, its embeddings and its target.
pub struct TextOracle<'a> {
    model: &'a LoadedModel,
    encoded: Encoded,
    embeddings: Vec<f32>,
    hidden: usize,
    target: Target,
    batch: usize,
    /// Gradients by the family's hand-written backward where it has one (else autograd).
    hand_backward: bool,
}

/// Replaces `hook_embed` with given embeddings (a variable when gradients are wanted) and keeps
/// the values of the hooks in `keep` (the probe head's, attention patterns).
struct EmbedInput {
    replacement: Option<Tensor>,
    keep: Vec<HookPoint>,
    kept: BTreeMap<HookPoint, Tensor>,
    graph: bool,
}

impl Hooks for EmbedInput {
    fn wants(&self, point: HookPoint) -> bool {
        point == HookPoint::Embed || self.keep.contains(&point)
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let x = if point == HookPoint::Embed {
            match self.replacement.take() {
                Some(r) if r.dims() == x.dims() => r,
                Some(r) => candle_core::bail!(
                    "replacement embeddings {:?} do not match hook_embed {:?}",
                    r.dims(),
                    x.dims()
                ),
                None => x,
            }
        } else {
            x
        };
        if self.keep.contains(&point) {
            self.kept.insert(point, x.clone());
        }
        Ok(x)
    }
    fn needs_graph(&self) -> bool {
        self.graph
    }
    /// A probe target reads its hook, not the outputs: the rest of the forward is not needed.
    fn satisfied(&self) -> bool {
        !self.keep.is_empty() && self.keep.iter().all(|p| self.kept.contains_key(p))
    }
}

impl<'a> TextOracle<'a> {
    /// The example `encoded` of `model`'s text, scored by `target`; `batch` inputs per forward.
    pub fn new(
        model: &'a LoadedModel,
        encoded: Encoded,
        target: Target,
        batch: usize,
    ) -> Result<Self> {
        if let Target::Outputs { weights } = &target {
            let classes = model.model.labels().len();
            if classes == 0 {
                return Err(ModelError::Invalid(
                    "class targets read a classifier's outputs; this text model has none".into(),
                ));
            }
            if weights.len() != classes {
                return Err(ModelError::Invalid(format!(
                    "the target weighs {} outputs; the classifier has {classes}",
                    weights.len()
                )));
            }
        }
        let one = TokenBatch::from_encoded(&[&encoded], model.pad_id, &model.device)?;
        let mut capture = Capture::only([HookPoint::Embed]);
        model.model.forward((&one).into(), &mut capture)?;
        let embed = capture.get(HookPoint::Embed, model.model.family())?;
        let (_, _, hidden) = embed.dims3()?;
        let embeddings = embed.flatten_all()?.to_vec1()?;
        Ok(Self {
            model,
            encoded,
            embeddings,
            hidden,
            target,
            batch,
            hand_backward: true,
        })
    }

    /// The same oracle with gradients always by autograd through the differentiable forward
    /// (a cross-check of the hand-written backward).
    pub fn with_autograd(mut self) -> Self {
        self.hand_backward = false;
        self
    }

    /// Tokens of the example.
    pub fn tokens(&self) -> &[String] {
        &self.encoded.tokens
    }

    /// The embedding of token `id` (the `mask` baseline's rows).
    pub fn token_embedding(&self, id: u32) -> Result<Vec<f32>> {
        // One token is enough: `hook_embed` is the token's row, before positions.
        let encoded = Encoded {
            ids: vec![id],
            type_ids: vec![0],
            tokens: vec![String::new()],
            spans: vec![None],
        };
        let one = TokenBatch::from_encoded(&[&encoded], self.model.pad_id, &self.model.device)?;
        let mut capture = Capture::only([HookPoint::Embed]);
        self.model.model.forward((&one).into(), &mut capture)?;
        let embed = capture.get(HookPoint::Embed, self.model.model.family())?;
        Ok(embed.get(0)?.get(0)?.to_vec1()?)
    }

    /// The attention patterns (`[1, t, heads · t]` per layer) of the forward at embeddings `x`,
    /// and the position whose row attention rollout reads: the last token for a causal LM (what
    /// predicts the next token), `[CLS]` (position 0) for an encoder.
    pub fn patterns(&self, x: &[f32]) -> Result<(Vec<Tensor>, usize)> {
        let layers = self
            .model
            .model
            .hook_points()
            .iter()
            .filter(|p| matches!(p, HookPoint::ResidPre(_)))
            .count();
        let batch =
            TokenBatch::from_encoded(&[&self.encoded], self.model.pad_id, &self.model.device)?;
        let t = self.encoded.ids.len();
        let keep: Vec<HookPoint> = (0..layers).map(HookPoint::AttnPattern).collect();
        let mut hooks = EmbedInput {
            replacement: Some(Tensor::from_slice(
                x,
                (1, t, self.hidden),
                &self.model.device,
            )?),
            keep: keep.clone(),
            kept: BTreeMap::new(),
            graph: true,
        };
        self.model
            .model
            .forward_differentiable((&batch).into(), &mut hooks)?;
        let patterns = keep
            .iter()
            .map(|p| {
                hooks.kept.remove(p).ok_or_else(|| ModelError::UnknownHook {
                    name: p.to_string(),
                    hint: format!(
                        " (the {} forward offers no attention patterns)",
                        self.model.model.family()
                    ),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let query = if self.model.model.unembedding().is_some() {
            t - 1
        } else {
            0
        };
        Ok((patterns, query))
    }

    /// `f` per copy, and the graph to differentiate when `var` is given.
    fn run(&self, chunk: &[Vec<f32>], var: bool) -> Result<(Tensor, Option<Var>)> {
        let copies: Vec<&Encoded> = vec![&self.encoded; chunk.len()];
        let batch = TokenBatch::from_encoded(&copies, self.model.pad_id, &self.model.device)?;
        let t = self.encoded.ids.len();
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        let values = Tensor::from_vec(flat, (chunk.len(), t, self.hidden), &self.model.device)?;
        let (replacement, variable) = if var {
            let v = Var::from_tensor(&values)?;
            (v.as_tensor().clone(), Some(v))
        } else {
            (values, None)
        };
        let keep = match &self.target {
            Target::Probe(h) => vec![h.hook],
            _ => Vec::new(),
        };
        let mut hooks = EmbedInput {
            replacement: Some(replacement),
            keep,
            kept: BTreeMap::new(),
            graph: var,
        };
        let output = if var {
            self.model
                .model
                .forward_differentiable((&batch).into(), &mut hooks)?
        } else {
            self.model.model.forward((&batch).into(), &mut hooks)?
        };
        let f = match &self.target {
            Target::NextToken { row, minus } => {
                let last = output.narrow(1, t - 1, 1)?.squeeze(1)?;
                let logit = |row: &[f32]| -> Result<Tensor> {
                    let d = Tensor::from_slice(row, (self.hidden, 1), &self.model.device)?;
                    // The logit the model outputs: a final soft-cap bends it (the row alone
                    // reads the logit before the cap, which Captum on the model would not).
                    self.model.model.cap_logits(&last.matmul(&d)?.squeeze(1)?)
                };
                match minus {
                    None => logit(row)?,
                    Some(minus) => (logit(row)? - logit(minus)?)?,
                }
            }
            Target::Probe(head) => {
                let h = hooks
                    .kept
                    .remove(&head.hook)
                    .ok_or_else(|| ModelError::UnknownHook {
                        name: head.hook.to_string(),
                        hint: format!(
                            " (the {} forward never reached it)",
                            self.model.model.family()
                        ),
                    })?;
                target(&pool(&h, &batch, head.pool)?, head, Convention::Logit)?
            }
            Target::Outputs { weights } => {
                let logits = self
                    .model
                    .model
                    .classify(&output, &batch.lengths)
                    .ok_or_else(|| {
                        ModelError::Invalid("this text model has no class head".into())
                    })??;
                let w = Tensor::from_slice(weights, (weights.len(), 1), &self.model.device)?;
                logits.matmul(&w)?.squeeze(1)?
            }
        };
        Ok((f, variable))
    }
}

impl TextOracle<'_> {
    /// `f` and `∂f/∂embeddings` per input by the family's hand-written backward, where it has
    /// one and the target fits it (a probe on a residual-stream hook, pooled other than by
    /// `max`): no autograd graph, the packed forward's kernels. `None`: use autograd.
    fn hand_gradients(&self, chunk: &[Vec<f32>]) -> Option<Result<Vec<ValueAndGradient>>> {
        let Target::Probe(head) = &self.target else {
            return None;
        };
        if head.pooler.is_some() {
            return None;
        }
        if !self.hand_backward {
            return None;
        }
        let last = match head.hook {
            HookPoint::ResidPost(l) => l,
            HookPoint::ResidPre(l) if l > 0 => l - 1,
            _ => return None,
        };
        if head.pool == Pool::Max {
            return None;
        }
        let copies: Vec<&Encoded> = vec![&self.encoded; chunk.len()];
        let batch = match TokenBatch::from_encoded(&copies, self.model.pad_id, &self.model.device) {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        // Copies of one example, none padded: the inputs side by side are the packed rows.
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        let mut values = Vec::new();
        let mut seed = |out: &[f32], offsets: &[usize]| {
            let (v, d) = head_seed(head, Convention::Logit, out, offsets);
            values = v;
            d
        };
        let grads = self
            .model
            .model
            .embedding_gradients(&batch, &flat, last, &mut seed)?;
        Some(grads.map(|g| {
            values
                .iter()
                .zip(g.chunks_exact(self.embeddings.len()))
                .map(|(v, g)| (f64::from(*v), g.to_vec()))
                .collect()
        }))
    }
}

impl Oracle for TextOracle<'_> {
    fn input(&self) -> &[f32] {
        &self.embeddings
    }
    fn batch(&self) -> usize {
        self.batch
    }
    fn width(&self) -> usize {
        self.hidden
    }
    fn values(&self, inputs: &[Vec<f32>]) -> Result<Vec<f64>> {
        chunked(inputs, self.batch, |chunk| {
            let (f, _) = self.run(chunk, false)?;
            Ok(f.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
        })
    }
    fn gradients(&self, inputs: &[Vec<f32>]) -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
        let pairs = chunked(inputs, self.batch, |chunk| {
            if let Some(pairs) = self.hand_gradients(chunk) {
                return pairs;
            }
            let (f, var) = self.run(chunk, true)?;
            let var = var.expect("asked for a variable");
            let grads = f.sum_all()?.backward()?;
            let g = match grads.get(var.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0.0; chunk.len() * self.embeddings.len()],
            };
            let n = self.embeddings.len();
            Ok(f.to_vec1::<f32>()?
                .into_iter()
                .zip(g.chunks_exact(n).map(<[f32]>::to_vec))
                .map(|(v, g)| (f64::from(v), g))
                .collect())
        })?;
        Ok(pairs.into_iter().unzip())
    }
}
