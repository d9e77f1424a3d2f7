//! Per-token input normalisation some SAELens SAEs apply at run time (`normalize_activations`):
//! the SAE encodes a normalised copy of each activation row, and its reconstruction is mapped
//! back with that row's own statistics. Mirrors SAELens's `_setup_activation_normalization`
//! (sae_lens/saes/sae.py): `constant_norm_rescale` scales each row to norm √d;
//! `layer_norm` centres each row and divides by its standard deviation (Bessel-corrected,
//! plus 1e-5), and maps back by multiplying with the standard deviation (without the epsilon)
//! and adding the mean.

/// How an SAE normalises each input row before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputNorm {
    /// Raw rows (SAELens `none`; also `expected_average_only_in`, whose factor SAELens folds
    /// into the weights when it knows it and otherwise leaves out at inference).
    #[default]
    None,
    /// `x · √d / ‖x‖`.
    ConstantNormRescale,
    /// `(x − mean) / (std + 1e-5)`.
    LayerNorm,
}

/// SAELens's epsilon in `run_time_activation_ln_in`.
const LN_EPS: f32 = 1e-5;

/// What undoes one row's normalisation: `x = x' · scale + shift`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStats {
    pub scale: f32,
    pub shift: f32,
}

impl InputNorm {
    /// The `normalize_activations` value of a SAELens config, or `None` when glassbox cannot
    /// reproduce it.
    pub fn from_saelens(name: &str) -> Option<Self> {
        match name {
            "none" | "expected_average_only_in" => Some(Self::None),
            "constant_norm_rescale" => Some(Self::ConstantNormRescale),
            "layer_norm" => Some(Self::LayerNorm),
            _ => None,
        }
    }

    /// The SAELens name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ConstantNormRescale => "constant_norm_rescale",
            Self::LayerNorm => "layer_norm",
        }
    }

    /// Normalises `x` (`rows × d`) in place; returns each row's [`RowStats`] (empty for
    /// [`InputNorm::None`]). A zero row stays zero (SAELens would divide by zero).
    pub fn apply(self, x: &mut [f32], d: usize) -> Vec<RowStats> {
        match self {
            Self::None => Vec::new(),
            Self::ConstantNormRescale => x
                .chunks_exact_mut(d)
                .map(|row| {
                    let norm = row
                        .iter()
                        .map(|v| f64::from(*v).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    let coeff = if norm > 0.0 {
                        ((d as f64).sqrt() / norm) as f32
                    } else {
                        1.0
                    };
                    row.iter_mut().for_each(|v| *v *= coeff);
                    RowStats {
                        scale: 1.0 / coeff,
                        shift: 0.0,
                    }
                })
                .collect(),
            Self::LayerNorm => x
                .chunks_exact_mut(d)
                .map(|row| {
                    let n = row.len() as f64;
                    let mean = row.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
                    let var = row
                        .iter()
                        .map(|v| (f64::from(*v) - mean).powi(2))
                        .sum::<f64>()
                        / (n - 1.0).max(1.0);
                    let std = var.sqrt() as f32;
                    let (mean, div) = (mean as f32, std + LN_EPS);
                    row.iter_mut().for_each(|v| *v = (*v - mean) / div);
                    RowStats {
                        scale: std,
                        shift: mean,
                    }
                })
                .collect(),
        }
    }

    /// Maps reconstructions (`rows × d`, in the normalised space) back to each row's own
    /// scale with the `stats` [`InputNorm::apply`] returned.
    pub fn undo(self, x_hat: &mut [f32], d: usize, stats: &[RowStats]) {
        if self == Self::None {
            return;
        }
        for (row, s) in x_hat.chunks_exact_mut(d).zip(stats) {
            row.iter_mut().for_each(|v| *v = *v * s.scale + s.shift);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_normalised_and_mapped_back() {
        let x = vec![3.0f32, 4.0, 0.0, 0.0, 1.0, 2.0, 3.0, 6.0];
        let mut c = x.clone();
        let stats = InputNorm::ConstantNormRescale.apply(&mut c, 4);
        let norm = |r: &[f32]| r.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm(&c[..4]) - 2.0).abs() < 1e-6 && (norm(&c[4..]) - 2.0).abs() < 1e-6);
        InputNorm::ConstantNormRescale.undo(&mut c, 4, &stats);
        assert!(c.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-5));

        let mut l = x.clone();
        let stats = InputNorm::LayerNorm.apply(&mut l, 4);
        let mean: f32 = l[4..].iter().sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6);
        // Back with the std alone, as SAELens does: off by the epsilon's share only.
        InputNorm::LayerNorm.undo(&mut l, 4, &stats);
        assert!(l.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-4), "{l:?}");
    }
}
