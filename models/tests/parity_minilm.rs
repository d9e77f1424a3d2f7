//! Parity of the hookable BERT with PyTorch `transformers` on the real all-MiniLM-L6-v2
//! (weights from the registry package laid into the HF cache by `just models`), against the
//! committed reference from `scripts/reference_minilm.py`.

use candle_core::Tensor;
use glassbox_models::hooks::Hooks;
use glassbox_models::tokenizer::Encoded;
use glassbox_models::LoadOptions;
use glassbox_models::{
    load_model, resolve, Capture, HookPoint, LoadedModel, ModelSpec, TokenBatch,
};
use glassbox_tests::{max_abs_diff, minilm_reference, require_minilm, ReferenceText, MINILM};

fn hidden_state_hooks() -> Vec<HookPoint> {
    let mut hooks = vec![HookPoint::ResidPre(0)];
    hooks.extend((0..6).map(HookPoint::ResidPost));
    hooks
}

fn load() -> Option<LoadedModel> {
    require_minilm("parity_minilm")?;
    let resolved = resolve(&MINILM.parse::<ModelSpec>().unwrap()).unwrap();
    Some(
        load_model(
            resolved,
            LoadOptions {
                max_length: Some(128),
                allow_pickle: false,
                ..Default::default()
            },
        )
        .unwrap(),
    )
}

/// Runs texts as one right-padded batch through `hooks`.
fn run(model: &LoadedModel, encoded: &[Encoded], hooks: &mut dyn Hooks) {
    let refs: Vec<&Encoded> = encoded.iter().collect();
    let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device).unwrap();
    model.model.forward((&batch).into(), hooks).unwrap();
}

fn captured(capture: &Capture, hook: HookPoint, lengths: &[usize]) -> Vec<Vec<Vec<f32>>> {
    let all: Vec<Vec<Vec<f32>>> = capture.captured[&hook].to_vec3().unwrap();
    all.into_iter()
        .zip(lengths)
        .map(|(rows, &n)| rows.into_iter().take(n).collect())
        .collect()
}

fn compare(reference: &[ReferenceText], model: &LoadedModel, batched: bool) -> f32 {
    let texts: Vec<&str> = reference.iter().map(|r| r.text.as_str()).collect();
    let encoded = model.tokenizer().unwrap().encode(&texts).unwrap();
    let points = hidden_state_hooks();
    let mut worst = 0f32;
    let groups: Vec<Vec<usize>> = if batched {
        vec![(0..texts.len()).collect()]
    } else {
        (0..texts.len()).map(|i| vec![i]).collect()
    };
    for group in groups {
        let enc: Vec<Encoded> = group.iter().map(|&i| encoded[i].clone()).collect();
        let lengths: Vec<usize> = enc.iter().map(|e| e.ids.len()).collect();
        let mut capture = Capture::new(points.clone());
        run(model, &enc, &mut capture);
        for (layer, hook) in points.iter().enumerate() {
            let ours = captured(&capture, *hook, &lengths);
            for (k, &i) in group.iter().enumerate() {
                let theirs = &reference[i].hidden_states[layer];
                assert_eq!(ours[k].len(), theirs.len(), "text {i}: token count");
                for (a, b) in ours[k].iter().zip(theirs) {
                    worst = worst.max(max_abs_diff(a, b));
                }
            }
        }
    }
    worst
}

#[test]
fn token_ids_match_transformers() {
    let Some(model) = load() else { return };
    let (reference, _) = minilm_reference();
    let texts: Vec<&str> = reference.iter().map(|r| r.text.as_str()).collect();
    for (enc, r) in model
        .tokenizer()
        .unwrap()
        .encode(&texts)
        .unwrap()
        .iter()
        .zip(&reference)
    {
        assert_eq!(enc.ids, r.input_ids, "token ids of {:?}", r.text);
    }
}

#[test]
fn hidden_states_match_transformers_one_by_one_and_padded() {
    let Some(model) = load() else { return };
    let (reference, _) = minilm_reference();
    let single = compare(&reference, &model, false);
    let padded = compare(&reference, &model, true);
    eprintln!("max abs diff vs transformers: single {single:e}, padded batch {padded:e}");
    assert!(single <= 1e-4, "unpadded: {single}");
    assert!(padded <= 1e-4, "padded batch: {padded}");
}

/// Replaces one hook's activation with zeros.
struct ZeroAt(HookPoint, Capture);

impl Hooks for ZeroAt {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.0 || self.1.wants(point)
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let x = if point == self.0 { x.zeros_like()? } else { x };
        self.1.visit(point, x)
    }
}

/// Runs `texts` as one batch twice, watching `watch`: as is, and with `zeroed` replaced by
/// zeros. Returns both captures and the texts' token counts.
fn clean_and_zeroed(
    model: &LoadedModel,
    texts: &[&str],
    zeroed: HookPoint,
    watch: &[HookPoint],
) -> (Capture, Capture, Vec<usize>) {
    let encoded = model.tokenizer().unwrap().encode(texts).unwrap();
    let lengths = encoded.iter().map(|e| e.ids.len()).collect();
    let mut clean = Capture::new(watch.iter().copied());
    run(model, &encoded, &mut clean);
    let mut patched = ZeroAt(zeroed, Capture::new(watch.iter().copied()));
    run(model, &encoded, &mut patched);
    (clean, patched.1, lengths)
}

