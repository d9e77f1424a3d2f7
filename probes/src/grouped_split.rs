//! Seeded train/validation/test split that keeps every group — the tokens of one text — in
//! one part, stratified by class as far as whole groups allow.
//!
//! Splitting token rows independently puts tokens of the same sentence on both sides, so a
//! probe can score on test by recognising the sentence (its context is in every token's
//! activation) rather than the label. Keeping texts whole is what scikit-learn's
//! `StratifiedGroupKFold` does for cross-validation; the assignment here is a greedy one in two
//! phases:
//!
//! 1. *Coverage.* Classes from the fewest groups up: for each part still lacking a class, the
//!    next unassigned group (in seeded order) holding it goes there. A class that runs out of
//!    groups before every part has it is reported, so the caller can leave it out.
//! 2. *Balance.* Every other group, in seeded order, goes to the part where it most reduces
//!    `Σ_part Σ_class (rows − share · n_class)² / n_class`: the parts' class counts move
//!    towards their shares, rare classes weighing as much per row-fraction as common ones.

use crate::Split;
use glassbox_data::rng::SeededRng;
use std::collections::HashMap;

/// The classes a grouped split could not place in every part: each occurs in too few groups
/// (or its groups went to the same parts for other classes' sake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncovered(pub Vec<usize>);

/// Splits rows `0..classes.len()` keeping rows with equal `groups[i]` together; parts hold
/// about `test_fraction` and `validation_fraction` of each class's rows. Same seed, same split.
pub fn grouped_stratified_split(
    classes: &[usize],
    groups: &[u64],
    n_classes: usize,
    validation_fraction: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<Split, Uncovered> {
    assert_eq!(classes.len(), groups.len(), "one group per row");
    // Parts in the order coverage fills them: test, validation, train.
    let shares = [
        test_fraction,
        validation_fraction,
        1.0 - test_fraction - validation_fraction,
    ];
    let used: Vec<usize> = (0..3).filter(|&p| shares[p] > 0.0).collect();

    // Groups in order of first appearance, with their rows and class counts.
    let mut index_of: HashMap<u64, usize> = HashMap::new();
    let mut rows_of: Vec<Vec<usize>> = Vec::new();
    for (row, g) in groups.iter().enumerate() {
        let at = *index_of.entry(*g).or_insert_with(|| {
            rows_of.push(Vec::new());
            rows_of.len() - 1
        });
        rows_of[at].push(row);
    }
    let counts_of: Vec<Vec<(usize, usize)>> = rows_of
        .iter()
        .map(|rows| {
            let mut counts: Vec<(usize, usize)> = Vec::new();
            for &r in rows {
                match counts.iter_mut().find(|(c, _)| *c == classes[r]) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((classes[r], 1)),
                }
            }
            counts
        })
        .collect();
    let mut order: Vec<usize> = (0..rows_of.len()).collect();
    SeededRng::new(seed).shuffle(&mut order);

    let mut n_rows = vec![0usize; n_classes];
    let mut n_groups = vec![0usize; n_classes];
    for counts in &counts_of {
        for &(c, n) in counts {
            n_rows[c] += n;
            n_groups[c] += 1;
        }
    }
    let mut at = Assignment {
        counts_of: &counts_of,
        part_of: vec![None; rows_of.len()],
        held: vec![[0; 3]; n_classes],
    };

    // Coverage, rarest classes first.
    let mut by_rarity: Vec<usize> = (0..n_classes).filter(|&c| n_groups[c] > 0).collect();
    by_rarity.sort_by_key(|&c| (n_groups[c], c));
    let mut uncovered = Vec::new();
    for &c in &by_rarity {
        for &part in &used {
            if at.held[c][part] > 0 {
                continue;
            }
            let next = order
                .iter()
                .copied()
                .find(|&g| at.part_of[g].is_none() && counts_of[g].iter().any(|&(k, _)| k == c));
            let Some(g) = next else {
                uncovered.push(c);
                break;
            };
            at.place(g, part);
        }
    }
    if !uncovered.is_empty() {
        uncovered.sort_unstable();
        return Err(Uncovered(uncovered));
    }

    // Balance: each remaining group where it moves the class counts most towards the shares
    // (the change in the sum of squares above, for this group's counts `k`).
    for &g in &order {
        if at.part_of[g].is_some() {
            continue;
        }
        let cost = |part: usize| -> f64 {
            counts_of[g]
                .iter()
                .map(|&(c, k)| {
                    let gap = at.held[c][part] as f64 - shares[part] * n_rows[c] as f64;
                    k as f64 * (2.0 * gap + k as f64) / n_rows[c] as f64
                })
                .sum()
        };
        let best = used
            .iter()
            .copied()
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
            .expect("train is always used");
        at.place(g, best);
    }

    let mut split = Split::default();
    for (g, rows) in rows_of.iter().enumerate() {
        let part = match at.part_of[g].expect("every group placed") {
            0 => &mut split.test,
            1 => &mut split.validation,
            _ => &mut split.train,
        };
        part.extend_from_slice(rows);
    }
    split.train.sort_unstable();
    split.validation.sort_unstable();
    split.test.sort_unstable();
    split.test_clusters = clusters(&split.test, groups);
    Ok(split)
}

/// Which part each group went to, and the rows per class and part so far.
struct Assignment<'a> {
    counts_of: &'a [Vec<(usize, usize)>],
    part_of: Vec<Option<usize>>,
    held: Vec<[usize; 3]>,
}

