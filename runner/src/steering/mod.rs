//! Forwards with one hook edited — a vector added along a direction (steering) or an affine
//! erasure — and the downstream readouts the causal validation of directions measures: a
//! probe's log-probability of a class at a later hook, a causal LM's next-token log-probability
//! or the KL of its next-token distribution from the unedited one, a classifier's class
//! log-probability.
//!
//! An edit applies at every real position of the hook (padding stays as it is): for a probe on
//! mean-pooled activations, adding `v` at every token adds `v` to the pooled row, and an affine
//! eraser commutes with the mean, so the pooled probe sees exactly the intervention it was
//! fitted against.

mod readout;

pub use readout::log_probability;
use readout::{output_log_probs, read};

use crate::extract::image_batch_of;
use crate::interventions::Replace;
use candle_core::{DType, Tensor};
use glassbox_data::images::{ImageDataset, Preprocessor};
use glassbox_data::Pool;
use glassbox_models::{Capture, HookPoint, Hooks, ImageBatch, Input, LoadedModel, TokenBatch};
use glassbox_models::{ModelError, Result};

/// An intervention at one hook, on rows of its width.
#[derive(Debug, Clone)]
pub enum Edit {
    /// `h ↦ h + v` at every real position.
    Add(Vec<f32>),
    /// `h ↦ h − E (h − μ)` at every real position; `matrix` is `E`, `width × width` row-major.
    Erase {
        /// `E`.
        matrix: Vec<f32>,
        /// `μ`.
        mean: Vec<f32>,
    },
}

/// A downstream quantity measured per example.
#[derive(Debug, Clone)]
pub enum Readout {
    /// The log-probability a linear head on `hook` gives a class: `weight` is `outputs ×
    /// width` (one output = a binary head's logit of class 1, read as `log σ(±z)`; or a
    /// regression, read as its raw output with `class: None`).
    Head {
        /// The hook the head reads.
        hook: HookPoint,
        /// Pooled rows (sequence level), or `None`: the mean over real positions of the
        /// per-position value (token level).
        pool: Option<Pool>,
        /// `outputs × width`, row-major.
        weight: Vec<f32>,
        /// One per output.
        bias: Vec<f32>,
        /// The class whose log-probability is read.
        class: HeadClass,
    },
    /// A causal LM's log-probability of token `id` coming after each example's last token.
    NextToken {
        /// The token.
        id: u32,
    },
    /// `KL(unedited ‖ edited)` of the next-token distribution after each example's last token,
    /// in nats (0 for the unedited forward).
    NextTokenKl,
    /// `KL(unedited ‖ edited)` of a classifier's class distribution, in nats (0 for the
    /// unedited forward).
    OutputKl,
    /// A classifier's log-probability of its output class `class`.
    OutputClass {
        /// Index into the model's outputs.
        class: usize,
    },
}

/// Which class a [`Readout::Head`] reads the log-probability of.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadClass {
    /// No class: the single raw output (a regression).
    Raw,
    /// One class per example (`None`: the example has no class and is left out).
    PerExample(Vec<Option<usize>>),
    /// One class per real position of each example (`None`: that token has none), for a
    /// token-level head: the value is the mean over the positions that have a class of their
    /// own class's log-probability; an example where none has one is left out.
    PerToken(Vec<Vec<Option<usize>>>),
}

pub(super) enum Batch {
    Tokens(TokenBatch),
    Images(ImageBatch),
}

/// The examples an experiment runs on, cut into batches once.
pub struct Batches {
    batches: Vec<Batch>,
    n: usize,
}

impl Batches {
    /// Tokenised `texts`, `batch_size` per forward.
    pub fn texts(model: &LoadedModel, texts: &[&str], batch_size: usize) -> Result<Self> {
        let tokenizer = model.tokenizer()?;
        let mut batches = Vec::new();
        for chunk in texts.chunks(batch_size.max(1)) {
            let encoded = tokenizer.encode(chunk)?;
            let refs: Vec<_> = encoded.iter().collect();
            batches.push(Batch::Tokens(TokenBatch::from_encoded(
                &refs,
                model.pad_id,
                &model.device,
            )?));
        }
        Ok(Self {
            batches,
            n: texts.len(),
        })
    }

