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

use glassbox_data::pairs::PromptPairs;
use glassbox_data::HookPoint;
use glassbox_models::{LoadedModel, ModelError, Result};

mod ablation;
mod atp;
mod forward;
mod options;
mod target;

pub use ablation::{
    ablate, ablate_features, bootstrap_mean_ci, Ablation, AblationOptions, AblationRow,
    FeatureDictionary,
};

pub use atp::spearman;
pub use options::{
    Direction, Metric, PairSummary, PatchOptions, PatchRow, Positions, PreparedPair,
};
pub use target::{
    patch_target_pair, target_score, PairInput, TargetHead, TargetMetrics, TargetPair,
};

use atp::atp_gradients;
use forward::{
    batch_of, cached_run, last_logits_from, last_logits_suffixes, log_softmax, score, Overwrite,
    Source,
};
use glassbox_models::tokenizer::Encoded;
use glassbox_models::{PrefixCache, Suffixes};

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
            "patching with answer/wrong tokens needs a causal LM; {}",
            glassbox_models::why_no_next_token(model.model.as_ref())
        )));
    }
    let tokenizer = model.tokenizer()?;
    let file = pairs.source.display();
    if pairs.answer.len() != pairs.len() || pairs.wrong.len() != pairs.len() {
        return Err(ModelError::Invalid(format!(
            "{file}: no `answer` and `wrong` columns; answer/wrong pairs need both (targets are read only for models without a next-token output)"
        )));
    }
    let mut out = Vec::with_capacity(pairs.len());
    for row in 0..pairs.len() {
        let (clean, corrupted) = encode_pair(tokenizer, pairs, row)?;
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

/// Row `row`'s clean and corrupted prompts tokenised; an error names the row when they differ
/// in length (positions are patched one to one), are empty, or are the same tokens (patching
/// one into the other changes nothing, and the normalised effect divides by zero).
pub fn encode_pair(
    tokenizer: &glassbox_models::tokenizer::TextTokenizer,
    pairs: &PromptPairs,
    row: usize,
) -> Result<(Encoded, Encoded)> {
    let mut enc = tokenizer.encode(&[&pairs.clean[row], &pairs.corrupted[row]])?;
    let corrupted = enc.pop().expect("two encodings");
    let clean = enc.pop().expect("two encodings");
    let at = format!("{}: row {}", pairs.source.display(), row + 1);
    if clean.ids.len() != corrupted.ids.len() {
        return Err(ModelError::Invalid(format!(
            "{at}: clean has {} tokens {:?} but corrupted has {} {:?}; patching compares \
             positions one to one, so make the two prompts tokenise to the same length",
            clean.ids.len(),
            clean.tokens,
            corrupted.ids.len(),
            corrupted.tokens
        )));
    }
    if clean.ids.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{at}: clean and corrupted are empty (no tokens); give each a prompt"
        )));
    }
    if clean.ids == corrupted.ids {
        return Err(ModelError::Invalid(format!(
            "{at}: clean and corrupted tokenise to the same tokens {:?}; patching one into the \
             other changes nothing (the normalised effect would be 0/0), so change the corrupted \
             prompt",
            clean.tokens
        )));
    }
    Ok((clean, corrupted))
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

/// The head count `attn.hook_z` is patched by (with `heads`), else `None`: the whole width.
fn per_head(heads: bool, hook: HookPoint, n_heads: Option<usize>, width: usize) -> Option<usize> {
    match (heads, hook, n_heads) {
        (true, HookPoint::AttnZ(_), Some(h)) if h > 0 && width.is_multiple_of(h) => Some(h),
        _ => None,
    }
}

/// Attribution patching's estimate of a run patched at `position` (one head's slice, or the
/// whole width): the base metric plus `Σ (source − base) · gradient` over the patched values
/// (`[t × width]` each).
fn atp_estimate(
    base_metric: f64,
    gradient: &[f32],
    (source, base): (&[f32], &[f32]),
    (position, head): (usize, Option<usize>),
    (width, head_dim): (usize, usize),
) -> f64 {
    let start = position * width + head.map_or(0, |h| h * head_dim);
    let end = start + if head.is_some() { head_dim } else { width };
    base_metric
        + (start..end)
            .map(|i| (source[i] as f64 - base[i] as f64) * gradient[i] as f64)
            .sum::<f64>()
}

/// A patched run's row, its metric normalised by the pair's clean and corrupted ones.
fn patch_row(
    pair: usize,
    hook: HookPoint,
    (position, head): (usize, Option<usize>),
    metric: f64,
    (clean, corrupted): (f64, f64),
    atp_metric: Option<f64>,
) -> PatchRow {
    PatchRow {
        pair: pair as u64,
        hook,
        position: position as u32,
        head: head.map(|h| h as u32),
        metric,
        metric_clean: clean,
        metric_corrupted: corrupted,
        normalized: (metric - corrupted) / (clean - corrupted),
        atp_metric,
    }
}

