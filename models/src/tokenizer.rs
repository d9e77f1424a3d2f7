//! Tokenisation with a `tokenizer.json` (the `tokenizers` crate), truncating to a maximum length
//! with the special tokens kept; padding is done by the batcher, not here.

use crate::{ModelError, Result};
use std::path::{Path, PathBuf};
use tokenizers::{
    PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// One tokenised text.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub tokens: Vec<String>,
    /// Byte span of each token in the text; `None` for special tokens, which have none.
    pub spans: Vec<Option<(u32, u32)>>,
}

pub struct TextTokenizer {
    path: PathBuf,
    inner: Tokenizer,
    max_length: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, truncating to `max_length` tokens with special tokens kept.
    /// Without `tokenizer.json`, a slow tokenizer's files beside it (BERT's `vocab.txt`,
    /// GPT-2's `vocab.json` + `merges.txt`) are read as `transformers` converts them.
    pub fn load(path: &Path, max_length: usize) -> Result<Self> {
        if !path.is_file() {
            let (wordpiece, bpe) = (
                path.with_file_name("vocab.txt"),
                path.with_file_name("vocab.json"),
            );
            if wordpiece.is_file() {
                let inner = crate::slow_tokenizers::bert_tokenizer(&wordpiece)?;
                return Self::from_tokenizer(inner, &wordpiece, max_length);
            }
            if bpe.is_file() {
                let inner = crate::slow_tokenizers::gpt2_tokenizer(&bpe)?;
                return Self::from_tokenizer(inner, &bpe, max_length);
            }
            return Err(ModelError::Tokenizer {
                path: path.to_path_buf(),
                message: "missing; a text model needs its tokenizer.json (or BERT's vocab.txt, or GPT-2's vocab.json and merges.txt) beside config.json".into(),
            });
        }
        let inner = Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_tokenizer(inner, path, max_length)
    }

    /// Wraps a tokenizer built elsewhere (from GGUF metadata); `path` names its source.
    pub fn from_tokenizer(mut inner: Tokenizer, path: &Path, max_length: usize) -> Result<Self> {
        let err = |message: String| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        inner.with_padding(None);
        // Checked here: `tokenizers` panics when the special tokens do not fit.
        let specials = inner
            .get_post_processor()
            .map(|p| p.added_tokens(false))
            .unwrap_or(0);
        if max_length <= specials {
            return Err(ModelError::Invalid(format!(
                "max length {max_length} leaves no room for text: this tokenizer adds {specials} special tokens; use at least {}",
                specials + 1
            )));
        }
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            inner,
            max_length,
        })
    }

    /// The length texts are cut at, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenises texts with the model's special tokens, truncated to the maximum length.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        let encodings =
            self.inner
                .encode_batch(texts.to_vec(), true)
                .map_err(|e| ModelError::Tokenizer {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
        Ok(encodings
            .into_iter()
            .map(|e| Encoded {
                ids: e.get_ids().to_vec(),
                type_ids: e.get_type_ids().to_vec(),
                tokens: e.get_tokens().to_vec(),
                spans: e
                    .get_offsets()
                    .iter()
                    .zip(e.get_special_tokens_mask())
                    .map(|(&(start, end), &special)| {
                        (special == 0).then_some((start as u32, end as u32))
                    })
                    .collect(),
            })
            .collect())
    }

    /// Tokenises one text without special tokens or truncation: `(id, token)` per token (what
    /// an answer token of a prompt pair must be exactly one of).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<(u32, String)>> {
        let e = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(e.get_ids()
            .iter()
            .copied()
            .zip(e.get_tokens().iter().cloned())
            .collect())
    }

    /// The token string of `id` (as the vocabulary spells it), if any.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token spelled exactly `token` in the vocabulary (special tokens included).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
