//! Small images for the report: an image run's pictures as the model saw them (the
//! preprocessing recorded in the manifest, applied to the data set's files), with a region
//! marked, as base64 JPEGs for `<img src="data:…">` — so the bundle stays one self-contained
//! page. Missing files or a run that predates the recorded preprocessing give no thumbnail,
//! never an error: the report then shows the cell's name instead.

use crate::markup::base64;
use glassbox_data::grid::Rect;
use glassbox_data::images::{model_input, Preprocessor};
use glassbox_data::RunDir;
use image::{Rgb, RgbImage};
use std::collections::HashMap;
use std::path::PathBuf;

/// Side of a thumbnail in pixels.
pub(crate) const SIDE: u32 = 112;
/// The colour regions are outlined in.
pub(crate) const OUTLINE: Rgb<u8> = Rgb([255, 214, 0]);

/// Side of the drill-down pages' thumbnails (hundreds per page).
pub(crate) const PAGE_SIDE: u32 = 72;

/// A JPEG of `img` scaled to `SIDE`, base64.
pub(crate) fn jpeg(img: &RgbImage) -> Option<String> {
    jpeg_sized(img, SIDE)
}

/// A JPEG of `img` scaled to `side` × `side`, base64.
pub(crate) fn jpeg_sized(img: &RgbImage, side: u32) -> Option<String> {
    let small = image::imageops::resize(img, side, side, image::imageops::FilterType::Triangle);
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
        .encode_image(&small)
        .ok()?;
    Some(base64(&bytes))
}

/// `img` dimmed outside `field` (what a cell reads), with `cell` (where it sits) outlined
/// (inside it: 2 px, 1 px when the cell is under 6 px).
pub(crate) fn mark_rect(img: &RgbImage, field: Rect, cell: Rect) -> RgbImage {
    let within =
        |r: &Rect, x: usize, y: usize| (r.x0..=r.x1).contains(&x) && (r.y0..=r.y1).contains(&y);
    let t = if cell.x1 - cell.x0 < 5 || cell.y1 - cell.y0 < 5 {
        1
    } else {
        2
    };
    let mut out = img.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (x, y) = (x as usize, y as usize);
        let border = within(&cell, x, y)
            && (x < cell.x0 + t || x + t > cell.x1 || y < cell.y0 + t || y + t > cell.y1);
        if border {
            *p = OUTLINE;
        } else if !within(&field, x, y) {
            p.0 = p.0.map(|c| (c as f32 * 0.35) as u8);
        }
    }
    out
}

/// An image run's `dictionary/hook=<hook>/grid.json` (absent for text runs).
pub(crate) fn read_grid(dir: &std::path::Path) -> Option<glassbox_data::grid::CellGrid> {
    serde_json::from_slice(&std::fs::read(dir.join("grid.json")).ok()?).ok()
}

/// Example `example_id`'s image with position `position`'s receptive field kept and its cell
/// outlined (a class token: the image alone), `side` pixels, base64 JPEG. The image is scaled
/// once per example and side, and the rectangles scaled onto it.
pub(crate) fn cell(
    inputs: &mut ModelInputs,
    grid: &glassbox_data::grid::CellGrid,
    example_id: u64,
    position: u32,
    side: u32,
) -> Option<String> {
    let field = grid.rect(position as usize)?;
    let cell = grid.cell_box(position as usize).unwrap_or(field);
    let (h, w) = grid.image();
    let scale = |r: Rect| {
        let (sx, sy) = (side as f64 / w as f64, side as f64 / h as f64);
        let last = side as usize - 1;
        Rect {
            x0: ((r.x0 as f64 * sx) as usize).min(last),
            y0: ((r.y0 as f64 * sy) as usize).min(last),
            x1: (((r.x1 + 1) as f64 * sx).ceil() as usize)
                .saturating_sub(1)
                .min(last),
            y1: (((r.y1 + 1) as f64 * sy).ceil() as usize)
                .saturating_sub(1)
                .min(last),
        }
    };
    let small = inputs.scaled(example_id, side)?;
    let mut encoded = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 85)
        .encode_image(&mark_rect(small, scale(field), scale(cell)))
        .ok()?;
    Some(base64(&encoded))
}

