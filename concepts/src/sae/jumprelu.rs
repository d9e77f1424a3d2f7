//! Training JumpReLU SAEs (Rajamanoharan et al. 2024, "Jumping Ahead"; SAELens
//! `JumpReLUTrainingSAE` with its default `step` sparsity loss): `f_j = z_j · [z_j > θ_j]`
//! with `z = W_enc (x − b_dec) + b_enc`, and an L0 penalty `λ₀ Σ_j [z_j > θ_j]`.
//!
//! Neither the jump nor the step has a useful derivative in `θ`, so the thresholds learn from
//! straight-through estimates with a rectangle kernel of bandwidth `ε`
//! (`K(u) = [−½ < u < ½]`):
//! `∂f_j/∂θ_j ≈ −(θ_j/ε) K((z_j − θ_j)/ε)` and `∂[z_j > θ_j]/∂θ_j ≈ −(1/ε) K((z_j − θ_j)/ε)`.
//! Only pre-activations within `ε/2` of their threshold contribute, a sparse band found in the
//! same pass as the active codes; as in SAELens (and DeepMind's recipe) the estimates reach the
//! thresholds only, not the encoder. Thresholds are the parameters themselves, projected onto
//! `θ ≥ 0` after each step (SAELens ≥ 6: a log parameterisation barely moves a small
//! initial threshold at Adam's step sizes).

use super::codes::{by_row_blocks, Codes};
use super::gradients::code_gradients;
use super::Sae;

/// Entries with `|z_j − θ_j| < ε/2` (`z = pre + bias`), values `z` (of either sign).
pub(crate) fn band(pre: &[f32], width: usize, bias: &[f32], threshold: &[f32], eps: f32) -> Codes {
    by_row_blocks(
        pre,
        width,
        || (),
        |_, row, part| {
            for (j, ((p, b), t)) in row.iter().zip(bias).zip(threshold).enumerate() {
                let z = p + b;
                let u = (z - t) / eps;
                if u > -0.5 && u < 0.5 {
                    part.index.push(j as u32);
                    part.value.push(z);
                }
            }
        },
    )
}

/// `∂L/∂θ` from the band's entries: the reconstruction's `∂L/∂f_j = ⟨∂L/∂x̂, W_dec[j]⟩` times
/// `−θ_j/ε`, plus the L0 penalty's `−l0_scale/ε` (`l0_scale` = λ₀ over the loss's divisor).
pub(crate) fn threshold_gradients(
    sae: &Sae,
    band: &Codes,
    g_out: &[f32],
    eps: f32,
    l0_scale: f32,
) -> Vec<f32> {
    let through_codes = code_gradients(sae, band, g_out, 0.0);
    let mut grad = vec![0.0f32; sae.width];
    for (&j, g_f) in band.index.iter().zip(&through_codes) {
        let j = j as usize;
        grad[j] -= (sae.threshold[j] / eps) * g_f + l0_scale / eps;
    }
    grad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_band_holds_pre_activations_near_their_threshold_only() {
        // Thresholds 1.0 and 0.2, ε = 0.1: the band is (0.95, 1.05) and (0.15, 0.25).
        let pre = [
            0.96, 0.2, /* row 2 */ 1.06, 0.149, /* row 3 */ 1.04, 0.1,
        ];
        let band = band(&pre, 2, &[0.0, 0.0], &[1.0, 0.2], 0.1);
        assert_eq!(band.offsets, vec![0, 2, 2, 3]);
        assert_eq!(band.index, vec![0, 1, 0]);
        assert_eq!(band.value, vec![0.96, 0.2, 1.04]);
    }
}
