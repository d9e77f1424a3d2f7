//! Activation patching against PyTorch forward hooks on `transformers` (the committed
//! `scripts/reference_patching.py` and `reference_patching_smollm2.py` outputs in
//! `tests/fixtures/patching/`): every patched metric of the tiny random GPT-2, Llama and NeoX,
//! and of the real SmolLM2-135M on two IOI pairs, within 1e-3 of the pair's |clean − corrupted|
//! gap.
//! Also: attribution patching is exact where the metric is linear in the activation (the final
//! norm's output feeds the unembedding linearly), and noising mirrors denoising.

use glassbox_data::pairs::read_pairs;
use glassbox_data::HookPoint;
use glassbox_models::{load_model, resolve, LoadOptions, LoadedModel, ModelSpec};
use glassbox_runner::patching::{
    patch_pair, prepare_pairs, Direction, Metric, PatchOptions, Positions, PreparedPair,
};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    glassbox_tests::workspace_root().join("tests/fixtures")
}

fn tiny(name: &str) -> LoadedModel {
    let spec: ModelSpec = fixtures().join(name).display().to_string().parse().unwrap();
    load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap()
}

/// A tiny decoder with the committed pairs, tokenised.
fn tiny_with_pairs(name: &str) -> (LoadedModel, Vec<PreparedPair>) {
    let model = tiny(name);
    let pairs = read_pairs(&fixtures().join("patching/pairs.jsonl")).unwrap();
    let prepared = prepare_pairs(&model, &pairs).unwrap();
    (model, prepared)
}

/// A pair's clean and corrupted metrics (one cheap patched run: the last residual, last position).
fn metrics(model: &LoadedModel, pair: &PreparedPair) -> (f64, f64) {
    let mut opts = options(vec![HookPoint::ResidPost(1)]);
    opts.positions = Positions::Last;
    opts.atp = false;
    let (_, s) = patch_pair(model, pair, &opts).unwrap();
    (s.metric_clean, s.metric_corrupted)
}

fn options(hooks: Vec<HookPoint>) -> PatchOptions {
    PatchOptions {
        hooks,
        positions: Positions::All,
        heads: true,
        metric: Metric::LogitDiff,
        direction: Direction::Denoise,
        batch_size: 7, // not a divisor of the job counts: partial batches are exercised
        atp: true,
    }
}

fn parity(family: &str, folder: &str) {
    let (model, prepared) = tiny_with_pairs(folder);
    let (compared, worst) = compare_with_reference(family, &model, &prepared);
    assert!(compared > 300, "{family}: {compared} patched runs compared");
    eprintln!("{family}: worst |glassbox − PyTorch| / gap = {worst:.2e}");
}

/// Patches every hook of `patching/<family>.json` on `prepared` and compares each metric with
/// PyTorch's; returns how many patched runs were compared and the worst difference relative to
/// the pair's gap.
fn compare_with_reference(
    family: &str,
    model: &LoadedModel,
    prepared: &[PreparedPair],
) -> (usize, f64) {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("patching/{family}.json"))).unwrap(),
    )
    .unwrap();
    let hooks: Vec<HookPoint> = reference["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().parse().unwrap())
        .collect();
    let opts = options(hooks);
    let (mut compared, mut worst) = (0, 0f64);
    let expected_pairs = reference["pairs"].as_array().unwrap();
    assert_eq!(prepared.len(), expected_pairs.len(), "{family}: pairs");
    for (pair, expected) in prepared.iter().zip(expected_pairs) {
        if let Some(ids) = expected["clean_ids"].as_array() {
            let ids: Vec<u32> = ids.iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(
                pair.clean.ids, ids,
                "{family}: the clean prompt's token ids"
            );
        }
        let (rows, summary) = patch_pair(model, pair, &opts).unwrap();
        let (clean, corrupted) = (
            expected["metric_clean"].as_f64().unwrap(),
            expected["metric_corrupted"].as_f64().unwrap(),
        );
        // 1e-3 of the pair's gap; a pair whose corrupted token lies outside a sliding window's
        // reach (Mistral's 4 tokens over two blocks) has almost none, so f32 rounding of the
        // metric itself (1e-5 of it) is the floor.
        let gap = (clean - corrupted)
            .abs()
            .max(1e-2 * clean.abs().max(corrupted.abs()));
        let tol = 1e-3 * gap;
        assert!(
            (summary.metric_clean - clean).abs() <= tol,
            "{family}: clean {} vs {clean}",
            summary.metric_clean
        );
        assert!(
            (summary.metric_corrupted - corrupted).abs() <= tol,
            "{family}: corrupted"
        );
        let want = expected["rows"].as_array().unwrap();
        assert_eq!(
            rows.len(),
            want.len(),
            "{family}: one row per hook × position × head"
        );
        for w in want {
            let hook: HookPoint = w["hook"].as_str().unwrap().parse().unwrap();
            let position = w["position"].as_u64().unwrap() as u32;
            let head = w["head"].as_u64().map(|h| h as u32);
            let got = rows
                .iter()
                .find(|r| r.hook == hook && r.position == position && r.head == head)
                .unwrap_or_else(|| {
                    panic!("{family}: no row for {hook} @ {position} head {head:?}")
                });
            let exp = w["metric"].as_f64().unwrap();
            assert!(
                (got.metric - exp).abs() <= tol,
                "{family} pair {}: {hook} @ {position} head {head:?}: {} vs PyTorch {exp} (tolerance {tol:e})",
                pair.row,
                got.metric
            );
            compared += 1;
            worst = worst.max((got.metric - exp).abs() / gap);
        }
    }
    (compared, worst)
}

