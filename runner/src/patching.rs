//! Activation patching (Meng et al. 2022; Heimersheim & Nanda 2024 for the conventions) and
//! its first-order estimate, attribution patching (Nanda 2023; Syed et al. 2023).
//!
//! Per prompt pair (same token count) the clean and the corrupted prompt run once with every
//! selected hook cached. Denoising runs the corrupted prompt with one activation — a hook at
//! one position, or one head's slice of `attn.hook_z` there — taken from the clean run; noising
//! is the reverse. Many patched runs go through the model as one batch (copies of the base
//! prompt, each with its own patch), and only the last position is unembedded. The metric is
//! read at the last position: `logit_diff` = logit(answer) − logit(wrong) (the default),
//! `logprob` / `prob` of the answer, or `kl` = KL(clean ‖ run) of the next-token distribution.
//! `normalized = (metric − metric_corrupted) / (metric_clean − metric_corrupted)`: 1 means the
//! patch restores the clean behaviour, 0 means it does nothing.
//!
//! Attribution patching estimates every effect at once from the base run's gradient:
//! `metric(patched) − metric(base) ≈ Σ (a_source − a_base) · ∂metric/∂a` over the patched
//! slice, from one differentiable forward and one backward per pair.

use candle_core::{Tensor, Var, D};
use glassbox_data::pairs::PromptPairs;
use glassbox_data::HookPoint;
use glassbox_models::tokenizer::Encoded;
use glassbox_models::{Capture, Hooks, LoadedModel, ModelError, Result, TokenBatch};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// What a patched run is scored by, at the last position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// logit(answer) − logit(wrong).
    LogitDiff,
    /// Probability of the answer.
    Prob,
    /// Log-probability of the answer.
    Logprob,
    /// KL(clean ‖ run) of the next-token distribution, nats.
    Kl,
}

/// Which run is patched with which run's activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Run the corrupted prompt with clean activations (what is sufficient to restore).
    Denoise,
    /// Run the clean prompt with corrupted activations (what is necessary).
    Noise,
}

/// The positions patched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Positions {
    /// Every position of the prompt.
    All,
    /// The last position only.
    Last,
    /// These positions (0-based).
    Listed(Vec<usize>),
}

impl fmt::Display for Positions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Positions::All => f.write_str("all"),
            Positions::Last => f.write_str("last"),
            Positions::Listed(v) => {
                let s: Vec<String> = v.iter().map(ToString::to_string).collect();
                f.write_str(&s.join(","))
            }
        }
    }
}

impl FromStr for Positions {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "all" => Ok(Positions::All),
            "last" => Ok(Positions::Last),
            list => {
                let mut v = list
                    .split(',')
                    .map(|p| p.trim().parse::<usize>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| {
                        format!(
                            "positions `{s}`: use all, last, or 0-based positions such as 0,3,5"
                        )
                    })?;
                v.sort_unstable();
                v.dedup();
                Ok(Positions::Listed(v))
            }
        }
    }
}

impl serde::Serialize for Positions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Positions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How to patch.
#[derive(Debug, Clone)]
pub struct PatchOptions {
    /// Hooks patched (each one a position-wise activation of the model).
    pub hooks: Vec<HookPoint>,
    /// Positions patched.
    pub positions: Positions,
    /// Patch `attn.hook_z` head by head (other hooks stay whole).
    pub heads: bool,
    /// The score of a run.
    pub metric: Metric,
    /// Denoising or noising.
    pub direction: Direction,
    /// Patched runs per forward pass.
    pub batch_size: usize,
    /// Also estimate every effect by attribution patching.
    pub atp: bool,
}

/// A pair, tokenised and checked.
#[derive(Debug, Clone)]
pub struct PreparedPair {
    /// Row index in the pairs file (0-based).
    pub row: usize,
    /// The clean prompt's tokens.
    pub clean: Encoded,
    /// The corrupted prompt's tokens (same count).
    pub corrupted: Encoded,
    /// The answer's token id.
    pub answer: u32,
    /// The wrong token's id.
    pub wrong: u32,
}

/// One patched run's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PatchRow {
    /// Row index of the pair in the pairs file.
    pub pair: u64,
    /// The hook patched.
    pub hook: HookPoint,
    /// The position patched.
    pub position: u32,
    /// The head patched (`attn.hook_z` with `heads`), else `None`.
    pub head: Option<u32>,
    /// The patched run's metric.
    pub metric: f64,
    /// The clean run's metric.
    pub metric_clean: f64,
    /// The corrupted run's metric.
    pub metric_corrupted: f64,
    /// `(metric − metric_corrupted) / (metric_clean − metric_corrupted)`.
    pub normalized: f64,
    /// Attribution patching's estimate of `metric`, when computed.
    pub atp_metric: Option<f64>,
}

