//! `split_by = "data"`: the data set's own `split` column decides the parts. Built so that only
//! the data's test rows can give the score seen: the planted direction's sign is flipped in
//! them, so a probe trained on the data's train rows scores near 0 on exactly those rows.

use glassbox_data::examples::write_examples;
use glassbox_data::rng::SeededRng;
use glassbox_data::store::{ActDtype, ActivationWriter, Codec, ShardMeta, StoreKind};
use glassbox_data::{Column, ColumnKind, HookPoint, NoProgress, Pool, RunDir, TextDataset, Value};
use glassbox_probes::{run_probes, ProbeOptions, SplitBy};

const HOOK: HookPoint = HookPoint::ResidPost(0);
const WIDTH: usize = 16;

/// `n` examples with pooled activations; `split(i)` names example `i`'s part; the label is the
/// sign of unit 0, flipped in the `test` rows; `rare` is a class only the train rows have.
fn run_with_splits(
    dir: &std::path::Path,
    n: usize,
    split: impl Fn(usize) -> Option<&'static str>,
) -> RunDir {
    let run = RunDir::new(dir);
    let mut rng = SeededRng::new(8);
    let (mut values, mut labels, mut with_rare) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let x: Vec<f32> = (0..WIDTH).map(|_| rng.gaussian() as f32).collect();
        let flipped = split(i) == Some("test");
        let positive = (x[0] > 0.0) != flipped;
        labels.push(Value::Str(if positive { "pos" } else { "neg" }.into()));
        with_rare.push(Value::Str(
            if i % 10 == 0 && split(i) == Some("train") {
                "rare"
            } else if positive {
                "pos"
            } else {
                "neg"
            }
            .into(),
        ));
        values.extend(x);
    }
    let data = TextDataset {
        source: dir.join("d.jsonl"),
        sha256: String::new(),
        texts: (0..n).map(|i| format!("example {i}")).collect(),
        splits: (0..n)
            .map(&split)
            .collect::<Option<Vec<_>>>()
            .map(|s| s.into_iter().map(str::to_owned).collect()),
        columns: vec![
            Column {
                name: "label".into(),
                kind: ColumnKind::Str,
                values: labels,
            },
            Column {
                name: "with_rare".into(),
                kind: ColumnKind::Str,
                values: with_rare,
            },
        ],
    };
    write_examples(&run, &data, &vec![1; n]).unwrap();
    let pooled = run.pooled_dir(HOOK, Pool::Mean);
    std::fs::create_dir_all(&pooled).unwrap();
    let meta = ShardMeta {
        model_id: "synthetic".into(),
        revision: "0".into(),
        hook: HOOK,
        kind: StoreKind::Pooled,
        pool: Some(Pool::Mean),
        width: WIDTH,
        dtype: ActDtype::F32,
        compression: Codec::None,
    };
    let mut w = ActivationWriter::create(&pooled.join("part-00000.parquet"), meta).unwrap();
    w.write(&(0..n as u64).collect::<Vec<_>>(), None, &values)
        .unwrap();
    w.finish().unwrap();
    run
}

fn options(label: &str, split_by: SplitBy) -> ProbeOptions {
    ProbeOptions {
        labels: vec![label.into()],
        split_by,
        neurons: false,
        ..ProbeOptions::default()
    }
}

#[test]
fn the_data_test_rows_are_the_test_part() {
    let dir = tempfile::tempdir().unwrap();
    // 300 train rows, then 100 test rows; no validation rows.
    let run = run_with_splits(dir.path(), 400, |i| {
        Some(if i < 300 { "train" } else { "test" })
    });
    let out = run_probes(&run, &options("label", SplitBy::Data), &NoProgress).unwrap();
    let r = &out.results[0];
    assert_eq!(r.n_test, 100, "{r:?}");
    // Validation held out of the train rows: 20 % of 300.
    assert_eq!((r.n_train, r.n_validation), (240, 60), "{r:?}");
    assert!(
        r.score < 0.1,
        "the flipped test rows, and only they, are scored: {r:?}"
    );

    // A seeded split mixes flipped and unflipped rows into train and test.
    let seeded = run_probes(&run, &options("label", SplitBy::Text), &NoProgress).unwrap();
    assert!(seeded.results[0].score > 0.5, "{:?}", seeded.results[0]);
}

#[test]
fn validation_rows_of_the_data_are_used_and_train_only_classes_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let part = |i: usize| Some(["train", "train", "train", "Validation", "test"][i % 5]);
    let run = run_with_splits(dir.path(), 500, part);
    let out = run_probes(&run, &options("with_rare", SplitBy::Data), &NoProgress).unwrap();
    let r = &out.results[0];
    assert_eq!(r.n_classes, 2, "`rare` is only in train rows: {r:?}");
    assert_eq!((r.n_validation, r.n_test), (100, 100), "{r:?}");
    // Every tenth example is a train row (i % 5 == 0) and `rare`: 50 of the 300.
    assert_eq!(
        r.n_train,
        300 - 50,
        "train rows less the `rare` ones: {r:?}"
    );
}

#[test]
fn a_data_set_without_usable_splits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let none = run_with_splits(&dir.path().join("none"), 60, |_| None);
    let e = run_probes(&none, &options("label", SplitBy::Data), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`all` (60 rows)") && e.contains("--split-by text"),
        "{e}"
    );

    let odd = run_with_splits(&dir.path().join("odd"), 60, |i| {
        Some(if i < 50 { "train" } else { "holdout" })
    });
    let e = run_probes(&odd, &options("label", SplitBy::Data), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`holdout` (10 rows)") && e.contains("train, validation"),
        "{e}"
    );

    let no_test = run_with_splits(&dir.path().join("no_test"), 60, |i| {
        Some(if i < 50 { "train" } else { "validation" })
    });
    let e = run_probes(&no_test, &options("label", SplitBy::Data), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("both the data's train and test"), "{e}");
}
