//! Gradients of a scalar target with respect to hooked activations, by candle autograd through
//! the model's differentiable forward, and pooled activations of small text sets — the two
//! model-side inputs of TCAV.
//!
//! The target is a linear head on a pooled activation at a later hook (a probe from the run:
//! `probe:<label>=<class>`): `f(x) = logit_c(W · pool(h_target(x)) + b)` under the logit
//! convention, or the cross-entropy loss of class `c` under the loss convention. Each
//! example's `f` depends on its own tokens only, so one backward pass of `Σ_b f_b` gives every
//! example's `∂f_b / ∂h_b` at every position, at every wanted hook at once.

use candle_core::{Tensor, Var, D};
use glassbox_data::Pool;
use glassbox_models::tokenizer::Encoded;
use glassbox_models::LoadedModel;
use glassbox_models::TokenBatch;
use glassbox_models::{Capture, ModelError, Result};
use glassbox_models::{HookPoint, Hooks};
use std::collections::BTreeMap;

/// Which scalar the sensitivity is taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// The class logit (Captum's convention): positive sensitivity = the concept raises the class.
    Logit,
    /// The cross-entropy loss of the class (the TensorFlow TCAV convention): negative
    /// sensitivity = the concept raises the class.
    Loss,
}

impl Convention {
    /// `logit` or `loss`, as folder names and tables spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Convention::Logit => "logit",
            Convention::Loss => "loss",
        }
    }
}

/// A linear head on a pooled hook activation, and the class whose score is the target.
#[derive(Debug, Clone)]
pub struct LinearHead {
    /// The hook whose pooled activation the head reads.
    pub hook: HookPoint,
    /// How that activation is pooled over the example's tokens.
    pub pool: Pool,
    /// `outputs × width`, row-major; one output for a binary head (the logit of class 1).
    pub weight: Vec<f32>,
    /// One bias per output.
    pub bias: Vec<f32>,
    /// Classes of the probe (2 for a binary head).
    pub n_classes: usize,
    /// The class whose logit (or loss) is the target.
    pub class: usize,
    /// A dense layer and its activation between the pooled activation and the head (BERT's
    /// pooler, for a sequence classifier's own class head); `None` for probes.
    pub pooler: Option<Box<Pooler>>,
}

impl LinearHead {
    /// Whether two heads compute the same score: one probe named with and without its hook,
    /// or one class by label and by index.
    pub fn same_score(&self, other: &LinearHead) -> bool {
        self.hook == other.hook
            && self.pool == other.pool
            && self.class == other.class
            && self.weight == other.weight
            && self.bias == other.bias
    }
}

pub use glassbox_models::class_head::Pooler;

/// The first of `hooks` that comes after `target` in `model`'s hook order: a target read off
/// `target` does not depend on it (gradient zero there).
pub fn first_after(
    model: &LoadedModel,
    hooks: &[HookPoint],
    target: HookPoint,
) -> Option<HookPoint> {
    let order = model.model.hook_points();
    let index = |p: &HookPoint| order.iter().position(|q| q == p);
    hooks.iter().copied().find(|h| index(h) > index(&target))
}

/// Per-example target values and, per hook, `[batch, seq, width]` gradients (zero at padding).
pub struct TargetGradients {
    /// The target's value per example.
    pub values: Vec<f32>,
    /// `∂ target / ∂ activation` per hook, `[batch, seq, width]`.
    pub gradients: BTreeMap<HookPoint, Tensor>,
}

/// Adds a zero-valued variable at every wanted hook: the activation is unchanged, and since
/// candle keeps gradients only for variables, `∂f/∂z` is the gradient at that hook — while
/// gradients still flow through to earlier hooks. Keeps the head hook's tensor.
struct GradientHooks {
    wanted: Vec<HookPoint>,
    head: HookPoint,
    probes: BTreeMap<HookPoint, Var>,
    head_value: Option<Tensor>,
}

impl Hooks for GradientHooks {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.head || self.wanted.contains(&point)
    }

    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let x = if self.wanted.contains(&point) {
            let z = Var::zeros(x.shape(), x.dtype(), x.device())?;
            let shifted = x.add(z.as_tensor())?;
            self.probes.insert(point, z);
            shifted
        } else {
            x
        };
        if point == self.head {
            self.head_value = Some(x.clone());
        }
        Ok(x)
    }

    fn needs_graph(&self) -> bool {
        true
    }

    /// The target reads the head's hook, not the outputs: once it and every wanted hook have
    /// been seen, the rest of the forward is not needed.
    fn satisfied(&self) -> bool {
        self.head_value.is_some() && self.wanted.iter().all(|p| self.probes.contains_key(p))
    }
}

