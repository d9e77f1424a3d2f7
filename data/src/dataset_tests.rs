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
