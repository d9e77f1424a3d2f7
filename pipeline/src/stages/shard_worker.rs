//! The `--shard i/N` side of a parted stage (see `parted.rs`): a worker takes its shard's lock
//! (and, on object storage, its shard's lease), joins the shared staging — the first one writes
//! the plan; one started with other settings is refused, naming them —, computes its parts, lets
//! go of its shard and tries for the whole run. The worker that gets it (the last to finish)
//! checks every part's marker and hands the transaction back for the commit. Sharded extraction
//! (`extract_shard.rs`) shares the lease keys, the plan's publication and its comparison.

use super::parted::{Hold, Part, Parted, PartsOutcome, Ready};
use super::transaction::{self, staging_dir};
use super::Transaction;
use anyhow::{anyhow, bail, Result};
use glassbox_data::lock::{try_acquire_run, LockScope, RunLock, SetupLock};
use glassbox_data::shards::{differing_settings, ShardPlan, ShardSpec, ShardStatus};
use glassbox_data::{Progress, RunDir};
use std::path::Path;

/// The lease object of one shard of a remote run.
pub(crate) fn shard_lease_key(shard: ShardSpec) -> String {
    format!(".glassbox.shard-{}-of-{}.lock", shard.index, shard.count)
}

/// The lease the worker committing a remote sharded `stage` holds while it commits.
pub(crate) fn commit_lease_key(stage: &str) -> String {
    format!(".glassbox.commit-{stage}.lock")
}

