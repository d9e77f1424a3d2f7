//! Prompt pairs for activation patching: a `clean` and a `corrupted` prompt (or image path) per
//! row, and for causal LMs the `answer` and `wrong` next tokens whose logit difference is the
//! metric, or for classifiers and probe targets a `target` (`probe:<label>=<class>[@<hook>]`,
//! `class:<label>`).
//! JSONL, CSV, TSV or Parquet, read through the data-set readers (so their checks — duplicate
//! columns, invalid UTF-8, empty files — apply too).

use crate::dataset::{read_dataset_keyed, Value};
use crate::{DataError, Result};
use std::path::{Path, PathBuf};

/// The rows of a pairs file.
#[derive(Debug, Clone)]
pub struct PromptPairs {
    /// The file read.
    pub source: PathBuf,
    /// SHA-256 of its bytes (for fingerprints).
    pub sha256: String,
    /// The prompt whose behaviour is restored (denoising) or destroyed (noising).
    pub clean: Vec<String>,
    /// The same prompt with the information under test changed.
    pub corrupted: Vec<String>,
    /// The correct next token on the clean prompt (a leading space matters); empty when the
    /// file has targets instead.
    pub answer: Vec<String>,
    /// The competing next token (the clean answer's rival on the corrupted prompt); empty when
    /// the file has targets instead.
    pub wrong: Vec<String>,
    /// Each row's target, when the file has a `target` column.
    pub target: Option<Vec<String>>,
}

impl PromptPairs {
    /// Rows in the file.
    pub fn len(&self) -> usize {
        self.clean.len()
    }
    /// Whether the file has no rows (never true for a file that was read: that is an error).
    pub fn is_empty(&self) -> bool {
        self.clean.is_empty()
    }
}

/// Reads a pairs file; every row needs non-null strings `clean`, `corrupted` and either
/// `target`, or `answer` and `wrong`. Errors name the file, the row (1-based, as editors count)
/// and the column.
pub fn read_pairs(path: &Path) -> Result<PromptPairs> {
    if !path.exists() {
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            message: "pairs file does not exist; pass a JSONL, CSV, TSV or Parquet file with the columns clean, corrupted, and answer and wrong or target".into(),
        });
    }
    let data = read_dataset_keyed(path, "clean")?;
    let column = |name: &str| -> Result<Vec<String>> {
        let col = data.column(name).ok_or_else(|| DataError::BadColumn {
            path: path.to_path_buf(),
            column: name.to_owned(),
            message:
                "missing; a pairs file needs the columns clean, corrupted, and answer and wrong \
                      (causal LMs: one token each, a leading space included where the tokenizer \
                      marks word starts) or target (probe:<label>=<class> or class:<label>)"
                    .into(),
        })?;
        col.values
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Str(s) => Ok(s.clone()),
                other => Err(DataError::MalformedRow {
                    path: path.to_path_buf(),
                    row: i + 1,
                    message: format!(
                        "column `{name}` holds {other:?}; it needs a string (quote numbers, \
                         e.g. \" 42\", so a leading space survives)"
                    ),
                }),
            })
            .collect()
    };
    // A row with a target is a target pair, one without an answer/wrong pair; a file holds one
    // kind (a `target` column left empty in every row is an answer/wrong file).
    let has_target: Vec<bool> = match data.column("target") {
        Some(col) => col
            .values
            .iter()
            .map(|v| !matches!(v, Value::Null))
            .collect(),
        None => vec![false; data.texts.len()],
    };
    let targets = has_target.iter().any(|&t| t);
    if targets {
        if let (Some(without), Some(with)) = (
            has_target.iter().position(|&t| !t),
            has_target.iter().position(|&t| t),
        ) {
            return Err(DataError::MalformedRow {
                path: path.to_path_buf(),
                row: without + 1,
                message: format!(
                    "no `target`, while row {} has one; a pairs file holds one kind of pair — \
                     `answer`/`wrong` (a causal LM's next tokens) or `target` \
                     (probe:<label>=<class>, class:<label>) — so put each kind in its own file",
                    with + 1
                ),
            });
        }
    }
    Ok(PromptPairs {
        source: path.to_path_buf(),
        sha256: data.sha256.clone(),
        corrupted: column("corrupted")?,
        answer: if targets {
            Vec::new()
        } else {
            column("answer")?
        },
        wrong: if targets {
            Vec::new()
        } else {
            column("wrong")?
        },
        target: if targets {
            Some(column("target")?)
        } else {
            None
        },
        clean: data.texts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rows_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("pairs.jsonl");
        std::fs::write(
            &good,
            "{\"clean\": \"a b\", \"corrupted\": \"c b\", \"answer\": \" x\", \"wrong\": \" y\"}\n",
        )
        .unwrap();
        let pairs = read_pairs(&good).unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs.answer[0], " x", "leading spaces are kept");

        let missing = dir.path().join("missing.jsonl");
        std::fs::write(
            &missing,
            "{\"clean\": \"a\", \"corrupted\": \"b\", \"answer\": \" x\"}\n",
        )
        .unwrap();
        let e = read_pairs(&missing).unwrap_err().to_string();
        assert!(e.contains("`wrong`") && e.contains("missing"), "{e}");

        let typed = dir.path().join("typed.jsonl");
        std::fs::write(
            &typed,
            "{\"clean\": \"a\", \"corrupted\": \"b\", \"answer\": 4, \"wrong\": \" y\"}\n",
        )
        .unwrap();
        let e = read_pairs(&typed).unwrap_err().to_string();
        assert!(e.contains("row 1") && e.contains("`answer`"), "{e}");
        // No such file: said as a pairs file, with the columns one needs.
        let e = read_pairs(&dir.path().join("none.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("none.jsonl")
                && e.contains("pairs file does not exist")
                && e.contains("corrupted"),
            "{e}"
        );
    }

    #[test]
    fn one_kind_of_pair_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let mixed = dir.path().join("mixed.jsonl");
        std::fs::write(
            &mixed,
            "{\"clean\": \"a\", \"corrupted\": \"b\", \"answer\": \" x\", \"wrong\": \" y\"}\n\
             {\"clean\": \"a\", \"corrupted\": \"b\", \"target\": \"probe:t=c\"}\n",
        )
        .unwrap();
        let e = read_pairs(&mixed).unwrap_err().to_string();
        assert!(
            e.contains("row 1") && e.contains("row 2 has one") && e.contains("one kind"),
            "{e}"
        );
        // Targets in every row: answer/wrong columns, even partly empty, are not read.
        let targets = dir.path().join("targets.jsonl");
        std::fs::write(
            &targets,
            "{\"clean\": \"a\", \"corrupted\": \"b\", \"target\": \"class:x\", \"answer\": null}\n",
        )
        .unwrap();
        let pairs = read_pairs(&targets).unwrap();
        assert_eq!(pairs.target, Some(vec!["class:x".to_owned()]));
        assert!(pairs.answer.is_empty() && pairs.wrong.is_empty());
        // An empty target column: answer/wrong pairs.
        let empty = dir.path().join("empty.csv");
        std::fs::write(&empty, "clean,corrupted,answer,wrong,target\na,b, x, y,\n").unwrap();
        let pairs = read_pairs(&empty).unwrap();
        assert!(pairs.target.is_none());
        assert_eq!(pairs.answer, [" x"]);
    }
}