/// Images shown per TCAV concept set.
const CONCEPT_IMAGES: usize = 4;

/// An image concept set's first images as the model saw them.
#[derive(Debug, Clone)]
pub(crate) struct ConceptStrip {
    pub name: String,
    pub images: Vec<String>,
}

/// The first images of every image concept folder the run's `[tcav]` section names (from
/// `config.toml`; prompt files and missing folders are skipped), for image runs with the
/// preprocessing recorded.
pub(crate) fn concept_strips(run: &RunDir) -> Vec<ConceptStrip> {
    let Some(pre) = glassbox_data::Manifest::load(run)
        .ok()
        .and_then(|m| m.model?.preprocessor)
    else {
        return Vec::new();
    };
    let config: Option<toml::Value> = std::fs::read_to_string(run.config())
        .ok()
        .and_then(|t| toml::from_str(&t).ok());
    let concepts: Vec<String> = config
        .as_ref()
        .and_then(|c| c.get("tcav")?.get("concepts")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    concepts
        .iter()
        .filter_map(|c| {
            let dir = PathBuf::from(c);
            let set = glassbox_data::images::read_image_set(&dir, 1).ok()?;
            let images: Vec<String> = set
                .files
                .iter()
                .take(CONCEPT_IMAGES)
                .filter_map(|f| jpeg_sized(&model_input(f, &pre).ok()?, PAGE_SIDE))
                .collect();
            (!images.is_empty()).then_some(ConceptStrip {
                name: set.name,
                images,
            })
        })
        .collect()
}

/// An image run's pictures by example id, loaded once each.
pub(crate) struct ModelInputs {
    pre: Preprocessor,
    files: Vec<PathBuf>,
    cache: HashMap<u64, Option<RgbImage>>,
    scaled: HashMap<(u64, u32), Option<RgbImage>>,
}

impl ModelInputs {
    /// `None` for text runs and runs without the recorded preprocessing.
    pub(crate) fn open(run: &RunDir) -> Option<Self> {
        let manifest = glassbox_data::Manifest::load(run).ok()?;
        let pre = manifest.model?.preprocessor?;
        let data = manifest.data?.locate();
        let root = if data.is_dir() {
            data
        } else {
            data.parent()?.to_path_buf()
        };
        let examples = glassbox_data::examples::read_examples(run).ok()?;
        let mut files = vec![
            PathBuf::new();
            examples
                .example_ids
                .iter()
                .max()
                .map_or(0, |m| *m as usize + 1)
        ];
        for (id, text) in examples.example_ids.iter().zip(&examples.texts) {
            files[*id as usize] = root.join(text);
        }
        Some(Self {
            pre,
            files,
            cache: HashMap::new(),
            scaled: HashMap::new(),
        })
    }

    /// The image scaled to `side` × `side`.
    pub(crate) fn scaled(&mut self, example_id: u64, side: u32) -> Option<&RgbImage> {
        if !self.scaled.contains_key(&(example_id, side)) {
            let small = self.get(example_id).map(|img| {
                image::imageops::resize(img, side, side, image::imageops::FilterType::Triangle)
            });
            self.scaled.insert((example_id, side), small);
        }
        self.scaled[&(example_id, side)].as_ref()
    }

    pub(crate) fn get(&mut self, example_id: u64) -> Option<&RgbImage> {
        let (pre, files) = (&self.pre, &self.files);
        self.cache
            .entry(example_id)
            .or_insert_with(|| {
                let file = files.get(example_id as usize)?;
                model_input(file, pre).ok()
            })
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_the_rectangle_and_dims_the_rest() {
        let img = RgbImage::from_pixel(10, 10, Rgb([100, 200, 50]));
        let r = Rect {
            x0: 2,
            y0: 2,
            x1: 7,
            y1: 7,
        };
        let out = mark_rect(&img, r, r);
        assert_eq!(*out.get_pixel(2, 5), OUTLINE);
        assert_eq!(out.get_pixel(5, 5).0, [100, 200, 50]);
        assert_eq!(out.get_pixel(0, 0).0, [35, 70, 17]);
        assert!(jpeg(&out).is_some_and(|b| !b.is_empty()));
    }
}
