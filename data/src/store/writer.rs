use super::schema::{activation_schema, ActDtype, ShardMeta};
use crate::{atomic, DataError, Result};
use arrow_array::{
    ArrayRef, FixedSizeListArray, Float16Array, Float32Array, RecordBatch, UInt32Array, UInt64Array,
};
use arrow_schema::{Field, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Streams one activation shard to `<dir>/.part-NNNNN.parquet.tmp`; `finish` renames it.
///
/// Each `write` call becomes one row group, so memory stays bounded by the batch. Dropping the
/// writer without `finish` leaves only the temp file, which readers never see.
pub struct ActivationWriter {
    path: PathBuf,
    tmp: PathBuf,
    schema: SchemaRef,
    meta: ShardMeta,
    writer: ArrowWriter<std::fs::File>,
    rows: u64,
}

impl ActivationWriter {
    pub fn create(path: &Path, meta: ShardMeta) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(DataError::io(dir))?;
        }
        let tmp = atomic::temp_path(path);
        let file = std::fs::File::create(&tmp).map_err(DataError::io(&tmp))?;
        let schema = activation_schema(&meta);
        // Float activations do not dictionary-encode well; statistics on
        // millions of floats cost time and say nothing useful. Keys keep their statistics so
        // readers can prune by example_id.
        let props = WriterProperties::builder()
            .set_compression(meta.compression.parquet())
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .set_column_statistics_enabled(ColumnPath::from("example_id"), EnabledStatistics::Chunk)
            // Plain Parquet key-value metadata too (the Arrow schema carries it as well), so
            // readers that ignore the embedded Arrow schema (DuckDB's parquet_kv_metadata) see it.
            .set_key_value_metadata(Some(
                meta.key_values()
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .collect(),
            ))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(DataError::parquet(&tmp))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            schema,
            meta,
            writer,
            rows: 0,
        })
    }

    /// Appends rows: `values` is row-major, `example_ids.len() * width` long.
    pub fn write(
        &mut self,
        example_ids: &[u64],
        positions: Option<&[u32]>,
        values: &[f32],
    ) -> Result<()> {
        self.write_owned(
            example_ids.to_vec(),
            positions.map(<[u32]>::to_vec),
            values.to_vec(),
        )
    }

    /// [`write`](Self::write) taking ownership of the buffers, which become the Arrow arrays
    /// without another copy (f32 storage).
    pub fn write_owned(
        &mut self,
        example_ids: Vec<u64>,
        positions: Option<Vec<u32>>,
        values: Vec<f32>,
    ) -> Result<()> {
        let width = self.meta.width;
        let n = example_ids.len();
        if values.len() != n * width {
            return Err(self.error(format!(
                "shape mismatch: {n} rows of width {width} need {} values, got {}",
                n * width,
                values.len()
            )));
        }
        if self.meta.kind.has_position() != positions.is_some() {
            return Err(self.error("positions must be given exactly for token-level shards".into()));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.error(format!(
                "non-finite activation {} at example_id {}, unit {}",
                values[i],
                example_ids[i / width],
                i % width
            )));
        }
        let item: ArrayRef = match self.meta.dtype {
            ActDtype::F32 => Arc::new(Float32Array::from(values)),
            ActDtype::F16 => Arc::new(Float16Array::from(
                values
                    .iter()
                    .map(|&v| half::f16::from_f32(v))
                    .collect::<Vec<_>>(),
            )),
        };
        let field = Arc::new(Field::new("item", self.meta.dtype.arrow(), false));
        let act = FixedSizeListArray::try_new(field, width as i32, item, None)
            .map_err(DataError::arrow(&self.tmp))?;
        let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(example_ids))];
        if let Some(p) = positions {
            columns.push(Arc::new(UInt32Array::from(p)));
        }
        columns.push(Arc::new(act));
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(DataError::arrow(&self.tmp))?;
        self.writer
            .write(&batch)
            .map_err(DataError::parquet(&self.tmp))?;
        self.writer.flush().map_err(DataError::parquet(&self.tmp))?;
        self.rows += n as u64;
        Ok(())
    }

    /// Closes the file and renames it to its final name; returns the row count.
    pub fn finish(self) -> Result<u64> {
        let file = self
            .writer
            .into_inner()
            .map_err(DataError::parquet(&self.tmp))?;
        file.sync_all().map_err(DataError::io(&self.tmp))?;
        atomic::commit(&self.tmp, &self.path)?;
        Ok(self.rows)
    }

    fn error(&self, message: String) -> DataError {
        DataError::Store {
            path: self.tmp.clone(),
            message,
        }
    }
}
