//! Probing hooks in parallel: each (hook, label) job is independent, and one job alone keeps
//! two cores only partly busy (its rows split into a few chunks, the optimiser's own steps
//! serial). Jobs run on rayon's pool, as many at once as its threads, fewer when their
//! activations would not fit a memory budget; outputs come back in job order either way.

use crate::labels::{LabelSet, Level};
use crate::{Prepared, Result};
use glassbox_data::store::read_metadata;
use glassbox_data::{HookPoint, Pool, RunDir};
use rayon::prelude::*;

/// Activations of the jobs running at once stay under this (each job holds its rows and
/// about three standardised copies of them).
const FEATURE_BUDGET: usize = 1 << 30;

/// Bytes a job holds per activation value: the f32 rows and their standardised copies.
const BYTES_PER_VALUE: usize = 16;

/// How many jobs may run at once: rayon's threads, or fewer when the largest job's
/// activations times that count would exceed [`FEATURE_BUDGET`].
pub(crate) fn jobs_at_once(
    run: &RunDir,
    pool: Pool,
    jobs: &[(HookPoint, usize)],
    sets: &[(&LabelSet, &Prepared)],
) -> usize {
    // One footer read per hook and level, not per label.
    let mut widths = std::collections::HashMap::new();
    let largest = jobs
        .iter()
        .map(|&(hook, s)| {
            let (set, prepared) = sets[s];
            let width = *widths
                .entry((hook, set.level))
                .or_insert_with(|| stored_width(run, hook, set.level, pool).unwrap_or(0));
            prepared.rows.len() * width
        })
        .max()
        .unwrap_or(0);
    let fit = FEATURE_BUDGET / (largest * BYTES_PER_VALUE).max(1);
    fit.clamp(1, rayon::current_num_threads().max(1))
}

/// The width recorded in the first part's metadata; `None` when it cannot be read (the job
/// itself then reports what is wrong).
fn stored_width(run: &RunDir, hook: HookPoint, level: Level, pool: Pool) -> Option<usize> {
    let dir = match level {
        Level::Sequence => run.pooled_dir(hook, pool),
        Level::Token => run.activations_dir(hook),
    };
    let first = glassbox_data::run::list_parts(&dir)
        .ok()?
        .into_iter()
        .next()?;
    read_metadata(&first)
        .ok()?
        .get("glassbox.width")?
        .parse()
        .ok()
}

/// Runs `job` on every item, at most `at_once` at a time, and returns the outputs in item
/// order, or the first item's error in that order.
pub(crate) fn run_jobs<J: Sync, T: Send>(
    items: &[J],
    at_once: usize,
    job: impl Fn(&J) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let all = || items.par_iter().map(&job).collect::<Vec<Result<T>>>();
    let outputs = if at_once >= rayon::current_num_threads() {
        all()
    } else {
        // A smaller pool bounds the jobs in flight; their own parallel loops share it.
        match rayon::ThreadPoolBuilder::new().num_threads(at_once).build() {
            Ok(pool) => pool.install(all),
            Err(_) => items.iter().map(&job).collect(),
        }
    };
    outputs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProbeError;

    #[test]
    fn outputs_keep_item_order_and_the_first_error_wins() {
        let items: Vec<usize> = (0..50).collect();
        for at_once in [1, 2, 64] {
            let out = run_jobs(&items, at_once, |&i| Ok(i * 2)).unwrap();
            assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
            let err = run_jobs(&items, at_once, |&i| {
                if i % 7 == 3 {
                    Err(ProbeError::Invalid(format!("item {i}")))
                } else {
                    Ok(i)
                }
            })
            .unwrap_err();
            assert_eq!(
                err.to_string(),
                ProbeError::Invalid("item 3".into()).to_string()
            );
        }
    }
}
