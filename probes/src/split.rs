//! Seeded stratified train/validation/test split.

use crate::metrics::{bootstrap_ci, cluster_bootstrap_ci, each_cluster_resample, each_resample};
use glassbox_data::rng::SeededRng;

/// Indices into the labelled examples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    /// Used to choose the L2 strength; empty when there is nothing to choose.
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
    /// The test part's bootstrap clusters, as positions into `test`: the tokens of one text
    /// are resampled together, since they are not independent draws. Empty: every test row
    /// is its own cluster.
    pub test_clusters: Vec<Vec<usize>>,
}

impl Split {
    /// Percentile-bootstrap 95% interval of `metric` over the test part (positions into
    /// `test`), resampling its clusters when it has them and its rows otherwise.
    pub fn test_bootstrap_ci(
        &self,
        resamples: usize,
        seed: u64,
        metric: impl Fn(&[usize]) -> f64,
    ) -> (f64, f64) {
        if self.test_clusters.is_empty() {
            bootstrap_ci(self.test.len(), resamples, seed, metric)
        } else {
            cluster_bootstrap_ci(&self.test_clusters, resamples, seed, metric)
        }
    }

    /// The test part's independent units: its clusters (texts, at token level), else its rows.
    pub fn test_units(&self) -> usize {
        if self.test_clusters.is_empty() {
            self.test.len()
        } else {
            self.test_clusters.len()
        }
    }

    /// Calls `visit` with each bootstrap resample of the test part (positions into `test`),
    /// drawn as [`Self::test_bootstrap_ci`] draws them: for several statistics of the same
    /// resamples.
    pub fn each_test_resample(&self, resamples: usize, seed: u64, visit: impl FnMut(&[usize])) {
        if self.test_clusters.is_empty() {
            each_resample(self.test.len(), resamples, seed, visit)
        } else {
            each_cluster_resample(&self.test_clusters, resamples, seed, visit)
        }
    }
}

/// Holds out `round(n_c · test_fraction)` examples of each class `c` for testing and
/// `round(n_c · validation_fraction)` for validation (at least one each when the fraction is
/// positive), chosen by a seeded shuffle; the rest train. Same seed, same split. Regression
/// targets pass a single class.
pub fn stratified_split(
    classes: &[usize],
    n_classes: usize,
    validation_fraction: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<Split, String> {
    let mut rng = SeededRng::new(seed);
    let mut split = Split::default();
    let parts = 2 + usize::from(validation_fraction > 0.0);
    for c in 0..n_classes {
        let mut members: Vec<usize> = (0..classes.len()).filter(|&i| classes[i] == c).collect();
        let n = members.len();
        if n < parts {
            return Err(format!(
                "class {c} has {n} example(s), fewer than the {parts} parts of the split (train, {}test); add examples, cap fewer, or drop the class",
                if parts == 3 { "validation, " } else { "" }
            ));
        }
        rng.shuffle(&mut members);
        let share = |f: f64| ((n as f64 * f).round() as usize).max(usize::from(f > 0.0));
        let n_test = share(test_fraction).min(n - parts + 1);
        let n_val = share(validation_fraction).min(n - n_test - 1);
        split.test.extend_from_slice(&members[..n_test]);
        split
            .validation
            .extend_from_slice(&members[n_test..n_test + n_val]);
        split.train.extend_from_slice(&members[n_test + n_val..]);
    }
    split.train.sort_unstable();
    split.validation.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_disjoint_and_seeded() {
        let classes: Vec<usize> = (0..100).map(|i| usize::from(i % 4 == 0)).collect();
        let a = stratified_split(&classes, 2, 0.2, 0.2, 3).unwrap();
        assert_eq!(a, stratified_split(&classes, 2, 0.2, 0.2, 3).unwrap());
        assert_ne!(a, stratified_split(&classes, 2, 0.2, 0.2, 4).unwrap());
        assert_eq!(a.train.len() + a.validation.len() + a.test.len(), 100);
        assert!(a
            .test
            .iter()
            .all(|i| !a.train.contains(i) && !a.validation.contains(i)));
        assert!(a.validation.iter().all(|i| !a.train.contains(i)));
        let test_pos = a.test.iter().filter(|&&i| classes[i] == 1).count();
        assert_eq!(test_pos, 5, "25 positives × 0.2");
        assert_eq!(a.test.len(), 20);
        assert_eq!(a.validation.len(), 20);
    }

    #[test]
    fn too_small_is_an_error() {
        assert!(stratified_split(&[0, 1, 0, 1], 2, 0.25, 0.25, 0).is_err());
        assert!(stratified_split(&[0, 1, 0, 1], 2, 0.0, 0.25, 0).is_ok());
    }
}
