//! glassbox-probes: linear probes on the activation store, with the controls a reviewer asks
//! for.
//!
//! For every stored hook and every label — sequence level (a label column, on pooled
//! activations) or token level (per-word label lists or a built-in labeler, on token rows) — a
//! probe is trained on a seeded stratified train/validation/test split of standardised
//! activations: multinomial (or binary) logistic regression with the L2 strength chosen on the
//! validation part, or ridge regression for numeric labels. It is scored on the test part
//! (accuracy, macro-F1 or R², with bootstrap 95% CIs) next to the majority baseline and a
//! control task (Hewitt & Liang 2019), giving the selectivity. Optionally: MDL (online code,
//! Voita & Titov 2020) and a neuron ranking from an elastic-net probe, checked by top-k against
//! random-k probes.

pub mod distributions;
mod error;
mod features;
mod grouped_split;
mod hook_comparison;
pub mod labels;
mod lbfgs;
pub mod logistic;
mod mdl;
pub mod metrics;
mod neurons;
mod options;
mod parallel;
mod prepare;
pub mod probe;
mod results;
mod ridge;
mod rows;
pub mod simultaneous;
mod split;
mod token_label;
mod weights;

pub use error::ProbeError;
pub use grouped_split::{grouped_stratified_split, Uncovered};
pub use labels::{Level, BUILTIN_LABELERS};
pub use options::{ProbeOptions, SplitBy};
pub use probe::Standardizer;
pub use results::{
    best_per_label, read_neurons, read_results, read_topk, write_neurons, write_results,
    write_topk, NeuronRow, ProbeResult, TopKRow,
};
pub use split::{stratified_split, Split};
pub use token_label::{token_classes, TokenClasses, TokenLabel};
pub use weights::{read_weights, write_weights, ProbeWeights};

use glassbox_data::examples::read_examples;
use glassbox_data::tokens::{read_tokens, Tokens};
use glassbox_data::{HookPoint, Pool};
use glassbox_data::{Progress, RunDir};
use hook_comparison::{standings, HookScore, TestOutputs};
use labels::LabelSet;
use prepare::{prepare, Prepared};
use probe::Targets;

pub type Result<T, E = ProbeError> = std::result::Result<T, E>;

/// Everything the probe stage writes.
#[derive(Debug, Default)]
pub struct ProbeOutputs {
    pub results: Vec<ProbeResult>,
    pub neurons: Vec<NeuronRow>,
    pub topk: Vec<TopKRow>,
    pub weights: Vec<ProbeWeights>,
}

