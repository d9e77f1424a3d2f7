//! What the hand-written CNN backwards (EfficientNet's, ResNet's) share: an activation's
//! derivative applied from its output, and sums over positions for TCAV.

use rayon::prelude::*;

/// Elements per parallel task of [`mask_where`].
const MASK_CHUNK: usize = 1 << 16;

/// `g *= 1[keep(y)]`: an activation's derivative from its output `y` (ReLU: `y > 0`; ReLU6:
/// `0 < y < 6`). In parallel: on one thread the mask was 11% of EfficientNet's integrated
/// gradients (arrays of up to 77 MB at batch 16).
pub(super) fn mask_where(g: &mut [f32], y: &[f32], keep: impl Fn(f32) -> bool + Sync) {
    g.par_chunks_mut(MASK_CHUNK)
        .zip(y.par_chunks(MASK_CHUNK))
        .for_each(|(g, y)| {
            g.iter_mut()
                .zip(y)
                .for_each(|(g, &y)| *g = if keep(y) { *g } else { 0.0 })
        });
}

/// Sums `[batch, positions, width]` over positions.
pub(super) fn position_sums(x: &[f32], batch: usize, width: usize) -> Vec<f32> {
    let per = x.len() / batch;
    let mut out = vec![0f32; batch * width];
    for (b, o) in out.chunks_exact_mut(width).enumerate() {
        for row in x[b * per..(b + 1) * per].chunks_exact(width) {
            o.iter_mut().zip(row).for_each(|(o, v)| *o += v);
        }
    }
    out
}
