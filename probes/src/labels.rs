//! What a probe predicts: a sequence-level label column, or token-level labels from a column of
//! per-word lists or from a built-in labeler.
//!
//! Token-level labels are given per *word* — a whitespace-separated piece of the text — and
//! every token of a word (a sub-word token such as `##ing`, or a punctuation token split off
//! it) inherits its word's label. Special tokens (`[CLS]`, `[SEP]`, …) have no word and no
//! label; neither do words whose label is null.

use crate::{ProbeError, Result};
use glassbox_data::examples::Examples;
use glassbox_data::tokens::Tokens;
use glassbox_data::Value;
use std::collections::HashMap;

/// The shipped word-class lexicon (`data/lexicon/word_class.tsv`).
const WORD_CLASS_LEXICON: &str = include_str!("../../data/lexicon/word_class.tsv");

/// Built-in token labelers, named with a leading `@` in `token_labels`.
pub const BUILTIN_LABELERS: [&str; 4] =
    ["@word_class", "@is_number", "@is_capitalised", "@position"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Sequence,
    Token,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Sequence => "sequence",
            Level::Token => "token",
        }
    }
}

/// Classes (classification) or numbers (regression).
#[derive(Debug, Clone)]
pub enum Target {
    Classes {
        classes: Vec<usize>,
        names: Vec<String>,
    },
    Values(Vec<f64>),
}

/// A label resolved to rows: `items[i]` is an example row (sequence level) or a token row
/// (token level) and `types[i]` its type for the control task (the lower-cased word, or the
/// example's text), from the text `texts[i]` (its `example_id`).
#[derive(Debug, Clone)]
pub struct LabelSet {
    pub name: String,
    pub level: Level,
    pub items: Vec<usize>,
    pub types: Vec<String>,
    pub texts: Vec<u64>,
    pub target: Target,
}

impl LabelSet {
    pub fn n_classes(&self) -> usize {
        match &self.target {
            Target::Classes { names, .. } => names.len(),
            Target::Values(_) => 0,
        }
    }
}

/// A sequence-level label from a column of `examples.parquet`: strings, booleans and integers
/// are classes, floats are regression targets; rows with a null label are left out.
pub fn sequence_labels(examples: &Examples, name: &str, source: &str) -> Result<LabelSet> {
    let column = examples.column(name).ok_or_else(|| {
        let names = examples.label_names();
        let have = if names.is_empty() {
            "none: the data file had only a text column (every other column of it becomes a label; add one and extract again)".to_owned()
        } else {
            format!(
                "{}{}",
                names.join(", "),
                glassbox_data::suggest::did_you_mean(name, names.iter().copied())
            )
        };
        ProbeError::Label {
            column: name.to_owned(),
            message: format!("no such column in {source}; label columns there: {have}"),
        }
    })?;
    let mut items = Vec::new();
    let mut types = Vec::new();
    let mut raw = Vec::new();
    for (row, value) in column.values.iter().enumerate() {
        match value {
            Value::Null => continue,
            Value::List(_) => return Err(ProbeError::Label {
                column: name.to_owned(),
                message:
                    "holds per-word lists: probe it at token level (token_labels / --token-label)"
                        .into(),
            }),
            other => raw.push(other.clone()),
        }
        items.push(row);
        types.push(examples.texts[row].clone());
    }
    if raw.is_empty() {
        return Err(ProbeError::Label {
            column: name.to_owned(),
            message: format!(
                "every row of {source} is null: a degenerate label, nothing to probe; fill the column or drop it from the labels"
            ),
        });
    }
    let target = if raw.iter().all(|v| matches!(v, Value::Float(_))) {
        let values: Vec<f64> = raw
            .iter()
            .map(|v| match v {
                Value::Float(f) => *f,
                _ => unreachable!("checked above"),
            })
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(ProbeError::Label {
                column: name.to_owned(),
                message: format!("row {} is not finite ({})", items[i] + 1, values[i]),
            });
        }
        // A constant target has R² undefined (0/0): a probe "explaining" it would be reported
        // as a perfect finding.
        if values.iter().all(|v| *v == values[0]) {
            return Err(ProbeError::Label {
                column: name.to_owned(),
                message: format!(
                    "is constant ({} in all {} rows): a degenerate label, nothing to probe; drop it from the labels",
                    values[0],
                    values.len()
                ),
            });
        }
        Target::Values(values)
    } else {
        classes_of(name, raw.iter().map(|v| v.class_name().unwrap_or_default()))?
    };
    Ok(LabelSet {
        name: name.to_owned(),
        level: Level::Sequence,
        texts: items.iter().map(|&r| examples.example_ids[r]).collect(),
        items,
        types,
        target,
    })
}

