//! Concept activation vectors: a linear classifier separating a concept's pooled activations
//! from a counterpart set's, its normal (pointing towards the concept) taken as the concept's
//! direction in raw activation space, with its held-out accuracy.

use glassbox_data::rng::SeededRng;
use glassbox_probes::logistic::{self, Problem};
use glassbox_probes::metrics::accuracy;
use glassbox_probes::{stratified_split, Standardizer};

/// How a CAV is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CavMethod {
    /// L2 logistic regression by L-BFGS (the probe classifier).
    Logistic,
    /// Linear SVM (hinge loss, L2) by seeded stochastic subgradient descent (Pegasos), as
    /// the TensorFlow reference's `SGDClassifier` does.
    Hinge,
}

impl CavMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CavMethod::Logistic => "logistic",
            CavMethod::Hinge => "hinge",
        }
    }
}

/// A trained concept vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Cav {
    /// Unit norm, raw activation space, pointing from the counterpart towards the concept.
    pub direction: Vec<f64>,
    /// Accuracy on a held-out third of both sets (stratified, seeded).
    pub accuracy: f64,
}

/// Trains a CAV of `concept` (rows of `width`) against `counterpart`.
pub fn train_cav(
    concept: &[f32],
    counterpart: &[f32],
    width: usize,
    method: CavMethod,
    l2: f64,
    seed: u64,
) -> Result<Cav, String> {
    let n_concept = concept.len() / width;
    let n_counter = counterpart.len() / width;
    let mut x = Vec::with_capacity(concept.len() + counterpart.len());
    x.extend_from_slice(concept);
    x.extend_from_slice(counterpart);
    let y: Vec<usize> = (0..n_concept + n_counter)
        .map(|i| usize::from(i < n_concept))
        .collect();
    let split = stratified_split(&y, 2, 0.0, 1.0 / 3.0, seed)?;
    let std = Standardizer::fit(&x, width, &split.train);
    let x_train = std.gather(&x, width, &split.train, None);
    let y_train: Vec<usize> = split.train.iter().map(|&i| y[i]).collect();
    let x_test = std.gather(&x, width, &split.test, None);
    let y_test: Vec<usize> = split.test.iter().map(|&i| y[i]).collect();
    let (weights, predicted) = match method {
        CavMethod::Logistic => {
            let problem = Problem {
                x: &x_train,
                d: width,
                y: &y_train,
                n_classes: 2,
            };
            let model = logistic::fit(&problem, l2, 100, None);
            (model.weights.clone(), model.predict(&x_test))
        }
        CavMethod::Hinge => {
            let (w, b) = pegasos(&x_train, width, &y_train, l2, seed);
            let predicted = x_test
                .chunks(width)
                .map(|row| usize::from(dot32(row, &w) + b > 0.0))
                .collect();
            (w, predicted)
        }
    };
    // Back to raw space: the standardised normal w maps to w / σ.
    let mut direction: Vec<f64> = weights.iter().zip(&std.std).map(|(w, s)| w / s).collect();
    let norm = direction.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err(
            "the classifier found no direction (all weights zero); the sets may be identical"
                .into(),
        );
    }
    direction.iter_mut().for_each(|v| *v /= norm);
    Ok(Cav {
        direction,
        accuracy: accuracy(&y_test, &predicted),
    })
}

fn dot32(row: &[f32], w: &[f64]) -> f64 {
    row.iter().zip(w).map(|(a, b)| *a as f64 * b).sum()
}

/// Pegasos: minimises `λ/2‖w‖² + mean(max(0, 1 − y(w·x + b)))` with step `1/(λt)`, 30 seeded
/// passes, `λ = max(l2, 1) / n` (the bias is not regularised).
fn pegasos(x: &[f32], width: usize, y: &[usize], l2: f64, seed: u64) -> (Vec<f64>, f64) {
    let n = y.len();
    let lambda = l2.max(1.0) / n as f64;
    let mut w = vec![0.0; width];
    let mut b = 0.0;
    let mut rng = SeededRng::new(seed ^ 0x0070_6567_6173_6f73);
    let mut order: Vec<usize> = (0..n).collect();
    let mut t = 0usize;
    for _ in 0..30 {
        rng.shuffle(&mut order);
        for &i in &order {
            t += 1;
            let eta = 1.0 / (lambda * t as f64);
            let row = &x[i * width..(i + 1) * width];
            let label = if y[i] == 1 { 1.0 } else { -1.0 };
            let margin = label * (dot32(row, &w) + b);
            w.iter_mut().for_each(|wi| *wi *= 1.0 - eta * lambda);
            if margin < 1.0 {
                for (wi, xi) in w.iter_mut().zip(row) {
                    *wi += eta * label * *xi as f64;
                }
                b += eta * label * 0.01;
            }
        }
    }
    (w, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets() -> (Vec<f32>, Vec<f32>) {
        let mut rng = SeededRng::new(2);
        let mut noise = || (rng.unit_f64() - 0.5) as f32;
        // Concept: unit 0 shifted by +2; counterpart centred.
        let concept: Vec<f32> = (0..60 * 4)
            .map(|i| noise() + if i % 4 == 0 { 2.0 } else { 0.0 })
            .collect();
        let counter: Vec<f32> = (0..60 * 4).map(|_| noise()).collect();
        (concept, counter)
    }

    #[test]
    fn both_methods_point_towards_the_concept() {
        let (concept, counter) = sets();
        for method in [CavMethod::Logistic, CavMethod::Hinge] {
            let cav = train_cav(&concept, &counter, 4, method, 1.0, 0).unwrap();
            assert!(cav.direction[0] > 0.9, "{method:?}: {:?}", cav.direction);
            assert!(cav.accuracy > 0.95, "{method:?}: {}", cav.accuracy);
            let norm: f64 = cav.direction.iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-12);
        }
    }
}
