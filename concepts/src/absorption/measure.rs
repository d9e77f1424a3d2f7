//! One letter's absorption (Chanin et al. 2024, "A is for Absorption"; SAEBench's first-letter
//! metric with Till's absorption fraction): the letter's main latents — the k-sparse probe's
//! latents, k grown while its test F1 jumps by more than `f1_jump` — and, on every test token
//! the ground-truth probe gets right, how much of the token's projection on the probe direction
//! the SAE routes through other latents instead.
//!
//! Per token, with `p` the probe's unit direction, `a = x · p` and a latent's share `s_j = f_j ·
//! cos(p, W_dec[j])`:
//! - absorption fraction: the at most three other latents with `cos ≥ 0.1` and `s_j > 0`, their
//!   share `A = Σ s_j`, the main latents' `M = Σ_main s_j`; 0 when `M ≥ a` or `A / a < 0.4`, 1
//!   when `M ≤ 0`, else `min(A, a − M) / (min(A, a − M) + M)`;
//! - full absorption: no main latent fires, the largest share's latent has `cos ≥ 0.025`, `a ≥
//!   0` and that share is at least `0.4 a`.

use super::probes::{balanced_logistic, f1, GroundTruth};
use super::words::Words;
use super::AbsorptionOptions;
use crate::sae::{Codes, Sae};
use crate::sparse_probing::top_k_units;

const ACTIVE_EPS: f32 = 1e-8;
const FRACTION_COS: f64 = 0.1;
const FULL_COS: f64 = 0.025;
const PROPORTION: f64 = 0.4;
const MAX_ABSORBERS: usize = 3;

/// One letter's result.
#[derive(Debug, Clone, PartialEq)]
pub struct LetterResult {
    pub letter: char,
    pub train_positives: usize,
    pub test_positives: usize,
    /// The ground-truth probe's F1 on the test words.
    pub probe_f1: f64,
    /// The main latents (feature splitting: more than one when F1 kept jumping).
    pub main_latents: Vec<u32>,
    /// The k-sparse probe's F1 on the main latents.
    pub main_f1: f64,
    /// Test tokens of the letter the probe classifies correctly (those measured).
    pub probe_true_positives: usize,
    pub mean_absorption_fraction: f64,
    pub full_absorptions: usize,
}

impl LetterResult {
    pub fn full_absorption_rate(&self) -> f64 {
        self.full_absorptions as f64 / self.probe_true_positives.max(1) as f64
    }
}

/// One measured token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenResult {
    pub letter: char,
    pub row: usize,
    pub probe_projection: f64,
    pub main_projection: f64,
    pub absorption_fraction: f64,
    pub full_absorption: bool,
    /// The latent with the largest share, and its cosine with the probe.
    pub top_latent: u32,
    pub top_cosine: f64,
}

/// A letter's data: which rows are training/test and positive.
pub struct LetterData<'a> {
    pub words: &'a Words,
    pub codes: &'a Codes,
    pub letter: u8,
    pub train: &'a [usize],
    pub test: &'a [usize],
}

/// Main latents and per-token absorption of one letter whose probe passed the F1 gate.
pub fn measure(
    sae: &Sae,
    data: &LetterData<'_>,
    probe: &GroundTruth,
    probe_f1: f64,
    options: &AbsorptionOptions,
) -> (LetterResult, Vec<TokenResult>) {
    let is = |i: &usize| data.words.letter[*i] == data.letter;
    let (main_latents, main_f1) = main_latents(sae, data, options);
    let p = probe.unit();
    let cos: Vec<f64> = (0..sae.width)
        .map(|j| {
            let row = sae.decoder_row(j);
            let n = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            row.iter().zip(&p).map(|(a, b)| *a as f64 * b).sum::<f64>() / n.max(1e-30)
        })
        .collect();
    let mut tokens = Vec::new();
    for &i in data.test.iter().filter(|i| is(i)) {
        let row = data.words.row(i);
        if probe.score(row) <= 0.0 {
            continue;
        }
        tokens.push(token(
            i,
            row,
            &p,
            data.codes,
            &cos,
            &main_latents,
            data.letter,
        ));
    }
    let n = tokens.len();
    let result = LetterResult {
        letter: (b'a' + data.letter) as char,
        train_positives: data.train.iter().filter(|i| is(i)).count(),
        test_positives: data.test.iter().filter(|i| is(i)).count(),
        probe_f1,
        main_latents,
        main_f1,
        probe_true_positives: n,
        mean_absorption_fraction: tokens.iter().map(|t| t.absorption_fraction).sum::<f64>()
            / n.max(1) as f64,
        full_absorptions: tokens.iter().filter(|t| t.full_absorption).count(),
    };
    (result, tokens)
}

