//! Forwards with an activation replaced: the hook that replaces one point's activation, the
//! next-token distribution of a causal LM under such a forward, and the splice metrics of a
//! reconstruction (an SAE's, or zeros) at a hook over a run's examples.
//!
//! Splicing, over up to [`SPLICE_EXAMPLES`] examples of the run (real positions only,
//! predicting token t + 1): `ce_clean` (the model as is), `ce_spliced` (the hook replaced by
//! the reconstruction), `ce_zero` (hook zero-ablated); `ce_loss_recovered = (ce_zero −
//! ce_spliced) / (ce_zero − ce_clean)`; `kl_spliced` and `kl_zero` are the mean KL(clean ‖
//! spliced) of the next-token distributions, in nats.

use candle_core::{DType, Tensor};
use glassbox_data::examples::read_examples;
use glassbox_data::{HookPoint, RunDir};
use glassbox_models::{Capture, Hooks, LoadedModel, ModelError, Result, TokenBatch};

/// Examples of the run the splice metrics are measured on.
pub const SPLICE_EXAMPLES: usize = 64;

/// A hook that replaces the activation at one point by `edit(activation)` (`[batch, seq,
/// width]` in, the same shape out) and leaves every other point alone.
pub struct Replace<F> {
    point: HookPoint,
    edit: F,
}

impl<F> Replace<F>
where
    F: FnMut(Tensor) -> candle_core::Result<Tensor>,
{
    /// Replaces the activation at `point` by `edit` of it.
    pub fn new(point: HookPoint, edit: F) -> Self {
        Self { point, edit }
    }
}

impl<F> Hooks for Replace<F>
where
    F: FnMut(Tensor) -> candle_core::Result<Tensor>,
{
    fn wants(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        if point == self.point {
            (self.edit)(x)
        } else {
            Ok(x)
        }
    }
}

/// Logits `[batch, seq, vocab]` of a causal LM's forward with `hooks`; an error for models
/// without an unembedding.
pub fn logits(model: &LoadedModel, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor> {
    let normalized = model.model.forward(batch.into(), hooks)?;
    model.model.unembed(&normalized).ok_or_else(|| {
        ModelError::Invalid(format!(
            "{}: it predicts no next token",
            glassbox_models::why_no_next_token(model.model.as_ref())
        ))
    })?
}

/// Per-position next-token log-probabilities `[b][t][vocab]` of a forward with `hooks`,
/// normalised in f64.
pub fn log_probs(
    model: &LoadedModel,
    batch: &TokenBatch,
    hooks: &mut dyn Hooks,
) -> Result<Vec<Vec<Vec<f64>>>> {
    let mut rows: Vec<Vec<Vec<f64>>> = logits(model, batch, hooks)?
        .to_dtype(DType::F64)?
        .to_vec3()?;
    for row in rows.iter_mut().flatten() {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = row.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
        row.iter_mut().for_each(|v| *v -= log_sum);
    }
    Ok(rows)
}

/// What splicing a reconstruction in at a hook does to next-token prediction.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SpliceMetrics {
    /// Predicted positions measured.
    pub tokens: u64,
    /// Mean next-token cross-entropy of the model as is.
    pub ce_clean: f64,
    /// … with the hook replaced by the reconstruction.
    pub ce_spliced: f64,
    /// … with the hook zero-ablated.
    pub ce_zero: f64,
    /// `(ce_zero − ce_spliced) / (ce_zero − ce_clean)`.
    pub ce_loss_recovered: f64,
    /// Mean KL(clean ‖ spliced), nats.
    pub kl_spliced: f64,
    /// Mean KL(clean ‖ zero-ablated), nats.
    pub kl_zero: f64,
}

/// A reconstruction of activation rows (`n × width`, row-major) of one hook.
pub type Reconstruct<'a> = dyn Fn(&[f32]) -> std::result::Result<Vec<f32>, String> + 'a;

/// A hook that keeps the activation at `read_at` and replaces the one at `write_at` (later in
/// the forward, or the same point) by `edit` of the kept rows: a transcoder spliced in for the
/// MLP it imitates, or an SAE for its own hook.
pub struct ReadThenReplace<F> {
    read_at: HookPoint,
    write_at: HookPoint,
    kept: Option<Tensor>,
    edit: F,
}

