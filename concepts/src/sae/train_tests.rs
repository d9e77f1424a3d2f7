use super::*;
use crate::sae::codes::{select, Codes, Selection};
use crate::sae::options::SaeOptions;
use candle_core::{DType, Device, Tensor, Var};
use glassbox_data::rng::SeededRng;

pub(crate) fn random(n: usize, rng: &mut SeededRng, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.unit_f64() as f32 - 0.5) * 2.0 * scale)
        .collect()
}

pub(crate) fn sae(architecture: Architecture, d: usize, width: usize, seed: u64) -> Sae {
    let mut rng = SeededRng::new(seed);
    Sae {
        input_norm: Default::default(),
        threshold: Vec::new(),
        gate: None,
        d_in: d,
        width,
        architecture,
        w_enc: random(width * d, &mut rng, 1.0),
        b_enc: random(width, &mut rng, 0.3),
        w_dec: random(width * d, &mut rng, 1.0),
        b_dec: random(d, &mut rng, 0.5),
    }
}

pub(crate) fn config() -> StepConfig {
    StepConfig {
        aux_coefficient: 0.25,
        dead_window: 0,
        decay_fraction: 0.2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        l0_coefficient: 0.8,
        bandwidth: 0.5,
        threshold_lr: 0.01,
        dense_from: 2.0,
    }
}

/// A 0/1 mask of `codes` as a `rows × width` tensor.
fn mask(codes: &Codes, width: usize) -> Tensor {
    let mut m = vec![0.0f32; codes.rows() * width];
    for r in 0..codes.rows() {
        for (j, _) in codes.row(r) {
            m[r * width + j] = 1.0;
        }
    }
    Tensor::from_vec(m, (codes.rows(), width), &Device::Cpu).unwrap()
}

/// The same loss written densely with candle ops, differentiated by candle's autograd. The
/// active sets come from our selection (they are piecewise constant, so treating them as
/// constants is exact away from ties).
fn autograd(
    sae: &Sae,
    x: &[f32],
    main: &Codes,
    aux: Option<&Codes>,
    levels: &[usize],
    cfg: &StepConfig,
) -> Gradients {
    let (d, m) = (sae.d_in, sae.width);
    let rows = x.len() / d;
    let dev = Device::Cpu;
    let w_enc = Var::from_vec(sae.w_enc.clone(), (m, d), &dev).unwrap();
    let b_enc = Var::from_vec(sae.b_enc.clone(), m, &dev).unwrap();
    let w_dec = Var::from_vec(sae.w_dec.clone(), (m, d), &dev).unwrap();
    let b_dec = Var::from_vec(sae.b_dec.clone(), d, &dev).unwrap();
    let xt = Tensor::from_slice(x, (rows, d), &dev).unwrap();
    let pre = xt
        .broadcast_sub(b_dec.as_tensor())
        .unwrap()
        .matmul(&w_enc.as_tensor().t().unwrap())
        .unwrap()
        .broadcast_add(b_enc.as_tensor())
        .unwrap();
    let f = pre.relu().unwrap().mul(&mask(main, m)).unwrap();
    let x_hat = f
        .matmul(w_dec.as_tensor())
        .unwrap()
        .broadcast_add(b_dec.as_tensor())
        .unwrap();
    let mut loss = (&x_hat - &xt)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .affine(1.0 / (rows * d) as f64, 0.0)
        .unwrap();
    // Matryoshka: one more reconstruction per inner level, with the latents below its width.
    for &w in levels.iter().filter(|&&w| w < m) {
        let keep: Vec<f32> = (0..m).map(|j| if j < w { 1.0 } else { 0.0 }).collect();
        let keep = Tensor::from_vec(keep, m, &dev).unwrap();
        let inner = f
            .broadcast_mul(&keep)
            .unwrap()
            .matmul(w_dec.as_tensor())
            .unwrap()
            .broadcast_add(b_dec.as_tensor())
            .unwrap();
        let term = (&inner - &xt)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .affine(1.0 / (rows * d) as f64, 0.0)
            .unwrap();
        loss = (loss + term).unwrap();
    }
    if let Architecture::Relu { l1_coefficient } = sae.architecture {
        let l1 = f
            .sum_all()
            .unwrap()
            .affine(l1_coefficient as f64 / (rows * d) as f64, 0.0)
            .unwrap();
        loss = (loss + l1).unwrap();
    }
    if let Some(aux) = aux {
        let residual = (&xt - &x_hat).unwrap().detach();
        let centred = residual
            .broadcast_sub(&residual.mean_keepdim(0).unwrap())
            .unwrap();
        let denom = centred
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let e_hat = pre
            .relu()
            .unwrap()
            .mul(&mask(aux, m))
            .unwrap()
            .matmul(w_dec.as_tensor())
            .unwrap();
        let aux_loss = (&e_hat - &residual)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .affine(cfg.aux_coefficient as f64 / denom, 0.0)
            .unwrap();
        loss = (loss + aux_loss).unwrap();
    }
    let store = loss.backward().unwrap();
    let get = |v: &Var| {
        store
            .get(v.as_tensor())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    Gradients {
        w_enc: get(&w_enc),
        b_enc: get(&b_enc),
        w_dec: get(&w_dec),
        b_dec: get(&b_dec),
        threshold: Vec::new(),
        w_skip: Vec::new(),
    }
}

fn assert_close(name: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs())).max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * scale + 1e-7,
            "{name}[{i}]: ours {g}, autograd {w} (scale {scale})"
        );
    }
}

