//! Segmentation masks of an image data set, as the model sees them: every `mask_<concept>`
//! column of the manifest names a PNG per image (or null: the concept is absent there), read
//! as binary (> 127), checked to have its image's size, and put through the model's resize and
//! centre crop (nearest neighbour) so mask pixel `(y, x)` is model-input pixel `(y, x)`.

use crate::images::{ImageDataset, Preprocessor};
use crate::masked_textures::MASK_PREFIX;
use crate::{DataError, Result, Value};
use image::imageops::FilterType;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A binary image, one bit per pixel, rows padded to whole 64-bit words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    pub height: usize,
    pub width: usize,
    pub words_per_row: usize,
    pub bits: Vec<u64>,
}

impl Bitmap {
    pub fn new(height: usize, width: usize) -> Self {
        let words_per_row = width.div_ceil(64);
        Self {
            height,
            width,
            words_per_row,
            bits: vec![0; height * words_per_row],
        }
    }

    pub fn set(&mut self, y: usize, x: usize) {
        self.bits[y * self.words_per_row + x / 64] |= 1 << (x % 64);
    }

    pub fn get(&self, y: usize, x: usize) -> bool {
        self.bits[y * self.words_per_row + x / 64] >> (x % 64) & 1 == 1
    }

    /// Set pixels.
    pub fn count(&self) -> u64 {
        self.bits.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// Set pixels of both, over rows `rows` only (the rest of `self` must be empty).
    pub fn and_count(&self, other: &Bitmap, rows: std::ops::Range<usize>) -> u64 {
        let (a, b) = (
            rows.start * self.words_per_row,
            rows.end * self.words_per_row,
        );
        self.bits[a..b]
            .iter()
            .zip(&other.bits[a..b])
            .map(|(x, y)| (x & y).count_ones() as u64)
            .sum()
    }

    pub fn clear(&mut self) {
        self.bits.iter_mut().for_each(|w| *w = 0);
    }
}

/// The masks of a data set: `masks[example][concept]`, `None` where the image lacks it.
#[derive(Debug, Clone)]
pub struct MaskSet {
    pub concepts: Vec<String>,
    pub height: usize,
    pub width: usize,
    pub masks: Vec<Vec<Option<Bitmap>>>,
    /// Pixels of each concept over the whole set.
    pub areas: Vec<u64>,
    /// Over the mask files' names and bytes.
    pub sha256: String,
}

fn invalid(path: &Path, message: String) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

/// Reads every `mask_<concept>` column of `data` at the model input `pre` produces.
pub fn read_masks(data: &ImageDataset, pre: &Preprocessor) -> Result<MaskSet> {
    let source = &data.data.source;
    let columns: Vec<_> = data
        .data
        .columns
        .iter()
        .filter(|c| c.name.starts_with(MASK_PREFIX) && c.name.len() > MASK_PREFIX.len())
        .collect();
    if columns.is_empty() {
        return Err(invalid(
            source,
            format!(
                "has no `{MASK_PREFIX}<concept>` columns; dissection needs a segmentation mask PNG per image and concept (e.g. `glassbox textures --masks`)"
            ),
        ));
    }
    let mut hasher = Sha256::new();
    let mut size = None;
    let mut masks = vec![vec![None; columns.len()]; data.len()];
    for (c, column) in columns.iter().enumerate() {
        for (i, value) in column.values.iter().enumerate() {
            let rel = match value {
                Value::Null => continue,
                Value::Str(s) if s.is_empty() => continue,
                Value::Str(s) => s,
                other => {
                    return Err(invalid(
                        source,
                        format!(
                        "row {}, column `{}`: expected a mask file path or null, found {other:?}",
                        i + 1,
                        column.name
                    ),
                    ))
                }
            };
            let file: PathBuf = data.root.join(rel);
            let where_ = format!("row {}, column `{}`", i + 1, column.name);
            let bytes = std::fs::read(&file).map_err(|e| {
                invalid(
                    &file,
                    format!("mask of {where_} cannot be read: {e}; fix the path or set it to null"),
                )
            })?;
            hasher.update(rel.as_bytes());
            hasher.update(Sha256::digest(&bytes));
            let mask = image::load_from_memory(&bytes)
                .map_err(|e| {
                    invalid(
                        &file,
                        format!("mask of {where_} is not a decodable image: {e}"),
                    )
                })?
                .to_luma8();
            let image_file = data.path(i);
            let image_size = image::image_dimensions(&image_file)
                .map_err(|e| invalid(&image_file, format!("cannot read the image's size: {e}")))?;
            if mask.dimensions() != image_size {
                return Err(invalid(
                    &file,
                    format!(
                        "mask of {where_} is {}×{} but its image {} is {}×{}; masks must have their image's size",
                        mask.width(),
                        mask.height(),
                        image_file.display(),
                        image_size.0,
                        image_size.1
                    ),
                ));
            }
            let seen = pre.resize_and_crop(&mask, FilterType::Nearest, &file)?;
            let (w, h) = seen.dimensions();
            if *size.get_or_insert((h, w)) != (h, w) {
                return Err(invalid(
                    &file,
                    format!("mask of {where_} becomes {w}×{h} after preprocessing, unlike the others; the model's preprocessor must crop or resize to one size"),
                ));
            }
            let mut bits = Bitmap::new(h as usize, w as usize);
            for (x, y, p) in seen.enumerate_pixels() {
                if p.0[0] > 127 {
                    bits.set(y as usize, x as usize);
                }
            }
            masks[i][c] = Some(bits);
        }
    }
    let concepts: Vec<String> = columns
        .iter()
        .map(|c| c.name[MASK_PREFIX.len()..].to_owned())
        .collect();
    let areas: Vec<u64> = (0..concepts.len())
        .map(|c| {
            masks
                .iter()
                .filter_map(|m| m[c].as_ref())
                .map(Bitmap::count)
                .sum()
        })
        .collect();
    if let Some(c) = areas.iter().position(|&a| a == 0) {
        return Err(invalid(
            source,
            format!(
                "concept `{}` (column `{}`) has no masked pixels in any image (after the model's crop); drop the column or fix its masks",
                concepts[c], columns[c].name
            ),
        ));
    }
    let (height, width) = size.expect("a concept with pixels has a mask");
    Ok(MaskSet {
        concepts,
        height: height as usize,
        width: width as usize,
        masks,
        areas,
        sha256: format!("{:x}", hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::read_image_dataset;
    use crate::masked_textures::write_masked_set;
    use crate::textures::Texture;

    #[test]
    fn bitmaps_count_and_intersect() {
        let mut a = Bitmap::new(3, 70);
        let mut b = Bitmap::new(3, 70);
        for x in [0, 63, 64, 69] {
            a.set(1, x);
        }
        b.set(1, 64);
        b.set(2, 5);
        assert_eq!((a.count(), b.count()), (4, 2));
        assert_eq!(a.and_count(&b, 0..3), 1);
        assert_eq!(a.and_count(&b, 2..3), 0);
        assert!(a.get(1, 69) && !a.get(1, 68));
    }

    #[test]
    fn reads_generated_masks_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        write_masked_set(dir.path(), &[Texture::Stripes, Texture::Dots], 3, 40, 1).unwrap();
        let manifest = dir.path().join("dataset.jsonl");
        let set = read_masks(
            &read_image_dataset(&manifest).unwrap(),
            &Preprocessor::identity(),
        )
        .unwrap();
        let at = |name: &str| set.concepts.iter().position(|c| c == name).unwrap();
        assert_eq!(set.concepts.len(), 2 + 4, "two textures and four colours");
        assert_eq!((set.height, set.width), (40, 40));
        // The first image is a stripes composite.
        let (stripes, dots) = (at("stripes"), at("dots"));
        assert!(set.masks[0][stripes].is_some() && set.masks[0][dots].is_none());
        // A centre crop keeps the masks aligned with the pixels.
        let crop = Preprocessor {
            crop: Some((20, 30)),
            ..Preprocessor::identity()
        };
        let cropped = read_masks(&read_image_dataset(&manifest).unwrap(), &crop).unwrap();
        let (full, part) = (
            set.masks[0][stripes].as_ref().unwrap(),
            cropped.masks[0][stripes].as_ref().unwrap(),
        );
        for y in 0..20 {
            for x in 0..30 {
                assert_eq!(part.get(y, x), full.get(y + 10, x + 5));
            }
        }

        // A mask of the wrong size is named with its row and column.
        let text = std::fs::read_to_string(&manifest).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let rel = first["mask_stripes"].as_str().unwrap().to_owned();
        image::GrayImage::new(12, 12)
            .save(dir.path().join(&rel))
            .unwrap();
        let e = read_masks(
            &read_image_dataset(&manifest).unwrap(),
            &Preprocessor::identity(),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("row 1, column `mask_stripes`") && msg.contains("12×12"),
            "{msg}"
        );
        // A missing file too.
        std::fs::remove_file(dir.path().join(&rel)).unwrap();
        let msg = read_masks(
            &read_image_dataset(&manifest).unwrap(),
            &Preprocessor::identity(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("cannot be read") && msg.contains("row 1"),
            "{msg}"
        );
    }
}
