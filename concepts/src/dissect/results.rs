//! `dissection/`: `hooks.parquet` (one row per hook: its grid — cells, stride, first centre,
//! field per axis — and how many units were labelled), `units.parquet`, `scores.parquet` and
//! `examples.parquet` (top images with the unit's cell map), read back by the report.

use super::{ExampleRow, HookDissection, ScoreRow, UnitRow};
use crate::ConceptError;
use arrow_array::builder::{Float32Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, UInt32Type, UInt64Type};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use glassbox_data::grid::{Axis, CellGrid};
use glassbox_data::table::{self, parse_hook, Columns};
use glassbox_data::{DataError, RunDir};
use std::path::Path;
use std::sync::Arc;

const FILES: [&str; 4] = [
    "hooks.parquet",
    "units.parquet",
    "scores.parquet",
    "examples.parquet",
];

/// Writes every hook's tables under `run`'s `dissection/`.
pub fn write_dissection(run: &RunDir, hooks: &[HookDissection]) -> Result<(), ConceptError> {
    let dir = run.dissection_dir();
    std::fs::create_dir_all(&dir).map_err(DataError::io(&dir))?;
    let mut c = Columns::default();
    c.hooks("hook", hooks, |h| h.hook)
        .small("units", hooks, |h| h.units.len() as u32)
        .small("labelled", hooks, |h| {
            h.units.iter().filter(|u| u.labelled).count() as u32
        })
        .small("image_height", hooks, |h| h.grid.rows.pixels as u32)
        .small("image_width", hooks, |h| h.grid.cols.pixels as u32)
        .add(
            "class_token",
            Arc::new(BooleanArray::from_iter(
                hooks.iter().map(|h| Some(h.grid.class_token)),
            )),
        );
    let by_row: fn(&CellGrid) -> Axis = |g| g.rows;
    let by_col: fn(&CellGrid) -> Axis = |g| g.cols;
    for (name, axis) in [("row", by_row), ("col", by_col)] {
        c.small(&format!("{name}_cells"), hooks, |h| {
            axis(&h.grid).cells as u32
        })
        .float(&format!("{name}_stride"), hooks, |h| axis(&h.grid).stride)
        .float(&format!("{name}_start"), hooks, |h| axis(&h.grid).start)
        .float(&format!("{name}_field"), hooks, |h| axis(&h.grid).field);
    }
    c.write(&dir.join(FILES[0]))?;

    let units: Vec<&UnitRow> = hooks.iter().flat_map(|h| &h.units).collect();
    let mut c = Columns::default();
    c.hooks("hook", &units, |u| u.hook)
        .small("unit", &units, |u| u.unit)
        .float("threshold", &units, |u| u.threshold as f64)
        .float("active_fraction", &units, |u| u.active_fraction)
        .text("concept", &units, |u| &u.concept)
        .float("iou", &units, |u| u.iou)
        .float("baseline_mean", &units, |u| u.baseline_mean)
        .float("baseline_sd", &units, |u| u.baseline_sd)
        .float("z", &units, |u| u.z)
        .float("p_value", &units, |u| u.p_value)
        .float("q_value", &units, |u| u.q_value)
        .add(
            "labelled",
            Arc::new(BooleanArray::from_iter(
                units.iter().map(|u| Some(u.labelled)),
            )),
        )
        .text("runner_up", &units, |u| &u.runner_up)
        .float("runner_up_iou", &units, |u| u.runner_up_iou);
    c.write(&dir.join(FILES[1]))?;

    let scores: Vec<&ScoreRow> = hooks.iter().flat_map(|h| &h.scores).collect();
    let mut c = Columns::default();
    c.hooks("hook", &scores, |s| s.hook)
        .small("unit", &scores, |s| s.unit)
        .text("concept", &scores, |s| &s.concept)
        .float("iou", &scores, |s| s.iou)
        .count("intersection", &scores, |s| s.intersection)
        .count("activation_pixels", &scores, |s| s.activation_pixels)
        .count("mask_pixels", &scores, |s| s.mask_pixels);
    c.write(&dir.join(FILES[2]))?;

    let examples: Vec<&ExampleRow> = hooks.iter().flat_map(|h| &h.examples).collect();
    let mut maps = ListBuilder::new(Float32Builder::new());
    for e in &examples {
        maps.values().append_slice(&e.map);
        maps.append(true);
    }
    let mut c = Columns::default();
    c.hooks("hook", &examples, |e| e.hook)
        .small("unit", &examples, |e| e.unit)
        .small("rank", &examples, |e| e.rank)
        .count("example_id", &examples, |e| e.example_id)
        .float("max_activation", &examples, |e| e.max_activation as f64)
        .add("map", Arc::new(maps.finish()) as ArrayRef);
    c.write(&dir.join(FILES[3]))?;
    Ok(())
}

fn column<'a>(
    path: &Path,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a ArrayRef, ConceptError> {
    batch.column_by_name(name).ok_or_else(|| {
        ConceptError::Data(DataError::Store {
            path: path.to_path_buf(),
            message: format!("column `{name}` is missing; re-run `glassbox dissect`"),
        })
    })
}

