//! The methods on oracles whose answers are known in closed form.

use super::*;

use crate::attribution::test_oracles::{quadratic, Separable};

/// A [`quadratic`] oracle that evaluates at most `batch` inputs a call and records the largest
/// call, as a model oracle whose memory is one batch.
struct Batched {
    inner: Separable,
    batch: usize,
    largest: std::cell::Cell<usize>,
}

impl Oracle for Batched {
    fn input(&self) -> &[f32] {
        self.inner.input()
    }
    fn width(&self) -> usize {
        1
    }
    fn batch(&self) -> usize {
        self.batch
    }
    fn values(&self, inputs: &[Vec<f32>]) -> Result<Vec<f64>> {
        self.largest.set(self.largest.get().max(inputs.len()));
        self.inner.values(inputs)
    }
    fn gradients(&self, inputs: &[Vec<f32>]) -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
        self.largest.set(self.largest.get().max(inputs.len()));
        self.inner.gradients(inputs)
    }
}

/// IG's steps, SmoothGrad's copies and occlusion's windows reach the oracle one batch at a
/// time (handed over at once, 1,000 steps of an image would be 1,000 images in memory),
/// and the maps equal those of one call over everything.
#[test]
fn many_inputs_reach_the_oracle_one_batch_at_a_time() {
    let quadratic = || quadratic(vec![1.0, -2.0, 0.5, 0.75], vec![1.5, 0.25, -3.0, 2.0]);
    let batched = |batch| Batched {
        inner: quadratic(),
        batch,
        largest: std::cell::Cell::new(0),
    };
    let (small, whole) = (batched(7), batched(usize::MAX));
    let x = quadratic().x;
    let zero = vec![0.0; 4];
    let windows: Vec<Vec<usize>> = (0..1000).map(|i| vec![i % 4]).collect();
    for o in [&small, &whole] {
        o.largest.set(0);
        let ig = integrated_gradients(o, &x, &zero, 1000, IgRule::GaussLegendre).unwrap();
        let sg = smoothgrad(o, &x, 1000, 0.2, 3, false).unwrap();
        let (f, occ) = occlusion(o, &x, &zero, &windows).unwrap();
        if std::ptr::eq(o, &small) {
            assert_eq!(o.largest.get(), 7, "every call at most one batch");
        } else {
            assert_eq!(o.largest.get(), 1001, "one call: x and the 1,000 windows");
        }
        // Same noise draws, same sums in the same order: equal to the bit.
        let whole_maps = (
            integrated_gradients(&quadratic(), &x, &zero, 1000, IgRule::GaussLegendre).unwrap(),
            smoothgrad(&quadratic(), &x, 1000, 0.2, 3, false).unwrap(),
            occlusion(&quadratic(), &x, &zero, &windows).unwrap(),
        );
        assert_eq!(ig, whole_maps.0);
        assert_eq!(sg, whole_maps.1);
        assert_eq!((f, occ), whole_maps.2);
    }
}

/// IG of cᵢxᵢ² from 0 is exactly cᵢxᵢ² per feature (the integrand is linear in α, so every
/// rule with ≥ 2 points — and Gauss–Legendre with 1 — is exact): completeness holds.
#[test]
fn integrated_gradients_is_exact_on_a_quadratic() {
    let o = quadratic(vec![1.0, -2.0, 0.5], vec![1.5, 0.25, -3.0]);
    let zero = vec![0.0; 3];
    for rule in [
        IgRule::GaussLegendre,
        IgRule::RiemannTrapezoid,
        IgRule::RiemannMiddle,
    ] {
        let a = integrated_gradients(&o, &o.x, &zero, 8, rule).unwrap();
        for ((a, x), c) in a.iter().zip(&o.x).zip(&o.c) {
            assert!(
                (a - c * x * x).abs() < 1e-5,
                "{rule:?}: {a} vs {}",
                c * x * x
            );
        }
    }
}

#[test]
fn adaptive_steps_close_the_completeness_gap_at_a_kink() {
    let x = vec![1.37f32, 0.93, 2.2];
    // f(x) = Σ 3·relu(xᵢ − ½): a kink halfway along the path from 0. The adaptive rule
    // refines around it and completeness holds far better than the fixed midpoint rule's.
    let o = Separable {
        x: x.clone(),
        c: vec![3.0; 3],
        phi: |c, v| f64::from((v - 0.5).max(0.0)) * f64::from(c),
        dphi: |c, v| if v > 0.5 { c } else { 0.0 },
    };
    let zero = vec![0.0; 3];
    let gap = o.values(std::slice::from_ref(&x)).unwrap()[0];
    let miss = |a: &[f32]| (a.iter().map(|v| f64::from(*v)).sum::<f64>() - gap).abs() / gap;
    let adaptive = integrated_gradients(&o, &x, &zero, 32, IgRule::Adaptive).unwrap();
    let fixed32 = integrated_gradients(&o, &x, &zero, 32, IgRule::GaussLegendre).unwrap();
    assert!(
        miss(&adaptive) < miss(&fixed32) && miss(&adaptive) < 1e-3,
        "{} vs {}",
        miss(&adaptive),
        miss(&fixed32)
    );
}

#[test]
fn occlusion_of_single_features_is_the_exact_difference() {
    let o = quadratic(vec![1.0, 2.0, 3.0, 4.0], vec![1.0, 1.0, 2.0, -1.0]);
    let windows = token_windows(4, 1, 1, 1);
    let (f, a) = occlusion(&o, &o.x, &[0.0; 4], &windows).unwrap();
    assert_eq!(f, 1.0 + 2.0 + 12.0 + 4.0);
    assert_eq!(a, vec![1.0, 2.0, 12.0, 4.0]);
}

#[test]
fn windows_cover_every_pixel_and_stay_inside() {
    for (h, w, size, stride) in [(224, 224, 16, 8), (10, 7, 4, 3), (5, 5, 8, 2)] {
        let windows = image_windows(h, w, size, stride);
        let mut covered = vec![false; h * w * 3];
        for win in &windows {
            for &i in win {
                covered[i] = true;
            }
        }
        assert!(
            covered.iter().all(|c| *c),
            "{h}×{w} size {size} stride {stride}"
        );
    }
    assert_eq!(image_windows(224, 224, 16, 8).len(), 27 * 27);
    assert_eq!(token_windows(5, 2, 2, 2).len(), 3);
}
