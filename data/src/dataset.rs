//! Text data sets: JSONL, CSV, TSV or Parquet with a `text` column and any label columns.
//!
//! Label columns keep their type (bool, integer, float, string) so they stay useful in a
//! notebook. A column of lists (JSONL arrays, Parquet `list` columns) holds one label per
//! whitespace-separated word of the text — token-level labels — stored as `list<string>`. A `split` column, when present, is carried into `examples.parquet` as is.

use crate::arrow_values::arrow_values;
use crate::{hash, DataError, Result};
use arrow_array::RecordBatch;
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};

/// One cell of a label column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Per-word labels (token-level probing); elements are class names, null for unlabelled.
    List(Vec<Option<String>>),
}

impl Value {
    /// The value as a class name for classification probes; `None` for nulls.
    pub fn class_name(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            Value::List(items) => Some(format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| i.as_deref().unwrap_or("null"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// The storage type chosen for a label column: the narrowest that holds every value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Bool,
    Int,
    Float,
    Str,
    /// Lists of class names, one per word.
    List,
}

/// A named label column.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
    pub values: Vec<Value>,
}

/// A text data set read into memory (texts and labels only; activations never are).
#[derive(Debug, Clone)]
pub struct TextDataset {
    pub source: PathBuf,
    pub sha256: String,
    pub texts: Vec<String>,
    /// The `split` column, if the file had one.
    pub splits: Option<Vec<String>>,
    pub columns: Vec<Column>,
}

impl TextDataset {
    pub fn len(&self) -> usize {
        self.texts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Reads a data set, choosing the reader from the file extension.
pub fn read_dataset(path: &Path) -> Result<TextDataset> {
    read_dataset_keyed(path, "text")
}

/// Reads a data set whose per-row string is the column `key` (`text` for text data,
/// `image_path` for image manifests); it lands in [`TextDataset::texts`].
pub fn read_dataset_keyed(path: &Path, key: &str) -> Result<TextDataset> {
    if !path.exists() {
        return Err(DataError::MissingFile {
            path: path.to_path_buf(),
            key: key.to_owned(),
        });
    }
    if path.is_dir() {
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "is a folder; a text data set is one JSONL, CSV, TSV or Parquet file (extension .jsonl, .ndjson, .csv, .tsv or .parquet) with a `{key}` column (a folder of class sub-folders is an image data set, for vision models)"
            ),
        });
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let rows = match ext.as_str() {
        "jsonl" | "ndjson" => read_jsonl(path, key)?,
        "csv" => read_csv(path, key, b',')?,
        "tsv" => read_csv(path, key, b'\t')?,
        "parquet" => read_parquet(path, key)?,
        _ => {
            return Err(DataError::UnsupportedFormat {
                path: path.to_path_buf(),
            })
        }
    };
    let dataset = assemble(path, rows)?;
    if dataset.is_empty() {
        return Err(DataError::EmptyDataset {
            path: path.to_path_buf(),
            column: key.to_owned(),
        });
    }
    Ok(dataset)
}

/// A row as read: its text and its other fields in file order.
struct RawRow {
    text: String,
    fields: Vec<(String, Value)>,
}

use crate::json_fields::JsonFields;

/// The UTF-8 encoding of U+FEFF, which some editors write at the start of a text file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

fn read_jsonl(path: &Path, key_column: &str) -> Result<Vec<RawRow>> {
    let content = std::fs::read(path).map_err(DataError::io(path))?;
    // A UTF-8 byte-order mark, as Windows tools (PowerShell, Notepad) write before the text.
    let content = content.strip_prefix(UTF8_BOM).unwrap_or(&content);
    let mut rows = Vec::new();
    for (i, line) in content.split(|&b| b == b'\n').enumerate() {
        let row = i + 1;
        let malformed = |message: String| DataError::MalformedRow {
            path: path.to_path_buf(),
            row,
            message,
        };
        let line = std::str::from_utf8(line).map_err(|e| {
            malformed(format!(
                "not valid UTF-8 (byte {} of the line); save the file as UTF-8",
                e.valid_up_to() + 1
            ))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let JsonFields(mut object) = serde_json::from_str(line).map_err(|e| {
            malformed(if e.classify() == serde_json::error::Category::Data {
                "expected a JSON object per line".into()
            } else {
                format!("invalid JSON: {e}")
            })
        })?;
        let mut seen = std::collections::HashSet::new();
        if let Some((dup, _)) = object.iter().find(|(k, _)| !seen.insert(k.as_str())) {
            return Err(malformed(format!(
                "field `{dup}` appears twice; which value is meant is ambiguous, so keep one"
            )));
        }
        // Columns in key order, as a JSON map would give them.
        object.sort_by(|a, b| a.0.cmp(&b.0));
        let mut text = None;
        let mut fields = Vec::new();
        for (key, value) in object {
            if key == key_column {
                match value {
                    serde_json::Value::String(s) => text = Some(s),
                    serde_json::Value::Null => {}
                    other => {
                        return Err(malformed(format!(
                            "`{key_column}` must be a string, found {}",
                            json_type(&other)
                        )))
                    }
                }
                continue;
            }
            let value = match value {
                serde_json::Value::Null => Value::Null,
                serde_json::Value::Bool(b) => Value::Bool(b),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Value::Int(i),
                    None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                },
                serde_json::Value::String(s) => Value::Str(s),
                serde_json::Value::Array(items) => Value::List(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(j, item)| match item {
                            serde_json::Value::Null => Ok(None),
                            serde_json::Value::String(s) => Ok(Some(s)),
                            serde_json::Value::Bool(b) => Ok(Some(b.to_string())),
                            serde_json::Value::Number(n) => Ok(Some(n.to_string())),
                            other => Err(malformed(format!(
                                "field `{key}` item {j} is {}; per-word label lists hold scalars",
                                json_type(&other)
                            ))),
                        })
                        .collect::<Result<_>>()?,
                ),
                other => {
                    return Err(malformed(format!(
                        "field `{key}` is {}; label fields must be scalars or lists of scalars",
                        json_type(&other)
                    )))
                }
            };
            fields.push((key, value));
        }
        let text = text.ok_or_else(|| DataError::MissingText {
            path: path.to_path_buf(),
            row,
            column: key_column.to_owned(),
        })?;
        rows.push(RawRow { text, fields });
    }
    Ok(rows)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Reads a delimited text file: `,` for .csv, tab for .tsv.
fn read_csv(path: &Path, key: &str, delimiter: u8) -> Result<Vec<RawRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_path(path)
        .map_err(|e| DataError::MalformedRow {
            path: path.to_path_buf(),
            row: 0,
            message: e.to_string(),
        })?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| DataError::MalformedRow {
            path: path.to_path_buf(),
            row: 1,
            message: format!("cannot read the header: {e}"),
        })?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = headers.iter().find(|h| !seen.insert(h.as_str())) {
        return Err(DataError::BadColumn {
            path: path.to_path_buf(),
            column: dup.clone(),
            message: "appears twice in the header; which column is meant is ambiguous, so rename or drop one".into(),
        });
    }
    let Some(text_index) = headers.iter().position(|h| h == key) else {
        return Err(DataError::BadColumn {
            path: path.to_path_buf(),
            column: key.into(),
            message: format!(
                "no `{key}` column; the header has {headers:?}{}",
                other_separator(&headers, delimiter)
            ),
        });
    };
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        // Row numbers are 1-based file lines: the header is line 1.
        let row = i + 2;
        let record = record.map_err(|e| DataError::MalformedRow {
            path: path.to_path_buf(),
            row,
            message: e.to_string(),
        })?;
        let text = record.get(text_index).unwrap_or("");
        if text.is_empty() {
            return Err(DataError::MissingText {
                path: path.to_path_buf(),
                row,
                column: key.to_owned(),
            });
        }
        let fields = headers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != text_index)
            .map(|(j, name)| (name.clone(), parse_csv_cell(record.get(j).unwrap_or(""))))
            .collect();
        rows.push(RawRow {
            text: text.to_owned(),
            fields,
        });
    }
    Ok(rows)
}

