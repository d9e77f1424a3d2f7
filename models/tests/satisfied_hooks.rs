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
        let diff: f32 = (out - &seen)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0, "{name}");
        assert_eq!(hooks.later, 0, "{name}: no hook after block 0 ran");
    }
}
