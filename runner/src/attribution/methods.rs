//! The gradient and perturbation methods, written once against [`Oracle`]: each returns an
//! attribution per input feature (same layout as the input), which callers sum per position.
//! Definitions follow Captum 0.9 (`Saliency` with `abs=True`, `InputXGradient`,
//! `IntegratedGradients`, `NoiseTunnel` over `Saliency`, `Occlusion`), so the numbers compare.

use super::oracle::Oracle;
use super::quadrature::IgRule;
use glassbox_data::rng::SeededRng;
use glassbox_models::{ModelError, Result};

/// `(f(x), |∇f(x)|)`.
pub fn saliency(o: &dyn Oracle, x: &[f32]) -> Result<(f64, Vec<f32>)> {
    let (f, mut g) = o.gradients(&[x.to_vec()])?;
    let g = g.pop().expect("one input");
    Ok((f[0], g.into_iter().map(f32::abs).collect()))
}

/// `(f(x), x ⊙ ∇f(x))`.
pub fn gradient_x_input(o: &dyn Oracle, x: &[f32]) -> Result<(f64, Vec<f32>)> {
    let (f, mut g) = o.gradients(&[x.to_vec()])?;
    let g = g.pop().expect("one input");
    Ok((f[0], g.iter().zip(x).map(|(g, x)| g * x).collect()))
}

/// Integrated gradients from `baseline`: `(x − x') ⊙ Σᵢ wᵢ ∇f(x' + αᵢ(x − x'))`.
pub fn integrated_gradients(
    o: &dyn Oracle,
    x: &[f32],
    baseline: &[f32],
    steps: usize,
    rule: IgRule,
) -> Result<Vec<f32>> {
    if steps == 0 {
        return Err(ModelError::Invalid(
            "integrated gradients need at least 1 step".into(),
        ));
    }
    let points = rule.points(steps);
    let inputs: Vec<Vec<f32>> = points
        .iter()
        .map(|&(alpha, _)| {
            x.iter()
                .zip(baseline)
                .map(|(x, b)| b + (alpha as f32) * (x - b))
                .collect()
        })
        .collect();
    let (_, grads) = o.gradients(&inputs)?;
    // Accumulate the weighted gradients in f64: 64+ terms per feature.
    let mut total = vec![0f64; x.len()];
    for (g, &(_, w)) in grads.iter().zip(&points) {
        total.iter_mut().zip(g).for_each(|(t, g)| *t += w * f64::from(*g));
    }
    Ok(total
        .into_iter()
        .zip(x.iter().zip(baseline))
        .map(|(t, (x, b))| (t * f64::from(x - b)) as f32)
        .collect())
}

/// SmoothGrad: the mean of `|∇f|` (or of `∇f²` when `squared`) over `samples` copies of `x`
/// with Gaussian noise of standard deviation `noise · (max x − min x)` (Smilkov et al.'s
/// relative noise level), drawn from `seed`.
pub fn smoothgrad(
    o: &dyn Oracle,
    x: &[f32],
    samples: usize,
    noise: f64,
    seed: u64,
    squared: bool,
) -> Result<Vec<f32>> {
    if samples == 0 {
        return Err(ModelError::Invalid("SmoothGrad needs at least 1 sample".into()));
    }
    let (lo, hi) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    let sigma = noise * f64::from(hi - lo).max(f64::EPSILON);
    let mut rng = SeededRng::new(seed);
    let inputs: Vec<Vec<f32>> = (0..samples)
        .map(|_| {
            x.iter()
                .map(|v| v + (sigma * rng.gaussian()) as f32)
                .collect()
        })
        .collect();
    let (_, grads) = o.gradients(&inputs)?;
    let mut total = vec![0f64; x.len()];
    for g in &grads {
        total.iter_mut().zip(g).for_each(|(t, g)| {
            let g = f64::from(*g);
            *t += if squared { g * g } else { g.abs() }
        });
    }
    Ok(total
        .into_iter()
        .map(|t| (t / samples as f64) as f32)
        .collect())
}

/// Occlusion: each window's feature indices replaced by the baseline's, `f(x) − f(x_occluded)`
/// credited to every feature in the window, averaged over the windows covering it (Captum's
/// `Occlusion`; features no window covers get 0). Returns `(f(x), attributions)`.
pub fn occlusion(
    o: &dyn Oracle,
    x: &[f32],
    baseline: &[f32],
    windows: &[Vec<usize>],
) -> Result<(f64, Vec<f32>)> {
    let mut inputs = Vec::with_capacity(windows.len() + 1);
    inputs.push(x.to_vec());
    for w in windows {
        let mut occluded = x.to_vec();
        for &i in w {
            occluded[i] = baseline[i];
        }
        inputs.push(occluded);
    }
    let f = o.values(&inputs)?;
    let mut total = vec![0f64; x.len()];
    let mut count = vec![0u32; x.len()];
    for (w, fw) in windows.iter().zip(&f[1..]) {
        let delta = f[0] - fw;
        for &i in w {
            total[i] += delta;
            count[i] += 1;
        }
    }
    Ok((
        f[0],
        total
            .into_iter()
            .zip(count)
            .map(|(t, c)| if c == 0 { 0.0 } else { (t / f64::from(c)) as f32 })
            .collect(),
    ))
}

