//! A transcoder's hand-written gradients against candle's autograd on the same loss, sparse
//! and dense backward, with and without the skip connection and AuxK; and a planted MLP the
//! trainer learns to imitate.

use super::*;
use crate::sae::codes::{select, Codes, Selection};
use crate::sae::options::SaeOptions;
use crate::sae::train::tests::{random, sae};
use crate::sae::train::{transcoder_gradients, StepConfig, Transcode};
use candle_core::{Device, Tensor, Var};
use glassbox_data::rng::SeededRng;

/// The trainer tests' step settings, with the dense backward from `dense_from`.
fn config(dense_from: f64) -> StepConfig {
    StepConfig {
        dense_from,
        ..crate::sae::train::tests::config()
    }
}

fn mask(codes: &Codes, rows: usize, width: usize) -> Tensor {
    let mut m = vec![0.0f32; rows * width];
    for r in 0..rows {
        for (j, _) in codes.row(r) {
            m[r * width + j] = 1.0;
        }
    }
    Tensor::from_vec(m, (rows, width), &Device::Cpu).unwrap()
}

struct Case<'a> {
    sae: &'a Sae,
    x: &'a [f32],
    y: &'a [f32],
    skip: Option<&'a [f32]>,
    main: &'a Codes,
    aux: Option<&'a Codes>,
    cfg: &'a StepConfig,
}

/// `(1/(B·d)) Σ ‖W_dec f + b_dec + W_skip x − y‖² (+ L1, + AuxK)` with `f = mask ⊙ ReLU(W_enc x
/// + b_enc)`, by candle's autograd: W_enc, b_enc, W_dec, b_dec, W_skip.
fn autograd(c: &Case<'_>) -> Vec<Vec<f32>> {
    let (d, m) = (c.sae.d_in, c.sae.width);
    let rows = c.x.len() / d;
    let dev = Device::Cpu;
    let var = |v: &[f32], shape: &[usize]| Var::from_vec(v.to_vec(), shape, &dev).unwrap();
    let w_enc = var(&c.sae.w_enc, &[m, d]);
    let b_enc = var(&c.sae.b_enc, &[m]);
    let w_dec = var(&c.sae.w_dec, &[m, d]);
    let b_dec = var(&c.sae.b_dec, &[d]);
    let w_skip = var(c.skip.unwrap_or(&vec![0.0; d * d]), &[d, d]);
    let xt = Tensor::from_slice(c.x, (rows, d), &dev).unwrap();
    let yt = Tensor::from_slice(c.y, (rows, d), &dev).unwrap();
    let pre = xt
        .matmul(&w_enc.as_tensor().t().unwrap())
        .unwrap()
        .broadcast_add(b_enc.as_tensor())
        .unwrap();
    let f = pre.relu().unwrap().mul(&mask(c.main, rows, m)).unwrap();
    let mut y_hat = f
        .matmul(w_dec.as_tensor())
        .unwrap()
        .broadcast_add(b_dec.as_tensor())
        .unwrap();
    if c.skip.is_some() {
        y_hat = (y_hat + xt.matmul(&w_skip.as_tensor().t().unwrap()).unwrap()).unwrap();
    }
    let n = (rows * d) as f64;
    let mut loss = (&y_hat - &yt)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .affine(1.0 / n, 0.0)
        .unwrap();
    if let Architecture::Relu { l1_coefficient } = c.sae.architecture {
        let l1 = f.sum_all().unwrap().affine(l1_coefficient as f64 / n, 0.0);
        loss = (loss + l1.unwrap()).unwrap();
    }
    if let Some(aux) = c.aux {
        let residual = (&yt - &y_hat).unwrap().detach();
        let centred = residual
            .broadcast_sub(&residual.mean_keepdim(0).unwrap())
            .unwrap();
        let denom = centred.sqr().unwrap().sum_all().unwrap();
        let denom = denom.to_scalar::<f32>().unwrap() as f64;
        let e_hat = pre
            .relu()
            .unwrap()
            .mul(&mask(aux, rows, m))
            .unwrap()
            .matmul(w_dec.as_tensor())
            .unwrap();
        let aux_loss = (&e_hat - &residual).unwrap().sqr().unwrap().sum_all();
        let aux_loss = aux_loss
            .unwrap()
            .affine(c.cfg.aux_coefficient as f64 / denom, 0.0);
        loss = (loss + aux_loss.unwrap()).unwrap();
    }
    let store = loss.backward().unwrap();
    [&w_enc, &b_enc, &w_dec, &b_dec, &w_skip]
        .iter()
        .map(|v| match store.get(v.as_tensor()) {
            Some(g) => g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            None => Vec::new(), // W_skip outside the loss (no skip connection)
        })
        .collect()
}

