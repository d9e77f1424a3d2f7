//! Reading explanation tables back (for the report, and as the reference reader of the layout
//! `write.rs` produces).

use super::{DirectionCosine, LabelCorrelation, UnitExample};
use crate::ConceptError;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use glassbox_data::table;
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

/// One row of `features.parquet` / `neurons.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitRow {
    pub unit: u32,
    pub active_rows: u64,
    pub density: f64,
    pub mean_activation: f64,
    pub mean_when_active: f64,
    pub max_activation: f32,
    pub top_tokens: Vec<String>,
    pub top_label: Option<String>,
    pub top_class: Option<String>,
    pub top_label_correlation: Option<f64>,
    /// That correlation's Holm-adjusted p-value; `None` in tables written before it was kept.
    pub top_label_p_holm: Option<f64>,
    pub best_direction: Option<String>,
    pub best_direction_cosine: Option<f64>,
}

/// The SAE folders (`dictionary/hook=<hook>/` holding `sae/cfg.json`) an export writes: those of
/// `hooks`, or every one when `hooks` is empty. A hook without an SAE, or a run with none, is
/// an error that lists the SAEs there are.
pub fn sae_folders(
    run: &glassbox_data::RunDir,
    hooks: &[glassbox_data::HookPoint],
) -> Result<Vec<(glassbox_data::HookPoint, std::path::PathBuf)>, ConceptError> {
    let found: Vec<_> = dictionary_hooks(run)?
        .into_iter()
        .filter(|(_, dir)| dir.join("sae/cfg.json").is_file())
        .collect();
    let chosen: Vec<_> = if hooks.is_empty() {
        found.clone()
    } else {
        hooks
            .iter()
            .map(|h| {
                found.iter().find(|(f, _)| f == h).cloned().ok_or_else(|| {
                    let have: Vec<String> = found.iter().map(|(f, _)| f.to_string()).collect();
                    ConceptError::Invalid(format!(
                        "{}: no SAE at `{h}` (SAEs: {}); run `glassbox dictionary --hook {h}` first",
                        run.name(),
                        if have.is_empty() { "none".into() } else { have.join(", ") }
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    if chosen.is_empty() {
        return Err(ConceptError::Invalid(format!(
            "{}: the run has no trained or loaded SAE to export; run `glassbox dictionary` first",
            run.name()
        )));
    }
    Ok(chosen)
}

/// The run's `dictionary/hook=<hook>/` folders, in name order, with their hooks; an error names
/// a folder whose name is not a hook.
pub fn dictionary_hooks(
    run: &glassbox_data::RunDir,
) -> Result<Vec<(glassbox_data::HookPoint, std::path::PathBuf)>, ConceptError> {
    let mut dirs: Vec<std::path::PathBuf> = match std::fs::read_dir(run.dictionary_root()) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => return Ok(Vec::new()),
    };
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        let Some(name) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("hook="))
        else {
            continue;
        };
        let hook = name.parse().map_err(|e| {
            ConceptError::Invalid(format!(
                "{}: not a hook folder ({e}); remove it or re-run the dictionary stage",
                dir.display()
            ))
        })?;
        out.push((hook, dir));
    }
    Ok(out)
}

/// Every `dictionary/transcoder=*/` folder of the run, with the hook its transcoder predicts.
pub fn transcoder_folders(
    run: &glassbox_data::RunDir,
) -> Result<Vec<(glassbox_data::HookPoint, std::path::PathBuf)>, ConceptError> {
    let Ok(entries) = std::fs::read_dir(run.dictionary_root()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for dir in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(hook) = name.strip_prefix("transcoder=") else {
            continue;
        };
        let hook = hook.parse().map_err(|e| {
            ConceptError::Invalid(format!(
                "{}: not a transcoder folder ({e}); remove it or re-run the dictionary stage",
                dir.display()
            ))
        })?;
        out.push((hook, dir));
    }
    out.sort();
    Ok(out)
}

/// The label correlation from which a unit counts as a finding (the report lists it, the
/// causal stage tests it).
pub const FINDING_CORRELATION: f64 = 0.3;

/// The Holm-adjusted p-value below which that correlation counts as more than chance.
pub const FINDING_ALPHA: f64 = 0.05;

/// Whether a unit is a finding: active, its strongest label correlation at least
/// [`FINDING_CORRELATION`], and significant after Holm's correction over every unit × class of
/// its table (tables from before p-values were kept: the correlation alone).
pub fn is_finding(r: &UnitRow) -> bool {
    r.active_rows > 0
        && r.top_label_correlation
            .is_some_and(|c| c >= FINDING_CORRELATION)
        && r.top_label_p_holm.is_none_or(|p| p < FINDING_ALPHA)
}

/// The units that are findings ([`is_finding`]), the `n` most correlated (ties: the densest).
pub fn finding_units(rows: &[UnitRow], n: usize) -> Vec<&UnitRow> {
    let mut found: Vec<&UnitRow> = rows.iter().filter(|r| is_finding(r)).collect();
    found.sort_by(|a, b| {
        let key = |r: &UnitRow| r.top_label_correlation.unwrap_or(0.0);
        key(b)
            .total_cmp(&key(a))
            .then(b.density.total_cmp(&a.density))
    });
    found.truncate(n);
    found
}

fn column(path: &Path, batch: &RecordBatch, name: &str) -> Result<ArrayRef, ConceptError> {
    batch.column_by_name(name).cloned().ok_or_else(|| {
        ConceptError::Invalid(format!(
            "{}: no column `{name}`; re-run `glassbox dictionary --force`",
            path.display()
        ))
    })
}

fn strings(a: &ArrayRef, r: usize) -> Vec<String> {
    let list = a.as_list::<i32>().value(r);
    let s = list.as_string::<i32>();
    (0..s.len()).map(|i| s.value(i).to_owned()).collect()
}

fn opt_string(a: &ArrayRef, r: usize) -> Option<String> {
    let s = a.as_string::<i32>();
    (!s.is_null(r)).then(|| s.value(r).to_owned())
}

fn opt_f64(a: &ArrayRef, r: usize) -> Option<f64> {
    let f = a.as_primitive::<Float64Type>();
    (!f.is_null(r)).then(|| f.value(r))
}

/// Reads `<dir>/<unit>s.parquet` (`unit` = `"feature"` or `"neuron"`).
pub fn read_units(dir: &Path, unit: &str) -> Result<Vec<UnitRow>, ConceptError> {
    let path = dir.join(format!("{unit}s.parquet"));
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        let c = |name: &str| column(&path, &batch, name);
        let (id, active, density, mean, mean_active, max) = (
            c(unit)?,
            c("active_rows")?,
            c("density")?,
            c("mean_activation")?,
            c("mean_when_active")?,
            c("max_activation")?,
        );
        // Added later than the rest: absent from older tables.
        let p_holm = batch.column_by_name("top_label_p_holm").cloned();
        let (tokens, label, class, corr, dir_name, dir_cos) = (
            c("top_tokens")?,
            c("top_label")?,
            c("top_class")?,
            c("top_label_correlation")?,
            c("best_direction")?,
            c("best_direction_cosine")?,
        );
        for r in 0..batch.num_rows() {
            out.push(UnitRow {
                unit: id.as_primitive::<UInt32Type>().value(r),
                active_rows: active.as_primitive::<UInt64Type>().value(r),
                density: density.as_primitive::<Float64Type>().value(r),
                mean_activation: mean.as_primitive::<Float64Type>().value(r),
                mean_when_active: mean_active.as_primitive::<Float64Type>().value(r),
                max_activation: max.as_primitive::<Float32Type>().value(r),
                top_tokens: strings(&tokens, r),
                top_label: opt_string(&label, r),
                top_class: opt_string(&class, r),
                top_label_correlation: opt_f64(&corr, r),
                top_label_p_holm: p_holm.as_ref().and_then(|a| opt_f64(a, r)),
                best_direction: opt_string(&dir_name, r),
                best_direction_cosine: opt_f64(&dir_cos, r),
            });
        }
    }
    Ok(out)
}

/// Reads the top examples (rank < `max_rank`) of the given units from
/// `<dir>/<unit>_examples.parquet`.
pub fn read_top_examples(
    dir: &Path,
    unit: &str,
    units: &HashSet<u32>,
    max_rank: u32,
) -> Result<Vec<UnitExample>, ConceptError> {
    read_examples(dir, unit, |u, kind, rank| {
        units.contains(&u) && kind == "top" && rank < max_rank
    })
}

/// Reads the examples for which `keep(unit, kind, rank)` holds, in file order.
pub fn read_examples(
    dir: &Path,
    unit: &str,
    keep: impl Fn(u32, &str, u32) -> bool,
) -> Result<Vec<UnitExample>, ConceptError> {
    let path = dir.join(format!("{unit}_examples.parquet"));
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        let c = |name: &str| column(&path, &batch, name);
        let (id, kind, rank, bin, act, example, position, token, ctx, ctx_act, center) = (
            c(unit)?,
            c("kind")?,
            c("rank")?,
            c("bin")?,
            c("activation")?,
            c("example_id")?,
            c("position")?,
            c("token")?,
            c("context_tokens")?,
            c("context_activations")?,
            c("center")?,
        );
        let ids = id.as_primitive::<UInt32Type>();
        for r in 0..batch.num_rows() {
            let u = ids.value(r);
            let rk = rank.as_primitive::<UInt32Type>().value(r);
            let k = kind.as_string::<i32>().value(r);
            if !keep(u, k, rk) {
                continue;
            }
            let acts = ctx_act.as_list::<i32>().value(r);
            let bins = bin.as_primitive::<UInt32Type>();
            out.push(UnitExample {
                unit: u,
                kind: if k == "top" { "top" } else { "quantile" },
                rank: rk,
                bin: (!bins.is_null(r)).then(|| bins.value(r)),
                activation: act.as_primitive::<Float32Type>().value(r),
                example_id: example.as_primitive::<UInt64Type>().value(r),
                position: position.as_primitive::<UInt32Type>().value(r),
                token: token.as_string::<i32>().value(r).to_owned(),
                context_tokens: strings(&ctx, r),
                context_activations: acts.as_primitive::<Float32Type>().values().to_vec(),
                center: center.as_primitive::<UInt32Type>().value(r),
            });
        }
    }
    Ok(out)
}

/// Reads `<dir>/<unit>_labels.parquet`.
pub fn read_labels(dir: &Path, unit: &str) -> Result<Vec<LabelCorrelation>, ConceptError> {
    let path = dir.join(format!("{unit}_labels.parquet"));
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        let c = |name: &str| column(&path, &batch, name);
        let (id, label, class, corr, mean, rows) = (
            c(unit)?,
            c("label")?,
            c("class")?,
            c("correlation")?,
            c("mean_in_class")?,
            c("rows_in_class")?,
        );
        // Added later than the rest: absent from older tables (read as unknown).
        let later = |name: &str| batch.column_by_name(name).cloned();
        let (effective, p, p_holm) = (later("effective_rows"), later("p"), later("p_holm"));
        let float_or_nan = |a: &Option<ArrayRef>, r: usize| {
            a.as_ref()
                .map_or(f64::NAN, |a| a.as_primitive::<Float64Type>().value(r))
        };
        for r in 0..batch.num_rows() {
            out.push(LabelCorrelation {
                unit: id.as_primitive::<UInt32Type>().value(r),
                label: label.as_string::<i32>().value(r).to_owned(),
                class: class.as_string::<i32>().value(r).to_owned(),
                correlation: corr.as_primitive::<Float64Type>().value(r),
                effective_rows: effective
                    .as_ref()
                    .map_or(0, |a| a.as_primitive::<UInt64Type>().value(r)),
                p: float_or_nan(&p, r),
                p_holm: float_or_nan(&p_holm, r),
                mean_in_class: mean.as_primitive::<Float64Type>().value(r),
                rows_in_class: rows.as_primitive::<UInt64Type>().value(r),
            });
        }
    }
    Ok(out)
}

/// Reads `<dir>/<unit>_directions.parquet`.
pub fn read_directions(dir: &Path, unit: &str) -> Result<Vec<DirectionCosine>, ConceptError> {
    let path = dir.join(format!("{unit}_directions.parquet"));
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        let c = |name: &str| column(&path, &batch, name);
        let (id, source, name, cos) = (c(unit)?, c("source")?, c("name")?, c("cosine")?);
        for r in 0..batch.num_rows() {
            out.push(DirectionCosine {
                unit: id.as_primitive::<UInt32Type>().value(r),
                source: source.as_string::<i32>().value(r).to_owned(),
                name: name.as_string::<i32>().value(r).to_owned(),
                cosine: cos.as_primitive::<Float64Type>().value(r),
            });
        }
    }
    Ok(out)
}