/// Token-level labels: a column of per-word label lists, or a built-in labeler (`@name`).
pub fn token_labels(
    examples: &Examples,
    tokens: &Tokens,
    name: &str,
    source: &str,
) -> Result<LabelSet> {
    let row_of: HashMap<u64, usize> = examples
        .example_ids
        .iter()
        .enumerate()
        .map(|(row, &id)| (id, row))
        .collect();
    let column = if name.starts_with('@') {
        if !BUILTIN_LABELERS.contains(&name) {
            return Err(ProbeError::Label {
                column: name.to_owned(),
                message: format!(
                    "unknown built-in token labeler; available: {}",
                    BUILTIN_LABELERS.join(", ")
                ),
            });
        }
        None
    } else {
        let column = examples.column(name).ok_or_else(|| ProbeError::Label {
            column: name.to_owned(),
            message: format!(
                "no such column in {source} (columns there: {}) and not a built-in labeler ({})",
                examples.label_names().join(", "),
                BUILTIN_LABELERS.join(", ")
            ),
        })?;
        if column
            .values
            .iter()
            .any(|v| !matches!(v, Value::List(_) | Value::Null))
        {
            return Err(ProbeError::Label {
                column: name.to_owned(),
                message: "token-level labels need a column of per-word lists (one label per whitespace-separated word)".into(),
            });
        }
        Some(column)
    };
    let lexicon = word_class_lexicon();
    let mut words_cache: Option<(usize, Vec<(usize, usize)>)> = None;
    let mut items = Vec::new();
    let mut types = Vec::new();
    let mut texts = Vec::new();
    let mut raw = Vec::new();
    for t in 0..tokens.len() {
        let Some((start, end)) = tokens.spans[t] else {
            continue;
        };
        let row = *row_of.get(&tokens.example_ids[t]).ok_or_else(|| ProbeError::Invalid(
            format!("tokens.parquet names example {} that examples.parquet lacks; re-run extract with --force", tokens.example_ids[t]),
        ))?;
        let text = &examples.texts[row];
        if words_cache.as_ref().map(|(r, _)| *r) != Some(row) {
            words_cache = Some((row, words(text)));
        }
        let words = &words_cache.as_ref().expect("just set").1;
        let Some(w) = word_of(words, start as usize, end as usize) else {
            continue;
        };
        let word = &text[words[w].0..words[w].1];
        let label = match column {
            Some(column) => match &column.values[row] {
                Value::List(labels) => {
                    if labels.len() != words.len() {
                        return Err(ProbeError::Label {
                            column: name.to_owned(),
                            message: format!(
                                "row {} has {} labels for {} words; give one label per whitespace-separated word (null for none)",
                                row + 1,
                                labels.len(),
                                words.len()
                            ),
                        });
                    }
                    labels[w].clone()
                }
                _ => None,
            },
            None => builtin(name, word, tokens.positions[t], &lexicon),
        };
        let Some(label) = label else { continue };
        items.push(t);
        texts.push(tokens.example_ids[t]);
        types.push(word.to_lowercase());
        raw.push(label);
    }
    Ok(LabelSet {
        name: name.to_owned(),
        level: Level::Token,
        items,
        types,
        texts,
        target: classes_of(name, raw.into_iter())?,
    })
}

