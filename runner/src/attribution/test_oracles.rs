//! Analytic oracles shared by the methods' and the evaluation's tests.

use super::oracle::Oracle;
use glassbox_models::Result;

/// `f(x) = Σᵢ φ(cᵢ, xᵢ)`, its gradient `∂φ/∂x` element by element: separable functions whose
/// attributions are known in closed form (a weighted sum of squares, a kink, a plain sum).
pub(crate) struct Separable {
    pub(crate) x: Vec<f32>,
    /// One coefficient per feature.
    pub(crate) c: Vec<f32>,
    pub(crate) phi: fn(f32, f32) -> f64,
    pub(crate) dphi: fn(f32, f32) -> f32,
}

/// `f(x) = Σ cᵢ xᵢ²`, gradient `2cᵢxᵢ`.
pub(crate) fn quadratic(c: Vec<f32>, x: Vec<f32>) -> Separable {
    Separable {
        x,
        c,
        phi: |c, v| f64::from(c * v * v),
        dphi: |c, v| 2.0 * c * v,
    }
}

impl Oracle for Separable {
    fn input(&self) -> &[f32] {
        &self.x
    }
    fn width(&self) -> usize {
        1
    }
    fn values(&self, inputs: &[Vec<f32>]) -> Result<Vec<f64>> {
        Ok(inputs
            .iter()
            .map(|x| x.iter().zip(&self.c).map(|(&v, &c)| (self.phi)(c, v)).sum())
            .collect())
    }
    fn gradients(&self, inputs: &[Vec<f32>]) -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
        let g = inputs
            .iter()
            .map(|x| {
                x.iter()
                    .zip(&self.c)
                    .map(|(&v, &c)| (self.dphi)(c, v))
                    .collect()
            })
            .collect();
        Ok((self.values(inputs)?, g))
    }
}
