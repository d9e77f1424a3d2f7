//! Advisory locks on a run directory, so two writers can never mix their results in one run.
//!
//! A writer holds `flock` on `<run>/.glassbox.lock`: exclusively for a whole-run stage, shared
//! for one shard of a sharded stage (which also holds `<run>/.glassbox.shard-<i>-of-<n>.lock`
//! exclusively). So disjoint shard workers run together, two workers of the same shard do not,
//! and no whole-run stage starts while any shard worker runs (or the reverse). The kernel
//! releases a `flock` when its holder dies, however it dies: a killed run never leaves a stale
//! lock. Who holds a lock is written into its file, so the refusal can name the pid and command.

use crate::{DataError, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The run-wide lock file's name; tests and snapshots of a run ignore it.
pub const LOCK_FILE: &str = ".glassbox.lock";

/// What a writer is about to change in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockScope {
    /// The whole run (every stage today).
    Run,
    /// Shard `index` of `count` of a sharded stage: only that shard's outputs.
    Shard { index: usize, count: usize },
}

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    // Kept open: closing the file releases the lock.
    _run_file: File,
    _shard_file: Option<File>,
    /// True when taking the lock created the run folder, which was absent before.
    pub created_run_dir: bool,
    root: PathBuf,
}

/// Creates the run directory (and its parents) unless it exists; a file in its place, or a
/// path that cannot be created, is an error saying so.
fn create_run_dir(root: &Path) -> Result<()> {
    if root.exists() && !root.is_dir() {
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            message: "is a file, not a run directory; give --run a directory (it is created when missing)".into(),
        });
    }
    std::fs::create_dir_all(root).map_err(|e| DataError::Invalid {
        path: root.to_path_buf(),
        message: format!(
            "cannot create the run directory ({e}); check the path and its permissions"
        ),
    })
}

impl RunLock {
    /// Takes the lock without waiting; a held lock is an error naming its holder.
    ///
    /// `command` is recorded for the next writer's error message (e.g. `glassbox probe …`).
    pub fn acquire(root: &Path, scope: LockScope, command: &str) -> Result<Self> {
        let created_run_dir = !root.exists();
        create_run_dir(root)?;
        let run_path = root.join(LOCK_FILE);
        let mut run_file = open(&run_path)?;
        let taken = match scope {
            LockScope::Shard { .. } => lock_shared_soon(&run_file),
            LockScope::Run => run_file.try_lock(),
        };
        if let Err(e) = taken {
            // Whoever holds the run exclusively is writing all of it, not this shard.
            return Err(busy(root, &run_path, e, LockScope::Run));
        }
        let shard_file = match scope {
            LockScope::Run => {
                write_holder(&mut run_file, &run_path, command)?;
                None
            }
            LockScope::Shard { index, count } => {
                let path = shard_lock_path(root, index, count);
                let mut file = open(&path)?;
                if let Err(e) = file.try_lock() {
                    return Err(busy(root, &path, e, scope));
                }
                write_holder(&mut file, &path, command)?;
                Some(file)
            }
        };
        Ok(Self {
            _run_file: run_file,
            _shard_file: shard_file,
            created_run_dir,
            root: root.to_path_buf(),
        })
    }

    /// Releases the lock after a failed stage; when taking it created the run folder and
    /// nothing but lock files is in it, the folder goes too, so a refused first stage leaves
    /// no trace.
    pub fn release_after_failure(self) {
        let root = self.root.clone();
        let created = self.created_run_dir;
        drop(self);
        if !created {
            return;
        }
        let only_locks = std::fs::read_dir(&root)
            .map(|entries| {
                entries.flatten().all(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with(".glassbox.") && name.ends_with(".lock")
                })
            })
            .unwrap_or(false);
        if only_locks {
            let _ = std::fs::remove_dir_all(&root);
        }
    }
}