/// A pair's clean and corrupted scores (for `patching/pairs.parquet`).
#[derive(Debug, Clone)]
pub struct PairSummary {
    /// The pair as prepared.
    pub pair: PreparedPair,
    /// The clean run's metric.
    pub metric_clean: f64,
    /// The corrupted run's metric.
    pub metric_corrupted: f64,
}

/// Hooks that cannot be patched one position at a time.
pub fn check_patchable(hook: HookPoint) -> Result<()> {
    match hook {
        HookPoint::AttnPattern(_) | HookPoint::Logits => Err(ModelError::Invalid(format!(
            "`{hook}` cannot be patched at a position (its row is not an activation the rest of \
             the model reads position by position); patch a residual, attention or MLP hook"
        ))),
        _ => Ok(()),
    }
}

/// Tokenises and checks every pair: equal token counts, one-token answers. Errors name the
/// file and row and show the tokenisation.
pub fn prepare_pairs(model: &LoadedModel, pairs: &PromptPairs) -> Result<Vec<PreparedPair>> {
    if model.model.unembedding().is_none() {
        return Err(ModelError::Invalid(format!(
            "patching with answer/wrong tokens needs a causal LM; the {} model has no unembedding",
            model.model.family()
        )));
    }
    let tokenizer = model.tokenizer()?;
    let file = pairs.source.display();
    let mut out = Vec::with_capacity(pairs.len());
    for row in 0..pairs.len() {
        let mut enc = tokenizer.encode(&[&pairs.clean[row], &pairs.corrupted[row]])?;
        let corrupted = enc.pop().expect("two encodings");
        let clean = enc.pop().expect("two encodings");
        if clean.ids.len() != corrupted.ids.len() {
            return Err(ModelError::Invalid(format!(
                "{file}: row {}: clean has {} tokens {:?} but corrupted has {} {:?}; patching \
                 compares positions one to one, so make the two prompts tokenise to the same length",
                row + 1,
                clean.ids.len(),
                clean.tokens,
                corrupted.ids.len(),
                corrupted.tokens
            )));
        }
        let one_token = |what: &str, text: &str| -> Result<u32> {
            let ids = tokenizer.encode_plain(text)?;
            match ids.as_slice() {
                [(id, _)] => Ok(*id),
                _ => Err(ModelError::Invalid(format!(
                    "{file}: row {}: {what} {text:?} is {} tokens {:?}; it must be exactly one \
                     (a leading space is part of a word-start token)",
                    row + 1,
                    ids.len(),
                    ids.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>()
                ))),
            }
        };
        let answer = one_token("answer", &pairs.answer[row])?;
        let wrong = one_token("wrong", &pairs.wrong[row])?;
        out.push(PreparedPair {
            row,
            clean,
            corrupted,
            answer,
            wrong,
        });
    }
    Ok(out)
}

/// The positions of a pair's prompts that `positions` selects; an error names the pair when
/// one is past its end (call it for every pair before writing anything).
pub fn positions_for(positions: &Positions, pair: &PreparedPair) -> Result<Vec<usize>> {
    resolve_positions(positions, pair.clean.ids.len(), pair)
}

fn resolve_positions(positions: &Positions, len: usize, pair: &PreparedPair) -> Result<Vec<usize>> {
    match positions {
        Positions::All => Ok((0..len).collect()),
        Positions::Last => Ok(vec![len - 1]),
        Positions::Listed(v) => {
            if let Some(p) = v.iter().find(|&&p| p >= len) {
                return Err(ModelError::Invalid(format!(
                    "pairs row {}: position {p} is past the prompt's {len} tokens {:?}",
                    pair.row + 1,
                    pair.clean.tokens
                )));
            }
            Ok(v.clone())
        }
    }
}

/// One patched run at the hook being swept: a position and maybe a head.
#[derive(Debug, Clone, Copy)]
struct Job {
    position: usize,
    head: Option<usize>,
}

/// Replaces, in copy `i` of the batch, the activation of job `i` by the source run's.
struct PatchMany<'a> {
    point: HookPoint,
    jobs: &'a [Job],
    source: &'a [f32],
    head_dim: usize,
}

impl Hooks for PatchMany<'_> {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        if point != self.point {
            return Ok(x);
        }
        let (k, t, w) = x.dims3()?;
        let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
        for (i, job) in self.jobs.iter().enumerate() {
            let (dst, src) = ((i * t + job.position) * w, job.position * w);
            let (from, len) = match job.head {
                Some(h) => (h * self.head_dim, self.head_dim),
                None => (0, w),
            };
            v[dst + from..dst + from + len]
                .copy_from_slice(&self.source[src + from..src + from + len]);
        }
        Tensor::from_vec(v, (k, t, w), x.device())
    }
}

