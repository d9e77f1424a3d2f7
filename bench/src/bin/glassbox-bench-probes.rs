//! `just bench-probes`: fitting time of the probe classifier on 20,000 × 384 float32 rows,
//! binary and 10 classes, at `l2 = 1` (sklearn's `C = 1`); accuracy is measured on the same
//! rows (how well each optimiser fits), and on a further 4,000 held-out rows. Writes the seeded data to `--data` (raw little-endian files) so
//! `bench/sklearn_probes.py` fits scikit-learn on exactly the same rows, and prints JSON
//! (also written to `--out`). Times are the median of 3 fits on standardised features.
//! Nothing is asserted.

use anyhow::{Context, Result};
use glassbox_data::rng::SeededRng;
use glassbox_probes::logistic::{fit, Problem};
use glassbox_probes::metrics::accuracy;
use glassbox_probes::Standardizer;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

const N: usize = 24_000;
const D: usize = 384;
const N_TRAIN: usize = 20_000;

/// Activations with correlated, unevenly scaled units; labels from noisy linear functions.
fn data() -> (Vec<f32>, Vec<usize>, Vec<usize>) {
    let mut rng = SeededRng::new(384);
    let latent = 64;
    let mix: Vec<f64> = (0..latent * D).map(|_| rng.gaussian() / 8.0).collect();
    let scale: Vec<f64> = (0..D).map(|_| 0.2 + 3.0 * rng.unit_f64()).collect();
    let w2: Vec<f64> = (0..latent).map(|_| rng.gaussian()).collect();
    let w10: Vec<f64> = (0..latent * 10).map(|_| rng.gaussian()).collect();
    let mut x = Vec::with_capacity(N * D);
    let (mut y2, mut y10) = (Vec::with_capacity(N), Vec::with_capacity(N));
    for _ in 0..N {
        let z: Vec<f64> = (0..latent).map(|_| rng.gaussian()).collect();
        for u in 0..D {
            let v: f64 = (0..latent).map(|l| z[l] * mix[l * D + u]).sum::<f64>();
            x.push(((v + 0.3 * rng.gaussian()) * scale[u]) as f32);
        }
        let s: f64 = z.iter().zip(&w2).map(|(a, b)| a * b).sum();
        y2.push(usize::from(s + 3.0 * rng.gaussian() > 0.0));
        let best = (0..10)
            .map(|c| {
                let s: f64 = (0..latent).map(|l| z[l] * w10[l * 10 + c]).sum();
                (s + 4.0 * rng.gaussian(), c)
            })
            .fold((f64::MIN, 0), |a, b| if b.0 > a.0 { b } else { a });
        y10.push(best.1);
    }
    (x, y2, y10)
}

fn write_raw(path: &PathBuf, bytes: &[u8]) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn main() -> Result<()> {
    let mut out = PathBuf::from("target/bench/probes.json");
    let mut data_dir = PathBuf::from("target/bench/probe-data");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().context("--out needs a path")?.into(),
            "--data" => data_dir = args.next().context("--data needs a path")?.into(),
            other => anyhow::bail!("unknown argument {other}; use --out PATH --data DIR"),
        }
    }
    let (x, y2, y10) = data();
    std::fs::create_dir_all(&data_dir)?;
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(&data_dir.join("x.f32"), &bytes)?;
    for (name, y) in [("y2.u8", &y2), ("y10.u8", &y10)] {
        write_raw(
            &data_dir.join(name),
            &y.iter().map(|&c| c as u8).collect::<Vec<_>>(),
        )?;
    }
    let train: Vec<usize> = (0..N_TRAIN).collect();
    let test: Vec<usize> = (N_TRAIN..N).collect();
    let std = Standardizer::fit(&x, D, &train);
    let x_train = std.gather(&x, D, &train, None);
    let x_test = std.gather(&x, D, &test, None);
    let mut report = serde_json::Map::new();
    for (name, y, k) in [("binary", &y2, 2usize), ("10-class", &y10, 10)] {
        let y_train: Vec<usize> = train.iter().map(|&r| y[r]).collect();
        let y_test: Vec<usize> = test.iter().map(|&r| y[r]).collect();
        let problem = Problem {
            x: &x_train,
            d: D,
            y: &y_train,
            n_classes: k,
        };
        let mut times = Vec::new();
        let mut model = None;
        for _ in 0..3 {
            let start = Instant::now();
            model = Some(fit(&problem, 1.0, 100, None));
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let model = model.expect("three fits ran");
        let acc = accuracy(&y_test, &model.predict(&x_test));
        let fit_acc = accuracy(&y_train, &model.predict(&x_train));
        report.insert(
            name.into(),
            serde_json::json!({
                "seconds": times[1],
                "test_accuracy": acc,
                "train_accuracy": fit_acc,
                "iterations": model.iterations,
                "converged": model.converged,
            }),
        );
    }
    let json = serde_json::json!({
        "rows": N, "width": D, "train_rows": N_TRAIN, "l2": 1.0,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "fits": report,
    });
    let text = serde_json::to_string_pretty(&json)?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &text)?;
    println!("{text}");
    Ok(())
}
