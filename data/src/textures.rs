//! Built-in texture concept images — the classic TCAV concepts ("striped" for zebra) — and
//! random counterpart images, generated from a seed.
//!
//! Every image draws its own two colours (a random hue pair with a guaranteed lightness
//! contrast), scale (period 10–40 px at 224 px, proportional at other sizes), angle and phase,
//! so a concept set varies in everything but the pattern. Pixels are 2×2 supersampled to
//! soften aliasing. Random images are smooth colour fields: a coarse grid of random colours
//! (2–8 cells a side) interpolated bilinearly, with no repeating pattern.

use crate::rng::SeededRng;
use crate::{atomic, DataError, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

/// A texture family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Texture {
    Stripes,
    Dots,
    Checkerboard,
    Zigzag,
    /// Random smooth colour fields (TCAV's random counterparts).
    Random,
}

impl Texture {
    pub const CONCEPTS: [Texture; 4] = [
        Texture::Stripes,
        Texture::Dots,
        Texture::Checkerboard,
        Texture::Zigzag,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Texture::Stripes => "stripes",
            Texture::Dots => "dots",
            Texture::Checkerboard => "checkerboard",
            Texture::Zigzag => "zigzag",
            Texture::Random => "random",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::CONCEPTS
            .into_iter()
            .chain([Texture::Random])
            .find(|t| t.name() == s)
    }
}

