//! One binary task (a label's class against the rest): k-sparse probes on the SAE's features
//! and on the hook's neurons, each with its Hewitt & Liang control, on one shared split, and
//! the paired comparison of the two at every k.

use super::pooled::{top_k_units, Pooled, Units};
use super::{SparseProbeRow, SparseProbingOptions, UnitScores};
use crate::stats::mcnemar_exact;
use crate::ConceptError;
use glassbox_probes::metrics::{accuracy, bootstrap_ci};
use glassbox_probes::probe::{control_targets, fit_classifier, Fitted, Rows};
use glassbox_probes::{ProbeOptions, Split, Standardizer};

/// A binary task over some of the pooled examples.
pub struct Task {
    pub label: String,
    pub class: String,
    /// Pooled row index of each labelled example.
    pub members: Vec<usize>,
    /// 1 for the class, 0 for the rest, per member.
    pub positive: Vec<usize>,
    /// The member's type for the control task (its text).
    pub types: Vec<String>,
}

/// Why a task could not be scored (too few examples of a class for the split).
pub type Skip = String;

/// Scores `task` at every k in the options that both unit kinds have (the rows' `p_holm` and
/// `verdict` wait for the correction over every task); `Ok(Err(why))` when the task cannot be
/// split, `Err` when the pooled codes cannot be read back.
pub fn score(
    pooled: &Pooled,
    task: &Task,
    options: &SparseProbingOptions,
) -> Result<Result<Vec<SparseProbeRow>, Skip>, ConceptError> {
    let probe = options.probe_options();
    let member_split = match glassbox_probes::stratified_split(
        &task.positive,
        2,
        probe.validation_fraction,
        probe.test_fraction,
        options.seed,
    ) {
        Ok(split) => split,
        Err(why) => return Ok(Err(why)),
    };
    let to_pooled = |rows: &[usize]| rows.iter().map(|&i| task.members[i]).collect::<Vec<_>>();
    let split = Split {
        train: to_pooled(&member_split.train),
        validation: to_pooled(&member_split.validation),
        test: to_pooled(&member_split.test),
        test_clusters: Vec::new(),
    };
    // Classes by pooled row (rows outside the task are never read).
    let mut classes = vec![0usize; pooled.len()];
    let mut control = vec![0usize; pooled.len()];
    let control_members = control_targets(&task.types, &task.positive, options.seed);
    for (i, &row) in task.members.iter().enumerate() {
        classes[row] = task.positive[i];
        control[row] = control_members[i];
    }
    let is_positive: Vec<bool> = classes.iter().map(|&c| c == 1).collect();
    let control_positive: Vec<bool> = control.iter().map(|&c| c == 1).collect();
    let truth: Vec<usize> = split.test.iter().map(|&r| classes[r]).collect();

    let fit = |kind: Units,
               units: &[u32],
               labels: &[usize],
               opts: &ProbeOptions|
     -> Result<Fitted, ConceptError> {
        let x = pooled.columns(kind, units)?;
        let std = Standardizer::fit(&x, units.len(), &split.train);
        let rows = Rows {
            x: &x,
            d: units.len(),
            split: &split,
            std: &std,
        };
        Ok(fit_classifier(rows, labels, 2, opts, options.seed))
    };
    // The control fits report a score only: no bootstrap.
    let control_opts = ProbeOptions {
        bootstrap: 0,
        ..probe.clone()
    };
    let dense = {
        let std = Standardizer::fit(&pooled.neurons, pooled.d, &split.train);
        let rows = Rows {
            x: &pooled.neurons,
            d: pooled.d,
            split: &split,
            std: &std,
        };
        fit_classifier(rows, &classes, 2, &control_opts, options.seed)
            .scores
            .score
    };
    let ranking = |kind: Units| -> Result<(Vec<f64>, Vec<f64>), ConceptError> {
        Ok((
            pooled.mean_differences(kind, &split.train, &is_positive)?,
            pooled.mean_differences(kind, &split.train, &control_positive)?,
        ))
    };
    let (feature_diffs, feature_control_diffs) = ranking(Units::Features)?;
    let (neuron_diffs, neuron_control_diffs) = ranking(Units::Neurons)?;
    let sparse = |kind: Units, k: usize, diffs: &[f64], control_diffs: &[f64]| {
        let units = top_k_units(diffs, k);
        let fitted = fit(kind, &units, &classes, &probe)?;
        let control_units = top_k_units(control_diffs, k);
        let control_fit = fit(kind, &control_units, &control, &control_opts)?;
        let scores = UnitScores {
            accuracy: fitted.scores.score,
            ci: fitted.scores.ci,
            control_accuracy: control_fit.scores.score,
            l2: fitted.scores.l2,
            units,
        };
        Ok::<_, ConceptError>((scores, fitted.test_predictions, fitted.scores.baseline))
    };
    let positives = task.positive.iter().filter(|&&c| c == 1).count();
    let mut out = Vec::new();
    for &k in &options.k {
        if k > pooled.width || k > pooled.d {
            continue;
        }
        let (features, pf, majority_baseline) =
            sparse(Units::Features, k, &feature_diffs, &feature_control_diffs)?;
        let (neurons, pn, _) = sparse(Units::Neurons, k, &neuron_diffs, &neuron_control_diffs)?;
        let right = |p: &[usize], i: usize| p[i] == truth[i];
        let only_features = (0..truth.len())
            .filter(|&i| right(&pf, i) && !right(&pn, i))
            .count();
        let only_neurons = (0..truth.len())
            .filter(|&i| !right(&pf, i) && right(&pn, i))
            .count();
        let difference_ci = bootstrap_ci(
            truth.len(),
            probe.bootstrap,
            options.seed ^ 0x5350 ^ k as u64,
            |s| {
                let pick = |p: &[usize]| -> (Vec<usize>, Vec<usize>) {
                    (
                        s.iter().map(|&i| truth[i]).collect(),
                        s.iter().map(|&i| p[i]).collect(),
                    )
                };
                let (t, f) = pick(&pf);
                let (_, n) = pick(&pn);
                accuracy(&t, &f) - accuracy(&t, &n)
            },
        );
        out.push(SparseProbeRow {
            label: task.label.clone(),
            class: task.class.clone(),
            k,
            examples: task.members.len(),
            positives,
            test_examples: truth.len(),
            majority_baseline,
            difference: features.accuracy - neurons.accuracy,
            features,
            neurons,
            dense_neurons: dense,
            difference_ci,
            p_value: mcnemar_exact(only_features as u64, only_neurons as u64),
            p_holm: f64::NAN,
            verdict: String::new(),
        });
    }
    Ok(Ok(out))
}
