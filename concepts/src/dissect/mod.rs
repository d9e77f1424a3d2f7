//! Network Dissection (Bau et al. 2017, "Network Dissection: Quantifying Interpretability of
//! Deep Visual Representations"): a unit is labelled with the concept whose segmentation masks
//! its strongest activations overlap best.
//!
//! For each unit (a channel of a hook's feature map, or a ViT patch-token dimension):
//! 1. its threshold `T` is the top-`quantile` level (0.5 %) of its values over every cell of
//!    every image ([`threshold`], streamed);
//! 2. per image, its cell map is upsampled to the model input over the cells' receptive-field
//!    centres and thresholded at `T` ([`upsample`]): the pixels where the unit is on;
//! 3. against each concept `c`: `IoU = Σ|A ∩ M_c| / Σ|A ∪ M_c|` over the data set;
//! 4. the permutation baseline ([`score`]): the same sums with the images' masks shuffled among
//!    the images (`permutations` seeded shuffles); a unit is labelled with its best concept when
//!    the IoU reaches `iou_threshold` (0.04 in the paper) **and** beats the baseline: z against
//!    the permuted IoUs, a one-sided normal p-value times the number of concepts (the best was
//!    chosen after looking), Benjamini–Hochberg across the hook's units at `alpha`.
//!
//! Activations are read twice from the store, one image at a time; memory is the per-unit
//! top-quantile heaps, the masks as bitmaps and one image's maps.

pub mod results;
pub mod score;
pub mod threshold;
pub mod upsample;

use crate::ConceptError;
use glassbox_data::grid::CellGrid;
use glassbox_data::masks::{Bitmap, MaskSet};
use glassbox_data::store::{ActivationBatch, PartStream};
use glassbox_data::{HookPoint, Progress};
use rayon::prelude::*;
use std::path::Path;

pub use results::{read_dissection, write_dissection};
pub use score::{ExampleRow, ScoreRow, UnitRow};

/// Settings of the `dissect` stage (CLI flags and the `[dissect]` section alike).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DissectOptions {
    /// Hook names or glob patterns; empty: every stored hook with a spatial layout.
    pub hooks: Vec<String>,
    /// An image manifest with `mask_<concept>` columns whose rows are the run's images; absent:
    /// the run's own data file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masks: Option<std::path::PathBuf>,
    /// Fraction of each unit's cell values above its threshold (0.005 in the paper).
    pub quantile: f64,
    /// IoU a label needs (0.04 in the paper).
    pub iou_threshold: f64,
    /// Shuffles of the image ↔ mask pairing for the baseline (at least 20).
    pub permutations: usize,
    /// False discovery rate of the labels within a hook.
    pub alpha: f64,
    pub seed: u64,
    /// Top-activating images kept per unit (for the report).
    pub top_examples: usize,
}

/// Fewer shuffles than this estimate the baseline's spread too poorly to test against.
pub const MIN_PERMUTATIONS: usize = 20;

impl Default for DissectOptions {
    fn default() -> Self {
        Self {
            hooks: Vec::new(),
            masks: None,
            quantile: 0.005,
            iou_threshold: 0.04,
            permutations: 100,
            alpha: 0.05,
            seed: 0,
            top_examples: 3,
        }
    }
}

impl DissectOptions {
    /// Range checks, each naming the setting and a valid value.
    pub fn validate(&self) -> Result<(), ConceptError> {
        let bad = |m: String| Err(ConceptError::Invalid(format!("dissect: {m}")));
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return bad(format!(
                "quantile = {}; it must be in (0, 1), e.g. 0.005 (the paper's top 0.5 %)",
                self.quantile
            ));
        }
        if !(0.0..=1.0).contains(&self.iou_threshold) {
            return bad(format!(
                "iou_threshold = {}; it must be in [0, 1], e.g. 0.04",
                self.iou_threshold
            ));
        }
        if self.permutations < MIN_PERMUTATIONS {
            return bad(format!(
                "permutations = {}; at least {MIN_PERMUTATIONS} shuffles are needed for the baseline",
                self.permutations
            ));
        }
        // Each shuffle keeps its own intersection and union counts per unit and concept.
        if let Err(m) = glassbox_data::limits::at_most(
            "permutations",
            self.permutations,
            glassbox_data::limits::MOST_RANDOM_RUNS,
            "each shuffle keeps its own overlap counts for every unit and concept; p-values settle within a few thousand",
        ) {
            return bad(m);
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad(format!(
                "alpha = {}; it must be in (0, 1), e.g. 0.05",
                self.alpha
            ));
        }
        Ok(())
    }
}