/// Byte spans of the whitespace-separated words of `text`.
pub fn words(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

/// The first word a token's byte span overlaps (a byte-level BPE token may start on the
/// space before its word).
fn word_of(words: &[(usize, usize)], start: usize, end: usize) -> Option<usize> {
    let first = words.partition_point(|w| w.1 <= start);
    (first < words.len() && words[first].0 < end.max(start + 1)).then_some(first)
}

fn builtin(
    name: &str,
    word: &str,
    position: u32,
    lexicon: &HashMap<&'static str, &'static str>,
) -> Option<String> {
    let core = word.trim_matches(|c: char| !c.is_alphanumeric());
    match name {
        "@word_class" => {
            if core.is_empty() {
                return Some("PUNCT".into());
            }
            if is_number(core) {
                return Some("NUM".into());
            }
            let lower = core.to_lowercase();
            let base = lower
                .strip_suffix("'s")
                .or_else(|| lower.strip_suffix("’s"))
                .unwrap_or(&lower);
            lexicon.get(base).map(|c| (*c).to_owned())
        }
        "@is_number" => Some(yes_no(!core.is_empty() && is_number(core))),
        "@is_capitalised" => Some(yes_no(core.chars().next().is_some_and(char::is_uppercase))),
        "@position" => Some(position_bucket(position).to_owned()),
        _ => None,
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// Digits with optional separators, sign, decimal point or percent: `3`, `1,200`, `-4.5%`.
fn is_number(word: &str) -> bool {
    let digits = word.chars().filter(char::is_ascii_digit).count();
    digits > 0
        && word
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ',' | '.' | '-' | '+' | '%'))
}

/// Token position buckets: 1, 2–3, 4–7, 8–15, 16–31, 32+ (position 0 is the first token).
fn position_bucket(position: u32) -> &'static str {
    match position {
        0..=1 => "0-1",
        2..=3 => "2-3",
        4..=7 => "4-7",
        8..=15 => "8-15",
        16..=31 => "16-31",
        _ => "32+",
    }
}

fn word_class_lexicon() -> HashMap<&'static str, &'static str> {
    WORD_CLASS_LEXICON
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('\t'))
        .collect()
}

/// Class indices in sorted-name order, so results do not depend on row order.
fn classes_of(name: &str, labels: impl Iterator<Item = String>) -> Result<Target> {
    let raw: Vec<String> = labels.collect();
    let mut names: Vec<String> = raw.clone();
    names.sort();
    names.dedup();
    if names.len() < 2 {
        return Err(ProbeError::Label {
            column: name.to_owned(),
            message: format!(
                "needs at least two classes to probe, found {} ({})",
                names.len(),
                names.join(", ")
            ),
        });
    }
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let classes = raw.iter().map(|r| index[r.as_str()]).collect();
    Ok(Target::Classes { classes, names })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_label_column_names_the_columns_there_or_says_there_are_none() {
        let bare = glassbox_data::examples::Examples {
            example_ids: vec![0],
            splits: vec!["all".into()],
            texts: vec!["a".into()],
            n_tokens: vec![1],
            columns: Vec::new(),
        };
        let err = sequence_labels(&bare, "topic", "examples.parquet").unwrap_err();
        assert!(
            err.to_string().contains("label columns there: none"),
            "{err}"
        );
    }

    #[test]
    fn words_and_token_alignment() {
        let text = "The dog's  bone.";
        let w = words(text);
        assert_eq!(w, vec![(0, 3), (4, 9), (11, 16)]);
        assert_eq!(word_of(&w, 4, 7), Some(1)); // "dog"
        assert_eq!(word_of(&w, 7, 9), Some(1)); // "'s" inherits
        assert_eq!(word_of(&w, 15, 16), Some(2)); // "." inherits "bone."
        assert_eq!(word_of(&w, 3, 7), Some(1)); // BPE " dog" starts on the space
    }

    #[test]
    fn builtin_labelers() {
        let lex = word_class_lexicon();
        assert_eq!(
            builtin("@word_class", "The", 1, &lex).as_deref(),
            Some("DET")
        );
        assert_eq!(
            builtin("@word_class", "company's", 1, &lex).as_deref(),
            Some("NOUN")
        );
        assert_eq!(
            builtin("@word_class", "1,200", 1, &lex).as_deref(),
            Some("NUM")
        );
        assert_eq!(
            builtin("@word_class", "—", 1, &lex).as_deref(),
            Some("PUNCT")
        );
        assert_eq!(builtin("@word_class", "zzyzx", 1, &lex), None);
        assert_eq!(
            builtin("@is_number", "4.5%", 1, &lex).as_deref(),
            Some("yes")
        );
        assert_eq!(
            builtin("@is_number", "four", 1, &lex).as_deref(),
            Some("no")
        );
        assert_eq!(
            builtin("@is_capitalised", "\"Who", 1, &lex).as_deref(),
            Some("yes")
        );
        assert_eq!(builtin("@position", "x", 9, &lex).as_deref(), Some("8-15"));
    }
}
