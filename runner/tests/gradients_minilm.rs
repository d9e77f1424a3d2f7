//! Target gradients by autograd on the real all-MiniLM-L6-v2 agree with finite differences, for
//! both conventions and for a hook several blocks before the head.

use candle_core::Tensor;
use glassbox_models::hooks::Hooks;
use glassbox_models::tokenizer::Encoded;
use glassbox_models::LoadOptions;
use glassbox_models::{load_model, resolve, HookPoint, ModelSpec, Pool, TokenBatch};
use glassbox_runner::gradients::{
    target_gradients, target_gradients_autograd, Convention, LinearHead,
};
use glassbox_tests::{require_minilm, MINILM};

/// Adds `scale · direction` to the activation at one hook.
struct Nudge {
    point: HookPoint,
    direction: Tensor,
    scale: f64,
}

impl Hooks for Nudge {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        if point == self.point {
            x + (&self.direction * self.scale)?
        } else {
            Ok(x)
        }
    }
}

/// Records the head's input.
struct Keep(HookPoint, Option<Tensor>);

impl Hooks for Keep {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.0
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        if point == self.0 {
            self.1 = Some(x.clone());
        }
        Ok(x)
    }
}

fn head(width: usize, n_classes: usize, class: usize) -> LinearHead {
    let outputs = if n_classes == 2 { 1 } else { n_classes };
    LinearHead {
        hook: HookPoint::ResidPost(4),
        pool: Pool::Mean,
        weight: (0..outputs * width)
            .map(|i| ((i * 7919 % 97) as f32 - 48.0) / 200.0)
            .collect(),
        bias: (0..outputs).map(|i| 0.1 * i as f32).collect(),
        n_classes,
        class,
        pooler: None,
    }
}

#[test]
fn autograd_matches_finite_differences() {
    if require_minilm("gradients_minilm").is_none() {
        return;
    }
    let resolved = resolve(&MINILM.parse::<ModelSpec>().unwrap()).unwrap();
    let model = load_model(
        resolved,
        LoadOptions {
            max_length: Some(64),
            allow_pickle: false,
            ..Default::default()
        },
    )
    .unwrap();
    let texts = [
        "The striker scored twice.",
        "Preheat the oven before baking bread today.",
    ];
    let encoded = model.tokenizer().unwrap().encode(&texts).unwrap();
    let refs: Vec<&Encoded> = encoded.iter().collect();
    let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device).unwrap();
    for (n_classes, class, convention, hook) in [
        (2, 1, Convention::Logit, HookPoint::ResidPost(1)),
        (2, 0, Convention::Loss, HookPoint::ResidPost(3)),
        (4, 2, Convention::Logit, HookPoint::ResidPost(3)),
        (4, 3, Convention::Loss, HookPoint::ResidPost(1)),
    ] {
        let h = head(384, n_classes, class);
        // Both hooks in one pass: the later one must not cut the gradient to the earlier one.
        let both = [HookPoint::ResidPost(1), HookPoint::ResidPost(3)];
        let out = target_gradients(&model, &batch, &both, &h, convention).unwrap();
        // The hand-written backward (residual hooks) agrees with candle autograd.
        let auto = target_gradients_autograd(&model, &batch, &both, &h, convention).unwrap();
        for p in both {
            let a = out.gradients[&p]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = auto.gradients[&p]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                scale > 0.0 && diff <= 1e-3 * scale,
                "{p}: hand-written vs autograd differ by {diff} (scale {scale})"
            );
        }
        for (x, y) in out.values.iter().zip(&auto.values) {
            assert!((x - y).abs() < 1e-4, "target values {x} vs {y}");
        }
        let g = &out.gradients[&hook];
        let (b, t, w) = g.dims3().unwrap();
        // Padding positions get no gradient.
        let grads: Vec<Vec<Vec<f32>>> = g.to_vec3().unwrap();
        for (i, &n) in batch.lengths.iter().enumerate() {
            assert!(grads[i][n..].iter().flatten().all(|v| *v == 0.0));
        }
        // A direction on real tokens only.
        let mut dir = vec![0f32; b * t * w];
        for (i, &n) in batch.lengths.iter().enumerate() {
            for p in 0..n {
                for u in 0..w {
                    dir[(i * t + p) * w + u] = (((i + 3 * p + 7 * u) % 13) as f32 - 6.0) / 6.0;
                }
            }
        }
        let direction = Tensor::from_vec(dir.clone(), (b, t, w), &model.device).unwrap();
        let eps = 1e-2;
        let shifted = |scale: f64| -> Vec<f64> {
            let mut nudge = Nudge {
                point: hook,
                direction: direction.clone(),
                scale,
            };
            let mut keep = Keep(h.hook, None);
            struct Both<'a>(&'a mut Nudge, &'a mut Keep);
            impl Hooks for Both<'_> {
                fn wants(&self, p: HookPoint) -> bool {
                    self.0.wants(p) || self.1.wants(p)
                }
                fn visit(&mut self, p: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
                    let x = self.0.visit(p, x)?;
                    self.1.visit(p, x)
                }
            }
            model
                .model
                .forward_differentiable((&batch).into(), &mut Both(&mut nudge, &mut keep))
                .unwrap();
            // The head evaluated independently, in f64, on the kept head input.
            let x = keep.1.unwrap().to_vec3::<f32>().unwrap();
            let outputs = h.bias.len();
            (0..b)
                .map(|i| {
                    let n = batch.lengths[i];
                    let pooled: Vec<f64> = (0..w)
                        .map(|u| (0..n).map(|p| x[i][p][u] as f64).sum::<f64>() / n as f64)
                        .collect();
                    let z: Vec<f64> = (0..outputs)
                        .map(|o| {
                            (0..w)
                                .map(|u| h.weight[o * w + u] as f64 * pooled[u])
                                .sum::<f64>()
                                + h.bias[o] as f64
                        })
                        .collect();
                    let (logit, lse) = if outputs == 1 {
                        let l = if class == 1 { z[0] } else { -z[0] };
                        (l, (1.0 + l.exp()).ln())
                    } else {
                        let top = z.iter().cloned().fold(f64::MIN, f64::max);
                        (
                            z[class],
                            top + z.iter().map(|v| (v - top).exp()).sum::<f64>().ln(),
                        )
                    };
                    match convention {
                        Convention::Logit => logit,
                        Convention::Loss => lse - logit,
                    }
                })
                .collect()
        };
        let unshifted = shifted(0.0);
        for (value, expected) in out.values.iter().zip(&unshifted) {
            let value = *value as f64;
            assert!(
                (value - expected).abs() < 1e-4,
                "target values agree: {value} vs {expected}"
            );
        }
        let (plus, minus) = (shifted(eps), shifted(-eps));
        for i in 0..b {
            let numeric = (plus[i] - minus[i]) / (2.0 * eps);
            let analytic: f64 = (0..t * w)
                .map(|j| grads[i][j / w][j % w] as f64 * dir[i * t * w + j] as f64)
                .sum();
            let tolerance = 1e-2 * numeric.abs().max(analytic.abs()).max(1e-2);
            assert!(
                (numeric - analytic).abs() < tolerance,
                "{n_classes} classes, class {class}, {convention:?}, example {i}: finite difference {numeric} vs autograd {analytic}"
            );
        }
    }
}
