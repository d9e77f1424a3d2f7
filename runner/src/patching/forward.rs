//! The runs behind patching: batches of copies of a prompt, the cached clean and corrupted
//! runs, patched forwards (from the patched hook's block where the family can), and the metric
//! of each run from its last-position logits.

use super::{Metric, PreparedPair};
use candle_core::Tensor;
use glassbox_data::HookPoint;
use glassbox_models::tokenizer::Encoded;
use glassbox_models::{
    Capture, Hooks, LoadedModel, ModelError, PrefixCache, Result, Suffixes, TokenBatch,
};

/// Where an overwrite's values come from.
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    /// A run's activation `[t × width]`: each position takes that position's row.
    Rows(&'a [f32]),
    /// One row for every position (an ablation's zeros or mean).
    Fill(&'a [f32]),
}

/// The hook behind patching and ablation: in copy `i` of a batch, the columns of job `i` (one
/// head's slice, or the whole width) at its position (or, with `None`, every position) are
/// overwritten from the source.
pub(super) struct Overwrite<'a> {
    pub point: HookPoint,
    /// Per copy: (position, or every position; head, or the whole width).
    pub jobs: &'a [(Option<usize>, Option<usize>)],
    pub source: Source<'a>,
    pub head_dim: usize,
    /// Per copy, the position of its row 0 (runs over suffixes, see `forward_suffixes`);
    /// empty: every copy starts at position 0.
    pub shift: &'a [usize],
}

impl Hooks for Overwrite<'_> {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        if point != self.point {
            return Ok(x);
        }
        let (k, t, w) = x.dims3()?;
        let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
        for (i, &(position, head)) in self.jobs.iter().enumerate() {
            let (from, len) = head.map_or((0, w), |h| (h * self.head_dim, self.head_dim));
            let shift = self.shift.get(i).copied().unwrap_or(0);
            let positions = position.map_or(shift..shift + t, |p| p..p + 1);
            for p in positions {
                let row = match self.source {
                    Source::Rows(r) => &r[p * w..(p + 1) * w],
                    Source::Fill(f) => f,
                };
                let dst = (i * t + p - shift) * w;
                v[dst + from..dst + from + len].copy_from_slice(&row[from..from + len]);
            }
        }
        Tensor::from_vec(v, (k, t, w), x.device())
    }
}
use std::collections::BTreeMap;

/// The metric of each of a batch's runs from their last-position logits.
pub(super) fn score(
    metric: Metric,
    logits: &[Vec<f32>],
    pair: &PreparedPair,
    clean_logp: &[f64],
) -> Vec<f64> {
    logits
        .iter()
        .map(|row| {
            let logp = log_softmax(row);
            match metric {
                Metric::LogitDiff => {
                    row[pair.answer as usize] as f64 - row[pair.wrong as usize] as f64
                }
                Metric::Logprob => logp[pair.answer as usize],
                Metric::Prob => logp[pair.answer as usize].exp(),
                Metric::Kl => clean_logp
                    .iter()
                    .zip(&logp)
                    .map(|(c, r)| c.exp() * (c - r))
                    .sum(),
            }
        })
        .collect()
}

