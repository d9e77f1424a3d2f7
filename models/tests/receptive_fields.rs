//! `HookedModel::hook_grid` against the models themselves: change one input pixel and see which
//! cells of each hook change. Every changed cell must have the pixel inside its receptive field
//! (the grid is sound), and the changed cells must reach the edges of the predicted set (the
//! grid is tight). Tiny random ResNets (bottleneck and basic, PyTorch padding) and the real
//! EfficientNet-Lite0 (TensorFlow "SAME" padding, asymmetric on even inputs).

use glassbox_models::{load_model, resolve, Capture, ImageBatch, LoadOptions, ModelSpec};
use glassbox_models::{HookPoint, LoadedModel};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn load(spec: &str) -> Option<LoadedModel> {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let spec: ModelSpec = spec.parse().unwrap();
    match resolve(&spec) {
        Ok(r) => Some(
            load_model(
                r,
                LoadOptions {
                    allow_pickle: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        ),
        Err(e) => {
            glassbox_tests::skip("receptive_fields", &format!("{e}; run `just models`"));
            None
        }
    }
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Deterministic pseudo-random pixels in [-1, 1].
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn capture(
    model: &LoadedModel,
    pixels: &[f32],
    size: (usize, usize),
    hooks: &[HookPoint],
) -> Capture {
    let batch = ImageBatch {
        pixels: pixels.to_vec(),
        batch: 1,
        height: size.0,
        width: size.1,
    };
    let mut c = Capture::new(hooks.to_vec());
    model.model.forward((&batch).into(), &mut c).unwrap();
    c
}

/// For each pixel, the cells of each hook that change when that pixel changes. A ReLU or a
/// max-pool hides a dependence when the changed input is clipped or not the maximum, so the
/// pixel takes several large values of both signs: one of them wins somewhere.
fn check(model: &LoadedModel, size: (usize, usize), pixels_to_probe: &[(usize, usize)]) {
    let hooks: Vec<HookPoint> = model
        .model
        .hook_points()
        .into_iter()
        .filter(|p| model.model.hook_grid(*p, size).is_some())
        .collect();
    assert!(!hooks.is_empty());
    let base = noise(size.0 * size.1 * 3, 7);
    let reference = capture(model, &base, size, &hooks);
    let mut checked = 0;
    for &(py, px) in pixels_to_probe {
        let mut changed: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); hooks.len()];
        for (trial, value) in [60.0f32, -60.0, 25.0, -25.0, 120.0, -120.0]
            .into_iter()
            .enumerate()
        {
            let mut x = base.clone();
            for c in 0..3 {
                x[(py * size.1 + px) * 3 + c] =
                    value * if (c + trial) % 2 == 0 { 1.0 } else { -1.0 };
            }
            let got = capture(model, &x, size, &hooks);
            for (h, hook) in hooks.iter().enumerate() {
                let (a, b) = (&reference.captured[hook], &got.captured[hook]);
                let (_, positions, width) = a.dims3().unwrap();
                let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
                let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
                for p in 0..positions {
                    if a[p * width..(p + 1) * width] != b[p * width..(p + 1) * width] {
                        changed[h].insert(p);
                    }
                }
            }
        }
        for (h, hook) in hooks.iter().enumerate() {
            let grid = model.model.hook_grid(*hook, size).unwrap();
            let predicted: BTreeSet<usize> = (0..grid.positions())
                .filter(|&p| {
                    let r = grid.rect(p).unwrap();
                    (r.y0..=r.y1).contains(&py) && (r.x0..=r.x1).contains(&px)
                })
                .collect();
            let outside: Vec<_> = changed[h].difference(&predicted).collect();
            assert!(
                outside.is_empty(),
                "{hook}: pixel ({py}, {px}) changed cells {outside:?} outside the grid's receptive fields {predicted:?}"
            );
            let bounds = |s: &BTreeSet<usize>| {
                let cells: Vec<_> = s.iter().map(|&p| grid.cell(p).unwrap()).collect();
                let rows = cells.iter().map(|c| c.0);
                let cols = cells.iter().map(|c| c.1);
                (
                    rows.clone().min(),
                    rows.max(),
                    cols.clone().min(),
                    cols.max(),
                )
            };
            assert_eq!(
                bounds(&changed[h]),
                bounds(&predicted),
                "{hook}: pixel ({py}, {px}): the changed cells do not span the predicted receptive fields"
            );
            checked += 1;
        }
    }
    println!(
        "{} hooks × {} pixels checked",
        hooks.len(),
        pixels_to_probe.len()
    );
    assert_eq!(checked, hooks.len() * pixels_to_probe.len());
}

fn probe_pixels(size: (usize, usize)) -> Vec<(usize, usize)> {
    let (h, w) = size;
    vec![
        (0, 0),
        (h - 1, w - 1),
        (0, w - 1),
        (h / 2, w / 2 + 1),
        (h / 3, 2 * w / 3),
    ]
}

#[test]
fn resnet_grids_match_which_cells_a_pixel_reaches() {
    for name in ["tiny_resnet", "tiny_resnet_basic"] {
        let model = load(&fixture(name)).unwrap();
        // Convolutional maps follow the input: an odd height and an even width.
        let size = (61, 70);
        check(&model, size, &probe_pixels(size));
    }
}

#[test]
fn efficientnet_same_padding_grids_match_which_cells_a_pixel_reaches() {
    let Some(model) = load("glassbox-offline/efficientnet-lite0") else {
        return;
    };
    // The stem and the first stages, where the fields are smaller than the image (later ones
    // cover it whole and say nothing about padding).
    check(&model, (224, 224), &[(0, 0), (223, 223), (100, 37)]);
    // An odd size: SAME padding splits evenly there.
    check(&model, (97, 97), &[(0, 0), (96, 96), (50, 13)]);
}
