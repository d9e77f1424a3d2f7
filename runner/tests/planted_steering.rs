//! Steering with a planted readout, known by construction, on the tiny random GPT-2: a linear
//! head on `blocks.1.hook_resid_post` reads direction `w` of the residual stream. Steering at
//! `blocks.0.hook_resid_post` along `w` reaches the head through the residual connection;
//! along a direction orthogonal to `w` only through block 1's attention and MLP. The causal
//! test must call the first "causally supported", the second "not supported", and random
//! directions never supported at the corrected level; LEACE-style erasure of the read
//! direction must lower the readout beyond random erasers of the same rank.

use glassbox_concepts::causal::stats::{finite_mean, slopes, verdict};
use glassbox_concepts::causal::{compare, Claim, Verdict};
use glassbox_concepts::stats::holm;
use glassbox_data::rng::SeededRng;
use glassbox_data::{HookPoint, Pool};
use glassbox_models::{load_model, resolve, LoadOptions, LoadedModel, ModelSpec};
use glassbox_runner::steering::{clean, edited, Batches, Edit, HeadClass, Readout};

const AT: HookPoint = HookPoint::ResidPost(0);
const ALPHAS: [f64; 4] = [-0.5, -0.25, 0.25, 0.5];
const RANDOM: usize = 20;

fn model() -> LoadedModel {
    let dir = glassbox_tests::workspace_root().join("tests/fixtures/tiny_gpt2");
    let spec: ModelSpec = dir.display().to_string().parse().unwrap();
    load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap()
}

fn texts() -> Vec<String> {
    (0..24)
        .map(|i| format!("the {} cat sat on mat number {} today", i % 5, i))
        .collect()
}

fn unit(v: Vec<f64>) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn gaussian(width: usize, rng: &mut SeededRng) -> Vec<f64> {
    unit((0..width).map(|_| rng.gaussian()).collect())
}

/// Per-example dose-response slopes of the readout along `direction`.
fn steer(
    model: &LoadedModel,
    batches: &Batches,
    readouts: &[Readout],
    base: &glassbox_runner::steering::Clean,
    direction: &[f64],
) -> Vec<f64> {
    let effects: Vec<Vec<f64>> = ALPHAS
        .iter()
        .map(|alpha| {
            let v: Vec<f32> = direction
                .iter()
                .map(|d| (alpha * base.typical_norm * d) as f32)
                .collect();
            let values = edited(model, batches, AT, &Edit::Add(v), readouts, base).unwrap();
            values[0]
                .iter()
                .zip(&base.values[0])
                .map(|(a, b)| a - b)
                .collect()
        })
        .collect();
    slopes(&ALPHAS, &effects, true)
}

#[test]
fn a_read_direction_is_supported_an_orthogonal_one_and_random_ones_are_not() {
    let model = model();
    let width = model.model.hook_width(AT);
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batches = Batches::texts(&model, &refs, 8).unwrap();
    let mut rng = SeededRng::new(11);
    let w = gaussian(width, &mut rng);
    let readouts = [Readout::Head {
        hook: HookPoint::ResidPost(1),
        pool: Some(Pool::Mean),
        weight: w.iter().map(|v| *v as f32).collect(),
        bias: vec![0.0],
        class: HeadClass::Raw,
    }];
    let base = clean(&model, &batches, AT, &readouts).unwrap();
    assert!(base.typical_norm > 0.0);
    // Orthogonal to w by construction: a Gaussian with its w component removed.
    let g = gaussian(width, &mut rng);
    let along: f64 = g.iter().zip(&w).map(|(a, b)| a * b).sum();
    let orthogonal = unit(g.iter().zip(&w).map(|(a, b)| a - along * b).collect());
    let random_effects: Vec<f64> = (0..RANDOM)
        .map(|_| {
            finite_mean(&steer(
                &model,
                &batches,
                &readouts,
                &base,
                &gaussian(width, &mut rng),
            ))
        })
        .collect();
    // The tested directions: the planted one, the orthogonal one, and 10 more random ones.
    let mut tested = vec![w.clone(), orthogonal];
    tested.extend((0..10).map(|_| gaussian(width, &mut rng)));
    let comparisons: Vec<_> = tested
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let s = steer(&model, &batches, &readouts, &base, d);
            compare(&s, &random_effects, Claim::Raises, 500, i as u64)
        })
        .collect();
    let adjusted = holm(&comparisons.iter().map(|c| c.p).collect::<Vec<_>>());
    let verdicts: Vec<Verdict> = comparisons
        .iter()
        .zip(&adjusted)
        .map(|(c, p)| verdict(c, Claim::Raises, *p, 0.05).0)
        .collect();
    assert_eq!(
        verdicts[0],
        Verdict::Supported,
        "the read direction: {:?}, p_holm {}",
        comparisons[0],
        adjusted[0]
    );
    assert!(
        comparisons[0].ci.0 > 0.0,
        "its effect is positive: {:?}",
        comparisons[0]
    );
    assert_eq!(
        verdicts[1],
        Verdict::NotSupported,
        "the orthogonal direction: {:?}",
        comparisons[1]
    );
    for (i, v) in verdicts.iter().enumerate().skip(2) {
        assert_eq!(
            *v,
            Verdict::NotSupported,
            "random direction {i}: {:?}",
            comparisons[i]
        );
    }
}