/// One hook's dissection.
#[derive(Debug, Clone)]
pub struct HookDissection {
    pub hook: HookPoint,
    pub grid: CellGrid,
    pub units: Vec<UnitRow>,
    pub scores: Vec<ScoreRow>,
    pub examples: Vec<ExampleRow>,
}

/// Units per hook the report shows with their images.
pub const SHOWN_PER_HOOK: usize = 3;

/// The units of a hook the report shows: the labelled ones of highest IoU, at most `n`.
pub fn shown_units(d: &HookDissection, n: usize) -> Vec<&UnitRow> {
    let mut labelled: Vec<&UnitRow> = d.units.iter().filter(|u| u.labelled).collect();
    labelled.sort_by(|a, b| b.iou.total_cmp(&a.iou).then(a.unit.cmp(&b.unit)));
    labelled.truncate(n);
    labelled
}

/// `dissection/inputs/example-<id>.png`: an image as the model saw it (resized and cropped).
pub fn input_png(dir: &Path, example_id: u64) -> std::path::PathBuf {
    dir.join("inputs").join(format!("example-{example_id}.png"))
}

/// `dissection/masks/example-<id>-<concept>.png`: its mask at the model's input size.
pub fn mask_png(dir: &Path, example_id: u64, concept: &str) -> std::path::PathBuf {
    dir.join("masks")
        .join(format!("example-{example_id}-{concept}.png"))
}

fn invalid(message: String) -> ConceptError {
    ConceptError::Invalid(message)
}

/// Calls `f(example_id, maps)` for each example of a hook folder, `maps` unit-major
/// (`units × cells`, the class token dropped), in store order.
fn for_each_example(
    stream: &mut PartStream,
    hook: HookPoint,
    grid: &CellGrid,
    mut f: impl FnMut(u64, &[f32]) -> Result<(), ConceptError>,
) -> Result<(), ConceptError> {
    stream.rewind();
    let cells = grid.cells();
    let offset = usize::from(grid.class_token);
    let mut current: Option<u64> = None;
    let mut seen_positions = 0usize;
    let mut maps: Vec<f32> = Vec::new();
    let mut done = std::collections::HashSet::new();
    let mut flush = |id: u64, seen: usize, maps: &[f32]| -> Result<(), ConceptError> {
        if seen != grid.positions() {
            return Err(invalid(format!(
                "hook `{hook}`: example {id} has {seen} positions in the store, but the model's grid has {} ({}×{} cells{}); re-extract the run",
                grid.positions(),
                grid.rows.cells,
                grid.cols.cells,
                if grid.class_token { " and a class token" } else { "" }
            )));
        }
        if !done.insert(id) {
            return Err(invalid(format!(
                "hook `{hook}`: example {id}'s rows are not contiguous in the store; re-extract the run"
            )));
        }
        f(id, maps)
    };
    while let Some(ActivationBatch {
        example_ids,
        positions,
        width,
        values,
    }) = stream.next_batch()?
    {
        let positions = positions.ok_or_else(|| {
            invalid(format!(
                "hook `{hook}` was stored pooled (one row per image); dissection needs its per-cell rows: extract without pooling"
            ))
        })?;
        if maps.len() != width * cells {
            maps = vec![0.0; width * cells];
        }
        for (row, (&id, &pos)) in example_ids.iter().zip(&positions).enumerate() {
            if current != Some(id) {
                if let Some(prev) = current {
                    flush(prev, seen_positions, &maps)?;
                }
                current = Some(id);
                seen_positions = 0;
            }
            seen_positions += 1;
            let Some(cell) = (pos as usize).checked_sub(offset).filter(|&c| c < cells) else {
                continue;
            };
            for (u, &v) in values[row * width..(row + 1) * width].iter().enumerate() {
                maps[u * cells + cell] = v;
            }
        }
    }
    if let Some(prev) = current {
        flush(prev, seen_positions, &maps)?;
    }
    Ok(())
}

