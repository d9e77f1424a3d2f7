//! `dictionary/hook=<hook>/sparse_probing.parquet`: one row per task and k, the feature probe's
//! columns (`feature_*`) beside the neuron probe's (`neuron_*`) and their comparison.

use super::{SparseProbeRow, UnitScores};
use crate::ConceptError;
use arrow_array::builder::{ListBuilder, UInt32Builder};
use arrow_array::{Array, ArrayRef, Float64Array, ListArray, StringArray, UInt32Array};
use glassbox_data::table::{read_table, Columns};
use std::path::Path;
use std::sync::Arc;

pub const FILE: &str = "sparse_probing.parquet";

pub fn write_rows(dir: &Path, rows: &[SparseProbeRow]) -> Result<(), ConceptError> {
    let mut c = Columns::default();
    c.text("label", rows, |r| &r.label)
        .text("class", rows, |r| &r.class)
        .small("k", rows, |r| r.k as u32)
        .small("examples", rows, |r| r.examples as u32)
        .small("positives", rows, |r| r.positives as u32)
        .small("test_examples", rows, |r| r.test_examples as u32)
        .float("majority_baseline", rows, |r| r.majority_baseline);
    for (prefix, scores) in [
        (
            "feature",
            (|r: &SparseProbeRow| &r.features) as fn(&SparseProbeRow) -> &UnitScores,
        ),
        ("neuron", |r: &SparseProbeRow| &r.neurons),
    ] {
        c.float(&format!("{prefix}_accuracy"), rows, |r| scores(r).accuracy)
            .float(&format!("{prefix}_ci_low"), rows, |r| scores(r).ci.0)
            .float(&format!("{prefix}_ci_high"), rows, |r| scores(r).ci.1)
            .float(&format!("{prefix}_control_accuracy"), rows, |r| {
                scores(r).control_accuracy
            })
            .float(&format!("{prefix}_selectivity"), rows, |r| {
                scores(r).selectivity()
            })
            .float(&format!("{prefix}_l2"), rows, |r| scores(r).l2)
            .add(
                &format!("{prefix}_units"),
                units_list(rows.iter().map(|r| scores(r).units.as_slice())),
            );
    }
    c.float("dense_neuron_accuracy", rows, |r| r.dense_neurons)
        .float("difference", rows, |r| r.difference)
        .float("difference_ci_low", rows, |r| r.difference_ci.0)
        .float("difference_ci_high", rows, |r| r.difference_ci.1)
        .float("p_value", rows, |r| r.p_value)
        .float("p_holm", rows, |r| r.p_holm)
        .text("verdict", rows, |r| &r.verdict);
    c.write(&dir.join(FILE))?;
    Ok(())
}

/// A `list<uint32>` column, one list per row.
pub(crate) fn units_list<'a>(rows: impl Iterator<Item = &'a [u32]>) -> ArrayRef {
    let mut b = ListBuilder::new(UInt32Builder::new());
    for row in rows {
        b.values().append_slice(row);
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Reads the table back (`None` when the hook has none).
pub fn read_rows(dir: &Path) -> Result<Option<Vec<SparseProbeRow>>, ConceptError> {
    let path = dir.join(FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let bad = |column: &str| {
        ConceptError::Invalid(format!(
            "{}: column `{column}` is missing or of the wrong type; re-run `glassbox dictionary --force`",
            path.display()
        ))
    };
    let mut out = Vec::new();
    for batch in read_table(&path)? {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|a| a.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| bad(name))
        };
        let float = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|a| a.as_any().downcast_ref::<Float64Array>())
                .ok_or_else(|| bad(name))
        };
        let small = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|a| a.as_any().downcast_ref::<UInt32Array>())
                .ok_or_else(|| bad(name))
        };
        let list = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|a| a.as_any().downcast_ref::<ListArray>())
                .ok_or_else(|| bad(name))
        };
        let scores = |prefix: &str, i: usize| -> Result<UnitScores, ConceptError> {
            let units = list(&format!("{prefix}_units"))?.value(i);
            let units = units
                .as_any()
                .downcast_ref::<UInt32Array>()
                .ok_or_else(|| bad(&format!("{prefix}_units")))?;
            Ok(UnitScores {
                accuracy: float(&format!("{prefix}_accuracy"))?.value(i),
                ci: (
                    float(&format!("{prefix}_ci_low"))?.value(i),
                    float(&format!("{prefix}_ci_high"))?.value(i),
                ),
                control_accuracy: float(&format!("{prefix}_control_accuracy"))?.value(i),
                l2: float(&format!("{prefix}_l2"))?.value(i),
                units: units.values().to_vec(),
            })
        };
        for i in 0..batch.num_rows() {
            out.push(SparseProbeRow {
                label: text("label")?.value(i).to_owned(),
                class: text("class")?.value(i).to_owned(),
                k: small("k")?.value(i) as usize,
                examples: small("examples")?.value(i) as usize,
                positives: small("positives")?.value(i) as usize,
                test_examples: small("test_examples")?.value(i) as usize,
                majority_baseline: float("majority_baseline")?.value(i),
                features: scores("feature", i)?,
                neurons: scores("neuron", i)?,
                dense_neurons: float("dense_neuron_accuracy")?.value(i),
                difference: float("difference")?.value(i),
                difference_ci: (
                    float("difference_ci_low")?.value(i),
                    float("difference_ci_high")?.value(i),
                ),
                p_value: float("p_value")?.value(i),
                p_holm: float("p_holm")?.value(i),
                verdict: text("verdict")?.value(i).to_owned(),
            });
        }
    }
    Ok(Some(out))
}
