//! `tcav/cavs.parquet` and `tcav/scores.parquet`.

use crate::tcav::{CavRow, ScoreRow};
use crate::ConceptError;
use arrow_array::builder::{Float64Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt32Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{Field, Schema};
use glassbox_data::{table, DataError, RunDir};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn tcav_dir(run: &RunDir) -> PathBuf {
    run.tcav_dir()
}

fn write(path: &Path, columns: Vec<(&str, ArrayRef)>) -> Result<(), ConceptError> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(DataError::arrow(path))?;
    table::write_table(path, &batch)?;
    Ok(())
}

fn strings<T>(rows: &[T], f: impl Fn(&T) -> &str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
}

fn hook_names<T>(rows: &[T], f: impl Fn(&T) -> glassbox_data::HookPoint) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| f(r).to_string()),
    ))
}

fn floats<T>(rows: &[T], f: impl Fn(&T) -> f64) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
}

pub fn write_cavs(run: &RunDir, rows: &[CavRow]) -> Result<(), ConceptError> {
    let mut directions = ListBuilder::new(Float64Builder::new());
    for r in rows {
        directions.values().append_slice(&r.direction);
        directions.append(true);
    }
    write(
        &tcav_dir(run).join("cavs.parquet"),
        vec![
            ("concept", strings(rows, |r| &r.concept)),
            ("hook", hook_names(rows, |r| r.hook)),
            (
                "run",
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.run))),
            ),
            ("accuracy", floats(rows, |r| r.accuracy)),
            ("direction", Arc::new(directions.finish())),
        ],
    )
}

pub fn write_scores(run: &RunDir, rows: &[ScoreRow]) -> Result<(), ConceptError> {
    write(
        &tcav_dir(run).join("scores.parquet"),
        vec![
            ("concept", strings(rows, |r| &r.concept)),
            ("hook", hook_names(rows, |r| r.hook)),
            ("target", strings(rows, |r| &r.target)),
            ("convention", strings(rows, |r| &r.convention)),
            ("score", floats(rows, |r| r.score)),
            ("magnitude", floats(rows, |r| r.magnitude)),
            ("score_std", floats(rows, |r| r.score_std)),
            ("random_mean", floats(rows, |r| r.random_mean)),
            ("random_std", floats(rows, |r| r.random_std)),
            ("t", floats(rows, |r| r.t)),
            ("p", floats(rows, |r| r.p)),
            ("p_holm", floats(rows, |r| r.p_holm)),
            ("effect", floats(rows, |r| r.effect)),
            ("ci_low", floats(rows, |r| r.ci_low)),
            ("ci_high", floats(rows, |r| r.ci_high)),
            (
                "significant",
                Arc::new(BooleanArray::from_iter(
                    rows.iter().map(|r| Some(r.significant)),
                )),
            ),
            ("cav_accuracy", floats(rows, |r| r.cav_accuracy)),
            (
                "runs",
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.runs))),
            ),
            (
                "n_targets",
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.n_targets),
                )),
            ),
        ],
    )
}

fn column(path: &Path, batch: &RecordBatch, name: &str) -> Result<ArrayRef, ConceptError> {
    batch.column_by_name(name).cloned().ok_or_else(|| {
        ConceptError::Invalid(format!(
            "{}: no column `{name}`; re-run `glassbox tcav --force`",
            path.display()
        ))
    })
}

/// Reads `tcav/scores.parquet` back.
pub fn read_scores(run: &RunDir) -> Result<Vec<ScoreRow>, ConceptError> {
    let path = tcav_dir(run).join("scores.parquet");
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        let col = |name: &str| column(&path, &batch, name);
        let text = |name: &str| -> Result<Vec<String>, ConceptError> {
            Ok(col(name)?
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_owned())
                .collect())
        };
        let float = |name: &str| -> Result<Vec<f64>, ConceptError> {
            Ok(col(name)?
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.unwrap_or(f64::NAN))
                .collect())
        };
        let (concept, hook, target, convention) = (
            text("concept")?,
            text("hook")?,
            text("target")?,
            text("convention")?,
        );
        let names = [
            "score",
            "magnitude",
            "score_std",
            "random_mean",
            "random_std",
            "t",
            "p",
            "p_holm",
            "effect",
            "ci_low",
            "ci_high",
            "cav_accuracy",
        ];
        let f: Vec<Vec<f64>> = names.iter().map(|n| float(n)).collect::<Result<_, _>>()?;
        let significant = col("significant")?;
        let significant = significant.as_boolean();
        let runs = col("runs")?;
        let runs = runs.as_primitive::<UInt32Type>();
        let n_targets = col("n_targets")?;
        let n_targets = n_targets.as_primitive::<UInt64Type>();
        for r in 0..batch.num_rows() {
            out.push(ScoreRow {
                concept: concept[r].clone(),
                hook: table::parse_hook(&path, r, &hook[r])?,
                target: target[r].clone(),
                convention: convention[r].clone(),
                score: f[0][r],
                magnitude: f[1][r],
                score_std: f[2][r],
                random_mean: f[3][r],
                random_std: f[4][r],
                t: f[5][r],
                p: f[6][r],
                p_holm: f[7][r],
                effect: f[8][r],
                ci_low: f[9][r],
                ci_high: f[10][r],
                significant: !significant.is_null(r) && significant.value(r),
                cav_accuracy: f[11][r],
                runs: runs.value(r),
                n_targets: n_targets.value(r),
            });
        }
    }
    Ok(out)
}

/// Reads `tcav/cavs.parquet` back (every run's CAV, including the random baselines).
pub fn read_cavs(run: &RunDir) -> Result<Vec<CavRow>, ConceptError> {
    use arrow_array::types::Float64Type as F64;
    let path = tcav_dir(run).join("cavs.parquet");
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        let col = |name: &str| column(&path, &batch, name);
        let (concept, hook, run_col, accuracy, direction) = (
            col("concept")?,
            col("hook")?,
            col("run")?,
            col("accuracy")?,
            col("direction")?,
        );
        let (concept, hook) = (concept.as_string::<i32>(), hook.as_string::<i32>());
        let run_col = run_col.as_primitive::<UInt32Type>();
        let accuracy = accuracy.as_primitive::<F64>();
        let direction = direction.as_list::<i32>();
        for r in 0..batch.num_rows() {
            out.push(CavRow {
                concept: concept.value(r).to_owned(),
                hook: table::parse_hook(&path, r, hook.value(r))?,
                run: run_col.value(r),
                accuracy: accuracy.value(r),
                direction: direction.value(r).as_primitive::<F64>().values().to_vec(),
            });
        }
    }
    Ok(out)
}
