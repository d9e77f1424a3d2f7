//! `glassbox extract --shard i/N`: one of N workers writing one extraction together.
//!
//! Each worker holds its shard's lock (and the run's lock shared, so disjoint shards run at
//! once and no whole-run stage starts under them), joins the extraction's staging folder —
//! the first one creates it and writes the [`ShardPlan`]; a worker started with different
//! settings is refused, naming them — and writes its parts (`k mod N = i`) and their markers.
//! Then it lets go of its shard and tries to take the whole run: the worker that finishes last
//! gets it, checks that every example is stored exactly once and commits the run, which is
//! then the single-process extraction byte for byte. A killed worker's shard is re-run alone;
//! running the extraction without `--shard` finishes whatever parts are left.

use super::extract::{check_existing, commit, outputs, prepare, ExtractRequest, Extracted};
use super::shard_worker::{plan_differences, publish_plan, shard_lease_key, take_run, RunTaken};
use super::Transaction;
use anyhow::{bail, Result};
use glassbox_data::lock::{LockScope, RunLock, SetupLock};
use glassbox_data::shards::{ShardPlan, ShardSpec, ShardStatus};
use glassbox_data::{Progress, RunDir};
use glassbox_runner::ExtractSummary;

/// What a shard worker did.
#[derive(Debug)]
pub enum ShardOutcome {
    /// The run already holds this extraction, complete.
    UpToDate,
    /// This shard's parts are written; the run is complete when the shards in `waiting` are.
    Done {
        shard: ShardSpec,
        parts: usize,
        resumed: usize,
        waiting: Vec<ShardStatus>,
    },
    /// This shard finished last: the coverage check passed and the run is committed.
    Committed {
        shard: ShardSpec,
        parts: usize,
        resumed: usize,
        extracted: Extracted,
    },
}

/// Runs shard `shard` of the extraction `req` into `run`.
pub fn run_extract_shard(
    run: &RunDir,
    req: &ExtractRequest<'_>,
    shard: ShardSpec,
    progress: &dyn Progress,
) -> Result<ShardOutcome> {
    if req.force {
        bail!(
            "--force cannot be combined with --shard: one worker would discard the other shards' \
             parts. Start the shards without --force (they resume), or run `glassbox extract \
             --force` once without --shard to start the run afresh"
        );
    }
    let started = std::time::Instant::now();
    let command = super::command_line();
    let remote = glassbox_remote::mirror_of(run.root());
    // On object storage the workers may be on other machines: the shard's lease in the bucket
    // keeps out a second worker of this shard, and the bucket's staging (plan, markers, parts)
    // is the shared one.
    let shard_lease = match &remote {
        Some(mirror) => {
            let lease = mirror.lease(&shard_lease_key(shard), &command)?;
            mirror.pull_staging("extract")?;
            Some(lease)
        }
        None => None,
    };
    let scope = LockScope::Shard {
        index: shard.index,
        count: shard.count,
    };
    let lock = RunLock::acquire(run.root(), scope, &command)?;
    let work = match work_on_shard(run, req, shard, progress, remote.as_deref()) {
        Ok(work) => work,
        Err(e) => {
            lock.release_after_failure();
            return Err(e);
        }
    };
    // Let go of the shard (and the shared hold on the run) before trying for the whole run.
    drop(lock);
    drop(shard_lease);
    let Some(work) = work else {
        return Ok(ShardOutcome::UpToDate);
    };
    finish(run, req, shard, work, started, &command, remote.as_deref())
}

/// This worker's parts, written into the shared staging.
struct ShardWork {
    prepared: super::extract::Prepared,
    tx: Transaction,
    summary: ExtractSummary,
}