#[test]
fn smollm2_patching_matches_pytorch_hooks() {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let spec: ModelSpec = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF".parse().unwrap();
    let resolved = match resolve(&spec) {
        Ok(r) => r,
        Err(e) => {
            return glassbox_tests::skip(
                "smollm2_patching_matches_pytorch_hooks",
                &format!("{e} (run `just models`)"),
            )
        }
    };
    let model = load_model(resolved, LoadOptions::default()).unwrap();
    let ioi = glassbox_tests::workspace_root().join("data/sets/ioi_pairs.jsonl");
    let mut prepared = prepare_pairs(&model, &read_pairs(&ioi).unwrap()).unwrap();
    prepared.truncate(2);
    let (compared, worst) = compare_with_reference("smollm2", &model, &prepared);
    assert!(compared > 300, "smollm2: {compared} patched runs compared");
    eprintln!("smollm2: worst |glassbox − PyTorch| / gap = {worst:.2e}");
}

#[test]
fn gpt2_patching_matches_pytorch_hooks() {
    parity("gpt2", "tiny_gpt2");
}

#[test]
fn llama_patching_matches_pytorch_hooks() {
    parity("llama", "tiny_llama");
}

#[test]
fn neox_patching_matches_pytorch_hooks() {
    parity("neox", "tiny_neox");
}

/// The families on the shared configurable decoder (and Mistral's windows), each against
/// PyTorch forward hooks on its `transformers` model: post-norms (Gemma, OLMo-2/3), soft-caps,
/// sliding windows, q/k norms, fused projections (Phi-3), per-head `hook_z`.
#[test]
fn decoder_families_patching_matches_pytorch_hooks() {
    for (family, folder) in [
        ("gemma2", "tiny_gemma2"),
        ("gemma3", "tiny_gemma3_scaled"),
        ("qwen3", "tiny_qwen3"),
        ("olmo2", "tiny_olmo2"),
        ("olmo3", "tiny_olmo3"),
        ("phi3", "tiny_phi3_partial"),
        ("mistral", "tiny_mistral"),
    ] {
        parity(family, folder);
    }
}

#[test]
fn attribution_patching_is_exact_where_the_metric_is_linear() {
    // logit(answer) − logit(wrong) = (W_U[answer] − W_U[wrong]) · ln_final(x)[last]: linear in
    // the final norm's output, so the first-order estimate is the exact effect (and zero at
    // every earlier position, which the last position's logits do not read).
    let (model, prepared) = tiny_with_pairs("tiny_gpt2");
    let opts = options(vec![HookPoint::LnFinal]);
    for pair in &prepared {
        let (rows, s) = patch_pair(&model, pair, &opts).unwrap();
        let scale = (s.metric_clean - s.metric_corrupted).abs().max(1e-3);
        for r in &rows {
            let atp = r.atp_metric.unwrap();
            assert!(
                (atp - r.metric).abs() <= 1e-3 * scale,
                "position {}: AtP {atp} vs exact {}",
                r.position,
                r.metric
            );
        }
        let last = rows.iter().max_by_key(|r| r.position).unwrap();
        assert!(
            (last.normalized - 1.0).abs() < 1e-3,
            "patching the last position restores"
        );
        assert!(rows
            .iter()
            .filter(|r| r.position != last.position)
            .all(|r| r.normalized.abs() < 1e-3));
    }
}

