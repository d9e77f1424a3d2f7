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
        let limit = match self.meta.dtype {
            ActDtype::F32 => f32::MAX,
            ActDtype::F16 => F16_ROUNDS_FINITE,
        };
        if let Some(i) = first_beyond(&values, limit) {
            let (v, id, unit) = (values[i], example_ids[i / width], i % width);
            return Err(self.error(if v.is_finite() {
                format!(
                    "activation {v} at example_id {id}, unit {unit} is beyond f16's range (±65504); store activations as f32 (--dtype f32; dtype = \"f32\" under [extract] in a pipeline config)"
                )
            } else {
                format!(
                    "non-finite activation {v} at example_id {id}, unit {unit}: the model's forward produced it; check the checkpoint's weights"
                )
            }));
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
        start_writeback(self.writer.inner());
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

/// The largest f32 that f16 stores finite: ±65,504 is f16's largest value, and from 65,520 on
/// rounding to nearest gives an infinity, which the store would keep silently.
const F16_ROUNDS_FINITE: f32 = 65519.996;

/// The index of the first value that is NaN or beyond ±`limit` (with `f32::MAX`: the first
/// NaN or infinity). Blocks are checked whole, without an early exit inside, so the check
/// vectorises (it reads every activation the store writes).
fn first_beyond(values: &[f32], limit: f32) -> Option<usize> {
    const BLOCK: usize = 4096;
    let within = |v: &f32| v.abs() <= limit;
    values
        .chunks(BLOCK)
        .enumerate()
        .find(|(_, block)| !block.iter().fold(true, |ok, v| ok & within(v)))
        .and_then(|(b, block)| {
            let i = block.iter().position(|v| !within(v))?;
            Some(b * BLOCK + i)
        })
}

/// Asks the kernel to start writing the file's dirty pages to disk now, without waiting, so
/// that [`ActivationWriter::finish`]'s `fsync` waits for the last row group only instead of
/// the whole shard (end-to-end extraction waited ~0.13 s per 350 MB for it). Only a hint:
/// a failure here changes nothing, since `finish` syncs the file either way.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: an open descriptor this writer owns, whole-file range, flags that only start
    // writeback; no memory is passed to the kernel.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File) {}

#[cfg(test)]
mod tests {
    use super::first_beyond;

    fn first_non_finite(values: &[f32]) -> Option<usize> {
        first_beyond(values, f32::MAX)
    }

    /// The first NaN or infinity wherever it falls relative to the blocks, the earliest of
    /// several, and none in finite data (the largest and smallest floats included).
    #[test]
    fn first_non_finite_finds_the_earliest_across_blocks() {
        let n = 3 * 4096 + 17;
        let mut values: Vec<f32> = (0..n).map(|i| (i as f32).sin() * 1e3).collect();
        values[5] = f32::MAX;
        values[6] = f32::MIN_POSITIVE;
        values[7] = -f32::MAX;
        assert_eq!(first_non_finite(&values), None);
        assert_eq!(first_non_finite(&[]), None);
        for (at, bad) in [
            (0, f32::NAN),
            (4095, f32::INFINITY),
            (4096, f32::NEG_INFINITY),
            (n - 1, f32::NAN),
        ] {
            let mut v = values.clone();
            v[at] = bad;
            assert_eq!(first_non_finite(&v), Some(at), "{bad} at {at}");
        }
        let mut v = values.clone();
        v[9000] = f32::NAN;
        v[8200] = f32::INFINITY;
        v[12000] = f32::NAN;
        assert_eq!(first_non_finite(&v), Some(8200));
    }

    /// f16's limit: what rounds to ±65,504 is kept, what rounds to an infinity (from 65,520
    /// on) and a NaN are not.
    #[test]
    fn beyond_f16_range_is_found() {
        let limit = super::F16_ROUNDS_FINITE;
        assert_eq!(
            limit.to_bits() + 1,
            65520f32.to_bits(),
            "the f32 just below 65,520"
        );
        assert!(half::f16::from_f32(limit).is_finite());
        assert!(half::f16::from_f32(f32::from_bits(limit.to_bits() + 1)).is_infinite());
        let mut v = vec![0.5f32; 5000];
        v[10] = 65504.0;
        v[11] = -limit;
        assert_eq!(first_beyond(&v, limit), None);
        v[4500] = -65520.0;
        assert_eq!(first_beyond(&v, limit), Some(4500));
        v[100] = f32::NAN;
        assert_eq!(first_beyond(&v, limit), Some(100));
    }
}
