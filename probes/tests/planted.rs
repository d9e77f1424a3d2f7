//! Planted-direction acceptance tests: a synthetic store whose label is the sign of a known
//! direction (plus noise) must give a probe that finds the direction and is selective; labels
//! independent of the activations must score within the CI of the majority baseline.

use glassbox_data::examples::write_examples;
use glassbox_data::rng::SeededRng;
use glassbox_data::store::{ActDtype, ActivationWriter, Codec, ShardMeta, StoreKind};
use glassbox_data::tokens::{TokenRows, TokensWriter};
use glassbox_data::{Column, ColumnKind, NoProgress, RunDir, TextDataset, Value};
use glassbox_data::{HookPoint, Pool};
use glassbox_probes::{run_probes, ProbeOptions};

const HOOK: HookPoint = HookPoint::ResidPost(0);
const WIDTH: usize = 32;

fn meta(kind: StoreKind) -> ShardMeta {
    ShardMeta {
        model_id: "synthetic".into(),
        revision: "0".into(),
        hook: HOOK,
        kind,
        pool: (kind == StoreKind::Pooled).then_some(Pool::Mean),
        width: WIDTH,
        dtype: ActDtype::F32,
        compression: Codec::None,
    }
}

/// A run of `n` examples with pooled activations, a planted label, and a random label.
fn planted_run(dir: &std::path::Path, n: usize) -> (RunDir, Vec<f64>) {
    let run = RunDir::new(dir);
    let mut rng = SeededRng::new(5);
    let direction: Vec<f64> = (0..WIDTH).map(|_| rng.gaussian()).collect();
    let norm = direction.iter().map(|v| v * v).sum::<f64>().sqrt();
    let direction: Vec<f64> = direction.iter().map(|v| v / norm).collect();
    let mut values = Vec::with_capacity(n * WIDTH);
    let mut planted = Vec::new();
    let mut noise = Vec::new();
    let mut amount = Vec::new();
    // A separate stream, so adding this label leaves the others' data unchanged.
    let mut amount_rng = SeededRng::new(6);
    for _ in 0..n {
        let x: Vec<f64> = (0..WIDTH).map(|_| rng.gaussian()).collect();
        let projection: f64 = x.iter().zip(&direction).map(|(a, b)| a * b).sum();
        planted.push(Value::Str(
            if projection + 0.1 * rng.gaussian() > 0.0 {
                "pos"
            } else {
                "neg"
            }
            .into(),
        ));
        noise.push(Value::Str(
            if rng.unit_f64() < 0.5 { "a" } else { "b" }.into(),
        ));
        amount.push(Value::Float(2.0 * projection + 0.2 * amount_rng.gaussian()));
        values.extend(x.iter().map(|&v| v as f32));
    }
    let data = TextDataset {
        source: dir.join("synthetic.jsonl"),
        sha256: String::new(),
        texts: (0..n).map(|i| format!("example {i}")).collect(),
        splits: None,
        columns: vec![
            Column {
                name: "planted".into(),
                kind: ColumnKind::Str,
                values: planted,
            },
            Column {
                name: "noise".into(),
                kind: ColumnKind::Str,
                values: noise,
            },
            Column {
                name: "amount".into(),
                kind: ColumnKind::Float,
                values: amount,
            },
        ],
    };
    write_examples(&run, &data, &vec![1; n]).unwrap();
    let pooled = run.pooled_dir(HOOK, Pool::Mean);
    std::fs::create_dir_all(&pooled).unwrap();
    let mut w =
        ActivationWriter::create(&pooled.join("part-00000.parquet"), meta(StoreKind::Pooled))
            .unwrap();
    let ids: Vec<u64> = (0..n as u64).collect();
    w.write(&ids, None, &values).unwrap();
    w.finish().unwrap();
    (run, direction)
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn planted_direction_is_recovered_and_noise_is_not_decodable() {
    let dir = tempfile::tempdir().unwrap();
    let (run, direction) = planted_run(dir.path(), 2000);
    let opts = ProbeOptions {
        labels: vec!["planted".into(), "noise".into()],
        ..ProbeOptions::default()
    };
    let out = run_probes(&run, &opts, &NoProgress).unwrap();
    let planted = out.results.iter().find(|r| r.label == "planted").unwrap();
    assert!(planted.score > 0.9, "{planted:?}");
    assert!(
        planted.ci_low > 0.85 && planted.ci_high <= 1.0,
        "{planted:?}"
    );
    // Texts are all distinct, so the control task cannot be learnt: selectivity is high.
    assert!(planted.selectivity > 0.3, "{planted:?}");
    // Its paired interval brackets it and excludes 0.
    let (lo, hi) = (
        planted.selectivity_ci_low.unwrap(),
        planted.selectivity_ci_high.unwrap(),
    );
    assert!(
        0.0 < lo && lo <= planted.selectivity && planted.selectivity <= hi,
        "{planted:?}"
    );
    let weights = out.weights.iter().find(|w| w.label == "planted").unwrap();
    assert_eq!(weights.classes, vec!["neg", "pos"]);
    let w: Vec<f64> = weights.weight.iter().map(|&v| v as f64).collect();
    let c = cosine(&w, &direction);
    assert!(c > 0.9, "cosine between probe and planted direction: {c}");

    let noise = out.results.iter().find(|r| r.label == "noise").unwrap();
    assert!(
        noise.ci_low <= noise.majority && noise.majority <= noise.ci_high,
        "independent labels must score within the CI of the majority baseline: {noise:?}"
    );
    assert!(noise.selectivity.abs() < 0.15, "{noise:?}");
    let (lo, hi) = (
        noise.selectivity_ci_low.unwrap(),
        noise.selectivity_ci_high.unwrap(),
    );
    assert!(lo < 0.0 && 0.0 < hi, "no selectivity for noise: {noise:?}");

    // The planted direction's units dominate the ranking: top-20 beats random-20.
    let top = out
        .topk
        .iter()
        .find(|t| t.label == "planted" && t.k == 20)
        .unwrap();
    assert!(top.top_accuracy > top.random_accuracy, "{top:?}");

    // Same seed, same numbers.
    let again = run_probes(&run, &opts, &NoProgress).unwrap();
    assert_eq!(again.results, out.results);
}

/// A token: its text, its byte span (none for specials), and whether its word is the verb.
type Piece = (String, Option<(u32, u32)>, bool);

#[test]
fn numeric_labels_get_ridge_regression_scored_by_r2() {
    let dir = tempfile::tempdir().unwrap();
    let (run, direction) = planted_run(dir.path(), 1000);
    let opts = ProbeOptions {
        labels: vec!["amount".into()],
        ..ProbeOptions::default()
    };
    let out = run_probes(&run, &opts, &NoProgress).unwrap();
    let r = &out.results[0];
    assert_eq!((r.metric.as_str(), r.n_classes), ("r2", 0));
    // Variance 4 explained of 4.04: R² ≈ 0.99.
    assert!(r.score > 0.95 && r.ci_low > 0.9, "{r:?}");
    assert!(
        r.majority <= 0.01,
        "predicting the training mean explains nothing: {r:?}"
    );
    assert!(
        r.selectivity > 0.8,
        "distinct texts make the control unlearnable: {r:?}"
    );
    assert!(r.accuracy.is_none() && r.f1.is_none() && r.mdl_compression.is_none());
    let w: Vec<f64> = out.weights[0].weight.iter().map(|&v| v as f64).collect();
    assert!(cosine(&w, &direction) > 0.99);
}

#[test]
fn token_labels_from_word_lists_and_builtins() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path());
    // Word class decides unit 0's sign; sub-word pieces inherit their word's label.
    let texts: Vec<String> = (0..120)
        .map(|i| format!("The cat{} sat {}", i % 7, i))
        .collect();
    let lists: Vec<Value> = texts
        .iter()
        .map(|t| {
            Value::List(
                t.split_whitespace()
                    .map(|w| Some(if w == "sat" { "verb" } else { "other" }.into()))
                    .collect(),
            )
        })
        .collect();
    let data = TextDataset {
        source: dir.path().join("t.jsonl"),
        sha256: String::new(),
        texts: texts.clone(),
        splits: None,
        columns: vec![Column {
            name: "pos".into(),
            kind: ColumnKind::List,
            values: lists,
        }],
    };
    let mut tokens = TokensWriter::create(&run).unwrap();
    let mut rng = SeededRng::new(3);
    let adir = run.activations_dir(HOOK);
    std::fs::create_dir_all(&adir).unwrap();
    let mut acts = ActivationWriter::create(
        &adir.join("part-00000.parquet"),
        meta(StoreKind::Activation),
    )
    .unwrap();
    let mut n_tokens = Vec::new();
    for (e, text) in texts.iter().enumerate() {
        // [CLS], then each word split into two pieces, then [SEP].
        let mut pieces: Vec<Piece> = vec![("[CLS]".into(), None, false)];
        let mut offset = 0;
        for word in text.split(' ') {
            let start = text[offset..].find(word).unwrap() + offset;
            let mid = start + word.len().div_ceil(2);
            let verb = word == "sat";
            pieces.push((
                text[start..mid].to_string(),
                Some((start as u32, mid as u32)),
                verb,
            ));
            if mid < start + word.len() {
                pieces.push((
                    format!("##{}", &text[mid..start + word.len()]),
                    Some((mid as u32, (start + word.len()) as u32)),
                    verb,
                ));
            }
            offset = start + word.len();
        }
        pieces.push(("[SEP]".into(), None, false));
        let ids: Vec<u32> = (0..pieces.len() as u32).collect();
        let toks: Vec<String> = pieces.iter().map(|p| p.0.clone()).collect();
        let spans: Vec<Option<(u32, u32)>> = pieces.iter().map(|p| p.1).collect();
        tokens
            .write(&[TokenRows {
                example_id: e as u64,
                ids: &ids,
                tokens: &toks,
                spans: &spans,
            }])
            .unwrap();
        let mut values = Vec::new();
        for (_, _, is_verb) in &pieces {
            for u in 0..WIDTH {
                let base = rng.gaussian() as f32;
                values.push(if u == 0 && *is_verb { base + 4.0 } else { base });
            }
        }
        let positions: Vec<u32> = (0..pieces.len() as u32).collect();
        acts.write(&vec![e as u64; pieces.len()], Some(&positions), &values)
            .unwrap();
        n_tokens.push(pieces.len() as u32);
    }
    tokens.finish().unwrap();
    acts.finish().unwrap();
    write_examples(&run, &data, &n_tokens).unwrap();

    let opts = ProbeOptions {
        token_labels: vec!["pos".into(), "@is_capitalised".into(), "@is_number".into()],
        ..ProbeOptions::default()
    };
    let out = run_probes(&run, &opts, &NoProgress).unwrap();
    let pos = out.results.iter().find(|r| r.label == "pos").unwrap();
    assert_eq!(pos.level, "token");
    // 120 examples × ("The" 2 pieces + "catN" 2 + "sat" 2 + number 1–2): specials excluded.
    assert!(
        pos.n_train + pos.n_validation + pos.n_test > 120 * 7,
        "{pos:?}"
    );
    assert!(pos.score > 0.95, "{pos:?}");
    let top1 = out
        .neurons
        .iter()
        .find(|n| n.label == "pos" && n.class == "*" && n.rank == 1)
        .unwrap();
    assert_eq!(top1.unit, 0, "the planted unit ranks first");
    assert!(out.results.iter().any(|r| r.label == "@is_number"));
}

#[test]
fn bad_inputs_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = planted_run(dir.path(), 40);
    let err = |opts: ProbeOptions| {
        run_probes(&run, &opts, &NoProgress)
            .unwrap_err()
            .to_string()
    };
    let base = ProbeOptions {
        labels: vec!["planted".into()],
        ..ProbeOptions::default()
    };
    // A pool is typed: a bad name fails where it is parsed (CLI or config), naming it.
    let e = "median".parse::<Pool>().unwrap_err().to_string();
    assert!(e.contains("unknown pool `median`"), "{e}");
    let e = err(ProbeOptions {
        labels: vec!["nope".into()],
        ..base.clone()
    });
    assert!(e.contains("`nope`") && e.contains("planted"), "{e}");
    let e = err(ProbeOptions {
        token_labels: vec!["@pos_tag".into()],
        ..base.clone()
    });
    assert!(e.contains("@word_class"), "{e}");
    // Two examples per class cannot fill train, validation and test.
    let e = err(ProbeOptions {
        max_per_class: 2,
        ..base.clone()
    });
    assert!(
        e.contains("planted") && e.contains("at least two classes with 3"),
        "{e}"
    );
}