#[test]
fn hooks_can_replace_activations() {
    let Some(model) = load() else { return };
    let watch = [HookPoint::AttnOut(3), HookPoint::ResidPost(5)];
    let texts = ["The cat sat on the mat."];
    let (clean, patched, lengths) = clean_and_zeroed(&model, &texts, HookPoint::AttnOut(3), &watch);
    let zeroed = captured(&patched, HookPoint::AttnOut(3), &lengths);
    assert!(
        zeroed[0].iter().flatten().all(|&v| v == 0.0),
        "the replacement is what later hooks see"
    );
    let a = captured(&clean, HookPoint::ResidPost(5), &lengths);
    let b = captured(&patched, HookPoint::ResidPost(5), &lengths);
    let diff = max_abs_diff(&a[0].concat(), &b[0].concat());
    assert!(
        diff > 1e-2,
        "zeroing block 3's attention changes the output ({diff})"
    );
}

/// A replaced residual stream is what the next block reads, whether the batch is padded (the
/// stream is copied to and from the hook's tensor) or not (the tensor is the stream). That a
/// kept tensor is not overwritten as the stream moves on is checked by the one-by-one parity
/// test, which captures every block's output from unpadded batches.
#[test]
fn hooks_can_replace_the_residual_stream() {
    let Some(model) = load() else { return };
    for texts in [
        &["The cat sat on the mat."][..],
        &["The cat sat.", "A much longer sentence about dogs."],
    ] {
        let watch = [
            HookPoint::ResidPost(2),
            HookPoint::ResidPre(3),
            HookPoint::ResidPost(5),
        ];
        let (clean, patched, lengths) =
            clean_and_zeroed(&model, texts, HookPoint::ResidPost(2), &watch);
        let entering = captured(&patched, HookPoint::ResidPre(3), &lengths);
        assert!(
            entering.iter().flatten().flatten().all(|&v| v == 0.0),
            "{} text(s): block 3 reads the replaced stream",
            texts.len()
        );
        let a = captured(&clean, HookPoint::ResidPost(5), &lengths);
        let b = captured(&patched, HookPoint::ResidPost(5), &lengths);
        let diff = max_abs_diff(&a[0].concat(), &b[0].concat());
        assert!(diff > 1e-2, "the output changes ({diff})");
    }
}

/// The fast forward and the candle-graph forward agree at every hook point.
#[test]
fn fast_and_graph_forwards_agree_at_every_hook() {
    let Some(snapshot) = require_minilm("fast_and_graph_forwards_agree") else {
        return;
    };
    use glassbox_models::bert::{Bert, BertConfig};
    use glassbox_models::weights::Weights;
    use glassbox_models::HookedModel;
    let config_path = snapshot.join("config.json");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let cfg = BertConfig::from_json(&config_path, config.clone()).unwrap();
    let weights = Weights::load(
        &snapshot.join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let bert = Bert::load(cfg, &config, &weights).unwrap();
    let model = load().unwrap();
    let (reference, _) = minilm_reference();
    let texts: Vec<&str> = reference.iter().map(|r| r.text.as_str()).collect();
    let encoded = model.tokenizer().unwrap().encode(&texts).unwrap();
    let refs: Vec<&Encoded> = encoded.iter().collect();
    let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device).unwrap();
    let points = bert.hook_points();
    let mut fast = Capture::new(points.clone());
    let mut graph = Capture::new(points.clone());
    bert.forward((&batch).into(), &mut fast).unwrap();
    bert.forward_differentiable((&batch).into(), &mut graph)
        .unwrap();
    for point in points {
        let a = captured(&fast, point, &batch.lengths);
        let b = captured(&graph, point, &batch.lengths);
        let diff = max_abs_diff(&a.concat().concat(), &b.concat().concat());
        assert!(diff <= 1e-4, "{point}: fast vs graph differ by {diff}");
    }
}

#[test]
fn the_forward_from_a_block_matches_the_full_forward() {
    let Some(model) = load() else { return };
    let (reference, _) = minilm_reference();
    let texts: Vec<&str> = reference.iter().map(|r| r.text.as_str()).collect();
    let encoded = model.tokenizer().unwrap().encode(&texts).unwrap();
    let refs: Vec<&Encoded> = encoded.iter().collect();
    let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device).unwrap();
    let mut capture = Capture::new([HookPoint::ResidPre(3), HookPoint::ResidPost(4)]);
    let full = model.model.forward((&batch).into(), &mut capture).unwrap();
    let lengths: Vec<usize> = encoded.iter().map(|e| e.ids.len()).collect();
    let resid = capture.captured[&HookPoint::ResidPre(3)].clone();
    let mut later = Capture::new([HookPoint::ResidPre(2), HookPoint::ResidPost(4)]);
    let from = model
        .model
        .forward_from(&batch, 3, &resid, &mut later)
        .expect("BERT has a fast forward from a block")
        .unwrap();
    assert!(
        !later.captured.contains_key(&HookPoint::ResidPre(2)),
        "blocks before the start do not run"
    );
    // Same kernels on the same packed rows: the same values, bit for bit.
    let real = |t: &Tensor| -> Vec<f32> {
        let all: Vec<Vec<Vec<f32>>> = t.to_vec3().unwrap();
        all.into_iter()
            .zip(&lengths)
            .flat_map(|(rows, &n)| rows.into_iter().take(n).flatten())
            .collect()
    };
    assert_eq!(real(&full), real(&from));
    assert_eq!(
        captured(&capture, HookPoint::ResidPost(4), &lengths),
        captured(&later, HookPoint::ResidPost(4), &lengths)
    );
}
