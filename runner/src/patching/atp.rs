//! Attribution patching's gradients: one differentiable forward of the base run with a zero
//! variable added at every hook, one backward of the metric; and Spearman's ρ to compare its
//! estimates with the exact effects.

use super::forward::{batch_of, Cache};
use super::{Metric, PreparedPair};
use candle_core::{Tensor, Var, D};
use glassbox_data::HookPoint;
use glassbox_models::tokenizer::Encoded;
use glassbox_models::{Hooks, LoadedModel, ModelError, Result};
use std::collections::BTreeMap;

/// Adds a zero variable at each wanted hook: the gradient with respect to it is the gradient
/// with respect to the activation, and the graph stays whole. Optionally keeps one point's
/// (tapped) tensor, for a metric read from a hook rather than the output.
pub(super) struct GradientTaps {
    wanted: Vec<HookPoint>,
    taps: Vec<(HookPoint, Var)>,
    keep: Option<HookPoint>,
    /// The kept point's tensor, once the forward reached it.
    pub(super) kept: Option<Tensor>,
}

impl GradientTaps {
    /// Taps `wanted`, and keeps `keep`'s tensor.
    pub(super) fn new(wanted: &[HookPoint], keep: Option<HookPoint>) -> Self {
        Self {
            wanted: wanted.to_vec(),
            taps: Vec::new(),
            keep,
            kept: None,
        }
    }

    /// `∂value/∂activation` `[t × width]` at every tapped hook (zeros where the value does not
    /// depend on it); an error names a wanted hook the forward never reached.
    pub(super) fn gradients(
        self,
        value: &Tensor,
        family: &str,
    ) -> Result<BTreeMap<HookPoint, Vec<f32>>> {
        let grads = value.backward()?;
        let mut out = BTreeMap::new();
        for (hook, z) in self.taps {
            let g = match grads.get(z.as_tensor()) {
                Some(g) => g
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()?,
                None => vec![0.0; z.as_tensor().elem_count()],
            };
            out.insert(hook, g);
        }
        if let Some(h) = self.wanted.iter().find(|h| !out.contains_key(h)) {
            return Err(ModelError::UnknownHook {
                name: h.to_string(),
                hint: format!(" (the {family} differentiable forward never reached it)"),
            });
        }
        Ok(out)
    }
}

impl Hooks for GradientTaps {
    fn wants(&self, point: HookPoint) -> bool {
        self.wanted.contains(&point) || Some(point) == self.keep
    }
    fn needs_graph(&self) -> bool {
        true
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let x = if self.wanted.contains(&point) {
            let z = Var::zeros(x.shape(), x.dtype(), x.device())?;
            let y = (&x + z.as_tensor())?;
            self.taps.push((point, z));
            y
        } else {
            x
        };
        if Some(point) == self.keep {
            self.kept = Some(x.clone());
        }
        Ok(x)
    }
}

/// The base run's metric and `∂metric/∂activation` `[t × width]` at every hook.
pub(super) fn atp_gradients(
    model: &LoadedModel,
    base: &Encoded,
    hooks: &[HookPoint],
    metric: Metric,
    pair: &PreparedPair,
    clean_logp: &[f64],
) -> Result<(f64, Cache)> {
    let batch = batch_of(model, base, 1)?;
    let mut taps = GradientTaps::new(hooks, None);
    let hidden = model
        .model
        .forward_differentiable((&batch).into(), &mut taps)?;
    let t = hidden.dim(1)?;
    let last = hidden.narrow(1, t - 1, 1)?;
    let logits = model
        .model
        .unembed(&last)
        .ok_or_else(|| ModelError::Invalid("a causal LM has an unembedding".into()))??
        .flatten_all()?;
    let value = metric_tensor(
        metric,
        &logits,
        pair.answer as usize,
        pair.wrong as usize,
        clean_logp,
    )?;
    let base_metric = value.to_scalar::<f32>()? as f64;
    Ok((base_metric, taps.gradients(&value, model.model.family())?))
}

/// One run's metric from its logits `z` (1-D), differentiably: `logit_diff` = z[answer] −
/// z[rival], `logprob`/`prob` of the answer, `kl` = KL(clean ‖ run).
pub(super) fn metric_tensor(
    metric: Metric,
    z: &Tensor,
    answer: usize,
    rival: usize,
    clean_logp: &[f64],
) -> Result<Tensor> {
    let max = z.max_keepdim(D::Minus1)?.detach();
    let lse = z
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        .broadcast_add(&max)?;
    let logp = z.broadcast_sub(&lse)?;
    let pick = |v: &Tensor, i: usize| v.narrow(0, i, 1);
    Ok(match metric {
        Metric::LogitDiff => (pick(z, answer)? - pick(z, rival)?)?,
        Metric::Logprob => pick(&logp, answer)?,
        Metric::Prob => pick(&logp, answer)?.exp()?,
        Metric::Kl => {
            let c: Vec<f32> = clean_logp.iter().map(|&v| v as f32).collect();
            let c = Tensor::from_vec(c, logp.shape(), logp.device())?;
            (c.exp()? * (&c - &logp)?)?.sum_keepdim(0)?
        }
    }
    .sum_all()?)
}

/// Spearman's rank correlation (average ranks for ties); NaN for fewer than 2 points or a
/// constant side.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
                j += 1;
            }
            let avg = (i + j) as f64 / 2.0;
            for &k in &order[i..=j] {
                r[k] = avg;
            }
            i = j + 1;
        }
        r
    }
    if a.len() < 2 || a.len() != b.len() {
        return f64::NAN;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}
