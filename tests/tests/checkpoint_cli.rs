//! Checkpoints as they ship, through the CLI and the Hugging Face cache layout: a Qwen3
//! checkpoint saved as two bf16 safetensors shards with an index, in an HF-layout cache
//! (`hub/models--ORG--NAME/{snapshots/<sha>,refs/main}`, `HF_HUB_OFFLINE=1`), resolves by repo
//! id, extracts with its weights held in bf16 (recorded in the run's config) and gives the
//! activations of the same weights upcast; `--compute-dtype bf16` is recorded and changes the
//! activations by bf16 rounding only; bad `--weights-dtype`/`--compute-dtype` requests and a
//! missing shard exit 2 with the run directory untouched. A sharded PyTorch pickle checkpoint
//! resolves the same way and loads with `--allow-pickle`.

use candle_core::{DType, Device, Tensor};
use glassbox_data::RunDir;
use glassbox_tests::*;
use std::collections::HashMap;
use std::path::Path;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// An HF-layout cache under `home` holding `fixture` as `org/NAME` in bf16 shards.
fn cache_with_shards(home: &Path, fixture: &str, name: &str) -> std::path::PathBuf {
    let repo = home.join(format!("hub/models--org--{name}"));
    let snap = repo.join("snapshots").join(SHA);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), SHA).unwrap();
    let src = workspace_root().join("tests/fixtures").join(fixture);
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), snap.join(f)).unwrap();
    }
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let chunk: HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].to_dtype(DType::BF16).unwrap()))
            .collect();
        candle_core::safetensors::save(&chunk, snap.join(&file)).unwrap();
        for n in part {
            map.insert((*n).clone(), file.clone().into());
        }
    }
    std::fs::write(
        snap.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    snap
}

fn extract(home: &Path, model: &str, run: &Path, extra: &[&str]) -> std::process::Output {
    glassbox()
        .env("HF_HOME", home)
        .args(["extract", "--model", model, "--data"])
        .arg(workspace_root().join("data/sets/default.jsonl"))
        .args(["--hooks", "blocks.1.hook_resid_post", "--max-length", "32"])
        .args(["--no-token-level", "--pools", "mean", "--run"])
        .arg(run)
        .args(extra)
        .output()
        .unwrap()
}

/// Every pooled row of the run's one hook, in example order.
fn pooled(run: &Path) -> Vec<f32> {
    let r = RunDir::new(run);
    let hook = r.stored_hooks(true).unwrap()[0];
    let dir = r.pooled_dir(hook, glassbox_data::Pool::Mean);
    glassbox_data::store::read_pooled_matrix(&dir)
        .expect("pooled activations")
        .values
}

#[test]
fn sharded_bf16_checkpoints_resolve_from_the_cache_and_extract() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    cache_with_shards(&home, "tiny_qwen3", "tiny-qwen3");
    let out = glassbox()
        .env("HF_HOME", &home)
        .args(["hooks", "org/tiny-qwen3"])
        .output()
        .unwrap();
    assert_success(&out, "hooks");
    assert!(String::from_utf8_lossy(&out.stdout).contains("blocks.1.attn.hook_z"));

    let (kept, upcast) = (tmp.path().join("kept"), tmp.path().join("upcast"));
    assert_success(&extract(&home, "org/tiny-qwen3", &kept, &[]), "extract");
    let args = ["--weights-dtype", "f32"];
    assert_success(
        &extract(&home, "org/tiny-qwen3", &upcast, &args),
        "extract f32",
    );
    let config = std::fs::read_to_string(kept.join("config.toml")).unwrap();
    assert!(config.contains("weights_dtype = \"auto\""), "{config}");
    let manifest = RunDir::new(&kept).require_stage("extract").unwrap();
    assert_eq!(manifest.model.unwrap().family, "qwen3");
    let (a, b) = (pooled(&kept), pooled(&upcast));
    assert!(
        !a.is_empty() && a == b,
        "bf16 held and upcast give the same activations"
    );

    // bf16 products: recorded, a different extraction (fingerprint), within bf16 rounding.
    let rounded = tmp.path().join("rounded");
    let args = ["--compute-dtype", "bf16"];
    assert_success(
        &extract(&home, "org/tiny-qwen3", &rounded, &args),
        "extract bf16",
    );
    let config = std::fs::read_to_string(rounded.join("config.toml")).unwrap();
    assert!(config.contains("compute_dtype = \"bf16\""), "{config}");
    let c = pooled(&rounded);
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&c)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        a.len() == c.len() && diff > 0.0 && diff <= scale / 16.0,
        "{diff} of {scale}"
    );
}

