//! A label set narrowed to the probed rows and split: capped per class, classes that cannot
//! reach every part left out, classes renumbered; the split seeded (by row, or by text at token
//! level) or the data set's own `split` column.

use crate::features;
use crate::grouped_split::{clusters, grouped_stratified_split, Uncovered};
use crate::labels::{LabelSet, Level, Target};
use crate::{stratified_split, ProbeError, ProbeOptions, Result, Split, SplitBy};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A label set narrowed to the probed rows: capped per class, rare classes left out, classes
/// renumbered.
pub(crate) struct Prepared {
    /// Indices into the label set's items.
    pub(crate) rows: Vec<usize>,
    pub(crate) classes: Vec<usize>,
    pub(crate) names: Vec<String>,
    pub(crate) values: Vec<f64>,
    pub(crate) types: Vec<String>,
    /// Classes left out, each with why.
    pub(crate) dropped: Vec<String>,
    pub(crate) split: Split,
}

/// Caps the label set's rows per class and splits them as `opts.split_by` says; `data_splits`
/// is each example's value of the data set's `split` column.
pub(crate) fn prepare(
    set: &LabelSet,
    opts: &ProbeOptions,
    data_splits: &HashMap<u64, &str>,
) -> Result<Prepared> {
    let cap = (opts.max_per_class > 0).then_some(opts.max_per_class);
    let rows = features::cap_per_class(set, cap, opts.seed);
    match opts.split_by {
        SplitBy::Data => data_split(set, opts, rows, data_splits),
        SplitBy::Text | SplitBy::Token => seeded_split(set, opts, rows),
    }
}

