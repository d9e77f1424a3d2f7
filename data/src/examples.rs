//! `examples.parquet`: one row per example — `example_id`, `split`, `text`, the label columns
//! (typed as in the source file) and `n_tokens` (tokens kept after truncation).

use crate::arrow_values::arrow_values;
use crate::dataset::unify;
use crate::{table, Column, ColumnKind, DataError, Result, RunDir, TextDataset, Value};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use std::sync::Arc;

/// Writes `examples.parquet` atomically. `n_tokens[i]` belongs to example `i`.
pub fn write_examples(run: &RunDir, data: &TextDataset, n_tokens: &[u32]) -> Result<()> {
    let path = run.examples();
    let n = data.len();
    let mut fields = vec![
        Field::new("example_id", DataType::UInt64, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(0..n as u64)),
        Arc::new(StringArray::from_iter_values((0..n).map(|i| {
            data.splits
                .as_ref()
                .map(|s| s[i].as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or("all")
        }))),
        Arc::new(StringArray::from_iter_values(data.texts.iter())),
    ];
    for column in &data.columns {
        let (dtype, array) = label_array(column);
        fields.push(Field::new(&column.name, dtype, true));
        columns.push(array);
    }
    fields.push(Field::new("n_tokens", DataType::UInt32, false));
    columns.push(Arc::new(UInt32Array::from(n_tokens.to_vec())));
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema, columns).map_err(DataError::arrow(&path))?;
    table::write_table(&path, &batch)
}

fn label_array(column: &Column) -> (DataType, ArrayRef) {
    let v = &column.values;
    match column.kind {
        ColumnKind::Bool => (
            DataType::Boolean,
            Arc::new(BooleanArray::from_iter(v.iter().map(|x| match x {
                Value::Bool(b) => Some(*b),
                _ => None,
            }))),
        ),
        ColumnKind::Int => (
            DataType::Int64,
            Arc::new(Int64Array::from_iter(v.iter().map(|x| match x {
                Value::Int(i) => Some(*i),
                _ => None,
            }))),
        ),
        ColumnKind::Float => (
            DataType::Float64,
            Arc::new(Float64Array::from_iter(v.iter().map(|x| match x {
                Value::Float(f) => Some(*f),
                _ => None,
            }))),
        ),
        ColumnKind::List => {
            let mut builder =
                arrow_array::builder::ListBuilder::new(arrow_array::builder::StringBuilder::new());
            for x in v {
                match x {
                    Value::List(items) => {
                        for item in items {
                            builder.values().append_option(item.as_deref());
                        }
                        builder.append(true);
                    }
                    _ => builder.append(false),
                }
            }
            let array = builder.finish();
            (
                arrow_array::Array::data_type(&array).clone(),
                Arc::new(array),
            )
        }
        ColumnKind::Str => (
            DataType::Utf8,
            Arc::new(StringArray::from_iter(v.iter().map(|x| match x {
                Value::Str(s) => Some(s.as_str()),
                _ => None,
            }))),
        ),
    }
}

/// `examples.parquet` read back.
#[derive(Debug, Clone)]
pub struct Examples {
    pub example_ids: Vec<u64>,
    /// The data set's `split` column (`train`, `test`, …), `all` where it had none.
    pub splits: Vec<String>,
    pub texts: Vec<String>,
    pub n_tokens: Vec<u32>,
    /// Label columns (everything except the glassbox columns).
    pub columns: Vec<Column>,
}

impl Examples {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
    pub fn label_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }
    /// Each example's `split` value, by `example_id`.
    pub fn splits_by_id(&self) -> std::collections::HashMap<u64, &str> {
        self.example_ids
            .iter()
            .zip(&self.splits)
            .map(|(&id, split)| (id, split.as_str()))
            .collect()
    }
}

/// Reads `examples.parquet`.
pub fn read_examples(run: &RunDir) -> Result<Examples> {
    let path = run.examples();
    let mut names: Vec<String> = Vec::new();
    let mut cols: Vec<Vec<Value>> = Vec::new();
    for batch in table::read_table(&path)? {
        if names.is_empty() {
            names = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            cols = vec![Vec::new(); names.len()];
        }
        for (j, array) in batch.columns().iter().enumerate() {
            cols[j].extend(arrow_values(&path, &names[j], array.as_ref())?);
        }
    }
    let take = |name: &str| -> Result<Vec<Value>> {
        let j = names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| DataError::BadColumn {
                path: path.clone(),
                column: name.to_owned(),
                message: "missing from examples.parquet".into(),
            })?;
        Ok(cols[j].clone())
    };
    let example_ids = take("example_id")?
        .into_iter()
        .map(|v| match v {
            Value::Int(i) => i as u64,
            _ => 0,
        })
        .collect();
    let texts = take("text")?
        .into_iter()
        .map(|v| v.class_name().unwrap_or_default())
        .collect();
    let splits = take("split")?
        .into_iter()
        .map(|v| v.class_name().unwrap_or_else(|| "all".into()))
        .collect();
    let n_tokens = take("n_tokens")?
        .into_iter()
        .map(|v| match v {
            Value::Int(i) => i as u32,
            _ => 0,
        })
        .collect();
    let columns = names
        .iter()
        .zip(cols)
        .filter(|(n, _)| !matches!(n.as_str(), "example_id" | "split" | "text" | "n_tokens"))
        .map(|(n, values)| unify(n.clone(), values))
        .collect();
    Ok(Examples {
        example_ids,
        splits,
        texts,
        n_tokens,
        columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_types() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("d.jsonl");
        std::fs::write(
            &src,
            "{\"text\":\"a\",\"t\":\"x\",\"k\":3}\n{\"text\":\"b\",\"t\":\"y\"}\n",
        )
        .unwrap();
        let data = crate::read_dataset(&src).unwrap();
        let run = RunDir::new(dir.path().join("run"));
        write_examples(&run, &data, &[3, 4]).unwrap();
        let back = read_examples(&run).unwrap();
        assert_eq!(back.example_ids, vec![0, 1]);
        assert_eq!(back.texts, vec!["a", "b"]);
        assert_eq!(back.splits, vec!["all", "all"]);
        assert_eq!(back.n_tokens, vec![3, 4]);
        assert_eq!(
            back.column("k").unwrap().values,
            vec![Value::Int(3), Value::Null]
        );
        // JSONL fields come back in key order (serde_json maps are sorted).
        assert_eq!(back.label_names(), vec!["k", "t"]);
    }

    #[test]
    fn word_label_lists_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("d.jsonl");
        std::fs::write(
            &src,
            "{\"text\":\"a b\",\"pos\":[\"DET\",null]}\n{\"text\":\"c\"}\n",
        )
        .unwrap();
        let data = crate::read_dataset(&src).unwrap();
        let run = RunDir::new(dir.path().join("run"));
        write_examples(&run, &data, &[4, 3]).unwrap();
        let back = read_examples(&run).unwrap();
        let pos = back.column("pos").unwrap();
        assert_eq!(pos.kind, ColumnKind::List);
        assert_eq!(
            pos.values,
            vec![Value::List(vec![Some("DET".into()), None]), Value::Null]
        );
    }
}
