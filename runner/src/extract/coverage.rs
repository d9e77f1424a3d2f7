//! The coverage check of an extraction written by several shard workers: before the last one
//! commits the run, every example must be in every stored folder exactly once.
//!
//! It reads footers only (row counts and the `example_id` chunk statistics the writer keeps),
//! so it costs milliseconds per part however large the run. Part `k` holds examples
//! `k·shard_size ..` in order, written whole by one process, so "ids span exactly the part's
//! range, and the row count is the part's" rules out a missing, duplicated or foreign row.

use super::ExtractOptions;
use glassbox_data::run::{list_parts, part_name};
use glassbox_data::store::read_part_extent;
use glassbox_data::RunDir;
use glassbox_models::{ModelError, Result};
use std::path::Path;

/// What the check expects: examples in the data set, and `units[k]` the units (tokens or
/// images) the marker of part `k` recorded.
pub struct Expected<'a> {
    /// Examples in the data set.
    pub n_examples: usize,
    /// Per part, the units its completion marker recorded (tokens for texts).
    pub units: &'a [u64],
    /// Whether the examples are texts (one token-level row per token) or images (one row per
    /// cell, a count that depends on the hook).
    pub texts: bool,
}

/// Checks every part of every hook (and pool) folder of the staged extraction `run`.
pub fn check_coverage(run: &RunDir, opts: &ExtractOptions, expected: &Expected<'_>) -> Result<()> {
    let n_parts = expected.n_examples.div_ceil(opts.shard_size);
    if expected.units.len() != n_parts {
        return Err(invalid(format!(
            "coverage: {} part markers for {n_parts} parts",
            expected.units.len()
        )));
    }
    for &hook in &opts.hooks {
        if opts.token_level {
            let rows = if expected.texts {
                Rows::PerPart(expected.units)
            } else {
                Rows::WholePerExample
            };
            check_folder(&run.activations_dir(hook), opts, expected, rows)?;
        }
        for &pool in &opts.pools {
            check_folder(
                &run.pooled_dir(hook, pool),
                opts,
                expected,
                Rows::OnePerExample,
            )?;
        }
    }
    for (what, path) in [("examples", run.examples()), ("tokens", run.tokens())] {
        if (what == "examples" || expected.texts) && !path.is_file() {
            return Err(invalid(format!(
                "coverage: {} is missing; it is written by shard 0: run `glassbox extract … --shard 0/N` again",
                path.display()
            )));
        }
    }
    Ok(())
}

/// How many rows a folder's parts hold.
enum Rows<'a> {
    /// Exactly these per part (token-level text rows: the part's tokens).
    PerPart(&'a [u64]),
    /// One per example (pooled rows).
    OnePerExample,
    /// The same positive number per example (image maps: cells at that hook's resolution).
    WholePerExample,
}

/// One folder: parts `0..n` and nothing else, each with its examples' ids and rows.
fn check_folder(
    dir: &Path,
    opts: &ExtractOptions,
    expected: &Expected<'_>,
    rows: Rows<'_>,
) -> Result<()> {
    let n = expected.n_examples;
    let n_parts = n.div_ceil(opts.shard_size);
    let parts = list_parts(dir)?;
    let names: Vec<String> = parts
        .iter()
        .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .collect();
    let wanted: Vec<String> = (0..n_parts).map(part_name).collect();
    if names != wanted {
        let missing: Vec<&String> = wanted.iter().filter(|w| !names.contains(w)).collect();
        let extra: Vec<&String> = names.iter().filter(|w| !wanted.contains(w)).collect();
        return Err(invalid(format!(
            "coverage: {} has {} parts, expected {n_parts} (missing {:?}, unexpected {:?}); re-run the shards that own the missing parts (part k belongs to shard k mod N)",
            dir.display(),
            names.len(),
            missing,
            extra
        )));
    }
    for (k, path) in parts.iter().enumerate() {
        let first = k * opts.shard_size;
        let examples = ((k + 1) * opts.shard_size).min(n) - first;
        let extent = read_part_extent(path)?;
        let ids_ok = extent.ids == Some((first as u64, (first + examples - 1) as u64));
        let rows_ok = match rows {
            Rows::PerPart(rows) => extent.rows == rows[k],
            Rows::OnePerExample => extent.rows == examples as u64,
            Rows::WholePerExample => extent.rows > 0 && extent.rows % examples as u64 == 0,
        };
        if !ids_ok || !rows_ok {
            return Err(invalid(format!(
                "coverage: {} holds {} rows with example ids {:?}, expected examples {first}..={} ; remove it and the marker of part {k}, then re-run the shard that owns it",
                path.display(),
                extent.rows,
                extent.ids,
                first + examples - 1
            )));
        }
    }
    Ok(())
}

fn invalid(message: String) -> ModelError {
    ModelError::Invalid(message)
}