impl Parted<'_> {
    pub(super) fn run_shard(
        &self,
        shard: ShardSpec,
        progress: &dyn Progress,
        work: impl FnMut(&Part<'_>) -> Result<()>,
    ) -> Result<PartsOutcome> {
        if self.force {
            bail!(
                "--force cannot be combined with --shard: one worker would discard the other shards' \
                 parts. Start the shards without --force (they resume), or run `glassbox {} --force` \
                 once without --shard to start afresh",
                self.stage
            );
        }
        let command = super::command_line();
        let remote = glassbox_remote::mirror_of(self.run.root());
        // On object storage the workers may be on other machines: the shard's lease keeps out
        // a second worker of this shard, and the bucket's staging is the shared one.
        let shard_lease = match &remote {
            Some(mirror) => {
                let lease = mirror.lease(&shard_lease_key(shard), &command)?;
                mirror.pull_staging(self.stage)?;
                Some(lease)
            }
            None => None,
        };
        let scope = LockScope::Shard {
            index: shard.index,
            count: shard.count,
        };
        let lock = RunLock::acquire(self.run.root(), scope, &command)?;
        let computed = match self.work_on_shard(shard, remote.as_deref(), progress, work) {
            Ok(computed) => computed,
            Err(e) => {
                lock.release_after_failure();
                return Err(e);
            }
        };
        // Let go of the shard (and the shared hold on the run) before trying for the whole run.
        drop(lock);
        drop(shard_lease);
        self.finish_shard(shard, computed, &command, remote.as_deref())
    }

    fn work_on_shard(
        &self,
        shard: ShardSpec,
        remote: Option<&glassbox_remote::Mirror>,
        progress: &dyn Progress,
        work: impl FnMut(&Part<'_>) -> Result<()>,
    ) -> Result<usize> {
        let tx = self.join_staging(shard)?;
        if let Some(mirror) = remote {
            publish_plan(self.run.root(), mirror, self.stage, shard)?;
        }
        self.compute(&tx, |k| shard.owns(k), progress, work)
    }

    fn plan(&self, count: usize) -> ShardPlan {
        ShardPlan {
            stage: self.stage.into(),
            count,
            parts: self.parts(),
            fingerprint: self.fingerprint.clone(),
            params: self.params.clone(),
        }
    }

    /// Joins the shared staging, or creates it with the plan when this worker is the first.
    fn join_staging(&self, shard: ShardSpec) -> Result<Transaction> {
        let root = self.run.root();
        let _setup = SetupLock::acquire(root)?;
        let plan = self.plan(shard.count);
        let existing = ShardPlan::load(root, self.stage)?;
        if let Some(differs) = existing.as_ref().and_then(|e| plan_differences(e, &plan)) {
            bail!(
                "{}: the shards of this run's `{}` were started with different settings: {differs}. \
                 Start shard {shard} with the same settings as the others, or run `glassbox {} --force` \
                 once without --shard to discard the sharded attempt",
                self.run.name(),
                self.stage,
                self.stage,
            );
        }
        let tx = self.begin_staging(true)?.shared();
        if existing.is_none() {
            plan.save(root)?;
        }
        Ok(tx)
    }

    /// After this shard's parts: takes the run if every part is there and no other worker
    /// holds it, else says which shards are still to finish.
    fn finish_shard(
        &self,
        shard: ShardSpec,
        computed: usize,
        command: &str,
        remote: Option<&glassbox_remote::Mirror>,
    ) -> Result<PartsOutcome> {
        let root = self.run.root();
        let parts = (0..self.parts()).filter(|&k| shard.owns(k)).count();
        let waiting = |waiting| PartsOutcome::Waiting {
            shard,
            parts,
            computed,
            waiting,
        };
        let hold = match take_run(self.run, self.stage, &self.fingerprint, command, remote)? {
            RunTaken::Taken(_, hold) => hold,
            RunTaken::Waiting(incomplete) => return Ok(waiting(incomplete)),
        };
        // The staging as the workers left it, resumed (never discarded: same fingerprint).
        let tx = self.begin_staging(true)?;
        Ok(PartsOutcome::Ready(Box::new(Ready {
            tx,
            staging: staging_dir(self.run, self.stage),
            parts: self.parts(),
            computed,
            root: root.to_path_buf(),
            stage: self.stage,
            _hold: hold,
        })))
    }
}

/// What a worker that finished its parts got when it tried for the whole run.
pub(crate) enum RunTaken {
    /// This worker commits: the plan every part was written to, and what the worker holds
    /// (run lock, leases) until it has committed.
    Taken(ShardPlan, Hold),
    /// The shards still to finish (empty: another worker commits, or has).
    Waiting(Vec<ShardStatus>),
}

/// After a worker's parts: takes the whole run when every part of `stage` is there and no
/// other worker holds it — on object storage first the commit lease, after a fresh pull of the
/// bucket's staging —, then pulls the run and rolls forward any half-done commit. A plan with
/// another fingerprint means the attempt was restarted with other settings under this worker.
pub(crate) fn take_run(
    run: &RunDir,
    stage: &str,
    fingerprint: &str,
    command: &str,
    remote: Option<&glassbox_remote::Mirror>,
) -> Result<RunTaken> {
    let root = run.root();
    let incomplete = || -> Result<Vec<ShardStatus>> {
        Ok(match ShardPlan::load(root, stage)? {
            Some(plan) => plan.incomplete(root),
            None => Vec::new(),
        })
    };
    // On object storage: the other workers' markers from the bucket; when every part is there,
    // one worker (whoever takes the commit lease) commits.
    let lease = match remote {
        Some(mirror) => {
            mirror.pull_staging(stage)?;
            let waiting = incomplete()?;
            if !waiting.is_empty() {
                return Ok(RunTaken::Waiting(waiting));
            }
            match mirror.lease(&commit_lease_key(stage), command) {
                Ok(lease) => Some(lease),
                Err(glassbox_remote::RemoteError::Busy { .. }) => {
                    eprintln!("every shard is done; another worker is committing the run");
                    return Ok(RunTaken::Waiting(Vec::new()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => None,
    };
    // Locally: a worker whose run is not complete yet says so without touching the run lock.
    // Taking it, even for a moment, would refuse a shard worker starting in that moment (it
    // needs the run lock shared).
    if remote.is_none() {
        let waiting = incomplete()?;
        if !waiting.is_empty() {
            return Ok(RunTaken::Waiting(waiting));
        }
    }
    let Some(lock) = try_acquire_run(root, command)? else {
        // Another worker still holds the run: the last one to finish commits.
        return Ok(RunTaken::Waiting(incomplete()?));
    };
    // The run's lease and a fresh pull, so the commit's push starts from the bucket's run.
    let session = glassbox_remote::begin_write(root, command)?;
    transaction::recover(run)?;
    let Some(plan) = ShardPlan::load(root, stage)? else {
        // Committed meanwhile (by a worker, or a whole-run attempt that finished it).
        return Ok(RunTaken::Waiting(Vec::new()));
    };
    if plan.fingerprint != fingerprint {
        bail!(
            "{}: the sharded `{stage}` was restarted with other settings while this shard ran; its parts were discarded. Start this shard with the new settings",
            run.name()
        );
    }
    let waiting = plan.incomplete(root);
    if !waiting.is_empty() {
        return Ok(RunTaken::Waiting(waiting));
    }
    let hold = Hold {
        _lock: Some(lock),
        _lease: lease,
        _session: session,
    };
    Ok(RunTaken::Taken(plan, hold))
}

/// Publishes `stage`'s local plan in the bucket unless a worker did first; a first worker
/// elsewhere with other settings is refused as a local one is (naming the settings).
pub(crate) fn publish_plan(
    root: &Path,
    mirror: &glassbox_remote::Mirror,
    stage: &str,
    shard: ShardSpec,
) -> Result<()> {
    let Some(ours) = ShardPlan::load(root, stage)? else {
        return Ok(());
    };
    let bytes = serde_json::to_vec_pretty(&ours)?;
    let Some(theirs) = mirror.publish_plan(stage, &bytes)? else {
        return Ok(());
    };
    let theirs: ShardPlan = serde_json::from_slice(&theirs).map_err(|e| {
        anyhow!(
            "{}: the shard plan in the bucket is unreadable ({e}); delete `.staging/{stage}/` there and start the shards again",
            mirror.url()
        )
    })?;
    match plan_differences(&theirs, &ours) {
        None => Ok(()),
        Some(differs) => bail!(
            "{}: the shards of this run's `{stage}` were started with different settings: {differs}. Start shard {shard} with the same settings as the others",
            mirror.url()
        ),
    }
}

/// What differs between the plan the first workers started (`earlier`) and this worker's, as
/// the refusal names it; `None` when the two agree.
pub(crate) fn plan_differences(earlier: &ShardPlan, now: &ShardPlan) -> Option<String> {
    if earlier.fingerprint == now.fingerprint && earlier.count == now.count {
        return None;
    }
    let mut differs = Vec::new();
    if earlier.count != now.count {
        differs.push(format!(
            "shard count (the shards already started use {}, this one {})",
            earlier.count, now.count
        ));
    }
    differs.extend(differing_settings(&earlier.params, &now.params));
    if differs.is_empty() {
        differs.push("glassbox version".into());
    }
    Some(differs.join("; "))
}
