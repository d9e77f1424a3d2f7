//! Checkpoints that ship their slow tokenizer's files instead of `tokenizer.json` — BERT's
//! `vocab.txt` (+ `tokenizer_config.json`), GPT-2's and RoBERTa's `vocab.json` + `merges.txt`:
//! the tokenizer built from them (as `transformers` converts the slow tokenizers) gives the same
//! ids, tokens, offsets and type ids as the checkpoint's own `tokenizer.json` on every text of
//! the built-in data set and a few harder strings — for the tiny classifier (lower-cased
//! WordPiece), the tiny GPT-2 (byte-level BPE), the tiny RoBERTa classifier (byte-level BPE in
//! `<s> … </s>`) and all-MiniLM-L6-v2 (fails under `CI=true` without it).

use glassbox_models::{load_model, resolve, LoadOptions, ModelSpec};
use std::path::Path;

fn texts() -> Vec<String> {
    let data = glassbox_tests::workspace_root().join("data/sets/default.jsonl");
    std::fs::read_to_string(data)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .chain([
            "Café façade — naïve résumé!".to_owned(),
            "北京 is 2 words?  \t odd   spacing".to_owned(),
            "[MASK] and [SEP] inside a text".to_owned(),
            "ends with <|endoftext|> and emoji 🎉\n\nnew paragraph".to_owned(),
        ])
        .collect()
}

/// `dir` copied without `tokenizer.json`, with `vocab.txt` written from its vocabulary (id
/// order) unless the folder already has one.
fn without_tokenizer_json(dir: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        if p.is_file() && name != "tokenizer.json" {
            std::fs::copy(&p, out.join(&name)).unwrap();
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    if json["model"]["type"] == "BPE" {
        // GPT-2's files: the vocabulary as JSON, the merges one pair per line after a header.
        std::fs::write(out.join("vocab.json"), json["model"]["vocab"].to_string()).unwrap();
        let merges: Vec<String> = json["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| match m {
                serde_json::Value::Array(pair) => {
                    format!(
                        "{} {}",
                        pair[0].as_str().unwrap(),
                        pair[1].as_str().unwrap()
                    )
                }
                other => other.as_str().unwrap().to_owned(),
            })
            .collect();
        std::fs::write(
            out.join("merges.txt"),
            format!("#version: 0.2\n{}\n", merges.join("\n")),
        )
        .unwrap();
    } else if !out.join("vocab.txt").is_file() {
        let vocab = json["model"]["vocab"].as_object().unwrap();
        let mut rows: Vec<(u64, &str)> = vocab
            .iter()
            .map(|(t, id)| (id.as_u64().unwrap(), t.as_str()))
            .collect();
        rows.sort();
        let lines: Vec<&str> = rows.iter().map(|(_, t)| *t).collect();
        std::fs::write(out.join("vocab.txt"), lines.join("\n") + "\n").unwrap();
    }
}

fn same_tokenization(original: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("model");
    without_tokenizer_json(original, &copy);
    let load = |dir: &Path| {
        let spec: ModelSpec = dir.display().to_string().parse().unwrap();
        load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap()
    };
    let (a, b) = (load(original), load(&copy));
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (x, y) = (
        a.tokenizer().unwrap().encode(&refs).unwrap(),
        b.tokenizer().unwrap().encode(&refs).unwrap(),
    );
    for ((x, y), text) in x.iter().zip(&y).zip(&texts) {
        assert_eq!(x.ids, y.ids, "ids of {text:?}");
        assert_eq!(x.tokens, y.tokens, "tokens of {text:?}");
        assert_eq!(x.spans, y.spans, "spans of {text:?}");
        assert_eq!(x.type_ids, y.type_ids, "type ids of {text:?}");
    }
    for special in ["[MASK]", "<|endoftext|>"] {
        let id = b.tokenizer().unwrap().token_id(special);
        assert_eq!(id, a.tokenizer().unwrap().token_id(special), "{special}");
    }
}

#[test]
fn vocab_json_and_merges_tokenize_like_the_tiny_gpt2s_tokenizer_json() {
    same_tokenization(&glassbox_tests::workspace_root().join("tests/fixtures/tiny_gpt2"));
}

#[test]
fn roberta_vocab_json_and_merges_tokenize_like_its_tokenizer_json() {
    same_tokenization(
        &glassbox_tests::workspace_root().join("tests/fixtures/tiny_roberta_classifier"),
    );
}

#[test]
fn a_vocab_txt_tokenizes_like_the_tiny_classifiers_tokenizer_json() {
    let fixture = glassbox_tests::workspace_root().join("tests/fixtures/tiny_bert_classifier");
    same_tokenization(&fixture);
}

#[test]
fn a_vocab_txt_tokenizes_like_minilms_tokenizer_json() {
    let Some(snapshot) =
        glassbox_tests::require_minilm("a_vocab_txt_tokenizes_like_minilms_tokenizer_json")
    else {
        return;
    };
    same_tokenization(&snapshot);
}