/// Pools `[batch, seq, width]` over each example's real tokens, differentiably.
pub(crate) fn pool(h: &Tensor, batch: &TokenBatch, pool: Pool) -> Result<Tensor> {
    let (b, t, _) = h.dims3()?;
    let device = h.device();
    let weights = |w: Vec<f32>| -> Result<Tensor> { Ok(Tensor::from_vec(w, (b, t, 1), device)?) };
    let pooled = match pool {
        Pool::Max => {
            // Padding gets the most negative value, so it never wins the maximum.
            let bias = batch.mask.affine(-(f32::MIN as f64), f32::MIN as f64)?;
            h.broadcast_add(&bias.unsqueeze(2)?)?.max(1)?
        }
        _ => {
            let mut w = vec![0f32; b * t];
            for (i, &n) in batch.lengths.iter().enumerate() {
                match pool {
                    Pool::Mean => w[i * t..i * t + n].fill(1.0 / n as f32),
                    Pool::Cls => w[i * t] = 1.0,
                    Pool::Last => w[i * t + n - 1] = 1.0,
                    Pool::Max => unreachable!("handled above"),
                }
            }
            h.broadcast_mul(&weights(w)?)?.sum(1)?
        }
    };
    Ok(pooled)
}

/// The target `f` for every example of the batch, `[batch]`.
pub(crate) fn target(pooled: &Tensor, head: &LinearHead, convention: Convention) -> Result<Tensor> {
    let width = pooled.dim(1)?;
    let pooled = match &head.pooler {
        Some(p) if p.weight.len() == width * width && p.bias.len() == width => {
            let w = Tensor::from_slice(&p.weight, (width, width), pooled.device())?;
            let b = Tensor::from_slice(&p.bias, width, pooled.device())?;
            p.act.apply(&pooled.matmul(&w.t()?)?.broadcast_add(&b)?)?
        }
        Some(p) => {
            return Err(ModelError::Invalid(format!(
                "the head's pooler holds {} weights and {} biases; `{}` is {width} wide",
                p.weight.len(),
                p.bias.len(),
                head.hook
            )))
        }
        None => pooled.clone(),
    };
    let pooled = &pooled;
    let outputs = head.bias.len();
    if head.weight.len() != outputs * width {
        return Err(ModelError::Invalid(format!(
            "target head has {} weights for {outputs} outputs, but `{}` is {width} wide",
            head.weight.len(),
            head.hook
        )));
    }
    let device = pooled.device();
    let w = Tensor::from_vec(head.weight.clone(), (outputs, width), device)?;
    let b = Tensor::from_vec(head.bias.clone(), outputs, device)?;
    let z = pooled.matmul(&w.t()?)?.broadcast_add(&b)?;
    let f = if outputs == 1 {
        // Binary head: class 1's logit is z, class 0's is −z.
        let z = z.squeeze(1)?;
        let logit = if head.class == 1 { z } else { z.neg()? };
        match convention {
            Convention::Logit => logit,
            // −log σ(logit) = softplus(−logit), computed stably as relu(−l) + log(1 + e^−|l|).
            Convention::Loss => {
                let neg = logit.neg()?;
                (neg.relu()? + (neg.abs()?.neg()?.exp()? + 1.0)?.log()?)?
            }
        }
    } else {
        let logit = z.narrow(1, head.class, 1)?.squeeze(1)?;
        match convention {
            Convention::Logit => logit,
            Convention::Loss => {
                let top = z.max_keepdim(D::Minus1)?;
                let lse = (z
                    .broadcast_sub(&top)?
                    .exp()?
                    .sum_keepdim(D::Minus1)?
                    .log()?
                    + top)?;
                (lse.squeeze(1)? - logit)?
            }
        }
    };
    Ok(f)
}

