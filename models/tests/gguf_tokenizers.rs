//! Tokenizers rebuilt from GGUF metadata give the token ids `transformers` gives for the same
//! files (`scripts/reference_gguf_tokenizers.py`, `just reference-gguf-tokenizers`): a
//! SentencePiece BPE vocabulary (no merges in the file) under Llama's, Phi-3's and Gemma-2's
//! rebuilds, and a byte-level BPE under Llama-3's (`llama-bpe`) and Qwen2's split rules, on texts
//! with leading and repeated spaces, digits, newlines and tabs, and characters outside the
//! vocabulary (byte fallback).

use glassbox_models::gguf::{read, Holding};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf_tokenizers")
}

fn check(name: &str) {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
            .unwrap();
    let case = &reference[name];
    let model = read(&fixtures().join(format!("{name}.gguf")), Holding::Blocks).unwrap();
    let tokenizer = model.tokenizer.unwrap_or_else(|e| panic!("{name}: {e}"));
    let texts = case["texts"].as_array().unwrap();
    let wanted = case["ids"].as_array().unwrap();
    assert!(!texts.is_empty());
    for (text, want) in texts.iter().zip(wanted) {
        let text = text.as_str().unwrap();
        let got = tokenizer.encode(text, true).unwrap().get_ids().to_vec();
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, want, "{name}: {text:?}");
    }
}

#[test]
fn sentencepiece_vocabulary_as_llama_rebuilds_it() {
    check("sentencepiece_llama");
}

#[test]
fn sentencepiece_vocabulary_as_phi3_rebuilds_it() {
    check("sentencepiece_phi3");
}

#[test]
fn sentencepiece_vocabulary_as_gemma_rebuilds_it() {
    check("sentencepiece_gemma2");
}

#[test]
fn byte_level_vocabulary_with_llama3_splits() {
    check("bpe_llama3");
}

#[test]
fn byte_level_vocabulary_with_qwen2_splits() {
    check("bpe_qwen2");
}
