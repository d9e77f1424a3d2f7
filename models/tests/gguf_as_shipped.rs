//! GGUF checkpoints as they ship beyond one file per model: a `gguf-split` set (from its first
//! part, from the folder holding it, from an HF-layout cache by `ORG/NAME:FILE` or as a
//! GGUF-only repo) loads as the single file; a vocabulary the metadata cannot rebuild falls back
//! to a `tokenizer.json` beside the file, and one beside it is taken over the metadata.

mod decoder_parity;
mod gguf_writer;

use candle_core::quantized::GgmlDType;
use decoder_parity::fixture;
use gguf_writer::*;
use glassbox_models::{load_model, resolve, LoadOptions, ModelSpec, WeightsDtype};

/// A checkpoint cut into parts by `gguf-split` loads from its first part — or from the folder
/// holding the set — to the model the single file is, from f32 tensors and Q8_0 blocks.
#[test]
fn a_split_gguf_loads_as_the_single_file() {
    let dir = tempfile::tempdir().unwrap();
    for (matrices, tag) in [(GgmlDType::F32, "f32"), (GgmlDType::Q8_0, "q8")] {
        let single = dir.path().join(format!("{tag}.gguf"));
        write_gguf(&fixture("tiny_qwen3"), "qwen3", matrices, "gpt2", &single);
        let split_dir = dir.path().join(tag);
        std::fs::create_dir(&split_dir).unwrap();
        let split = split_dir.join("m.gguf");
        write_gguf_parts(&fixture("tiny_qwen3"), "qwen3", matrices, "gpt2", &split, 3);
        let want = run(&load(&single, WeightsDtype::Auto));
        for spec in [split_dir.join("m-00001-of-00003.gguf"), split_dir.clone()] {
            let got = run(&load(&spec, WeightsDtype::Auto));
            assert_eq!(got.0, want.0, "{tag}: token ids");
            assert_eq!(worst(&got.1, &want.1), 0.0, "{tag}: {}", spec.display());
        }
    }
}

/// A split GGUF in a Hugging Face cache: named by its first part (`ORG/NAME:FILE`, whose other
/// parts are fetched with it) or as a GGUF-only repo holding the one set, it loads as the
/// single file. (The only test in this binary that sets `HF_HOME`; the others load local
/// paths, which never read it.)
#[test]
fn a_split_gguf_resolves_from_the_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let single = tmp.path().join("single.gguf");
    write_gguf(
        &fixture("tiny_qwen3"),
        "qwen3",
        GgmlDType::Q8_0,
        "gpt2",
        &single,
    );
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let repo = tmp.path().join("hf/hub/models--org--tiny-split-GGUF");
    let snap = repo.join("snapshots").join(sha);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), sha).unwrap();
    let first = snap.join("m.gguf");
    write_gguf_parts(
        &fixture("tiny_qwen3"),
        "qwen3",
        GgmlDType::Q8_0,
        "gpt2",
        &first,
        2,
    );
    std::env::set_var("HF_HOME", tmp.path().join("hf"));
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let want = run(&load(&single, WeightsDtype::Auto));
    for id in [
        "org/tiny-split-GGUF:m-00001-of-00002.gguf",
        "org/tiny-split-GGUF",
    ] {
        let spec: ModelSpec = id.parse().unwrap();
        let resolved = resolve(&spec).unwrap();
        assert!(resolved.weights.ends_with("m-00001-of-00002.gguf"), "{id}");
        let model = load_model(resolved, LoadOptions::default()).unwrap();
        assert_eq!(worst(&run(&model).1, &want.1), 0.0, "{id}");
    }
}

