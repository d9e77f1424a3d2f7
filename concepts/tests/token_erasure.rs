//! LEACE for a token-level label: fitted on the token-level probe's own rows and split (by
//! text), it takes a planted per-word class down to chance. The class of each word is painted
//! into two dimensions of its token's row; special tokens and the other dimensions are noise.

use glassbox_concepts::causal::erasure::fit_erasure;
use glassbox_data::examples::write_examples;
use glassbox_data::rng::SeededRng;
use glassbox_data::store::{ActDtype, ActivationWriter, Codec, ShardMeta, StoreKind};
use glassbox_data::tokens::{TokenRows, TokensWriter};
use glassbox_data::{Column, ColumnKind, HookPoint, NoProgress, RunDir, TextDataset, Value};
use glassbox_probes::{run_probes, token_classes, ProbeOptions, SplitBy};

const HOOK: HookPoint = HookPoint::ResidPost(1);
const WIDTH: usize = 10;
const TEXTS: usize = 90;
const WORDS: usize = 5;
const CLASSES: [&str; 3] = ["a", "b", "c"];

/// Texts of `WORDS` words, each token row [CLS] word… [SEP]; returns the run.
fn run(dir: &std::path::Path) -> RunDir {
    let run = RunDir::new(dir);
    let mut rng = SeededRng::new(5);
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    let (mut ids, mut positions, mut values) = (Vec::new(), Vec::new(), Vec::new());
    let mut tokens = TokensWriter::create(&run).unwrap();
    for t in 0..TEXTS {
        let words: Vec<String> = (0..WORDS).map(|w| format!("w{t}x{w}")).collect();
        let text = words.join(" ");
        let classes: Vec<usize> = (0..WORDS).map(|_| rng.below(3)).collect();
        let mut spans = vec![None];
        let mut start = 0u32;
        for w in &words {
            spans.push(Some((start, start + w.len() as u32)));
            start += w.len() as u32 + 1;
        }
        spans.push(None);
        let names: Vec<String> = std::iter::once("[CLS]".to_owned())
            .chain(words.iter().cloned())
            .chain(std::iter::once("[SEP]".to_owned()))
            .collect();
        let token_ids: Vec<u32> = (0..names.len() as u32).collect();
        tokens
            .write(&[TokenRows {
                example_id: t as u64,
                ids: &token_ids,
                tokens: &names,
                spans: &spans,
            }])
            .unwrap();
        for p in 0..names.len() {
            let mut x: Vec<f32> = (0..WIDTH).map(|_| rng.gaussian() as f32).collect();
            if (1..=WORDS).contains(&p) {
                // Class c sits at angle 2πc/3 in dimensions 0 and 1, well above the noise.
                let angle = 2.0 * std::f32::consts::PI * classes[p - 1] as f32 / 3.0;
                x[0] += 4.0 * angle.cos();
                x[1] += 4.0 * angle.sin();
            }
            ids.push(t as u64);
            positions.push(p as u32);
            values.extend(x);
        }
        labels.push(Value::List(
            classes
                .iter()
                .map(|&c| Some(CLASSES[c].to_owned()))
                .collect(),
        ));
        texts.push(text);
    }
    tokens.finish().unwrap();
    let data = TextDataset {
        source: dir.join("d.jsonl"),
        sha256: String::new(),
        texts,
        splits: None,
        columns: vec![Column {
            name: "pos".into(),
            kind: ColumnKind::List,
            values: labels,
        }],
    };
    write_examples(&run, &data, &vec![WORDS as u32 + 2; TEXTS]).unwrap();
    let dir = run.activations_dir(HOOK);
    std::fs::create_dir_all(&dir).unwrap();
    let meta = ShardMeta {
        model_id: "synthetic".into(),
        revision: "0".into(),
        hook: HOOK,
        kind: StoreKind::Activation,
        pool: None,
        width: WIDTH,
        dtype: ActDtype::F32,
        compression: Codec::None,
    };
    let mut w = ActivationWriter::create(&dir.join("part-00000.parquet"), meta).unwrap();
    w.write(&ids, Some(&positions), &values).unwrap();
    w.finish().unwrap();
    run
}

#[test]
fn a_token_level_label_is_erased_on_the_probes_own_rows_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let run = run(dir.path());
    for split_by in [SplitBy::Text, SplitBy::Token] {
        let options = ProbeOptions {
            labels: Vec::new(),
            token_labels: vec!["pos".into()],
            split_by,
            neurons: false,
            mdl: false,
            ..ProbeOptions::default()
        };
        let probe = run_probes(&run, &options, &NoProgress).unwrap().results;
        let fit = fit_erasure(&run, "pos", HOOK, None, &options, 3, 0).unwrap();
        assert_eq!(
            fit.accuracy_before, probe[0].score,
            "{split_by}: the refit before erasure is the token-level probe itself"
        );
        assert!(
            fit.accuracy_before > 0.9,
            "planted: {}",
            fit.accuracy_before
        );
        assert!(
            fit.counts(),
            "{split_by}: after erasure {} (CI from {}) vs chance {}",
            fit.accuracy_after,
            fit.accuracy_after_ci.0,
            fit.chance
        );
        assert!(fit.accuracy_after < 0.5, "{}", fit.accuracy_after);
        assert_eq!(fit.eraser.rank, 2, "three classes span two dimensions");
        assert_eq!(fit.randoms.len(), 3);
        assert!(fit.randoms.iter().all(|r| r.rank == 2));
    }
}

#[test]
fn every_labelled_token_has_its_class_for_the_readout() {
    let dir = tempfile::tempdir().unwrap();
    let run = run(dir.path());
    let truth = token_classes(&run, "pos").unwrap();
    assert_eq!(truth.lengths.len(), TEXTS);
    assert!(truth.lengths.values().all(|&n| n == WORDS + 2));
    assert_eq!(
        truth.by_token.len(),
        TEXTS * WORDS,
        "special tokens have no class"
    );
    assert!(
        !truth.by_token.contains_key(&(0, 0))
            && !truth.by_token.contains_key(&(0, WORDS as u32 + 1))
    );
    assert!(CLASSES.contains(&truth.by_token[&(3, 2)].as_str()));
}

#[test]
fn a_missing_token_label_is_refused_with_the_label_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = run(dir.path());
    let options = ProbeOptions {
        token_labels: vec!["nope".into()],
        ..ProbeOptions::default()
    };
    let err = fit_erasure(&run, "nope", HOOK, None, &options, 1, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("token-level `nope`") && err.contains("no such column"),
        "{err}"
    );
}
