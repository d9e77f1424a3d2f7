//! Token-level probes split by text: a label that is constant within each text and carried by
//! nothing but the text's identity (every token of a text shares a random offset) is decodable
//! when a text's tokens sit on both sides of the split, and at chance when texts stay whole —
//! the leak `split_by = "text"` exists to close.

use glassbox_data::examples::write_examples;
use glassbox_data::rng::SeededRng;
use glassbox_data::store::{ActDtype, ActivationWriter, Codec, ShardMeta, StoreKind};
use glassbox_data::tokens::{TokenRows, TokensWriter};
use glassbox_data::{Column, ColumnKind, HookPoint, NoProgress, RunDir, TextDataset, Value};
use glassbox_probes::{run_probes, ProbeOptions, ProbeResult, SplitBy};

const HOOK: HookPoint = HookPoint::ResidPost(0);
const WIDTH: usize = 256;
const TEXTS: usize = 200;
const WORDS: usize = 6;

/// Texts of six one-token words; the label of every word of text `e` is `e`'s random class,
/// and every token's activation is the text's random offset plus a little noise.
fn text_identity_run(dir: &std::path::Path, splits: Option<Vec<String>>) -> RunDir {
    let run = RunDir::new(dir);
    let mut rng = SeededRng::new(11);
    let texts: Vec<String> = (0..TEXTS)
        .map(|e| {
            (0..WORDS)
                .map(|w| format!("w{}", (e * 7 + w * 13) % 50))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let classes: Vec<&str> = (0..TEXTS)
        .map(|_| if rng.below(2) == 0 { "a" } else { "b" })
        .collect();
    let data = TextDataset {
        source: dir.join("t.jsonl"),
        sha256: String::new(),
        texts: texts.clone(),
        splits,
        columns: vec![Column {
            name: "tag".into(),
            kind: ColumnKind::List,
            values: classes
                .iter()
                .map(|c| Value::List(vec![Some((*c).into()); WORDS]))
                .collect(),
        }],
    };
    let mut tokens = TokensWriter::create(&run).unwrap();
    let adir = run.activations_dir(HOOK);
    std::fs::create_dir_all(&adir).unwrap();
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
    let mut acts = ActivationWriter::create(&adir.join("part-00000.parquet"), meta).unwrap();
    for (e, text) in texts.iter().enumerate() {
        let mut spans = Vec::new();
        let mut start = 0u32;
        for word in text.split(' ') {
            spans.push(Some((start, start + word.len() as u32)));
            start += word.len() as u32 + 1;
        }
        let words: Vec<String> = text.split(' ').map(str::to_owned).collect();
        let ids: Vec<u32> = (0..WORDS as u32).collect();
        tokens
            .write(&[TokenRows {
                example_id: e as u64,
                ids: &ids,
                tokens: &words,
                spans: &spans,
            }])
            .unwrap();
        let offset: Vec<f32> = (0..WIDTH).map(|_| rng.gaussian() as f32).collect();
        let values: Vec<f32> = (0..WORDS)
            .flat_map(|_| {
                offset
                    .iter()
                    .map(|o| o + 0.3 * rng.gaussian() as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        let positions: Vec<u32> = (0..WORDS as u32).collect();
        acts.write(&[e as u64; WORDS], Some(&positions), &values)
            .unwrap();
    }
    tokens.finish().unwrap();
    acts.finish().unwrap();
    write_examples(&run, &data, &[WORDS as u32; TEXTS]).unwrap();
    run
}

fn probe(run: &RunDir, split_by: SplitBy) -> ProbeResult {
    probe_with(run, split_by, ProbeOptions::default().l2_grid)
}

fn probe_with(run: &RunDir, split_by: SplitBy, l2_grid: Vec<f64>) -> ProbeResult {
    let opts = ProbeOptions {
        l2_grid,
        token_labels: vec!["tag".into()],
        split_by,
        neurons: false,
        mdl: true,
        ..ProbeOptions::default()
    };
    let mut out = run_probes(run, &opts, &NoProgress).unwrap();
    assert_eq!(out.results.len(), 1);
    out.results.remove(0)
}

#[test]
fn a_label_carried_only_by_the_text_is_at_chance_when_texts_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    let run = text_identity_run(dir.path(), None);

    let leaky = probe(&run, SplitBy::Token);
    assert!(
        leaky.score > 0.9,
        "tokens split independently: the probe recognises the texts ({leaky:?})"
    );

    let whole = probe(&run, SplitBy::Text);
    assert_eq!(
        (leaky.split_by.as_str(), whole.split_by.as_str()),
        ("token", "text")
    );
    assert_eq!(
        whole.n_train + whole.n_validation + whole.n_test,
        (TEXTS * WORDS) as u64
    );
    assert_eq!(whole.n_test % WORDS as u64, 0, "whole texts in test");
    assert!(whole.score < 0.75, "{whole:?}");
    assert!(
        whole.ci_low < 0.5 && 0.5 < whole.ci_high,
        "chance inside the CI over test texts: {whole:?}"
    );
    // Resampling texts, not tokens: the interval is as wide as ~40 texts make it, far wider
    // than ~240 independent tokens would.
    assert!(whole.ci_high - whole.ci_low > 0.2, "{whole:?}");
}

#[test]
fn the_data_split_keeps_texts_whole_and_resamples_them() {
    let dir = tempfile::tempdir().unwrap();
    // The first 150 texts train, the last 50 test.
    let splits = (0..TEXTS)
        .map(|e| if e < 150 { "train" } else { "test" }.to_owned())
        .collect();
    let run = text_identity_run(dir.path(), Some(splits));
    let r = probe(&run, SplitBy::Data);
    assert_eq!(r.n_test, (50 * WORDS) as u64, "{r:?}");
    assert_eq!(r.n_train + r.n_validation, (150 * WORDS) as u64, "{r:?}");
    assert_eq!(
        r.n_validation % WORDS as u64,
        0,
        "validation held out by text: {r:?}"
    );
    assert!(r.score < 0.75 && r.ci_low < 0.5 && 0.5 < r.ci_high, "{r:?}");
    assert!(
        r.ci_high - r.ci_low > 0.2,
        "CIs over 50 texts, not 300 tokens: {r:?}"
    );
}

#[test]
fn mdl_sends_whole_texts_when_texts_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    let run = text_identity_run(dir.path(), None);
    // One L2 strength for both, so only the transmission order differs. Rows sent one by one:
    // a text's later tokens are cheap once its first ones were sent (1.50 when written).
    let leaky = probe_with(&run, SplitBy::Token, vec![10.0])
        .mdl_compression
        .unwrap();
    // Whole texts, blocks ending only where a text does: nothing to transmit (0.70).
    let whole = probe_with(&run, SplitBy::Text, vec![10.0])
        .mdl_compression
        .unwrap();
    assert!(leaky > 1.3, "{leaky}");
    assert!(whole < 1.0, "{whole}");
}
