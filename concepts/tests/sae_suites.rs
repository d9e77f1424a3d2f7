//! The pretrained-SAE suites as they ship (`scripts/reference_sae_suites.py`): Gemma Scope
//! `params.npz`, Gemma Scope 2 `params.safetensors`, Llama Scope `hyperparams.json` +
//! `checkpoints/final.safetensors` and sparsify `cfg.json` + `sae.safetensors` are recognised
//! by layout, name their hook, and encode and decode like the suites' reference loaders
//! (SAELens's converters; sparsify itself) to 1e-4 of scale. Folders of no known layout, and
//! transcoders, are refused by name.

use glassbox_concepts::sae::formats::{self, Format};
use serde_json::Value;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sae_suites")
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// Codes as a dense `rows × width` matrix, row-major.
fn dense(codes: &glassbox_concepts::sae::Codes, width: usize) -> Vec<f32> {
    let mut out = vec![0f32; codes.rows() * width];
    for row in 0..codes.rows() {
        for (j, v) in codes.row(row) {
            out[row * width + j] = v;
        }
    }
    out
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4 * scale, "{what} [{i}]: {g} vs {w}");
    }
}

#[test]
fn every_suite_reads_and_encodes_like_its_reference() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("reference.json")).unwrap())
            .unwrap();
    for (key, format, architecture) in [
        ("gemma_scope", Format::GemmaScope, "jumprelu"),
        ("gemma_scope_2", Format::GemmaScope2, "jumprelu"),
        ("llama_scope", Format::LlamaScope, "jumprelu"),
        ("sparsify", Format::Sparsify, "topk"),
    ] {
        let r = &reference[key];
        let dir = root().join(r["path"].as_str().unwrap());
        assert_eq!(formats::detect(&dir).unwrap(), format, "{key}");
        let loaded = formats::load(&dir).unwrap();
        assert_eq!(loaded.format, format.name());
        assert_eq!(loaded.sae.architecture.name(), architecture, "{key}");
        assert_eq!(
            loaded.hook_name.as_deref(),
            r["hook_name"].as_str(),
            "{key} hook"
        );
        let x = matrix(&r["inputs"]).concat();
        let codes = loaded.sae.encode(&x).unwrap();
        let want = matrix(&r["codes"]);
        let dense = dense(&codes, loaded.sae.width);
        let fired = want.concat().iter().filter(|v| **v > 0.0).count();
        assert!(fired > 0, "{key}: the fixture fires some latents");
        close(&format!("{key} codes"), &dense, &want.concat());
        let recon = loaded.sae.decode(&codes);
        close(
            &format!("{key} reconstructions"),
            &recon,
            &matrix(&r["reconstructions"]).concat(),
        );
    }
}

#[test]
fn unknown_layouts_and_transcoders_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = formats::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("no SAE format recognised") && e.contains("params.npz"),
        "{e}"
    );
    // A sparsify transcoder.
    let src = root().join("sparsify/layers.5");
    let t = dir.path().join("layers.5.mlp");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::copy(src.join("sae.safetensors"), t.join("sae.safetensors")).unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("cfg.json")).unwrap()).unwrap();
    cfg["transcode"] = true.into();
    std::fs::write(t.join("cfg.json"), cfg.to_string()).unwrap();
    let e = formats::load(&t).unwrap_err().to_string();
    assert!(
        e.contains("transcoder") && e.contains("read as sparsify"),
        "{e}"
    );
    // A Llama Scope transcoder.
    let src = root().join("llama-scope/Llama3_1-8B-Base-L4R-8x");
    let t = dir.path().join("ls");
    std::fs::create_dir_all(t.join("checkpoints")).unwrap();
    std::fs::copy(
        src.join("checkpoints/final.safetensors"),
        t.join("checkpoints/final.safetensors"),
    )
    .unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("hyperparams.json")).unwrap())
            .unwrap();
    cfg["hook_point_out"] = "blocks.4.hook_mlp_out".into();
    std::fs::write(t.join("hyperparams.json"), cfg.to_string()).unwrap();
    let e = formats::load(&t).unwrap_err().to_string();
    assert!(e.contains("blocks.4.hook_mlp_out"), "{e}");
}

