//! Concept sets for TCAV: a JSONL/CSV/Parquet data set (its `text` column) or a folder of
//! `.txt` files (one example each), and seeded random counterpart sets drawn from a corpus.

use crate::rng::SeededRng;
use crate::{hash, read_dataset, DataError, Result};
use std::path::{Path, PathBuf};

/// The built-in corpus random counterpart sets are drawn from by default: the texts of
/// `data/sets/default.jsonl`, compiled in so it is there wherever glassbox runs.
pub fn builtin_corpus() -> ConceptSet {
    const DEFAULT: &str = include_str!("../sets/default.jsonl");
    let texts = DEFAULT
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect();
    ConceptSet {
        name: "builtin".into(),
        source: PathBuf::from("<built-in corpus: data/sets/default.jsonl>"),
        sha256: hash::sha256_bytes(DEFAULT.as_bytes()),
        texts,
    }
}

/// A named set of example texts.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptSet {
    /// The file stem or folder name (`negation` for `data/concepts/negation.jsonl`).
    pub name: String,
    pub source: PathBuf,
    /// SHA-256 of the file, or of the sorted file names and contents of a folder.
    pub sha256: String,
    pub texts: Vec<String>,
}

/// Reads a concept from a data file or a folder of `.txt` files; `min_size` examples at least.
pub fn read_concept(path: &Path, min_size: usize) -> Result<ConceptSet> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (texts, sha256) = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(DataError::io(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        let mut texts = Vec::new();
        let mut digest_input = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(DataError::io(file))?;
            digest_input.extend_from_slice(file.file_name().unwrap_or_default().as_encoded_bytes());
            digest_input.extend_from_slice(text.as_bytes());
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text).trim();
            if !text.is_empty() {
                texts.push(text.to_owned());
            }
        }
        (texts, hash::sha256_bytes(&digest_input))
    } else {
        let data = read_dataset(path)?;
        (data.texts, data.sha256)
    };
    if texts.len() < min_size.max(1) {
        return Err(DataError::BadColumn {
            path: path.to_path_buf(),
            column: "text".into(),
            message: if texts.is_empty() {
                "the concept set is empty; give it example texts (one per JSONL row or .txt file)"
                    .into()
            } else {
                format!(
                    "the concept set has {} example(s), fewer than the minimum of {min_size}; add examples or lower the minimum",
                    texts.len()
                )
            },
        });
    }
    Ok(ConceptSet {
        name,
        source: path.to_path_buf(),
        sha256,
        texts,
    })
}

/// The corpus without the texts any concept set holds, and how many were left out: a text in
/// both a concept set and a random set would be a positive and a negative example of the same
/// CAV at once, pulling its accuracy towards chance.
pub fn corpus_without(corpus: &ConceptSet, concepts: &[&ConceptSet]) -> (ConceptSet, usize) {
    let taken: std::collections::HashSet<&str> = concepts
        .iter()
        .flat_map(|c| c.texts.iter().map(String::as_str))
        .collect();
    let texts: Vec<String> = corpus
        .texts
        .iter()
        .filter(|t| !taken.contains(t.as_str()))
        .cloned()
        .collect();
    let removed = corpus.texts.len() - texts.len();
    (
        ConceptSet {
            texts,
            ..corpus.clone()
        },
        removed,
    )
}

/// [`corpus_without`] the concept sets' texts, with a note saying how many it lost.
pub fn random_corpus(
    corpus: &ConceptSet,
    concepts: &[&ConceptSet],
    progress: &dyn crate::Progress,
) -> ConceptSet {
    let (left, removed) = corpus_without(corpus, concepts);
    if removed > 0 {
        progress.note(&format!(
            "tcav: left {removed} text(s) of the concept sets out of the random corpus ({} → {} texts), so no text is both a concept and a random example",
            corpus.texts.len(),
            left.texts.len()
        ));
    }
    left
}

/// `runs` random sets of `size` texts each, drawn without replacement within a set from
/// `corpus` (seeded: same seed, same sets), named `random-0`, `random-1`, ….
pub fn random_sets(
    corpus: &ConceptSet,
    runs: usize,
    size: usize,
    seed: u64,
) -> Result<Vec<ConceptSet>> {
    if corpus.texts.len() < size {
        return Err(DataError::BadColumn {
            path: corpus.source.clone(),
            column: "text".into(),
            message: format!(
                "the random corpus has {} texts; random sets of {size} need at least that many",
                corpus.texts.len()
            ),
        });
    }
    let mut rng = SeededRng::new(seed ^ 0x7261_6e64_6f6d);
    Ok((0..runs)
        .map(|r| {
            let mut order: Vec<usize> = (0..corpus.texts.len()).collect();
            rng.shuffle(&mut order);
            ConceptSet {
                name: format!("random-{r}"),
                source: corpus.source.clone(),
                sha256: corpus.sha256.clone(),
                texts: order[..size]
                    .iter()
                    .map(|&i| corpus.texts[i].clone())
                    .collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_folders_and_minimums() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("negation.jsonl");
        std::fs::write(
            &file,
            "{\"text\":\"not at all\"}\n{\"text\":\"never again\"}\n",
        )
        .unwrap();
        let c = read_concept(&file, 2).unwrap();
        assert_eq!((c.name.as_str(), c.texts.len()), ("negation", 2));
        let err = read_concept(&file, 3).unwrap_err().to_string();
        assert!(
            err.contains("negation.jsonl") && err.contains("minimum of 3"),
            "{err}"
        );

        let folder = dir.path().join("food");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("a.txt"), "bread\n").unwrap();
        // A byte-order mark (Notepad's UTF-8) is not part of the text.
        std::fs::write(folder.join("b.txt"), "\u{feff}cheese").unwrap();
        std::fs::write(folder.join("notes.md"), "ignored").unwrap();
        let c = read_concept(&folder, 1).unwrap();
        assert_eq!(c.name, "food");
        assert_eq!(c.texts, vec!["bread", "cheese"]);

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = read_concept(&empty, 1).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn builtin_corpus_is_the_default_set() {
        assert_eq!(builtin_corpus().texts.len(), 300);
    }

    #[test]
    fn concept_texts_are_left_out_of_the_corpus() {
        let set = |name: &str, texts: &[&str]| ConceptSet {
            name: name.into(),
            source: name.into(),
            sha256: String::new(),
            texts: texts.iter().map(|t| t.to_string()).collect(),
        };
        let corpus = set("corpus", &["a", "b", "c", "d", "b"]);
        let (left, removed) = corpus_without(&corpus, &[&set("x", &["b"]), &set("y", &["d", "z"])]);
        assert_eq!(left.texts, vec!["a", "c"]);
        assert_eq!(removed, 3);
        assert_eq!(left.name, "corpus");
    }

    #[test]
    fn random_sets_are_seeded() {
        let corpus = ConceptSet {
            name: "corpus".into(),
            source: "c.jsonl".into(),
            sha256: String::new(),
            texts: (0..50).map(|i| format!("t{i}")).collect(),
        };
        let a = random_sets(&corpus, 3, 10, 1).unwrap();
        assert_eq!(a, random_sets(&corpus, 3, 10, 1).unwrap());
        assert_ne!(a[0].texts, a[1].texts);
        assert!(random_sets(&corpus, 1, 51, 1).is_err());
    }
}
