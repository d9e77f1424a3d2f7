//! Composite images with segmentation masks, for Network Dissection out of the box: each image
//! is a random smooth background with one texture region (stripes, dots, checkerboard or
//! zigzag) and one flat colour region pasted on it, and a mask PNG per concept it contains.
//!
//! Colours cycle through the images of each texture (offset per texture), so every colour
//! occurs once there are four images. Regions are ellipses of random centre, radii (18–40 % of the side) and rotation; the texture
//! is drawn over the colour, so the colour's mask is its ellipse minus the texture's. Mask pixels
//! are 255 where the concept is (the pixel centre inside the region), 0 elsewhere. The written
//! data set is a JSONL manifest: `image_path`, `label` (the texture), `colour`, and one
//! `mask_<concept>` column per concept — a path, or null where the image does not contain it.

use crate::rng::SeededRng;
use crate::textures::{render, Texture};
use crate::{atomic, DataError, Result};
use image::{GrayImage, Luma, Rgb, RgbImage};
use std::path::Path;

/// The colour concepts and their RGB values.
pub const COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 30, 30]),
    ("green", [30, 180, 50]),
    ("blue", [30, 60, 220]),
    ("yellow", [240, 220, 30]),
];

/// The prefix of mask columns in an image manifest.
pub const MASK_PREFIX: &str = "mask_";

/// A random rotated ellipse inside a `size`-pixel square.
struct Ellipse {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
    cos: f64,
    sin: f64,
}

impl Ellipse {
    fn draw(size: u32, rng: &mut SeededRng) -> Self {
        let s = size as f64;
        let (rx, ry) = (
            s * (0.18 + 0.22 * rng.unit_f64()),
            s * (0.18 + 0.22 * rng.unit_f64()),
        );
        let angle = std::f64::consts::PI * rng.unit_f64();
        Self {
            cx: s * (0.2 + 0.6 * rng.unit_f64()),
            cy: s * (0.2 + 0.6 * rng.unit_f64()),
            rx,
            ry,
            cos: angle.cos(),
            sin: angle.sin(),
        }
    }

    /// Whether the centre of pixel `(x, y)` is inside.
    fn contains(&self, x: u32, y: u32) -> bool {
        let (dx, dy) = (x as f64 + 0.5 - self.cx, y as f64 + 0.5 - self.cy);
        let u = (dx * self.cos + dy * self.sin) / self.rx;
        let v = (-dx * self.sin + dy * self.cos) / self.ry;
        u * u + v * v <= 1.0
    }
}

/// One composite: the image, its texture and colour, and their masks.
pub struct Composite {
    pub image: RgbImage,
    pub texture: Texture,
    pub colour: usize,
    pub texture_mask: GrayImage,
    pub colour_mask: GrayImage,
}

/// Renders a composite of `texture` and colour `colour` (an index of [`COLOURS`]), drawing
/// the background, the pattern and both regions from `rng`.
pub fn render_composite(
    texture: Texture,
    colour: usize,
    size: u32,
    rng: &mut SeededRng,
) -> Composite {
    let background = render(Texture::Random, size, rng);
    let pattern = render(texture, size, rng);
    let colour_region = Ellipse::draw(size, rng);
    let texture_region = Ellipse::draw(size, rng);
    let mut image = background;
    let mut texture_mask = GrayImage::new(size, size);
    let mut colour_mask = GrayImage::new(size, size);
    for y in 0..size {
        for x in 0..size {
            if texture_region.contains(x, y) {
                image.put_pixel(x, y, *pattern.get_pixel(x, y));
                texture_mask.put_pixel(x, y, Luma([255]));
            } else if colour_region.contains(x, y) {
                image.put_pixel(x, y, Rgb(COLOURS[colour].1));
                colour_mask.put_pixel(x, y, Luma([255]));
            }
        }
    }
    Composite {
        image,
        texture,
        colour,
        texture_mask,
        colour_mask,
    }
}

fn write_png(
    path: &Path,
    encode: impl FnOnce(&mut Vec<u8>) -> image::ImageResult<()>,
) -> Result<()> {
    let mut bytes = Vec::new();
    encode(&mut bytes).map_err(|e| DataError::Invalid {
        path: path.to_path_buf(),
        message: format!("cannot encode PNG: {e}"),
    })?;
    atomic::write_bytes(path, &bytes)
}

