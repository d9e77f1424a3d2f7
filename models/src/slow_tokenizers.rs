//! Tokenizers of checkpoints that ship their slow tokenizer's files but no `tokenizer.json` — as
//! many BERT and GPT-2 fine-tunes on the Hub do — built the way `transformers` converts them
//! into fast ones (`convert_slow_tokenizer.py`):
//! - `BertConverter` (`vocab.txt`): WordPiece over the vocabulary, the BERT normaliser
//!   (lower-casing, accent stripping and Chinese-character splitting as `tokenizer_config.json`
//!   says), the BERT pre-tokeniser, `[CLS] … [SEP]` around each text;
//! - `GPT2Converter` (`vocab.json` + `merges.txt`): byte-level BPE, no prefix space unless
//!   configured, no tokens added around the text;
//! - RoBERTa's (`vocab.json` + `merges.txt` of a checkpoint whose `config.json` says `roberta`
//!   or whose `tokenizer_config.json` names a `RobertaTokenizer`; transformers 5's
//!   `models/roberta/tokenization_roberta.py`): the same BPE, `<s> … </s>` around each text
//!   (`RobertaProcessing`, offsets trimmed);
//!
//! each with its special tokens registered as such.

use crate::{ModelError, Result};
use serde_json::Value;
use std::path::Path;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// `tokenizer_config.json`'s value of a special token (a string, or `{"content": …}`).
fn special(config: &Value, key: &str, default: &str) -> String {
    match config.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned(),
        _ => default.to_owned(),
    }
}

/// `tokenizer_config.json` beside `file`, or null when absent.
fn tokenizer_config(file: &Path) -> Result<Value> {
    let path = file.with_file_name("tokenizer_config.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| ModelError::Tokenizer {
            path,
            message: format!("not JSON: {e}"),
        }),
        Err(_) => Ok(Value::Null),
    }
}

/// The tokenizer of `vocab` (one token per line, id = line number), configured by the
/// `tokenizer_config.json` beside it when there is one.
pub fn bert_tokenizer(vocab: &Path) -> Result<Tokenizer> {
    let bad = |message: String| ModelError::Tokenizer {
        path: vocab.to_path_buf(),
        message,
    };
    let config = tokenizer_config(vocab)?;
    let flag = |key: &str| config.get(key).and_then(Value::as_bool);
    let [unk, sep, cls, pad, mask] = [
        ("unk_token", "[UNK]"),
        ("sep_token", "[SEP]"),
        ("cls_token", "[CLS]"),
        ("pad_token", "[PAD]"),
        ("mask_token", "[MASK]"),
    ]
    .map(|(key, default)| special(&config, key, default));
    let model = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token(unk.clone())
        .build()
        .map_err(|e| bad(format!("not a WordPiece vocabulary: {e}")))?;
    let id = |token: &str| {
        tokenizers::Model::token_to_id(&model, token)
            .ok_or_else(|| bad(format!("the vocabulary has no `{token}` token")))
    };
    let (sep_id, cls_id) = (id(&sep)?, id(&cls)?);
    id(&unk)?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            flag("tokenize_chinese_chars").unwrap_or(true),
            flag("strip_accents"),
            flag("do_lower_case").unwrap_or(true),
        )))
        .map_err(|e| bad(format!("normaliser: {e}")))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(
        (sep.clone(), sep_id),
        (cls.clone(), cls_id),
    )));
    tokenizer.with_decoder(Some(WordPieceDecoder::default()));
    with_specials(tokenizer, [unk, sep, cls, pad, mask], vocab)
}

/// The byte-level BPE tokenizer of `vocab` (`vocab.json`) and the `merges.txt` beside it.
pub fn gpt2_tokenizer(vocab: &Path) -> Result<Tokenizer> {
    let merges = vocab.with_file_name("merges.txt");
    let bad = |message: String| ModelError::Tokenizer {
        path: vocab.to_path_buf(),
        message,
    };
    let config = tokenizer_config(vocab)?;
    let model = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| {
            bad(format!(
                "not a BPE vocabulary with {}: {e}",
                merges.display()
            ))
        })?;
    let prefix_space = config
        .get("add_prefix_space")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(prefix_space, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    if !is_roberta(vocab, &config) {
        let specials: Vec<String> = ["unk_token", "bos_token", "eos_token", "pad_token"]
            .iter()
            .map(|key| special(&config, key, "<|endoftext|>"))
            .collect();
        tokenizer.with_post_processor(Some(ByteLevel::new(true, false, true)));
        return with_specials(tokenizer, specials, vocab);
    }
    let token = |key: &str, default: &str| special(&config, key, default);
    let (cls, sep) = (token("cls_token", "<s>"), token("sep_token", "</s>"));
    let id = |t: &str| {
        tokenizers::Model::token_to_id(tokenizer.get_model(), t).ok_or_else(|| {
            bad(format!(
                "RoBERTa's `{t}` is not in the vocabulary (set cls_token/sep_token in tokenizer_config.json)"
            ))
        })
    };
    let processing = RobertaProcessing::new((sep.clone(), id(&sep)?), (cls.clone(), id(&cls)?))
        .trim_offsets(
            config
                .get("trim_offsets")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        )
        .add_prefix_space(prefix_space);
    tokenizer.with_post_processor(Some(processing));
    let specials = [
        ("bos_token", "<s>"),
        ("eos_token", "</s>"),
        ("unk_token", "<unk>"),
        ("pad_token", "<pad>"),
        ("mask_token", "<mask>"),
    ]
    .map(|(key, default)| token(key, default));
    with_specials(tokenizer, [cls, sep].into_iter().chain(specials), vocab)
}

/// Whether the checkpoint beside `vocab` is a RoBERTa (its `config.json`'s `model_type`, or
/// `tokenizer_config.json`'s `tokenizer_class`).
fn is_roberta(vocab: &Path, tokenizer_config: &Value) -> bool {
    let class = tokenizer_config
        .get("tokenizer_class")
        .and_then(Value::as_str)
        .unwrap_or("");
    let model_type = std::fs::read_to_string(vocab.with_file_name("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|c| {
            c.get("model_type")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default();
    class.starts_with("Roberta") || model_type == "roberta"
}

/// Registers the special tokens the vocabulary has as special (never split, skipped when
/// decoding), as the fast tokenizers `transformers` converts do.
fn with_specials(
    mut tokenizer: Tokenizer,
    specials: impl IntoIterator<Item = String>,
    vocab: &Path,
) -> Result<Tokenizer> {
    let specials: Vec<AddedToken> = specials
        .into_iter()
        .filter(|t| tokenizers::Model::token_to_id(tokenizer.get_model(), t).is_some())
        .map(|t| AddedToken::from(t, true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| ModelError::Tokenizer {
            path: vocab.to_path_buf(),
            message: format!("special tokens: {e}"),
        })?;
    Ok(tokenizer)
}
