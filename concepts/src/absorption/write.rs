//! `absorption.parquet` (one row per letter with enough tokens: measured, or gated out by its
//! probe) and `absorption_tokens.parquet` (one row per measured token).

use super::words::Words;
use super::Absorption;
use crate::ConceptError;
use arrow_array::StringArray;
use glassbox_data::table::Columns;
use std::path::Path;
use std::sync::Arc;

pub fn write_tables(dir: &Path, a: &Absorption, words: &Words) -> Result<(), ConceptError> {
    struct Row<'a> {
        letter: String,
        measured: bool,
        probe_f1: f64,
        train: usize,
        test: usize,
        result: Option<&'a super::LetterResult>,
    }
    let mut rows: Vec<Row<'_>> = a
        .letters
        .iter()
        .map(|l| Row {
            letter: l.letter.to_string(),
            measured: true,
            probe_f1: l.probe_f1,
            train: l.train_positives,
            test: l.test_positives,
            result: Some(l),
        })
        .chain(a.gated.iter().map(|&(l, f1, train, test)| Row {
            letter: l.to_string(),
            measured: false,
            probe_f1: f1,
            train,
            test,
            result: None,
        }))
        .collect();
    rows.sort_by(|x, y| x.letter.cmp(&y.letter));
    let num = |r: &Row<'_>, f: &dyn Fn(&super::LetterResult) -> f64| r.result.map(f);
    let mut c = Columns::default();
    c.text("letter", &rows, |r| &r.letter)
        .small("measured", &rows, |r| u32::from(r.measured))
        .float("probe_f1", &rows, |r| r.probe_f1)
        .small("train_tokens", &rows, |r| r.train as u32)
        .small("test_tokens", &rows, |r| r.test as u32)
        .add(
            "main_latents",
            crate::sparse_probing::units_list(
                rows.iter()
                    .map(|r| r.result.map_or(&[][..], |l| l.main_latents.as_slice())),
            ),
        )
        .opt_float("main_f1", &rows, |r| num(r, &|l| l.main_f1))
        .small("probe_true_positives", &rows, |r| {
            r.result.map_or(0, |l| l.probe_true_positives as u32)
        })
        .opt_float("mean_absorption_fraction", &rows, |r| {
            num(r, &|l| l.mean_absorption_fraction)
        })
        .opt_float("full_absorption_rate", &rows, |r| {
            num(r, &|l| l.full_absorption_rate())
        });
    c.write(&dir.join("absorption.parquet"))?;

    let t = &a.tokens;
    let letters = StringArray::from_iter_values(t.iter().map(|r| r.letter.to_string()));
    let mut c = Columns::default();
    c.add("letter", Arc::new(letters))
        .count("example_id", t, |r| words.ids[r.row].0)
        .small("position", t, |r| words.ids[r.row].1)
        .text("word", t, |r| &words.word[r.row])
        .float("probe_projection", t, |r| r.probe_projection)
        .float("main_projection", t, |r| r.main_projection)
        .float("absorption_fraction", t, |r| r.absorption_fraction)
        .small("full_absorption", t, |r| u32::from(r.full_absorption))
        .small("top_latent", t, |r| r.top_latent)
        .float("top_latent_cosine", t, |r| r.top_cosine);
    c.write(&dir.join("absorption_tokens.parquet"))?;
    Ok(())
}
