//! The stages. Each one resolves and validates its settings, reads its inputs far enough to
//! fail, and only then computes into a [`transaction::Transaction`] that swaps its outputs into
//! the run when complete (see `transaction.rs`). The caller holds the run's lock.

pub mod attribute;
mod attribute_baseline;
mod attribute_inputs;
mod attribute_part;
mod attribute_verdicts;
pub mod causal;
mod causal_run;
mod class_names;
pub mod dictionary;
mod dictionary_lm;
pub mod dissect;
pub mod extract;
pub mod extract_shard;
mod label_randomization;
pub mod parted;
pub mod patch;
mod patch_targets;
pub mod probe;
pub mod report;
pub mod run_model;
mod shard_worker;
mod targets;
pub mod tcav;
mod tcav_scoring;
pub mod tcav_vision;
pub mod transaction;

pub use transaction::{Completion, Stage, Transaction};

use anyhow::Result;
use glassbox_data::lock::{LockScope, RunLock};
use glassbox_data::RunDir;

/// Runs `stage` holding the run's lock (a second writer is refused, naming this one), after
/// finishing any commit a killed process left half done. When `stage` fails and taking the lock
/// created the run folder, the folder goes again.
pub fn with_run_lock<T>(run: &RunDir, stage: impl FnOnce() -> Result<T>) -> Result<T> {
    let lock = RunLock::acquire(run.root(), LockScope::Run, &command_line())?;
    // A run on object storage: take its lease and pull it into the mirror first; each commit
    // pushes (Transaction::commit), and the lease goes when `_remote` drops.
    let _remote = match glassbox_remote::begin_write(run.root(), &command_line()) {
        Ok(session) => session,
        Err(e) => {
            lock.release_after_failure();
            return Err(e.into());
        }
    };
    let result = transaction::recover(run).and_then(|()| stage());
    if result.is_err() {
        lock.release_after_failure();
    }
    result
}

/// This process's command line on one line, for the lock holder's record.
fn command_line() -> String {
    let line = std::env::args()
        .map(|a| a.replace(['\n', '\r'], " "))
        .collect::<Vec<_>>()
        .join(" ");
    if line.chars().count() > 300 {
        line.chars().take(300).collect::<String>() + "…"
    } else {
        line
    }
}
