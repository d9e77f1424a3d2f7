//! Ridge regression probes for numeric labels (linfa-elasticnet with no L1 part), on
//! standardised features.

use crate::{ProbeError, Result};
use linfa::prelude::*;
use linfa_elasticnet::ElasticNet;
use ndarray::{Array1, Array2};

/// A fitted ridge regression: `ŷ = x · weights + intercept` on standardised features.
#[derive(Debug, Clone)]
pub struct Ridge {
    pub weights: Vec<f64>,
    pub intercept: f64,
}

/// Fits `1/(2n)·‖y − Xw − b‖² + alpha/2·‖w‖²`.
pub fn fit(x: &[f32], d: usize, y: &[f64], alpha: f64) -> Result<Ridge> {
    let n = y.len();
    let xs = Array2::from_shape_fn((n, d), |(r, c)| x[r * d + c] as f64);
    let dataset = Dataset::new(xs, Array1::from(y.to_vec()));
    let model = ElasticNet::params()
        .penalty(alpha)
        .l1_ratio(0.0)
        .max_iterations(1000)
        .tolerance(1e-6)
        .fit(&dataset)
        .map_err(|e| ProbeError::Fit(e.to_string()))?;
    Ok(Ridge {
        weights: model.hyperplane().to_vec(),
        intercept: model.intercept(),
    })
}

impl Ridge {
    pub fn predict(&self, x: &[f32]) -> Vec<f64> {
        x.chunks(self.weights.len())
            .map(|row| {
                row.iter()
                    .zip(&self.weights)
                    .map(|(a, w)| *a as f64 * w)
                    .sum::<f64>()
                    + self.intercept
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_linear_function() {
        let n = 100;
        let x: Vec<f32> = (0..n * 2)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let y: Vec<f64> = (0..n)
            .map(|r| 2.0 * x[2 * r] as f64 - x[2 * r + 1] as f64 + 0.5)
            .collect();
        let model = fit(&x, 2, &y, 1e-6).unwrap();
        let p = model.predict(&x);
        assert!(crate::metrics::r2(&y, &p) > 0.999);
    }
}
