//! `just bench`: extraction throughput on the real all-MiniLM-L6-v2 and peak memory.
//!
//! Default mode measures (1) forward-only tokens/s with all 7 hidden states captured and
//! (2) end-to-end tokens/s of `extract` writing those 7 hooks to Parquet (token level +
//! mean/cls pools), at batch 32 × 128 tokens; prints JSON (and writes it to `--out`, default
//! target/bench/glassbox.json) and writes the benchmark texts to `--texts` (default
//! target/bench/texts.jsonl) so the PyTorch reference runs on the very same input.
//! `--memory-tokens N` instead runs only an end-to-end extraction of N tokens, to show peak RSS
//! does not grow with the data. `--model ID` measures another cached model the same way (all
//! `hook_resid_post` plus `blocks.0.hook_resid_pre`; `just bench` runs SmolLM2-135M from its
//! GGUF). `--passes N` (default 3) repeats the forward and end-to-end measurements and
//! reports the best pass (every pass is in the JSON): on a shared machine one pass can land
//! 20% off. Peak RSS is the process's VmHWM. Nothing is asserted. `--serve` (used by
//! `just bench` through bench/paired.py) loads once and then runs one pass per line read from
//! stdin, so the PyTorch reference can take turns with it pass by pass.

use anyhow::{Context, Result};
use glassbox_data::{NoProgress, RunDir, TextDataset};
use glassbox_models::tokenizer::Encoded;
use glassbox_models::LoadOptions;
use glassbox_models::{load_model, resolve, Capture, HookPoint, ModelSpec, Pool, TokenBatch};
use glassbox_runner::{extract, Examples, ExtractOptions, ExtractSummary};
use std::time::Instant;

const MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";
const BATCH: usize = 32;
const SEQ: usize = 128;

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The sentences the benchmark texts are built from: `data/sets/default.jsonl` of this
/// repository (found from the build's source tree, so the binary runs from any directory).
fn sentences() -> Result<Vec<String>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/sets/default.jsonl");
    let base = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the benchmark sentences from {}", path.display()))?;
    let sentences: Vec<String> = base
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(
        !sentences.is_empty(),
        "{} has no JSON lines with a \"text\" field",
        path.display()
    );
    Ok(sentences)
}