/// Every patched run at one hook: (position, head or the whole width).
fn jobs(positions: &[usize], per_head: Option<usize>) -> Vec<(usize, Option<usize>)> {
    positions
        .iter()
        .flat_map(|&p| match per_head {
            Some(h) => (0..h).map(|head| (p, Some(head))).collect::<Vec<_>>(),
            None => vec![(p, None)],
        })
        .collect()
}

/// A batch of patched runs of one base prompt at one hook: copy `i` has job `i`'s slice
/// (position, head or the whole width) taken from `source` (`[t × width]`).
struct PatchedRuns<'a> {
    hook: HookPoint,
    jobs: &'a [(usize, Option<usize>)],
    source: &'a [f32],
    head_dim: usize,
}

impl PatchedRuns<'_> {
    /// The runs' last-position logits. With the base run's prefix and the residual entering
    /// the hook's block (`start`), each copy is computed from its patched position on only
    /// (causal decoders); else from the hook's block on, or whole.
    fn last_logits(
        &self,
        model: &LoadedModel,
        base: &Encoded,
        start: Option<(usize, &[f32])>,
        prefix: Option<&PrefixCache>,
    ) -> Result<Vec<Vec<f32>>> {
        let targets: Vec<_> = self.jobs.iter().map(|&(p, h)| (Some(p), h)).collect();
        let starts: Vec<usize> = self.jobs.iter().map(|&(p, _)| p).collect();
        let overwrite = |shift| Overwrite {
            point: self.hook,
            jobs: &targets,
            source: Source::Rows(self.source),
            head_dim: self.head_dim,
            shift,
        };
        if let (Some((block, resid_pre)), Some(prefix)) = (start, prefix) {
            let suffixes = Suffixes {
                block,
                starts: &starts,
                resid_pre,
                prefix,
            };
            let mut patch = overwrite(&starts);
            if let Some(logits) = last_logits_suffixes(model, &suffixes, &mut patch)? {
                return Ok(logits);
            }
        }
        let batch = batch_of(model, base, self.jobs.len())?;
        last_logits_from(model, &batch, start, &mut overwrite(&[]))
    }
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
    // The residual entering each patched hook's block, to start the patched runs there.
    let mut cached = opts.hooks.clone();
    for hook in &opts.hooks {
        if let Some(l) = hook.layer() {
            cached.push(HookPoint::ResidPre(l));
        }
    }
    cached.sort();
    cached.dedup();
    // The prefix is kept of the base run only: the patched runs continue it.
    let denoise = opts.direction == Direction::Denoise;
    let clean = cached_run(model, &pair.clean, &cached, !denoise)?;
    let corrupted = cached_run(model, &pair.corrupted, &cached, denoise)?;
    let clean_logp = log_softmax(&clean.logits);
    let metric_clean = score(opts.metric, &[clean.logits], pair, &clean_logp)[0];
    let metric_corrupted = score(opts.metric, &[corrupted.logits], pair, &clean_logp)[0];
    let (base, source_acts, (base_acts, base_prefix)) = match opts.direction {
        Direction::Denoise => (
            &pair.corrupted,
            &clean.acts,
            (&corrupted.acts, &corrupted.prefix),
        ),
        Direction::Noise => (&pair.clean, &corrupted.acts, (&clean.acts, &clean.prefix)),
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
        let per_head = per_head(opts.heads, hook, heads, width);
        let head_dim = per_head.map_or(width, |h| width / h);
        let jobs = jobs(&positions, per_head);
        let source = &source_acts[&hook];
        let start = hook.layer().and_then(|l| {
            base_acts
                .get(&HookPoint::ResidPre(l))
                .map(|r| (l, r.as_slice()))
        });
        for chunk in jobs.chunks(opts.batch_size.max(1)) {
            let run = PatchedRuns {
                hook,
                jobs: chunk,
                source,
                head_dim,
            };
            let logits = run.last_logits(model, base, start, base_prefix.as_ref())?;
            let metrics = score(opts.metric, &logits, pair, &clean_logp);
            for (&job, metric) in chunk.iter().zip(metrics) {
                let atp_metric = atp.as_ref().map(|(base_metric, grads)| {
                    let values = (source.as_slice(), base_acts[&hook].as_slice());
                    atp_estimate(*base_metric, &grads[&hook], values, job, (width, head_dim))
                });
                let ends = (metric_clean, metric_corrupted);
                rows.push(patch_row(pair.row, hook, job, metric, ends, atp_metric));
            }
        }
    }
    Ok((
        rows,
        PairSummary {
            row: pair.row,
            clean_tokens: pair.clean.tokens.clone(),
            corrupted_tokens: pair.corrupted.tokens.clone(),
            answer: Some(pair.answer),
            wrong: Some(pair.wrong),
            target: None,
            metric_clean,
            metric_corrupted,
        },
    ))
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