/// Dissects one hook stored under `dir` against `masks` (one row of masks per example id).
pub fn dissect_hook(
    dir: &Path,
    hook: HookPoint,
    grid: &CellGrid,
    masks: &MaskSet,
    opts: &DissectOptions,
    progress: &dyn Progress,
) -> Result<HookDissection, ConceptError> {
    if grid.image() != (masks.height, masks.width) {
        return Err(invalid(format!(
            "hook `{hook}` maps onto a {}×{} model input, but the masks are {}×{} after preprocessing; the run's preprocessor and the model's input size disagree",
            grid.image().1,
            grid.image().0,
            masks.width,
            masks.height
        )));
    }
    if grid.cells() < 2 {
        return Err(invalid(format!(
            "hook `{hook}` has a single position per image: there is no map to dissect; choose a spatial hook (a feature map or patch tokens)"
        )));
    }
    let n = masks.masks.len();
    let mut stream = PartStream::open(dir)?;
    let mut units = 0;
    let mut thresholds = None;
    let mut top = score::TopExamples::new(opts.top_examples);
    progress.start(&format!("dissect {hook}: thresholds"), n as u64);
    let mut count = 0usize;
    for_each_example(&mut stream, hook, grid, |id, maps| {
        if id as usize >= n {
            return Err(invalid(format!(
                "hook `{hook}`: example {id} has no row in the data set's masks ({n} rows); the data file changed since extraction"
            )));
        }
        let cells = grid.cells();
        units = maps.len() / cells;
        let t = thresholds
            .get_or_insert_with(|| threshold::TopQuantile::new(units, n * cells, opts.quantile));
        let mut row = vec![0.0; units];
        for cell in 0..cells {
            for (u, r) in row.iter_mut().enumerate() {
                *r = maps[u * cells + cell];
            }
            t.push_row(&row);
        }
        top.offer(id, maps, cells);
        count += 1;
        progress.advance(1);
        Ok(())
    })?;
    progress.finish();
    if count != n {
        return Err(invalid(format!(
            "hook `{hook}` holds {count} images but the data set has {n}; the run and its data file disagree — re-extract"
        )));
    }
    let thresholds = thresholds.expect("a non-empty run").thresholds();
    let perms = score::permutations(n, opts.permutations, opts.seed);
    let concepts = masks.concepts.len();
    let mut acc = vec![score::UnitCounts::new(opts.permutations + 1, concepts); units];
    progress.start(&format!("dissect {hook}: overlaps"), n as u64);
    for_each_example(&mut stream, hook, grid, |id, maps| {
        let i = id as usize;
        let cells = grid.cells();
        acc.par_iter_mut().enumerate().for_each_init(
            || Bitmap::new(masks.height, masks.width),
            |bitmap, (u, counts)| {
                let map = &maps[u * cells..(u + 1) * cells];
                let Some(rows) = upsample::active_pixels(grid, map, thresholds[u], bitmap) else {
                    return;
                };
                counts.add(bitmap, rows.clone(), i, &perms, masks);
                let words = bitmap.words_per_row;
                bitmap.bits[rows.start * words..rows.end * words].fill(0);
            },
        );
        progress.advance(1);
        Ok(())
    })?;
    progress.finish();
    let pixels = (n * masks.height * masks.width) as f64;
    let (units, scores) = score::finish(hook, &acc, &thresholds, masks, pixels, opts);
    Ok(HookDissection {
        hook,
        grid: *grid,
        units,
        scores,
        examples: top.rows(hook),
    })
}
