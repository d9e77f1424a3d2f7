use crate::remote_parts::PartFile;
use crate::{run::list_parts, DataError, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A batch of rows read back from the store, values widened to f32.
#[derive(Debug, Clone)]
pub struct ActivationBatch {
    pub example_ids: Vec<u64>,
    pub positions: Option<Vec<u32>>,
    pub width: usize,
    /// Row-major, `example_ids.len() * width`.
    pub values: Vec<f32>,
}

/// Streams every `part-*.parquet` file in `dir`, in part order, one record batch at a time.
pub fn read_parts(dir: &Path, mut f: impl FnMut(ActivationBatch) -> Result<()>) -> Result<()> {
    let mut stream = PartStream::open(dir)?;
    while let Some(batch) = stream.next_batch()? {
        f(batch)?;
    }
    Ok(())
}

/// Pull-style reading of a hook folder's parts, one record batch at a time, restartable:
/// what streaming consumers (SAE training) need where `read_parts`' callback does not fit.
pub struct PartStream {
    dir: PathBuf,
    parts: Vec<PathBuf>,
    next_part: usize,
    current: Option<(PathBuf, ParquetRecordBatchReader)>,
}

impl PartStream {
    /// Opens `dir`; errors when it holds no parts.
    pub fn open(dir: &Path) -> Result<Self> {
        let parts = list_parts(dir)?;
        if parts.is_empty() {
            return Err(DataError::Store {
                path: dir.to_path_buf(),
                message: "no part-*.parquet files here".into(),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            parts,
            next_part: 0,
            current: None,
        })
    }

    /// The folder being read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts again from the first part.
    pub fn rewind(&mut self) {
        self.next_part = 0;
        self.current = None;
    }

    /// The next batch, or `None` at the end of the last part.
    pub fn next_batch(&mut self) -> Result<Option<ActivationBatch>> {
        loop {
            if let Some((path, reader)) = &mut self.current {
                match reader.next() {
                    Some(batch) => {
                        let batch = batch.map_err(DataError::arrow(path.as_path()))?;
                        return decode(path, &batch).map(Some);
                    }
                    None => self.current = None,
                }
            }
            let Some(part) = self.parts.get(self.next_part).cloned() else {
                return Ok(None);
            };
            self.next_part += 1;
            let file = PartFile::open(&part).map_err(DataError::io(&part))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(DataError::parquet(&part))?;
            let rows = batch_rows(builder.schema());
            let reader = builder
                .with_batch_size(rows)
                .build()
                .map_err(DataError::parquet(&part))?;
            self.current = Some((part, reader));
        }
    }
}

/// Values (not rows) per record batch: 4 Mi, 16 MB as f32. A batch is held several times
/// over while it is decoded (the reader's definition levels and values, the Arrow array, the
/// widened copy, the consumer's buffer), so its size is set by bytes: at d = 2,304 (Gemma-2-2B)
/// 8,192 rows were ~75 MB a copy and ~450 MB in all at once.
const BATCH_VALUES: usize = 1 << 22;

/// Rows per record batch for a part with `schema`: [`BATCH_VALUES`] over the `act` width,
/// between 64 and 8,192 rows.
fn batch_rows(schema: &arrow_schema::Schema) -> usize {
    let width = match schema.field_with_name("act").map(|f| f.data_type()) {
        Ok(DataType::FixedSizeList(_, n)) => (*n).max(1) as usize,
        _ => 1,
    };
    (BATCH_VALUES / width).clamp(64, 8192)
}

fn decode(path: &Path, batch: &RecordBatch) -> Result<ActivationBatch> {
    let bad = |message: &str| DataError::Store {
        path: path.to_path_buf(),
        message: message.to_owned(),
    };
    let ids = batch
        .column_by_name("example_id")
        .ok_or_else(|| bad("missing column `example_id`"))?;
    let ids = ids
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| bad("`example_id` must be uint64"))?;
    let positions = match batch.column_by_name("position") {
        Some(p) => Some(
            p.as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| bad("`position` must be uint32"))?
                .values()
                .to_vec(),
        ),
        None => None,
    };
    let act = batch
        .column_by_name("act")
        .ok_or_else(|| bad("missing column `act`"))?;
    let act = act
        .as_fixed_size_list_opt()
        .ok_or_else(|| bad("`act` must be a fixed-size list"))?;
    let width = act.value_length() as usize;
    let items = act.values();
    // The list's child array may be offset when the batch is a slice.
    let start = act.offset() * width;
    let len = act.len() * width;
    let values: Vec<f32> = match items.data_type() {
        DataType::Float32 => {
            items.as_primitive::<Float32Type>().values()[start..start + len].to_vec()
        }
        DataType::Float16 => items.as_primitive::<Float16Type>().values()[start..start + len]
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        other => {
            return Err(bad(&format!(
                "`act` items must be float32 or float16, found {other}"
            )))
        }
    };
    Ok(ActivationBatch {
        example_ids: ids.values().to_vec(),
        positions,
        width,
        values,
    })
}

