//! `just bench-sae`: SAE training throughput for TopK, BatchTopK and JumpReLU — d_in 384 →
//! 6,144 latents, k = 32, batch 4,096, 16 timed steps after one warm-up step, each from a fresh
//! initialisation with the architecture's defaults — through the real training path (shuffling
//! buffer, Adam, decoder re-normalisation, AuxK when latents die, threshold estimates). Writes
//! the seeded data to `--data` (raw little-endian f32) so `bench/pytorch_sae.py` trains on the
//! same rows, and prints JSON (also written to `--out`) with the CPU's SIMD flags. Nothing is
//! asserted. `--architectures topk,jumprelu` picks a subset. JumpReLU runs twice: from SAELens's
//! default start (half the latents active: dense work for both trainers) and from thresholds
//! that leave tens of latents active (`jumprelu_sparse`, the regime most of a run is in).

use anyhow::{Context, Result};
use glassbox_concepts::sae::fit::{fit, FitControl};
use glassbox_concepts::sae::options::ArchitectureName;
use glassbox_concepts::sae::stream::MatrixRows;
use glassbox_concepts::sae::SaeOptions;
use glassbox_data::rng::SeededRng;
use glassbox_data::Progress;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

const D: usize = 384;
const WIDTH: usize = 6144;
const K: usize = 32;
const BATCH: usize = 4096;
const STEPS: usize = 16;
const ROWS: usize = 65_536;

/// Rows made of 24 active directions (of 2,048 random ones) with exponential magnitudes, plus
/// Gaussian noise and an offset: sparse structure like a residual stream's.
fn data() -> Vec<f32> {
    let mut rng = SeededRng::new(6144);
    let atoms: Vec<f32> = (0..2048 * D)
        .map(|_| (rng.gaussian() / (D as f64).sqrt()) as f32)
        .collect();
    let offset: Vec<f32> = (0..D).map(|_| rng.gaussian() as f32).collect();
    let mut x = Vec::with_capacity(ROWS * D);
    for _ in 0..ROWS {
        let mut row = offset.clone();
        for _ in 0..24 {
            let a = rng.below(2048);
            let c = -(rng.unit_f64().max(1e-12)).ln() as f32 * 3.0;
            row.iter_mut()
                .zip(&atoms[a * D..(a + 1) * D])
                .for_each(|(r, v)| *r += c * v);
        }
        row.iter_mut()
            .for_each(|r| *r += 0.05 * rng.gaussian() as f32);
        x.extend(row);
    }
    x
}

/// Records when each training step ends (the trainer reports progress once per step).
struct StepClock(Mutex<Vec<Instant>>);

impl Progress for StepClock {
    fn start(&self, _label: &str, _total: u64) {}
    fn advance(&self, n: u64) {
        if n == BATCH as u64 {
            self.0.lock().expect("clock").push(Instant::now());
        }
    }
    fn finish(&self) {}
}

/// The workload's options (TopK unless changed).
fn options() -> SaeOptions {
    SaeOptions {
        width: Some(WIDTH),
        k: K,
        batch_size: BATCH,
        train_tokens: ((STEPS + 1) * BATCH) as u64,
        buffer_rows: ROWS,
        ..SaeOptions::default()
    }
}

/// One timed training run on `x`.
fn run(options: &SaeOptions, x: &[f32]) -> Result<serde_json::Value> {
    let clock = StepClock(Mutex::new(Vec::new()));
    let started = Instant::now();
    let fitted = fit(
        MatrixRows::new(x.to_vec(), D),
        ROWS as u64,
        options,
        &FitControl::default(),
        &clock,
    )?;
    let total = started.elapsed().as_secs_f64();
    let stamps = clock.0.into_inner().expect("clock");
    anyhow::ensure!(
        stamps.len() == STEPS + 1,
        "expected {} steps, saw {}",
        STEPS + 1,
        stamps.len()
    );
    let timed = (stamps[STEPS] - stamps[0]).as_secs_f64();
    let last = fitted.curve.last().context("a training curve")?;
    Ok(serde_json::json!({
        "seconds_per_step": timed / STEPS as f64,
        "tokens_per_second": (STEPS * BATCH) as f64 / timed,
        "seconds_including_buffer_fill_and_init": total,
        "final_fvu": last.stats.fvu,
        "final_l0": last.stats.l0,
    }))
}

/// The x86 SIMD flags the CPU reports (what the kernels could use).
fn cpu_flags() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let wanted = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "avx512_fp16",
        "amx_bf16",
    ];
    wanted
        .iter()
        .filter(|w| flags.split_whitespace().any(|f| f == **w))
        .map(|w| w.to_string())
        .collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    let x = data();
    if let Some(path) = flag("--data") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::File::create(&path)
            .with_context(|| format!("create {}", path.display()))?
            .write_all(&bytes)?;
    }
    let architectures: Vec<ArchitectureName> = match args
        .iter()
        .position(|a| a == "--architectures")
        .and_then(|i| args.get(i + 1))
    {
        Some(list) => list
            .split(',')
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?,
        None => vec![
            ArchitectureName::Topk,
            ArchitectureName::Batchtopk,
            ArchitectureName::Jumprelu,
        ],
    };
    let mut runs = serde_json::Map::new();
    for architecture in architectures {
        let options = SaeOptions {
            architecture,
            ..options()
        };
        runs.insert(architecture.to_string(), run(&options, &x)?);
        if architecture == ArchitectureName::Jumprelu {
            // glassbox's default start puts each threshold where its latent fires on k/width of
            // the rows (L0 ≈ k). From SAELens's 0.01 start half the latents fire, and both
            // trainers do dense work until the thresholds have risen (thousands of steps).
            // Starting all thresholds at 2.0 (inputs scaled to mean norm √d, unit encoder rows)
            // is the fixed-value sparse start: L0 in the tens on these rows, as in Gemma
            // Scope's SAEs (1.5 gives L0 ≈ 110, 2.5 about 7).
            let sparse = SaeOptions {
                jumprelu_init_threshold: Some(2.0),
                ..options.clone()
            };
            runs.insert("jumprelu_sparse".into(), run(&sparse, &x)?);
            let dense = SaeOptions {
                jumprelu_init_threshold: Some(0.01),
                ..options
            };
            runs.insert("jumprelu_saelens_start".into(), run(&dense, &x)?);
        }
    }
    let report = serde_json::json!({
        "workload": {"d_in": D, "width": WIDTH, "k": K, "batch": BATCH, "steps": STEPS},
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu_flags": cpu_flags(),
        "simd_level": glassbox_data::simd::level().as_str(),
        "runs": runs,
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(out) = flag("--out") {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, text)?;
    }
    Ok(())
}
