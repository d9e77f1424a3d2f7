//! Small whole-table Parquet files (examples, probe results): one record batch written
//! atomically, and read back batch by batch.

use crate::{atomic, DataError, Result};
use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use std::path::Path;

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
