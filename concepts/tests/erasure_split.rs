//! LEACE is fitted on the probe's own training rows: under `split_by = "data"` those are the
//! data set's train rows. Built so that only that split gives the accuracy seen: the planted
//! direction's sign is flipped in the data's test rows, so the probe refitted before erasure
//! scores near 0 on exactly those rows (a seeded split mixing them in scores well above).

use glassbox_concepts::causal::erasure::fit_erasure;
use glassbox_data::examples::write_examples;
use glassbox_data::rng::SeededRng;
use glassbox_data::store::{ActDtype, ActivationWriter, Codec, ShardMeta, StoreKind};
use glassbox_data::{Column, ColumnKind, HookPoint, NoProgress, Pool, RunDir, TextDataset, Value};
use glassbox_probes::{run_probes, ProbeOptions, SplitBy};

const HOOK: HookPoint = HookPoint::ResidPost(0);
const WIDTH: usize = 12;
const N: usize = 400;

fn run(dir: &std::path::Path) -> RunDir {
    let run = RunDir::new(dir);
    let mut rng = SeededRng::new(21);
    let is_test = |i: usize| i.is_multiple_of(4);
    let (mut values, mut labels) = (Vec::new(), Vec::new());
    for i in 0..N {
        let x: Vec<f32> = (0..WIDTH).map(|_| rng.gaussian() as f32).collect();
        let positive = (x[0] > 0.0) != is_test(i);
        labels.push(Value::Str(if positive { "pos" } else { "neg" }.into()));
        values.extend(x);
    }
    let data = TextDataset {
        source: dir.join("d.jsonl"),
        sha256: String::new(),
        texts: (0..N).map(|i| format!("example {i}")).collect(),
        splits: Some(
            (0..N)
                .map(|i| if is_test(i) { "test" } else { "train" }.to_owned())
                .collect(),
        ),
        columns: vec![Column {
            name: "label".into(),
            kind: ColumnKind::Str,
            values: labels,
        }],
    };
    write_examples(&run, &data, &vec![1; N]).unwrap();
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
    w.write(&(0..N as u64).collect::<Vec<_>>(), None, &values)
        .unwrap();
    w.finish().unwrap();
    run
}

#[test]
fn the_eraser_is_fitted_and_checked_on_the_probes_own_split() {
    let dir = tempfile::tempdir().unwrap();
    let run = run(dir.path());
    for split_by in [SplitBy::Data, SplitBy::Text] {
        let options = ProbeOptions {
            labels: vec!["label".into()],
            split_by,
            neurons: false,
            ..ProbeOptions::default()
        };
        let probe = run_probes(&run, &options, &NoProgress).unwrap().results;
        let fit = fit_erasure(&run, "label", HOOK, Some(Pool::Mean), &options, 2, 0).unwrap();
        assert_eq!(
            fit.accuracy_before, probe[0].score,
            "{split_by}: the refit before erasure is the probe itself"
        );
        if split_by == SplitBy::Data {
            assert!(
                fit.accuracy_before < 0.1,
                "flipped test rows: {}",
                fit.accuracy_before
            );
        } else {
            assert!(
                fit.accuracy_before > 0.5,
                "mixed rows: {}",
                fit.accuracy_before
            );
        }
    }
}