impl<F> ReadThenReplace<F>
where
    F: FnMut(Tensor) -> candle_core::Result<Tensor>,
{
    /// Replaces `write_at` by `edit` of the rows last seen at `read_at`.
    pub fn new(read_at: HookPoint, write_at: HookPoint, edit: F) -> Self {
        Self {
            read_at,
            write_at,
            kept: None,
            edit,
        }
    }
}

impl<F> Hooks for ReadThenReplace<F>
where
    F: FnMut(Tensor) -> candle_core::Result<Tensor>,
{
    fn wants(&self, point: HookPoint) -> bool {
        point == self.read_at || point == self.write_at
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        if point == self.read_at {
            self.kept = Some(x.clone());
        }
        if point != self.write_at {
            return Ok(x);
        }
        let kept = self.kept.take().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "`{}` was reached before `{}`: the splice reads its input first",
                self.write_at, self.read_at
            ))
        })?;
        (self.edit)(kept)
    }
}

/// Splices `reconstruct` in at `point` over the run's first [`SPLICE_EXAMPLES`] examples and
/// compares next-token prediction with the clean and the zero-ablated model.
pub fn splice_metrics(
    run: &RunDir,
    model: &LoadedModel,
    point: HookPoint,
    reconstruct: &Reconstruct<'_>,
) -> Result<SpliceMetrics> {
    splice_metrics_from(run, model, point, point, reconstruct)
}

/// [`splice_metrics`] with the replacement at `write_at` computed from the rows at `read_at`
/// (a transcoder's input hook); the zero-ablated baseline zeroes `write_at`.
pub fn splice_metrics_from(
    run: &RunDir,
    model: &LoadedModel,
    read_at: HookPoint,
    write_at: HookPoint,
    reconstruct: &Reconstruct<'_>,
) -> Result<SpliceMetrics> {
    let examples = read_examples(run)?;
    let texts: Vec<&str> = examples
        .texts
        .iter()
        .take(SPLICE_EXAMPLES)
        .map(String::as_str)
        .collect();
    let spliced_rows = |x: Tensor| -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let rows: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let out = reconstruct(&rows).map_err(candle_core::Error::Msg)?;
        Tensor::from_vec(out, (b, t, d), x.device())
    };
    let (mut ce, mut kl, mut tokens) = ([0.0f64; 3], [0.0f64; 2], 0u64);
    for chunk in texts.chunks(8) {
        let encoded = model.tokenizer()?.encode(chunk)?;
        let refs: Vec<_> = encoded.iter().collect();
        let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device)?;
        let clean = log_probs(model, &batch, &mut Capture::new([]))?;
        let mut splice = ReadThenReplace::new(read_at, write_at, spliced_rows);
        let spliced = log_probs(model, &batch, &mut splice)?;
        let zeroed = log_probs(
            model,
            &batch,
            &mut Replace::new(write_at, |x| x.zeros_like()),
        )?;
        for (i, e) in encoded.iter().enumerate() {
            for p in 0..e.ids.len().saturating_sub(1) {
                let next = e.ids[p + 1] as usize;
                for (k, lp) in [&clean, &spliced, &zeroed].iter().enumerate() {
                    ce[k] -= lp[i][p][next];
                }
                for (k, lp) in [&spliced, &zeroed].iter().enumerate() {
                    kl[k] += clean[i][p]
                        .iter()
                        .zip(&lp[i][p])
                        .map(|(c, s)| c.exp() * (c - s))
                        .sum::<f64>();
                }
                tokens += 1;
            }
        }
    }
    let n = tokens.max(1) as f64;
    let [ce_clean, ce_spliced, ce_zero] = ce.map(|v| v / n);
    Ok(SpliceMetrics {
        tokens,
        ce_clean,
        ce_spliced,
        ce_zero,
        ce_loss_recovered: (ce_zero - ce_spliced) / (ce_zero - ce_clean),
        kl_spliced: kl[0] / n,
        kl_zero: kl[1] / n,
    })
}