fn token(
    i: usize,
    row: &[f32],
    p: &[f64],
    codes: &Codes,
    cos: &[f64],
    main: &[u32],
    letter: u8,
) -> TokenResult {
    let a: f64 = row.iter().zip(p).map(|(x, p)| *x as f64 * p).sum();
    let active: Vec<(usize, f32)> = codes.row(i).collect();
    let share = |(j, f): (usize, f32)| f as f64 * cos[j];
    let main_projection: f64 = active
        .iter()
        .filter(|(j, _)| main.contains(&(*j as u32)))
        .map(|&e| share(e))
        .sum();
    let mut absorbers: Vec<f64> = active
        .iter()
        .filter(|(j, _)| !main.contains(&(*j as u32)) && cos[*j] >= FRACTION_COS)
        .map(|&e| share(e))
        .filter(|s| *s > 0.0)
        .collect();
    absorbers.sort_by(|x, y| y.total_cmp(x));
    let absorbed: f64 = absorbers.iter().take(MAX_ABSORBERS).sum();
    let absorption_fraction = if a <= 0.0 || main_projection >= a || absorbed / a < PROPORTION {
        0.0
    } else if main_projection <= 0.0 {
        1.0
    } else {
        let taken = absorbed.min(a - main_projection);
        (taken / (taken + main_projection)).clamp(0.0, 1.0)
    };
    // The largest share over every latent (an inactive one's is 0).
    let (top_latent, top_share) =
        active
            .iter()
            .map(|&(j, f)| (j, share((j, f))))
            .fold(
                (0usize, 0.0f64),
                |best, e| if e.1 > best.1 { e } else { best },
            );
    let main_silent = active
        .iter()
        .all(|(j, f)| !main.contains(&(*j as u32)) || *f < ACTIVE_EPS);
    let full_absorption = main_silent
        && top_share > 0.0
        && cos[top_latent] >= FULL_COS
        && a >= 0.0
        && top_share / a >= PROPORTION;
    TokenResult {
        letter: (b'a' + letter) as char,
        row: i,
        probe_projection: a,
        main_projection,
        absorption_fraction,
        full_absorption,
        top_latent: top_latent as u32,
        top_cosine: if top_share > 0.0 {
            cos[top_latent]
        } else {
            0.0
        },
    }
}

/// The k-sparse probes for k = 1, 2, … `max_k` on the latents with the largest training
/// class-mean differences; the main latents are the last k whose test F1 beat the previous best
/// by more than `f1_jump` (SAEBench's feature-splitting rule). Returns them and their F1.
fn main_latents(sae: &Sae, data: &LetterData<'_>, options: &AbsorptionOptions) -> (Vec<u32>, f64) {
    let is = |i: usize| data.words.letter[i] == data.letter;
    let (mut sum_pos, mut sum_all) = (vec![0.0f64; sae.width], vec![0.0f64; sae.width]);
    let positives = data.train.iter().filter(|&&i| is(i)).count();
    for &i in data.train {
        for (j, f) in data.codes.row(i) {
            sum_all[j] += f as f64;
            if is(i) {
                sum_pos[j] += f as f64;
            }
        }
    }
    let negatives = (data.train.len() - positives).max(1) as f64;
    let differences: Vec<f64> = sum_pos
        .iter()
        .zip(&sum_all)
        .map(|(p, a)| p / positives.max(1) as f64 - (a - p) / negatives)
        .collect();
    // Latents that fire *more* on the letter (SAEBench takes the probe's largest weights, not
    // their magnitudes).
    let positive: Vec<f64> = differences.iter().map(|d| d.max(0.0)).collect();
    let ranked = top_k_units(&positive, options.max_k.min(sae.width));
    let truth: Vec<bool> = data.test.iter().map(|&i| is(i)).collect();
    let (mut best, mut chosen) = (f64::NEG_INFINITY, Vec::new());
    let mut best_f1 = 0.0;
    for k in 1..=ranked.len() {
        let latents = &ranked[..k];
        let columns = |rows: &[usize]| -> Vec<f64> {
            let mut out = vec![0.0f64; rows.len() * k];
            for (r, &i) in rows.iter().enumerate() {
                for (j, f) in data.codes.row(i) {
                    if let Some(c) = latents.iter().position(|&l| l as usize == j) {
                        out[r * k + c] = f as f64;
                    }
                }
            }
            out
        };
        let y: Vec<bool> = data.train.iter().map(|&i| is(i)).collect();
        let (beta, b) = balanced_logistic(&columns(data.train), k, &y);
        let x_test = columns(data.test);
        let predicted: Vec<bool> = x_test
            .chunks(k)
            .map(|r| r.iter().zip(&beta).map(|(x, w)| x * w).sum::<f64>() + b > 0.0)
            .collect();
        let score = f1(&predicted, &truth);
        if score > best + options.f1_jump {
            best = score;
            best_f1 = score;
            chosen = latents.to_vec();
        } else {
            break;
        }
    }
    (chosen, best_f1)
}
