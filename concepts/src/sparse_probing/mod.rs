//! SAEBench-style sparse probing (Gao et al. 2024, §4.4; Karvonen et al. 2025): does a handful
//! of an SAE's latents carry a label as well as the same number of the model's own neurons?
//!
//! Per hook with an SAE: every example's codes and activations are mean-pooled over its
//! (non-special) tokens. Each sequence label gives binary tasks — a two-class label one, a
//! larger one a class-against-the-rest task per class. On one seeded stratified split per task,
//! the k units with the largest difference between the class means on the *training*
//! examples are selected, and a logistic probe on just those k is fitted with glassbox's probe
//! rigour (L2 on the validation part, bootstrap CI on the test part, a Hewitt & Liang control
//! task with its own selection, the training majority as baseline). Features and neurons are
//! then compared on the same test examples: the accuracy difference with a paired bootstrap CI
//! and an exact McNemar test, Holm-corrected over every (task, k) of the hook.

mod pooled;
mod task;
mod write;

pub use pooled::{top_k_units, Pooled, Units};
pub use task::Task;
pub(crate) use write::units_list;
pub use write::{read_rows, write_rows};

use crate::ConceptError;
use glassbox_data::examples::Examples;
use glassbox_data::Progress;
use glassbox_probes::labels::{sequence_labels, Target};
use glassbox_probes::ProbeOptions;
use serde::{Deserialize, Serialize};

/// The `[dictionary.sparse_probing]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SparseProbingOptions {
    /// Run it for every trained or loaded SAE on a run with sequence labels. Default true.
    pub enabled: bool,
    /// Units per sparse probe. Default `[1, 2, 5, 10, 20]` (SAEBench's 1, 2, 5 and beyond).
    pub k: Vec<usize>,
    /// Seeds the split, the control labels and the bootstrap.
    pub seed: u64,
    /// Fraction of each class held out for testing. Default 0.2.
    pub test_fraction: f64,
    /// Fraction of each class held out to choose the L2 strength. Default 0.2.
    pub validation_fraction: f64,
    /// Bootstrap resamples for the CIs. Default 1000.
    pub bootstrap: usize,
    /// Family-wise error rate of the Holm-corrected features-vs-neurons verdicts. Default 0.05.
    pub alpha: f64,
    /// At most this many examples, a seeded sample (SAEBench probes 4,000 training and 1,000
    /// test examples); their rows alone are encoded. 0 keeps every example. Default 5000.
    pub max_examples: usize,
}

impl Default for SparseProbingOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            k: vec![1, 2, 5, 10, 20],
            seed: 0,
            test_fraction: 0.2,
            validation_fraction: 0.2,
            bootstrap: 1000,
            alpha: 0.05,
            max_examples: 5000,
        }
    }
}

impl SparseProbingOptions {
    /// The probe settings each sparse probe is fitted with.
    pub fn probe_options(&self) -> ProbeOptions {
        ProbeOptions {
            seed: self.seed,
            test_fraction: self.test_fraction,
            validation_fraction: self.validation_fraction,
            bootstrap: self.bootstrap,
            ..ProbeOptions::default()
        }
    }