/// Every decoder family's tiny fixture: post-norms (Gemma, OLMo), soft-caps (Gemma-2 and this
/// Gemma-3), q/k norms, fused projections, sliding windows.
const DECODERS: [&str; 10] = [
    "tiny_gpt2",
    "tiny_llama",
    "tiny_neox",
    "tiny_gemma2",
    "tiny_gemma3_scaled",
    "tiny_qwen3",
    "tiny_olmo2",
    "tiny_olmo3",
    "tiny_phi3_partial",
    "tiny_mistral",
];

#[test]
fn the_logit_lens_at_the_last_block_is_the_model_itself() {
    for folder in DECODERS {
        let (model, prepared) = tiny_with_pairs(folder);
        let blocks = model
            .model
            .hook_points()
            .iter()
            .filter(|p| matches!(p, HookPoint::ResidPost(_)))
            .count();
        for pair in &prepared {
            let (clean, corrupted) = metrics(&model, pair);
            let lens = glassbox_runner::lens::logit_lens(&model, pair).unwrap();
            assert_eq!(lens.len(), 2 * blocks, "{folder}: 2 runs × every block");
            let last = |run: &str| {
                lens.iter()
                    .filter(|r| r.run == run)
                    .max_by_key(|r| r.layer)
                    .unwrap()
                    .logit_diff
            };
            assert!((last("clean") - clean).abs() < 1e-4, "{folder}");
            assert!((last("corrupted") - corrupted).abs() < 1e-4, "{folder}");
            assert!(lens
                .iter()
                .all(|r| r.answer_rank >= 1 && r.answer_prob <= 1.0));
        }
    }
}

#[test]
fn direct_logit_attributions_sum_to_the_logit_difference() {
    for folder in DECODERS {
        let (model, prepared) = tiny_with_pairs(folder);
        for pair in &prepared {
            let (clean, corrupted) = metrics(&model, pair);
            let dla = glassbox_runner::dla::direct_logit_attribution(&model, pair).unwrap();
            for (run, metric) in [("clean", clean), ("corrupted", corrupted)] {
                let parts: Vec<_> = dla
                    .iter()
                    .filter(|r| r.run == run && r.part_of.is_none())
                    .collect();
                // embed (+ pos embed), 2 blocks × (attn, mlp), LayerNorm's bias where it has one
                assert!(parts.len() >= 5, "{folder}: {} components", parts.len());
                let total: f64 = parts.iter().map(|r| r.contribution).sum();
                let scale = parts
                    .iter()
                    .map(|r| r.contribution.abs())
                    .sum::<f64>()
                    .max(1.0);
                assert!(
                    (total - metric).abs() <= 1e-4 * scale,
                    "{folder} {run}: components sum to {total}, the logit difference is {metric}"
                );
                // Each block's heads and output bias sum to its attention output.
                let heads = model.model.attention_heads().unwrap();
                for layer in 0..2u32 {
                    let whole = format!("blocks.{layer}.hook_attn_out");
                    let of = |r: &&glassbox_runner::dla::DlaRow| r.run == run;
                    let total: f64 = dla
                        .iter()
                        .filter(of)
                        .filter(|r| r.component == whole)
                        .map(|r| r.contribution)
                        .sum();
                    let split: Vec<_> = dla
                        .iter()
                        .filter(of)
                        .filter(|r| r.part_of.as_deref() == Some(whole.as_str()))
                        .collect();
                    assert_eq!(split.iter().filter(|r| r.head.is_some()).count(), heads);
                    let sum: f64 = split.iter().map(|r| r.contribution).sum();
                    assert!(
                        (sum - total).abs() <= 1e-4 * (1.0 + total.abs()),
                        "{folder} {run} block {layer}: heads + bias {sum} vs attention output {total}"
                    );
                }
            }
        }
    }
}