/// A hint when a one-field header holds another separator (`text;label` read as one column):
/// the file is likely separated by it.
fn other_separator(headers: &[String], delimiter: u8) -> String {
    let [only] = headers else {
        return String::new();
    };
    [(';', "`;`"), ('\t', "tabs"), (',', "commas"), ('|', "`|`")]
        .iter()
        .find(|(c, _)| *c as u8 != delimiter && only.contains(*c))
        .map(|(_, name)| {
            format!(
                " — one field: the file looks separated by {name}; glassbox reads .csv separated by commas and .tsv by tabs, so save it as one of those"
            )
        })
        .unwrap_or_default()
}

fn parse_csv_cell(cell: &str) -> Value {
    if cell.is_empty() {
        Value::Null
    } else if let Ok(i) = cell.parse::<i64>() {
        Value::Int(i)
    } else if let Ok(f) = cell.parse::<f64>() {
        Value::Float(f)
    } else if cell == "true" || cell == "false" {
        Value::Bool(cell == "true")
    } else {
        Value::Str(cell.to_owned())
    }
}

fn read_parquet(path: &Path, key: &str) -> Result<Vec<RawRow>> {
    let file = std::fs::File::open(path).map_err(DataError::io(path))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(DataError::parquet(path))?;
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = builder
        .schema()
        .fields()
        .iter()
        .find(|f| !seen.insert(f.name().clone()))
    {
        return Err(DataError::BadColumn {
            path: path.to_path_buf(),
            column: dup.name().clone(),
            message: "appears twice in the schema; which column is meant is ambiguous, so rename or drop one".into(),
        });
    }
    let reader = builder.build().map_err(DataError::parquet(path))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(DataError::arrow(path))?;
        append_batch_rows(path, &batch, key, &mut rows)?;
    }
    Ok(rows)
}

