//! Hooks that have what they need (`Hooks::satisfied`: a target read off a hook inside the
//! network) stop the text families' differentiable forwards at the end of that block: the
//! forward returns the block's residual stream — the value the hooks saw — instead of running
//! the later blocks and the unembedding.

use candle_core::Tensor;
use glassbox_models::{load_model, resolve, HookPoint, Hooks, LoadOptions, ModelSpec, TokenBatch};

/// Keeps `blocks.0.hook_resid_post` and is satisfied from then on.
#[derive(Default)]
struct FirstBlock {
    seen: Option<Tensor>,
    later: usize,
}

impl Hooks for FirstBlock {
    fn wants(&self, _: HookPoint) -> bool {
        true
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        match point {
            HookPoint::ResidPost(0) => self.seen = Some(x.clone()),
            _ if self.seen.is_some() => self.later += 1,
            _ => {}
        }
        Ok(x)
    }
    fn needs_graph(&self) -> bool {
        true
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
        let mut hooks = FirstBlock::default();
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
