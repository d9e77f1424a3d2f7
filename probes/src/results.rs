//! `probes/results.parquet`: one row per (hook, label).

use crate::Result;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use glassbox_data::{atomic, DataError, RunDir};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
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

/// Writes `probes/results.parquet` atomically.
pub fn write_results(run: &RunDir, results: &[ProbeResult]) -> Result<()> {
    let path = run.probes_dir().join("results.parquet");
    let col = |f: &dyn Fn(&ProbeResult) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(results.iter().map(f)))
    };
    let u = |f: &dyn Fn(&ProbeResult) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(results.iter().map(f)))
    };
    let fl = |f: &dyn Fn(&ProbeResult) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(results.iter().map(f)))
    };
    let columns = vec![
        col(&|r| r.hook.clone()),
        Arc::new(Int64Array::from_iter(results.iter().map(|r| r.layer))) as ArrayRef,
        fl(&|r| r.depth),
        col(&|r| r.label.clone()),
        col(&|r| r.pool.clone()),
        u(&|r| r.n_train),
        u(&|r| r.n_test),
        u(&|r| r.n_classes),
        fl(&|r| r.accuracy),
        fl(&|r| r.majority_baseline),
    ];
    let batch = RecordBatch::try_new(schema(), columns).map_err(|source| DataError::Arrow {
        path: path.clone(),
        source,
    })?;
    let mut buf = Vec::new();
    let parquet_err = |source| DataError::Parquet {
        path: path.clone(),
        source,
    };
    let mut writer = ArrowWriter::try_new(&mut buf, schema(), None).map_err(parquet_err)?;
    writer.write(&batch).map_err(|source| DataError::Parquet {
        path: path.clone(),
        source,
    })?;
    writer.close().map_err(|source| DataError::Parquet {
        path: path.clone(),
        source,
    })?;
    atomic::write_bytes(&path, &buf)?;
    Ok(())
}

/// Reads `probes/results.parquet` back.
pub fn read_results(run: &RunDir) -> Result<Vec<ProbeResult>> {
    let path = run.probes_dir().join("results.parquet");
    let file = std::fs::File::open(&path).map_err(|source| DataError::Io {
        path: path.clone(),
        source,
    })?;
    let perr = |source| DataError::Parquet {
        path: path.clone(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(perr)?
        .build()
        .map_err(|source| DataError::Parquet {
            path: path.clone(),
            source,
        })?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|source| DataError::Arrow {
            path: path.clone(),
            source,
        })?;
        let s = |i: usize| batch.column(i).as_string::<i32>().clone();
        let u = |i: usize| batch.column(i).as_primitive::<UInt64Type>().clone();
        let f = |i: usize| batch.column(i).as_primitive::<Float64Type>().clone();
        let (hook, label, pool) = (s(0), s(3), s(4));
        let layer = batch.column(1).as_primitive::<Int64Type>().clone();
        let (depth, acc, maj) = (f(2), f(8), f(9));
        let (n_train, n_test, n_classes) = (u(5), u(6), u(7));
        for r in 0..batch.num_rows() {
            out.push(ProbeResult {
                hook: hook.value(r).to_owned(),
                layer: (!layer.is_null(r)).then(|| layer.value(r)),
                depth: depth.value(r),
                label: label.value(r).to_owned(),
                pool: pool.value(r).to_owned(),
                n_train: n_train.value(r),
                n_test: n_test.value(r),
                n_classes: n_classes.value(r),
                accuracy: acc.value(r),
                majority_baseline: maj.value(r),
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
