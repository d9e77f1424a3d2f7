use std::path::PathBuf;

/// Errors from resolving, loading and running models. Each names the file, tensor or hook at
/// fault and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("bad model spec `{spec}`: {message}")]
    BadSpec { spec: String, message: String },
    #[error(
        "model `{id}` (revision `{revision}`) is not in the Hugging Face cache at {cache} and {why}. \
         Run `just models` to lay the registry-shipped models into the cache, set HF_HOME to a cache \
         that holds it, or pass --model ./local/dir"
    )]
    NotFound {
        id: String,
        revision: String,
        cache: PathBuf,
        why: String,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "{path}: unsupported architecture `{found}`; supported model_type values: {supported}"
    )]
    UnsupportedArchitecture {
        path: PathBuf,
        found: String,
        supported: String,
    },
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("unknown hook `{name}`{hint}; `glassbox hooks MODEL` lists the hook points")]
    UnknownHook { name: String, hint: String },
    #[error("unknown pooling `{0}`; use mean, cls, last or max")]
    UnknownPool(String),
    #[error("{0}")]
    Invalid(String),
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Data(#[from] glassbox_data::DataError),
}

/// " (did you mean `x`?)" when a close candidate exists, else "".
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    let best = candidates
        .into_iter()
        .map(|c| (levenshtein(name, c), c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= (name.len() / 3).max(3) => format!(" (did you mean `{c}`?)"),
        _ => String::new(),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diag = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }

    #[test]
    fn suggestion_only_when_close() {
        let c = ["blocks.0.hook_resid_post", "hook_embed"];
        assert_eq!(
            did_you_mean("blocks.0.hook_resid_pots", c),
            " (did you mean `blocks.0.hook_resid_post`?)"
        );
        assert_eq!(did_you_mean("zzzzzzzzzzzzzzzz", c), "");
    }
}