#[test]
fn zero_ablating_the_final_norm_removes_the_whole_logit_difference() {
    use glassbox_runner::patching::{ablate, Ablation, AblationOptions};
    let (model, prepared) = tiny_with_pairs("tiny_neox");
    let mut clean = Vec::new();
    for pair in &prepared {
        let mut opts = options(vec![HookPoint::LnFinal]);
        opts.positions = Positions::Last;
        opts.atp = false;
        clean.push(patch_pair(&model, pair, &opts).unwrap().1.metric_clean);
    }
    let mut opts = AblationOptions {
        kind: Ablation::Zero,
        heads: false,
        neurons: false,
        metric: Metric::LogitDiff,
        batch_size: 4,
        seed: 0,
    };
    let rows = ablate(&model, &prepared, &[HookPoint::LnFinal], &opts).unwrap();
    assert_eq!(rows.len(), 1);
    // Zero logits: every next-token distribution is uniform, a loss of ln(vocab).
    let vocab = model.model.vocab_size().unwrap() as f64;
    let mut clean_loss = 0.0;
    for pair in &prepared {
        let refs = [&pair.clean];
        let batch =
            glassbox_models::TokenBatch::from_encoded(&refs, model.pad_id, &model.device).unwrap();
        let lp = glassbox_runner::interventions::log_probs(
            &model,
            &batch,
            &mut glassbox_models::Capture::new([]),
        )
        .unwrap();
        let ids = &pair.clean.ids;
        clean_loss += (0..ids.len() - 1)
            .map(|p| -lp[0][p][ids[p + 1] as usize])
            .sum::<f64>()
            / (ids.len() - 1) as f64
            / prepared.len() as f64;
    }
    assert!(
        (rows[0].loss_delta - (vocab.ln() - clean_loss)).abs() < 1e-4,
        "loss change {} vs ln(vocab) − clean loss {}",
        rows[0].loss_delta,
        vocab.ln() - clean_loss
    );
    // Zero logits: the logit difference drops to 0, so the change is minus the clean value.
    let want = -clean.iter().sum::<f64>() / clean.len() as f64;
    assert!(
        (rows[0].delta - want).abs() < 1e-5,
        "{} vs {want}",
        rows[0].delta
    );
    assert!(rows[0].ci_low <= rows[0].delta && rows[0].delta <= rows[0].ci_high);
    // Per head: one row per head of attn.hook_z, each with three pairs.
    opts.kind = Ablation::Mean;
    opts.heads = true;
    opts.batch_size = 3;
    let heads = ablate(&model, &prepared, &[HookPoint::AttnZ(0)], &opts).unwrap();
    assert_eq!(heads.len(), model.model.attention_heads().unwrap());
    assert!(heads.iter().all(|r| r.n == 3 && r.delta.is_finite()));
}

#[test]
fn noising_the_last_residual_destroys_what_denoising_restores() {
    let (model, prepared) = tiny_with_pairs("tiny_llama");
    let mut opts = options(vec![HookPoint::ResidPost(1)]);
    opts.positions = Positions::Last;
    opts.direction = Direction::Noise;
    for pair in &prepared {
        let (rows, _) = patch_pair(&model, pair, &opts).unwrap();
        assert_eq!(rows.len(), 1);
        // The clean run with the corrupted last residual is the corrupted run's output.
        assert!(rows[0].normalized.abs() < 1e-3, "{}", rows[0].normalized);
    }
}

#[test]
fn bad_pairs_are_refused_naming_the_row() {
    let model = tiny("tiny_gpt2");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        read_pairs(&p).unwrap()
    };
    let unequal = write(
        "unequal.jsonl",
        "{\"clean\": \"the chef roasted the vegetables\", \"corrupted\": \"the chef\", \"answer\": \" the\", \"wrong\": \" a\"}\n",
    );
    let e = prepare_pairs(&model, &unequal).unwrap_err().to_string();
    assert!(e.contains("row 1") && e.contains("same length"), "{e}");
    let long_answer = write(
        "answer.jsonl",
        "{\"clean\": \"a b\", \"corrupted\": \"a c\", \"answer\": \" vegetables roasted\", \"wrong\": \" a\"}\n",
    );
    let e = prepare_pairs(&model, &long_answer).unwrap_err().to_string();
    assert!(
        e.contains("row 1") && e.contains("answer") && e.contains("exactly one"),
        "{e}"
    );
    let same = write(
        "same.jsonl",
        "{\"clean\": \"a b\", \"corrupted\": \"a b\", \"answer\": \" the\", \"wrong\": \" a\"}\n",
    );
    let e = prepare_pairs(&model, &same).unwrap_err().to_string();
    assert!(e.contains("row 1") && e.contains("same tokens"), "{e}");
    let empty = write(
        "empty.jsonl",
        "{\"clean\": \"\", \"corrupted\": \"\", \"answer\": \" the\", \"wrong\": \" a\"}\n",
    );
    let e = prepare_pairs(&model, &empty).unwrap_err().to_string();
    assert!(e.contains("row 1") && e.contains("empty"), "{e}");
    let mut opts = options(vec![HookPoint::Logits]);
    opts.atp = false;
    let pairs = read_pairs(&fixtures().join("patching/pairs.jsonl")).unwrap();
    let prepared = prepare_pairs(&model, &pairs).unwrap();
    let e = patch_pair(&model, &prepared[0], &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`logits` cannot be patched"), "{e}");
}