/// `(f, ∂f/∂z)` of one example's head outputs `z`.
fn head_value_and_slope(z: &[f64], head: &LinearHead, convention: Convention) -> (f64, Vec<f64>) {
    if z.len() == 1 {
        let sign = if head.class == 1 { 1.0 } else { -1.0 };
        let logit = sign * z[0];
        match convention {
            Convention::Logit => (logit, vec![sign]),
            // −log σ(l): slope −(1 − σ(l)) along l.
            Convention::Loss => {
                let sigma = 1.0 / (1.0 + (-logit).exp());
                let loss = if logit > 0.0 {
                    (-logit).exp().ln_1p()
                } else {
                    -logit + logit.exp().ln_1p()
                };
                (loss, vec![-sign * (1.0 - sigma)])
            }
        }
    } else {
        match convention {
            Convention::Logit => {
                let mut slope = vec![0.0; z.len()];
                slope[head.class] = 1.0;
                (z[head.class], slope)
            }
            Convention::Loss => {
                let top = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = z.iter().map(|v| (v - top).exp()).sum();
                let mut slope: Vec<f64> = z.iter().map(|v| (v - top).exp() / sum).collect();
                slope[head.class] -= 1.0;
                (top + sum.ln() - z[head.class], slope)
            }
        }
    }
}

/// A linear head's outputs `z = W·x + b` in f64 (`weight` `outputs × x.len()`, row-major): the
/// one place the attribution seeds and the patching metrics compute a probe's logits.
pub(crate) fn head_outputs(weight: &[f32], bias: &[f32], x: &[f64]) -> Vec<f64> {
    let width = x.len();
    bias.iter()
        .zip(weight.chunks_exact(width))
        .map(|(b, row)| row.iter().zip(x).map(|(w, v)| *w as f64 * v).sum::<f64>() + *b as f64)
        .collect()
}