#[test]
fn erasing_the_read_direction_lowers_the_readout_beyond_random_erasers() {
    let model = model();
    let width = model.model.hook_width(AT);
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batches = Batches::texts(&model, &refs, 8).unwrap();
    let mut rng = SeededRng::new(5);
    let w = gaussian(width, &mut rng);
    // A raw head on the very tensor edited: erasing `w` sets its output to exactly 0.
    let readouts = [Readout::Head {
        hook: HookPoint::ResidPre(1),
        pool: Some(Pool::Mean),
        weight: w.iter().map(|v| *v as f32 * 4.0).collect(),
        bias: vec![0.0],
        class: HeadClass::Raw,
    }];
    let base = clean(&model, &batches, AT, &readouts).unwrap();
    // Orthogonal projection onto the complement of a direction, about the origin.
    let projector = |d: &[f64]| -> Edit {
        let mut m = vec![0f32; width * width];
        for i in 0..width {
            for j in 0..width {
                m[i * width + j] = (d[i] * d[j]) as f32;
            }
        }
        Edit::Erase {
            matrix: m,
            mean: vec![0.0; width],
        }
    };
    let change = |edit: &Edit| -> Vec<f64> {
        let v = edited(&model, &batches, AT, edit, &readouts, &base).unwrap();
        v[0].iter()
            .zip(&base.values[0])
            .map(|(a, b)| (a - b).abs())
            .collect()
    };
    let own = change(&projector(&w));
    let random: Vec<f64> = (0..RANDOM)
        .map(|_| finite_mean(&change(&projector(&gaussian(width, &mut rng)))))
        .collect();
    let c = compare(&own, &random, Claim::Moves, 500, 3);
    assert!(
        c.p < 1e-2,
        "erasing the read direction moves the readout most: {c:?}"
    );
    // At the same tensor the readout reads, erasing w leaves exactly the bias.
    for (edited_value, clean_value) in own.iter().zip(&base.values[0]) {
        assert!(
            (edited_value - clean_value.abs()).abs() < 1e-3 * (1.0 + clean_value.abs()),
            "erased: |Δ| {edited_value} vs |clean| {clean_value}"
        );
    }
}

#[test]
fn edited_forwards_from_the_block_equal_full_forwards() {
    // `edited` starts at the edited hook's block from the unedited run's stream; a full forward
    // with the same edit must read the same values.
    let model = model();
    let width = model.model.hook_width(AT);
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batches = Batches::texts(&model, &refs, 24).unwrap();
    let mut rng = SeededRng::new(3);
    let w = gaussian(width, &mut rng);
    let readouts = [Readout::Head {
        hook: HookPoint::ResidPost(1),
        pool: Some(Pool::Last),
        weight: w.iter().map(|v| *v as f32).collect(),
        bias: vec![0.5],
        class: HeadClass::Raw,
    }];
    let base = clean(&model, &batches, AT, &readouts).unwrap();
    let v: Vec<f32> = gaussian(width, &mut rng)
        .iter()
        .map(|x| *x as f32 * 2.0)
        .collect();
    let fast = edited(
        &model,
        &batches,
        AT,
        &Edit::Add(v.clone()),
        &readouts,
        &base,
    )
    .unwrap();
    let encoded = model.tokenizer().unwrap().encode(&refs).unwrap();
    let enc: Vec<_> = encoded.iter().collect();
    let batch =
        glassbox_models::TokenBatch::from_encoded(&enc, model.pad_id, &model.device).unwrap();
    let added = candle_core::Tensor::from_slice(&v, (1, 1, width), &model.device).unwrap();
    let mut capture = glassbox_models::Capture::new([HookPoint::ResidPost(1)]);
    struct Both<'a> {
        add: &'a candle_core::Tensor,
        capture: &'a mut glassbox_models::Capture,
    }
    impl glassbox_models::Hooks for Both<'_> {
        fn wants(&self, p: HookPoint) -> bool {
            p == AT || self.capture.wants(p)
        }
        fn visit(
            &mut self,
            p: HookPoint,
            x: candle_core::Tensor,
        ) -> candle_core::Result<candle_core::Tensor> {
            let x = if p == AT {
                x.broadcast_add(self.add)?
            } else {
                x
            };
            self.capture.visit(p, x)
        }
    }
    model
        .model
        .forward(
            (&batch).into(),
            &mut Both {
                add: &added,
                capture: &mut capture,
            },
        )
        .unwrap();
    let h: Vec<Vec<Vec<f32>>> = capture.captured[&HookPoint::ResidPost(1)]
        .to_vec3()
        .unwrap();
    for (i, e) in encoded.iter().enumerate() {
        let last = &h[i][e.ids.len() - 1];
        let z: f64 = last.iter().zip(&w).map(|(a, b)| *a as f64 * b).sum::<f64>() + 0.5;
        assert!(
            (z - fast[0][i]).abs() < 1e-4 * (1.0 + z.abs()),
            "example {i}: full {z} vs from the block {}",
            fast[0][i]
        );
    }
}
