//! The Network Dissection section: per hook (in depth order) how many units were labelled and
//! by which concepts, and for the best labelled units their top images — the image as the model
//! saw it, dimmed where the unit is off (its upsampled map below the unit's threshold), with the
//! concept's mask outlined — embedded as small JPEGs so the bundle stays self-contained.

use crate::markup::{escape, inline};
use crate::ReportError;
use glassbox_concepts::dissect::{
    input_png, mask_png, read_dissection, shown_units, upsample::is_on, ExampleRow, UnitRow,
    SHOWN_PER_HOOK,
};
use glassbox_data::grid::CellGrid;
use glassbox_data::RunDir;
use image::{GrayImage, Rgb, RgbImage};
use serde::Serialize;
use std::path::Path;

/// The mask's outline colour.
const OUTLINE: Rgb<u8> = Rgb([0, 229, 255]);

/// Labelled units of one concept at a hook.
#[derive(Debug, Clone, Serialize)]
pub struct ConceptCount {
    pub concept: String,
    pub units: usize,
}

/// One hook's labels.
#[derive(Debug, Clone, Serialize)]
pub struct HookLabels {
    pub hook: String,
    pub units: usize,
    pub labelled: usize,
    pub concepts: Vec<ConceptCount>,
}

/// A labelled unit shown with its images.
#[derive(Debug, Clone, Serialize)]
pub struct ShownUnit {
    pub hook: String,
    pub unit: u32,
    pub concept: String,
    pub iou: f64,
    pub baseline_mean: f64,
    pub q_value: f64,
    /// Base64 JPEGs (not in `summary.json`).
    #[serde(skip)]
    pub thumbnails: Vec<String>,
}

/// The dissect stage's results for the report (absent without the stage).
#[derive(Debug, Clone, Serialize)]
pub struct DissectionSummary {
    pub hooks: Vec<HookLabels>,
    pub shown: Vec<ShownUnit>,
}

/// Reads `dissection/` and draws the shown units' thumbnails.
pub fn summarise(run: &RunDir) -> Result<Option<DissectionSummary>, ReportError> {
    let Some(mut hooks) = read_dissection(run)? else {
        return Ok(None);
    };
    hooks.sort_by(|a, b| a.hook.depth().total_cmp(&b.hook.depth()));
    let dir = run.dissection_dir();
    let mut labels = Vec::new();
    let mut shown = Vec::new();
    for d in &hooks {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for u in d.units.iter().filter(|u| u.labelled) {
            *counts.entry(&u.concept).or_default() += 1;
        }
        let mut concepts: Vec<ConceptCount> = counts
            .into_iter()
            .map(|(c, n)| ConceptCount {
                concept: c.to_owned(),
                units: n,
            })
            .collect();
        concepts.sort_by(|a, b| b.units.cmp(&a.units).then(a.concept.cmp(&b.concept)));
        labels.push(HookLabels {
            hook: d.hook.to_string(),
            units: d.units.len(),
            labelled: concepts.iter().map(|c| c.units).sum(),
            concepts,
        });
        for u in shown_units(d, SHOWN_PER_HOOK) {
            let examples: Vec<&ExampleRow> =
                d.examples.iter().filter(|e| e.unit == u.unit).collect();
            shown.push(ShownUnit {
                hook: d.hook.to_string(),
                unit: u.unit,
                concept: u.concept.clone(),
                iou: u.iou,
                baseline_mean: u.baseline_mean,
                q_value: u.q_value,
                thumbnails: examples
                    .iter()
                    .filter_map(|e| thumbnail(&dir, &d.grid, u, e))
                    .collect(),
            });
        }
    }
    Ok(Some(DissectionSummary {
        hooks: labels,
        shown,
    }))
}

fn read_png(path: &Path) -> Option<image::DynamicImage> {
    image::open(path).ok()
}

/// The image dimmed where the unit is off, the concept's mask outlined; a base64 JPEG. `None`
/// when the stage's images are missing (a hand-pruned run): the unit is listed without them.
fn thumbnail(dir: &Path, grid: &CellGrid, unit: &UnitRow, e: &ExampleRow) -> Option<String> {
    let input = read_png(&input_png(dir, e.example_id))?.to_rgb8();
    let mask = read_png(&mask_png(dir, e.example_id, &unit.concept))?.to_luma8();
    crate::thumbnails::jpeg(&compose(&input, &mask, grid, &e.map, unit.threshold)?)
}

/// Draws the unit's on-region and the mask's outline over the model-input image.
pub(crate) fn compose(
    input: &RgbImage,
    mask: &GrayImage,
    grid: &CellGrid,
    map: &[f32],
    threshold: f32,
) -> Option<RgbImage> {
    let (h, w) = grid.image();
    if input.dimensions() != (w as u32, h as u32) || mask.dimensions() != input.dimensions() {
        return None;
    }
    if map.len() != grid.cells() {
        return None;
    }
    let on_mask = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && (x as usize) < w
            && (y as usize) < h
            && mask.get_pixel(x as u32, y as u32).0[0] > 127
    };
    let mut out = input.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        let on = is_on(grid, map, threshold, y as usize, x as usize);
        if !on {
            p.0 = p.0.map(|c| (c as f32 * 0.3) as u8);
        }
        let (xi, yi) = (x as i64, y as i64);
        let edge = on_mask(xi, yi)
            && [(1, 0), (-1, 0), (0, 1), (0, -1)]
                .iter()
                .any(|(dx, dy)| !on_mask(xi + dx, yi + dy));
        if edge {
            *p = OUTLINE;
        }
    }
    Some(out)
}

