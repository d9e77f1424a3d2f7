//! The model-parameter randomisation check (Adebayo et al. 2018): a method whose map survives
//! destroying the model's weights is explaining the input, not the model. Cascading steps
//! destroy layer groups from the output down ([`glassbox_models::randomize`]); each step's maps
//! are compared with the trained model's by Spearman's ρ and (images) SSIM.

use super::evaluate::{spearman, ssim};

/// The cascade steps to run for a model with `groups` layer groups: the output side alone,
/// then about a quarter, half, three quarters and all of the groups (`k` = last group
/// destroyed, as [`glassbox_models::randomize::Randomization::Cascade`] counts).
pub fn cascade_steps(groups: usize) -> Vec<usize> {
    if groups == 0 {
        return Vec::new();
    }
    let mut v: Vec<usize> = [0.0, 0.25, 0.5, 0.75, 1.0]
        .iter()
        .map(|f: &f64| ((f * groups as f64).ceil() as usize).clamp(1, groups) - 1)
        .collect();
    v.dedup();
    v
}

/// How similar a randomised model's map is to the trained model's.
#[derive(Debug, Clone, Copy)]
pub struct Similarity {
    /// Spearman's ρ of the per-position maps (`None` when one is constant).
    pub spearman: Option<f64>,
    /// SSIM of the per-pixel maps (images).
    pub ssim: Option<f64>,
}

/// Compares two per-position maps; `image` gives `(height, width)` for SSIM.
pub fn similarity(
    original: &[f32],
    randomized: &[f32],
    image: Option<(usize, usize)>,
) -> Similarity {
    // Two constant maps (an all-zero map before and after) rank nothing differently: the map
    // is unchanged, ρ = 1. Spearman's ρ itself is undefined there, and counting it as 0 would
    // pass a method whose map never depended on the model.
    let constant = |m: &[f32]| m.windows(2).all(|w| w[0] == w[1]);
    Similarity {
        spearman: if constant(original) && constant(randomized) {
            Some(1.0)
        } else {
            spearman(original, randomized)
        },
        ssim: image.and_then(|(h, w)| ssim(original, randomized, h, w)),
    }
}

/// The verdict of the check: a method fails when, with every layer destroyed, its maps still
/// rank-correlate with the trained model's at mean |ρ| ≥ `threshold` (a map that turned
/// constant — nothing left to rank — counts as changed, ρ = 0; one constant before and after
/// as unchanged, ρ = 1, from [`similarity`]).
pub fn passes(final_step_spearman: &[Option<f64>], threshold: f64) -> bool {
    let values: Vec<f64> = final_step_spearman
        .iter()
        .map(|r| r.map_or(0.0, f64::abs))
        .collect();
    if values.is_empty() {
        return false;
    }
    values.iter().sum::<f64>() / (values.len() as f64) < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_end_with_everything_destroyed() {
        assert_eq!(cascade_steps(14), vec![0, 3, 6, 10, 13]);
        assert_eq!(cascade_steps(2), vec![0, 1]);
        assert_eq!(cascade_steps(1), vec![0]);
    }

    #[test]
    fn a_map_constant_before_and_after_is_unchanged() {
        let zeros = vec![0f32; 16];
        let s = similarity(&zeros, &zeros, None);
        assert_eq!(s.spearman, Some(1.0));
        assert!(!passes(&[s.spearman], 0.5), "an all-zero map passed");
        let varied: Vec<f32> = (0..16).map(|i| i as f32).collect();
        assert_eq!(similarity(&varied, &zeros, None).spearman, None);
        assert!(passes(&[similarity(&varied, &zeros, None).spearman], 0.5));
    }

    #[test]
    fn an_unchanged_map_fails_and_a_scrambled_one_passes() {
        let a: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        let same = similarity(&a, &a, Some((8, 8)));
        assert!(!passes(&[same.spearman], 0.5));
        let scrambled: Vec<f32> = (0..64)
            .map(|i| ((i * 29 % 64) as f32 * 1.3).cos())
            .collect();
        let s = similarity(&a, &scrambled, Some((8, 8)));
        assert!(s.spearman.unwrap().abs() < 0.5);
        assert!(passes(&[s.spearman], 0.5));
    }
}