/// A colour from hue (0–1), saturation and value.
fn hsv(h: f64, s: f64, v: f64) -> [f64; 3] {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    match i as i64 % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// Renders one image of `texture`, `size`×`size`, drawing its variation from `rng`.
pub fn render(texture: Texture, size: u32, rng: &mut SeededRng) -> RgbImage {
    if texture == Texture::Random {
        return random_field(size, rng);
    }
    let dark = hsv(
        rng.unit_f64(),
        0.3 + 0.7 * rng.unit_f64(),
        0.05 + 0.3 * rng.unit_f64(),
    );
    let light = hsv(
        rng.unit_f64(),
        0.2 + 0.6 * rng.unit_f64(),
        0.7 + 0.3 * rng.unit_f64(),
    );
    let (fg, bg) = if rng.below(2) == 0 {
        (dark, light)
    } else {
        (light, dark)
    };
    let scale = size as f64 / 224.0;
    let period = (10.0 + 30.0 * rng.unit_f64()) * scale;
    let angle = std::f64::consts::PI * rng.unit_f64();
    let (phase_u, phase_v) = (rng.unit_f64() * period, rng.unit_f64() * period);
    let radius = 0.18 + 0.17 * rng.unit_f64(); // dots: fraction of the period
    let amplitude = 0.3 + 0.5 * rng.unit_f64(); // zigzag: fraction of the period
    let (c, s) = (angle.cos(), angle.sin());
    // Fraction of the pattern's foreground at (x, y).
    let inside = |x: f64, y: f64| -> bool {
        let u = (x * c + y * s + phase_u) / period;
        let v = (-x * s + y * c + phase_v) / period;
        match texture {
            Texture::Stripes => u.rem_euclid(1.0) < 0.5,
            Texture::Checkerboard => (u.floor() + v.floor()).rem_euclid(2.0) < 1.0,
            Texture::Dots => {
                let (du, dv) = (u.rem_euclid(1.0) - 0.5, v.rem_euclid(1.0) - 0.5);
                du * du + dv * dv < radius * radius
            }
            Texture::Zigzag => {
                // A triangle wave along v shifts the stripes sideways.
                let t = (v * 0.5).rem_euclid(1.0);
                let tri = if t < 0.5 { t * 2.0 } else { 2.0 - t * 2.0 };
                (u + amplitude * tri).rem_euclid(1.0) < 0.5
            }
            Texture::Random => unreachable!("handled above"),
        }
    };
    RgbImage::from_fn(size, size, |x, y| {
        let mut hits = 0;
        for (ox, oy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
            hits += inside(x as f64 + ox, y as f64 + oy) as u32;
        }
        let a = hits as f64 / 4.0;
        let mix = |i: usize| ((fg[i] * a + bg[i] * (1.0 - a)) * 255.0).round() as u8;
        Rgb([mix(0), mix(1), mix(2)])
    })
}

fn random_field(size: u32, rng: &mut SeededRng) -> RgbImage {
    let cells = 2 + rng.below(7);
    let grid: Vec<[f64; 3]> = (0..(cells + 1) * (cells + 1))
        .map(|_| [rng.unit_f64(), rng.unit_f64(), rng.unit_f64()])
        .collect();
    RgbImage::from_fn(size, size, |x, y| {
        let fx = x as f64 / size as f64 * cells as f64;
        let fy = y as f64 / size as f64 * cells as f64;
        let (ix, iy) = (fx.floor() as usize, fy.floor() as usize);
        let (tx, ty) = (fx - ix as f64, fy - iy as f64);
        let at = |gx: usize, gy: usize| grid[gy * (cells + 1) + gx];
        let mut px = [0u8; 3];
        for (i, p) in px.iter_mut().enumerate() {
            let top = at(ix, iy)[i] * (1.0 - tx) + at(ix + 1, iy)[i] * tx;
            let bottom = at(ix, iy + 1)[i] * (1.0 - tx) + at(ix + 1, iy + 1)[i] * tx;
            *p = ((top * (1.0 - ty) + bottom * ty) * 255.0).round() as u8;
        }
        Rgb(px)
    })
}

/// The most images per texture: a concept set of thousands already gives TCAV and Network
/// Dissection all they use; a mistyped count would write files for hours.
pub const MOST_PER_CLASS: usize = 100_000;
/// The largest image side: vision models take 224–518 px, and one RGB image of this side is
/// already 48 MB in memory.
pub const MOST_SIZE: u32 = 4096;

/// The checks every texture set shares: something to draw, each texture once, counts and
/// sides in range.
pub(crate) fn check_set(
    out: &Path,
    textures: &[Texture],
    per_class: usize,
    size: u32,
    least_size: u32,
) -> Result<()> {
    let invalid = |message: String| {
        Err(DataError::Invalid {
            path: out.to_path_buf(),
            message,
        })
    };
    if textures.is_empty() {
        return invalid("no texture to draw; pass --kinds stripes,dots,… or leave it out".into());
    }
    let names: Vec<&str> = textures.iter().map(|t| t.name()).collect();
    if let Err(m) = crate::limits::each_once("--kinds", &names) {
        return invalid(m);
    }
    if per_class == 0 || per_class > MOST_PER_CLASS {
        return invalid(format!(
            "{per_class} images per texture; give 1 to {MOST_PER_CLASS} (40 by default)"
        ));
    }
    if !(least_size..=MOST_SIZE).contains(&size) {
        return invalid(format!(
            "size {size} px; give {least_size} to {MOST_SIZE} (224 by default, what most vision models take)"
        ));
    }
    Ok(())
}

/// Writes `per_class` PNGs of each texture under `out/{name}/{i:04}.png` (a folder-per-class
/// data set). Image `i` of texture `t` draws from the seed `(seed, t, i)` alone, so sets of
/// different sizes share their first images. Each file is written to a temp name first.
pub fn write_texture_set(
    out: &Path,
    textures: &[Texture],
    per_class: usize,
    size: u32,
    seed: u64,
) -> Result<()> {
    check_set(out, textures, per_class, size, 8)?;
    atomic::require_folder(out)?;
    for &t in textures {
        // Each class folder is drawn beside its final name and renamed over it: a folder
        // left from a run with more images per class would otherwise keep its extra images,
        // mixed into the class.
        let dir = out.join(format!(".{}.partial", t.name()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(DataError::io(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(DataError::io(&dir))?;
        for i in 0..per_class {
            let mut rng = SeededRng::new(
                seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64) << 20,
            );
            let img = render(t, size, &mut rng);
            let path = dir.join(format!("{i:04}.png"));
            let mut bytes = Vec::new();
            img.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|e| DataError::Invalid {
                path: path.clone(),
                message: format!("cannot encode PNG: {e}"),
            })?;
            atomic::write_bytes(&path, &bytes)?;
        }
        let class = out.join(t.name());
        if class.exists() {
            std::fs::remove_dir_all(&class).map_err(DataError::io(&class))?;
        }
        std::fs::rename(&dir, &class).map_err(DataError::io(&class))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_pixels_and_patterns_differ() {
        let a = render(Texture::Stripes, 64, &mut SeededRng::new(3));
        let b = render(Texture::Stripes, 64, &mut SeededRng::new(3));
        assert_eq!(a, b);
        let c = render(Texture::Stripes, 64, &mut SeededRng::new(4));
        assert_ne!(a, c);
        for t in Texture::CONCEPTS.into_iter().chain([Texture::Random]) {
            let img = render(t, 64, &mut SeededRng::new(1));
            // Two-colour patterns and random fields both vary across the image.
            let first = *img.get_pixel(0, 0);
            assert!(img.pixels().any(|p| *p != first), "{} is flat", t.name());
        }
    }

    #[test]
    fn patterns_use_two_colours_and_random_fields_many() {
        // Supersampling blends edges, but most pixels of a two-colour pattern are one of two.
        for t in Texture::CONCEPTS {
            let img = render(t, 96, &mut SeededRng::new(5));
            let mut counts = std::collections::HashMap::new();
            img.pixels()
                .for_each(|p| *counts.entry(p.0).or_insert(0usize) += 1);
            let mut c: Vec<usize> = counts.into_values().collect();
            c.sort_unstable_by(|a, b| b.cmp(a));
            let top2 = c.iter().take(2).sum::<usize>() as f64 / (96.0 * 96.0);
            assert!(top2 > 0.6, "{}: two colours cover {top2}", t.name());
        }
        let img = render(Texture::Random, 96, &mut SeededRng::new(5));
        let distinct: std::collections::HashSet<_> = img.pixels().map(|p| p.0).collect();
        assert!(
            distinct.len() > 500,
            "random field has {} colours",
            distinct.len()
        );
    }

    #[test]
    fn absurd_counts_sides_and_repeated_kinds_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("set");
        let two = [Texture::Stripes, Texture::Dots];
        for (textures, per_class, size, needle) in [
            (&two[..], 40, 100_000, "size 100000 px"),
            (&two[..], 40, 4, "size 4 px"),
            (&two[..], 0, 32, "0 images per texture"),
            (&two[..], 10_000_000, 32, "10000000 images per texture"),
            (
                &[Texture::Dots, Texture::Dots][..],
                2,
                32,
                "lists `dots` twice",
            ),
            (&[][..], 2, 32, "no texture"),
        ] {
            let err = write_texture_set(&out, textures, per_class, size, 0).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
            assert!(!out.exists());
        }
    }

    #[test]
    fn writes_a_class_folder_set() {
        let dir = tempfile::tempdir().unwrap();
        write_texture_set(dir.path(), &[Texture::Dots, Texture::Random], 3, 32, 0).unwrap();
        for name in ["dots", "random"] {
            let n = std::fs::read_dir(dir.path().join(name)).unwrap().count();
            assert_eq!(n, 3, "{name}");
        }
        let ds = crate::images::read_image_dataset(dir.path()).unwrap();
        assert_eq!(ds.len(), 6);
        // Fewer images per class over the same folder: the class folders are replaced, not
        // topped up, and nothing is left beside them.
        write_texture_set(dir.path(), &[Texture::Dots], 2, 32, 0).unwrap();
        let n = std::fs::read_dir(dir.path().join("dots")).unwrap().count();
        assert_eq!(n, 2);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        // A file where the folder should be.
        let file = dir.path().join("a_file");
        std::fs::write(&file, b"keep").unwrap();
        let err = write_texture_set(&file, &[Texture::Dots], 1, 32, 0).unwrap_err();
        assert!(err.to_string().contains("a file, not a folder"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    }
}
