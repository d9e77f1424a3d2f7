//! Attributions on the real SmolLM2-135M (GGUF, from `just models`), next-token targets on
//! two short prompts (a third, the 15-token IOI prompt, measured the same and took half of the
//! test's time): the gradient of the autograd forward is the derivative of the fast forward's
//! `f` (central differences along it, within 1 %), and integrated gradients from zero token
//! embeddings at 64 steps — whose completeness the adaptive rule improves over Gauss–Legendre
//! (measured, printed; see the comment for why neither is within 1 % on this model). Skips
//! (fails under `CI=true`) without the model.

use glassbox_runner::attribution::methods::integrated_gradients;
use glassbox_runner::attribution::oracle::{Oracle, TextOracle};
use glassbox_runner::attribution::IgRule;

mod common;
use common::{central_difference_matches, next_token, smollm2};

#[test]
fn smollm2_gradients_and_ig_completeness() {
    let Some(model) = smollm2("smollm2_gradients_and_ig_completeness") else {
        return;
    };
    let tokenizer = model.tokenizer().unwrap();
    for (prompt, answer) in [
        ("The capital of France is", " Paris"),
        ("One, two, three, four,", " five"),
    ] {
        let encoded = tokenizer.encode(&[prompt]).unwrap().remove(0);
        let ids = tokenizer.encode_plain(answer).unwrap();
        assert_eq!(ids.len(), 1, "{answer} is one token");
        let o =
            TextOracle::new(&model, encoded, next_token(&model, ids[0].0 as usize), 16).unwrap();
        let x = o.input().to_vec();
        central_difference_matches(prompt, &o, &x, 1e-3);

        let zero = vec![0f32; x.len()];
        let f = o.values(&[x.clone(), zero.clone()]).unwrap();
        let gap = f[0] - f[1];
        let completeness = |rule: IgRule| {
            let ig = integrated_gradients(&o, &x, &zero, 64, rule).unwrap();
            let sum: f64 = ig.iter().map(|v| f64::from(*v)).sum();
            (sum - gap).abs() / gap.abs()
        };
        let (fixed, adaptive) = (
            completeness(IgRule::GaussLegendre),
            completeness(IgRule::Adaptive),
        );
        // Measured: Gauss–Legendre 207–238 % (Captum: the same, and no better at 1,024 steps —
        // docs/perf/attribution.md), adaptive 31–69 %. Along the straight path from
        // zero the residual stream is tiny for α ≲ 0.05 and the 30 RMSNorms amplify it: f swings
        // by ±10 logits within Δα = 1e-4 around α ≈ 0.01 and its gradient reaches |∇f|² ~ 1e7
        // (central differences stop converging there), so 64 gradients cannot integrate it.
        eprintln!(
            "{prompt:?} → {answer:?}: gap {gap:.3}, completeness error at 64 steps: gausslegendre {fixed:.3}, adaptive {adaptive:.3}"
        );
        assert!(
            adaptive < fixed,
            "{prompt:?}: adaptive {adaptive} vs gausslegendre {fixed}"
        );
    }
}
