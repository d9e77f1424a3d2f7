//! Seeded stratified train/test split.

use glassbox_data::rng::SeededRng;

/// Indices into the labelled examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// Holds out `round(n_c * test_fraction)` examples of each class `c` (at least one when the
/// class has two or more), chosen by a seeded shuffle. Same seed, same split.
pub fn stratified_split(
    classes: &[usize],
    n_classes: usize,
    test_fraction: f64,
    seed: u64,
) -> Result<Split, String> {
    let mut rng = SeededRng::new(seed);
    let mut train = Vec::new();
    let mut test = Vec::new();
    for c in 0..n_classes {
        let mut members: Vec<usize> = (0..classes.len()).filter(|&i| classes[i] == c).collect();
        rng.shuffle(&mut members);
        let n = members.len();
        let mut n_test = (n as f64 * test_fraction).round() as usize;
        if n >= 2 {
            n_test = n_test.clamp(1, n - 1);
        } else {
            n_test = 0;
        }
        test.extend_from_slice(&members[..n_test]);
        train.extend_from_slice(&members[n_test..]);
    }
    if test.is_empty() || train.is_empty() {
        return Err(format!(
            "too few examples ({}) to hold out a test set; every class needs at least two",
            classes.len()
        ));
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok(Split { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_disjoint_and_seeded() {
        let classes: Vec<usize> = (0..100).map(|i| usize::from(i % 4 == 0)).collect();
        let a = stratified_split(&classes, 2, 0.2, 3).unwrap();
        assert_eq!(a, stratified_split(&classes, 2, 0.2, 3).unwrap());
        assert_ne!(a, stratified_split(&classes, 2, 0.2, 4).unwrap());
        assert_eq!(a.train.len() + a.test.len(), 100);
        assert!(a.test.iter().all(|i| !a.train.contains(i)));
        let test_pos = a.test.iter().filter(|&&i| classes[i] == 1).count();
        assert_eq!(test_pos, 5, "25 positives × 0.2");
        assert_eq!(a.test.len(), 20);
    }

    #[test]
    fn too_small_is_an_error() {
        assert!(stratified_split(&[0, 1], 2, 0.25, 0).is_err());
    }
}
