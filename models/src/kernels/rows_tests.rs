//! Unit tests of `rows` (kept beside it, in their own file for length).
use super::*;

/// [`exp_shifted_row`] on this CPU's vectors.
struct ExpRow<'a>(&'a mut [f32]);

impl pulp::WithSimd for ExpRow<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        exp_shifted_row(simd, self.0)
    }
}

#[test]
fn vector_exp_matches_std() {
    // 870,001 points over [-87, 0], cut to leave scalar tails of 1, 0 and 15 values after
    // the vectors; each row is shifted by its own max (its last value).
    let xs: Vec<f32> = (0..=870_000).rev().map(|i| -(i as f32) * 1e-4).collect();
    for cut in [0, 1, 2] {
        let mut row = xs[..xs.len() - cut].to_vec();
        let max = row[row.len() - 1];
        let sum = glassbox_data::simd::arch().dispatch(ExpRow(&mut row));
        let mut want_sum = 0f64;
        for (&x, &got) in xs.iter().zip(&row) {
            let want = (x - max).exp();
            want_sum += want as f64;
            assert!(
                (got - want).abs() <= want * 4e-7 + 1e-37,
                "exp({x} - {max}): {got} vs {want}"
            );
        }
        assert!(
            (sum as f64 - want_sum).abs() < want_sum * 1e-4,
            "{sum} vs {want_sum}"
        );
    }
}

#[test]
fn fast_exp_matches_std() {
    for i in 0..=870_000 {
        let x = -(i as f32) * 1e-4;
        let (a, b) = (exp_nonpositive(x), x.exp());
        assert!((a - b).abs() <= b * 4e-7 + 1e-37, "exp({x}): {a} vs {b}");
    }
}

#[test]
fn fast_sigmoid_and_tanh_match_std() {
    let (mut worst_sigmoid, mut worst_tanh) = (0f32, 0f32);
    for i in -200_000..=200_000 {
        let x = i as f32 * 1e-4;
        let sigmoid_ref = (1.0 / (1.0 + (-(x as f64)).exp())) as f32;
        worst_sigmoid = worst_sigmoid.max((sigmoid(x) - sigmoid_ref).abs() / sigmoid_ref);
        worst_tanh = worst_tanh.max((tanh(x) - x.tanh()).abs());
        assert_eq!(tanh(x).signum(), x.tanh().signum(), "sign of tanh({x})");
    }
    assert!(
        worst_sigmoid < 1e-6,
        "sigmoid max relative error {worst_sigmoid}"
    );
    assert!(worst_tanh < 2e-7, "tanh max absolute error {worst_tanh}");
    assert!((0.0..1e-30).contains(&sigmoid(-200.0)));
    assert_eq!(sigmoid(200.0), 1.0);
    assert_eq!(tanh(200.0), 1.0);
    assert_eq!(tanh(-200.0), -1.0);
}

#[test]
fn fast_erf_matches_libm() {
    let worst = (-60_000..=60_000)
        .map(|i| i as f32 * 1e-4)
        .map(|x| (erf(x) - candle_core::cpu::erf::erf_f32(x)).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-6, "max abs error {worst}");
}

#[test]
fn layer_norm_normalises() {
    let mut x = vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
    layer_norm(&mut x, &[], &[], &[1.0; 4], &[0.5; 4], 1e-12);
    let row = &x[..4];
    let mean: f32 = row.iter().sum::<f32>() / 4.0;
    assert!((mean - 0.5).abs() < 1e-6);
    assert!((row[3] - row[0] - 2.0 * 1.5 / 1.25f32.sqrt()).abs() < 1e-5);
    assert!(
        x[4..].iter().all(|v| (v - 0.5).abs() < 1e-6),
        "constant rows map to beta"
    );
}

