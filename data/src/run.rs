//! The run directory layout (design §5). All paths into a run are built here.

use crate::{DataError, Result};
use std::path::{Path, PathBuf};

/// A run directory, `runs/<name>/`.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.json")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn examples(&self) -> PathBuf {
        self.root.join("examples.parquet")
    }
    pub fn tokens(&self) -> PathBuf {
        self.root.join("tokens.parquet")
    }
    pub fn activations_root(&self) -> PathBuf {
        self.root.join("activations")
    }
    pub fn pooled_root(&self) -> PathBuf {
        self.root.join("pooled")
    }
    /// `activations/hook=<hook>/`
    pub fn activations_dir(&self, hook: &str) -> PathBuf {
        self.activations_root().join(format!("hook={hook}"))
    }
    /// `pooled/hook=<hook>/pool=<pool>/`
    pub fn pooled_dir(&self, hook: &str, pool: &str) -> PathBuf {
        self.pooled_root()
            .join(format!("hook={hook}"))
            .join(format!("pool={pool}"))
    }
    /// `gradients/target=<slug>/hook=<hook>/`: d target / d activation, keyed like activations.
    pub fn gradients_dir(&self, target_slug: &str, hook: &str) -> PathBuf {
        self.root
            .join("gradients")
            .join(format!("target={target_slug}"))
            .join(format!("hook={hook}"))
    }
    /// `dictionary/hook=<hook>/`: the SAE, its metrics and the unit explanations of one hook.
    pub fn dictionary_dir(&self, hook: &str) -> PathBuf {
        self.root.join("dictionary").join(format!("hook={hook}"))
    }
    pub fn probes_dir(&self) -> PathBuf {
        self.root.join("probes")
    }
    pub fn report_dir(&self) -> PathBuf {
        self.root.join("report")
    }
    /// Per-stage scratch state for resuming (shard completion markers); removed on success.
    pub fn progress_dir(&self, stage: &str) -> PathBuf {
        self.root.join("_progress").join(stage)
    }

    /// The hooks that have a folder under `activations/` or `pooled/`, sorted by name.
    pub fn stored_hooks(&self, pooled: bool) -> Result<Vec<String>> {
        let base = if pooled {
            self.pooled_root()
        } else {
            self.activations_root()
        };
        if !base.exists() {
            return Ok(Vec::new());
        }
        let mut hooks = Vec::new();
        for entry in std::fs::read_dir(&base).map_err(DataError::io(&base))? {
            let entry = entry.map_err(DataError::io(&base))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(hook) = name.strip_prefix("hook=") {
                hooks.push(hook.to_owned());
            }
        }
        hooks.sort();
        Ok(hooks)
    }

    /// Errors unless `stage` has completed in this run (its manifest entry is written last).
    pub fn require_stage(&self, stage: &str) -> Result<crate::Manifest> {
        let fail = |message: String| DataError::Run {
            run: self.root.clone(),
            message,
        };
        if self.progress_dir(stage).exists() {
            return Err(fail(format!(
                "the `{stage}` stage has not completed: it was interrupted; run `glassbox {stage}` again with the same settings to resume it"
            )));
        }
        let manifest = crate::Manifest::load(self).map_err(|_| {
            fail(format!(
                "no completed `{stage}` stage here (manifest.json is missing or unreadable); run `glassbox {stage}` first"
            ))
        })?;
        if !manifest.stages.contains_key(stage) {
            return Err(fail(format!(
                "the `{stage}` stage has not completed in this run; run `glassbox {stage}` first"
            )));
        }
        Ok(manifest)
    }
}

/// Part file name for shard `index`: `part-00003.parquet`.
pub fn part_name(index: usize) -> String {
    format!("part-{index:05}.parquet")
}

/// Lists `part-*.parquet` files in a folder, sorted; temp files are ignored.
pub fn list_parts(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(DataError::io(dir))? {
        let path = entry.map_err(DataError::io(dir))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("part-") && name.ends_with(".parquet") {
            parts.push(path);
        }
    }
    parts.sort();
    Ok(parts)
}