/// Sums each position's `width` features: per-token (text) or per-pixel (images) attributions.
pub fn per_position(features: &[f32], width: usize) -> Vec<f32> {
    features
        .chunks_exact(width)
        .map(|c| c.iter().map(|v| f64::from(*v)).sum::<f64>() as f32)
        .collect()
}

/// Occlusion windows over a sequence of `tokens` tokens of `width` features each: `size`
/// consecutive tokens every `stride`, the last window flush with the end.
pub fn token_windows(tokens: usize, width: usize, size: usize, stride: usize) -> Vec<Vec<usize>> {
    starts(tokens, size, stride)
        .into_iter()
        .map(|s| (s * width..(s + size.min(tokens)) * width).collect())
        .collect()
}

/// Occlusion windows over a `height × width` RGB image: `size × size` squares every `stride`
/// pixels, all three channels, the last row and column of windows flush with the edges (so every
/// pixel is covered; Captum stops short when the stride does not land on the edge).
pub fn image_windows(height: usize, width: usize, size: usize, stride: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for y0 in starts(height, size, stride) {
        for x0 in starts(width, size, stride) {
            let mut w = Vec::with_capacity(size * size * 3);
            for y in y0..(y0 + size).min(height) {
                for x in x0..(x0 + size).min(width) {
                    let at = (y * width + x) * 3;
                    w.extend(at..at + 3);
                }
            }
            out.push(w);
        }
    }
    out
}

/// Window starts `0, stride, …` plus one flush with the end when the stride misses it.
fn starts(len: usize, size: usize, stride: usize) -> Vec<usize> {
    let size = size.min(len).max(1);
    let stride = stride.max(1);
    let last = len - size;
    let mut v: Vec<usize> = (0..=last).step_by(stride).collect();
    if v.last() != Some(&last) {
        v.push(last);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f(x) = Σ cᵢ xᵢ² — gradient 2cᵢxᵢ, known in closed form.
    struct Quadratic {
        c: Vec<f32>,
        x: Vec<f32>,
    }

    impl Oracle for Quadratic {
        fn input(&self) -> &[f32] {
            &self.x
        }
        fn width(&self) -> usize {
            1
        }
        fn values(&self, inputs: &[Vec<f32>]) -> Result<Vec<f64>> {
            Ok(inputs
                .iter()
                .map(|x| {
                    x.iter()
                        .zip(&self.c)
                        .map(|(x, c)| f64::from(c * x * x))
                        .sum()
                })
                .collect())
        }
        fn gradients(&self, inputs: &[Vec<f32>]) -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
            let g = inputs
                .iter()
                .map(|x| x.iter().zip(&self.c).map(|(x, c)| 2.0 * c * x).collect())
                .collect();
            Ok((self.values(inputs)?, g))
        }
    }

    /// IG of cᵢxᵢ² from 0 is exactly cᵢxᵢ² per feature (the integrand is linear in α, so every
    /// rule with ≥ 2 points — and Gauss–Legendre with 1 — is exact): completeness holds.
    #[test]
    fn integrated_gradients_is_exact_on_a_quadratic() {
        let o = Quadratic {
            c: vec![1.0, -2.0, 0.5],
            x: vec![1.5, 0.25, -3.0],
        };
        let zero = vec![0.0; 3];
        for rule in [IgRule::GaussLegendre, IgRule::RiemannTrapezoid, IgRule::RiemannMiddle] {
            let a = integrated_gradients(&o, &o.x, &zero, 8, rule).unwrap();
            for ((a, x), c) in a.iter().zip(&o.x).zip(&o.c) {
                assert!((a - c * x * x).abs() < 1e-5, "{rule:?}: {a} vs {}", c * x * x);
            }
        }
    }

    #[test]
    fn occlusion_of_single_features_is_the_exact_difference() {
        let o = Quadratic {
            c: vec![1.0, 2.0, 3.0, 4.0],
            x: vec![1.0, 1.0, 2.0, -1.0],
        };
        let windows = token_windows(4, 1, 1, 1);
        let (f, a) = occlusion(&o, &o.x, &[0.0; 4], &windows).unwrap();
        assert_eq!(f, 1.0 + 2.0 + 12.0 + 4.0);
        assert_eq!(a, vec![1.0, 2.0, 12.0, 4.0]);
    }

    #[test]
    fn windows_cover_every_pixel_and_stay_inside() {
        for (h, w, size, stride) in [(224, 224, 16, 8), (10, 7, 4, 3), (5, 5, 8, 2)] {
            let windows = image_windows(h, w, size, stride);
            let mut covered = vec![false; h * w * 3];
            for win in &windows {
                for &i in win {
                    covered[i] = true;
                }
            }
            assert!(covered.iter().all(|c| *c), "{h}×{w} size {size} stride {stride}");
        }
        assert_eq!(image_windows(224, 224, 16, 8).len(), 27 * 27);
        assert_eq!(token_windows(5, 2, 2, 2).len(), 3);
    }
}