fn f64s(path: &Path, b: &RecordBatch, name: &str) -> Result<Vec<f64>, ConceptError> {
    Ok(column(path, b, name)?
        .as_primitive::<Float64Type>()
        .values()
        .to_vec())
}
fn u32s(path: &Path, b: &RecordBatch, name: &str) -> Result<Vec<u32>, ConceptError> {
    Ok(column(path, b, name)?
        .as_primitive::<UInt32Type>()
        .values()
        .to_vec())
}
fn u64s(path: &Path, b: &RecordBatch, name: &str) -> Result<Vec<u64>, ConceptError> {
    Ok(column(path, b, name)?
        .as_primitive::<UInt64Type>()
        .values()
        .to_vec())
}
fn strs(path: &Path, b: &RecordBatch, name: &str) -> Result<Vec<String>, ConceptError> {
    Ok(column(path, b, name)?
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap_or("").to_owned())
        .collect())
}
fn bools(path: &Path, b: &RecordBatch, name: &str) -> Result<Vec<bool>, ConceptError> {
    Ok(column(path, b, name)?
        .as_boolean()
        .iter()
        .map(|v| v.unwrap_or(false))
        .collect())
}
fn hooks(path: &Path, b: &RecordBatch) -> Result<Vec<glassbox_data::HookPoint>, ConceptError> {
    strs(path, b, "hook")?
        .iter()
        .enumerate()
        .map(|(i, h)| Ok(parse_hook(path, i + 1, h)?))
        .collect()
}

/// Reads `dissection/` back, hook by hook in the order written; `None` when the run has none.
pub fn read_dissection(run: &RunDir) -> Result<Option<Vec<HookDissection>>, ConceptError> {
    let dir = run.dissection_dir();
    if !dir.join(FILES[0]).is_file() {
        return Ok(None);
    }
    let mut out: Vec<HookDissection> = Vec::new();
    let path = dir.join(FILES[0]);
    for b in table::read_table(&path)? {
        let hook = hooks(&path, &b)?;
        let (h, w) = (
            u32s(&path, &b, "image_height")?,
            u32s(&path, &b, "image_width")?,
        );
        let class_token = bools(&path, &b, "class_token")?;
        let axis = |name: &str, pixels: &[u32]| -> Result<Vec<Axis>, ConceptError> {
            let cells = u32s(&path, &b, &format!("{name}_cells"))?;
            let stride = f64s(&path, &b, &format!("{name}_stride"))?;
            let start = f64s(&path, &b, &format!("{name}_start"))?;
            let field = f64s(&path, &b, &format!("{name}_field"))?;
            Ok((0..cells.len())
                .map(|i| Axis {
                    cells: cells[i] as usize,
                    stride: stride[i],
                    start: start[i],
                    field: field[i],
                    pixels: pixels[i] as usize,
                })
                .collect())
        };
        let (rows, cols) = (axis("row", &h)?, axis("col", &w)?);
        for i in 0..hook.len() {
            out.push(HookDissection {
                hook: hook[i],
                grid: CellGrid {
                    rows: rows[i],
                    cols: cols[i],
                    class_token: class_token[i],
                },
                units: Vec::new(),
                scores: Vec::new(),
                examples: Vec::new(),
            });
        }
    }
    let find = |out: &mut Vec<HookDissection>, hook| -> Option<usize> {
        out.iter().position(|d| d.hook == hook)
    };
    let path = dir.join(FILES[1]);
    for b in table::read_table(&path)? {
        let (hook, unit) = (hooks(&path, &b)?, u32s(&path, &b, "unit")?);
        let threshold = f64s(&path, &b, "threshold")?;
        let active = f64s(&path, &b, "active_fraction")?;
        let concept = strs(&path, &b, "concept")?;
        let iou = f64s(&path, &b, "iou")?;
        let (mean, sd, z) = (
            f64s(&path, &b, "baseline_mean")?,
            f64s(&path, &b, "baseline_sd")?,
            f64s(&path, &b, "z")?,
        );
        let (p, q) = (f64s(&path, &b, "p_value")?, f64s(&path, &b, "q_value")?);
        let labelled = bools(&path, &b, "labelled")?;
        let (runner, runner_iou) = (
            strs(&path, &b, "runner_up")?,
            f64s(&path, &b, "runner_up_iou")?,
        );
        for i in 0..hook.len() {
            let Some(at) = find(&mut out, hook[i]) else {
                continue;
            };
            out[at].units.push(UnitRow {
                hook: hook[i],
                unit: unit[i],
                threshold: threshold[i] as f32,
                active_fraction: active[i],
                concept: concept[i].clone(),
                iou: iou[i],
                baseline_mean: mean[i],
                baseline_sd: sd[i],
                z: z[i],
                p_value: p[i],
                q_value: q[i],
                labelled: labelled[i],
                runner_up: runner[i].clone(),
                runner_up_iou: runner_iou[i],
            });
        }
    }
    let path = dir.join(FILES[3]);
    for b in table::read_table(&path)? {
        let (hook, unit, rank) = (
            hooks(&path, &b)?,
            u32s(&path, &b, "unit")?,
            u32s(&path, &b, "rank")?,
        );
        let ids = u64s(&path, &b, "example_id")?;
        let max = f64s(&path, &b, "max_activation")?;
        let maps = column(&path, &b, "map")?.as_list::<i32>();
        for i in 0..hook.len() {
            let Some(at) = find(&mut out, hook[i]) else {
                continue;
            };
            let map = maps.value(i);
            out[at].examples.push(ExampleRow {
                hook: hook[i],
                unit: unit[i],
                rank: rank[i],
                example_id: ids[i],
                max_activation: max[i] as f32,
                map: map.as_primitive::<Float32Type>().values().to_vec(),
            });
        }
    }
    Ok(Some(out))
}
