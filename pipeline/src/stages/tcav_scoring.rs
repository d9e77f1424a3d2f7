//! TCAV's common end for text and vision runs: CAVs at every hook with target gradients, the
//! scores and their tests, the `tcav/*.parquet` tables, the commit and the terminal table.

use super::{Completion, Transaction};
use crate::config::TcavSection;
use anyhow::{Context, Result};
use glassbox_concepts::{
    run_tcav, write_cavs, write_scores, HookSets, Options, ScoreRow, TargetGradients,
};
use glassbox_models::HookPoint;
use std::collections::BTreeMap;

/// Pooled activations of the concept sets (first) and random sets (after), per hook.
pub(super) struct PooledSets<'a> {
    pub concepts: &'a [&'a str],
    pub sets: &'a [BTreeMap<HookPoint, Vec<f32>>],
    pub randoms: usize,
    pub width: &'a dyn Fn(HookPoint) -> usize,
}

/// The stage's common end for text and vision runs: trains the CAVs at every hook that has
/// target gradients (`sums`: target, hook, `n × width` sums), scores and tests them, writes
/// `tcav/*.parquet`, commits the stage and prints the table (or JSON).
pub(super) fn score_and_record(
    tx: Transaction,
    settings: &TcavSection,
    hooks: &[HookPoint],
    pooled: &PooledSets<'_>,
    sums: &[(String, HookPoint, Vec<f32>)],
    done: Completion,
) -> Result<Vec<ScoreRow>> {
    let n = pooled.concepts.len();
    let sets: Vec<HookSets<'_>> = hooks
        .iter()
        .filter(|hook| sums.iter().any(|(_, h, _)| h == *hook))
        .map(|hook| HookSets {
            hook: *hook,
            width: (pooled.width)(*hook),
            concepts: pooled
                .concepts
                .iter()
                .enumerate()
                .map(|(i, c)| (*c, pooled.sets[i][hook].as_slice()))
                .collect(),
            randoms: (0..pooled.randoms)
                .map(|r| pooled.sets[n + r][hook].as_slice())
                .collect(),
        })
        .collect();
    let gradients: Vec<TargetGradients<'_>> = sums
        .iter()
        .map(|(target, hook, s)| TargetGradients {
            target,
            hook: *hook,
            convention: settings.convention,
            sums: s,
        })
        .collect();
    let opts = Options {
        method: settings.cav,
        l2: settings.l2,
        alpha: settings.alpha,
        min_cav_accuracy: settings.min_cav_accuracy,
        bootstrap: settings.bootstrap,
        seed: settings.seed,
    };
    let (cavs, scores) = run_tcav(&sets, &gradients, &opts).context("TCAV failed")?;
    write_cavs(tx.run(), &cavs)?;
    write_scores(tx.run(), &scores)?;
    tx.commit(done, |_| {}, |config| config.tcav = Some(settings.clone()))?;
    Ok(scores)
}