/// A suite's repository folder (or a layer folder in it) instead of one SAE's: the error lists
/// the SAE folders below it.
#[test]
fn a_suite_folder_names_the_sae_folders_below_it() {
    let e = formats::load(&root().join("gemma-scope-2b-pt-res"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no SAE format recognised")
            && e.contains("(pass one of them): layer_3/width_16k/average_l0_5"),
        "{e}"
    );
    // Many: the first five by name, the rest counted.
    let e = formats::load(&root()).unwrap_err().to_string();
    assert!(
        e.contains(": dictionary_learning/batch_topk, dictionary_learning/gated,")
            && e.contains(" more"),
        "{e}"
    );
}

/// dictionary_learning's classes as its training saves them (`scripts/reference_dictionary_learning.py`).
fn dictionary_learning() -> PathBuf {
    root().join("dictionary_learning")
}

#[test]
fn dictionary_learning_pickles_read_and_encode_like_the_classes_themselves() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(dictionary_learning().join("reference.json")).unwrap(),
    )
    .unwrap();
    for (key, architecture) in [
        ("standard", "relu"),
        ("gated", "gated"),
        ("jumprelu", "jumprelu"),
        ("topk", "topk"),
        ("batch_topk", "jumprelu"),
        ("matryoshka_batch_topk", "jumprelu"),
    ] {
        let r = &reference[key];
        let dir = dictionary_learning().join(r["path"].as_str().unwrap());
        assert_eq!(
            formats::detect(&dir).unwrap(),
            Format::DictionaryLearning,
            "{key}"
        );
        let loaded = formats::load_with(&dir, true).unwrap();
        assert_eq!(loaded.format, "dictionary_learning");
        assert_eq!(loaded.sae.architecture.name(), architecture, "{key}");
        assert_eq!(
            loaded.hook_name.as_deref(),
            r["hook_name"].as_str(),
            "{key} hook"
        );
        assert_eq!(
            loaded.model_name.as_deref(),
            Some("EleutherAI/pythia-70m-deduped")
        );
        let x = matrix(&r["inputs"]).concat();
        let codes = loaded.sae.encode(&x).unwrap();
        let want = matrix(&r["codes"]);
        let dense = dense(&codes, loaded.sae.width);
        assert!(want.concat().iter().any(|v| *v > 0.0), "{key} fires");
        close(&format!("{key} codes"), &dense, &want.concat());
        close(
            &format!("{key} reconstructions"),
            &loaded.sae.decode(&codes),
            &matrix(&r["reconstructions"]).concat(),
        );
        // `sae inspect` reads the config alone.
        let seen = formats::inspect::inspect(&dir).unwrap();
        assert_eq!(seen.format, "dictionary_learning");
        assert_eq!((seen.d_in, seen.d_sae), (Some(8), Some(16)), "{key}");
        assert_eq!(seen.hook_name.as_deref(), r["hook_name"].as_str());
    }
}

#[test]
fn pickles_are_read_on_request_only_and_never_run() {
    let dir = dictionary_learning().join("standard");
    let e = formats::load(&dir).unwrap_err().to_string();
    assert!(e.contains("pickle") && e.contains("--allow-pickle"), "{e}");
    // Unpickling `malicious/ae.pt` in Python calls os.system("touch glassbox-pickle-ran").
    let work = tempfile::tempdir().unwrap();
    let bad = work.path().join("malicious");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["ae.pt", "config.json"] {
        std::fs::copy(dictionary_learning().join("malicious").join(f), bad.join(f)).unwrap();
    }
    let cwd = std::env::current_dir().unwrap();
    let e = formats::load_with(&bad, true).unwrap_err().to_string();
    assert!(e.contains("ae.pt") && e.contains("system"), "{e}");
    assert!(
        !cwd.join("glassbox-pickle-ran").exists()
            && !work.path().join("glassbox-pickle-ran").exists(),
        "the pickle's call ran"
    );
}

