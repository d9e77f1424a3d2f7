//! Checkpoints as they ship: the tiny Gemma-2 fixture re-saved in bf16 and split into two
//! safetensors shards with a `model.safetensors.index.json`, loaded from a folder. Weights held
//! in bf16 (`--weights-dtype auto`) and the same weights upcast at load (`f32`) give the same
//! numbers (bf16 → f32 is exact and computation is f32 either way); against the original f32
//! checkpoint the difference is bf16 rounding of the weights, measured and bounded. A missing
//! shard, a tensor the index promises but its shard lacks, and a reduced-precision request for
//! a family that computes from f32 weights are named errors; an untied checkpoint saved without
//! its output head (a base model) loads without an unembedding; Llama-family checkpoints held in
//! bf16 on request match their fast f32 forward.

use candle_core::{DType, Device, Tensor};
use glassbox_models::{
    load_model, resolve, Capture, HookPoint, LoadOptions, LoadedModel, ModelSpec, TokenBatch,
    WeightsDtype,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// `name`'s fixture re-saved in `dtype` as two shards plus an index, in `dir`.
fn shard(name: &str, dtype: DType, dir: &Path) {
    let src = fixture(name);
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (i, part) in [first, second].iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let chunk: HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].to_dtype(dtype).unwrap()))
            .collect();
        candle_core::safetensors::save(&chunk, dir.join(&file)).unwrap();
        for n in part.iter() {
            map.insert((*n).clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
}

fn load(dir: &Path, dtype: WeightsDtype) -> glassbox_models::Result<LoadedModel> {
    let spec: ModelSpec = dir.to_str().unwrap().parse().unwrap();
    load_model(
        resolve(&spec)?,
        LoadOptions {
            weights_dtype: dtype,
            ..Default::default()
        },
    )
}

/// The residual stream after every block, the final norm and the logits on one text.
fn outputs(model: &LoadedModel) -> Vec<f32> {
    captured(
        model,
        &[
            HookPoint::ResidPost(0),
            HookPoint::ResidPost(1),
            HookPoint::LnFinal,
            HookPoint::Logits,
        ],
    )
    .unwrap()
}

/// `points` captured on one text, flattened in order.
fn captured(model: &LoadedModel, points: &[HookPoint]) -> glassbox_models::Result<Vec<f32>> {
    let text = "Stock prices fell sharply after the announcement, and then some more.";
    let encoded = model.tokenizer()?.encode(&[text])?;
    let batch = TokenBatch::from_encoded(&[&encoded[0]], model.pad_id, &model.device)?;
    let mut capture = Capture::new(points.iter().copied());
    model.model.forward((&batch).into(), &mut capture)?;
    let mut out = Vec::new();
    for p in points {
        out.extend(capture.captured[p].flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn sharded_bf16_checkpoints_load_and_match_their_upcast_weights() {
    let dir = tempfile::tempdir().unwrap();
    shard("tiny_gemma2", DType::BF16, dir.path());
    let kept = load(dir.path(), WeightsDtype::Auto).unwrap();
    let upcast = load(dir.path(), WeightsDtype::F32).unwrap();
    assert_eq!(kept.model.family(), "gemma2");
    let (a, b) = (outputs(&kept), outputs(&upcast));
    assert_eq!(max_diff(&a, &b), 0.0, "bf16 held vs upcast at load");
    // An f32 checkpoint held in bf16 on request rounds exactly as the bf16 checkpoint did.
    let original = fixture("tiny_gemma2");
    let halved = load(&original, WeightsDtype::Bf16).unwrap();
    assert_eq!(max_diff(&outputs(&halved), &a), 0.0, "--weights-dtype bf16");
    // Against the f32 weights: bf16 keeps 8 significant bits (relative rounding ≤ 2⁻⁹ per
    // weight); through two blocks, soft-caps and the final norm the outputs move by a few
    // hundredths of their scale — measured 1.8 % here, bounded at 5 %.
    let full = outputs(&load(&original, WeightsDtype::Auto).unwrap());
    let scale = full.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = max_diff(&full, &a);
    eprintln!("bf16 vs f32 weights: max |diff| {d} of scale {scale}");
    assert!(d > 0.0 && d < 0.05 * scale, "{d} of {scale}");
}

#[test]
fn a_missing_shard_or_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    shard("tiny_qwen3", DType::BF16, dir.path());
    let index = dir.path().join("model.safetensors.index.json");
    // A tensor the index maps to shard 1 that shard 1 does not hold.
    let text = std::fs::read_to_string(&index).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["weight_map"]["model.layers.9.mlp.up_proj.weight"] =
        "model-00001-of-00002.safetensors".into();
    std::fs::write(&index, v.to_string()).unwrap();
    let e = load(dir.path(), WeightsDtype::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model-00001-of-00002.safetensors")
            && e.contains("model.layers.9.mlp.up_proj.weight"),
        "{e}"
    );
    std::fs::write(&index, text).unwrap();
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load(dir.path(), WeightsDtype::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn reduced_precision_is_refused_where_the_family_computes_from_f32() {
    let e = load(&fixture("tiny_gpt2"), WeightsDtype::Bf16)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("--weights-dtype bf16") && e.contains("gpt2") && e.contains("gemma2"),
        "{e}"
    );
}

/// A bf16 Llama-family checkpoint: upcast for the fast forward under `auto`, or held in bf16
/// on the shared graph decoder under `--weights-dtype bf16` — the same weights' values, so the
/// same numbers up to the two forwards' f32 summation order (Mistral: through its window).
#[test]
fn llama_family_weights_held_in_bf16_on_request() {
    for name in ["tiny_llama", "tiny_qwen2", "tiny_mistral"] {
        let dir = tempfile::tempdir().unwrap();
        shard(name, DType::BF16, dir.path());
        let fast = load(dir.path(), WeightsDtype::Auto).unwrap();
        let held = load(dir.path(), WeightsDtype::Bf16).unwrap();
        assert_eq!(held.model.family(), "llama");
        let (a, b) = (outputs(&fast), outputs(&held));
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_diff(&a, &b);
        assert!(d <= 1e-4 * scale.max(1.0), "{name}: {d} of {scale}");
    }
}

/// A PyTorch pickle checkpoint in shards (`pytorch_model.bin.index.json`, as older Hub repos ship
/// large models; `scripts/reference_pickled_shards.py`) loads with `--allow-pickle` to the
/// numbers of the safetensors it was saved from; without the flag it is refused, and a shard the
/// index lists but the folder lacks is named.
#[test]
fn sharded_pickle_checkpoints_load_with_allow_pickle() {
    let with = |dir: &Path, allow_pickle: bool| {
        let spec: ModelSpec = dir.to_str().unwrap().parse().unwrap();
        let options = LoadOptions {
            allow_pickle,
            ..Default::default()
        };
        load_model(resolve(&spec)?, options)
    };
    let shards = fixture("tiny_llama_pickled_shards");
    let e = with(&shards, false).err().expect("refused").to_string();
    assert!(
        e.contains("--allow-pickle") && e.contains("pytorch_model.bin.index.json"),
        "{e}"
    );
    let pickled = with(&shards, true).unwrap();
    let original = load(&fixture("tiny_llama"), WeightsDtype::Auto).unwrap();
    assert_eq!(outputs(&pickled), outputs(&original));
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&shards).unwrap() {
        let path = entry.unwrap().path();
        if !path.ends_with("pytorch_model-00002-of-00002.bin") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let e = with(dir.path(), true)
        .err()
        .expect("a shard missing")
        .to_string();
    assert!(e.contains("pytorch_model-00002-of-00002.bin"), "{e}");
}

/// `name`'s fixture in `dir` with its `config.json` and tensors edited.
fn edited(
    name: &str,
    dir: &Path,
    config: impl FnOnce(&mut serde_json::Value),
    tensors: impl FnOnce(&mut HashMap<String, Tensor>),
) {
    let src = fixture(name);
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config(&mut c);
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    let mut t =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    tensors(&mut t);
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
}

/// `name`'s fixture in `dir` with the tensor `drop` left out of its weights.
fn without_tensor(name: &str, drop: &str, dir: &Path) {
    edited(
        name,
        dir,
        |_| {},
        |t| {
            assert!(t.remove(drop).is_some(), "{name} has no {drop}");
        },
    );
}

/// A checkpoint whose config unties the output head but whose weights hold none — a base model
/// as `AutoModel` saves it (`MistralModel`, `Qwen3Model`, `GPTNeoXModel`, `GPT2Model`, …) — loads
/// without an unembedding: the causal LM's hidden states, no `logits` hook, and what needs
/// next-token logits says why. (Reading logits through the embedding, as a tied model does,
/// would silently not be the checkpoint's model.) A sequence classifier carries no LM head
/// either (`score` is its output) and loads untied.
#[test]
fn an_untied_checkpoint_without_its_head_loads_as_a_base_model() {
    let hidden = [
        HookPoint::ResidPost(0),
        HookPoint::ResidPost(1),
        HookPoint::LnFinal,
    ];
    let gpt2 = tempfile::tempdir().unwrap();
    untied_copy("tiny_gpt2", gpt2.path(), None);
    for (fixture_name, head) in [
        ("tiny_qwen3", "lm_head.weight"),
        ("tiny_neox", "embed_out.weight"),
        ("tiny_mistral", "lm_head.weight"),
        ("tiny_gpt2", ""),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let folder = if head.is_empty() {
            gpt2.path()
        } else {
            without_tensor(fixture_name, head, dir.path());
            dir.path()
        };
        let base = load(folder, WeightsDtype::Auto)
            .unwrap_or_else(|e| panic!("{fixture_name} without its head: {e}"));
        let lm = load(&fixture(fixture_name), WeightsDtype::Auto).unwrap();
        assert!(base.model.unembedding().is_none(), "{fixture_name}");
        assert!(base
            .model
            .unembed(&Tensor::zeros((1, 1, 32), DType::F32, &Device::Cpu).unwrap())
            .is_none());
        assert!(!base.model.hook_points().contains(&HookPoint::Logits));
        assert_eq!(
            captured(&base, &hidden).unwrap(),
            captured(&lm, &hidden).unwrap(),
            "{fixture_name}: the base model's hidden states are the LM's"
        );
        let e = captured(&base, &[HookPoint::Logits])
            .expect_err("no logits without a head")
            .to_string();
        assert!(
            e.contains("tie_word_embeddings: false"),
            "{fixture_name}: {e}"
        );
        let why = glassbox_models::why_no_next_token(base.model.as_ref());
        assert!(
            why.contains("language-model head") && why.contains("AutoModel"),
            "{why}"
        );
    }
    let classifier = load(&fixture("tiny_llama_classifier"), WeightsDtype::Auto).unwrap();
    assert!(!classifier.model.labels().is_empty());
    // GPT-2 as `GPT2ForSequenceClassification` saves it untied: `score.weight`, no `lm_head`.
    let dir = tempfile::tempdir().unwrap();
    untied_copy("tiny_gpt2", dir.path(), Some(2));
    let classifier = load(dir.path(), WeightsDtype::Auto).unwrap();
    assert_eq!(classifier.model.labels().len(), 2);
    let why = glassbox_models::why_no_next_token(classifier.model.as_ref());
    assert!(why.contains("classifier"), "{why}");
}

/// `name`'s fixture in `dir` with `tie_word_embeddings: false` and no head of its own, plus a
/// zero `score.weight` of `classes` rows when given (a sequence classifier).
fn untied_copy(name: &str, dir: &Path, classes: Option<usize>) {
    edited(
        name,
        dir,
        |c| c["tie_word_embeddings"] = false.into(),
        |t| {
            if let Some(rows) = classes {
                let wte = t.iter().find(|(k, _)| k.ends_with("wte.weight")).unwrap();
                let width = wte.1.dim(1).unwrap();
                let score = Tensor::zeros((rows, width), DType::F32, &Device::Cpu).unwrap();
                t.insert("score.weight".into(), score);
            }
        },
    );
}

/// Token classifiers and span heads (`BertForTokenClassification`, `LlamaForTokenClassification`,
/// `…ForQuestionAnswering`: outputs per token) load as the model under the head, with a note —
/// its hidden states, no classes. Read as a sequence classifier's, a token classifier's layer was
/// refused for the pooler it lacks (BERT) or taken at the last token without its bias (decoders'
/// `score`): class logits the checkpoint never computes.
#[test]
fn per_token_heads_load_as_the_model_under_them() {
    let hidden = [HookPoint::ResidPost(0), HookPoint::ResidPost(1)];
    let same_states = |dir: &Path, name: &str| -> LoadedModel {
        let model = load(dir, WeightsDtype::Auto).unwrap_or_else(|e| panic!("{name}: {e}"));
        let original = load(&fixture(name), WeightsDtype::Auto).unwrap();
        assert_eq!(
            captured(&model, &hidden).unwrap(),
            captured(&original, &hidden).unwrap(),
            "{name}"
        );
        assert!(model.model.labels().is_empty(), "{name}: no classes");
        // Nor next-token logits: a tied embedding read out is no output of the checkpoint.
        assert!(model.model.unembedding().is_none(), "{name}");
        model
    };
    for (name, arch, pooler) in [
        (
            "tiny_bert_classifier",
            "BertForTokenClassification",
            "bert.pooler.",
        ),
        ("tiny_llama_classifier", "LlamaForTokenClassification", "-"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        edited(
            name,
            dir.path(),
            |c| c["architectures"] = serde_json::json!([arch]),
            |t| t.retain(|k, _| !k.starts_with(pooler)),
        );
        let model = same_states(dir.path(), name);
        assert!(
            model.notes.iter().any(|n| n.contains(arch)),
            "{:?}",
            model.notes
        );
    }
    // Without `architectures`, a decoder's `score` with a bias is a token classifier's.
    let dir = tempfile::tempdir().unwrap();
    edited(
        "tiny_llama_classifier",
        dir.path(),
        |c| {
            c.as_object_mut().unwrap().remove("architectures");
        },
        |t| {
            let rows = t["score.weight"].dim(0).unwrap();
            let bias = Tensor::zeros(rows, DType::F32, &Device::Cpu).unwrap();
            t.insert("score.bias".into(), bias);
        },
    );
    let model = same_states(dir.path(), "tiny_llama_classifier");
    assert!(
        model.notes.iter().any(|n| n.contains("bias")),
        "{:?}",
        model.notes
    );
    // Llama's own `LlamaForQuestionAnswering` keeps the model under `transformer.` (tied).
    let dir = tempfile::tempdir().unwrap();
    edited(
        "tiny_llama",
        dir.path(),
        |c| c["architectures"] = serde_json::json!(["LlamaForQuestionAnswering"]),
        |t| {
            let renamed: HashMap<String, Tensor> = t
                .drain()
                .map(|(k, v)| (k.replacen("model.", "transformer.", 1), v))
                .collect();
            *t = renamed;
            let span = Tensor::zeros((2, 32), DType::F32, &Device::Cpu).unwrap();
            t.insert("qa_outputs.weight".into(), span);
        },
    );
    let model = same_states(dir.path(), "tiny_llama");
    assert!(model.notes.iter().any(|n| n.contains("QuestionAnswering")));
}