/// The head's value per example and `∂f/∂output` for the packed output `out` of the block the
/// head reads (example `b` at rows `offsets[b]..offsets[b + 1]`): the seed of a hand-written
/// backward. A `max` pool passes each feature's gradient to its first largest row (as the
/// pooling picks it).
pub fn head_seed(
    head: &LinearHead,
    convention: Convention,
    out: &[f32],
    offsets: &[usize],
) -> (Vec<f32>, Vec<f32>) {
    let width = head.weight.len() / head.bias.len();
    let mut values = Vec::with_capacity(offsets.len().saturating_sub(1));
    let mut d = vec![0f32; out.len()];
    for b in 0..offsets.len().saturating_sub(1) {
        let (s, e) = (offsets[b], offsets[b + 1]);
        // Per feature, the rows it is pooled from (with their share).
        let rows: Vec<usize> = match head.pool {
            Pool::Mean => (s..e).collect(),
            Pool::Cls => vec![s],
            Pool::Last => vec![e - 1],
            Pool::Max => Vec::new(),
        };
        let picked: Vec<usize> = if head.pool == Pool::Max {
            (0..width)
                .map(|j| {
                    (s..e).fold(s, |best, r| {
                        if out[r * width + j] > out[best * width + j] {
                            r
                        } else {
                            best
                        }
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let share = 1.0 / rows.len().max(1) as f64;
        let mut pooled = vec![0f64; width];
        if head.pool == Pool::Max {
            for (j, (p, &r)) in pooled.iter_mut().zip(&picked).enumerate() {
                *p = out[r * width + j] as f64;
            }
        }
        for &r in &rows {
            for (p, v) in pooled.iter_mut().zip(&out[r * width..(r + 1) * width]) {
                *p += *v as f64 * share;
            }
        }
        let z = head_outputs(&head.weight, &head.bias, &pooled);
        let (f, slope) = head_value_and_slope(&z, head, convention);
        values.push(f as f32);
        let mut d_pooled = vec![0f64; width];
        for (o, g) in slope.iter().enumerate() {
            for (dp, w) in d_pooled
                .iter_mut()
                .zip(&head.weight[o * width..(o + 1) * width])
            {
                *dp += g * *w as f64;
            }
        }
        for (j, &r) in picked.iter().enumerate() {
            d[r * width + j] = d_pooled[j] as f32;
        }
        for &r in &rows {
            for (dv, g) in d[r * width..(r + 1) * width].iter_mut().zip(&d_pooled) {
                *dv = (g * share) as f32;
            }
        }
    }
    (values, d)
}

/// The hand-written backward, where the family has one and the request fits it: residual
/// hooks only, a residual head hook, and a pool other than `max`.
fn residual_path(
    model: &LoadedModel,
    batch: &TokenBatch,
    hooks: &[HookPoint],
    head: &LinearHead,
    convention: Convention,
) -> Option<Result<TargetGradients>> {
    let HookPoint::ResidPost(last) = head.hook else {
        return None;
    };
    // The seed is linear in the pooled activation; a pooler is not (autograd takes it).
    if head.pool == Pool::Max || head.pooler.is_some() {
        return None;
    }
    let mut first = last;
    for p in hooks {
        match *p {
            HookPoint::ResidPre(i) if i <= last => first = first.min(i),
            HookPoint::ResidPost(i) if i < last => first = first.min(i + 1),
            HookPoint::ResidPost(i) if i == last => {}
            _ => return None,
        }
    }
    let width = head.weight.len() / head.bias.len();
    let mut values = Vec::new();
    let mut seed_grad = Vec::new();
    let mut seed = |out: &[f32], offsets: &[usize]| -> Vec<f32> {
        let (v, d) = head_seed(head, convention, out, offsets);
        values = v;
        seed_grad = d.clone();
        d
    };
    let result = model
        .model
        .residual_gradients(batch, first, last, &mut seed)?;
    Some((|| {
        let grads = result?;
        let (b, t) = batch.input_ids.dims2()?;
        let padded = |packed: &[f32]| -> Result<Tensor> {
            let mut out = vec![0f32; b * t * width];
            for (i, w) in grads.offsets.windows(2).enumerate() {
                out[i * t * width..(i * t + w[1] - w[0]) * width]
                    .copy_from_slice(&packed[w[0] * width..w[1] * width]);
            }
            Ok(Tensor::from_vec(out, (b, t, width), &model.device)?)
        };
        let mut gradients = BTreeMap::new();
        for p in hooks {
            let packed = match *p {
                HookPoint::ResidPre(i) => &grads.entering[i - first],
                HookPoint::ResidPost(i) if i == last => &seed_grad,
                HookPoint::ResidPost(i) => &grads.entering[i + 1 - first],
                _ => unreachable!("checked above"),
            };
            gradients.insert(*p, padded(packed)?);
        }
        Ok(TargetGradients { values, gradients })
    })())
}

/// `∂f/∂h` at `hooks` for one batch; the hooks must come before or at the head's hook.
/// Uses the family's hand-written backward where it applies (residual hooks and head), else
/// candle autograd through the differentiable forward; both are checked against finite
/// differences.
pub fn target_gradients(
    model: &LoadedModel,
    batch: &TokenBatch,
    hooks: &[HookPoint],
    head: &LinearHead,
    convention: Convention,
) -> Result<TargetGradients> {
    if head.class >= head.n_classes {
        return Err(ModelError::Invalid(format!(
            "target class {} out of range for a head with {} classes",
            head.class, head.n_classes
        )));
    }
    let order = model.model.hook_points();
    let index = |p: &HookPoint| order.iter().position(|q| q == p);
    let head_index = index(&head.hook).ok_or_else(|| {
        ModelError::Invalid(format!("target hook `{}` is not in this model", head.hook))
    })?;
    for p in hooks {
        match index(p) {
            Some(i) if i <= head_index => {}
            Some(_) => {
                return Err(ModelError::Invalid(format!(
                    "hook `{p}` comes after the target's hook `{}`; the target does not depend on it — use earlier hooks or a later target",
                    head.hook
                )))
            }
            None => return Err(ModelError::Invalid(format!("hook `{p}` is not in this model"))),
        }
    }
    if let Some(result) = residual_path(model, batch, hooks, head, convention) {
        return result;
    }
    target_gradients_autograd(model, batch, hooks, head, convention)
}

/// [`target_gradients`] by candle autograd.
pub fn target_gradients_autograd(
    model: &LoadedModel,
    batch: &TokenBatch,
    hooks: &[HookPoint],
    head: &LinearHead,
    convention: Convention,
) -> Result<TargetGradients> {
    let order = model.model.hook_points();
    let index = |p: &HookPoint| order.iter().position(|q| q == p);
    let mut gh = GradientHooks {
        wanted: hooks.to_vec(),
        head: head.hook,
        probes: BTreeMap::new(),
        head_value: None,
    };
    // Blocks before the earliest wanted hook need no gradients: the fast forward supplies the
    // residual stream entering that hook's block, and autograd runs from there.
    let start = hooks
        .iter()
        .filter_map(|p| index(p).map(|i| (i, *p)))
        .min()
        .and_then(|(_, p)| p.layer())
        .filter(|&l| l > 0);
    match start {
        Some(block) => {
            let entry = HookPoint::ResidPre(block);
            let mut capture = Capture::only([entry]);
            model.model.forward(batch.into(), &mut capture)?;
            let resid = capture.captured.remove(&entry).ok_or_else(|| {
                ModelError::Invalid(format!("the fast forward did not produce `{entry}`"))
            })?;
            model
                .model
                .forward_differentiable_from(batch, block, resid, &mut gh)?;
        }
        None => {
            model.model.forward_differentiable(batch.into(), &mut gh)?;
        }
    }
    let h = gh
        .head_value
        .as_ref()
        .ok_or_else(|| ModelError::Invalid(format!("the forward never reached `{}`", head.hook)))?;
    let f = target(&pool(h, batch, head.pool)?, head, convention)?;
    let grads = f.sum_all()?.backward()?;
    let mut gradients = BTreeMap::new();
    for (p, z) in &gh.probes {
        let g = match grads.get(z.as_tensor()) {
            Some(g) => g.clone(),
            None => z.as_tensor().zeros_like()?,
        };
        gradients.insert(*p, g);
    }
    Ok(TargetGradients {
        values: f.to_vec1::<f32>()?,
        gradients,
    })
}

/// Pooled activations at `hooks` for `texts`, row-major `texts.len() × width` per hook, with
/// the fast forward. For concept and random sets, which are small.
pub fn pooled_activations(
    model: &LoadedModel,
    texts: &[String],
    hooks: &[HookPoint],
    pool: Pool,
    batch_size: usize,
) -> Result<BTreeMap<HookPoint, Vec<f32>>> {
    let mut out: BTreeMap<HookPoint, Vec<f32>> = hooks.iter().map(|h| (*h, Vec::new())).collect();
    for chunk in texts.chunks(batch_size.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let encoded = model.tokenizer()?.encode(&refs)?;
        let encoded_refs: Vec<&Encoded> = encoded.iter().collect();
        let batch = TokenBatch::from_encoded(&encoded_refs, model.pad_id, &model.device)?;
        let mut capture = Capture::only(hooks.to_vec());
        model.model.forward((&batch).into(), &mut capture)?;
        for (point, tensor) in &capture.captured {
            let (_, t, w) = tensor.dims3()?;
            let values = tensor.flatten_all()?.to_vec1::<f32>()?;
            let rows = out.get_mut(point).expect("one entry per wanted hook");
            let mut pooled = vec![0f32; w];
            for (i, &n) in batch.lengths.iter().enumerate() {
                pool.apply(&values[i * t * w..(i * t + n) * w], w, &mut pooled);
                rows.extend_from_slice(&pooled);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-output head on 3 features (the target: class 1's logit); rows of two examples (2
    /// and 3 rows).
    fn head(pool: Pool) -> LinearHead {
        LinearHead {
            hook: HookPoint::Pooled,
            pool,
            weight: vec![1.0, -2.0, 0.5, 0.25, 1.5, -1.0],
            bias: vec![0.1, -0.3],
            n_classes: 2,
            class: 1,
            pooler: None,
        }
    }

    const OUT: [f32; 15] = [
        1.0, 2.0, -1.0, 3.0, -4.0, 0.5, //
        0.0, 1.0, 2.0, -2.0, 5.0, 1.0, 4.0, 0.0, 1.5,
    ];

    fn value(h: &LinearHead, out: &[f32], offsets: &[usize]) -> Vec<f32> {
        head_seed(h, Convention::Logit, out, offsets).0
    }

    /// Each pool's value is the head on the pooled rows, and its seed the gradient of that value
    /// (central differences; the max pool away from its ties).
    #[test]
    fn head_seeds_are_the_gradients_of_their_values() {
        let offsets = [0, 2, 5];
        for pool in [Pool::Mean, Pool::Cls, Pool::Last, Pool::Max] {
            let h = head(pool);
            let (values, d) = head_seed(&h, Convention::Logit, &OUT, &offsets);
            for (b, v) in values.iter().enumerate() {
                let rows = &OUT[offsets[b] * 3..offsets[b + 1] * 3];
                let mut pooled = [0f32; 3];
                pool.apply(rows, 3, &mut pooled);
                let z: Vec<f64> = pooled.iter().map(|x| f64::from(*x)).collect();
                let want = head_outputs(&h.weight, &h.bias, &z);
                assert!((f64::from(*v) - want[1]).abs() < 1e-5, "{pool:?}");
            }
            for i in 0..OUT.len() {
                let step = |e: f32| {
                    let mut o = OUT;
                    o[i] += e;
                    value(&h, &o, &offsets).iter().sum::<f32>()
                };
                let fd = (step(1e-2) - step(-1e-2)) / 2e-2;
                assert!((fd - d[i]).abs() < 1e-3, "{pool:?} [{i}]: {fd} vs {}", d[i]);
            }
        }
    }
}