pub(super) fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row
        .iter()
        .map(|&v| v as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let lse = row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// Last-position logits `[k][vocab]` of a forward over `batch` with `hooks`.
pub(super) fn last_logits(
    model: &LoadedModel,
    batch: &TokenBatch,
    hooks: &mut dyn Hooks,
) -> Result<Vec<Vec<f32>>> {
    last_logits_from(model, batch, None, hooks)
}

/// The same, from block `l` on when `start` = `(l, resid_pre)` gives the residual entering it
/// (`t × hidden`, the same for every copy in the batch) and the family has a forward from a
/// block: the blocks before a patched hook compute what the base run already did.
pub(super) fn last_logits_from(
    model: &LoadedModel,
    batch: &TokenBatch,
    start: Option<(usize, &[f32])>,
    hooks: &mut dyn Hooks,
) -> Result<Vec<Vec<f32>>> {
    let hidden = hidden_from(model, batch, start, hooks)?;
    last_position_logits(model, &hidden)
}

/// Logits `[k][vocab]` of the last position of a final hidden state `[k, t, hidden]` whose
/// copies all fill `t` positions.
fn last_position_logits(model: &LoadedModel, hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
    let t = hidden.dim(1)?;
    let last = hidden.narrow(1, t - 1, 1)?.contiguous()?;
    Ok(unembed(model, &last)?.squeeze(1)?.to_vec2()?)
}

/// Last-position logits `[k][vocab]` and, per copy, the mean next-token cross-entropy over the
/// prompt `ids` (positions `0..t−1` predicting `1..t`), of a forward from `start` with `hooks`.
pub(super) fn logits_and_loss_from(
    model: &LoadedModel,
    batch: &TokenBatch,
    start: Option<(usize, &[f32])>,
    hooks: &mut dyn Hooks,
    ids: &[u32],
) -> Result<(Vec<Vec<f32>>, Vec<f64>)> {
    let hidden = hidden_from(model, batch, start, hooks)?;
    let all: Vec<Vec<Vec<f32>>> = unembed(model, &hidden)?.to_vec3()?;
    let mut last = Vec::with_capacity(all.len());
    let mut losses = Vec::with_capacity(all.len());
    for rows in all {
        let predicted = ids.len().saturating_sub(1);
        let loss: f64 = (0..predicted)
            .map(|p| -log_softmax(&rows[p])[ids[p + 1] as usize])
            .sum::<f64>()
            / predicted.max(1) as f64;
        losses.push(loss);
        last.push(rows.into_iter().last().unwrap_or_default());
    }
    Ok((last, losses))
}

/// Last-position logits `[k][vocab]` of copies of a cached run recomputed from their own
/// positions on (see `forward_suffixes`); `None` where the family has no such forward.
pub(super) fn last_logits_suffixes(
    model: &LoadedModel,
    suffixes: &Suffixes<'_>,
    hooks: &mut dyn Hooks,
) -> Result<Option<Vec<Vec<f32>>>> {
    let Some(hidden) = model.model.forward_suffixes(suffixes, hooks).transpose()? else {
        return Ok(None);
    };
    // Every suffix ends at the run's last position: row `len − start − 1` of its copy.
    let len = suffixes.prefix.len();
    let last: Vec<Tensor> = suffixes
        .starts
        .iter()
        .enumerate()
        .map(|(c, &start)| hidden.get(c)?.narrow(0, len - start - 1, 1))
        .collect::<candle_core::Result<_>>()?;
    let last = Tensor::stack(&last, 0)?;
    Ok(Some(unembed(model, &last)?.squeeze(1)?.to_vec2()?))
}

fn unembed(model: &LoadedModel, hidden: &Tensor) -> Result<Tensor> {
    model
        .model
        .unembed(hidden)
        .ok_or_else(|| ModelError::Invalid("a causal LM has an unembedding".into()))?
}

/// The final hidden state of a forward over `batch`, from block `l` when `start` = `(l,
/// resid_pre)` and the family can.
fn hidden_from(
    model: &LoadedModel,
    batch: &TokenBatch,
    start: Option<(usize, &[f32])>,
    hooks: &mut dyn Hooks,
) -> Result<Tensor> {
    let from = match start {
        Some((block, resid)) => {
            let (k, t) = batch.input_ids.dims2()?;
            let width = resid.len() / t.max(1);
            let copies: Vec<f32> = resid
                .iter()
                .copied()
                .cycle()
                .take(k * resid.len())
                .collect();
            let resid = Tensor::from_vec(copies, (k, t, width), &model.device)?;
            model
                .model
                .forward_from(batch, block, &resid, hooks)
                .transpose()?
        }
        None => None,
    };
    match from {
        Some(h) => Ok(h),
        None => model.model.forward(batch.into(), hooks),
    }
}

pub(super) fn batch_of(
    model: &LoadedModel,
    encoded: &Encoded,
    copies: usize,
) -> Result<TokenBatch> {
    let refs: Vec<&Encoded> = vec![encoded; copies];
    TokenBatch::from_encoded(&refs, model.pad_id, &model.device)
}

/// Activations `[t × width]` of one run, by hook.
pub(super) type Cache = BTreeMap<HookPoint, Vec<f32>>;

/// One run's cached activations and outputs.
pub(super) struct CachedRun {
    /// Activations `[t × width]` at every hook asked for.
    pub acts: Cache,
    /// Last-position logits.
    pub logits: Vec<f32>,
    /// Its attention inputs at every block, where the family can keep them: runs that differ
    /// from it only from some position on start there.
    pub prefix: Option<PrefixCache>,
}

/// One run with every hook in `hooks` cached, and with `keep_prefix` its attention inputs
/// where the family can keep them (only the run that patched runs start from needs them).
pub(super) fn cached_run(
    model: &LoadedModel,
    encoded: &Encoded,
    hooks: &[HookPoint],
    keep_prefix: bool,
) -> Result<CachedRun> {
    let batch = batch_of(model, encoded, 1)?;
    let mut capture = Capture::new(hooks.iter().copied());
    let kept = keep_prefix
        .then(|| model.model.forward_keeping_prefix(&batch, &mut capture))
        .flatten();
    let (logits, prefix) = match kept {
        Some(run) => {
            let (hidden, prefix) = run?;
            (last_position_logits(model, &hidden)?, Some(prefix))
        }
        None => (last_logits(model, &batch, &mut capture)?, None),
    };
    let mut acts = BTreeMap::new();
    for &hook in hooks {
        let x = capture.get(hook, model.model.family())?;
        acts.insert(hook, x.flatten_all()?.to_vec1()?);
    }
    let logits = logits.into_iter().next().unwrap_or_default();
    Ok(CachedRun {
        acts,
        logits,
        prefix,
    })
}
