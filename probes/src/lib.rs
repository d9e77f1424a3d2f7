//! glassbox-probes: linear probes on the activation store.
//!
//! For each stored hook and each label column, a multinomial logistic-regression probe
//! (linfa-logistic, L2-regularised, on features standardised with training statistics) is
//! trained on a seeded stratified split of the pooled activations and scored on the held-out
//! part, next to the majority-class baseline.

mod error;
mod fit;
mod results;
mod split;

pub use error::ProbeError;
pub use fit::{fit_and_score, Score};
pub use results::{read_results, write_results, ProbeResult};
pub use split::{stratified_split, Split};

use glassbox_data::examples::read_examples;
use glassbox_data::store::{read_metadata, read_pooled_matrix};
use glassbox_data::{run::list_parts, Progress, RunDir};

pub type Result<T, E = ProbeError> = std::result::Result<T, E>;

/// How to probe; also the `[probe]` section of a pipeline config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeOptions {
    /// Label columns of `examples.parquet` to probe for; empty skips probing in a pipeline.
    pub labels: Vec<String>,
    /// Which pooled activations to use (`mean`, `cls`, …).
    pub pool: String,
    pub seed: u64,
    /// Fraction of each class held out for testing.
    pub test_fraction: f64,
    /// L2 penalty (sklearn's `C` is `1 / l2`).
    pub l2: f64,
    pub max_iterations: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            labels: Vec::new(),
            pool: "mean".into(),
            seed: 0,
            test_fraction: 0.25,
            l2: 1.0,
            max_iterations: 300,
        }
    }
}

/// A label column turned into class indices; examples with a null label are left out.
struct Labels {
    name: String,
    /// Row index into the pooled matrix for each labelled example.
    rows: Vec<usize>,
    classes: Vec<usize>,
    n_classes: usize,
}

/// Probes every hook stored with `opts.pool` for every label; returns one result per pair.
pub fn run_probes(
    run: &RunDir,
    opts: &ProbeOptions,
    progress: &dyn Progress,
) -> Result<Vec<ProbeResult>> {
    if opts.labels.is_empty() {
        return Err(ProbeError::Invalid(
            "no label columns given; pass --label COLUMN".into(),
        ));
    }
    if !(0.0..1.0).contains(&opts.test_fraction) || opts.test_fraction == 0.0 {
        return Err(ProbeError::Invalid(format!(
            "test fraction {} must be between 0 and 1 (exclusive)",
            opts.test_fraction
        )));
    }
    let examples = read_examples(run)?;
    let hooks: Vec<String> = run
        .stored_hooks(true)?
        .into_iter()
        .filter(|h| run.pooled_dir(h, &opts.pool).exists())
        .collect();
    if hooks.is_empty() {
        return Err(ProbeError::Invalid(format!(
            "{}: no pooled activations with pool `{}`; extract with --pools {}",
            run.root().display(),
            opts.pool,
            opts.pool
        )));
    }
    let labels: Vec<Labels> = opts
        .labels
        .iter()
        .map(|name| labels_for(run, &examples, name))
        .collect::<Result<_>>()?;

    progress.start("probe", (hooks.len() * labels.len()) as u64);
    let mut results = Vec::new();
    for hook in &hooks {
        let dir = run.pooled_dir(hook, &opts.pool);
        let matrix = read_pooled_matrix(&dir)?;
        if matrix.example_ids != examples.example_ids {
            return Err(ProbeError::Invalid(format!(
                "{}: holds {} examples but examples.parquet has {}; the run is inconsistent — re-run extract with --force",
                dir.display(),
                matrix.example_ids.len(),
                examples.example_ids.len()
            )));
        }
        let meta = list_parts(&dir)?
            .first()
            .map(|p| read_metadata(p))
            .transpose()?
            .unwrap_or_default();
        let layer = meta.get("glassbox.layer").and_then(|v| v.parse().ok());
        let depth = meta
            .get("glassbox.depth")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        for label in &labels {
            let split = stratified_split(
                &label.classes,
                label.n_classes,
                opts.test_fraction,
                opts.seed,
            )
            .map_err(|m| ProbeError::Label {
                column: label.name.clone(),
                message: m,
            })?;
            let score = fit_and_score(
                &matrix.values,
                matrix.width,
                &label.rows,
                &label.classes,
                label.n_classes,
                &split,
                opts,
            )
            .map_err(|e| e.in_hook(hook))?;
            results.push(ProbeResult {
                hook: hook.clone(),
                layer,
                depth,
                label: label.name.clone(),
                pool: opts.pool.clone(),
                n_train: split.train.len() as u64,
                n_test: split.test.len() as u64,
                n_classes: label.n_classes as u64,
                accuracy: score.accuracy,
                majority_baseline: score.majority_baseline,
            });
            progress.advance(1);
        }
    }
    progress.finish();
    results.sort_by(|a, b| {
        (a.label.as_str(), a.depth, a.hook.as_str())
            .partial_cmp(&(b.label.as_str(), b.depth, b.hook.as_str()))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(results)
}

fn labels_for(
    run: &RunDir,
    examples: &glassbox_data::examples::Examples,
    name: &str,
) -> Result<Labels> {
    let column = examples.column(name).ok_or_else(|| ProbeError::Label {
        column: name.to_owned(),
        message: format!(
            "no such column in {}; label columns there: {}",
            run.examples().display(),
            examples.label_names().join(", ")
        ),
    })?;
    let mut names: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    let mut classes = Vec::new();
    for (row, value) in column.values.iter().enumerate() {
        let Some(class) = value.class_name() else {
            continue;
        };
        let index = match names.iter().position(|n| *n == class) {
            Some(i) => i,
            None => {
                names.push(class);
                names.len() - 1
            }
        };
        rows.push(row);
        classes.push(index);
    }
    if names.len() < 2 {
        return Err(ProbeError::Label {
            column: name.to_owned(),
            message: format!(
                "needs at least two classes to probe, found {} ({})",
                names.len(),
                names.join(", ")
            ),
        });
    }
    // Class indices in sorted-name order, so results do not depend on row order.
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| names[a].cmp(&names[b]));
    let mut rank = vec![0; names.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    Ok(Labels {
        name: name.to_owned(),
        rows,
        classes: classes.into_iter().map(|c| rank[c]).collect(),
        n_classes: names.len(),
    })
}
