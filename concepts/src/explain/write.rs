//! An explanation as Parquet tables in one folder, for features (`features.parquet`,
//! `feature_examples.parquet`, `feature_labels.parquet`, `feature_directions.parquet`) or
//! neurons (`neurons.parquet`, `neuron_examples.parquet`, …). The unit column is named
//! `feature` or `neuron` accordingly.

use super::Explanations;
use crate::ConceptError;
use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Float32Array, Float64Array, StringArray, UInt32Array};
use glassbox_data::table::Columns;
use std::path::Path;
use std::sync::Arc;

/// `"feature"` or `"neuron"`.
pub fn write(dir: &Path, unit: &str, e: &Explanations) -> Result<(), ConceptError> {
    write_with_cells(dir, unit, e, None)
}

/// Image runs' examples: where each one's cell is and which image it is in.
pub struct CellColumns<'a> {
    pub grid: &'a glassbox_data::grid::CellGrid,
    /// Image path (the run's `text`) by example id.
    pub image_paths: &'a std::collections::HashMap<u64, String>,
    /// Stored image size `(width, height)` by example id, and the preprocessing: the receptive
    /// field in the file's own pixels too, where both are known.
    pub source_sizes: &'a std::collections::HashMap<u64, (u32, u32)>,
    pub preprocessor: Option<&'a glassbox_data::images::Preprocessor>,
}

/// [`write()`], with `cells`' columns on the examples table for image runs: `image_path`, `row`,
/// `col` (null for a class token), the receptive field `x0`, `y0`, `x1`, `y1` (inclusive,
/// model-input pixels) and the same in the image file's own pixels, `source_x0` … `source_y1`
/// (the centre crop and resize undone; null where the file's size is unknown).
pub fn write_with_cells(
    dir: &Path,
    unit: &str,
    e: &Explanations,
    cells: Option<&CellColumns<'_>>,
) -> Result<(), ConceptError> {
    std::fs::create_dir_all(dir)
        .map_err(|err| ConceptError::Invalid(format!("{}: {err}", dir.display())))?;
    let plural = format!("{unit}s");

    let mut c = Columns::default();
    let u = &e.units;
    c.small(unit, u, |s| s.unit as u32)
        .count("active_rows", u, |s| s.active_rows)
        .float("density", u, |s| s.density)
        .float("mean_activation", u, |s| s.mean_activation)
        .float("mean_when_active", u, |s| s.mean_when_active)
        .add(
            "max_activation",
            Arc::new(Float32Array::from_iter_values(
                u.iter().map(|s| s.max_activation),
            )),
        )
        .add(
            "top_tokens",
            strings_list(u.iter().map(|s| s.top_tokens.as_slice())),
        )
        .add(
            "top_label",
            opt_text(u.iter().map(|s| s.top_label.as_ref().map(|l| l.0.as_str()))),
        )
        .add(
            "top_class",
            opt_text(u.iter().map(|s| s.top_label.as_ref().map(|l| l.1.as_str()))),
        )
        .opt_float("top_label_correlation", u, |s| {
            s.top_label.as_ref().map(|l| l.2)
        })
        .opt_float("top_label_p_holm", u, |s| s.top_label_p_holm)
        .add(
            "best_direction",
            opt_text(
                u.iter()
                    .map(|s| s.best_direction.as_ref().map(|d| d.0.as_str())),
            ),
        )
        .opt_float("best_direction_cosine", u, |s| {
            s.best_direction.as_ref().map(|d| d.1)
        });
    c.write(&dir.join(format!("{plural}.parquet")))?;

    let x = &e.examples;
    let mut c = Columns::default();
    let mut acts = ListBuilder::new(Float32Builder::new());
    for ex in x {
        acts.values().append_slice(&ex.context_activations);
        acts.append(true);
    }
    c.small(unit, x, |r| r.unit)
        .text("kind", x, |r| r.kind)
        .small("rank", x, |r| r.rank)
        .add(
            "bin",
            Arc::new(UInt32Array::from_iter(x.iter().map(|r| r.bin))),
        )
        .add(
            "activation",
            Arc::new(Float32Array::from_iter_values(
                x.iter().map(|r| r.activation),
            )),
        )
        .count("example_id", x, |r| r.example_id)
        .small("position", x, |r| r.position)
        .text("token", x, |r| &r.token)
        .add(
            "context_tokens",
            strings_list(x.iter().map(|r| r.context_tokens.as_slice())),
        )
        .add("context_activations", Arc::new(acts.finish()) as ArrayRef)
        .small("center", x, |r| r.center);
    if let Some(cells) = cells {
        let cell = |r: &super::UnitExample| cells.grid.cell(r.position as usize);
        let rect = |r: &super::UnitExample| cells.grid.rect(r.position as usize);
        let opt = |f: &dyn Fn(&super::UnitExample) -> Option<u32>| -> ArrayRef {
            Arc::new(UInt32Array::from_iter(x.iter().map(f)))
        };
        c.add(
            "image_path",
            opt_text(
                x.iter()
                    .map(|r| cells.image_paths.get(&r.example_id).map(String::as_str)),
            ),
        )
        .add("row", opt(&|r| cell(r).map(|c| c.0 as u32)))
        .add("col", opt(&|r| cell(r).map(|c| c.1 as u32)))
        .add("x0", opt(&|r| rect(r).map(|b| b.x0 as u32)))
        .add("y0", opt(&|r| rect(r).map(|b| b.y0 as u32)))
        .add("x1", opt(&|r| rect(r).map(|b| b.x1 as u32)))
        .add("y1", opt(&|r| rect(r).map(|b| b.y1 as u32)));
        let source = |r: &super::UnitExample| {
            let size = cells.source_sizes.get(&r.example_id)?;
            Some(rect(r)?.to_source(cells.preprocessor?, *size))
        };
        c.add("source_x0", opt(&|r| source(r).map(|b| b.x0 as u32)))
            .add("source_y0", opt(&|r| source(r).map(|b| b.y0 as u32)))
            .add("source_x1", opt(&|r| source(r).map(|b| b.x1 as u32)))
            .add("source_y1", opt(&|r| source(r).map(|b| b.y1 as u32)));
    }
    c.write(&dir.join(format!("{unit}_examples.parquet")))?;

    let l = &e.labels;
    let mut c = Columns::default();
    c.small(unit, l, |r| r.unit)
        .text("label", l, |r| &r.label)
        .text("class", l, |r| &r.class)
        .float("correlation", l, |r| r.correlation)
        .count("effective_rows", l, |r| r.effective_rows)
        .float("p", l, |r| r.p)
        .float("p_holm", l, |r| r.p_holm)
        .float("mean_in_class", l, |r| r.mean_in_class)
        .count("rows_in_class", l, |r| r.rows_in_class);
    c.write(&dir.join(format!("{unit}_labels.parquet")))?;

    let d = &e.directions;
    let mut c = Columns::default();
    c.small(unit, d, |r| r.unit)
        .text("source", d, |r| &r.source)
        .text("name", d, |r| &r.name)
        .add(
            "cosine",
            Arc::new(Float64Array::from_iter_values(d.iter().map(|r| r.cosine))),
        );
    c.write(&dir.join(format!("{unit}_directions.parquet")))?;
    Ok(())
}

fn strings_list<'a>(rows: impl Iterator<Item = &'a [String]>) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for s in row {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn opt_text<'a>(rows: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(rows))
}
