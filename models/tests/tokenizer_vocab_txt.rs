//! BERT checkpoints that ship `vocab.txt` and `tokenizer_config.json` instead of
//! `tokenizer.json`: the tokenizer built from them (as `transformers` converts the slow
//! `BertTokenizer`) gives the same ids, tokens and offsets as the checkpoint's own
//! `tokenizer.json` on every text of the built-in data set — for the tiny classifier fixture
//! (lower-cased WordPiece) and for all-MiniLM-L6-v2 (fails under `CI=true` without it).

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
    if !out.join("vocab.txt").is_file() {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
                .unwrap();
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
    let mask = b.tokenizer().unwrap().token_id("[MASK]");
    assert_eq!(mask, a.tokenizer().unwrap().token_id("[MASK]"));
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