    /// The images `indices` of `data`, preprocessed, `batch_size` per forward.
    pub fn images(
        data: &ImageDataset,
        pre: &Preprocessor,
        indices: &[usize],
        batch_size: usize,
    ) -> Result<Self> {
        let batches = indices
            .chunks(batch_size.max(1))
            .map(|chunk| Ok(Batch::Images(image_batch_of(data, pre, chunk)?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            batches,
            n: indices.len(),
        })
    }

    /// Examples in all batches.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// The unedited forward's values: each readout per example, the hook's typical activation norm
/// (the median L2 norm over real positions), and what [`Readout::NextTokenKl`] and
/// [`Readout::OutputKl`] compare against.
pub struct Clean {
    /// `[readout][example]`.
    pub values: Vec<Vec<f64>>,
    /// Median L2 norm of the hook's activation over every real position of every example.
    pub typical_norm: f64,
    log_probs: Vec<Vec<f32>>,
    /// Per batch, the residual stream entering the edited hook's block: edited forwards start
    /// there (where the family has a forward from a block), since the blocks before it compute
    /// what the unedited forward did.
    starts: Vec<Option<Tensor>>,
}

/// The readouts of the unedited forward, with the norm of `hook`.
pub fn clean(
    model: &LoadedModel,
    batches: &Batches,
    hook: HookPoint,
    readouts: &[Readout],
) -> Result<Clean> {
    let mut norms = Vec::new();
    let mut last = Vec::new();
    let mut starts = Vec::new();
    let mut values = vec![Vec::with_capacity(batches.len()); readouts.len()];
    let mut offset = 0;
    let start = hook.layer().map(HookPoint::ResidPre);
    for batch in &batches.batches {
        let mut capture = Capture::new(readout_hooks(readouts).chain([hook]).chain(start));
        let output = forward(model, batch, &mut capture)?;
        starts.push(start.and_then(|s| capture.captured.get(&s).cloned()));
        let h = capture.get(hook, model.model.family())?;
        let n = h.dim(0)?;
        let rows: Vec<Vec<Vec<f32>>> = h.to_dtype(DType::F32)?.to_vec3()?;
        for (b, example) in rows.iter().enumerate() {
            for row in example.iter().take(real_length(batch, b)) {
                norms.push(row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt());
            }
        }
        let lp = output_log_probs(model, batch, &output, readouts)?;
        read(
            model,
            batch,
            &output,
            &capture,
            &lp,
            None,
            readouts,
            offset,
            &mut values,
        )?;
        last.extend(lp);
        offset += n;
    }
    norms.sort_by(f64::total_cmp);
    Ok(Clean {
        values,
        typical_norm: norms.get(norms.len() / 2).copied().unwrap_or(0.0),
        log_probs: last,
        starts,
    })
}

/// The readouts per example (`[readout][example]`) of the forward with `edit` at `hook`.
pub fn edited(
    model: &LoadedModel,
    batches: &Batches,
    hook: HookPoint,
    edit: &Edit,
    readouts: &[Readout],
    clean: &Clean,
) -> Result<Vec<Vec<f64>>> {
    let mut values = vec![Vec::with_capacity(batches.len()); readouts.len()];
    let width = model.model.hook_width(hook);
    let device = &model.device;
    let edit_tensors = match edit {
        Edit::Add(v) => {
            check_width(v.len(), width, hook)?;
            (Tensor::from_slice(v, (1, 1, width), device)?, None)
        }
        Edit::Erase { matrix, mean } => {
            check_width(mean.len(), width, hook)?;
            check_width(matrix.len(), width * width, hook)?;
            (
                Tensor::from_slice(mean, (1, 1, width), device)?,
                Some(Tensor::from_slice(matrix, (width, width), device)?.t()?),
            )
        }
    };
    let mut offset = 0;
    for (index, batch) in batches.batches.iter().enumerate() {
        let mask = position_mask(batch, model)?;
        let (vector, matrix) = (&edit_tensors.0, edit_tensors.1.as_ref());
        let apply = |x: Tensor| -> candle_core::Result<Tensor> {
            let x32 = x.to_dtype(DType::F32)?;
            let delta = match matrix {
                None => vector.broadcast_as(x32.shape())?.contiguous()?,
                Some(et) => {
                    let (b, t, d) = x32.dims3()?;
                    x32.broadcast_sub(vector)?
                        .reshape((b * t, d))?
                        .matmul(et)?
                        .reshape((b, t, d))?
                        .neg()?
                }
            };
            let delta = match &mask {
                Some(m) => delta.broadcast_mul(m)?,
                None => delta,
            };
            (x32 + delta)?.to_dtype(x.dtype())
        };
        let mut hooks = EditAndCapture {
            edit: Replace::new(hook, apply),
            capture: Capture::new(readout_hooks(readouts)),
        };
        let start = hook
            .layer()
            .zip(clean.starts.get(index).and_then(Option::as_ref));
        let output = forward_from(model, batch, start, &mut hooks)?;
        let lp = output_log_probs(model, batch, &output, readouts)?;
        let n = batch_size(batch);
        let reference = &clean.log_probs;
        let reference = (!reference.is_empty()).then(|| &reference[offset..offset + n]);
        read(
            model,
            batch,
            &output,
            &hooks.capture,
            &lp,
            reference,
            readouts,
            offset,
            &mut values,
        )?;
        offset += n;
    }
    Ok(values)
}

fn check_width(got: usize, want: usize, hook: HookPoint) -> Result<()> {
    if got != want {
        return Err(ModelError::Invalid(format!(
            "an edit of {got} values does not fit `{hook}` ({want} expected); the direction comes from another model or hook"
        )));
    }
    Ok(())
}

/// Edits one point, then captures the readouts' hooks downstream of it.
struct EditAndCapture<F> {
    edit: Replace<F>,
    capture: Capture,
}

impl<F> Hooks for EditAndCapture<F>
where
    F: FnMut(Tensor) -> candle_core::Result<Tensor>,
{
    fn wants(&self, point: HookPoint) -> bool {
        self.edit.wants(point) || self.capture.wants(point)
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let x = self.edit.visit(point, x)?;
        self.capture.visit(point, x)
    }
}

fn readout_hooks(readouts: &[Readout]) -> impl Iterator<Item = HookPoint> + '_ {
    readouts.iter().filter_map(|r| match r {
        Readout::Head { hook, .. } => Some(*hook),
        _ => None,
    })
}

fn forward(model: &LoadedModel, batch: &Batch, hooks: &mut dyn Hooks) -> Result<Tensor> {
    let input: Input<'_> = match batch {
        Batch::Tokens(b) => b.into(),
        Batch::Images(b) => b.into(),
    };
    model.model.forward(input, hooks)
}