fn check(architecture: Architecture, dead: &[u32]) {
    check_levels(architecture, dead, &[]);
}

fn check_levels(architecture: Architecture, dead: &[u32], levels: &[usize]) {
    let (d, width, rows) = (6, 10, 7);
    let mut s = sae(architecture, d, width, 11);
    if architecture == Architecture::JumpRelu {
        s.threshold = (0..width).map(|j| 0.1 + 0.15 * j as f32).collect();
    }
    let mut rng = SeededRng::new(5);
    let x = random(rows * d, &mut rng, 2.0);
    let resolved = SaeOptions {
        width: Some(width),
        k: 3,
        k_aux: Some(2),
        matryoshka_widths: levels.to_vec(),
        ..SaeOptions::default()
    }
    .resolve(d, rows as u64)
    .unwrap();
    // Never and always dense: both backwards must agree with autograd.
    for dense_from in [2.0, 0.0] {
        let cfg = StepConfig {
            dense_from,
            ..config()
        };
        check_with(&s, &x, dead, &resolved, &cfg);
    }
}

fn check_with(s: &Sae, x: &[f32], dead: &[u32], resolved: &Resolved, cfg: &StepConfig) {
    let (d, width) = (s.d_in, s.width);
    let architecture = s.architecture;
    let (ours, stats, codes) = gradients(s, x, dead, resolved, cfg).unwrap();
    let auxk = matches!(
        architecture,
        Architecture::TopK { .. } | Architecture::BatchTopK { .. }
    );
    let aux = (!dead.is_empty() && auxk).then(|| {
        let mut parts = Vec::new();
        crate::sae::dense::for_each_product_block(x, d, &s.w_enc, |_, pre| {
            parts.push(select(
                pre,
                width,
                &s.encoder_bias(),
                Selection::TopKAmong(2, dead),
            ))
        })
        .unwrap();
        Codes::concat(parts)
    });
    if aux.is_some() {
        assert!(stats.aux_loss > 0.0);
    }
    let want = autograd(s, x, &codes, aux.as_ref(), &resolved.levels, cfg);
    assert_close("W_enc", &ours.w_enc, &want.w_enc);
    assert_close("b_enc", &ours.b_enc, &want.b_enc);
    assert_close("W_dec", &ours.w_dec, &want.w_dec);
    assert_close("b_dec", &ours.b_dec, &want.b_dec);
    if architecture == Architecture::JumpRelu {
        let want = threshold_gradients_densely(s, x, cfg);
        assert!(
            want.iter().any(|g| *g != 0.0),
            "no pre-activation in a band"
        );
        assert_close("threshold", &ours.threshold, &want);
    }
}