/// The run lock for a whole-run step, or `None` when another process holds the run (a shard
/// worker of a sharded stage finishing: only the last one to finish gets it and commits).
pub fn try_acquire_run(root: &Path, command: &str) -> Result<Option<RunLock>> {
    match RunLock::acquire(root, LockScope::Run, command) {
        Ok(lock) => Ok(Some(lock)),
        Err(DataError::Run { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a worker holds shard `index` of `count` of the run now (its lock file is locked).
/// Probed with a shared lock taken and dropped at once, so it never blocks a worker for longer
/// than that call.
pub fn shard_running(root: &Path, index: usize, count: usize) -> bool {
    let Ok(file) = File::open(shard_lock_path(root, index, count)) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

/// A short exclusive section among the shard workers of one run (setting up the shared
/// staging), waited for rather than refused: each holder keeps it for milliseconds.
#[derive(Debug)]
pub struct SetupLock {
    _file: File,
}

impl SetupLock {
    /// Waits for `<run>/.glassbox.setup.lock` and holds it until dropped.
    pub fn acquire(root: &Path) -> Result<Self> {
        create_run_dir(root)?;
        let path = root.join(".glassbox.setup.lock");
        let file = open(&path)?;
        file.lock().map_err(DataError::io(&path))?;
        Ok(Self { _file: file })
    }
}

/// How long a shard worker waits for a momentary exclusive hold on the run to pass.
const SHARED_WAIT: Duration = Duration::from_secs(3);

/// Takes the run lock shared, waiting up to [`SHARED_WAIT`] while it is held exclusively:
/// short exclusive holds are normal among shard workers (one that finished every part takes
/// the run to commit; a mirror's pull takes it to refresh), and a worker starting in that
/// moment must not be refused. A whole-run stage holds it far longer and is still refused.
fn lock_shared_soon(file: &File) -> std::result::Result<(), TryLockError> {
    let deadline = Instant::now() + SHARED_WAIT;
    loop {
        match file.try_lock_shared() {
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// `<run>/.glassbox.shard-<i>-of-<n>.lock`.
pub fn shard_lock_path(root: &Path, index: usize, count: usize) -> PathBuf {
    root.join(format!(".glassbox.shard-{index}-of-{count}.lock"))
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(DataError::io(path))
}

/// Replaces the file's text with `pid=… command=…` (the lock is held, so no one else writes).
fn write_holder(file: &mut File, path: &Path, command: &str) -> Result<()> {
    let text = format!("pid {} running `{command}`\n", std::process::id());
    file.set_len(0).map_err(DataError::io(path))?;
    file.seek(SeekFrom::Start(0)).map_err(DataError::io(path))?;
    file.write_all(text.as_bytes())
        .map_err(DataError::io(path))?;
    Ok(())
}

/// The error for a lock someone else holds, naming them when their file says who they are.
fn busy(root: &Path, path: &Path, error: TryLockError, scope: LockScope) -> DataError {
    if let TryLockError::Error(source) = error {
        return DataError::Io {
            path: path.to_path_buf(),
            source,
        };
    }
    let holders = holders(root, path);
    let what = match scope {
        LockScope::Run => "the run".to_owned(),
        LockScope::Shard { index, count } => format!("shard {index} of {count} of the run"),
    };
    DataError::Run {
        run: root.to_path_buf(),
        message: format!(
            "another glassbox process is writing {what} ({}); wait for it to finish, or use \
             another --run",
            if holders.is_empty() {
                "its lock file names no holder".to_owned()
            } else {
                holders.join("; ")
            }
        ),
    }
}

/// What the lock files of a run say about their holders (the run lock, or the shard locks when
/// shard workers hold the run lock shared).
fn holders(root: &Path, path: &Path) -> Vec<String> {
    let mut files = vec![path.to_path_buf()];
    if path.file_name().is_some_and(|n| n == LOCK_FILE) {
        if let Ok(entries) = std::fs::read_dir(root) {
            let mut shards: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".glassbox.shard-"))
                })
                // A finished worker's file still names it: only held ones are holders.
                .filter(|p| {
                    File::open(p).is_ok_and(|f| match f.try_lock_shared() {
                        Ok(()) => {
                            let _ = f.unlock();
                            false
                        }
                        Err(e) => matches!(e, TryLockError::WouldBlock),
                    })
                })
                .collect();
            shards.sort();
            files.extend(shards);
        }
    }
    files
        .iter()
        .filter_map(|p| {
            let mut text = String::new();
            File::open(p).ok()?.read_to_string(&mut text).ok()?;
            let text = text.trim().to_owned();
            (!text.is_empty()).then_some(text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), LockScope::Run, "glassbox probe").unwrap();
        let err = RunLock::acquire(dir.path(), LockScope::Run, "glassbox extract")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("glassbox probe"), "{err}");
        drop(first);
        RunLock::acquire(dir.path(), LockScope::Run, "glassbox extract").unwrap();
    }

    #[test]
    fn disjoint_shards_run_together_and_exclude_the_whole_run() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunLock::acquire(dir.path(), LockScope::Shard { index: 0, count: 2 }, "w0");
        let b = RunLock::acquire(dir.path(), LockScope::Shard { index: 1, count: 2 }, "w1");
        assert!(a.is_ok() && b.is_ok());
        let same = RunLock::acquire(dir.path(), LockScope::Shard { index: 1, count: 2 }, "w1'");
        assert!(same.unwrap_err().to_string().contains("shard 1 of 2"));
        let whole = RunLock::acquire(dir.path(), LockScope::Run, "probe")
            .unwrap_err()
            .to_string();
        assert!(whole.contains("w0") && whole.contains("w1"), "{whole}");
    }

    #[test]
    fn a_shard_worker_waits_out_a_momentary_hold_on_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let whole = RunLock::acquire(dir.path(), LockScope::Run, "finishing worker").unwrap();
        let root = dir.path().to_path_buf();
        let worker = std::thread::spawn(move || {
            RunLock::acquire(&root, LockScope::Shard { index: 2, count: 3 }, "w2").map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(200));
        drop(whole);
        worker.join().unwrap().unwrap();
    }

    #[test]
    fn a_shard_worker_is_refused_while_a_whole_run_stage_holds_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let _whole = RunLock::acquire(dir.path(), LockScope::Run, "glassbox probe").unwrap();
        let err = RunLock::acquire(dir.path(), LockScope::Shard { index: 0, count: 2 }, "w0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("writing the run") && err.contains("glassbox probe"),
            "{err}"
        );
    }

    #[test]
    fn a_refused_first_stage_leaves_no_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("new-run");
        let lock = RunLock::acquire(&root, LockScope::Run, "x").unwrap();
        assert!(lock.created_run_dir);
        lock.release_after_failure();
        assert!(!root.exists());
    }
}