/// All pooled rows of one hook/pool, in example order.
#[derive(Debug, Clone)]
pub struct PooledMatrix {
    pub example_ids: Vec<u64>,
    pub width: usize,
    /// Row-major, `example_ids.len() * width`.
    pub values: Vec<f32>,
}

/// Reads a pooled folder into one matrix (rows = examples, bounded by the data set's example
/// count, not its token count), sorted by `example_id`.
pub fn read_pooled_matrix(dir: &Path) -> Result<PooledMatrix> {
    let mut rows: Vec<(u64, Vec<f32>)> = Vec::new();
    let mut width = 0;
    read_parts(dir, |batch| {
        width = batch.width;
        for (i, id) in batch.example_ids.iter().enumerate() {
            rows.push((*id, batch.values[i * width..(i + 1) * width].to_vec()));
        }
        Ok(())
    })?;
    rows.sort_by_key(|(id, _)| *id);
    if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(DataError::Store {
            path: dir.to_path_buf(),
            message: format!("example_id {} appears more than once", w[0].0),
        });
    }
    let mut values = Vec::with_capacity(rows.len() * width);
    let mut example_ids = Vec::with_capacity(rows.len());
    for (id, row) in rows {
        example_ids.push(id);
        values.extend_from_slice(&row);
    }
    Ok(PooledMatrix {
        example_ids,
        width,
        values,
    })
}

/// The key-value metadata of a Parquet file.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let file = PartFile::open(path).map_err(DataError::io(path))?;
    let reader = SerializedFileReader::new(file).map_err(DataError::parquet(path))?;
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    Ok(kv
        .into_iter()
        .filter_map(|kv| kv.value.map(|v| (kv.key, v)))
        .collect())
}

/// A part's rows and the range of its `example_id`s, from the footer's chunk statistics alone
/// (no column is read): what a coverage check of a sharded run needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartExtent {
    /// Rows in the file.
    pub rows: u64,
    /// Smallest and largest `example_id`; `None` for an empty file.
    pub ids: Option<(u64, u64)>,
}