/// The metric of each of a batch's runs from their last-position logits.
fn score(metric: Metric, logits: &[Vec<f32>], pair: &PreparedPair, clean_logp: &[f64]) -> Vec<f64> {
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

fn log_softmax(row: &[f32]) -> Vec<f64> {
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
fn last_logits(
    model: &LoadedModel,
    batch: &TokenBatch,
    hooks: &mut dyn Hooks,
) -> Result<Vec<Vec<f32>>> {
    let hidden = model.model.forward(batch.into(), hooks)?;
    let t = hidden.dim(1)?;
    let last = hidden.narrow(1, t - 1, 1)?.contiguous()?;
    let logits = model
        .model
        .unembed(&last)
        .ok_or_else(|| ModelError::Invalid("a causal LM has an unembedding".into()))??;
    Ok(logits.squeeze(1)?.to_vec2()?)
}

fn batch_of(model: &LoadedModel, encoded: &Encoded, copies: usize) -> Result<TokenBatch> {
    let refs: Vec<&Encoded> = vec![encoded; copies];
    TokenBatch::from_encoded(&refs, model.pad_id, &model.device)
}

/// Activations `[t × width]` of one run, by hook.
type Cache = BTreeMap<HookPoint, Vec<f32>>;

/// Cached activations `[t × width]` of one run at every hook, and its last-position logits.
fn cached_run(
    model: &LoadedModel,
    encoded: &Encoded,
    hooks: &[HookPoint],
) -> Result<(Cache, Vec<f32>)> {
    let batch = batch_of(model, encoded, 1)?;
    let mut capture = Capture::new(hooks.iter().copied());
    let logits = last_logits(model, &batch, &mut capture)?.remove(0);
    let mut acts = BTreeMap::new();
    for &hook in hooks {
        let x = capture
            .captured
            .get(&hook)
            .ok_or_else(|| ModelError::UnknownHook {
                name: hook.to_string(),
                hint: format!(" (the {} forward never reached it)", model.model.family()),
            })?;
        acts.insert(hook, x.flatten_all()?.to_vec1()?);
    }
    Ok((acts, logits))
}

/// Patches every (hook, position[, head]) of one pair; returns its rows and its clean and
/// corrupted metrics.
pub fn patch_pair(
    model: &LoadedModel,
    pair: &PreparedPair,
    opts: &PatchOptions,
) -> Result<(Vec<PatchRow>, PairSummary)> {
    for &hook in &opts.hooks {
        check_patchable(hook)?;
    }
    let (clean_acts, clean_logits) = cached_run(model, &pair.clean, &opts.hooks)?;
    let (corrupted_acts, corrupted_logits) = cached_run(model, &pair.corrupted, &opts.hooks)?;
    let clean_logp = log_softmax(&clean_logits);
    let metric_clean = score(opts.metric, &[clean_logits], pair, &clean_logp)[0];
    let metric_corrupted = score(opts.metric, &[corrupted_logits], pair, &clean_logp)[0];
    let (base, source_acts, base_acts) = match opts.direction {
        Direction::Denoise => (&pair.corrupted, &clean_acts, &corrupted_acts),
        Direction::Noise => (&pair.clean, &corrupted_acts, &clean_acts),
    };
    let len = pair.clean.ids.len();
    let positions = resolve_positions(&opts.positions, len, pair)?;
    let heads = model.model.attention_heads();
    let mut rows = Vec::new();
    let atp = if opts.atp {
        Some(atp_gradients(
            model,
            base,
            &opts.hooks,
            opts.metric,
            pair,
            &clean_logp,
        )?)
    } else {
        None
    };
    for &hook in &opts.hooks {
        let width = model.model.hook_width(hook);
        let per_head = match (opts.heads, hook, heads) {
            (true, HookPoint::AttnZ(_), Some(h)) if h > 0 && width % h == 0 => Some(h),
            _ => None,
        };
        let head_dim = per_head.map_or(width, |h| width / h);
        let jobs: Vec<Job> = positions
            .iter()
            .flat_map(|&position| match per_head {
                Some(h) => (0..h)
                    .map(|head| Job {
                        position,
                        head: Some(head),
                    })
                    .collect::<Vec<_>>(),
                None => vec![Job {
                    position,
                    head: None,
                }],
            })
            .collect();
        let source = &source_acts[&hook];
        for chunk in jobs.chunks(opts.batch_size.max(1)) {
            let batch = batch_of(model, base, chunk.len())?;
            let mut patch = PatchMany {
                point: hook,
                jobs: chunk,
                source,
                head_dim,
            };
            let logits = last_logits(model, &batch, &mut patch)?;
            let metrics = score(opts.metric, &logits, pair, &clean_logp);
            for (job, metric) in chunk.iter().zip(metrics) {
                let atp_metric = atp.as_ref().map(|(base_metric, grads)| {
                    let (g, b, s) = (&grads[&hook], &base_acts[&hook], source);
                    let start = job.position * width + job.head.map_or(0, |h| h * head_dim);
                    let end = start + if job.head.is_some() { head_dim } else { width };
                    base_metric
                        + (start..end)
                            .map(|i| (s[i] as f64 - b[i] as f64) * g[i] as f64)
                            .sum::<f64>()
                });
                rows.push(PatchRow {
                    pair: pair.row as u64,
                    hook,
                    position: job.position as u32,
                    head: job.head.map(|h| h as u32),
                    metric,
                    metric_clean,
                    metric_corrupted,
                    normalized: (metric - metric_corrupted) / (metric_clean - metric_corrupted),
                    atp_metric,
                });
            }
        }
    }
    Ok((
        rows,
        PairSummary {
            pair: pair.clone(),
            metric_clean,
            metric_corrupted,
        },
    ))
}

/// Adds a zero variable at each wanted hook: the gradient with respect to it is the gradient
/// with respect to the activation, and the graph stays whole.
struct GradientTaps {
    wanted: Vec<HookPoint>,
    taps: Vec<(HookPoint, Var)>,
}

impl Hooks for GradientTaps {
    fn wants(&self, point: HookPoint) -> bool {
        self.wanted.contains(&point)
    }
    fn needs_graph(&self) -> bool {
        true
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let z = Var::zeros(x.shape(), x.dtype(), x.device())?;
        let y = (&x + z.as_tensor())?;
        self.taps.push((point, z));
        Ok(y)
    }
}

/// The base run's metric and `∂metric/∂activation` `[t × width]` at every hook.
fn atp_gradients(
    model: &LoadedModel,
    base: &Encoded,
    hooks: &[HookPoint],
    metric: Metric,
    pair: &PreparedPair,
    clean_logp: &[f64],
) -> Result<(f64, Cache)> {
    let batch = batch_of(model, base, 1)?;
    let mut taps = GradientTaps {
        wanted: hooks.to_vec(),
        taps: Vec::new(),
    };
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
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let lse = logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        .broadcast_add(&max)?;
    let logp = logits.broadcast_sub(&lse)?;
    let pick = |v: &Tensor, i: u32| v.narrow(0, i as usize, 1);
    let value = match metric {
        Metric::LogitDiff => (pick(&logits, pair.answer)? - pick(&logits, pair.wrong)?)?,
        Metric::Logprob => pick(&logp, pair.answer)?,
        Metric::Prob => pick(&logp, pair.answer)?.exp()?,
        Metric::Kl => {
            let c: Vec<f32> = clean_logp.iter().map(|&v| v as f32).collect();
            let c = Tensor::from_vec(c, logp.shape(), logp.device())?;
            (c.exp()? * (&c - &logp)?)?.sum_keepdim(0)?
        }
    }
    .sum_all()?;
    let base_metric = value.to_scalar::<f32>()? as f64;
    let grads = value.backward()?;
    let mut out = BTreeMap::new();
    for (hook, z) in taps.taps {
        let g = match grads.get(z.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1()?,
            None => vec![0.0; z.as_tensor().elem_count()],
        };
        out.insert(hook, g);
    }
    if let Some(h) = hooks.iter().find(|h| !out.contains_key(h)) {
        return Err(ModelError::UnknownHook {
            name: h.to_string(),
            hint: format!(
                " (the {} differentiable forward never reached it)",
                model.model.family()
            ),
        });
    }
    Ok((base_metric, out))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_print() {
        assert_eq!("all".parse::<Positions>().unwrap(), Positions::All);
        assert_eq!("last".parse::<Positions>().unwrap(), Positions::Last);
        assert_eq!(
            "5, 0,3,3".parse::<Positions>().unwrap(),
            Positions::Listed(vec![0, 3, 5])
        );
        assert!("first".parse::<Positions>().is_err());
        assert_eq!(Positions::Listed(vec![0, 3]).to_string(), "0,3");
    }

    #[test]
    fn spearman_matches_hand_values() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ties share their average rank: ranks (1.5, 1.5, 3) against (1, 2, 3).
        let r = spearman(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]);
        assert!((r - 0.866_025_403_784_438_6).abs() < 1e-12, "{r}");
        assert!(spearman(&[1.0], &[1.0]).is_nan());
    }

    #[test]
    fn log_softmax_is_normalised() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f64 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
}