/// The forward from `start` = (block, the stream entering it) where the family has one.
fn forward_from(
    model: &LoadedModel,
    batch: &Batch,
    start: Option<(usize, &Tensor)>,
    hooks: &mut dyn Hooks,
) -> Result<Tensor> {
    if let (Batch::Tokens(tokens), Some((block, resid))) = (batch, start) {
        if let Some(output) = model.model.forward_from(tokens, block, resid, hooks) {
            return output;
        }
    }
    forward(model, batch, hooks)
}

pub(super) fn batch_size(batch: &Batch) -> usize {
    match batch {
        Batch::Tokens(b) => b.lengths.len(),
        Batch::Images(b) => b.batch,
    }
}

/// Real positions of example `b` (`usize::MAX`: every position, for images).
pub(super) fn real_length(batch: &Batch, b: usize) -> usize {
    match batch {
        Batch::Tokens(t) => t.lengths[b],
        Batch::Images(_) => usize::MAX,
    }
}

/// `[batch, seq, 1]`: 1 at real tokens; `None` for images (every cell is real).
fn position_mask(batch: &Batch, model: &LoadedModel) -> Result<Option<Tensor>> {
    Ok(match batch {
        Batch::Tokens(t) => Some(t.mask.to_device(&model.device)?.unsqueeze(2)?),
        Batch::Images(_) => None,
    })
}