/// Texts long enough to fill 128 tokens after truncation, each different.
fn texts(n: usize) -> Result<Vec<String>> {
    let sentences = sentences()?;
    Ok((0..n)
        .map(|i| {
            (0..40)
                .map(|j| sentences[(i * 7 + j * 13) % sentences.len()].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect())
}

const USAGE: &str = "usage: glassbox-bench [--out FILE.json] [--texts FILE.jsonl] [--passes N] \
[--compression none|snappy|zstd] [--model ID] [--weights-dtype auto|f32|bf16|f16] [--forward-only] \
[--serve] | --memory-tokens N
  --weights-dtype how the weights are held, as `glassbox extract` takes it (default auto: a GGUF's
                  quantised matrices stay quantised; f32 dequantises them at load)
  --passes N      forward and end-to-end passes over the same batches; the best is reported (default 3)
  --forward-only  skip the end-to-end extraction (for profiling the forward alone)
  --serve         after loading, print `ready` and run one pass per line read from stdin
                  (`forward` or `e2e`, each answered by a JSON line); at end of input, write the
                  report as usual (bench/paired.py alternates passes with the PyTorch reference)";

struct Args {
    out: std::path::PathBuf,
    texts: std::path::PathBuf,
    memory_tokens: Option<usize>,
    compression: glassbox_data::store::Codec,
    model: String,
    weights_dtype: glassbox_models::WeightsDtype,
    passes: usize,
    forward_only: bool,
    serve: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        out: "target/bench/glassbox.json".into(),
        texts: "target/bench/texts.jsonl".into(),
        memory_tokens: None,
        compression: glassbox_data::store::Codec::None,
        model: MODEL.into(),
        weights_dtype: Default::default(),
        passes: 3,
        forward_only: false,
        serve: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--forward-only" || flag == "--serve" {
            args.forward_only |= flag == "--forward-only";
            args.serve |= flag == "--serve";
            continue;
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--out" => args.out = value.into(),
            "--texts" => args.texts = value.into(),
            "--memory-tokens" => {
                args.memory_tokens = Some(value.parse().context("--memory-tokens")?)
            }
            "--compression" => args.compression = value.parse().map_err(anyhow::Error::msg)?,
            "--model" => args.model = value,
            "--weights-dtype" => args.weights_dtype = value.parse().map_err(anyhow::Error::msg)?,
            "--passes" => {
                args.passes = value.parse().context("--passes")?;
                anyhow::ensure!(args.passes >= 1, "--passes must be at least 1");
            }
            other => anyhow::bail!("unknown option {other}\n{USAGE}"),
        }
    }
    Ok(args)
}

/// End-to-end extraction of `texts` into a temporary run; returns (summary, seconds, bytes).
fn extract_e2e(
    model: &glassbox_models::LoadedModel,
    hooks: &[HookPoint],
    texts: Vec<String>,
    codec: glassbox_data::store::Codec,
) -> Result<(ExtractSummary, f64, u64)> {
    let data = Examples::Texts(TextDataset {
        source: "bench".into(),
        sha256: String::new(),
        texts,
        splits: None,
        columns: Vec::new(),
    });
    let tmp = tempfile_dir()?;
    let run = RunDir::new(tmp.join("run"));
    let opts = ExtractOptions {
        hooks: hooks.to_vec(),
        pools: vec![Pool::Mean, Pool::Cls],
        token_level: true,
        batch_size: BATCH,
        dtype: glassbox_data::ActDtype::F32,
        compression: codec,
        shard_size: 256,
        worker: None,
    };
    let start = Instant::now();
    let summary = extract(model, &data, &run, &opts, &NoProgress)?;
    let secs = start.elapsed().as_secs_f64();
    let bytes = dir_size(&run.activations_root());
    std::fs::remove_dir_all(&tmp).ok();
    Ok((summary, secs, bytes))
}

fn main() -> Result<()> {
    // As the `glassbox` command does, so the benchmark measures what users run.
    glassbox::allocator::keep_freed_memory();
    std::env::set_var(
        "HF_HUB_OFFLINE",
        std::env::var("HF_HUB_OFFLINE").unwrap_or_else(|_| "1".into()),
    );
    let args = parse_args()?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let resolved = resolve(&args.model.parse::<ModelSpec>()?).context("run `just models` first")?;
    let model = load_model(
        resolved,
        LoadOptions {
            max_length: Some(SEQ),
            allow_pickle: false,
            weights_dtype: args.weights_dtype,
            ..Default::default()
        },
    )?;
    let mut hooks = vec![HookPoint::ResidPre(0)];
    hooks.extend(
        model
            .model
            .hook_points()
            .into_iter()
            .filter(|h| matches!(h, HookPoint::ResidPost(_))),
    );

    if let Some(tokens) = args.memory_tokens {
        let (summary, secs, bytes) = extract_e2e(
            &model,
            &hooks,
            texts(tokens.div_ceil(SEQ))?,
            args.compression,
        )?;
        let report = serde_json::json!({
            "tokens": summary.n_tokens,
            "seconds": secs,
            "tokens_per_s": summary.n_tokens as f64 / secs,
            "activation_bytes": bytes,
            "peak_rss_mib": peak_rss_mib(),
        });
        println!("{report}");
        return Ok(());
    }

    // Forward only, all 7 hidden states captured and readable as f32 slices.
    let batches = 8;
    let corpus = texts(BATCH * batches)?;
    // Written first, so a PyTorch reference run alongside (`--serve`) can start from them.
    write_texts(&args.texts, &corpus)?;
    let refs: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let encoded = model.tokenizer()?.encode(&refs)?;
    assert!(
        encoded.iter().all(|e| e.ids.len() == SEQ),
        "bench texts fill {SEQ} tokens"
    );
    let run_batch = |chunk: &[Encoded]| -> Result<()> {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device)?;
        let mut capture = Capture::new(hooks.iter().copied());
        model.model.forward((&batch).into(), &mut capture)?;
        for t in capture.captured.values() {
            // Read the values in place, as PyTorch's `.numpy()` does (no copy).
            let (storage, layout) = t.storage_and_layout();
            if let candle_core::Storage::Cpu(cpu) = &*storage {
                let values = cpu.as_slice::<f32>()?;
                std::hint::black_box(values[layout.start_offset()]);
            }
        }
        Ok(())
    };
    // One warm-up batch, then several passes, the best reported: on a shared machine a single
    // pass can land 20% off.
    run_batch(&encoded[..BATCH])?;
    let mut batch_secs = Vec::with_capacity(batches * args.passes);
    let mut forward_passes = Vec::with_capacity(args.passes);
    let mut forward_pass = || -> Result<f64> {
        let mut pass_secs = 0.0;
        for chunk in encoded.chunks(BATCH) {
            let start = Instant::now();
            run_batch(chunk)?;
            let secs = start.elapsed().as_secs_f64();
            pass_secs += secs;
            batch_secs.push(secs);
        }
        let tps = (BATCH * batches * SEQ) as f64 / pass_secs;
        forward_passes.push(tps);
        Ok(tps)
    };
    // End to end: tokenise, forward, write 7 hooks (token level + 2 pools) to Parquet.
    let n_examples = BATCH * batches;
    let mut e2e_passes = Vec::with_capacity(args.passes);
    let mut e2e = None;
    let mut e2e_pass = || -> Result<f64> {
        let (summary, secs, bytes) = extract_e2e(&model, &hooks, corpus.clone(), args.compression)?;
        let tps = summary.n_tokens as f64 / secs;
        e2e_passes.push(tps);
        e2e = Some((summary.n_tokens, bytes));
        Ok(tps)
    };
    if args.serve {
        serve(&mut forward_pass, &mut e2e_pass)?;
    } else {
        for _ in 0..args.passes {
            forward_pass()?;
        }
        for _ in 0..if args.forward_only { 0 } else { args.passes } {
            e2e_pass()?;
        }
    }
    anyhow::ensure!(
        !forward_passes.is_empty(),
        "no forward pass was run (the --serve input ended before any `forward` line)"
    );
    let forward_tps = forward_passes.iter().copied().fold(0.0, f64::max);
    // The median batch is robust to other tenants' load on a shared machine.
    batch_secs.sort_by(f64::total_cmp);
    let median_tps = (BATCH * SEQ) as f64 / batch_secs[batch_secs.len() / 2];
    let e2e_tps = e2e_passes.iter().copied().fold(0.0, f64::max);
    let end_to_end = e2e.map(|(tokens, bytes)| {
        serde_json::json!({
            "examples": n_examples, "tokens": tokens,
            "tokens_per_s": e2e_tps, "passes_tokens_per_s": e2e_passes,
            "activation_bytes": bytes,
        })
    });

    let report = serde_json::json!({
        "model": args.model,
        "weights_dtype": args.weights_dtype.as_str(),
        "threads": threads,
        // The instruction set glassbox's kernels (and `gemm`'s) ran at: the CPU's best unless
        // `GLASSBOX_SIMD` capped it (`just bench-avx2`).
        "simd_level": format!("{:?}", glassbox_data::simd::level()).to_lowercase(),
        "batch_size": BATCH,
        "seq_len": SEQ,
        "hooks": hooks.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "passes": forward_passes.len(),
        "paired": args.serve,
        "forward_only": {
            "tokens": BATCH * batches * SEQ,
            "tokens_per_s": forward_tps,
            "passes_tokens_per_s": forward_passes,
            "median_batch_tokens_per_s": median_tps,
        },
        "end_to_end_parquet": end_to_end,
        "peak_rss_mib": peak_rss_mib(),
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &text)?;
    let e2e_text = if e2e_passes.is_empty() {
        "skipped".to_owned()
    } else {
        format!("{e2e_tps:.0} tokens/s")
    };
    eprintln!(
        "extraction ({}): forward {forward_tps:.0} tokens/s, end-to-end {e2e_text} ({} hooks, bs {BATCH} × {SEQ}), peak RSS {:.0} MiB",
        args.model,
        hooks.len(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// The benchmark texts as JSON lines, for the PyTorch reference to read.
fn write_texts(path: &std::path::Path, corpus: &[String]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lines: Vec<String> = corpus
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n")
        .with_context(|| format!("writing the benchmark texts to {}", path.display()))
}

/// `--serve`: prints `ready`, then runs one pass per stdin line (`forward` or `e2e`) and answers
/// each with a JSON line, until the input ends. A driver alternating these passes with the
/// PyTorch reference's puts both sides on the machine within seconds of each other, so a
/// shared machine's drift (±10–36% over minutes here) hits both alike.
fn serve(
    forward: &mut dyn FnMut() -> Result<f64>,
    e2e: &mut dyn FnMut() -> Result<f64>,
) -> Result<()> {
    use std::io::{BufRead, Write};
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let (key, tps) = match line.trim() {
            "forward" => ("forward_tokens_per_s", forward()?),
            "e2e" => ("e2e_tokens_per_s", e2e()?),
            "" => continue,
            other => anyhow::bail!("--serve: unknown command {other:?} (forward or e2e)"),
        };
        writeln!(out, "{}", serde_json::json!({ key: tps }))?;
        out.flush()?;
    }
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("glassbox-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_size(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
