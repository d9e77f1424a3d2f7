//! `just bench-tcav`: the Captum-equivalent TCAV workload on the real all-MiniLM-L6-v2 — 2
//! concepts × 5 random runs × 50 examples, one layer (`blocks.3.hook_resid_post`), 32 target
//! examples of 128 tokens, a linear head on the mean-pooled last layer as the target — end to
//! end: model load, concept and random activations, target gradients, CAVs, scores and the
//! significance tests. Prints JSON with the time of each phase; nothing is asserted.
//! (glassbox's random-vs-random baseline chains R + 1 random sets, so 5 runs use 6 sets.)

use anyhow::Result;
use glassbox_concepts::{run_tcav, CavMethod, Convention, HookSets, Options, TargetGradients};
use glassbox_data::concepts::{builtin_corpus, random_sets, ConceptSet};
use glassbox_data::rng::SeededRng;
use glassbox_models::tokenizer::Encoded;
use glassbox_models::LoadOptions;
use glassbox_models::{load_model, resolve, HookPoint, ModelSpec, Pool, TokenBatch};
use glassbox_runner::gradients::{pooled_activations, target_gradients, LinearHead};
use std::time::Instant;

/// Captum 0.9 on this workload, this machine kind (median, from the issue).
const CAPTUM_SECONDS: f64 = 24.8;

fn main() -> Result<()> {
    let start = Instant::now();
    let mut phases = serde_json::Map::new();
    let mut lap = |name: &str, since: &mut Instant| {
        phases.insert(
            name.into(),
            serde_json::json!(since.elapsed().as_secs_f64()),
        );
        *since = Instant::now();
    };
    let mut t = Instant::now();
    let spec: ModelSpec = "sentence-transformers/all-MiniLM-L6-v2".parse()?;
    let model = load_model(
        resolve(&spec)?,
        LoadOptions {
            max_length: Some(128),
            allow_pickle: false,
            ..Default::default()
        },
    )?;
    lap("load_model", &mut t);

    let corpus = builtin_corpus();
    let pick = |word: &str| -> ConceptSet {
        ConceptSet {
            name: word.into(),
            source: corpus.source.clone(),
            sha256: corpus.sha256.clone(),
            texts: corpus
                .texts
                .iter()
                .cycle()
                .skip(if word == "food" { 150 } else { 0 })
                .take(50)
                .cloned()
                .collect(),
        }
    };
    let concepts = [pick("sports"), pick("food")];
    let randoms = random_sets(&corpus, 6, 50, 0)?;
    // 32 targets of 128 tokens: long texts, truncated by the tokenizer.
    let targets: Vec<String> = (0..32)
        .map(|i| {
            (0..40)
                .map(|j| corpus.texts[(i * 7 + j * 13) % corpus.texts.len()].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let layer = HookPoint::ResidPost(3);
    let mut pooled = Vec::new();
    for set in concepts.iter().chain(&randoms) {
        pooled.push(
            pooled_activations(&model, &set.texts, &[layer], Pool::Mean, 64)?
                .remove(&layer)
                .unwrap_or_default(),
        );
    }
    lap("concept_and_random_activations", &mut t);

    let width = model.model.hook_width(layer);
    let mut rng = SeededRng::new(1);
    let head = LinearHead {
        hook: HookPoint::ResidPost(5),
        pool: Pool::Mean,
        weight: (0..width).map(|_| (rng.unit_f64() - 0.5) as f32).collect(),
        bias: vec![0.0],
        n_classes: 2,
        class: 1,
        pooler: None,
    };
    let mut sums = Vec::with_capacity(32 * width);
    let mut n_tokens = 0;
    for chunk in targets.chunks(16) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let encoded = model.tokenizer()?.encode(&refs)?;
        let enc: Vec<&Encoded> = encoded.iter().collect();
        let batch = TokenBatch::from_encoded(&enc, model.pad_id, &model.device)?;
        n_tokens += batch.lengths.iter().sum::<usize>();
        let out = target_gradients(
            &model,
            &batch,
            &[layer],
            &head,
            glassbox_runner::gradients::Convention::Logit,
        )?;
        let g = out.gradients[&layer]
            .sum(1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        sums.extend(g);
    }
    lap("target_gradients", &mut t);

    let sets = HookSets {
        hook: layer,
        width,
        concepts: concepts
            .iter()
            .zip(&pooled)
            .map(|(c, p)| (c.name.as_str(), p.as_slice()))
            .collect(),
        randoms: pooled[concepts.len()..].iter().map(Vec::as_slice).collect(),
    };
    let gradients = [TargetGradients {
        target: "head",
        hook: layer,
        convention: Convention::Logit,
        sums: &sums,
    }];
    let opts = Options {
        method: CavMethod::Logistic,
        l2: 1.0,
        alpha: 0.05,
        min_cav_accuracy: 0.6,
        bootstrap: 1000,
        seed: 0,
    };
    let (cavs, scores) = run_tcav(&[sets], &gradients, &opts)?;
    lap("cavs_scores_and_tests", &mut t);
    let total = start.elapsed().as_secs_f64();
    let without_load = total - phases["load_model"].as_f64().unwrap_or(0.0);
    let report = serde_json::json!({
        "workload": "2 concepts x 5 random runs x 50 examples, 1 layer, 32 targets",
        "target_tokens": n_tokens,
        "cavs_trained": cavs.len(),
        "scores": scores.iter().map(|s| serde_json::json!({"concept": s.concept, "score": s.score, "p_holm": s.p_holm})).collect::<Vec<_>>(),
        "phases_s": phases,
        "total_s": total,
        "total_without_model_load_s": without_load,
        "captum_reference_s": CAPTUM_SECONDS,
        "speedup_vs_captum": CAPTUM_SECONDS / total,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