/// The straight-through threshold gradients written out over every (row, latent) in f64.
fn threshold_gradients_densely(s: &Sae, x: &[f32], cfg: &StepConfig) -> Vec<f32> {
    let (d, m) = (s.d_in, s.width);
    let rows = x.len() / d;
    let eps = cfg.bandwidth as f64;
    let pre = |r: usize, j: usize| -> f64 {
        (0..d)
            .map(|t| s.w_enc[j * d + t] as f64 * (x[r * d + t] - s.b_dec[t]) as f64)
            .sum::<f64>()
            + s.b_enc[j] as f64
    };
    let mut grad = vec![0.0f64; m];
    for r in 0..rows {
        let z: Vec<f64> = (0..m).map(|j| pre(r, j)).collect();
        let x_hat: Vec<f64> = (0..d)
            .map(|t| {
                s.b_dec[t] as f64
                    + (0..m)
                        .filter(|&j| z[j] > s.threshold[j] as f64)
                        .map(|j| z[j] * s.w_dec[j * d + t] as f64)
                        .sum::<f64>()
            })
            .collect();
        for j in 0..m {
            let theta = s.threshold[j] as f64;
            let u = (z[j] - theta) / eps;
            if u <= -0.5 || u >= 0.5 {
                continue;
            }
            let g_f: f64 = (0..d)
                .map(|t| {
                    2.0 / (rows * d) as f64
                        * (x_hat[t] - x[r * d + t] as f64)
                        * s.w_dec[j * d + t] as f64
                })
                .sum();
            grad[j] -= theta / eps * g_f + cfg.l0_coefficient as f64 / (rows * d) as f64 / eps;
        }
    }
    grad.iter().map(|&g| g as f32).collect()
}

#[test]
fn gradients_match_candle_autograd_batch_topk_with_auxk() {
    check(Architecture::BatchTopK { k: 3 }, &[0, 2, 5]);
}

#[test]
fn gradients_match_candle_autograd_matryoshka() {
    check_levels(Architecture::TopK { k: 3 }, &[], &[2, 5]);
    check_levels(Architecture::BatchTopK { k: 3 }, &[1, 6], &[3]);
}

#[test]
fn gradients_match_candle_autograd_and_the_estimator_jumprelu() {
    check(Architecture::JumpRelu, &[]);
}

#[test]
fn gradients_match_candle_autograd_topk() {
    check(Architecture::TopK { k: 3 }, &[]);
}

#[test]
fn gradients_match_candle_autograd_topk_with_auxk() {
    check(Architecture::TopK { k: 3 }, &[1, 4, 7, 8]);
}

#[test]
fn gradients_match_candle_autograd_relu_l1() {
    check(
        Architecture::Relu {
            l1_coefficient: 0.7,
        },
        &[],
    );
}

#[test]
fn steps_reduce_the_loss_and_keep_decoder_rows_unit_norm() {
    let (d, width, rows) = (8, 32, 256);
    let mut s = sae(Architecture::TopK { k: 4 }, d, width, 3);
    normalise_rows(&mut s.w_dec, d);
    let mut rng = SeededRng::new(9);
    let x = random(rows * d, &mut rng, 1.0);
    let resolved = SaeOptions {
        width: Some(width),
        k: 4,
        lr: Some(1e-2),
        warmup_steps: Some(0),
        train_tokens: 200 * rows as u64,
        ..SaeOptions::default()
    }
    .resolve(d, rows as u64)
    .unwrap();
    let mut trainer = Trainer::new(s, resolved, config());
    let first = trainer.step(&x).unwrap();
    let mut last = first;
    for _ in 0..150 {
        last = trainer.step(&x).unwrap();
    }
    assert!(last.mse < 0.6 * first.mse, "{} → {}", first.mse, last.mse);
    for row in trainer.sae.w_dec.chunks(d) {
        assert!((dot(row, row) - 1.0).abs() < 1e-4);
    }
}