#[test]
fn softmax_sums_to_one_and_is_stable() {
    let mut row = [1000.0, 1001.0, 999.0, 0.0, 1000.0, 1000.0];
    for part in row.chunks_exact_mut(3) {
        let sum = glassbox_data::simd::arch().dispatch(ExpRow(part));
        part.iter_mut().for_each(|v| *v /= sum);
    }
    assert!((row[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert!(row[1] > row[0] && row[0] > row[2]);
    // e^-1000 underflows: the far-below-max entry gets (almost) nothing.
    assert!((0.0..1e-30).contains(&row[3]));
    assert!((row[4] - 0.5).abs() < 1e-6 && (row[5] - 0.5).abs() < 1e-6);
}

#[test]
fn activations_match_their_definitions() {
    let x: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.2).collect();
    let bias = vec![0.1f32];
    let check = |act: Act, f: fn(f64) -> f64, tol: f64| {
        let mut y = x.clone();
        bias_act(&mut y, &bias, act);
        for (v, out) in x.iter().zip(&y) {
            let want = f(*v as f64 + 0.1);
            assert!(
                (*out as f64 - want).abs() <= tol * (1.0 + want.abs()),
                "{act:?}({v} + 0.1) = {out}, want {want}"
            );
        }
    };
    check(Act::Identity, |v| v, 1e-7);
    check(Act::Relu, |v| v.max(0.0), 1e-7);
    check(Act::Relu6, |v| v.clamp(0.0, 6.0), 1e-7);
    check(Act::Silu, |v| v / (1.0 + (-v).exp()), 1e-6);
    check(Act::QuickGelu, |v| v / (1.0 + (-1.702 * v).exp()), 1e-6);
    check(
        Act::GeluTanh,
        |v| 0.5 * v * (1.0 + (0.797_884_560_8 * (v + 0.044715 * v.powi(3))).tanh()),
        1e-6,
    );
    // Exact GELU = x·Φ(x), with erf at f64 from candle's libm port.
    check(
        Act::GeluErf,
        |v| 0.5 * v * (1.0 + candle_core::cpu::erf::erf_f64(v * std::f64::consts::FRAC_1_SQRT_2)),
        1e-6,
    );
}

#[test]
fn rms_norm_gated_activation_and_rotation_match_their_definitions() {
    let row: Vec<f32> = (0..8).map(|v| v as f32 - 3.5).collect();
    let gamma: Vec<f32> = (0..8).map(|v| 1.0 + v as f32 * 0.1).collect();
    let mut x = row.clone();
    rms_norm(&mut x, &gamma, 1e-6);
    let rms = (row.iter().map(|v| v * v).sum::<f32>() / 8.0 + 1e-6).sqrt();
    for i in 0..8 {
        assert!((x[i] - row[i] / rms * gamma[i]).abs() < 1e-6);
    }

    let mut gate = vec![-2.0, 0.0, 1.5];
    act_mul(&mut gate, &[3.0, 4.0, -1.0], Act::Silu);
    let silu = |v: f32| v / (1.0 + (-v).exp());
    for (g, want) in gate.iter().zip([silu(-2.0) * 3.0, 0.0, -silu(1.5)]) {
        assert!((g - want).abs() < 1e-6, "{g} vs {want}");
    }

    // Two rows of one head of 6 columns, 2 of its 3 pairs rotating (partial rotary), at
    // positions 0 (no turn) and 1 (angles 0.5 and 0.25).
    let mut rows: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let (cos, sin) = (
        [1.0, 1.0, 0.5f32.cos(), 0.25f32.cos()],
        [0.0, 0.0, 0.5f32.sin(), 0.25f32.sin()],
    );
    rotate(&mut rows, &[0, 1], (0, 1, 6, 6), 2, &cos, &sin);
    assert_eq!(&rows[..6], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let (a, b) = (6.0f32, 8.0f32);
    assert!((rows[6] - (a * cos[2] - b * sin[2])).abs() < 1e-6);
    assert!((rows[8] - (b * cos[2] + a * sin[2])).abs() < 1e-6);
    assert_eq!(
        &rows[10..],
        &[10.0, 11.0],
        "columns past the rotary pairs stay"
    );
}

#[test]
fn an_empty_bias_applies_the_activation_alone() {
    let mut x = vec![-1.5, 0.5, 7.0];
    bias_act(&mut x, &[], Act::Relu6);
    assert_eq!(x, [0.0, 0.5, 6.0]);
    let mut y = vec![-1.5, 0.5, 7.0];
    bias_act(&mut y, &[1.0, 1.0, 1.0], Act::Relu6);
    assert_eq!(y, [0.0, 1.5, 6.0]);
}

#[test]
fn activation_derivatives_match_central_differences() {
    let x: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.2 + 0.05).collect();
    let check = |act: Act, f: fn(f64) -> f64| {
        let mut g = vec![1f32; x.len()];
        mul_act_derivative(&mut g, &x, act);
        for (v, d) in x.iter().zip(&g) {
            let h = 1e-5;
            let u = *v as f64;
            let want = (f(u + h) - f(u - h)) / (2.0 * h);
            assert!(
                (*d as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{act:?}'({v}) = {d}, want {want}"
            );
        }
    };
    check(Act::Identity, |v| v);
    check(Act::Relu, |v| v.max(0.0));
    check(Act::Relu6, |v| v.clamp(0.0, 6.0));
    check(Act::Silu, |v| v / (1.0 + (-v).exp()));
    check(Act::QuickGelu, |v| v / (1.0 + (-1.702 * v).exp()));
    check(Act::GeluTanh, |v| {
        0.5 * v * (1.0 + (0.797_884_560_8 * (v + 0.044715 * v.powi(3))).tanh())
    });
    check(Act::GeluErf, |v| {
        0.5 * v * (1.0 + candle_core::cpu::erf::erf_f64(v * std::f64::consts::FRAC_1_SQRT_2))
    });
}
