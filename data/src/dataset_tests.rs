//! Unit tests of `dataset` (kept beside it, in their own file for length).
use super::*;

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn jsonl_keeps_label_types_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "d.jsonl",
        "{\"text\":\"a\",\"topic\":\"x\",\"n\":1,\"split\":\"train\"}\n\n{\"text\":\"b\",\"topic\":\"y\",\"n\":2.5}\n",
    );
    let d = read_dataset(&p).unwrap();
    assert_eq!(d.texts, vec!["a", "b"]);
    assert_eq!(
        d.splits.as_ref().unwrap(),
        &vec!["train".to_string(), String::new()]
    );
    let n = d.column("n").unwrap();
    assert_eq!(n.kind, ColumnKind::Float);
    assert_eq!(n.values, vec![Value::Float(1.0), Value::Float(2.5)]);
    assert_eq!(d.column("topic").unwrap().kind, ColumnKind::Str);
}

#[test]
fn jsonl_row_without_text_names_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "d.jsonl",
        "{\"text\":\"a\"}\n{\"topic\":\"x\"}\n",
    );
    let err = read_dataset(&p).unwrap_err().to_string();
    assert!(err.contains("row 2") && err.contains("`text`"), "{err}");
}

#[test]
fn malformed_json_names_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "d.jsonl", "{\"text\":\"a\"}\n{oops\n");
    let err = read_dataset(&p).unwrap_err().to_string();
    assert!(
        err.contains("row 2") && err.contains("invalid JSON"),
        "{err}"
    );
}

#[test]
fn empty_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "d.jsonl", "\n");
    assert!(matches!(
        read_dataset(&p),
        Err(DataError::EmptyDataset { .. })
    ));
    assert!(matches!(
        read_dataset(&dir.path().join("nope.jsonl")),
        Err(DataError::MissingFile { .. })
    ));
}

#[test]
fn csv_infers_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "d.csv",
        "text,label,score\nhello,1,0.5\nworld,0,\n",
    );
    let d = read_dataset(&p).unwrap();
    assert_eq!(d.column("label").unwrap().kind, ColumnKind::Int);
    assert_eq!(
        d.column("score").unwrap().values,
        vec![Value::Float(0.5), Value::Null]
    );
}

#[test]
fn csv_without_text_column_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "d.csv", "sentence,label\nhello,1\n");
    let err = read_dataset(&p).unwrap_err().to_string();
    assert!(err.contains("`text`"), "{err}");
}

/// .tsv files are tab-separated (a comma inside a field is text); a .csv whose one header field
/// holds another separator gets a hint naming it.
#[test]
fn tsv_reads_tabs_and_a_wrongly_separated_csv_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "d.tsv",
        "text\tlabel\nhello, world\t1\nbye\t0\n",
    );
    let d = read_dataset(&p).unwrap();
    assert_eq!(d.texts, ["hello, world", "bye"]);
    assert_eq!(
        d.column("label").unwrap().values,
        vec![Value::Int(1), Value::Int(0)]
    );
    let p = write(dir.path(), "semi.csv", "text;label\nhello;1\n");
    let err = read_dataset(&p).unwrap_err().to_string();
    assert!(
        err.contains("separated by `;`") && err.contains(".tsv"),
        "{err}"
    );
    let p = write(dir.path(), "tabs.csv", "text\tlabel\nhello\t1\n");
    let err = read_dataset(&p).unwrap_err().to_string();
    assert!(err.contains("separated by tabs"), "{err}");
    // A one-column file without the separators gets no hint.
    let p = write(dir.path(), "one.csv", "sentence\nhello\n");
    let err = read_dataset(&p).unwrap_err().to_string();
    assert!(!err.contains("separated by"), "{err}");
}

/// Categorical columns, as pandas' `category` and polars' `Categorical` write them (Arrow
/// dictionaries): a label read value by value, a null key a null label, an integer dictionary
/// an integer label; a categorical text column is text.
#[test]
fn parquet_categorical_columns_read_as_their_values() {
    use arrow_array::types::{Int32Type, Int8Type};
    use arrow_array::{ArrayRef, DictionaryArray, Int64Array, RecordBatch, StringViewArray};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.parquet");
    let text: DictionaryArray<Int32Type> = vec!["a cat", "a dog", "a cat"].into_iter().collect();
    let topic: DictionaryArray<Int8Type> =
        vec![Some("pets"), None, Some("farm")].into_iter().collect();
    let n = DictionaryArray::<Int32Type>::try_new(
        arrow_array::Int32Array::from(vec![1, 0, 1]),
        Arc::new(Int64Array::from(vec![7, 9])),
    )
    .unwrap();
    let view = StringViewArray::from(vec!["x", "y", "z"]);
    let batch = RecordBatch::try_from_iter([
        ("text", Arc::new(text) as ArrayRef),
        ("topic", Arc::new(topic) as ArrayRef),
        ("n", Arc::new(n) as ArrayRef),
        ("note", Arc::new(view) as ArrayRef),
    ])
    .unwrap();
    let file = std::fs::File::create(&path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let d = read_dataset(&path).unwrap();
    assert_eq!(d.texts, vec!["a cat", "a dog", "a cat"]);
    let topic = d.column("topic").unwrap();
    assert_eq!(topic.kind, ColumnKind::Str);
    assert_eq!(
        topic.values,
        vec![
            Value::Str("pets".into()),
            Value::Null,
            Value::Str("farm".into())
        ]
    );
    let n = d.column("n").unwrap();
    assert_eq!(n.kind, ColumnKind::Int);
    assert_eq!(n.values, vec![Value::Int(9), Value::Int(7), Value::Int(9)]);
    assert_eq!(d.column("note").unwrap().values[2], Value::Str("z".into()));
}

/// A byte-order mark before the first line (Windows tools write one) is not part of row 1,
/// with CRLF line ends too; a CSV's likewise.
#[test]
fn a_byte_order_mark_starts_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bom.jsonl",
        "\u{feff}{\"text\":\"a\",\"topic\":\"x\"}\r\n{\"text\":\"b\",\"topic\":\"y\"}\r\n",
    );
    let d = read_dataset(&p).unwrap();
    assert_eq!(d.texts, vec!["a", "b"]);
    let p = write(
        dir.path(),
        "bom.csv",
        "\u{feff}text,topic\r\na,x\r\nb,y\r\n",
    );
    let d = read_dataset(&p).unwrap();
    assert_eq!(d.texts, vec!["a", "b"]);
    assert!(d.column("topic").is_some());
}
