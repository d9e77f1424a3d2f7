//! `--run` values: a local folder, or a run on object storage (`s3://bucket/prefix`, `gs://`,
//! `az://`, `file://`) worked on through its local mirror (see the `glassbox-remote` crate).

use anyhow::{anyhow, Result};
use glassbox_data::RunDir;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The run `arg` names. For object storage, the mirror folder (created on first use; nothing
/// is sent until a stage takes the run's lease and pulls).
pub fn open_run(arg: &Path) -> Result<RunDir> {
    if glassbox_remote::is_remote(arg) {
        let url = arg.to_string_lossy();
        let run = RunDir::named(glassbox_remote::open(&url, None)?, url.clone());
        // Bring the mirror up to date for what reads the run before a stage takes its lease
        // (inspect; patch's model lookup). A local writer holding the mirror keeps it current.
        if let Some(_lock) = glassbox_data::lock::try_acquire_run(run.root(), "glassbox (pull)")? {
            glassbox_remote::refresh(run.root())?;
        }
        return Ok(run);
    }
    Ok(RunDir::new(arg))
}

/// How to name the run to the user: its URL for a remote run, else its folder.
pub fn run_name(run: &RunDir) -> String {
    match glassbox_remote::mirror_of(run.root()) {
        Some(mirror) => mirror.url().to_owned(),
        None => run.name(),
    }
}

/// After a commit: sends what it changed to object storage (a no-op for a local run) and
/// says so on stderr.
pub fn push_commit(run: &RunDir) -> Result<()> {
    if let Some((url, pushed)) = glassbox_remote::push_commit(run.root())? {
        if pushed.uploaded + pushed.copied + pushed.deleted > 0 {
            eprintln!(
                "pushed to {url}: {} file(s) up ({:.1} MB), {} staged part(s) moved into place, {} removed",
                pushed.uploaded,
                pushed.bytes as f64 / 1e6,
                pushed.copied,
                pushed.deleted
            );
        }
    }
    Ok(())
}

/// How often finished parts go up while a stage writes them.
const UPLOAD_EVERY: Duration = Duration::from_secs(2);

/// Runs `work`, a stage writing parts into its staging. For a run on object storage a
/// background thread meanwhile uploads the staging's finished parts (and their markers) every
/// two seconds, and once more at the end: parts stream up as they are written, the mirror holds
/// only the latest ones, and an interrupted attempt keeps in the bucket what it finished.
pub fn with_staging_uploads<T>(
    run: &RunDir,
    stage: &str,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let Some(mirror) = glassbox_remote::mirror_of(run.root()) else {
        return work();
    };
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let uploader = {
        let (mirror, stop, stage) = (mirror.clone(), stop.clone(), stage.to_owned());
        std::thread::spawn(move || -> glassbox_remote::Result<()> {
            let (flag, wake) = &*stop;
            loop {
                let guard = flag.lock().unwrap_or_else(|e| e.into_inner());
                let (guard, _) = wake
                    .wait_timeout(guard, UPLOAD_EVERY)
                    .unwrap_or_else(|e| e.into_inner());
                if *guard {
                    return Ok(());
                }
                drop(guard);
                mirror.push_staging(&stage)?;
            }
        })
    };
    let result = work();
    *stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
    stop.1.notify_all();
    let background = uploader
        .join()
        .map_err(|_| anyhow!("the thread uploading {stage}'s parts panicked"))?;
    let value = result?;
    background?;
    mirror.push_staging(stage)?;
    Ok(value)
}

/// For a run on object storage: pulls the bucket's staging of `stage` when it holds an
/// interrupted attempt with this `fingerprint`, so the attempt resumes here (on any machine)
/// with the parts it finished.
pub fn pull_resumable_staging(run: &RunDir, stage: &str, fingerprint: &str) -> Result<bool> {
    let Some(mirror) = glassbox_remote::mirror_of(run.root()) else {
        return Ok(false);
    };
    if mirror.staged_fingerprint(stage)?.as_deref() != Some(fingerprint) {
        return Ok(false);
    }
    mirror.pull_staging(stage)?;
    Ok(true)
}

/// For a run on object storage, the shards `(index, count)` whose lease is held in the bucket
/// (a worker runs them, on some machine); empty for a local run.
pub fn leased_shards(run: &RunDir) -> Result<Vec<(usize, usize)>> {
    match glassbox_remote::mirror_of(run.root()) {
        Some(mirror) => Ok(mirror.leased_shards()?),
        None => Ok(Vec::new()),
    }
}
