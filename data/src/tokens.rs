//! `tokens.parquet`: `example_id`, `position`, `token_id`, `token`, `start`, `end` — one row
//! per kept token, streamed in row groups and renamed into place when complete. `start`/`end`
//! are the token's byte span in the example's text, null for special tokens (`[CLS]`, …).

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
    pub spans: &'a [Option<(u32, u32)>],
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
            Field::new("start", DataType::UInt32, true),
            Field::new("end", DataType::UInt32, true),
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
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        for r in rows {
            for (p, ((id, tok), span)) in r.ids.iter().zip(r.tokens).zip(r.spans).enumerate() {
                ex.push(r.example_id);
                pos.push(p as u32);
                ids.push(*id);
                toks.push(tok.as_str());
                starts.push(span.map(|s| s.0));
                ends.push(span.map(|s| s.1));
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(ex)),
            Arc::new(UInt32Array::from(pos)),
            Arc::new(UInt32Array::from(ids)),
            Arc::new(StringArray::from(toks)),
            Arc::new(UInt32Array::from(starts)),
            Arc::new(UInt32Array::from(ends)),
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

/// `tokens.parquet` read back, in file order (by example, then position).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub example_ids: Vec<u64>,
    pub positions: Vec<u32>,
    pub tokens: Vec<String>,
    pub spans: Vec<Option<(u32, u32)>>,
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.example_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.example_ids.is_empty()
    }
}

/// Reads `tokens.parquet`.
pub fn read_tokens(run: &RunDir) -> Result<Tokens> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{UInt32Type, UInt64Type};
    use arrow_array::Array;
    let path = run.tokens();
    let mut out = Tokens::default();
    for batch in crate::table::read_table(&path)? {
        let column = |name: &str| column(&batch, &path, name);
        let (ex, pos, tok, start, end) = (
            column("example_id")?,
            column("position")?,
            column("token")?,
            column("start")?,
            column("end")?,
        );
        let (ex, pos) = (
            ex.as_primitive::<UInt64Type>(),
            pos.as_primitive::<UInt32Type>(),
        );
        let (start, end) = (
            start.as_primitive::<UInt32Type>(),
            end.as_primitive::<UInt32Type>(),
        );
        let tok = tok.as_string::<i32>();
        for r in 0..batch.num_rows() {
            out.example_ids.push(ex.value(r));
            out.positions.push(pos.value(r));
            out.tokens.push(tok.value(r).to_owned());
            out.spans.push(
                (!start.is_null(r) && !end.is_null(r)).then(|| (start.value(r), end.value(r))),
            );
        }
    }
    Ok(out)
}

/// `(example_id, position, token_id)` of every stored token, in the file's order: what tools
/// that re-read contexts by id need (the delphi cache export).
pub fn read_token_ids(run: &RunDir) -> Result<Vec<(u64, u32, u32)>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{UInt32Type, UInt64Type};
    let path = run.tokens();
    let mut out = Vec::new();
    for batch in crate::table::read_table(&path)? {
        let column = |name: &str| column(&batch, &path, name);
        let (ex, pos, id) = (
            column("example_id")?,
            column("position")?,
            column("token_id")?,
        );
        let (ex, pos, id) = (
            ex.as_primitive::<UInt64Type>(),
            pos.as_primitive::<UInt32Type>(),
            id.as_primitive::<UInt32Type>(),
        );
        for r in 0..batch.num_rows() {
            out.push((ex.value(r), pos.value(r), id.value(r)));
        }
    }
    Ok(out)
}

/// A column of `tokens.parquet`, or the error naming it.
fn column(batch: &RecordBatch, path: &std::path::Path, name: &str) -> Result<ArrayRef> {
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| DataError::BadColumn {
            path: path.to_path_buf(),
            column: name.to_owned(),
            message: "missing (written by an older glassbox?); re-run extract with --force".into(),
        })
}