/// Writes `per_texture` composites of each texture under `out/images/`, their masks under
/// `out/masks/` and the manifest `out/dataset.jsonl` (written last). Composite `i` of texture
/// `t` draws from the seed `(seed, t, i)` alone.
pub fn write_masked_set(
    out: &Path,
    textures: &[Texture],
    per_texture: usize,
    size: u32,
    seed: u64,
) -> Result<()> {
    crate::textures::check_set(out, textures, per_texture, size, 16)?;
    if let Some(t) = textures.iter().find(|t| **t == Texture::Random) {
        return Err(DataError::Invalid {
            path: out.to_path_buf(),
            message: format!(
                "`{}` is every composite's background, not a region; leave it out of --kinds",
                t.name()
            ),
        });
    }
    atomic::require_folder(out)?;
    for sub in ["images", "masks"] {
        let dir = out.join(sub);
        std::fs::create_dir_all(&dir).map_err(DataError::io(&dir))?;
    }
    let concepts: Vec<&str> = textures
        .iter()
        .map(|t| t.name())
        .chain(COLOURS.iter().map(|c| c.0))
        .collect();
    let mut manifest = String::new();
    for (ti, &t) in textures.iter().enumerate() {
        for i in 0..per_texture {
            let mut rng = SeededRng::new(
                seed ^ (t as u64 + 101).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64) << 20,
            );
            // Colours cycle, offset per texture, so every colour meets every texture.
            let c = render_composite(t, (i + ti) % COLOURS.len(), size, &mut rng);
            let stem = format!("{}-{i:04}", t.name());
            let image_path = format!("images/{stem}.png");
            write_png(&out.join(&image_path), |b| {
                c.image
                    .write_to(&mut std::io::Cursor::new(b), image::ImageFormat::Png)
            })?;
            let colour = COLOURS[c.colour].0;
            let mut row = serde_json::Map::new();
            row.insert("image_path".into(), image_path.into());
            row.insert("label".into(), t.name().into());
            row.insert("colour".into(), colour.into());
            for concept in &concepts {
                let mask = if *concept == t.name() {
                    Some(&c.texture_mask)
                } else if *concept == colour {
                    Some(&c.colour_mask)
                } else {
                    None
                };
                let value = match mask {
                    Some(m) if m.pixels().any(|p| p.0[0] > 0) => {
                        let rel = format!("masks/{stem}-{concept}.png");
                        write_png(&out.join(&rel), |b| {
                            m.write_to(&mut std::io::Cursor::new(b), image::ImageFormat::Png)
                        })?;
                        serde_json::Value::from(rel)
                    }
                    _ => serde_json::Value::Null,
                };
                row.insert(format!("{MASK_PREFIX}{concept}"), value);
            }
            manifest.push_str(&serde_json::Value::Object(row).to_string());
            manifest.push('\n');
        }
    }
    atomic::write_bytes(&out.join("dataset.jsonl"), manifest.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_cover_exactly_the_pasted_regions() {
        let c = render_composite(Texture::Stripes, 2, 96, &mut SeededRng::new(9));
        let (mut texture, mut colour) = (0, 0);
        for (x, y, m) in c.texture_mask.enumerate_pixels() {
            let in_colour = c.colour_mask.get_pixel(x, y).0[0] > 0;
            if m.0[0] > 0 {
                texture += 1;
                assert!(!in_colour, "a pixel in both masks");
            }
            if in_colour {
                colour += 1;
                assert_eq!(c.image.get_pixel(x, y).0, COLOURS[c.colour].1);
            }
        }
        let area = 96.0 * 96.0;
        assert!(texture as f64 / area > 0.05, "texture covers {texture} px");
        assert!(
            colour > 0 || texture as f64 / area > 0.3,
            "colour covers {colour} px"
        );
    }

    #[test]
    fn writes_a_manifest_with_a_mask_column_per_concept() {
        let dir = tempfile::tempdir().unwrap();
        write_masked_set(dir.path(), &[Texture::Dots, Texture::Zigzag], 2, 48, 3).unwrap();
        let ds = crate::images::read_image_dataset(&dir.path().join("dataset.jsonl")).unwrap();
        assert_eq!(ds.len(), 4);
        let dots = ds.data.column("mask_dots").expect("mask_dots column");
        let present = dots
            .values
            .iter()
            .filter(|v| !matches!(v, crate::Value::Null))
            .count();
        assert_eq!(present, 2, "the two dots composites have a dots mask");
        for v in &dots.values {
            if let crate::Value::Str(p) = v {
                let m = image::open(dir.path().join(p)).unwrap().to_luma8();
                assert_eq!(m.dimensions(), (48, 48));
            }
        }
        assert!(ds.data.column("mask_red").is_some());
        // Same seed, same bytes.
        let again = tempfile::tempdir().unwrap();
        write_masked_set(again.path(), &[Texture::Dots, Texture::Zigzag], 2, 48, 3).unwrap();
        for f in ["dataset.jsonl", "images/dots-0001.png"] {
            assert_eq!(
                std::fs::read(dir.path().join(f)).unwrap(),
                std::fs::read(again.path().join(f)).unwrap()
            );
        }
    }
}