fn append_batch_rows(
    path: &Path,
    batch: &RecordBatch,
    key: &str,
    rows: &mut Vec<RawRow>,
) -> Result<()> {
    let schema = batch.schema();
    let text_index = schema.index_of(key).map_err(|_| DataError::BadColumn {
        path: path.to_path_buf(),
        column: key.into(),
        message: format!("no `{key}` column in the Parquet schema"),
    })?;
    let is_string =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let text_type = schema.field(text_index).data_type();
    let categorical_text = matches!(text_type, DataType::Dictionary(_, v) if is_string(v));
    if !is_string(text_type) && !categorical_text {
        return Err(DataError::BadColumn {
            path: path.to_path_buf(),
            column: key.into(),
            message: format!(
                "must be a string column, found {}",
                schema.field(text_index).data_type()
            ),
        });
    }
    // Column-major values, consumed row by row.
    let mut columns: Vec<std::vec::IntoIter<Value>> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(array, field)| arrow_values(path, field.name(), array.as_ref()).map(Vec::into_iter))
        .collect::<Result<_>>()?;
    let first_row = rows.len();
    for r in 0..batch.num_rows() {
        let mut text = None;
        let mut fields = Vec::with_capacity(columns.len().saturating_sub(1));
        for (j, (column, field)) in columns.iter_mut().zip(schema.fields()).enumerate() {
            let value = column.next().unwrap_or(Value::Null);
            if j == text_index {
                text = match value {
                    Value::Str(s) => Some(s),
                    _ => None,
                };
            } else {
                fields.push((field.name().clone(), value));
            }
        }
        let text = text.ok_or_else(|| DataError::MissingText {
            path: path.to_path_buf(),
            row: first_row + r + 1,
            column: key.to_owned(),
        })?;
        rows.push(RawRow { text, fields });
    }
    Ok(())
}

/// Turns rows into typed columns; a field missing from a row is null there.
fn assemble(path: &Path, rows: Vec<RawRow>) -> Result<TextDataset> {
    let mut names: Vec<String> = Vec::new();
    for row in &rows {
        for (name, _) in &row.fields {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let mut texts = Vec::with_capacity(rows.len());
    let mut raw_columns: Vec<Vec<Value>> = vec![Vec::with_capacity(rows.len()); names.len()];
    for row in rows {
        texts.push(row.text);
        let mut fields = row.fields;
        for (j, name) in names.iter().enumerate() {
            let value = fields
                .iter()
                .position(|(n, _)| n == name)
                .map(|p| fields.swap_remove(p).1)
                .unwrap_or(Value::Null);
            raw_columns[j].push(value);
        }
    }
    let mut splits = None;
    let mut columns = Vec::new();
    for (name, values) in names.into_iter().zip(raw_columns) {
        if name == "split" {
            splits = Some(
                values
                    .iter()
                    .map(|v| v.class_name().unwrap_or_default())
                    .collect(),
            );
            continue;
        }
        if matches!(name.as_str(), "example_id" | "n_tokens") {
            return Err(DataError::BadColumn {
                path: path.to_path_buf(),
                column: name,
                message: "this name is reserved for glassbox's own columns; rename it".into(),
            });
        }
        columns.push(unify(name, values));
    }
    Ok(TextDataset {
        source: path.to_path_buf(),
        sha256: hash::sha256_file(path)?,
        texts,
        splits,
        columns,
    })
}

/// Chooses the narrowest kind for a column; mixed kinds fall back to strings.
pub(crate) fn unify(name: String, mut values: Vec<Value>) -> Column {
    let mut kinds = values.iter().filter_map(|v| match v {
        Value::Null => None,
        Value::Bool(_) => Some(ColumnKind::Bool),
        Value::Int(_) => Some(ColumnKind::Int),
        Value::Float(_) => Some(ColumnKind::Float),
        Value::Str(_) => Some(ColumnKind::Str),
        Value::List(_) => Some(ColumnKind::List),
    });
    let first = kinds.next().unwrap_or(ColumnKind::Str);
    let kind = kinds.fold(first, |acc, k| match (acc, k) {
        (a, b) if a == b => a,
        (ColumnKind::Int, ColumnKind::Float) | (ColumnKind::Float, ColumnKind::Int) => {
            ColumnKind::Float
        }
        (ColumnKind::List, _) | (_, ColumnKind::List) => ColumnKind::List,
        _ => ColumnKind::Str,
    });
    for v in values.iter_mut() {
        *v = match (kind, std::mem::replace(v, Value::Null)) {
            (_, Value::Null) => Value::Null,
            (ColumnKind::Float, Value::Int(i)) => Value::Float(i as f64),
            (ColumnKind::Str, other) => Value::Str(other.class_name().unwrap_or_default()),
            (ColumnKind::List, Value::List(items)) => Value::List(items),
            // A scalar in a list column is a one-word label list.
            (ColumnKind::List, other) => Value::List(vec![other.class_name()]),
            (_, other) => other,
        };
    }
    Column { name, kind, values }
}

#[cfg(test)]
#[path = "dataset_tests.rs"]
mod tests;
