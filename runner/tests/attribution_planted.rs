//! Planted signal: a tiny ViT trained so that class 1 means "a bright square in the top-left
//! quadrant" (`scripts/planted_attribution_vit.py`, weights in `tests/fixtures/planted_vit/`).
//! On inputs with the square painted in that quadrant over noise, integrated gradients and
//! occlusion put ≥ 90 % of their positive attribution mass in the quadrant — the right answer
//! by construction — while the edge control, which never reads the model, is spread over the
//! noise.

use glassbox_data::rng::SeededRng;
use glassbox_models::{load_model, resolve, LoadOptions, ModelSpec};
use glassbox_runner::attribution::image_oracle::ImageOracle;
use glassbox_runner::attribution::maps::edges;
use glassbox_runner::attribution::methods::{
    image_windows, integrated_gradients, occlusion, per_position,
};
use glassbox_runner::attribution::oracle::{Oracle, Target};
use glassbox_runner::attribution::IgRule;

const SIZE: usize = 32;

/// Faint noise (±0.05; the model was trained on ±0.15 backgrounds) with a 6×6 square of 1.0 at `(top, left)`, channels-last.
fn planted(seed: u64, top: usize, left: usize) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    let mut x: Vec<f32> = (0..SIZE * SIZE * 3)
        .map(|_| ((rng.unit_f64() * 2.0 - 1.0) * 0.05) as f32)
        .collect();
    for y in top..top + 6 {
        for xx in left..left + 6 {
            x[(y * SIZE + xx) * 3..(y * SIZE + xx) * 3 + 3].fill(1.0);
        }
    }
    x
}

/// Share of the positive per-pixel mass inside the top-left quadrant.
fn top_left_share(pixels: &[f32]) -> f64 {
    let (mut inside, mut all) = (0f64, 0f64);
    for (p, v) in pixels.iter().enumerate() {
        let v = f64::from(v.max(0.0));
        all += v;
        if p / SIZE < SIZE / 2 && p % SIZE < SIZE / 2 {
            inside += v;
        }
    }
    inside / all.max(f64::MIN_POSITIVE)
}

#[test]
fn ig_and_occlusion_find_the_planted_quadrant() {
    let spec: ModelSpec = glassbox_tests::workspace_root()
        .join("tests/fixtures/planted_vit")
        .display()
        .to_string()
        .parse()
        .unwrap();
    let model = load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap();
    let target = Target::Outputs {
        weights: vec![0.0, 1.0],
    };
    for (seed, top, left) in [(1, 2, 3), (2, 9, 8), (3, 5, 0)] {
        let x = planted(seed, top, left);
        let o = ImageOracle::new(&model, x.clone(), (SIZE, SIZE), &target, 16).unwrap();
        let logits = o.logits(&x).unwrap();
        assert!(
            logits[1] > logits[0],
            "the planted model sees the square: {logits:?}"
        );
        let zero = vec![0f32; x.len()];
        let ig = per_position(
            &integrated_gradients(&o, &x, &zero, 64, IgRule::GaussLegendre).unwrap(),
            3,
        );
        let windows = image_windows(SIZE, SIZE, 8, 4);
        let occ = per_position(&occlusion(&o, &x, &zero, &windows).unwrap().1, 3);
        let edge = edges(o.input(), SIZE, SIZE);
        let (s_ig, s_occ, s_edge) = (
            top_left_share(&ig),
            top_left_share(&occ),
            top_left_share(&edge),
        );
        eprintln!("square at ({top}, {left}): top-left share IG {s_ig:.3}, occlusion {s_occ:.3}, edges {s_edge:.3}");
        assert!(s_ig >= 0.9, "IG: {s_ig}");
        assert!(s_occ >= 0.9, "occlusion: {s_occ}");
        assert!(
            s_edge < 0.9,
            "the edge control should not single out the quadrant: {s_edge}"
        );
    }
}