    pub fn validate(&self) -> Result<(), ConceptError> {
        let invalid = |m: String| Err(ConceptError::Invalid(m));
        if self.k.is_empty() || self.k.contains(&0) {
            return invalid(format!(
                "[dictionary.sparse_probing] k = {:?}: give one or more unit counts ≥ 1 (e.g. [1, 2, 5]), or enabled = false",
                self.k
            ));
        }
        let fractions = self.test_fraction + self.validation_fraction;
        if !(self.test_fraction > 0.0 && self.validation_fraction >= 0.0 && fractions < 1.0) {
            return invalid(format!(
                "[dictionary.sparse_probing] test_fraction {} and validation_fraction {} must be positive and sum below 1",
                self.test_fraction, self.validation_fraction
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return invalid(format!(
                "[dictionary.sparse_probing] alpha = {}: a family-wise error rate in (0, 1), e.g. 0.05",
                self.alpha
            ));
        }
        Ok(())
    }
}

/// One kind of sparse probe's scores at one k.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitScores {
    /// Test accuracy and its bootstrap 95% CI.
    pub accuracy: f64,
    pub ci: (f64, f64),
    /// Test accuracy of the same procedure (selection included) on the control labels.
    pub control_accuracy: f64,
    /// The L2 strength chosen on validation.
    pub l2: f64,
    /// The selected units, strongest class-mean difference first.
    pub units: Vec<u32>,
}

impl UnitScores {
    /// Accuracy above the control task's (Hewitt & Liang's selectivity).
    pub fn selectivity(&self) -> f64 {
        self.accuracy - self.control_accuracy
    }
}

/// One row of `sparse_probing.parquet`: a task at one k.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseProbeRow {
    pub label: String,
    /// The class against the rest.
    pub class: String,
    pub k: usize,
    pub examples: usize,
    pub positives: usize,
    pub test_examples: usize,
    pub majority_baseline: f64,
    pub features: UnitScores,
    pub neurons: UnitScores,
    pub dense_neurons: f64,
    /// Feature accuracy − neuron accuracy, with its paired bootstrap CI.
    pub difference: f64,
    pub difference_ci: (f64, f64),
    /// Exact McNemar p, and Holm-adjusted over the hook's rows.
    pub p_value: f64,
    pub p_holm: f64,
    /// `features better`, `neurons better` or `no significant difference` at `alpha`.
    pub verdict: String,
}

/// One k, averaged over the tasks (SAEBench reports the mean over its datasets).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AtK {
    pub k: usize,
    pub tasks: usize,
    pub feature_accuracy: f64,
    pub neuron_accuracy: f64,
    pub feature_selectivity: f64,
    pub neuron_selectivity: f64,
    pub dense_neuron_accuracy: f64,
    /// Tasks where the Holm-corrected paired test favours one side.
    pub features_better: usize,
    pub neurons_better: usize,
}

/// Per k, the means over the tasks and the verdict counts.
pub fn by_k(rows: &[SparseProbeRow]) -> Vec<AtK> {
    let mut ks: Vec<usize> = rows.iter().map(|r| r.k).collect();
    ks.sort_unstable();
    ks.dedup();
    ks.into_iter()
        .map(|k| {
            let at: Vec<&SparseProbeRow> = rows.iter().filter(|r| r.k == k).collect();
            let mean = |f: &dyn Fn(&SparseProbeRow) -> f64| {
                at.iter().map(|r| f(r)).sum::<f64>() / at.len() as f64
            };
            AtK {
                k,
                tasks: at.len(),
                feature_accuracy: mean(&|r| r.features.accuracy),
                neuron_accuracy: mean(&|r| r.neurons.accuracy),
                feature_selectivity: mean(&|r| r.features.selectivity()),
                neuron_selectivity: mean(&|r| r.neurons.selectivity()),
                dense_neuron_accuracy: mean(&|r| r.dense_neurons),
                features_better: at.iter().filter(|r| r.verdict == "features better").count(),
                neurons_better: at.iter().filter(|r| r.verdict == "neurons better").count(),
            }
        })
        .collect()
}

/// Every binary task of `label_names` over the pooled examples: a two-class label gives one
/// (its second class against the first), a larger one a task per class.
pub fn tasks(
    pooled: &Pooled,
    examples: &Examples,
    label_names: &[String],
    source: &str,
) -> Result<Vec<Task>, ConceptError> {
    let mut out = Vec::new();
    for name in label_names {
        let set = sequence_labels(examples, name, source)
            .map_err(|e| ConceptError::Invalid(e.to_string()))?;
        let Target::Classes { classes, names } = &set.target else {
            continue; // numeric labels: nothing to classify
        };
        // Labelled examples that have rows at this hook.
        let members: Vec<(usize, usize, &str)> = set
            .items
            .iter()
            .zip(classes)
            .zip(&set.types)
            .filter_map(|((&row, &class), text)| {
                let id = examples.example_ids[row];
                let pooled_row = pooled.example_ids.binary_search(&id).ok()?;
                Some((pooled_row, class, text.as_str()))
            })
            .collect();
        let positive_classes: Vec<usize> = match names.len() {
            0 | 1 => Vec::new(),
            2 => vec![1],
            n => (0..n).collect(),
        };
        for c in positive_classes {
            out.push(Task {
                label: name.clone(),
                class: names[c].clone(),
                members: members.iter().map(|m| m.0).collect(),
                positive: members.iter().map(|m| usize::from(m.1 == c)).collect(),
                types: members.iter().map(|m| m.2.to_owned()).collect(),
            });
        }
    }
    Ok(out)
}

