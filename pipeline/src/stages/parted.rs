//! Stages cut into parts: `gradients`, `attribute` and `patch` work through their examples (or
//! pairs) `part_size` at a time. Each part's outputs, and then its marker, are written into the
//! stage's staging as soon as the part is done; the stage's run-wide tables (summaries, verdicts,
//! the page) are made from all the parts once every marker is there, and the staging is
//! committed. One path serves three cases:
//!
//! - one process: every part in turn; a killed attempt resumes at its first unmarked part;
//! - `--shard i/N`: the parts `k` with `k mod N = i`, any number of workers at once (a
//!   [`ShardPlan`] in the staging names the settings they share); the worker that finishes
//!   last takes the whole run, checks every marker and commits (`shard_worker.rs`);
//! - a run on object storage: the parts stream up into the bucket's staging as they are
//!   written, so workers on other machines (and a resumed attempt) see them.
//!
//! A part's outputs depend only on its items and the stage's settings — never on which process
//! wrote it or which parts came before — and the run-wide tables are made the same way from the
//! same parts, so a sharded run is the single-process run byte for byte.
//!
//! Rows a part contributes to the run-wide tables travel as a *fragment*
//! (`<staging>/_fragments/part-NNNNN.msgpack`, MessagePack: floats keep every bit, NaN
//! included), read back in part order by the worker that commits.

use super::transaction::staging_dir;
use super::Transaction;
use anyhow::{anyhow, bail, Context, Result};
use glassbox_data::shards::{ShardPlan, ShardSpec, ShardStatus};
use glassbox_data::{Progress, RunDir};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One run of a parted stage: what it writes and how its items are cut.
pub(crate) struct Parted<'a> {
    pub run: &'a RunDir,
    /// The stage (or step) name: its staging folder and plan.
    pub stage: &'static str,
    /// The outputs the commit swaps in (relative to the run).
    pub outputs: Vec<PathBuf>,
    /// The stage's fingerprint: staging with another one is discarded (or, shared by shard
    /// workers, refused).
    pub fingerprint: String,
    /// The settings the fingerprint was made of, for naming what differs between workers.
    pub params: serde_json::Value,
    /// Examples or pairs to work through.
    pub items: usize,
    /// Items per part (the unit of resumption and of sharding).
    pub part_size: usize,
    /// This worker's shard, or `None` for the whole run in this process.
    pub shard: Option<ShardSpec>,
    /// Start afresh, discarding a staged attempt with the same settings.
    pub force: bool,
    /// The progress bar's label, and its units per item (the work advances it).
    pub progress: (String, u64),
}

/// One part to compute, as the stage's work sees it.
pub(crate) struct Part<'t> {
    /// The run as the stage writes it (outputs into staging).
    pub staged: &'t RunDir,
    /// The stage's staging folder (for fragments).
    pub staging: &'t Path,
    /// The part's number.
    pub index: usize,
    /// The items it covers.
    pub items: Range<usize>,
}

impl Part<'_> {
    /// Writes this part's rows for the run-wide tables.
    pub fn write_fragment<T: Serialize>(&self, value: &T) -> Result<()> {
        let bytes = rmp_serde::to_vec(value)
            .with_context(|| format!("cannot encode the rows of part {}", self.index))?;
        glassbox_data::atomic::write_bytes(&fragment_path(self.staging, self.index), &bytes)?;
        Ok(())
    }
}

/// Every part is written: commit through `tx` (holding what keeps other writers out).
pub(crate) struct Ready {
    pub tx: Transaction,
    /// The staging folder (fragments).
    pub staging: PathBuf,
    /// How many parts.
    pub parts: usize,
    /// Parts this process computed (the rest were there already).
    pub computed: usize,
    pub(super) root: PathBuf,
    pub(super) stage: &'static str,
    pub(super) _hold: Hold,
}

/// Locks and leases a committing worker holds until it has committed.
#[derive(Default)]
pub(super) struct Hold {
    pub(super) _lock: Option<glassbox_data::lock::RunLock>,
    pub(super) _lease: Option<glassbox_remote::lease::Lease>,
    pub(super) _session: Option<glassbox_remote::SessionGuard>,
}

