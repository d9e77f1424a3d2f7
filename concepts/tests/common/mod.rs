//! Planted dictionaries: data made of known unit directions, so which SAE latents should
//! exist is known by construction.

use glassbox_concepts::sae::fit::{fit, FitControl, Fitted};
use glassbox_concepts::sae::options::ArchitectureName;
use glassbox_concepts::sae::stream::MatrixRows;
use glassbox_concepts::sae::{Sae, SaeOptions};
use glassbox_data::rng::SeededRng;
use glassbox_data::NoProgress;

pub const D: usize = 48;
pub const ATOMS: usize = 64;
pub const ACTIVE: usize = 3;
pub const ROWS: usize = 16_384;

/// `ATOMS` seeded unit directions in `D` dimensions.
pub fn atoms(rng: &mut SeededRng) -> Vec<Vec<f64>> {
    (0..ATOMS)
        .map(|_| {
            let v: Vec<f64> = (0..D).map(|_| rng.gaussian()).collect();
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect()
        })
        .collect()
}

/// `ROWS` samples, each a positive combination (coefficients in [1, 2]) of the `ACTIVE`
/// distinct atoms `choose` picks, plus N(0, 0.02²) noise per dimension.
pub fn samples(
    atoms: &[Vec<f64>],
    rng: &mut SeededRng,
    mut choose: impl FnMut(&mut SeededRng) -> Vec<usize>,
) -> Vec<f32> {
    let mut rows = Vec::with_capacity(ROWS * D);
    for _ in 0..ROWS {
        let chosen = choose(rng);
        let mut x = vec![0.0f64; D];
        for &j in &chosen {
            let c = 1.0 + rng.unit_f64();
            x.iter_mut().zip(&atoms[j]).for_each(|(x, a)| *x += c * a);
        }
        rows.extend(x.iter().map(|v| (v + 0.02 * rng.gaussian()) as f32));
    }
    rows
}

/// `k` distinct indices drawn uniformly from `range`.
pub fn distinct(rng: &mut SeededRng, range: std::ops::Range<usize>, k: usize) -> Vec<usize> {
    let mut chosen = Vec::new();
    while chosen.len() < k {
        let j = range.start + rng.below(range.len());
        if !chosen.contains(&j) {
            chosen.push(j);
        }
    }
    chosen
}

/// The atoms and samples of the uniform planted dictionary (every atom equally likely).
pub fn planted() -> (Vec<Vec<f64>>, Vec<f32>) {
    let mut rng = SeededRng::new(2024);
    let atoms = atoms(&mut rng);
    let rows = samples(&atoms, &mut rng, |rng| distinct(rng, 0..ATOMS, ACTIVE));
    (atoms, rows)
}

/// Whether one of `latents`' decoder rows points along `atom` (cosine > 0.9).
pub fn found_among(sae: &Sae, atom: &[f64], latents: std::ops::Range<usize>) -> bool {
    latents.into_iter().any(|j| {
        let row = sae.decoder_row(j);
        let norm = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let dot = row
            .iter()
            .zip(atom)
            .map(|(a, b)| *a as f64 * b)
            .sum::<f64>();
        dot / norm > 0.9
    })
}

/// How many atoms some latent recovers.
pub fn recovered(sae: &Sae, atoms: &[Vec<f64>]) -> usize {
    atoms
        .iter()
        .filter(|atom| found_among(sae, atom, 0..sae.width))
        .count()
}

/// The planted tests' training options: width 128 (2× the atoms), k = the atoms per sample,
/// 1.5M tokens in batches of 512.
pub fn options(architecture: ArchitectureName) -> SaeOptions {
    SaeOptions {
        architecture,
        width: Some(128),
        k: ACTIVE,
        batch_size: 512,
        train_tokens: 1_500_000,
        dead_window: 20_000,
        checkpoint_every: 250,
        seed: 7,
        ..SaeOptions::default()
    }
}

/// Trains on `rows` (`ROWS × D`).
pub fn train(rows: Vec<f32>, options: &SaeOptions, control: &FitControl<'_>) -> Fitted {
    fit(
        MatrixRows::new(rows, D),
        ROWS as u64,
        options,
        control,
        &NoProgress,
    )
    .unwrap()
}