/// Goodfire and Qwen-Scope: bare pickled state dicts named as on the Hub
/// (`scripts/reference_pickled_suites.py`, SAELens's converters as the reference).
#[test]
fn goodfire_and_qwen_scope_pickles_read_and_encode_like_saelens() {
    let root = root().join("pickled");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("reference.json")).unwrap())
            .unwrap();
    for (key, format, architecture) in [
        ("goodfire", Format::Goodfire, "relu"),
        ("qwen_scope", Format::QwenScope, "topk"),
    ] {
        let r = &reference[key];
        let file = root.join(r["path"].as_str().unwrap());
        let folder = file.parent().unwrap();
        // The file, or the folder holding just it.
        for path in [file.as_path(), folder] {
            assert_eq!(formats::detect(path).unwrap(), format, "{key}");
        }
        let e = formats::load(folder).unwrap_err().to_string();
        assert!(
            e.contains("--allow-pickle") && e.contains(format.name()),
            "{e}"
        );
        let loaded = formats::load_with(folder, true).unwrap();
        assert_eq!(loaded.format, format.name());
        assert_eq!(loaded.sae.architecture.name(), architecture, "{key}");
        assert_eq!(
            loaded.hook_name.as_deref(),
            r["hook_name"].as_str(),
            "{key}"
        );
        assert_eq!(
            loaded.model_name.as_deref(),
            r["model_name"].as_str(),
            "{key}"
        );
        let x = matrix(&r["inputs"]).concat();
        let codes = loaded.sae.encode(&x).unwrap();
        let want = matrix(&r["codes"]);
        assert!(want.concat().iter().any(|v| *v > 0.0), "{key} fires");
        close(&format!("{key} codes"), &dense(&codes, 16), &want.concat());
        close(
            &format!("{key} reconstructions"),
            &loaded.sae.decode(&codes),
            &matrix(&r["reconstructions"]).concat(),
        );
        let seen = formats::inspect::inspect(&file).unwrap();
        assert_eq!(seen.format, format.name());
        assert_eq!(seen.hook_name.as_deref(), r["hook_name"].as_str());
        assert_eq!(seen.model_name.as_deref(), r["model_name"].as_str());
    }
    assert_eq!(
        formats::inspect::inspect(&root.join("SAE-Res-Qwen3-1.7B-Base-W32K-L0_4"))
            .unwrap()
            .k,
        Some(4)
    );

    // A Qwen-Scope file out of its repo's folder has no k: named. Several layers in one folder:
    // pick one. A Goodfire-named pickle that would run code: refused, nothing run.
    let work = tempfile::tempdir().unwrap();
    let qwen = root.join("SAE-Res-Qwen3-1.7B-Base-W32K-L0_4/layer2.sae.pt");
    std::fs::copy(&qwen, work.path().join("layer2.sae.pt")).unwrap();
    let e = formats::load_with(&work.path().join("layer2.sae.pt"), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("L0_<k>") && e.contains("layer2.sae.pt"), "{e}");
    std::fs::copy(&qwen, work.path().join("layer3.sae.pt")).unwrap();
    let e = formats::detect(work.path()).unwrap_err().to_string();
    assert!(e.contains("several per-layer SAE files"), "{e}");
    let bad = work.path().join("goodfire");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(
        dictionary_learning().join("malicious/ae.pt"),
        bad.join("Llama-3.1-8B-Instruct-SAE-l19.pth"),
    )
    .unwrap();
    let e = formats::load_with(&bad, true).unwrap_err().to_string();
    assert!(e.contains("system") && e.contains("goodfire"), "{e}");
    assert!(!work.path().join("glassbox-pickle-ran").exists());
}
