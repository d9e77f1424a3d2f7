//! Concept erasure for a probe: LEACE fitted on the probe's training rows (the run's stored
//! pooled activations for a sequence-level label, its token rows for a token-level one, split
//! as the probe stage split them — same cap, classes, `split_by` and seed), the probe refitted
//! on the erased rows with the run's own probe options, and random erasers of the same rank
//! for the downstream test.
//!
//! The erasure *counts* only when the refitted probe is no better than chance: the lower end
//! of its test accuracy's 95% bootstrap interval is at or below the majority baseline. An
//! eraser that leaves the label decodable says nothing about whether the model uses it.

use super::leace::{Eraser, Geometry};
use crate::ConceptError;
use glassbox_data::examples::read_examples;
use glassbox_data::rng::SeededRng;
use glassbox_data::store::read_pooled_matrix;
use glassbox_data::{HookPoint, Pool, RunDir};
use glassbox_probes::probe::{fit_classifier, Rows};
use glassbox_probes::{prepare_sequence_label, ProbeOptions, Split, Standardizer, TokenLabel};

/// LEACE for one label at one hook, with its check.
pub struct ErasureFit {
    /// The concept's eraser.
    pub eraser: Eraser,
    /// Random erasers of the same rank in the same geometry.
    pub randoms: Vec<Eraser>,
    /// Class names, index = class.
    pub classes: Vec<String>,
    /// Test accuracy of the probe refitted on unerased rows (same split and options).
    pub accuracy_before: f64,
    /// Test accuracy of the probe refitted on erased rows, and its 95% interval.
    pub accuracy_after: f64,
    /// 95% interval of `accuracy_after`.
    pub accuracy_after_ci: (f64, f64),
    /// The majority baseline on the test rows.
    pub chance: f64,
}

impl ErasureFit {
    /// Whether the refitted probe is down to chance (see the module docs).
    pub fn counts(&self) -> bool {
        self.accuracy_after_ci.0 <= self.chance + 1e-12
    }
}

/// The probe's rows an eraser is fitted on.
struct ProbeRows {
    /// Row-major, `d` wide.
    x: Vec<f32>,
    d: usize,
    class_of: Vec<usize>,
    classes: Vec<String>,
    split: Split,
}

/// Fits LEACE for `label` on `hook`'s `pool`ed rows (`None`: its token rows, a token-level
/// label) and refits the probe; `random` random erasers for the baseline. Every random choice
/// derives from `seed`.
pub fn fit_erasure(
    run: &RunDir,
    label: &str,
    hook: HookPoint,
    pool: Option<Pool>,
    options: &ProbeOptions,
    random: usize,
    seed: u64,
) -> Result<ErasureFit, ConceptError> {
    let rows = match pool {
        Some(pool) => sequence_rows(run, label, hook, pool, options)?,
        None => token_rows(run, label, hook, options)?,
    };
    let ProbeRows {
        x,
        d,
        class_of,
        classes,
        split,
    } = rows;
    let n_classes = classes.len();
    let geometry = Geometry::fit(&x, d, &split.train)?;
    let train_classes: Vec<usize> = split.train.iter().map(|&r| class_of[r]).collect();
    let eraser = geometry.concept_eraser(&train_classes, n_classes);
    let mut rng = SeededRng::new(seed ^ 0x006c_6561_6365);
    let randoms = (0..random)
        .map(|_| geometry.random_eraser(eraser.rank.max(1), &mut rng))
        .collect();
    let refit = |rows: &[f32]| {
        let std = Standardizer::fit(rows, d, &split.train);
        let r = Rows {
            x: rows,
            d,
            split: &split,
            std: &std,
        };
        fit_classifier(r, &class_of, n_classes, options, seed).scores
    };
    let before = refit(&x);
    let mut erased = x;
    eraser.apply(&mut erased);
    let after = refit(&erased);
    Ok(ErasureFit {
        eraser,
        randoms,
        classes,
        accuracy_before: before.score,
        accuracy_after: after.score,
        accuracy_after_ci: after.ci,
        chance: after.baseline,
    })
}

/// A sequence-level probe's pooled rows at `hook`.
fn sequence_rows(
    run: &RunDir,
    label: &str,
    hook: HookPoint,
    pool: Pool,
    options: &ProbeOptions,
) -> Result<ProbeRows, ConceptError> {
    let examples = read_examples(run)?;
    if examples.column(label).is_none() {
        return Err(ConceptError::Invalid(format!(
            "erasure of `{label}`: examples.parquet has no column `{label}`"
        )));
    }
    // The probe's own rows and split: LEACE is fitted on exactly its training rows.
    let source = run.examples().display().to_string();
    let prepared = prepare_sequence_label(&examples, label, &source, options)
        .map_err(|e| ConceptError::Invalid(format!("erasure of `{label}`: {e}")))?;
    if prepared.names.is_empty() {
        return Err(ConceptError::Invalid(format!(
            "erasure of `{label}`: a numeric label has no classes to erase"
        )));
    }
    let (class_of, classes, split) = (prepared.classes, prepared.names, prepared.split);
    let dir = run.pooled_dir(hook, pool);
    let matrix = read_pooled_matrix(&dir)?;
    if matrix.example_ids.len() != examples.example_ids.len() {
        return Err(ConceptError::Invalid(format!(
            "{}: holds {} examples but examples.parquet has {}; re-run extract with --force",
            dir.display(),
            matrix.example_ids.len(),
            examples.example_ids.len()
        )));
    }
    let d = matrix.width;
    let mut x: Vec<f32> = Vec::with_capacity(prepared.examples.len() * d);
    for &i in &prepared.examples {
        x.extend_from_slice(&matrix.values[i * d..(i + 1) * d]);
    }
    Ok(ProbeRows {
        x,
        d,
        class_of,
        classes,
        split,
    })
}

/// A token-level probe's token rows at `hook` (the probe's own rows and split by text).
fn token_rows(
    run: &RunDir,
    label: &str,
    hook: HookPoint,
    options: &ProbeOptions,
) -> Result<ProbeRows, ConceptError> {
    let invalid = |e: glassbox_probes::ProbeError| {
        ConceptError::Invalid(format!("erasure of token-level `{label}`: {e}"))
    };
    let prepared = TokenLabel::prepare(run, label, options).map_err(invalid)?;
    if prepared.names().is_empty() {
        return Err(ConceptError::Invalid(format!(
            "erasure of token-level `{label}`: a numeric label has no classes to erase"
        )));
    }
    let (x, d) = prepared.rows(run, hook).map_err(invalid)?;
    Ok(ProbeRows {
        x,
        d,
        class_of: prepared.classes().to_vec(),
        classes: prepared.names().to_vec(),
        split: prepared.split().clone(),
    })
}
