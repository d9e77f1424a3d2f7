//! `probes/results.parquet`: one row per (hook, label).

use crate::Result;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use glassbox_data::{table, DataError, RunDir};
use std::sync::Arc;

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbeResult {
    pub hook: String,
    /// Block index, when the hook belongs to one.
    pub layer: Option<i64>,
    /// Residual-stream depth (see the store metadata), for ordering hooks.
    pub depth: f64,
    pub label: String,
    pub pool: String,
    pub n_train: u64,
    pub n_test: u64,
    pub n_classes: u64,
    pub accuracy: f64,
    pub majority_baseline: f64,
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("hook", DataType::Utf8, false),
        Field::new("layer", DataType::Int64, true),
        Field::new("depth", DataType::Float64, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("pool", DataType::Utf8, false),
        Field::new("n_train", DataType::UInt64, false),
        Field::new("n_test", DataType::UInt64, false),
        Field::new("n_classes", DataType::UInt64, false),
        Field::new("accuracy", DataType::Float64, false),
        Field::new("majority_baseline", DataType::Float64, false),
    ]))
}

fn results_path(run: &RunDir) -> std::path::PathBuf {
    run.probes_dir().join("results.parquet")
}

/// Writes `probes/results.parquet` atomically.
pub fn write_results(run: &RunDir, results: &[ProbeResult]) -> Result<()> {
    let path = results_path(run);
    let strings = |f: fn(&ProbeResult) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(results.iter().map(f)))
    };
    let counts = |f: fn(&ProbeResult) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(results.iter().map(f)))
    };
    let floats = |f: fn(&ProbeResult) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(results.iter().map(f)))
    };
    let columns = vec![
        strings(|r| &r.hook),
        Arc::new(Int64Array::from_iter(results.iter().map(|r| r.layer))) as ArrayRef,
        floats(|r| r.depth),
        strings(|r| &r.label),
        strings(|r| &r.pool),
        counts(|r| r.n_train),
        counts(|r| r.n_test),
        counts(|r| r.n_classes),
        floats(|r| r.accuracy),
        floats(|r| r.majority_baseline),
    ];
    let batch = RecordBatch::try_new(schema(), columns).map_err(|source| DataError::Arrow {
        path: path.clone(),
        source,
    })?;
    table::write_table(&path, &batch)?;
    Ok(())
}

/// Reads `probes/results.parquet` back.
pub fn read_results(run: &RunDir) -> Result<Vec<ProbeResult>> {
    let path = results_path(run);
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        if batch.schema().fields() != schema().fields() {
            return Err(DataError::Store {
                path,
                message: "unexpected schema; re-run `glassbox probe --force`".into(),
            }
            .into());
        }
        let text = |i: usize| batch.column(i).as_string::<i32>();
        let count = |i: usize| batch.column(i).as_primitive::<UInt64Type>();
        let float = |i: usize| batch.column(i).as_primitive::<Float64Type>();
        let layer = batch.column(1).as_primitive::<Int64Type>();
        for r in 0..batch.num_rows() {
            out.push(ProbeResult {
                hook: text(0).value(r).to_owned(),
                layer: (!layer.is_null(r)).then(|| layer.value(r)),
                depth: float(2).value(r),
                label: text(3).value(r).to_owned(),
                pool: text(4).value(r).to_owned(),
                n_train: count(5).value(r),
                n_test: count(6).value(r),
                n_classes: count(7).value(r),
                accuracy: float(8).value(r),
                majority_baseline: float(9).value(r),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let r = ProbeResult {
            hook: "blocks.0.hook_resid_post".into(),
            layer: Some(0),
            depth: 1.0,
            label: "topic".into(),
            pool: "mean".into(),
            n_train: 30,
            n_test: 10,
            n_classes: 3,
            accuracy: 0.9,
            majority_baseline: 0.4,
        };
        let mut r2 = r.clone();
        r2.layer = None;
        write_results(&run, &[r.clone(), r2.clone()]).unwrap();
        assert_eq!(read_results(&run).unwrap(), vec![r, r2]);
    }
}
