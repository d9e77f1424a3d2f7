//! `--run` values: a local folder, or a run on object storage (`s3://bucket/prefix`, `gs://`,
//! `az://`, `file://`) worked on through its local mirror (see the `glassbox-remote` crate).

use anyhow::Result;
use glassbox_data::RunDir;
use std::path::Path;

/// The run `arg` names. For object storage, the mirror folder (created on first use; nothing
/// is sent until a stage takes the run's lease and pulls).
pub fn open_run(arg: &Path) -> Result<RunDir> {
    if glassbox_remote::is_remote(arg) {
        let url = arg.to_string_lossy();
        let run = RunDir::new(glassbox_remote::open(&url, None)?);
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
        None => run.root().display().to_string(),
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