/// Probes every stored hook for every label; one result per (hook, label).
pub fn run_probes(
    run: &RunDir,
    opts: &ProbeOptions,
    progress: &dyn Progress,
) -> Result<ProbeOutputs> {
    opts.validate()?;
    let examples = read_examples(run)?;
    let source = run.examples().display().to_string();
    let tokens = if opts.token_labels.is_empty() {
        Tokens::default()
    } else {
        read_tokens(run)?
    };
    let mut label_sets = Vec::new();
    for name in &opts.labels {
        label_sets.push(labels::sequence_labels(&examples, name, &source)?);
    }
    for name in &opts.token_labels {
        label_sets.push(labels::token_labels(&examples, &tokens, name, &source)?);
    }
    // (hook, label set) pairs, label by label.
    let mut jobs: Vec<(HookPoint, usize)> = Vec::new();
    for (index, set) in label_sets.iter().enumerate() {
        let hooks = hooks_for(run, set.level, opts.pool)?;
        jobs.extend(hooks.into_iter().map(|h| (h, index)));
    }
    // Splits, class caps and renumbering depend on the label only: once per label set.
    let data_splits = examples.splits_by_id();
    if opts.split_by != SplitBy::Data {
        if let Some(counts) = data_split_counts(&examples.splits) {
            progress.note(&format!(
                "probe: the data set has a `split` column ({counts}); probes split all rows themselves (split_by = \"{}\") — --split-by data uses the column instead",
                opts.split_by
            ));
        }
    }
    let mut prepared = Vec::with_capacity(label_sets.len());
    for set in &label_sets {
        let p = prepare(set, opts, &data_splits)?;
        if !p.dropped.is_empty() {
            progress.note(&format!(
                "probe `{}`: left out classes {}",
                set.name,
                p.dropped.join(", ")
            ));
        }
        prepared.push(p);
    }
    let sets: Vec<(&LabelSet, &Prepared)> = label_sets.iter().zip(&prepared).collect();
    progress.start("probe", jobs.len() as u64);
    let at_once = parallel::jobs_at_once(run, opts.pool, &jobs, &sets);
    let outputs = parallel::run_jobs(&jobs, at_once, |&(hook, s)| {
        let (set, prepared) = sets[s];
        let (x, d) = features::load(
            run,
            hook,
            opts.pool,
            set,
            &prepared.rows,
            &examples.example_ids,
            &tokens,
        )?;
        let mut out = ProbeOutputs::default();
        let score =
            probe_one(hook, set, prepared, &x, d, opts, &mut out).map_err(|e| e.in_hook(hook))?;
        progress.advance(1);
        Ok((out, Some(score)))
    })?;
    let (mut outputs, mut scores): (Vec<ProbeOutputs>, Vec<Option<HookScore>>) =
        outputs.into_iter().unzip();
    // Each hook's standing among its label's hooks, on the same resampled test rows.
    for (s, (set, p)) in sets.iter().enumerate() {
        let members: Vec<usize> = (0..jobs.len()).filter(|&j| jobs[j].1 == s).collect();
        let hooks: Vec<HookScore> = members.iter().filter_map(|&j| scores[j].take()).collect();
        let truth = match &set.target {
            labels::Target::Classes { .. } => Targets::Classes(&p.classes),
            labels::Target::Values(_) => Targets::Values(&p.values),
        };
        if let Some(standing) = standings(&p.split, truth, &hooks, opts.bootstrap, opts.seed) {
            for (&j, st) in members.iter().zip(standing) {
                for r in &mut outputs[j].results {
                    r.best_share = Some(st.best_share);
                    r.vs_best_ci_low = st.vs_best.map(|c| c.0);
                    r.vs_best_ci_high = st.vs_best.map(|c| c.1);
                }
            }
        }
    }
    let mut out = ProbeOutputs::default();
    for o in outputs {
        out.results.extend(o.results);
        out.neurons.extend(o.neurons);
        out.topk.extend(o.topk);
        out.weights.extend(o.weights);
    }
    progress.finish();
    out.results.sort_by(|a, b| {
        (
            a.level.as_str(),
            a.label.as_str(),
            a.depth,
            a.hook.to_string(),
        )
            .partial_cmp(&(
                b.level.as_str(),
                b.label.as_str(),
                b.depth,
                b.hook.to_string(),
            ))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(out)
}

/// The values of a data set's `split` column with their counts (`train 240, test 60`), or
/// `None` when it had none (every row `all`).
fn data_split_counts(splits: &[String]) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for s in splits {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    if counts.keys().all(|s| *s == "all") {
        return None;
    }
    Some(
        counts
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// A sequence-level label's probed rows and split, made exactly as the probe stage makes them
/// (class cap, classes left out, `split_by`, seed): for stages that refit on a probe's rows.
#[derive(Debug, Clone)]
pub struct SequenceLabel {
    /// Rows of `examples.parquet`, in the order the split indexes them.
    pub examples: Vec<usize>,
    /// Class of each row (classification), index into `names`.
    pub classes: Vec<usize>,
    /// Class names; empty for a numeric label.
    pub names: Vec<String>,
    pub split: Split,
}

/// The rows and split the probe stage used for the sequence-level label `name` under `opts`.
pub fn prepare_sequence_label(
    examples: &glassbox_data::examples::Examples,
    name: &str,
    source: &str,
    opts: &ProbeOptions,
) -> Result<SequenceLabel> {
    let set = labels::sequence_labels(examples, name, source)?;
    let data_splits = examples.splits_by_id();
    let p = prepare(&set, opts, &data_splits)?;
    Ok(SequenceLabel {
        examples: p.rows.iter().map(|&r| set.items[r]).collect(),
        classes: p.classes,
        names: p.names,
        split: p.split,
    })
}

/// Hooks stored at the label's level.
fn hooks_for(run: &RunDir, level: Level, pool: Pool) -> Result<Vec<HookPoint>> {
    let hooks: Vec<HookPoint> = match level {
        Level::Sequence => run
            .stored_hooks(true)?
            .into_iter()
            .filter(|h| run.pooled_dir(*h, pool).exists())
            .collect(),
        Level::Token => run
            .stored_hooks(false)?
            .into_iter()
            .filter(|h| run.activations_dir(*h).exists())
            .collect(),
    };
    if hooks.is_empty() {
        return Err(ProbeError::Invalid(match level {
            Level::Sequence => format!(
                "{}: no pooled activations with pool `{pool}`; extract with --pools {pool}",
                run.root().display()
            ),
            Level::Token => format!(
                "{}: no token-level activations; extract with token_level = true",
                run.root().display()
            ),
        }));
    }
    Ok(hooks)
}

/// Probes one label at one hook into `out`; returns the probe's test score and predictions, for
/// comparing the label's hooks.
#[allow(clippy::too_many_arguments)]
fn probe_one(
    hook: HookPoint,
    set: &LabelSet,
    p: &Prepared,
    x: &[f32],
    d: usize,
    opts: &ProbeOptions,
    out: &mut ProbeOutputs,
) -> Result<HookScore> {
    let std = Standardizer::fit(x, d, &p.split.train);
    let rows = probe::Rows {
        x,
        d,
        split: &p.split,
        std: &std,
    };
    let seed = opts.seed;
    let level = set.level.as_str().to_owned();
    let regression = p.names.is_empty();
    // Only the control task's score is reported, and the paired selectivity interval below:
    // the control's own bootstrap CIs would be thrown away.
    let control_opts = ProbeOptions {
        bootstrap: 0,
        ..opts.clone()
    };
    // The control task's targets: numbers for a regression, classes otherwise.
    let (control_values, control_classes) = if regression {
        (
            probe::control_targets(&p.types, &p.values, seed),
            Vec::new(),
        )
    } else {
        (
            Vec::new(),
            probe::control_targets(&p.types, &p.classes, seed),
        )
    };
    let (fitted, control, truth, control_truth) = if regression {
        (
            probe::fit_regression(rows, &p.values, opts, seed)?,
            probe::fit_regression(rows, &control_values, &control_opts, seed)?,
            Targets::Values(&p.values),
            Targets::Values(&control_values),
        )
    } else {
        let k = p.names.len();
        (
            probe::fit_classifier(rows, &p.classes, k, opts, seed),
            probe::fit_classifier(rows, &control_classes, k, &control_opts, seed),
            Targets::Classes(&p.classes),
            Targets::Classes(&control_classes),
        )
    };
    let selectivity_ci = probe::selectivity_ci(
        &p.split,
        (&fitted, truth),
        (&control, control_truth),
        opts.bootstrap,
        seed,
    );
    let s = &fitted.scores;
    let mdl = (opts.mdl && !regression).then(|| {
        // Token rows split by text are sent whole text by whole text.
        let texts: Option<Vec<u64>> = (set.level == Level::Token
            && opts.split_by != SplitBy::Token)
            .then(|| p.rows.iter().map(|&r| set.texts[r]).collect());
        probe::mdl_of(
            rows,
            &p.classes,
            p.names.len(),
            s.l2,
            opts,
            seed,
            texts.as_deref(),
        )
    });
    if opts.neurons && !regression {
        let k = p.names.len();
        let sparse = neurons::elastic_net(rows, &p.classes, k, opts);
        let ranked = neurons::rank(&sparse, &p.names);
        let overall: Vec<u32> = ranked
            .iter()
            .filter(|r| r.class == "*")
            .map(|r| r.unit)
            .collect();
        for t in neurons::top_k_check(rows, &p.classes, k, &overall, s.l2, opts, seed) {
            out.topk.push(TopKRow {
                hook,
                label: set.name.clone(),
                level: level.clone(),
                k: t.k,
                top_accuracy: t.top_accuracy,
                random_accuracy: t.random_accuracy,
            });
        }
        out.neurons.extend(ranked.into_iter().map(|r| NeuronRow {
            hook,
            label: set.name.clone(),
            level: level.clone(),
            class: r.class,
            unit: r.unit,
            weight: r.weight,
            rank: r.rank,
        }));
    }
    let (layer, depth) = (hook.layer().map(|l| l as i64), hook.depth());
    out.results.push(ProbeResult {
        hook,
        layer,
        depth,
        label: set.name.clone(),
        level: level.clone(),
        pool: match set.level {
            Level::Sequence => opts.pool.to_string(),
            Level::Token => "token".into(),
        },
        metric: if regression { "r2" } else { "accuracy" }.into(),
        split_by: opts.split_by.to_string(),
        n_train: p.split.train.len() as u64,
        n_validation: p.split.validation.len() as u64,
        n_test: p.split.test.len() as u64,
        n_classes: p.names.len() as u64,
        l2: s.l2,
        score: s.score,
        ci_low: s.ci.0,
        ci_high: s.ci.1,
        accuracy: (!regression).then_some(s.score),
        f1: s.f1,
        f1_ci_low: s.f1_ci.map(|c| c.0),
        f1_ci_high: s.f1_ci.map(|c| c.1),
        majority: s.baseline,
        control_score: control.scores.score,
        selectivity: s.score - control.scores.score,
        selectivity_ci_low: selectivity_ci.map(|c| c.0),
        selectivity_ci_high: selectivity_ci.map(|c| c.1),
        best_share: None,
        vs_best_ci_low: None,
        vs_best_ci_high: None,
        mdl_codelength: mdl.map(|m| m.codelength),
        mdl_uniform: mdl.map(|m| m.uniform),
        mdl_compression: mdl.map(|m| m.compression),
        converged: s.converged,
    });
    let score = HookScore {
        score: s.score,
        order: (depth, hook),
        outputs: if regression {
            TestOutputs::Values(fitted.test_values)
        } else {
            TestOutputs::Classes(fitted.test_predictions)
        },
    };
    out.weights.push(ProbeWeights {
        hook,
        label: set.name.clone(),
        level,
        classes: p.names.clone(),
        width: d,
        outputs: fitted.outputs,
        weight: fitted.weight,
        bias: fitted.bias,
    });
    Ok(score)
}

#[cfg(test)]
mod tests {
    use super::data_split_counts;

    #[test]
    fn a_split_column_is_noticed_and_its_absence_is_not() {
        let all = vec!["all".to_owned(); 3];
        assert_eq!(data_split_counts(&all), None);
        let own: Vec<String> = ["train", "test", "train"].map(String::from).to_vec();
        assert_eq!(data_split_counts(&own).as_deref(), Some("test 1, train 2"));
    }
}
