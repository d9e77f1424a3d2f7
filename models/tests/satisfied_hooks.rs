//! Hooks that have what they need (`Hooks::satisfied`: a target read off a hook inside the
//! network) stop the text families' forwards at the end of that block: no later block runs,
//! and the differentiable forward returns the block's residual stream — the value the hooks
//! saw — instead of running the later blocks and the unembedding.

use candle_core::Tensor;
use glassbox_models::{load_model, resolve, HookPoint, Hooks, LoadOptions, ModelSpec, TokenBatch};

/// Keeps `blocks.0.hook_resid_post` and is satisfied from then on; counts the hooks of later
/// blocks that still ran.
#[derive(Default)]
struct FirstBlock {
    graph: bool,
    seen: Option<Tensor>,
    later: usize,
}

impl Hooks for FirstBlock {
    /// The residual stream everywhere (every forward, fast or not, offers it).
    fn wants(&self, point: HookPoint) -> bool {
        matches!(point, HookPoint::ResidPre(_) | HookPoint::ResidPost(_))
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        if point == HookPoint::ResidPost(0) {
            self.seen = Some(x.clone());
        } else if point.layer().is_some_and(|l| l > 0) {
            self.later += 1;
        }
        Ok(x)
    }
    fn needs_graph(&self) -> bool {
        self.graph
    }
    fn satisfied(&self) -> bool {
        self.seen.is_some()
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn satisfied_hooks_stop_the_differentiable_forward_after_their_block() {
    for name in [
        "tiny_gpt2",
        "tiny_llama",
        "tiny_neox",
        "tiny_gemma2",
        "tiny_bert_classifier",
        "tiny_distilbert_classifier",
    ] {
        let dir = glassbox_tests::workspace_root()
            .join("tests/fixtures")
            .join(name);
        let spec: ModelSpec = dir.display().to_string().parse().unwrap();
        let model = load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap();
        let encoded = model
            .tokenizer()
            .unwrap()
            .encode(&["the market was calm", "a dog"])
            .unwrap();
        let refs: Vec<_> = encoded.iter().collect();
        let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device).unwrap();
        // The packed fast forward: no block after the first.
        let mut fast = FirstBlock::default();
        model.model.forward((&batch).into(), &mut fast).unwrap();
        assert!(fast.seen.is_some(), "{name}: fast forward");
        assert_eq!(
            fast.later, 0,
            "{name}: a later block ran in the fast forward"
        );
        let mut hooks = FirstBlock {
            graph: true,
            ..Default::default()
        };
        let out = model
            .model
            .forward_differentiable((&batch).into(), &mut hooks)
            .unwrap();
        let seen = hooks.seen.expect("blocks.0.hook_resid_post");
        assert_eq!(
            out.dims(),
            seen.dims(),
            "{name}: the residual stream came back"
        );
        assert_eq!(max_abs_diff(&out, &seen), 0.0, "{name}");
        assert_eq!(hooks.later, 0, "{name}: no hook after block 0 ran");
    }
}

/// `Capture::only` (extraction, a probe's value): the captured activations equal a full
/// forward's, and the vision families' forwards stop after the last of them too (their output
/// is then not the model's: the CNNs give none, ViT and CLIP the residual stream).
#[test]
fn capture_only_records_the_same_activations_and_stops() {
    use glassbox_models::{Capture, ConvPart, ImageBatch};
    let early = |name: &str| match name {
        "tiny_resnet" => HookPoint::Conv {
            stage: 0,
            block: 0,
            part: ConvPart::Out,
        },
        _ => HookPoint::ResidPost(0),
    };
    for (name, size) in [
        ("tiny_gpt2", 0),
        ("tiny_llama", 0),
        ("tiny_gemma2", 0),
        ("tiny_bert_classifier", 0),
        ("tiny_vit", 32),
        ("tiny_clip", 32),
        ("tiny_resnet", 64),
    ] {
        let dir = glassbox_tests::workspace_root()
            .join("tests/fixtures")
            .join(name);
        let spec: ModelSpec = dir.display().to_string().parse().unwrap();
        let model = load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap();
        let point = early(name);
        let run = |capture: &mut Capture| -> Tensor {
            if size == 0 {
                let encoded = model.tokenizer().unwrap().encode(&["a calm day"]).unwrap();
                let refs: Vec<_> = encoded.iter().collect();
                let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device).unwrap();
                model.model.forward((&batch).into(), capture).unwrap()
            } else {
                let pixels = (0..2 * size * size * 3)
                    .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                    .collect();
                let batch = ImageBatch {
                    pixels,
                    batch: 2,
                    height: size,
                    width: size,
                };
                model.model.forward((&batch).into(), capture).unwrap()
            }
        };
        let mut full = Capture::new([point]);
        let out_full = run(&mut full);
        let mut only = Capture::only([point]);
        let out_only = run(&mut only);
        let (a, b) = (&full.captured[&point], &only.captured[&point]);
        assert_eq!(max_abs_diff(a, b), 0.0, "{name}: the same activation");
        // (Text forwards return a hidden-width stream either way; the test above counts their
        // later blocks' hooks.)
        if size > 0 {
            assert_ne!(
                out_full.dims(),
                out_only.dims(),
                "{name}: the forward stopped after {point}"
            );
        }
    }
}