/// Reads a part's [`PartExtent`]; a file without `example_id` statistics is an error naming it.
pub fn read_part_extent(path: &Path) -> Result<PartExtent> {
    let file = PartFile::open(path).map_err(DataError::io(path))?;
    let reader = SerializedFileReader::new(file).map_err(DataError::parquet(path))?;
    let meta = reader.metadata();
    let mut ids: Option<(u64, u64)> = None;
    for group in meta.row_groups() {
        if group.num_rows() == 0 {
            continue;
        }
        let stats = group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "example_id")
            .and_then(|c| c.statistics());
        let range = match stats {
            Some(parquet::file::statistics::Statistics::Int64(s)) => s
                .min_opt()
                .zip(s.max_opt())
                .map(|(&lo, &hi)| (lo as u64, hi as u64)),
            _ => None,
        };
        let Some((lo, hi)) = range else {
            return Err(DataError::Run {
                run: path.to_path_buf(),
                message: "no example_id statistics in this part; it was not written by glassbox extract: remove it and re-run the shard that owns it".into(),
            });
        };
        ids = Some(match ids {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
    }
    Ok(PartExtent {
        rows: meta.file_metadata().num_rows() as u64,
        ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ActDtype, ActivationWriter, ShardMeta, StoreKind};

    fn meta(kind: StoreKind, dtype: ActDtype) -> ShardMeta {
        ShardMeta {
            model_id: "m".into(),
            revision: "r".into(),
            hook: crate::HookPoint::ResidPost(0),
            kind,
            pool: None,
            width: 3,
            dtype,
            compression: crate::store::Codec::Zstd,
        }
    }

    #[test]
    fn write_then_read_round_trips_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-00000.parquet");
        let mut w =
            ActivationWriter::create(&path, meta(StoreKind::Activation, ActDtype::F32)).unwrap();
        w.write(&[0, 0], Some(&[0, 1]), &[1., 2., 3., 4., 5., 6.])
            .unwrap();
        w.write(&[1], Some(&[0]), &[7., 8., 9.]).unwrap();
        assert!(!path.exists(), "final name appears only after finish");
        assert_eq!(w.finish().unwrap(), 3);
        let mut seen = Vec::new();
        read_parts(dir.path(), |b| {
            seen.push(b);
            Ok(())
        })
        .unwrap();
        let ids: Vec<u64> = seen.iter().flat_map(|b| b.example_ids.clone()).collect();
        let vals: Vec<f32> = seen.iter().flat_map(|b| b.values.clone()).collect();
        assert_eq!(ids, vec![0, 0, 1]);
        assert_eq!(vals, (1..=9).map(|v| v as f32).collect::<Vec<_>>());
        let kv = read_metadata(&path).unwrap();
        assert_eq!(kv["glassbox.hook"], "blocks.0.hook_resid_post");
        assert_eq!(kv["glassbox.width"], "3");
    }

    #[test]
    fn record_batches_are_sized_by_bytes_not_rows() {
        use arrow_schema::{Field, Schema};
        let schema = |width: i32| {
            let item = Arc::new(Field::new("item", DataType::Float32, true));
            Schema::new(vec![Field::new(
                "act",
                DataType::FixedSizeList(item, width),
                false,
            )])
        };
        use std::sync::Arc;
        // MiniLM's 384 keeps the row cap; Gemma-2-2B's 2,304 gets 16 MB batches; very wide
        // rows keep a floor of 64.
        assert_eq!(batch_rows(&schema(384)), 8192);
        assert_eq!(batch_rows(&schema(2304)), (1 << 22) / 2304);
        assert!(batch_rows(&schema(2304)) * 2304 * 4 <= 16 << 20);
        assert_eq!(batch_rows(&schema(1 << 20)), 64);
        assert_eq!(batch_rows(&Schema::empty()), 8192);
    }

    #[test]
    fn f16_storage_and_pooled_matrix() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ActivationWriter::create(
            &dir.path().join("part-00000.parquet"),
            meta(StoreKind::Pooled, ActDtype::F16),
        )
        .unwrap();
        w.write(&[5, 2], None, &[0.5, 1.0, -2.0, 3.0, 4.0, 0.25])
            .unwrap();
        w.finish().unwrap();
        let m = read_pooled_matrix(dir.path()).unwrap();
        assert_eq!(m.example_ids, vec![2, 5]);
        assert_eq!(m.values, vec![3.0, 4.0, 0.25, 0.5, 1.0, -2.0]);
    }

    #[test]
    fn non_finite_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ActivationWriter::create(
            &dir.path().join("part-00000.parquet"),
            meta(StoreKind::Pooled, ActDtype::F32),
        )
        .unwrap();
        let err = w
            .write(&[9], None, &[0.0, f32::NAN, 1.0])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("example_id 9") && err.contains("unit 1"),
            "{err}"
        );
    }
}
