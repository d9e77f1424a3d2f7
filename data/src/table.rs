//! Small whole-table Parquet files (examples, probe results): one record batch written
//! atomically, and read back batch by batch.

use crate::{atomic, DataError, HookPoint, Result};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use std::path::Path;
use std::sync::Arc;

/// Writes `batch` to `path` (Snappy-compressed) via a temp file and rename.
pub fn write_table(path: &Path, batch: &RecordBatch) -> Result<()> {
    let mut buf = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))
        .map_err(DataError::parquet(path))?;
    writer.write(batch).map_err(DataError::parquet(path))?;
    writer.close().map_err(DataError::parquet(path))?;
    atomic::write_bytes(path, &buf)
}

/// Reads every record batch of a Parquet file.
pub fn read_table(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).map_err(DataError::io(path))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(DataError::parquet(path))?
        .build()
        .map_err(DataError::parquet(path))?
        .map(|b| b.map_err(DataError::arrow(path)))
        .collect()
}

/// Reads a hook name stored in row `row` of the table at `path`; a name that is not a hook
/// point (a hand-edited or foreign file) is an error naming both.
pub fn parse_hook(path: &Path, row: usize, name: &str) -> Result<HookPoint> {
    name.parse().map_err(|e| DataError::MalformedRow {
        path: path.to_path_buf(),
        row,
        message: format!("column `hook`: {e}"),
    })
}

/// Builds a record batch column by column.
#[derive(Default)]
pub struct Columns {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    pub fn add(&mut self, name: &str, array: ArrayRef) -> &mut Self {
        self.fields
            .push(Field::new(name, array.data_type().clone(), true));
        self.arrays.push(array);
        self
    }
    pub fn text<'a, T: 'a>(
        &mut self,
        name: &str,
        rows: &'a [T],
        f: impl Fn(&'a T) -> &'a str,
    ) -> &mut Self {
        self.add(
            name,
            Arc::new(StringArray::from_iter_values(rows.iter().map(f))),
        )
    }
    /// A column of hook names (their canonical spelling, which [`parse_hook`] reads back).
    pub fn hooks<T>(&mut self, name: &str, rows: &[T], f: impl Fn(&T) -> HookPoint) -> &mut Self {
        self.add(
            name,
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| f(r).to_string()),
            )),
        )
    }
    pub fn float<T>(&mut self, name: &str, rows: &[T], f: impl Fn(&T) -> f64) -> &mut Self {
        self.add(
            name,
            Arc::new(Float64Array::from_iter_values(rows.iter().map(f))),
        )
    }
    pub fn opt_float<T>(
        &mut self,
        name: &str,
        rows: &[T],
        f: impl Fn(&T) -> Option<f64>,
    ) -> &mut Self {
        self.add(name, Arc::new(Float64Array::from_iter(rows.iter().map(f))))
    }
    pub fn count<T>(&mut self, name: &str, rows: &[T], f: impl Fn(&T) -> u64) -> &mut Self {
        self.add(
            name,
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(f))),
        )
    }
    pub fn small<T>(&mut self, name: &str, rows: &[T], f: impl Fn(&T) -> u32) -> &mut Self {
        self.add(
            name,
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(f))),
        )
    }
    pub fn write(self, path: &Path) -> Result<()> {
        let batch = RecordBatch::try_new(Arc::new(Schema::new(self.fields)), self.arrays)
            .map_err(DataError::arrow(path))?;
        write_table(path, &batch)?;
        Ok(())
    }
}