/// Scores every task and corrects the features-vs-neurons tests over all of them. Tasks that
/// cannot be split (too few examples of a class) come back as notes, named.
pub fn sparse_probe(
    pooled: &Pooled,
    tasks: &[Task],
    options: &SparseProbingOptions,
    progress: &dyn Progress,
) -> Result<(Vec<SparseProbeRow>, Vec<String>), ConceptError> {
    let (mut rows, mut skipped) = (Vec::new(), Vec::new());
    progress.start("sparse probing: tasks", tasks.len() as u64);
    for task in tasks {
        match task::score(pooled, task, options)? {
            Ok(scored) => rows.extend(scored),
            Err(why) => skipped.push(format!("{} = {} vs rest: {why}", task.label, task.class)),
        }
        progress.advance(1);
    }
    progress.finish();
    let p: Vec<f64> = rows.iter().map(|r| r.p_value).collect();
    for (row, p_holm) in rows.iter_mut().zip(crate::stats::holm(&p)) {
        row.p_holm = p_holm;
        row.verdict = if p_holm < options.alpha {
            if row.difference > 0.0 {
                "features better"
            } else {
                "neurons better"
            }
        } else {
            "no significant difference"
        }
        .to_owned();
    }
    Ok((rows, skipped))
}

/// Everything one hook's sparse probing reads.
pub struct HookInputs<'a> {
    pub sae: &'a crate::sae::Sae,
    /// Every token row of the hook (special tokens already left out as the SAE's were).
    pub rows: &'a mut dyn crate::sae::stream::RowSource,
    pub examples: &'a Examples,
    /// Sequence labels: the dictionary's `labels`, or every categorical column.
    pub label_names: &'a [String],
    /// Where the examples came from, for errors.
    pub source: &'a str,
}

/// Pools, scores every task and writes `sparse_probing.parquet` into `dir`. Returns the rows
/// (empty, and nothing written, when the run has no class labels).
pub fn run_for_hook(
    dir: &std::path::Path,
    inputs: HookInputs<'_>,
    options: &SparseProbingOptions,
    progress: &dyn Progress,
) -> Result<Vec<SparseProbeRow>, ConceptError> {
    if !options.enabled || inputs.label_names.is_empty() {
        return Ok(Vec::new());
    }
    let sample = sampled_examples(&inputs.examples.example_ids, options);
    let keep = |id: u64| sample.as_ref().is_none_or(|s| s.contains(&id));
    let pooled = Pooled::collect(inputs.rows, inputs.sae, &keep, dir, progress)?;
    let tasks = tasks(&pooled, inputs.examples, inputs.label_names, inputs.source)?;
    if tasks.is_empty() {
        progress.note("sparse probing: no label with two or more classes; skipped");
        return Ok(Vec::new());
    }
    let (rows, skipped) = sparse_probe(&pooled, &tasks, options, progress)?;
    for why in &skipped {
        progress.note(&format!("sparse probing: task {why}; left out"));
    }
    write_rows(dir, &rows)?;
    Ok(rows)
}

/// The examples sparse probing reads: all of them, or `max_examples` drawn by a seeded shuffle.
fn sampled_examples(
    ids: &[u64],
    options: &SparseProbingOptions,
) -> Option<std::collections::HashSet<u64>> {
    if options.max_examples == 0 || ids.len() <= options.max_examples {
        return None;
    }
    let mut order = ids.to_vec();
    order.sort_unstable();
    glassbox_data::rng::SeededRng::new(options.seed ^ 0x7370_6172_7365).shuffle(&mut order);
    Some(order.into_iter().take(options.max_examples).collect())
}
