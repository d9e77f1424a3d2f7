//! TCAV scores and their significance (Kim et al. 2018), with the corrections the reference
//! implementation lacks.
//!
//! For a target example with gradients `g_t = ∂f/∂h_t` at a hook, the sensitivity to a CAV `v`
//! is `S = Σ_t g_t · v`: the directional derivative when `v` is added at every position (for
//! mean-pooled CAVs this moves the pooled activation by `v`). Under the logit convention the
//! TCAV score is the fraction of target examples with `S > 0` and the magnitude score is
//! `Σ max(S, 0) / Σ |S|`; under the loss convention the signs flip (a falling loss means a
//! rising class). For each concept, hook and target the score is computed against `R` random
//! counterpart sets (one CAV each) and compared with `R` random-vs-random CAVs by a two-sided
//! Welch t-test; p-values are Holm–Bonferroni adjusted over every (concept, hook, target)
//! test. A result is significant only if its adjusted p is below `alpha` **and** the concept's
//! CAVs separate it from random sets (mean held-out accuracy at least `min_cav_accuracy`): a
//! CAV at chance is a random direction, and the run-wise t-test cannot see that the concept
//! set's own sampling noise is shared by all its runs — a set of random examples otherwise
//! passes easily when the target is sensitive (see `tests/planted_tcav.rs`).

use crate::cav::{train_cav, Cav, CavMethod};
use crate::stats;
use crate::ConceptError;
use glassbox_data::HookPoint;

/// The sign convention of sensitivities (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Convention {
    Logit,
    Loss,
}

impl Convention {
    pub fn as_str(self) -> &'static str {
        match self {
            Convention::Logit => "logit",
            Convention::Loss => "loss",
        }
    }
}

/// `S_i = G_i · v` for each target example's summed gradient `G_i = Σ_t g_{i,t}`.
pub fn sensitivities(gradient_sums: &[f32], width: usize, direction: &[f64]) -> Vec<f64> {
    gradient_sums
        .chunks(width)
        .map(|g| g.iter().zip(direction).map(|(a, b)| *a as f64 * b).sum())
        .collect()
}

/// `(score, magnitude)` of sensitivities under a convention.
pub fn scores(sensitivities: &[f64], convention: Convention) -> (f64, f64) {
    let sign = match convention {
        Convention::Logit => 1.0,
        Convention::Loss => -1.0,
    };
    let n = sensitivities.len().max(1) as f64;
    let positive = sensitivities.iter().filter(|&&s| sign * s > 0.0).count() as f64;
    let total: f64 = sensitivities.iter().map(|s| s.abs()).sum();
    let towards: f64 = sensitivities.iter().map(|s| (sign * s).max(0.0)).sum();
    (
        positive / n,
        if total > 0.0 { towards / total } else { 0.0 },
    )
}

/// Pooled activations of the sets at one hook.
pub struct HookSets<'a> {
    pub hook: HookPoint,
    pub width: usize,
    /// `(name, rows)` of each concept.
    pub concepts: Vec<(&'a str, &'a [f32])>,
    /// `R + 1` random sets: concepts are contrasted with sets `1..=R`; the random-vs-random
    /// baseline's run `r` contrasts set `r − 1` with set `r` (a chain, so no one set's
    /// sampling noise biases every baseline CAV the same way).
    pub randoms: Vec<&'a [f32]>,
}

/// A target's summed gradients at one hook.
pub struct TargetGradients<'a> {
    pub target: &'a str,
    pub hook: HookPoint,
    pub convention: Convention,
    /// `n_targets × width`.
    pub sums: &'a [f32],
}

#[derive(Debug, Clone)]
pub struct Options {
    pub method: CavMethod,
    pub l2: f64,
    pub alpha: f64,
    /// Mean held-out CAV accuracy a concept needs before its result can be significant.
    pub min_cav_accuracy: f64,
    pub bootstrap: usize,
    pub seed: u64,
}

/// One trained CAV (for `tcav/cavs.parquet`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CavRow {
    pub concept: String,
    pub hook: HookPoint,
    /// The counterpart random set's index (1..=R); baseline CAVs are named `random`, their
    /// positive side being set `run − 1`.
    pub run: u32,
    pub accuracy: f64,
    pub direction: Vec<f64>,
}

/// One (concept, hook, target) result (for `tcav/scores.parquet`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScoreRow {
    pub concept: String,
    pub hook: HookPoint,
    pub target: String,
    pub convention: String,
    /// Mean TCAV score over the random runs.
    pub score: f64,
    pub magnitude: f64,
    pub score_std: f64,
    /// Mean and standard deviation of the random-vs-random scores.
    pub random_mean: f64,
    pub random_std: f64,
    pub t: f64,
    pub p: f64,
    pub p_holm: f64,
    /// Cohen's d of concept scores against random scores.
    pub effect: f64,
    /// Percentile-bootstrap 95% interval of the mean concept score.
    pub ci_low: f64,
    pub ci_high: f64,
    pub significant: bool,
    pub cav_accuracy: f64,
    pub runs: u32,
    pub n_targets: u64,
}

