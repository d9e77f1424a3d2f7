//! Planted-concept acceptance test: the target's gradient is a known direction `u` (plus
//! noise). A concept shifted along `u` must be significant after Holm correction with a score
//! near 1, one shifted along `−u` significant with a score near 0, and a concept of random
//! examples not significant.

use glassbox_concepts::{run_tcav, CavMethod, Convention, HookSets, Options, TargetGradients};
use glassbox_data::rng::SeededRng;

const WIDTH: usize = 16;

fn rows(rng: &mut SeededRng, n: usize, shift: &[f64]) -> Vec<f32> {
    (0..n * WIDTH)
        .map(|i| (rng.gaussian() + shift[i % WIDTH]) as f32)
        .collect()
}

#[test]
fn aligned_concepts_are_significant_and_random_ones_are_not() {
    let mut rng = SeededRng::new(42);
    let u: Vec<f64> = {
        let v: Vec<f64> = (0..WIDTH).map(|_| rng.gaussian()).collect();
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / n).collect()
    };
    let zero = vec![0.0; WIDTH];
    let plus: Vec<f64> = u.iter().map(|v| 3.0 * v).collect();
    let minus: Vec<f64> = u.iter().map(|v| -3.0 * v).collect();
    let aligned = rows(&mut rng, 50, &plus);
    let opposite = rows(&mut rng, 50, &minus);
    let random_concept = rows(&mut rng, 50, &zero);
    let randoms: Vec<Vec<f32>> = (0..21).map(|_| rows(&mut rng, 50, &zero)).collect();
    // Per-position gradients u + ε (ε ~ N(0, 0.5²) per unit: gradient directions vary across
    // examples, as in a real model), summed over 5–15 positions.
    let mut sums: Vec<f32> = Vec::new();
    for i in 0..40 {
        let positions = 5.0 + (i % 11) as f64;
        for uk in &u {
            sums.push((positions * uk + positions.sqrt() * 0.5 * rng.gaussian()) as f32);
        }
    }
    let sets = HookSets {
        hook: glassbox_data::HookPoint::ResidPost(1),
        width: WIDTH,
        concepts: vec![
            ("aligned", &aligned),
            ("opposite", &opposite),
            ("random-examples", &random_concept),
        ],
        randoms: randoms.iter().map(Vec::as_slice).collect(),
    };
    let targets = [TargetGradients {
        target: "planted",
        hook: glassbox_data::HookPoint::ResidPost(1),
        convention: Convention::Logit,
        sums: &sums,
    }];
    let opts = Options {
        method: CavMethod::Logistic,
        l2: 1.0,
        alpha: 0.05,
        min_cav_accuracy: 0.6,
        bootstrap: 1000,
        seed: 0,
    };
    let (cavs, scores) = run_tcav(&[sets], &targets, &opts).unwrap();
    assert_eq!(cavs.len(), 20 * 4, "20 baseline CAVs and 20 per concept");
    let get = |name: &str| scores.iter().find(|s| s.concept == name).unwrap();
    let a = get("aligned");
    assert!(a.score > 0.95 && a.significant, "aligned: {a:?}");
    assert!(a.cav_accuracy > 0.85, "{a:?}");
    let o = get("opposite");
    assert!(o.score < 0.05 && o.significant, "opposite: {o:?}");
    let r = get("random-examples");
    assert!(
        !r.significant,
        "a concept of random examples is not significant: {r:?}"
    );
    assert!(
        a.p_holm >= a.p && o.p_holm >= o.p,
        "adjusted p-values are never smaller"
    );

    // Under the loss convention the same gradients mean the opposite, and the score flips.
    let loss = [TargetGradients {
        convention: Convention::Loss,
        ..targets[0]
    }];
    let sets = HookSets {
        hook: glassbox_data::HookPoint::ResidPost(1),
        width: WIDTH,
        concepts: vec![("aligned", &aligned)],
        randoms: randoms.iter().map(Vec::as_slice).collect(),
    };
    let (_, flipped) = run_tcav(&[sets], &loss, &opts).unwrap();
    assert!(flipped[0].score < 0.05 && flipped[0].convention == "loss");

    // Same seed, same numbers.
    let sets = HookSets {
        hook: glassbox_data::HookPoint::ResidPost(1),
        width: WIDTH,
        concepts: vec![
            ("aligned", &aligned),
            ("opposite", &opposite),
            ("random-examples", &random_concept),
        ],
        randoms: randoms.iter().map(Vec::as_slice).collect(),
    };
    let (_, again) = run_tcav(&[sets], &targets, &opts).unwrap();
    assert_eq!(again, scores);
}
