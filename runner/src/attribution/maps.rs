//! Attributions read off a model's internals rather than its input gradient: Grad-CAM (Selvaraju
//! et al. 2017) on a spatial hook, attention rollout (Abnar & Zuidema 2020) — and the edge
//! detector, a control that ignores the model, which the randomisation check must fail.

use candle_core::Tensor;
use glassbox_models::{HookPoint, ModelError, Result};

/// A map over a grid of cells, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// `rows × cols` values.
    pub values: Vec<f32>,
    /// Rows of cells.
    pub rows: usize,
    /// Columns of cells.
    pub cols: usize,
}

/// Whether a hook's positions are a CNN feature map (every position a cell) rather than a
/// transformer's tokens (position 0 the `[CLS]` token, then the patches).
fn is_feature_map(point: HookPoint) -> bool {
    matches!(
        point,
        HookPoint::Stem | HookPoint::Conv { .. } | HookPoint::Head
    )
}

/// Rows and columns of a grid of `cells` cells for an `height × width` image: the factorisation
/// whose aspect ratio is closest to the image's.
pub fn grid_shape(cells: usize, (height, width): (usize, usize)) -> (usize, usize) {
    let aspect = height as f64 / width.max(1) as f64;
    (1..=cells)
        .filter(|r| cells.is_multiple_of(*r))
        .map(|r| (r, cells / r))
        .min_by(|a, b| {
            let da = (a.0 as f64 / a.1 as f64 - aspect).abs();
            let db = (b.0 as f64 / b.1 as f64 - aspect).abs();
            da.total_cmp(&db)
        })
        .unwrap_or((1, cells))
}

/// Grad-CAM from a hook's activation and gradient (`[positions, channels]` each): channel
/// weights `αₖ` = the gradient's mean over the grid, map = ReLU(Σₖ αₖ Aₖ). Transformer hooks
/// drop the `[CLS]` position and lay the patches on their square grid (the ViT variant).
pub fn grad_cam(
    point: HookPoint,
    activation: &[f32],
    gradient: &[f32],
    channels: usize,
    image: (usize, usize),
) -> Result<Grid> {
    if channels == 0
        || activation.len() != gradient.len()
        || !activation.len().is_multiple_of(channels)
    {
        return Err(ModelError::Invalid(format!(
            "Grad-CAM at `{point}`: activation and gradient sizes disagree"
        )));
    }
    let positions = activation.len() / channels;
    let skip = usize::from(!is_feature_map(point));
    let cells = positions.saturating_sub(skip);
    let (rows, cols) = if skip == 1 {
        let side = (cells as f64).sqrt().round() as usize;
        if side * side != cells {
            return Err(ModelError::Invalid(format!(
                "Grad-CAM at `{point}`: {cells} patch tokens do not form a square grid; pick a ViT or CNN hook"
            )));
        }
        (side, side)
    } else {
        grid_shape(cells, image)
    };
    let rows_of = |v: &[f32]| -> Vec<f32> { v[skip * channels..].to_vec() };
    let (a, g) = (rows_of(activation), rows_of(gradient));
    let mut alpha = vec![0f64; channels];
    for row in g.chunks_exact(channels) {
        alpha
            .iter_mut()
            .zip(row)
            .for_each(|(s, v)| *s += f64::from(*v));
    }
    alpha.iter_mut().for_each(|s| *s /= cells as f64);
    let values = a
        .chunks_exact(channels)
        .map(|row| {
            let s: f64 = row.iter().zip(&alpha).map(|(a, w)| f64::from(*a) * w).sum();
            s.max(0.0) as f32
        })
        .collect();
    Ok(Grid { values, rows, cols })
}