/// A seeded split stratified by class: of the rows, or of whole texts at token level under
/// `split_by = "text"`.
fn seeded_split(set: &LabelSet, opts: &ProbeOptions, mut rows: Vec<usize>) -> Result<Prepared> {
    let label_error = |message: String| ProbeError::Label {
        column: set.name.clone(),
        message,
    };
    let by_text = set.level == Level::Token && opts.split_by == SplitBy::Text;
    let unit = if by_text { "texts" } else { "examples" };
    let parts = opts.split_parts();
    let (val, test, seed) = (opts.validation_fraction, opts.test_fraction, opts.seed);
    let texts_of = |rows: &[usize]| -> Vec<u64> { rows.iter().map(|&r| set.texts[r]).collect() };
    match &set.target {
        Target::Classes { classes, names } => {
            let mut dropped = Vec::new();
            loop {
                // Per class: its rows, or the texts holding it when texts stay whole.
                let mut counts = vec![0usize; names.len()];
                if by_text {
                    let mut seen = HashSet::new();
                    for &r in &rows {
                        if seen.insert((classes[r], set.texts[r])) {
                            counts[classes[r]] += 1;
                        }
                    }
                } else {
                    rows.iter().for_each(|&r| counts[classes[r]] += 1);
                }
                let rare: Vec<usize> = (0..names.len())
                    .filter(|&c| counts[c] > 0 && counts[c] < parts)
                    .collect();
                dropped.extend(rare.iter().map(|&c| {
                    // "1 text", "2 texts".
                    let unit = if counts[c] == 1 {
                        unit.trim_end_matches('s')
                    } else {
                        unit
                    };
                    format!(
                        "{} ({} {unit}; the split has {parts} parts)",
                        names[c], counts[c]
                    )
                }));
                rows.retain(|&r| !rare.contains(&classes[r]));
                let present: Vec<usize> =
                    (0..names.len()).filter(|&c| counts[c] >= parts).collect();
                if present.len() < 2 {
                    let hint = if by_text {
                        "; add texts, or split tokens instead of texts with --split-by token (a text's tokens then sit in train and test alike)"
                    } else {
                        "; add examples"
                    };
                    return Err(label_error(format!(
                        "needs at least two classes with {parts} or more {unit} each (train, validation, test); found {} — {}{hint}",
                        present.len(),
                        names
                            .iter()
                            .zip(&counts)
                            .map(|(n, c)| format!("{n}: {c}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                let mut renumber = vec![usize::MAX; names.len()];
                for (new, &c) in present.iter().enumerate() {
                    renumber[c] = new;
                }
                let kept: Vec<usize> = rows.iter().map(|&r| renumber[classes[r]]).collect();
                let split = if by_text {
                    match grouped_stratified_split(
                        &kept,
                        &texts_of(&rows),
                        present.len(),
                        val,
                        test,
                        seed,
                    ) {
                        Ok(split) => split,
                        // Whole texts could not bring these classes to every part: leave them
                        // out too and split again.
                        Err(Uncovered(missing)) => {
                            let missing: Vec<usize> = missing.iter().map(|&k| present[k]).collect();
                            dropped.extend(missing.iter().map(|&c| {
                                format!(
                                    "{} ({} {unit}, too few left for every part)",
                                    names[c], counts[c]
                                )
                            }));
                            rows.retain(|&r| !missing.contains(&classes[r]));
                            continue;
                        }
                    }
                } else {
                    stratified_split(&kept, present.len(), val, test, seed).map_err(label_error)?
                };
                return Ok(Prepared {
                    types: rows.iter().map(|&r| set.types[r].clone()).collect(),
                    rows,
                    classes: kept,
                    names: present.iter().map(|&c| names[c].clone()).collect(),
                    values: Vec::new(),
                    dropped,
                    split,
                });
            }
        }
        Target::Values(values) => {
            let n_units = if by_text {
                texts_of(&rows).into_iter().collect::<HashSet<_>>().len()
            } else {
                rows.len()
            };
            if n_units < 3 * parts {
                return Err(label_error(format!(
                    "{n_units} labelled {unit} are too few for a train/validation/test split"
                )));
            }
            let single = vec![0; rows.len()];
            let split = if by_text {
                grouped_stratified_split(&single, &texts_of(&rows), 1, val, test, seed).map_err(
                    |_| {
                        label_error(format!(
                            "{n_units} {unit} cannot fill every part of the split"
                        ))
                    },
                )?
            } else {
                stratified_split(&single, 1, val, test, seed).map_err(label_error)?
            };
            Ok(Prepared {
                types: rows.iter().map(|&r| set.types[r].clone()).collect(),
                values: rows.iter().map(|&r| values[r]).collect(),
                classes: single,
                rows,
                names: Vec::new(),
                dropped: Vec::new(),
                split,
            })
        }
    }
}

/// The data set's own parts, from its `split` column: `train` (or `training`), `validation` (or
/// `valid`, `val`, `dev`) and `test`, case aside. Classes without rows in both train and test are left out.
/// Without validation rows, `validation_fraction` of the train rows (whole texts at token level)
/// are held out to choose the L2 strength, as the seeded split would.
fn data_split(
    set: &LabelSet,
    opts: &ProbeOptions,
    rows: Vec<usize>,
    data_splits: &HashMap<u64, &str>,
) -> Result<Prepared> {
    let label_error = |message: String| ProbeError::Label {
        column: set.name.clone(),
        message,
    };
    let mut parts = Vec::with_capacity(rows.len());
    let mut unknown: BTreeMap<&str, usize> = BTreeMap::new();
    for &r in &rows {
        let name = data_splits.get(&set.texts[r]).copied().unwrap_or("all");
        match data_part(name) {
            Some(part) => parts.push(part),
            None => *unknown.entry(name).or_default() += 1,
        }
    }
    if !unknown.is_empty() {
        let found: Vec<String> = unknown
            .iter()
            .map(|(v, n)| format!("`{v}` ({n} rows)"))
            .collect();
        let hint = if unknown.contains_key("all") {
            "; `all` is what a data set without a `split` column gets — add one, or use --split-by text"
        } else {
            ""
        };
        return Err(label_error(format!(
            "split_by = \"data\" reads the data set's `split` column, whose values must be train, validation (valid, val, dev) or test; found {}{hint}",
            found.join(", ")
        )));
    }
    let (rows, parts, classes, names, values, dropped) = match &set.target {
        Target::Classes { classes, names } => {
            let mut seen = vec![[false; 3]; names.len()];
            for (&r, &part) in rows.iter().zip(&parts) {
                seen[classes[r]][part] = true;
            }
            let in_both = |c: usize| seen[c][TEST] && seen[c][TRAIN];
            let kept: Vec<usize> = (0..names.len()).filter(|&c| in_both(c)).collect();
            let dropped: Vec<String> = (0..names.len())
                .filter(|&c| !in_both(c) && seen[c].iter().any(|&s| s))
                .map(|c| format!("{} (not in both the data's train and test rows)", names[c]))
                .collect();
            if kept.len() < 2 {
                return Err(label_error(format!(
                    "needs at least two classes with rows in both the data's train and test parts; found {} ({})",
                    kept.len(),
                    kept.iter().map(|&c| names[c].as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            let mut renumber = vec![usize::MAX; names.len()];
            for (new, &c) in kept.iter().enumerate() {
                renumber[c] = new;
            }
            let (rows, parts): (Vec<usize>, Vec<usize>) = rows
                .iter()
                .zip(&parts)
                .filter(|(&r, _)| renumber[classes[r]] != usize::MAX)
                .map(|(&r, &p)| (r, p))
                .unzip();
            let classes: Vec<usize> = rows.iter().map(|&r| renumber[classes[r]]).collect();
            let names = kept.iter().map(|&c| names[c].clone()).collect();
            (rows, parts, classes, names, Vec::new(), dropped)
        }
        Target::Values(values) => {
            let count = |part: usize| parts.iter().filter(|&&p| p == part).count();
            if count(TRAIN) < 3 || count(TEST) == 0 {
                return Err(label_error(format!(
                    "the data's split has {} train and {} test rows; a regression probe needs at least 3 and 1",
                    count(TRAIN),
                    count(TEST)
                )));
            }
            let values = rows.iter().map(|&r| values[r]).collect();
            let single = vec![0; rows.len()];
            (rows, parts, single, Vec::new(), values, Vec::new())
        }
    };
    let mut split = Split::default();
    for (i, &part) in parts.iter().enumerate() {
        match part {
            TEST => split.test.push(i),
            VALIDATION => split.validation.push(i),
            _ => split.train.push(i),
        }
    }
    let texts: Vec<u64> = rows.iter().map(|&r| set.texts[r]).collect();
    if split.validation.is_empty() && opts.validation_fraction > 0.0 && opts.l2_grid.len() > 1 {
        hold_out_validation(&mut split, &classes, &names, &texts, set.level, opts)
            .map_err(label_error)?;
    }
    if set.level == Level::Token {
        split.test_clusters = clusters(&split.test, &texts);
    }
    Ok(Prepared {
        types: rows.iter().map(|&r| set.types[r].clone()).collect(),
        rows,
        classes,
        names,
        values,
        dropped,
        split,
    })
}

/// Moves `validation_fraction` of the train rows (stratified; whole texts at token level) to
/// validation, for data whose split has none.
fn hold_out_validation(
    split: &mut Split,
    classes: &[usize],
    names: &[String],
    texts: &[u64],
    level: Level,
    opts: &ProbeOptions,
) -> std::result::Result<(), String> {
    let train = std::mem::take(&mut split.train);
    let train_classes: Vec<usize> = train.iter().map(|&i| classes[i]).collect();
    let (k, fraction) = (names.len().max(1), opts.validation_fraction);
    let held = match level {
        Level::Token => {
            let train_texts: Vec<u64> = train.iter().map(|&i| texts[i]).collect();
            grouped_stratified_split(&train_classes, &train_texts, k, 0.0, fraction, opts.seed)
                .map_err(|Uncovered(missing)| {
                    let missing: Vec<&str> = missing.iter().map(|&c| names[c].as_str()).collect();
                    format!("{} occur in too few train texts", missing.join(", "))
                })
        }
        Level::Sequence => stratified_split(&train_classes, k, 0.0, fraction, opts.seed),
    }
    .map_err(|why| {
        format!(
            "the data's split has no validation rows, and holding {fraction} of the train rows out to choose the L2 strength failed: {why}; add validation rows, or pass a single --l2"
        )
    })?;
    // The held-out split's "test" part is the validation part here.
    split.train = held.train.iter().map(|&j| train[j]).collect();
    split.validation = held.test.iter().map(|&j| train[j]).collect();
    Ok(())
}

/// Parts as `Split` and the grouped split number them.
const TEST: usize = 0;
const VALIDATION: usize = 1;
const TRAIN: usize = 2;

/// The part a data set's `split` value names.
fn data_part(name: &str) -> Option<usize> {
    match name.to_ascii_lowercase().as_str() {
        "train" | "training" => Some(TRAIN),
        "validation" | "valid" | "val" | "dev" => Some(VALIDATION),
        "test" => Some(TEST),
        _ => None,
    }
}
