//! Baseline inputs: what "absent" means for a text or an image (see [`Baseline`]).

use super::Baseline;
use glassbox_data::rng::SeededRng;
use glassbox_models::{ModelError, Result};

/// An image baseline for `pixels` (`height × width × 3`, normalised).
pub fn image_baseline(
    kind: Baseline,
    pixels: &[f32],
    (height, width): (usize, usize),
    seed: u64,
) -> Result<Vec<f32>> {
    match kind {
        Baseline::Zero => Ok(vec![0.0; pixels.len()]),
        Baseline::Blur => {
            let sigma = 0.05 * height.min(width) as f64;
            Ok(gaussian_blur(pixels, height, width, sigma.max(0.5)))
        }
        Baseline::Uniform => {
            let (lo, hi) = pixels
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
            let mut rng = SeededRng::new(seed);
            Ok(pixels
                .iter()
                .map(|_| lo + (hi - lo) * rng.unit_f64() as f32)
                .collect())
        }
        Baseline::Mask => Err(ModelError::Invalid(
            "baseline `mask` replaces tokens by the mask token; for images use zero, blur or uniform"
                .into(),
        )),
    }
}

/// Separable Gaussian blur of a channels-last RGB image (edges clamped).
pub fn gaussian_blur(pixels: &[f32], height: usize, width: usize, sigma: f64) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f64> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = kernel.iter().sum();
    let kernel: Vec<f64> = kernel.iter().map(|k| k / total).collect();
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        for y in 0..height as isize {
            for x in 0..width as isize {
                for c in 0..3 {
                    let mut acc = 0f64;
                    for (k, w) in (-radius..=radius).zip(&kernel) {
                        let (yy, xx) = if horizontal {
                            (y, (x + k).clamp(0, width as isize - 1))
                        } else {
                            ((y + k).clamp(0, height as isize - 1), x)
                        };
                        acc += w * f64::from(src[(yy as usize * width + xx as usize) * 3 + c]);
                    }
                    out[(y as usize * width + x as usize) * 3 + c] = acc as f32;
                }
            }
        }
        out
    };
    pass(&pass(pixels, true), false)
}

/// A text baseline for `tokens × hidden` embeddings: zeros, or the mask token's embedding at
/// every position (`mask_row`, resolved by the caller from the tokenizer).
pub fn text_baseline(
    kind: Baseline,
    tokens: usize,
    hidden: usize,
    mask_row: Option<&[f32]>,
) -> Result<Vec<f32>> {
    match kind {
        Baseline::Zero => Ok(vec![0.0; tokens * hidden]),
        Baseline::Mask => {
            let row = mask_row.ok_or_else(|| {
                ModelError::Invalid(
                    "baseline `mask`: the tokenizer has no mask, padding or unknown token; use zero"
                        .into(),
                )
            })?;
            Ok(row.iter().copied().cycle().take(tokens * hidden).collect())
        }
        Baseline::Blur | Baseline::Uniform => Err(ModelError::Invalid(format!(
            "baseline `{}` is for images; for text use zero or mask",
            kind.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_a_constant_image_and_smooths_a_spike() {
        let flat = vec![0.25f32; 9 * 7 * 3];
        assert!(gaussian_blur(&flat, 9, 7, 1.5)
            .iter()
            .all(|v| (v - 0.25).abs() < 1e-6));
        let mut spike = vec![0f32; 9 * 9 * 3];
        spike[(4 * 9 + 4) * 3] = 1.0;
        let b = gaussian_blur(&spike, 9, 9, 1.0);
        assert!(b[(4 * 9 + 4) * 3] < 1.0 && b[(4 * 9 + 5) * 3] > 0.0);
        let sum: f32 = b.iter().sum();
        assert!((sum - 1.0).abs() < 1e-3);
    }
}
