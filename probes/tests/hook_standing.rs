//! Which hook a label is best decoded at, and how sure: a label planted at three hooks — as
//! clearly at two of them, far more weakly at the third. The two clear hooks share the
//! bootstrap resamples and neither is told apart from the other; the weak one is behind the
//! best with an interval that excludes 0 and never comes out best.

use glassbox_data::examples::write_examples;
use glassbox_data::rng::SeededRng;
use glassbox_data::store::{ActDtype, ActivationWriter, Codec, ShardMeta, StoreKind};
use glassbox_data::{Column, ColumnKind, HookPoint, NoProgress, Pool, RunDir, TextDataset, Value};
use glassbox_probes::{best_per_label, run_probes, ProbeOptions};

const WIDTH: usize = 16;
const N: usize = 600;
/// Noise added to the planted coordinate at each hook: two clear hooks and one weak one.
const NOISE: [(HookPoint, f64); 3] = [
    (HookPoint::ResidPost(0), 0.3),
    (HookPoint::ResidPost(1), 3.0),
    (HookPoint::ResidPost(2), 0.3),
];

fn run(dir: &std::path::Path) -> RunDir {
    let run = RunDir::new(dir);
    let mut rng = SeededRng::new(9);
    let signal: Vec<f64> = (0..N).map(|_| rng.gaussian()).collect();
    let labels: Vec<Value> = signal
        .iter()
        .map(|s| Value::Str(if *s > 0.0 { "pos" } else { "neg" }.into()))
        .collect();
    let data = TextDataset {
        source: dir.join("d.jsonl"),
        sha256: String::new(),
        texts: (0..N).map(|i| format!("example {i}")).collect(),
        splits: None,
        columns: vec![
            Column {
                name: "label".into(),
                kind: ColumnKind::Str,
                values: labels,
            },
            Column {
                name: "amount".into(),
                kind: ColumnKind::Float,
                values: signal.iter().map(|s| Value::Float(*s)).collect(),
            },
        ],
    };
    write_examples(&run, &data, &vec![1; N]).unwrap();
    for (hook, noise) in NOISE {
        let mut values = Vec::with_capacity(N * WIDTH);
        for s in &signal {
            values.push((s + noise * rng.gaussian()) as f32);
            values.extend((1..WIDTH).map(|_| rng.gaussian() as f32));
        }
        let dir = run.pooled_dir(hook, Pool::Mean);
        std::fs::create_dir_all(&dir).unwrap();
        let meta = ShardMeta {
            model_id: "synthetic".into(),
            revision: "0".into(),
            hook,
            kind: StoreKind::Pooled,
            pool: Some(Pool::Mean),
            width: WIDTH,
            dtype: ActDtype::F32,
            compression: Codec::None,
        };
        let mut w = ActivationWriter::create(&dir.join("part-00000.parquet"), meta).unwrap();
        w.write(&(0..N as u64).collect::<Vec<_>>(), None, &values)
            .unwrap();
        w.finish().unwrap();
    }
    run
}

#[test]
fn the_best_hook_is_compared_with_every_other_on_the_same_resamples() {
    let dir = tempfile::tempdir().unwrap();
    let run = run(dir.path());
    let options = ProbeOptions {
        labels: vec!["label".into(), "amount".into()],
        neurons: false,
        ..ProbeOptions::default()
    };
    let results = run_probes(&run, &options, &NoProgress).unwrap().results;
    assert_eq!(results.len(), 6);
    for label in ["label", "amount"] {
        let rows: Vec<_> = results.iter().filter(|r| r.label == label).collect();
        let best = *best_per_label(&results)
            .iter()
            .find(|r| r.label == label)
            .unwrap();
        assert_ne!(best.hook, HookPoint::ResidPost(1), "{label}: {rows:?}");
        let shares: f64 = rows.iter().map(|r| r.best_share.unwrap()).sum();
        assert!((shares - 1.0).abs() < 1e-9, "{label}: {rows:?}");
        for r in &rows {
            if r.hook == best.hook {
                assert!(r.vs_best_ci_low.is_none() && r.vs_best_ci_high.is_none());
                continue;
            }
            let (lo, hi) = (r.vs_best_ci_low.unwrap(), r.vs_best_ci_high.unwrap());
            assert!(lo <= hi, "{r:?}");
            if r.hook == HookPoint::ResidPost(1) {
                assert!(lo > 0.0, "{label}: the weak hook is behind: {r:?}");
                assert_eq!(r.best_share, Some(0.0), "{label}: {r:?}");
            } else {
                assert!(
                    lo <= 0.0 && 0.0 <= hi,
                    "{label}: as clear as the best: {r:?}"
                );
                assert!(r.best_share.unwrap() > 0.05, "{label}: {r:?}");
            }
        }
    }
    // Same seed, same standings.
    let again = run_probes(&run, &options, &NoProgress).unwrap().results;
    assert_eq!(again, results);
}
