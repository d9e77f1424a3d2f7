//! Fitting and scoring one probe.

use crate::{ProbeError, ProbeOptions, Split};
use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};

/// Held-out scores of one probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Fraction of test examples classified correctly.
    pub accuracy: f64,
    /// Test accuracy of always predicting the most frequent training class.
    pub majority_baseline: f64,
}

/// Trains on `split.train` and scores on `split.test`.
///
/// `values` is the row-major pooled matrix (`width` columns); `rows[i]` is the matrix row of
/// labelled example `i` and `classes[i]` its class. Features are standardised with the training
/// mean and standard deviation (a constant feature stays 0).
pub fn fit_and_score(
    values: &[f32],
    width: usize,
    rows: &[usize],
    classes: &[usize],
    n_classes: usize,
    split: &Split,
    opts: &ProbeOptions,
) -> Result<Score, ProbeError> {
    let gather = |idx: &[usize]| -> Array2<f64> {
        Array2::from_shape_fn((idx.len(), width), |(r, c)| {
            values[rows[idx[r]] * width + c] as f64
        })
    };
    let mut x_train = gather(&split.train);
    let mut x_test = gather(&split.test);
    let mean = x_train
        .mean_axis(ndarray::Axis(0))
        .expect("train set is not empty");
    let std = x_train
        .std_axis(ndarray::Axis(0), 0.0)
        .mapv(|s| if s > 1e-8 { s } else { 1.0 });
    for x in [&mut x_train, &mut x_test] {
        *x -= &mean;
        *x /= &std;
    }
    let y_train: Array1<usize> = split.train.iter().map(|&i| classes[i]).collect();
    let y_test: Vec<usize> = split.test.iter().map(|&i| classes[i]).collect();

    let mut counts = vec![0usize; n_classes];
    y_train.iter().for_each(|&c| counts[c] += 1);
    let majority = (0..n_classes)
        .max_by_key(|&c| (counts[c], std::cmp::Reverse(c)))
        .unwrap_or(0);
    let majority_baseline =
        y_test.iter().filter(|&&c| c == majority).count() as f64 / y_test.len() as f64;

    let train = Dataset::new(x_train, y_train);
    let model = MultiLogisticRegression::default()
        .alpha(opts.l2)
        .max_iterations(opts.max_iterations)
        .fit(&train)
        .map_err(|e| ProbeError::Fit(e.to_string()))?;
    let predicted = model.predict(&x_test);
    let correct = predicted
        .iter()
        .zip(&y_test)
        .filter(|(p, y)| *p == *y)
        .count();
    Ok(Score {
        accuracy: correct as f64 / y_test.len() as f64,
        majority_baseline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stratified_split;
    use glassbox_data::rng::SeededRng;

    fn gaussian(rng: &mut SeededRng) -> f64 {
        // Box–Muller.
        let u1 = rng.unit_f64().max(1e-12);
        let u2 = rng.unit_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Synthetic activations; label = sign of a planted direction (plus noise) or random.
    fn planted(n: usize, width: usize, planted_label: bool) -> (Vec<f32>, Vec<usize>) {
        let mut rng = SeededRng::new(11);
        let direction: Vec<f64> = (0..width).map(|_| gaussian(&mut rng)).collect();
        let mut values = Vec::with_capacity(n * width);
        let mut classes = Vec::with_capacity(n);
        for _ in 0..n {
            let x: Vec<f64> = (0..width).map(|_| gaussian(&mut rng)).collect();
            let proj: f64 = x.iter().zip(&direction).map(|(a, b)| a * b).sum();
            let label = if planted_label {
                proj + 0.3 * gaussian(&mut rng) > 0.0
            } else {
                rng.unit_f64() < 0.5
            };
            classes.push(usize::from(label));
            values.extend(x.iter().map(|&v| v as f32));
        }
        (values, classes)
    }

    #[test]
    fn planted_direction_is_found_and_noise_is_not() {
        let (n, width) = (400, 16);
        let opts = ProbeOptions::default();
        let rows: Vec<usize> = (0..n).collect();

        let (values, classes) = planted(n, width, true);
        let split = stratified_split(&classes, 2, 0.25, 0).unwrap();
        let s = fit_and_score(&values, width, &rows, &classes, 2, &split, &opts).unwrap();
        assert!(
            s.accuracy > 0.9,
            "planted direction: accuracy {}",
            s.accuracy
        );

        let (values, classes) = planted(n, width, false);
        let split = stratified_split(&classes, 2, 0.25, 0).unwrap();
        let s = fit_and_score(&values, width, &rows, &classes, 2, &split, &opts).unwrap();
        assert!(
            s.accuracy < s.majority_baseline + 0.15,
            "random labels: accuracy {} vs majority {}",
            s.accuracy,
            s.majority_baseline
        );
    }
}
