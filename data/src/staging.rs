//! Where a run keeps a stage's unfinished outputs: the names both the run directory and the
//! sharded stages use (kept apart from `run` so `shards` can use them and `run` can use
//! `shards`).

use std::path::{Path, PathBuf};

/// The hidden folder of a run where stages stage their outputs (`<run>/.staging/<stage>/`).
pub const STAGING_DIR: &str = ".staging";

/// `<run>/.staging/<stage>/`.
pub fn stage_dir(root: &Path, stage: &str) -> PathBuf {
    root.join(STAGING_DIR).join(stage)
}

/// The resume markers of `stage` inside a staging folder `dir`: `<dir>/_progress/<stage>/`.
pub fn progress_in(dir: &Path, stage: &str) -> PathBuf {
    dir.join("_progress").join(stage)
}
