//! PEFT LoRA adapters (scripts/reference_lora.py) load as their base fixture with the adapter
//! merged, at parity with PEFT's own unmerged forward: every block's input, the last block's
//! output, the final norm and the logits ≤ 1e-4, one text at a time and as a padded batch —
//! rsLoRA with rank and alpha patterns on every Llama projection; Qwen2 with an embedding
//! LoRA and its head trained whole; GPT-2's `Conv1D` layers (`fan_in_fan_out`). The adapter
//! resolves from a folder (its base a path beside it) and from an HF-layout cache (its base a
//! Hub id).

mod decoder_parity;

use decoder_parity::*;
use glassbox_models::{resolve, HookPoint, ModelSpec};

#[test]
fn rslora_with_rank_and_alpha_patterns_merges_as_peft_runs_it() {
    one_at_a_time("tiny_llama_lora", "llama");
    padded_batch("tiny_llama_lora");
}

#[test]
fn an_embedding_lora_and_a_head_trained_whole_merge_as_peft_runs_them() {
    one_at_a_time("tiny_qwen2_lora", "llama");
    padded_batch("tiny_qwen2_lora");
}

#[test]
fn gpt2_conv1d_adapters_merge_transposed() {
    one_at_a_time("tiny_gpt2_lora", "gpt2");
    padded_batch("tiny_gpt2_lora");
}

/// The adapters change their models (else parity above would prove nothing about the merge),
/// and say so in the load notes.
#[test]
fn adapters_change_their_base_and_say_so() {
    for (adapter, base) in [
        ("tiny_llama_lora", "tiny_llama"),
        ("tiny_qwen2_lora", "tiny_qwen2"),
        ("tiny_gpt2_lora", "tiny_gpt2"),
    ] {
        let adapted = load(&fixture(adapter));
        assert!(
            adapted
                .notes
                .iter()
                .any(|n| n.contains("LoRA adapter merged")),
            "{:?}",
            adapted.notes
        );
        let refs = references(&fixture(adapter));
        let first = [&refs[0]];
        let (a, b) = (
            &run(&adapted, &first)[0],
            &run(&load(&fixture(base)), &first)[0],
        );
        let d = max_diff(&a.1, &b.1);
        assert!(d > 1e-2, "{adapter}: logits moved by {d} only");
        let last = HookPoint::LnFinal;
        assert!(max_diff(&a.0[&last], &b.0[&last]) > 1e-3, "{adapter}");
    }
}

/// An adapter repo in a Hugging Face cache whose config names its base by Hub id: both resolve
/// from the cache, the run's identity is the adapter's. (The only test in this binary that sets
/// `HF_HOME`; the others load local folders.)
#[test]
fn an_adapter_repo_on_a_hub_base_resolves_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = |repo: &str, from: &str, files: &[&str]| {
        let dir = tmp
            .path()
            .join(format!("hf/hub/models--{}", repo.replace('/', "--")));
        let snap = dir.join("snapshots").join(sha);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::write(dir.join("refs/main"), sha).unwrap();
        for f in files {
            std::fs::copy(fixture(from).join(f), snap.join(f)).unwrap();
        }
        snap
    };
    snapshot(
        "org/tiny-qwen2",
        "tiny_qwen2",
        &["config.json", "model.safetensors", "tokenizer.json"],
    );
    let adapter = snapshot(
        "org/tiny-qwen2-lora",
        "tiny_qwen2_lora",
        &["adapter_model.safetensors"],
    );
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny_qwen2_lora").join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    config["base_model_name_or_path"] = "org/tiny-qwen2".into();
    std::fs::write(adapter.join("adapter_config.json"), config.to_string()).unwrap();
    std::env::set_var("HF_HOME", tmp.path().join("hf"));
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let spec: ModelSpec = "org/tiny-qwen2-lora".parse().unwrap();
    let resolved = resolve(&spec).unwrap();
    assert_eq!(resolved.id, "org/tiny-qwen2-lora");
    assert_eq!((resolved.source, resolved.revision.as_str()), ("hub", sha));
    assert!(resolved.weights.ends_with("model.safetensors"));
    let model = glassbox_models::load_model(resolved, Default::default()).unwrap();
    let refs = references(&fixture("tiny_qwen2_lora"));
    check(&model, &[&refs[0]]);
}

/// A ViT adapter saved under `transformers` 5, whose module names (`vit.layers.N.attention.q_proj`,
/// `mlp.fc1`, …) are not the checkpoint's (`vit.encoder.layer.N.attention.attention.query`,
/// `intermediate.dense`, …), merges onto the right tensors: logits as PEFT's on tiny_vit's
/// reference pixels (≤ 1e-4 of their scale).
#[test]
fn a_vit_adapter_with_transformers_5_module_names_merges_onto_the_checkpoint() {
    use candle_core::Device;
    use glassbox_models::{Capture, ImageBatch};
    let dir = fixture("tiny_vit_lora");
    let model = load(&dir);
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let pixels = &reference["pixel_values"];
    let (n, _, h, w) = pixels.dims4().unwrap();
    let nhwc: Vec<f32> = pixels
        .permute((0, 2, 3, 1))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let batch = ImageBatch {
        pixels: nhwc,
        batch: n,
        height: h,
        width: w,
    };
    let got: Vec<f32> = model
        .model
        .forward((&batch).into(), &mut Capture::new([]))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want: Vec<f32> = reference["logits"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = max_diff(&[got], &[want]);
    assert!(d <= 1e-4 * scale.max(1.0), "logits off by {d}");
}

/// An adapter saved as older PEFT versions saved them (`adapter_model.bin`, a PyTorch pickle)
/// loads with `allow_pickle` to the model its safetensors copy gives, and is refused without it,
/// naming the flag.
#[test]
fn a_pickled_adapter_loads_with_allow_pickle_as_its_safetensors_copy() {
    let spec: ModelSpec = fixture("tiny_qwen2_lora_bin")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let e = glassbox_models::load_model(resolve(&spec).unwrap(), Default::default())
        .err()
        .expect("a pickle needs the flag")
        .to_string();
    assert!(
        e.contains("--allow-pickle") && e.contains("adapter_model.bin"),
        "{e}"
    );
    let options = glassbox_models::LoadOptions {
        allow_pickle: true,
        ..Default::default()
    };
    let pickled = glassbox_models::load_model(resolve(&spec).unwrap(), options).unwrap();
    let refs = references(&fixture("tiny_qwen2_lora"));
    let all: Vec<&Reference> = refs.iter().collect();
    check(&pickled, &all);
}