/// Scores of one CAV per run for one target: `(scores, magnitudes)`.
pub fn run_scores(
    gradients: &TargetGradients<'_>,
    width: usize,
    cavs: &[Cav],
) -> (Vec<f64>, Vec<f64>) {
    cavs.iter()
        .map(|cav| {
            scores(
                &sensitivities(gradients.sums, width, &cav.direction),
                gradients.convention,
            )
        })
        .unzip()
}

/// The significance of concept scores against random-vs-random scores (p not yet adjusted).
pub fn compare(
    concept: &[f64],
    random: &[f64],
    bootstrap: usize,
    seed: u64,
) -> (f64, f64, f64, (f64, f64)) {
    let (t, _, p) = stats::welch_t_test(concept, random);
    (
        t,
        p,
        stats::cohens_d(concept, random),
        stats::bootstrap_mean_ci(concept, bootstrap, seed),
    )
}

/// Trains every CAV and scores every (concept, hook, target); Holm-adjusts across all tests.
pub fn run_tcav(
    hooks: &[HookSets<'_>],
    targets: &[TargetGradients<'_>],
    opts: &Options,
) -> Result<(Vec<CavRow>, Vec<ScoreRow>), ConceptError> {
    let mut cav_rows = Vec::new();
    let mut score_rows = Vec::new();
    for sets in hooks {
        let runs = sets.randoms.len().saturating_sub(1);
        if runs < 2 {
            return Err(ConceptError::Invalid(format!(
                "hook `{}`: {} random run(s); the t-test needs at least 2",
                sets.hook, runs
            )));
        }
        let train = |name: &str, positive: &[f32], negative: &[f32], run: usize| {
            train_cav(
                positive,
                negative,
                sets.width,
                opts.method,
                opts.l2,
                opts.seed ^ (run as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            )
            .map_err(|message| ConceptError::Cav {
                concept: name.to_owned(),
                hook: sets.hook,
                message,
            })
        };
        let mut baseline = Vec::with_capacity(runs);
        for r in 1..=runs {
            let cav = train("random", sets.randoms[r - 1], sets.randoms[r], r)?;
            cav_rows.push(cav_row("random", sets.hook, r, &cav));
            baseline.push(cav);
        }
        let hook_targets: Vec<&TargetGradients<'_>> =
            targets.iter().filter(|t| t.hook == sets.hook).collect();
        if hook_targets.is_empty() {
            return Err(ConceptError::Invalid(format!(
                "hook `{}` has no target gradients; extract gradients for it first",
                sets.hook
            )));
        }
        for (concept, rows) in &sets.concepts {
            let mut cavs = Vec::with_capacity(runs);
            for r in 1..=runs {
                let cav = train(concept, rows, sets.randoms[r], r)?;
                cav_rows.push(cav_row(concept, sets.hook, r, &cav));
                cavs.push(cav);
            }
            let cav_accuracy = stats::mean(&cavs.iter().map(|c| c.accuracy).collect::<Vec<_>>());
            for gradients in &hook_targets {
                let (concept_scores, magnitudes) = run_scores(gradients, sets.width, &cavs);
                let (random_scores, _) = run_scores(gradients, sets.width, &baseline);
                let (t, p, effect, ci) =
                    compare(&concept_scores, &random_scores, opts.bootstrap, opts.seed);
                score_rows.push(ScoreRow {
                    concept: concept.to_string(),
                    hook: sets.hook,
                    target: gradients.target.to_owned(),
                    convention: gradients.convention.as_str().to_owned(),
                    score: stats::mean(&concept_scores),
                    magnitude: stats::mean(&magnitudes),
                    score_std: stats::variance(&concept_scores).sqrt(),
                    random_mean: stats::mean(&random_scores),
                    random_std: stats::variance(&random_scores).sqrt(),
                    t,
                    p,
                    p_holm: f64::NAN,
                    effect,
                    ci_low: ci.0,
                    ci_high: ci.1,
                    significant: false,
                    cav_accuracy,
                    runs: runs as u32,
                    n_targets: (gradients.sums.len() / sets.width) as u64,
                });
            }
        }
    }
    let adjusted = stats::holm(&score_rows.iter().map(|r| r.p).collect::<Vec<_>>());
    for (row, p_holm) in score_rows.iter_mut().zip(adjusted) {
        row.p_holm = p_holm;
        row.significant = p_holm < opts.alpha && row.cav_accuracy >= opts.min_cav_accuracy;
    }
    Ok((cav_rows, score_rows))
}

fn cav_row(concept: &str, hook: HookPoint, run: usize, cav: &Cav) -> CavRow {
    CavRow {
        concept: concept.to_owned(),
        hook,
        run: run as u32,
        accuracy: cav.accuracy,
        direction: cav.direction.clone(),
    }
}