/// Bilinear upsampling of a grid to `height × width` pixels (half-pixel centres, as PyTorch's
/// `interpolate(mode="bilinear", align_corners=False)`).
pub fn upsample(grid: &Grid, height: usize, width: usize) -> Vec<f32> {
    let coordinate = |out: usize, size_in: usize, size_out: usize| -> (usize, usize, f32) {
        let scale = size_in as f32 / size_out as f32;
        let src = ((out as f32 + 0.5) * scale - 0.5).max(0.0);
        let lo = (src.floor() as usize).min(size_in - 1);
        let hi = (lo + 1).min(size_in - 1);
        (lo, hi, src - lo as f32)
    };
    let mut out = vec![0f32; height * width];
    for y in 0..height {
        let (y0, y1, fy) = coordinate(y, grid.rows, height);
        for x in 0..width {
            let (x0, x1, fx) = coordinate(x, grid.cols, width);
            let at = |r: usize, c: usize| grid.values[r * grid.cols + c];
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out[y * width + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
    out
}

/// Attention rollout: per layer the head-averaged attention `A` (from the `[1, t, heads · t]`
/// patterns `hook_pattern` offers), `Â = ½A + ½I` row-normalised, multiplied from the first
/// layer up; returns row `query` of the product — how much each position flows into it.
pub fn rollout(patterns: &[Tensor], heads: usize, query: usize) -> Result<Vec<f32>> {
    let mut flow: Option<Vec<f64>> = None;
    let mut tokens = 0;
    for p in patterns {
        let (_, t, width) = p.dims3()?;
        if heads == 0 || width != heads * t {
            return Err(ModelError::Invalid(format!(
                "attention pattern {t}×{width} is not {heads} heads over {t} keys"
            )));
        }
        tokens = t;
        let v: Vec<f32> = p.flatten_all()?.to_vec1()?;
        let mut a = vec![0f64; t * t];
        for q in 0..t {
            for h in 0..heads {
                for k in 0..t {
                    a[q * t + k] += f64::from(v[q * width + h * t + k]) / heads as f64;
                }
            }
            a[q * t + q] += 1.0;
            let s: f64 = a[q * t..(q + 1) * t].iter().sum();
            a[q * t..(q + 1) * t].iter_mut().for_each(|x| *x /= s);
        }
        flow = Some(match flow {
            None => a,
            Some(r) => {
                // Â_l · R: this layer mixes what the layers below already mixed.
                let mut out = vec![0f64; t * t];
                for q in 0..t {
                    for m in 0..t {
                        let w = a[q * t + m];
                        if w != 0.0 {
                            for k in 0..t {
                                out[q * t + k] += w * r[m * t + k];
                            }
                        }
                    }
                }
                out
            }
        });
    }
    let flow =
        flow.ok_or_else(|| ModelError::Invalid("no attention patterns to roll out".into()))?;
    if query >= tokens {
        return Err(ModelError::Invalid(format!(
            "rollout query {query} beyond {tokens} tokens"
        )));
    }
    Ok(flow[query * tokens..(query + 1) * tokens]
        .iter()
        .map(|v| *v as f32)
        .collect())
}

/// Sobel edge magnitude of the channel-mean image (`height × width × 3` pixels): a "saliency
/// map" computed without the model, the control the parameter-randomisation check must fail.
pub fn edges(pixels: &[f32], height: usize, width: usize) -> Vec<f32> {
    let gray: Vec<f32> = pixels
        .chunks_exact(3)
        .map(|p| (p[0] + p[1] + p[2]) / 3.0)
        .collect();
    let at = |y: isize, x: isize| -> f32 {
        let y = y.clamp(0, height as isize - 1) as usize;
        let x = x.clamp(0, width as isize - 1) as usize;
        gray[y * width + x]
    };
    let mut out = vec![0f32; height * width];
    for y in 0..height as isize {
        for x in 0..width as isize {
            let gx = at(y - 1, x + 1) + 2.0 * at(y, x + 1) + at(y + 1, x + 1)
                - at(y - 1, x - 1)
                - 2.0 * at(y, x - 1)
                - at(y + 1, x - 1);
            let gy = at(y + 1, x - 1) + 2.0 * at(y + 1, x) + at(y + 1, x + 1)
                - at(y - 1, x - 1)
                - 2.0 * at(y - 1, x)
                - at(y - 1, x + 1);
            out[y as usize * width + x as usize] = (gx * gx + gy * gy).sqrt();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_cam_weights_channels_by_their_mean_gradient() {
        // 2×2 feature map, 2 channels: channel 0 has mean gradient 1, channel 1 mean −1.
        let act = [1.0, 0.0, 2.0, 1.0, 0.0, 3.0, 4.0, 0.5];
        let grad = [1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0];
        let g = grad_cam(HookPoint::Head, &act, &grad, 2, (8, 8)).unwrap();
        assert_eq!((g.rows, g.cols), (2, 2));
        assert_eq!(g.values, vec![1.0, 1.0, 0.0, 3.5]);
        // A ViT hook drops [CLS] (position 0).
        let mut act_vit = vec![100.0, 100.0];
        act_vit.extend(act);
        let mut grad_vit = vec![100.0, -100.0];
        grad_vit.extend(grad);
        let v = grad_cam(HookPoint::ResidPost(3), &act_vit, &grad_vit, 2, (8, 8)).unwrap();
        assert_eq!(v, g);
    }

    #[test]
    fn upsampling_a_constant_is_constant_and_corners_are_kept() {
        let g = Grid {
            values: vec![2.0; 6],
            rows: 2,
            cols: 3,
        };
        assert!(upsample(&g, 8, 12).iter().all(|v| (*v - 2.0).abs() < 1e-6));
        let g = Grid {
            values: vec![0.0, 1.0, 2.0, 3.0],
            rows: 2,
            cols: 2,
        };
        let u = upsample(&g, 4, 4);
        assert_eq!((u[0], u[3], u[12], u[15]), (0.0, 1.0, 2.0, 3.0));
    }

    #[test]
    fn rollout_of_identity_attention_stays_on_the_diagonal() {
        // Every head attends to itself: Â = I, the rollout of query 1 is e₁.
        let t = 3;
        let heads = 2;
        let mut v = vec![0f32; t * heads * t];
        for q in 0..t {
            for h in 0..heads {
                v[q * heads * t + h * t + q] = 1.0;
            }
        }
        let p = Tensor::from_vec(v, (1, t, heads * t), &candle_core::Device::Cpu).unwrap();
        let r = rollout(&[p.clone(), p], heads, 1).unwrap();
        assert_eq!(r, vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn edges_of_a_flat_image_are_zero_and_a_step_is_found() {
        let flat = vec![0.5f32; 6 * 6 * 3];
        assert!(edges(&flat, 6, 6).iter().all(|v| *v == 0.0));
        let step: Vec<f32> = (0..36)
            .flat_map(|i| [if i % 6 < 3 { 0.0 } else { 1.0 }; 3])
            .collect();
        let e = edges(&step, 6, 6);
        assert!(e[2 * 6 + 2] > 0.0 && e[2 * 6 + 3] > 0.0 && e[2 * 6] == 0.0);
    }
}