fn assert_close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}");
    let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs())).max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * scale + 1e-7,
            "{name}[{i}]: ours {g}, autograd {w} (scale {scale})"
        );
    }
}

fn check(architecture: Architecture, dead: &[u32], with_skip: bool) {
    let (d, width, rows) = (5, 9, 8);
    let mut sae = sae(architecture, d, width, 21);
    let mut rng = SeededRng::new(22);
    if architecture == Architecture::JumpRelu {
        sae.threshold = (0..width).map(|j| 0.05 + 0.1 * j as f32).collect();
    }
    let x = random(rows * d, &mut rng, 2.0);
    let y = random(rows * d, &mut rng, 1.5);
    let skip = with_skip.then(|| random(d * d, &mut rng, 0.4));
    let resolved = SaeOptions {
        width: Some(width),
        k: 3,
        k_aux: Some(2),
        ..SaeOptions::default()
    }
    .resolve(d, rows as u64)
    .unwrap();
    for dense_from in [2.0, 0.0] {
        let cfg = config(dense_from);
        let transcode = Transcode {
            target: &y,
            skip: skip.as_deref(),
        };
        let (ours, _, codes) =
            transcoder_gradients(&sae, &x, transcode, dead, &resolved, &cfg).unwrap();
        let uses_aux = matches!(architecture, Architecture::TopK { .. }) && !dead.is_empty();
        let aux = uses_aux.then(|| {
            let mut parts = Vec::new();
            crate::sae::dense::for_each_product_block(&x, d, &sae.w_enc, |_, pre| {
                parts.push(select(
                    pre,
                    width,
                    &sae.b_enc,
                    Selection::TopKAmong(2, dead),
                ))
            })
            .unwrap();
            Codes::concat(parts)
        });
        let want = autograd(&Case {
            sae: &sae,
            x: &x,
            y: &y,
            skip: skip.as_deref(),
            main: &codes,
            aux: aux.as_ref(),
            cfg: &cfg,
        });
        assert_close("W_enc", &ours.w_enc, &want[0]);
        assert_close("b_enc", &ours.b_enc, &want[1]);
        assert_close("W_dec", &ours.w_dec, &want[2]);
        assert_close("b_dec", &ours.b_dec, &want[3]);
        if with_skip {
            assert_close("W_skip", &ours.w_skip, &want[4]);
        } else {
            assert!(ours.w_skip.is_empty());
        }
    }
}

#[test]
fn transcoder_gradients_match_autograd_topk_with_skip_and_auxk() {
    check(Architecture::TopK { k: 3 }, &[1, 4, 6], true);
}

#[test]
fn transcoder_gradients_match_autograd_relu_without_skip() {
    check(
        Architecture::Relu {
            l1_coefficient: 0.6,
        },
        &[],
        false,
    );
}

#[test]
fn transcoder_gradients_match_autograd_jumprelu_with_skip() {
    check(Architecture::JumpRelu, &[], true);
}

#[test]
fn folding_keeps_what_the_transcoder_computes() {
    let (d, width, rows) = (4, 6, 5);
    let relu = Architecture::Relu {
        l1_coefficient: 0.0,
    };
    let sae = sae(relu, d, width, 3);
    let mut rng = SeededRng::new(4);
    let skip = random(d * d, &mut rng, 0.5);
    let x = random(rows * d, &mut rng, 1.0);
    // By hand, uncentred: f = ReLU(W_enc x + b_enc), ŷ = W_dec f + b_dec + W_skip x.
    let by_hand: Vec<f32> = x
        .chunks(d)
        .flat_map(|x| {
            let f: Vec<f32> = (0..width)
                .map(|j| (dot(&sae.w_enc[j * d..(j + 1) * d], x) + sae.b_enc[j]).max(0.0))
                .collect();
            (0..d)
                .map(|t| {
                    sae.b_dec[t]
                        + (0..width).map(|j| f[j] * sae.w_dec[j * d + t]).sum::<f32>()
                        + dot(&skip[t * d..(t + 1) * d], x)
                })
                .collect::<Vec<f32>>()
        })
        .collect();
    let t = Transcoder::from_uncentred(sae.clone(), Some(skip.clone()));
    let got = t.predict(&x).unwrap();
    for (g, w) in got.iter().zip(&by_hand) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
    assert_close("b_enc back", &t.input_bias(), &sae.b_enc);
    // Training scales: trained on (2x, 0.5y) — the folded weights compute the same raw map.
    let scaled = fold_training_scales(sae.clone(), Some(skip.clone()), 2.0, 0.5);
    let x2: Vec<f32> = x.iter().map(|v| v / 2.0).collect();
    let got = scaled.predict(&x2).unwrap();
    for (g, w) in got.iter().zip(&by_hand) {
        assert!((g - w / 0.5).abs() < 1e-4, "{g} vs {}", w / 0.5);
    }
}