/// A vocabulary glassbox cannot rebuild from the metadata (T5's unigram `t5`) is refused naming
/// what to do; with the model's `tokenizer.json` beside the file, that one is used.
#[test]
fn a_gguf_tokenizer_that_cannot_be_rebuilt_falls_back_to_tokenizer_json_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_gguf(&fixture("tiny_qwen3"), "qwen3", GgmlDType::F32, "t5", &path);
    let spec: ModelSpec = path.to_str().unwrap().parse().unwrap();
    let e = load_model(resolve(&spec).unwrap(), LoadOptions::default())
        .err()
        .expect("no tokenizer to use")
        .to_string();
    assert!(e.contains("`t5`") && e.contains("tokenizer.json"), "{e}");
    std::fs::copy(
        fixture("tiny_qwen3").join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let (ids, _) = run(&load(&path, WeightsDtype::Auto));
    let (want, _) = run(&load(&fixture("tiny_qwen3"), WeightsDtype::Auto));
    assert_eq!(ids, want);
}

/// A `tokenizer.json` beside a GGUF is used over the vocabulary in its metadata, as
/// `transformers` uses one in the GGUF's folder: here one that lowercases first, so its ids
/// differ from the rebuilt tokenizer's.
#[test]
fn a_tokenizer_json_beside_a_gguf_is_taken_over_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_gguf(
        &fixture("tiny_qwen3"),
        "qwen3",
        GgmlDType::F32,
        "gpt2",
        &path,
    );
    let (rebuilt, _) = run(&load(&path, WeightsDtype::Auto));
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny_qwen3").join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    json["normalizer"] = serde_json::json!({"type": "Lowercase"});
    let beside = dir.path().join("tokenizer.json");
    std::fs::write(&beside, json.to_string()).unwrap();
    let (ids, _) = run(&load(&path, WeightsDtype::Auto));
    let lowercasing = tokenizers::Tokenizer::from_file(&beside).unwrap();
    let want: Vec<Vec<u32>> = TEXTS
        .iter()
        .map(|t| lowercasing.encode(*t, true).unwrap().get_ids().to_vec())
        .collect();
    assert_eq!(ids, want);
    assert_ne!(
        ids, rebuilt,
        "the lowercasing tokenizer must cut these texts differently"
    );
}

/// A LoRA adapter whose base is a GGUF file: on f32 tensors it gives the model the adapter gives
/// on the safetensors base; on Q8_0 blocks the matrices it changes are dequantised to take the
/// update (held or dequantised at load, the same model), and it is still the adapted model up
/// to quantisation.
#[test]
fn a_lora_adapter_merges_into_a_gguf_base() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter_on = |gguf: &str| {
        let base = tmp.path().join(gguf);
        let dir = tmp.path().join(format!("{gguf}-lora"));
        std::fs::create_dir(&dir).unwrap();
        let source = fixture("tiny_qwen2_lora");
        std::fs::copy(
            source.join("adapter_model.safetensors"),
            dir.join("adapter_model.safetensors"),
        )
        .unwrap();
        let mut config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(source.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        config["base_model_name_or_path"] = base.to_str().unwrap().into();
        std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
        dir
    };
    let qwen2 = fixture("tiny_qwen2");
    write_gguf(
        &qwen2,
        "qwen2",
        GgmlDType::F32,
        "gpt2",
        &tmp.path().join("f32.gguf"),
    );
    write_gguf(
        &qwen2,
        "qwen2",
        GgmlDType::Q8_0,
        "gpt2",
        &tmp.path().join("q8.gguf"),
    );
    let want = run(&load(&fixture("tiny_qwen2_lora"), WeightsDtype::Auto));
    let base = run(&load(&qwen2, WeightsDtype::Auto));
    assert!(
        worst(&base.1, &want.1) > 1e-2,
        "the adapter changes the model"
    );

    let f32 = run(&load(&adapter_on("f32.gguf"), WeightsDtype::Auto));
    assert_eq!(f32.0, want.0, "token ids");
    assert!(worst(&f32.1, &want.1) <= 1e-5, "{}", worst(&f32.1, &want.1));

    let q8 = adapter_on("q8.gguf");
    let (held, dense) = (
        run(&load(&q8, WeightsDtype::Auto)),
        run(&load(&q8, WeightsDtype::F32)),
    );
    assert!(
        worst(&held.1, &dense.1) <= 1e-5,
        "{}",
        worst(&held.1, &dense.1)
    );
    let d = worst(&held.1, &want.1);
    assert!(d > 0.0 && d < worst(&base.1, &want.1), "Q8_0 adapted: {d}");
}