impl Ready {
    /// Every part's fragment, in part order.
    pub fn fragments<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        (0..self.parts)
            .map(|k| {
                let path = fragment_path(&self.staging, k);
                let marker = ShardPlan::part_marker(&self.root, self.stage, k);
                let bytes = std::fs::read(&path).with_context(|| {
                    format!(
                        "{}: part {k}'s rows are missing though its marker is there; remove {} and run the part's shard (or the stage) again",
                        path.display(),
                        marker.display()
                    )
                })?;
                rmp_serde::from_slice(&bytes).map_err(|e| {
                    anyhow!(
                        "{}: part {k}'s rows are unreadable ({e}); remove {} and run the part's shard (or the stage) again",
                        path.display(),
                        marker.display()
                    )
                })
            })
            .collect()
    }
}

/// What running the parts came to.
pub(crate) enum PartsOutcome {
    /// Every part is there: the caller makes the run-wide tables and commits.
    Ready(Box<Ready>),
    /// This shard's parts are written; the run is complete when the shards in `waiting` are
    /// (empty: another worker is committing, or has).
    Waiting {
        shard: ShardSpec,
        parts: usize,
        computed: usize,
        waiting: Vec<ShardStatus>,
    },
}

/// What running a stage as a shard worker (or the whole run) came to, for the terminal.
#[derive(Debug)]
pub enum ShardRun<T> {
    /// The run already holds this result.
    UpToDate,
    /// This worker's parts are written; the run is complete when the shards in `waiting` are
    /// (empty: another worker is committing, or has).
    Waiting {
        shard: ShardSpec,
        parts: usize,
        computed: usize,
        waiting: Vec<ShardStatus>,
    },
    /// Every part was there: this worker made the run-wide tables and committed.
    Committed {
        /// `None` for a whole-run attempt.
        shard: Option<ShardSpec>,
        parts: usize,
        computed: usize,
        done: T,
    },
}

impl<T> ShardRun<T> {
    /// A whole-run attempt's result: the committed stage, or `None` when up to date.
    pub fn whole(self) -> Option<T> {
        match self {
            ShardRun::Committed { done, .. } => Some(done),
            ShardRun::UpToDate | ShardRun::Waiting { .. } => None,
        }
    }
}

impl PartsOutcome {
    /// Commits through `commit` when every part is there.
    pub fn settle<T>(
        self,
        shard: Option<ShardSpec>,
        commit: impl FnOnce(Ready) -> Result<T>,
    ) -> Result<ShardRun<T>> {
        Ok(match self {
            PartsOutcome::Waiting {
                shard,
                parts,
                computed,
                waiting,
            } => ShardRun::Waiting {
                shard,
                parts,
                computed,
                waiting,
            },
            PartsOutcome::Ready(ready) => {
                let ready = *ready;
                let parts = match shard {
                    Some(s) => (0..ready.parts).filter(|&k| s.owns(k)).count(),
                    None => ready.parts,
                };
                let computed = ready.computed;
                ShardRun::Committed {
                    shard,
                    parts,
                    computed,
                    done: commit(ready)?,
                }
            }
        })
    }
}

/// `<staging>/_fragments/part-NNNNN.msgpack`.
fn fragment_path(staging: &Path, part: usize) -> PathBuf {
    staging
        .join("_fragments")
        .join(format!("part-{part:05}.msgpack"))
}

