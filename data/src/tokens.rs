//! `tokens.parquet`: `example_id`, `position`, `token_id`, `token` — one row per kept token,
//! streamed in row groups and renamed into place when complete.

use crate::{atomic, DataError, Result, RunDir};
use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::PathBuf;
use std::sync::Arc;

/// One example's tokens.
pub struct TokenRows<'a> {
    pub example_id: u64,
    pub ids: &'a [u32],
    pub tokens: &'a [String],
}

/// Streaming writer for `tokens.parquet`.
pub struct TokensWriter {
    path: PathBuf,
    tmp: PathBuf,
    schema: SchemaRef,
    writer: ArrowWriter<std::fs::File>,
}

impl TokensWriter {
    pub fn create(run: &RunDir) -> Result<Self> {
        let path = run.tokens();
        std::fs::create_dir_all(run.root()).map_err(DataError::io(run.root()))?;
        let tmp = atomic::temp_path(&path);
        let file = std::fs::File::create(&tmp).map_err(DataError::io(&tmp))?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("example_id", DataType::UInt64, false),
            Field::new("position", DataType::UInt32, false),
            Field::new("token_id", DataType::UInt32, false),
            Field::new("token", DataType::Utf8, false),
        ]));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(DataError::parquet(&tmp))?;
        Ok(Self {
            path,
            tmp,
            schema,
            writer,
        })
    }

    /// Writes a batch of examples' tokens as one row group.
    pub fn write(&mut self, rows: &[TokenRows<'_>]) -> Result<()> {
        let mut ex = Vec::new();
        let mut pos = Vec::new();
        let mut ids = Vec::new();
        let mut toks = Vec::new();
        for r in rows {
            for (p, (id, tok)) in r.ids.iter().zip(r.tokens).enumerate() {
                ex.push(r.example_id);
                pos.push(p as u32);
                ids.push(*id);
                toks.push(tok.as_str());
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(ex)),
            Arc::new(UInt32Array::from(pos)),
            Arc::new(UInt32Array::from(ids)),
            Arc::new(StringArray::from(toks)),
        ];
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(DataError::arrow(&self.tmp))?;
        self.writer
            .write(&batch)
            .map_err(DataError::parquet(&self.tmp))?;
        self.writer.flush().map_err(DataError::parquet(&self.tmp))
    }

    pub fn finish(self) -> Result<()> {
        let file = self
            .writer
            .into_inner()
            .map_err(DataError::parquet(&self.tmp))?;
        file.sync_all().map_err(DataError::io(&self.tmp))?;
        atomic::commit(&self.tmp, &self.path)
    }
}