/// A sharded PyTorch pickle checkpoint (`pytorch_model.bin.index.json` and its shards, no
/// safetensors) resolves by repo id from the cache and extracts with `--allow-pickle` to the
/// activations of the safetensors it was saved from; without the flag it exits 2.
#[test]
fn pickled_shards_resolve_from_the_cache_with_allow_pickle() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let repo = home.join("hub/models--org--tiny-llama-pickled");
    let snap = repo.join("snapshots").join(SHA);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), SHA).unwrap();
    let src = workspace_root().join("tests/fixtures/tiny_llama_pickled_shards");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, snap.join(path.file_name().unwrap())).unwrap();
    }
    let refused = tmp.path().join("refused");
    let out = extract(&home, "org/tiny-llama-pickled", &refused, &[]);
    assert_bad_input(&out, &["--allow-pickle"]);
    assert!(!refused.exists(), "a refused extraction writes no run");
    let (pickled, original) = (tmp.path().join("pickled"), tmp.path().join("original"));
    let args = ["--allow-pickle"];
    let out = extract(&home, "org/tiny-llama-pickled", &pickled, &args);
    assert_success(&out, "extract from pickled shards");
    let local = workspace_root().join("tests/fixtures/tiny_llama");
    assert_success(
        &extract(&home, local.to_str().unwrap(), &original, &[]),
        "extract",
    );
    let (a, b) = (pooled(&pickled), pooled(&original));
    assert!(!a.is_empty() && a == b, "the same activations");
}

#[test]
fn bad_weight_requests_exit_2_and_leave_the_run_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    let snap = cache_with_shards(&home, "tiny_qwen3", "tiny-qwen3");
    let run = tmp.path().join("run");
    // A family whose kernels read f32 weights.
    let gpt2 = workspace_root().join("tests/fixtures/tiny_gpt2");
    let out = extract(
        &home,
        gpt2.to_str().unwrap(),
        &run,
        &["--weights-dtype", "bf16"],
    );
    assert_bad_input(&out, &["--weights-dtype bf16", "gpt2"]);
    assert!(!run.exists(), "no run directory was created");
    let out = extract(
        &home,
        gpt2.to_str().unwrap(),
        &run,
        &["--compute-dtype", "bf16"],
    );
    assert_bad_input(
        &out,
        &["--compute-dtype bf16", "gpt2 family computes in f32"],
    );
    assert!(!run.exists(), "no run directory was created");
    // bf16 products from weights upcast to f32.
    let args = ["--weights-dtype", "f32", "--compute-dtype", "bf16"];
    let out = extract(&home, "org/tiny-qwen3", &run, &args);
    assert_bad_input(&out, &["--compute-dtype bf16", "--weights-dtype bf16"]);
    assert!(!run.exists(), "no run directory was created");
    // An unknown dtype.
    let out = extract(&home, "org/tiny-qwen3", &run, &["--weights-dtype", "int4"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("int4"));
    // A shard the index lists, gone.
    std::fs::remove_file(snap.join("model-00002-of-00002.safetensors")).unwrap();
    let out = extract(&home, "org/tiny-qwen3", &run, &[]);
    assert_bad_input(&out, &["model-00002-of-00002.safetensors"]);
    assert!(!run.exists(), "no run directory was created");
}
