//! `just bench-gemma-scope`'s store: a run directory with a completed `extract` stage and only
//! token-level activations at one hook, at a real model's width, without running the model —
//! `--tokens` rows of `--width` in `--seq`-token examples, each example labelled with one of four
//! topics (so the dictionary stage's label work runs too). The rows are Gaussian with a
//! per-topic offset along one random direction, written in 65,536-row parts as extraction
//! writes them (f32, uncompressed). Seeded.
//!
//! ```text
//! glassbox-bench-synthetic-run --run DIR --tokens 1000000 --width 2304 \
//!     --hook blocks.20.hook_resid_post [--seq 128] [--seed 0] [--model ID@REVISION]
//! ```
//!
//! `--model` names a cached model as the run's (stages that reload the run's model, such as the
//! dictionary stage's causal-LM extras, need one they can load; an encoder such as MiniLM has
//! no unembedding, so nothing of it enters the measurement).

use anyhow::{bail, Context, Result};
use glassbox_data::manifest::{DataRecord, ModelRecord, StageRecord};
use glassbox_data::rng::SeededRng;
use glassbox_data::store::{ActDtype, ActivationWriter, Codec, ShardMeta, StoreKind};
use glassbox_data::tokens::{TokenRows, TokensWriter};
use glassbox_data::{Column, ColumnKind, HookPoint, Manifest, RunDir, TextDataset, Value};
use std::path::PathBuf;

const TOPICS: [&str; 4] = ["food", "sport", "science", "finance"];
const PART_ROWS: usize = 65_536;

struct Args {
    run: PathBuf,
    tokens: usize,
    width: usize,
    hook: HookPoint,
    seq: usize,
    seed: u64,
    model: (String, String),
}

fn args() -> Result<Args> {
    let mut a = Args {
        run: PathBuf::new(),
        tokens: 0,
        width: 0,
        hook: "blocks.0.hook_resid_post".parse()?,
        seq: 128,
        seed: 0,
        model: ("synthetic/bench".into(), "0".repeat(40)),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--run" => a.run = value.into(),
            "--tokens" => a.tokens = value.parse()?,
            "--width" => a.width = value.parse()?,
            "--hook" => a.hook = value.parse()?,
            "--seq" => a.seq = value.parse()?,
            "--seed" => a.seed = value.parse()?,
            "--model" => {
                let (id, revision) = value.split_once('@').context("--model ID@REVISION")?;
                a.model = (id.into(), revision.into());
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if a.run.as_os_str().is_empty() || a.tokens == 0 || a.width == 0 || a.seq == 0 {
        bail!("usage: --run DIR --tokens N --width D --hook HOOK [--seq 128] [--seed 0]");
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = args()?;
    let run = RunDir::new(&a.run);
    let examples = a.tokens.div_ceil(a.seq);
    let topic = |e: usize| e % TOPICS.len();
    let data = TextDataset {
        source: a.run.join("synthetic.jsonl"),
        sha256: "0".repeat(64),
        texts: (0..examples)
            .map(|e| format!("synthetic example {e}"))
            .collect(),
        splits: None,
        columns: vec![Column {
            name: "topic".into(),
            kind: ColumnKind::Str,
            values: (0..examples)
                .map(|e| Value::Str(TOPICS[topic(e)].into()))
                .collect(),
        }],
    };
    let lengths: Vec<u32> = (0..examples)
        .map(|e| (a.tokens - e * a.seq).min(a.seq) as u32)
        .collect();
    glassbox_data::examples::write_examples(&run, &data, &lengths)?;

    let mut tokens = TokensWriter::create(&run)?;
    let names: Vec<String> = (0..a.seq).map(|p| format!("t{p}")).collect();
    let spans: Vec<Option<(u32, u32)>> =
        (0..a.seq).map(|p| Some((p as u32, p as u32 + 1))).collect();
    for chunk in (0..examples).collect::<Vec<_>>().chunks(512) {
        let ids: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&e| {
                (0..lengths[e])
                    .map(|p| (e as u32 * 7 + p) % 50_000)
                    .collect()
            })
            .collect();
        let rows: Vec<TokenRows<'_>> = chunk
            .iter()
            .zip(&ids)
            .map(|(&e, ids)| TokenRows {
                example_id: e as u64,
                ids,
                tokens: &names[..ids.len()],
                spans: &spans[..ids.len()],
            })
            .collect();
        tokens.write(&rows)?;
    }
    tokens.finish()?;

    let mut rng = SeededRng::new(a.seed);
    let directions: Vec<Vec<f32>> = (0..TOPICS.len())
        .map(|_| (0..a.width).map(|_| rng.gaussian() as f32).collect())
        .collect();
    let dir = run.activations_dir(a.hook);
    std::fs::create_dir_all(&dir)?;
    let meta = ShardMeta {
        model_id: "synthetic/bench".into(),
        revision: "0".into(),
        hook: a.hook,
        kind: StoreKind::Activation,
        pool: None,
        width: a.width,
        dtype: ActDtype::F32,
        compression: Codec::None,
    };
    let (mut e, mut p, mut part) = (0usize, 0u32, 0usize);
    let mut written = 0;
    while written < a.tokens {
        let n = PART_ROWS.min(a.tokens - written);
        let mut ids = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut values = Vec::with_capacity(n * a.width);
        for _ in 0..n {
            ids.push(e as u64);
            positions.push(p);
            let offset = &directions[topic(e)];
            values.extend(offset.iter().map(|o| 0.5 * o + rng.gaussian() as f32));
            p += 1;
            if p as usize == lengths[e] as usize {
                (e, p) = (e + 1, 0);
            }
        }
        let mut w =
            ActivationWriter::create(&dir.join(format!("part-{part:05}.parquet")), meta.clone())?;
        w.write_owned(ids, Some(positions), values)?;
        w.finish()?;
        written += n;
        part += 1;
        eprintln!("{written} of {} rows", a.tokens);
    }

    let mut manifest = Manifest::load_or_default(&run)?;
    manifest.model = Some(ModelRecord {
        id: a.model.0.clone(),
        revision: a.model.1.clone(),
        source: "hub".into(),
        family: "bert".into(),
        modality: None,
        weights_sha256: "0".repeat(64),
        preprocessor: None,
    });
    manifest.data = Some(DataRecord {
        path: "synthetic.jsonl".into(),
        sha256: "0".repeat(64),
        n_examples: examples as u64,
        n_tokens: a.tokens as u64,
        absolute: None,
    });
    manifest.stages.insert(
        "extract".into(),
        StageRecord {
            fingerprint: format!("synthetic-{}-{}-{}", a.tokens, a.width, a.seed),
            finished_at: "2026-01-01T00:00:00Z".into(),
            seconds: Some(0.0),
            seed: Some(a.seed),
            params: serde_json::json!({}),
            build: None,
        },
    );
    manifest.save(&run)?;
    Ok(())
}
