//! A BERT tokenizer from a checkpoint that ships `vocab.txt` (and `tokenizer_config.json`) but
//! no `tokenizer.json` — as many BERT fine-tunes on the Hub do — built the way `transformers`
//! converts its slow `BertTokenizer` into a fast one (`convert_slow_tokenizer.BertConverter`):
//! WordPiece over the vocabulary, the BERT normaliser (lower-casing, accent stripping and
//! Chinese-character splitting as the config says), the BERT pre-tokeniser, `[CLS] … [SEP]`
//! around each text, and the special tokens registered as such.

use crate::{ModelError, Result};
use serde_json::Value;
use std::path::Path;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
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

/// The tokenizer of `vocab` (one token per line, id = line number), configured by the
/// `tokenizer_config.json` beside it when there is one.
pub fn bert_tokenizer(vocab: &Path) -> Result<Tokenizer> {
    let bad = |message: String| ModelError::Tokenizer {
        path: vocab.to_path_buf(),
        message,
    };
    let config_path = vocab.with_file_name("tokenizer_config.json");
    let config: Value = match std::fs::read_to_string(&config_path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| ModelError::Tokenizer {
            path: config_path.clone(),
            message: format!("not JSON: {e}"),
        })?,
        Err(_) => Value::Null,
    };
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
    let specials: Vec<AddedToken> = [unk, sep, cls, pad, mask]
        .into_iter()
        .filter(|t| tokenizers::Model::token_to_id(tokenizer.get_model(), t).is_some())
        .map(|t| AddedToken::from(t, true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| bad(format!("special tokens: {e}")))?;
    Ok(tokenizer)
}