impl Parted<'_> {
    /// How many parts the items make.
    pub fn parts(&self) -> usize {
        self.items.div_ceil(self.part_size.max(1))
    }

    fn range(&self, k: usize) -> Range<usize> {
        let size = self.part_size.max(1);
        k * size..((k + 1) * size).min(self.items)
    }

    /// Computes the parts this process owns that are not marked done, calling `work` for each
    /// (it writes the part's outputs under `staged` and its fragment), and marks each done.
    /// The caller of a whole-run attempt (`shard: None`) holds the run's lock; a shard worker
    /// takes its own locks here.
    pub fn run(
        &self,
        progress: &dyn Progress,
        work: impl FnMut(&Part<'_>) -> Result<()>,
    ) -> Result<PartsOutcome> {
        if self.part_size == 0 {
            bail!("{}: part_size = 0; it must be at least 1", self.stage);
        }
        match self.shard {
            None => self.run_whole(progress, work),
            Some(shard) => self.run_shard(shard, progress, work),
        }
    }

    fn run_whole(
        &self,
        progress: &dyn Progress,
        work: impl FnMut(&Part<'_>) -> Result<()>,
    ) -> Result<PartsOutcome> {
        // An interrupted attempt with exactly these settings resumes (on object storage, also
        // one interrupted on another machine, or shard workers' parts).
        if !self.force {
            crate::run_location::pull_resumable_staging(self.run, self.stage, &self.fingerprint)?;
        }
        let tx = self.begin_staging(!self.force)?;
        if tx.resumed() {
            progress.note(&format!(
                "{}: resuming the interrupted attempt with these settings",
                self.stage
            ));
        }
        let computed = self.compute(&tx, |_| true, progress, work)?;
        Ok(PartsOutcome::Ready(Box::new(Ready {
            tx,
            staging: staging_dir(self.run, self.stage),
            parts: self.parts(),
            computed,
            root: self.run.root().to_path_buf(),
            stage: self.stage,
            _hold: Hold::default(),
        })))
    }

    /// Starts (or, with `resume` and the same fingerprint, joins) the stage's staging.
    pub(super) fn begin_staging(&self, resume: bool) -> Result<Transaction> {
        Transaction::begin(
            self.run,
            self.stage,
            self.outputs.clone(),
            &self.fingerprint,
            resume,
        )
    }

    /// Runs `work` on every owned part without a marker, streaming the parts up for a remote
    /// run; returns how many it computed.
    pub(super) fn compute(
        &self,
        tx: &Transaction,
        owns: impl Fn(usize) -> bool,
        progress: &dyn Progress,
        mut work: impl FnMut(&Part<'_>) -> Result<()>,
    ) -> Result<usize> {
        let root = self.run.root();
        let staging = staging_dir(self.run, self.stage);
        let todo: Vec<usize> = (0..self.parts())
            .filter(|&k| owns(k) && !ShardPlan::part_marker(root, self.stage, k).is_file())
            .collect();
        let units: usize = todo.iter().map(|&k| self.range(k).len()).sum();
        progress.start(&self.progress.0, units as u64 * self.progress.1);
        crate::run_location::with_staging_uploads(tx.run(), self.stage, || {
            for &k in &todo {
                let items = self.range(k);
                let count = items.len();
                work(&Part {
                    staged: tx.run(),
                    staging: &staging,
                    index: k,
                    items,
                })?;
                // The marker last: it vouches for the part's outputs and fragment.
                glassbox_data::atomic::write_bytes(
                    &ShardPlan::part_marker(root, self.stage, k),
                    count.to_string().as_bytes(),
                )?;
            }
            Ok(())
        })?;
        progress.finish();
        Ok(todo.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_items_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let parted = Parted {
            run: &run,
            stage: "attribute",
            outputs: Vec::new(),
            fingerprint: "f".into(),
            params: serde_json::json!({}),
            items: 10,
            part_size: 4,
            shard: None,
            force: false,
            progress: (String::new(), 1),
        };
        assert_eq!(parted.parts(), 3);
        let ranges: Vec<Range<usize>> = (0..3).map(|k| parted.range(k)).collect();
        assert_eq!(ranges, vec![0..4, 4..8, 8..10]);
    }

    #[test]
    fn fragments_keep_every_bit_of_their_floats() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let values = vec![0.1f64, f64::NAN, -0.0, f64::MIN_POSITIVE / 3.0, 1.0 / 3.0];
        let part = Part {
            staged: &run,
            staging: dir.path(),
            index: 0,
            items: 0..1,
        };
        part.write_fragment(&values).unwrap();
        let bytes = std::fs::read(fragment_path(dir.path(), 0)).unwrap();
        let back: Vec<f64> = rmp_serde::from_slice(&bytes).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&values));
    }
}