impl Assignment<'_> {
    fn place(&mut self, g: usize, part: usize) {
        self.part_of[g] = Some(part);
        for &(c, n) in &self.counts_of[g] {
            self.held[c][part] += n;
        }
    }
}

/// Positions into `rows` grouped by their rows' group, groups in order of first appearance.
pub(crate) fn clusters(rows: &[usize], groups: &[u64]) -> Vec<Vec<usize>> {
    let mut index_of: HashMap<u64, usize> = HashMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (position, &r) in rows.iter().enumerate() {
        let at = *index_of.entry(groups[r]).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[at].push(position);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n_groups` texts of 4–12 tokens; class 0 is common, 1 rarer, 2 rare and clumped.
    fn texts(n_groups: u64, seed: u64) -> (Vec<usize>, Vec<u64>) {
        let mut rng = SeededRng::new(seed);
        let (mut classes, mut groups) = (Vec::new(), Vec::new());
        for g in 0..n_groups {
            let len = 4 + rng.below(9);
            for _ in 0..len {
                let u = rng.unit_f64();
                classes.push(if g % 10 == 0 && u < 0.5 {
                    2
                } else if u < 0.3 {
                    1
                } else {
                    0
                });
                groups.push(1000 + g * 7);
            }
        }
        (classes, groups)
    }

    fn part_of_rows(split: &Split, n: usize) -> Vec<usize> {
        let mut part = vec![usize::MAX; n];
        for (p, rows) in [&split.test, &split.validation, &split.train]
            .into_iter()
            .enumerate()
        {
            for &r in rows {
                assert_eq!(part[r], usize::MAX, "row {r} in two parts");
                part[r] = p;
            }
        }
        assert!(part.iter().all(|&p| p != usize::MAX), "every row placed");
        part
    }

    #[test]
    fn texts_stay_whole_and_the_split_is_seeded() {
        let (classes, groups) = texts(120, 5);
        let a = grouped_stratified_split(&classes, &groups, 3, 0.2, 0.2, 9).unwrap();
        assert_eq!(
            a,
            grouped_stratified_split(&classes, &groups, 3, 0.2, 0.2, 9).unwrap()
        );
        assert_ne!(
            a,
            grouped_stratified_split(&classes, &groups, 3, 0.2, 0.2, 10).unwrap()
        );
        let part = part_of_rows(&a, classes.len());
        for r in 1..classes.len() {
            if groups[r] == groups[r - 1] {
                assert_eq!(part[r], part[r - 1], "text of row {r} split across parts");
            }
        }
    }

    #[test]
    fn each_part_holds_about_its_share_of_every_class() {
        let (classes, groups) = texts(400, 6);
        let split = grouped_stratified_split(&classes, &groups, 3, 0.2, 0.25, 1).unwrap();
        let part = part_of_rows(&split, classes.len());
        for c in 0..3 {
            let n = classes.iter().filter(|&&k| k == c).count() as f64;
            let share = |p: usize| {
                (0..classes.len())
                    .filter(|&r| classes[r] == c && part[r] == p)
                    .count() as f64
                    / n
            };
            for (p, want) in [(0, 0.25), (1, 0.2), (2, 0.55)] {
                let got = share(p);
                assert!(
                    (got - want).abs() < 0.03,
                    "class {c} part {p}: {got:.3} of its rows, want {want}"
                );
            }
        }
    }

    #[test]
    fn a_class_in_as_many_texts_as_parts_reaches_every_part() {
        // Class 1 occurs in exactly three texts, one token each.
        let mut classes = vec![0usize; 60];
        let groups: Vec<u64> = (0..60).map(|r| r / 6).collect();
        for text in [2usize, 5, 8] {
            classes[text * 6 + 3] = 1;
        }
        let split = grouped_stratified_split(&classes, &groups, 2, 0.2, 0.2, 3).unwrap();
        for rows in [&split.test, &split.validation, &split.train] {
            assert!(rows.iter().any(|&r| classes[r] == 1), "{split:?}");
        }
    }

    #[test]
    fn a_class_in_too_few_texts_is_reported() {
        let mut classes = vec![0usize; 60];
        let groups: Vec<u64> = (0..60).map(|r| r / 6).collect();
        classes[3] = 1;
        classes[4] = 1;
        classes[40] = 1;
        // Two texts hold class 1: three parts cannot all have it.
        assert_eq!(
            grouped_stratified_split(&classes, &groups, 2, 0.2, 0.2, 0),
            Err(Uncovered(vec![1]))
        );
        // Without a validation part two texts are enough.
        assert!(grouped_stratified_split(&classes, &groups, 2, 0.0, 0.2, 0).is_ok());
    }

    #[test]
    fn test_clusters_are_the_test_texts() {
        let (classes, groups) = texts(50, 7);
        let split = grouped_stratified_split(&classes, &groups, 3, 0.2, 0.2, 2).unwrap();
        let mut seen = vec![false; split.test.len()];
        for cluster in &split.test_clusters {
            let g = groups[split.test[cluster[0]]];
            for &position in cluster {
                assert_eq!(groups[split.test[position]], g);
                assert!(!std::mem::replace(&mut seen[position], true));
            }
        }
        assert!(seen.iter().all(|&s| s));
        let texts: std::collections::HashSet<u64> = split.test.iter().map(|&r| groups[r]).collect();
        assert_eq!(split.test_clusters.len(), texts.len());
    }
}