/// The section's HTML.
pub(crate) fn section_html(s: &DissectionSummary) -> String {
    let mut h = String::from("<section id=\"dissection\">\n<h2>Network Dissection</h2>\n");
    h.push_str("<table><thead><tr><th>hook (by depth)</th><th>units</th><th>labelled</th><th>share</th><th>labels (units)</th></tr></thead><tbody>\n");
    for l in &s.hooks {
        let concepts: Vec<String> = l
            .concepts
            .iter()
            .map(|c| format!("{} {}", escape(&c.concept), c.units))
            .collect();
        h.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{:.1} %</td><td>{}</td></tr>\n",
            escape(&l.hook),
            l.units,
            l.labelled,
            100.0 * l.labelled as f64 / l.units.max(1) as f64,
            if concepts.is_empty() {
                "–".to_owned()
            } else {
                concepts.join(", ")
            }
        ));
    }
    h.push_str("</tbody></table>\n");
    for u in &s.shown {
        h.push_str(&format!(
            "<figure class=\"dissected\">{}<figcaption>{}</figcaption></figure>\n",
            u.thumbnails
                .iter()
                .map(|t| format!(
                    "<img alt=\"top image of unit {} at {}\" width=\"{side}\" height=\"{side}\" src=\"data:image/jpeg;base64,{t}\">",
                    u.unit,
                    escape(&u.hook),
                    side = crate::thumbnails::SIDE
                ))
                .collect::<String>(),
            inline(&format!(
                "`{}` unit {}: {}, IoU {:.3} against {:.3} for shuffled masks (q = {:.1e}). Its top images, dimmed where the unit is below its threshold; the {} mask outlined.",
                u.hook, u.unit, u.concept, u.iou, u.baseline_mean, u.q_value, u.concept
            ))
        ));
    }
    h.push_str(&format!(
        "<p class=\"note\">{}</p>\n</section>\n",
        inline(DEFINITIONS)
    ));
    h
}

/// The headline: the hook with the most labelled units.
pub(crate) fn headline(s: &DissectionSummary) -> Option<String> {
    let best = s
        .hooks
        .iter()
        .max_by_key(|l| (l.labelled, std::cmp::Reverse(l.hook.clone())))?;
    if best.labelled == 0 {
        return Some(format!(
            "Network Dissection labelled no unit at {} hook(s): no unit's top activations overlap a concept's masks beyond the shuffled-mask baseline.",
            s.hooks.len()
        ));
    }
    let top: Vec<String> = best
        .concepts
        .iter()
        .take(3)
        .map(|c| format!("{} {}", c.concept, c.units))
        .collect();
    Some(format!(
        "Network Dissection labels {} of {} units at `{}` ({:.0} %; {}).",
        best.labelled,
        best.units,
        best.hook,
        100.0 * best.labelled as f64 / best.units.max(1) as f64,
        top.join(", ")
    ))
}

const DEFINITIONS: &str = "A unit is on where its map, upsampled over the cells' receptive-field centres, reaches its top-quantile level over the data set (0.5 % by default; Bau et al. 2017). IoU: pixels where the unit is on and the concept is, over pixels where either is, summed over every image. Labelled: IoU ≥ the threshold (0.04 by default) and above the IoU the same unit reaches when the masks are shuffled among the images (z against the shuffles, one-sided, times the number of concepts, Benjamini–Hochberg over the hook's units). Tables: `dissection/units.parquet`, `scores.parquet` (every unit × concept), `examples.parquet` (top images with the maps).";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_where_the_unit_is_off_and_outlines_the_mask() {
        let grid = CellGrid::input(8, 8).conv(2, 2, 0); // 4×4 cells
        let input = RgbImage::from_pixel(8, 8, Rgb([200, 100, 50]));
        let mut mask = GrayImage::new(8, 8);
        for y in 2..6 {
            for x in 2..6 {
                mask.put_pixel(x, y, image::Luma([255]));
            }
        }
        let mut map = vec![0.0; 16];
        map[0] = 1.0; // top-left cell only
        let out = compose(&input, &mask, &grid, &map, 0.9).unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [200, 100, 50], "on: untouched");
        assert_eq!(out.get_pixel(7, 7).0, [60, 30, 15], "off: dimmed");
        assert_eq!(*out.get_pixel(2, 3), OUTLINE, "mask edge");
        assert_ne!(*out.get_pixel(3, 3), OUTLINE, "mask inside");
        assert!(compose(&input, &mask, &grid, &map[..4], 0.9).is_none());
    }
}
