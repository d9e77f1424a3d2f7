//! `pixel_gradients_from_hook` (a target read off a hook, e.g. a probe on an image model) on
//! every vision family: seeded at a hook with the gradient the full backward found there, the
//! backward from that hook must give the full backward's pixel gradient (the chain rule:
//! `∂(s·out)/∂pixels = J_hookᵀ ∂(s·out)/∂hook`), and the gradients at earlier hooks with it.
//! The seed closure sees the hook's activation and each image's rows.

use glassbox_models::{
    load_model, resolve, Capture, ConvPart, HookPoint, ImageBatch, LoadOptions, LoadedModel,
    ModelSpec,
};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn load(spec: &str) -> LoadedModel {
    let spec: ModelSpec = spec.parse().unwrap();
    load_model(
        resolve(&spec).unwrap(),
        LoadOptions {
            max_length: None,
            allow_pickle: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Deterministic pixels in [-2, 2] for `batch` images of `size` × `size`.
fn images(batch: usize, size: usize) -> ImageBatch {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let pixels = (0..batch * size * size * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f32 / 2_500.0 - 2.0
        })
        .collect();
    ImageBatch {
        pixels,
        batch,
        height: size,
        width: size,
    }
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = max_abs(want).max(1e-12);
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("{what}: max |diff| {diff:.2e} (scale {scale:.2e})");
    assert!(
        diff <= tol * scale,
        "{what}: max |diff| {diff} over {scale}"
    );
}

/// Hooks every path from the pixels to the outputs passes through (the stem, each block's
/// output, the residual stream, the pooled features, the logits): there the chain rule holds with the hook's
/// gradient alone. (Inside a block with a skip connection, part of the gradient bypasses the
/// hook; [`directional`] checks those.)
fn is_cut(p: HookPoint) -> bool {
    matches!(
        p,
        HookPoint::Stem
            | HookPoint::Head
            | HookPoint::Pooled
            | HookPoint::Logits
            | HookPoint::ResidPre(_)
            | HookPoint::ResidPost(_)
            | HookPoint::Conv {
                part: ConvPart::Out,
                ..
            }
    )
}

/// `Σ d · activation at point` for pixels `x`, in f64.
fn objective(
    model: &LoadedModel,
    batch: &ImageBatch,
    x: &[f32],
    point: HookPoint,
    d: &[f32],
) -> f64 {
    let images = ImageBatch {
        pixels: x.to_vec(),
        batch: batch.batch,
        height: batch.height,
        width: batch.width,
    };
    let mut capture = Capture::new([point]);
    model.model.forward((&images).into(), &mut capture).unwrap();
    let h: Vec<f32> = capture.captured[&point]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    h.iter()
        .zip(d)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum()
}

/// At a hook that is not a cut, the seeded backward's pixel gradient `g` against central
/// differences of the objective along `g` itself (its norm is the directional derivative).
fn directional(name: &str, model: &LoadedModel, batch: &ImageBatch, point: HookPoint) {
    let width = model.model.hook_width(point);
    let mut d = Vec::new();
    let mut seed = |a: &[f32], _: &[usize]| {
        d = (0..a.len())
            .map(|i| ((i * 13 + i / width) % 7) as f32 / 3.0 - 1.0)
            .collect();
        d.clone()
    };
    let g = model
        .model
        .pixel_gradients_from_hook(batch, &[], point, &mut seed)
        .expect("a backward from hooks")
        .unwrap()
        .pixels;
    let norm = g.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    assert!(norm > 0.0, "{name} {point}: zero gradient");
    let eps = 3e-3;
    let step = |sign: f64| -> Vec<f32> {
        batch
            .pixels
            .iter()
            .zip(&g)
            .map(|(x, v)| (f64::from(*x) + sign * eps * f64::from(*v) / norm) as f32)
            .collect()
    };
    let fd = (objective(model, batch, &step(1.0), point, &d)
        - objective(model, batch, &step(-1.0), point, &d))
        / (2.0 * eps);
    println!("{name} {point}: |g| {norm:.6e}, central difference {fd:.6e}");
    assert!(
        (fd - norm).abs() <= 0.02 * norm,
        "{name} {point}: |g| {norm} against {fd}"
    );
}

/// For each cut hook of `model` (and its pooled features), the seeded backward from it
/// reproduces the full backward at the pixels and at `earlier`, a hook before it.
fn check(name: &str, model: &LoadedModel, batch: &ImageBatch, tol: f32) {
    let m = &model.model;
    let outputs = m
        .forward(batch.into(), &mut Capture::new([]))
        .unwrap()
        .dims()[1];
    let mut out_seed = Vec::new();
    for b in 0..batch.batch {
        for k in 0..outputs {
            out_seed.push(((b * 7 + k * 3) % 5) as f32 - 2.0);
        }
    }
    let points: Vec<HookPoint> = m.hook_points().into_iter().filter(|p| is_cut(*p)).collect();
    assert!(points.len() >= 2, "{name}: hooks {points:?}");
    let full = m
        .pixel_gradients(batch, &points, &out_seed)
        .expect("a backward")
        .unwrap();
    assert!(max_abs(&full.pixels) > 0.0, "{name}: zero pixel gradient");
    let first = points[0];
    for &point in &points[1..] {
        let (activation, gradient) = full.hooks[&point].clone();
        let mut seen = None;
        let mut seed = |a: &[f32], offsets: &[usize]| {
            seen = Some((a.to_vec(), offsets.to_vec()));
            gradient.clone()
        };
        let from = m
            .pixel_gradients_from_hook(batch, &[first], point, &mut seed)
            .expect("a backward from hooks")
            .unwrap();
        let (a, offsets) = seen.expect("the seed was asked for");
        close(
            &format!("{name} {point}: activation"),
            &a,
            &activation,
            1e-5,
        );
        let rows = a.len() / m.hook_width(point);
        let want: Vec<usize> = (0..=batch.batch).map(|b| b * rows / batch.batch).collect();
        assert_eq!(offsets, want, "{name} {point}: offsets");
        close(
            &format!("{name} {point}: pixels"),
            &from.pixels,
            &full.pixels,
            tol,
        );
        close(
            &format!("{name} {point}: gradient at {first}"),
            &from.hooks[&first].1,
            &full.hooks[&first].1,
            tol,
        );
    }
    // A hook the model does not have is named.
    let mut seed = |a: &[f32], _: &[usize]| vec![0.0; a.len()];
    let err = m
        .pixel_gradients_from_hook(batch, &[], HookPoint::ResidPost(99), &mut seed)
        .expect("a backward from hooks")
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.99.hook_resid_post"), "{name}: {err}");
}

#[test]
fn resnets_backward_from_a_hook_reproduces_the_full_backward() {
    for name in ["tiny_resnet", "tiny_resnet_basic"] {
        let model = load(fixture(name).to_str().unwrap());
        // The same operations from the hook down: bit-identical.
        check(name, &model, &images(2, 64), 1e-6);
    }
}

#[test]
fn vit_and_clip_backward_from_a_hook_reproduces_the_full_backward() {
    for (name, size) in [("tiny_vit", 32), ("tiny_clip", 32)] {
        let model = load(fixture(name).to_str().unwrap());
        let size = model.model.image_size().map_or(size, |s| s.0);
        let batch = images(2, size);
        check(name, &model, &batch, 1e-5);
        // Inside the first block, beside the residual path.
        directional(name, &model, &batch, HookPoint::MlpOut(0));
    }
}

/// EfficientNet-Lite0 from the cache (`just models`); `None` after saying why (a failure under
/// `CI=true`).
fn efficientnet_lite0() -> Option<LoadedModel> {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let repo = "glassbox-offline/efficientnet-lite0";
    if resolve(&repo.parse().unwrap()).is_err() {
        glassbox_tests::skip(
            "hook_seeded_gradients",
            &format!("{repo} is not in the cache; run `just models`"),
        );
        return None;
    }
    Some(load(repo))
}

#[test]
fn efficientnet_backward_from_a_hook_reproduces_the_full_backward() {
    let Some(model) = efficientnet_lite0() else {
        return;
    };
    let batch = images(2, 64);
    check("efficientnet_lite0", &model, &batch, 1e-6);
    // Inside blocks with a skip connection (stage 1's second block): the expansion and the
    // depthwise output, where part of the gradient goes round the hook.
    for part in [ConvPart::Expand, ConvPart::Depthwise] {
        let point = HookPoint::Conv {
            stage: 1,
            block: 1,
            part,
        };
        directional("efficientnet_lite0", &model, &batch, point);
    }
}

/// EfficientNet-Lite runs a block a few images at a time when no hook reads inside it (so its
/// wide tensors stay in cache), layer by layer over the batch otherwise. Both schedules must
/// give the same logits and pixel gradients, and an image the same alone as in a batch. Nine
/// images at 224²: the widest block runs in chunks of three at most (of one to three with up to
/// three threads), the next in a chunk of eight and a remainder of one.
#[test]
fn efficientnet_blocks_in_image_chunks_match_layer_by_layer() {
    let Some(model) = efficientnet_lite0() else {
        return;
    };
    let batch = images(9, 224);
    // Every expansion and depthwise output: wanted by a hook, each block runs layer by layer.
    let inner: Vec<HookPoint> = model
        .model
        .hook_points()
        .into_iter()
        .filter(|p| {
            matches!(
                p,
                HookPoint::Conv {
                    part: ConvPart::Expand | ConvPart::Depthwise,
                    ..
                }
            )
        })
        .collect();
    let logits = |batch: &ImageBatch, hooks: &mut Capture| -> Vec<f32> {
        let t = model.model.forward(batch.into(), hooks).unwrap();
        t.flatten_all().unwrap().to_vec1().unwrap()
    };
    let chunked = logits(&batch, &mut Capture::new([]));
    let layered = logits(&batch, &mut Capture::new(inner.clone()));
    close(
        "logits, chunked vs layer by layer",
        &chunked,
        &layered,
        1e-5,
    );
    let classes = chunked.len() / batch.batch;
    // Each image's own top class.
    let mut seed = vec![0f32; chunked.len()];
    for (row, s) in chunked
        .chunks_exact(classes)
        .zip(seed.chunks_exact_mut(classes))
    {
        let top = (0..classes)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        s[top] = 1.0;
    }
    let pixels = |batch: &ImageBatch, points: &[HookPoint], seed: &[f32]| -> Vec<f32> {
        model
            .model
            .pixel_gradients(batch, points, seed)
            .unwrap()
            .unwrap()
            .pixels
    };
    let chunked_grad = pixels(&batch, &[], &seed);
    let layered_grad = pixels(&batch, &inner, &seed);
    close(
        "pixel gradients, chunked vs layer by layer",
        &chunked_grad,
        &layered_grad,
        1e-5,
    );
    // The first image alone (the generator's first 224² pixels are the batch's first image).
    let alone = images(1, 224);
    close(
        "first image's logits, alone vs in the batch",
        &logits(&alone, &mut Capture::new([])),
        &chunked[..classes],
        1e-5,
    );
    close(
        "first image's pixel gradients, alone vs in the batch",
        &pixels(&alone, &[], &seed[..classes]),
        &chunked_grad[..alone.pixels.len()],
        1e-5,
    );
}