fn work_on_shard(
    run: &RunDir,
    req: &ExtractRequest<'_>,
    shard: ShardSpec,
    progress: &dyn Progress,
    remote: Option<&glassbox_remote::Mirror>,
) -> Result<Option<ShardWork>> {
    let prepared = prepare(req, Some(shard), progress)?;
    if !check_existing(run, &prepared, false, progress)? {
        return Ok(None);
    }
    let tx = join_staging(run, &prepared, shard)?;
    if let Some(mirror) = remote {
        publish_plan(run.root(), mirror, "extract", shard)?;
    }
    // On object storage the parts stream up into the bucket's staging as they are written.
    let summary = prepared.extract_into(&tx, progress)?;
    Ok(Some(ShardWork {
        prepared,
        tx,
        summary,
    }))
}

/// Joins the sharded staging, or creates it with the plan when this worker is the first.
/// Workers set up one at a time (a lock held for milliseconds), so two first workers cannot
/// both create it.
fn join_staging(
    run: &RunDir,
    prepared: &super::extract::Prepared,
    shard: ShardSpec,
) -> Result<Transaction> {
    let root = run.root();
    let _setup = SetupLock::acquire(root)?;
    let plan = ShardPlan {
        stage: "extract".into(),
        count: shard.count,
        parts: prepared
            .examples
            .table()
            .len()
            .div_ceil(prepared.opts.shard_size),
        fingerprint: prepared.fingerprint.clone(),
        params: prepared.params.clone(),
    };
    let existing = ShardPlan::load(root, "extract")?;
    if let Some(differs) = existing.as_ref().and_then(|e| plan_differences(e, &plan)) {
        bail!(
            "{}: the shards of this run's extraction were started with different settings: \
             {differs}. Start shard {shard} with the same settings as the others, or run \
             `glassbox extract --force` once without --shard to discard the sharded attempt",
            root.display(),
        );
    }
    // Same fingerprint: the staging (of earlier workers, or of a killed single-process run
    // with these settings, whose parts are the same) is joined; any other is replaced.
    let tx = Transaction::begin(run, "extract", outputs(), &plan.fingerprint, true)?.shared();
    if existing.is_none() {
        plan.save(root)?;
    }
    Ok(tx)
}

/// After this shard's parts: commits the run if this worker is the last one and every part is
/// there, else says which shards are still to finish.
fn finish(
    run: &RunDir,
    req: &ExtractRequest<'_>,
    shard: ShardSpec,
    work: ShardWork,
    started: std::time::Instant,
    command: &str,
    remote: Option<&glassbox_remote::Mirror>,
) -> Result<ShardOutcome> {
    let ShardWork {
        prepared,
        tx,
        summary,
    } = work;
    let (parts, resumed) = (summary.shards_owned, summary.shards_resumed);
    let root = run.root();
    let done = |waiting| ShardOutcome::Done {
        shard,
        parts,
        resumed,
        waiting,
    };
    // Held until the commit below has been pushed.
    let (plan, _hold) = match take_run(run, "extract", &prepared.fingerprint, command, remote)? {
        RunTaken::Taken(plan, hold) => (plan, hold),
        RunTaken::Waiting(waiting) => return Ok(done(waiting)),
    };
    let units = part_units(&plan, root)?;
    let expected = glassbox_runner::Expected {
        n_examples: prepared.examples.table().len(),
        units: &units,
        texts: matches!(prepared.examples, glassbox_runner::Examples::Texts(_)),
    };
    glassbox_runner::check_coverage(tx.run(), &prepared.opts, &expected)?;
    let extracted = commit(run, tx, &prepared, req, &summary, started)?
        .expect("a commit reports what it wrote");
    Ok(ShardOutcome::Committed {
        shard,
        parts,
        resumed,
        extracted,
    })
}

/// The units (tokens or images) each part's marker recorded.
fn part_units(plan: &ShardPlan, root: &std::path::Path) -> Result<Vec<u64>> {
    (0..plan.parts)
        .map(|k| {
            let marker = ShardPlan::part_marker(root, &plan.stage, k);
            let text = std::fs::read_to_string(&marker)?;
            text.trim().parse::<u64>().map_err(|_| {
                anyhow::anyhow!(
                    "{}: not a part marker (`{}`); remove it and re-run the shard that owns part {k}",
                    marker.display(),
                    text.trim()
                )
            })
        })
        .collect()
}
