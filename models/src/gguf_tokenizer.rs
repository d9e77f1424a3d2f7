//! The tokenizer a GGUF file describes, rebuilt from its metadata as `transformers` rebuilds it
//! (`integrations/gguf/gguf_tokenizer_mapping.py`, 5.x), written out as a `tokenizer.json`
//! document and read by `tokenizers`:
//!
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE from the vocabulary and merges; GPT-2's split
//!   rule, or the rule `tokenizer.ggml.pre` names (Llama-3's `llama-bpe`, Qwen2's `qwen2`, GPT-4o's
//!   …) before the byte mapping;
//! - `llama` (SentencePiece): BPE with byte fallback, merges recovered from the vocabulary in
//!   score order (a SentencePiece GGUF carries none); Llama's `Metaspace` prefix space, Phi-3's
//!   prepending normalizer, or Gemma's no prefix (its merges in file order, runs of spaces
//!   respelled as `▁`) by architecture.
//!
//! Control tokens become special tokens, user-defined ones added tokens; BOS/EOS are added where
//! `tokenizer.ggml.add_bos_token`/`add_eos_token` say (BOS by default for SentencePiece, as
//! llama.cpp does).

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{json, Value as Json};
use std::collections::{HashMap, HashSet};

const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// Llama-3's split rule (transformers' `_LLAMA3_SPLIT`, llama.cpp's `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (single digits).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen3.5's (combining marks kept with letters).
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o's (cased words with their contractions).
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral's Tekken.
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` values with a split rule of their own (transformers' table).
const PRE_SPLITS: &[(&str, &str)] = &[
    ("llama3", LLAMA3_SPLIT),
    ("llama-v3", LLAMA3_SPLIT),
    ("llama-bpe", LLAMA3_SPLIT),
    ("falcon3", LLAMA3_SPLIT),
    ("falcon-h1", LLAMA3_SPLIT),
    ("pixtral", LLAMA3_SPLIT),
    ("midm-2.0", LLAMA3_SPLIT),
    ("lfm2", LLAMA3_SPLIT),
    ("jina-v5-nano", LLAMA3_SPLIT),
    ("dbrx", LLAMA3_SPLIT),
    ("smaug-bpe", LLAMA3_SPLIT),
    ("tekken", TEKKEN_SPLIT),
    ("qwen2", QWEN2_SPLIT),
    ("deepseek-r1-qwen", QWEN2_SPLIT),
    ("kormo", QWEN2_SPLIT),
    ("f2llmv2", QWEN2_SPLIT),
    ("megrez", QWEN2_SPLIT),
    ("qwen35", QWEN35_SPLIT),
    ("gpt-4o", GPT4O_SPLIT),
    ("llama4", GPT4O_SPLIT),
    ("kanana2", GPT4O_SPLIT),
    ("talkie", GPT4O_SPLIT),
    ("minimax-m2", GPT4O_SPLIT),
];
/// `tokenizer.ggml.pre` values that split as GPT-2 does (llama.cpp spells GPT-2's `gpt-2`; Phi-2
/// and RoBERTa-style vocabularies use its rule too).
const GPT2_PRE: &[&str] = &[
    "",
    "default",
    "gpt2",
    "gpt-2",
    "phi-2",
    "roberta-bpe",
    "smollm",
];

/// What a rebuild reads from the metadata.
struct Vocabulary<'a> {
    content: &'a Content,
    tokens: &'a [String],
    types: Vec<i64>,
}

impl Vocabulary<'_> {
    fn text(&self, key: &str) -> Option<String> {
        let v = self
            .content
            .metadata
            .get(&format!("tokenizer.ggml.{key}"))?;
        v.to_string().ok().cloned()
    }

    fn flag(&self, key: &str) -> Option<bool> {
        let v = self
            .content
            .metadata
            .get(&format!("tokenizer.ggml.{key}"))?;
        v.to_bool().ok()
    }

    fn id(&self, key: &str) -> Option<usize> {
        let v = self
            .content
            .metadata
            .get(&format!("tokenizer.ggml.{key}"))?;
        Some(value_int(v)).filter(|&i| i >= 0).map(|i| i as usize)
    }

    fn list(&self, key: &str) -> Option<&Vec<Value>> {
        self.content
            .metadata
            .get(&format!("tokenizer.ggml.{key}"))?
            .to_vec()
            .ok()
    }
}

/// Rebuilds the tokenizer of a GGUF file of architecture `arch` whose vocabulary is `tokens`;
/// the error says why it cannot be (the loader then looks for a `tokenizer.json` beside it).
pub(crate) fn rebuild(
    arch: &str,
    content: &Content,
    tokens: &[String],
) -> Result<tokenizers::Tokenizer, String> {
    let types = content
        .metadata
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|v| v.iter().map(value_int).collect())
        .unwrap_or_default();
    let vocabulary = Vocabulary {
        content,
        tokens,
        types,
    };
    if tokens.is_empty() {
        return Err("no tokenizer.ggml.tokens in the metadata".into());
    }
    let model = vocabulary.text("model").unwrap_or_default();
    let document = match model.as_str() {
        "gpt2" => byte_level(&vocabulary)?,
        "llama" => sentencepiece(arch, &vocabulary)?,
        other => {
            return Err(format!(
                "tokenizer.ggml.model `{other}` is not supported; glassbox rebuilds byte-level BPE (`gpt2`) and SentencePiece BPE (`llama`) vocabularies"
            ))
        }
    };
    tokenizers::Tokenizer::from_bytes(document.to_string()).map_err(|e| e.to_string())
}

/// Byte-level BPE (transformers' `byte_level_tokenizer` and `set_split_regex`).
fn byte_level(v: &Vocabulary) -> Result<Json, String> {
    let pre = v.text("pre").unwrap_or_default();
    let byte_level = |use_regex: bool| {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
               "use_regex": use_regex})
    };
    let pre_tokenizer = match PRE_SPLITS.iter().find(|(name, _)| *name == pre) {
        Some((_, split)) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated",
             "invert": false},
            byte_level(false),
        ]}),
        None if GPT2_PRE.contains(&pre.as_str()) => byte_level(true),
        None => {
            let mut known: Vec<&str> = GPT2_PRE[1..].to_vec();
            known.extend(PRE_SPLITS.iter().map(|(name, _)| *name));
            return Err(format!(
                "pre-tokenizer `{pre}` is not supported (its split rule is not known here); supported: {}",
                known.join(", ")
            ));
        }
    };
    // Every real token of a byte-level vocabulary is spelled in the byte alphabet; one that is
    // not is respelled from its UTF-8 bytes (as transformers does).
    let alphabet = byte_alphabet();
    let spelled: Vec<String> = v
        .tokens
        .iter()
        .map(|t| {
            if t.chars().all(|c| alphabet.contains(&c)) {
                t.clone()
            } else {
                t.bytes().map(byte_char).collect()
            }
        })
        .collect();
    let merges = match v.list("merges") {
        Some(list) => file_merges(list),
        None => generate_merges(&spelled, None),
    };
    // A control token spelled outside the byte alphabet is a llama.cpp mislabel: not added.
    let specials = added_tokens(v, |t| t.chars().all(|c| alphabet.contains(&c)));
    let mut document = json!({
        "version": "1.0",
        "added_tokens": specials,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": byte_level(true),
        "decoder": byte_level(true),
        "model": bpe(&spelled, &merges, Fallback::None),
    });
    if let Some(template) = template(v, false) {
        document["post_processor"] = json!({"type": "Sequence", "processors": [
            byte_level(true), template]});
    }
    Ok(document)
}

/// SentencePiece BPE with byte fallback (transformers' `sentencepiece_tokenizer`, and its Phi-3
/// and Gemma variants, picked by architecture as there).
fn sentencepiece(arch: &str, v: &Vocabulary) -> Result<Json, String> {
    let gemma = matches!(arch, "gemma" | "gemma2" | "gemma3");
    let tokens: Vec<String> = if gemma {
        // Gemma files store a token of two or more spaces as spaces; its merges spell them `▁`.
        v.tokens
            .iter()
            .map(|t| {
                if t.contains(' ') && t.trim().is_empty() {
                    "▁".repeat(t.chars().count())
                } else {
                    t.clone()
                }
            })
            .collect()
    } else {
        v.tokens.to_vec()
    };
    // A file that does list merges is taken at its word; else they are recovered from the
    // vocabulary in merge order.
    let merges = match v.list("merges") {
        Some(list) => file_merges(list),
        None => generate_merges(&tokens, Some(&merge_order(gemma, v, tokens.len())?)),
    };
    let decode = |strip: bool| {
        let mut steps = vec![
            json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if strip {
            steps.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        json!({"type": "Sequence", "decoders": steps})
    };
    let replace_spaces = json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"});
    let (normalizer, pre_tokenizer, decoder, unk) = match arch {
        _ if gemma => (
            replace_spaces,
            json!({"type": "Split", "pattern": {"String": " "},
                   "behavior": "MergedWithPrevious", "invert": false}),
            decode(false),
            Some("<unk>"),
        ),
        "phi3" => (
            json!({"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"}, replace_spaces]}),
            Json::Null,
            decode(true),
            None,
        ),
        _ => (
            Json::Null,
            json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                   "split": false}),
            decode(true),
            None,
        ),
    };
    Ok(json!({
        "version": "1.0",
        "added_tokens": added_tokens(v, |_| true),
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": template(v, true),
        "decoder": decoder,
        "model": bpe(&tokens, &merges, Fallback::Bytes { unk }),
    }))
}

/// How the BPE model treats what its merges do not cover.
#[derive(Clone, Copy)]
enum Fallback {
    /// Byte-level: every byte is a token already (GPT-2's BPE, no fusing).
    None,
    /// SentencePiece: unknown pieces fused, then spelled as `<0xNN>` byte tokens; `unk` names
    /// the unknown token where the reference sets one (Gemma's `<unk>`).
    Bytes { unk: Option<&'static str> },
}

/// Each token's rank for recovered merges, higher first: its score, or for Gemma (whose scores
/// do not follow its merge order) its place in the file.
fn merge_order(gemma: bool, v: &Vocabulary, tokens: usize) -> Result<Vec<f64>, String> {
    if gemma {
        return Ok((0..tokens).map(|i| -(i as f64)).collect());
    }
    let scores: Vec<f64> = v
        .list("scores")
        .ok_or("no tokenizer.ggml.scores in the metadata of a SentencePiece vocabulary")?
        .iter()
        .map(|s| s.to_f32().map(f64::from).unwrap_or(0.0))
        .collect();
    if scores.len() != tokens {
        return Err(format!(
            "tokenizer.ggml.scores has {} entries for {tokens} tokens",
            scores.len()
        ));
    }
    Ok(scores)
}

/// A BPE model section: `tokens` by id (a repeated token keeps its last id, as a dict would).
fn bpe(tokens: &[String], merges: &[(String, String)], fallback: Fallback) -> Json {
    let vocab: serde_json::Map<String, Json> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let (unk, fuse, bytes) = match fallback {
        Fallback::None => (None, false, false),
        Fallback::Bytes { unk } => (unk, true, true),
    };
    json!({
        "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": fuse, "byte_fallback": bytes,
        "ignore_merges": false, "vocab": vocab, "merges": merges,
    })
}

/// `tokenizer.ggml.merges` entries, `"left right"`.
fn file_merges(list: &[Value]) -> Vec<(String, String)> {
    list.iter()
        .filter_map(|m| m.to_string().ok())
        .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect()
}

/// Control tokens (type 3) as special tokens where `keep` allows, user-defined ones (type 4)
/// as added tokens matched whole (transformers' `add_gguf_special_tokens`).
fn added_tokens(v: &Vocabulary, keep: impl Fn(&str) -> bool) -> Vec<Json> {
    v.tokens
        .iter()
        .zip(&v.types)
        .enumerate()
        .filter_map(|(id, (token, &kind))| {
            let special = match kind {
                CONTROL if keep(token) => true,
                USER_DEFINED => false,
                _ => return None,
            };
            Some(
                json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                        "rstrip": false, "normalized": false, "special": special}),
            )
        })
        .collect()
}

/// BOS/EOS around every text where the metadata asks for them (`add_bos_token` defaults to
/// `default_bos`): a `TemplateProcessing` section, or `None` when nothing is added.
fn template(v: &Vocabulary, default_bos: bool) -> Option<Json> {
    let token = |flag: &str, default: bool, id: &str| {
        let wanted = v.flag(flag).unwrap_or(default);
        let id = v.id(id).filter(|&i| i < v.tokens.len())?;
        wanted.then(|| (v.tokens[id].clone(), id))
    };
    let bos = token("add_bos_token", default_bos, "bos_token_id");
    let eos = token("add_eos_token", false, "eos_token_id");
    if bos.is_none() && eos.is_none() {
        return None;
    }
    let piece = |(t, _): &(String, usize), type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let sequence = |name: &str, type_id: u32| {
        let mut s: Vec<Json> = bos.iter().map(|b| piece(b, type_id)).collect();
        s.push(json!({"Sequence": {"id": name, "type_id": type_id}}));
        s.extend(eos.iter().map(|e| piece(e, type_id)));
        s
    };
    let mut pair = sequence("A", 0);
    pair.extend(sequence("B", 1));
    let specials: serde_json::Map<String, Json> = bos
        .iter()
        .chain(&eos)
        .map(|(t, id)| (t.clone(), json!({"id": t, "ids": [id], "tokens": [t]})))
        .collect();
    Some(
        json!({"type": "TemplateProcessing", "single": sequence("A", 0), "pair": pair,
                "special_tokens": specials}),
    )
}

/// The merges a vocabulary implies (transformers' `generate_merges`): every split of a token
/// into two tokens, ordered by the token's score (descending, `scores` given) or id (ascending),
/// then by the parts' lengths; the splits of one token by the parts' ids. Stable, as Python's
/// sort is, so ties keep the vocabulary's order.
fn generate_merges(tokens: &[String], scores: Option<&[f64]>) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    // Each distinct token once, where it first appears, with its last score (a dict's
    // behaviour).
    let mut seen = HashSet::new();
    let mut merges: Vec<(String, String, f64)> = Vec::new();
    for token in tokens {
        if !seen.insert(token.as_str()) {
            continue;
        }
        let score = match scores {
            Some(s) => s[ids[token.as_str()]],
            None => ids[token.as_str()] as f64,
        };
        let mut local: Vec<(String, String, f64)> = token
            .char_indices()
            .skip(1)
            .map(|(at, _)| token.split_at(at))
            .filter(|(l, r)| ids.contains_key(l) && ids.contains_key(r))
            .map(|(l, r)| (l.to_owned(), r.to_owned(), score))
            .collect();
        local.sort_by_key(|(l, r, _)| (ids[l.as_str()], ids[r.as_str()]));
        merges.extend(local);
    }
    let key = |m: &(String, String, f64)| (m.2, m.0.chars().count(), m.1.chars().count());
    merges.sort_by(|a, b| {
        let ordering = key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal);
        if scores.is_some() {
            ordering.reverse()
        } else {
            ordering
        }
    });
    merges.into_iter().map(|(l, r, _)| (l, r)).collect()
}

/// GPT-2's byte → printable character map (`bytes_to_unicode`).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, 33..=126 | 161..=172 | 174..=255);
    if printable(b) {
        char::from(b)
    } else {
        let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + shifted).expect("within the BMP")
    }
}

fn byte_alphabet() -> HashSet<char> {
    (0..=255u8).map(byte_char).collect()
}

pub(crate) fn value_int(v: &Value) -> i64 {
    v.to_i32()
        .map(i64::from)
        .or_else(|_| v.to_u32().map(i64::from))
        .or_else(|_| v.to_i64())
        .or_else(|_| v.to_u64().map(|u| u as i64))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        assert_eq!(byte_char(b'A'), 'A');
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(byte_alphabet().len(), 256);
    }

    /// transformers' `generate_merges` on a small vocabulary, worked by hand: by score
    /// (descending), then the parts' lengths; a token's own splits by the parts' ids.
    #[test]
    fn merges_follow_scores_then_lengths() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -0.5];
        let merges = generate_merges(&tokens, Some(&scores));
        let pairs: Vec<(&str, &str)> = merges
            .iter()
            .map(|(l, r)| (l.as_str(), r.as_str()))
            .collect();
        // abc (-0.5) first: "ab"+"c" (lengths 2, 1) before "a"+"bc" (1, 2), descending as the
        // scores; then ab (-1), then bc (-2).
        assert_eq!(pairs, [("ab", "c"), ("a", "bc"), ("a", "b"), ("b", "c")]);
        // By id ascending when no scores are given: ab (3), bc (4), abc (5), the shorter left
        // part first.
        let by_id = generate_merges(&tokens, None);
        assert_eq!(by_id[0], ("a".into(), "b".into()));
        assert_eq!(by_id[2], ("a".into(), "bc".into()));
    }
}
