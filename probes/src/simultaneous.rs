//! Simultaneous intervals for "the top item is ahead of item h", over every pair of items
//! (hooks of one label, attribution methods of one target), from one set of paired bootstrap
//! resamples.
//!
//! The top item is the winner of the observed data, so the usual paired interval of its lead
//! over each other item inherits the winner's curse: with twelve equally good hooks, the
//! observed best beats at least one other "significantly" in most test sets, and Bonferroni
//! over the eleven leads does not undo the selection. The intervals here cover every pairwise
//! difference at once (a bootstrap max-|t| over all pairs, the resampling form of Tukey's
//! simultaneous comparisons; Romano & Wolf 2005): with probability ≈ 1 − α every pair's
//! difference lies in its interval, whichever item came out on top, so "ahead of h" claims hold
//! together at 1 − α.

/// For each item, the interval of `observed[top] − observed[h]` that holds simultaneously with
/// every other pair's at `1 - alpha`; `None` at `top`. `resampled[b][h]` is item h's score on
/// bootstrap resample b (every item scored on the same resample). Each interval is the observed
/// difference ± c·se, se the bootstrap standard deviation of that difference and c the
/// `1 - alpha` quantile over resamples of the largest |difference − observed| / se among all
/// pairs. A pair whose difference never varies (se = 0) keeps its observed difference exactly.
pub fn leads_over(
    observed: &[f64],
    resampled: &[Vec<f64>],
    top: usize,
    alpha: f64,
) -> Vec<Option<(f64, f64)>> {
    let items = observed.len();
    let pairs: Vec<(usize, usize)> = (0..items)
        .flat_map(|i| (i + 1..items).map(move |j| (i, j)))
        .collect();
    let se: Vec<f64> = pairs
        .iter()
        .map(|&(i, j)| standard_deviation(resampled.iter().map(|s| s[i] - s[j])))
        .collect();
    let mut largest: Vec<f64> = resampled
        .iter()
        .map(|s| {
            pairs
                .iter()
                .zip(&se)
                .filter(|(_, &se)| se > 0.0)
                .map(|(&(i, j), se)| ((s[i] - s[j]) - (observed[i] - observed[j])).abs() / se)
                .fold(0.0, f64::max)
        })
        .collect();
    largest.sort_by(f64::total_cmp);
    let c = match largest.len() {
        0 => f64::NAN,
        n => largest[(((1.0 - alpha) * (n - 1) as f64).ceil() as usize).min(n - 1)],
    };
    (0..items)
        .map(|h| {
            (h != top).then(|| {
                let (i, j) = (top.min(h), top.max(h));
                let p = pairs.iter().position(|&q| q == (i, j)).expect("every pair");
                let lead = observed[top] - observed[h];
                match se[p] {
                    0.0 => (lead, lead),
                    se => (lead - c * se, lead + c * se),
                }
            })
        })
        .collect()
}

/// Sample standard deviation (n − 1); 0 for fewer than two values.
fn standard_deviation(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    if v.len() < 2 {
        return 0.0;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_items_give_the_plain_interval_and_the_top_gets_none() {
        // Resampled differences 1, 2, 3 (se 1) around an observed 2: with one pair c is the
        // largest |deviation| that keeps 1 − alpha of the resamples: 1.
        let resampled = vec![vec![1.0, 0.0], vec![2.0, 0.0], vec![3.0, 0.0]];
        let out = leads_over(&[2.0, 0.0], &resampled, 0, 0.05);
        assert_eq!(out, vec![None, Some((1.0, 3.0))]);
        let out = leads_over(&[2.0, 0.0], &resampled, 1, 0.05);
        assert_eq!(out, vec![Some((-3.0, -1.0)), None]);
    }

    #[test]
    fn constant_differences_keep_their_value() {
        let resampled = vec![vec![0.5, 0.5, 0.1], vec![0.7, 0.7, 0.3]];
        let out = leads_over(&[0.6, 0.6, 0.2], &resampled, 0, 0.05);
        assert_eq!(out[1], Some((0.0, 0.0)));
        let (lo, hi) = out[2].unwrap();
        assert!((lo - 0.4).abs() < 1e-12 && (hi - 0.4).abs() < 1e-12);
    }

    #[test]
    fn more_items_widen_every_interval() {
        // The same two items, then the same two beside eight noisy others: the pair's own
        // interval widens because the quantile is taken over more pairs.
        let mut rng = glassbox_data::rng::SeededRng::new(3);
        let mut noise = || (rng.below(1000) as f64 / 1000.0) - 0.5;
        let resampled: Vec<Vec<f64>> = (0..500)
            .map(|_| (0..10).map(|h| h as f64 * 0.1 + noise()).collect())
            .collect();
        let observed: Vec<f64> = (0..10).map(|h| h as f64 * 0.1).collect();
        let two: Vec<Vec<f64>> = resampled.iter().map(|s| s[..2].to_vec()).collect();
        let alone = leads_over(&observed[..2], &two, 1, 0.05)[0].unwrap();
        let among = leads_over(&observed, &resampled, 1, 0.05)[0].unwrap();
        assert!(
            among.0 < alone.0 && among.1 > alone.1,
            "{alone:?} {among:?}"
        );
    }
}
