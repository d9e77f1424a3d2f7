//! The run directory layout (design §5). All paths into a run are built here.

use crate::{DataError, HookPoint, Pool, Result};
use std::path::{Path, PathBuf};

/// A run directory, `runs/<name>/`.
///
/// A stage writes through a *staged* view of the run ([`RunDir::staged`]): the paths of the
/// stage's outputs point into a staging folder, everything else into the run. The stage runner
/// swaps the staged outputs in by rename once the stage is complete, so an interrupted or failed
/// stage never touches what the run already has.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
    staging: Option<Staging>,
    /// What to call the run where it is not `root` (a run on object storage: its URL).
    name: Option<String>,
}

/// Where a staged view sends its outputs.
#[derive(Debug, Clone)]
struct Staging {
    dir: PathBuf,
    /// Output paths relative to the run (`probes`, `gradients/target=x`), redirected to `dir`.
    outputs: Vec<PathBuf>,
}

pub use crate::staging::STAGING_DIR;

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            staging: None,
            name: None,
        }
    }

    /// A run worked on at `root` but known to the user as `name` (a run on object storage,
    /// whose `root` is its local mirror).
    pub fn named(root: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            ..Self::new(root)
        }
    }

    /// How reports and messages name the run: its URL for a remote run, else its folder.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.root.display().to_string())
    }

    /// A view of this run whose `outputs` (paths relative to the run root) live under
    /// `staging_dir` instead; reads of every other path still see the run.
    pub fn staged(&self, staging_dir: impl Into<PathBuf>, outputs: &[PathBuf]) -> Self {
        Self {
            root: self.root.clone(),
            staging: Some(Staging {
                dir: staging_dir.into(),
                outputs: outputs.to_vec(),
            }),
            name: self.name.clone(),
        }
    }

    /// The run's root (also for a staged view: error messages name the run).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` inside the run, redirected into the staging folder when it lies under one of a
    /// staged view's outputs.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        if let Some(staging) = &self.staging {
            if staging.outputs.iter().any(|o| rel.starts_with(o)) {
                return staging.dir.join(rel);
            }
        }
        self.root.join(rel)
    }

    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.json")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn examples(&self) -> PathBuf {
        self.path("examples.parquet")
    }
    pub fn tokens(&self) -> PathBuf {
        self.path("tokens.parquet")
    }
    pub fn activations_root(&self) -> PathBuf {
        self.path("activations")
    }
    pub fn pooled_root(&self) -> PathBuf {
        self.path("pooled")
    }
    /// `activations/hook=<hook>/`
    pub fn activations_dir(&self, hook: HookPoint) -> PathBuf {
        self.path(Path::new("activations").join(format!("hook={hook}")))
    }
    /// `pooled/hook=<hook>/pool=<pool>/`
    pub fn pooled_dir(&self, hook: HookPoint, pool: Pool) -> PathBuf {
        self.path(
            Path::new("pooled")
                .join(format!("hook={hook}"))
                .join(format!("pool={pool}")),
        )
    }
    /// `gradients/target=<slug>/`: every stored hook of one target.
    pub fn gradients_target_dir(&self, target_slug: &str) -> PathBuf {
        self.path(Self::gradients_target_rel(target_slug))
    }
    /// The run-relative path of [`RunDir::gradients_target_dir`] (a stage output).
    pub fn gradients_target_rel(target_slug: &str) -> PathBuf {
        Path::new("gradients").join(format!("target={target_slug}"))
    }
    /// `gradients/target=<slug>/hook=<hook>/`: d target / d activation, keyed like activations.
    pub fn gradients_dir(&self, target_slug: &str, hook: HookPoint) -> PathBuf {
        self.path(Self::gradients_target_rel(target_slug).join(format!("hook={hook}")))
    }
    /// `dictionary/`: one folder per hook.
    pub fn dictionary_root(&self) -> PathBuf {
        self.path("dictionary")
    }
    /// `dictionary/hook=<hook>/`: the SAE, its metrics and the unit explanations of one hook.
    pub fn dictionary_dir(&self, hook: HookPoint) -> PathBuf {
        self.path(Path::new("dictionary").join(format!("hook={hook}")))
    }
    /// `dictionary/transcoder=<output hook>/`: the transcoder that predicts that hook.
    pub fn transcoder_dir(&self, output: HookPoint) -> PathBuf {
        self.path(Path::new("dictionary").join(format!("transcoder={output}")))
    }
    /// `dissection/`: Network Dissection's tables (hooks, units, scores, top examples).
    pub fn dissection_dir(&self) -> PathBuf {
        self.path("dissection")
    }
    pub fn probes_dir(&self) -> PathBuf {
        self.path("probes")
    }
    pub fn tcav_dir(&self) -> PathBuf {
        self.path("tcav")
    }
    pub fn report_dir(&self) -> PathBuf {
        self.path("report")
    }
    /// Per-stage scratch state for resuming (shard completion markers): inside the staging
    /// folder of a staged view, so it goes with the stage's other unfinished outputs.
    pub fn progress_dir(&self, stage: &str) -> PathBuf {
        match &self.staging {
            Some(staging) => crate::staging::progress_in(&staging.dir, stage),
            None => {
                crate::staging::progress_in(&crate::staging::stage_dir(&self.root, stage), stage)
            }
        }
    }

    /// The hooks that have a folder under `activations/` or `pooled/`, sorted by name.
    pub fn stored_hooks(&self, pooled: bool) -> Result<Vec<HookPoint>> {
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
                let hook: HookPoint = hook.parse().map_err(|e| DataError::Run {
                    run: self.root.clone(),
                    message: format!(
                        "{}: not a hook folder ({e}); remove it or re-run extract with --force",
                        entry.path().display()
                    ),
                })?;
                hooks.push(hook);
            }
        }
        // By name, the order the stages have always visited hooks in (their outputs keep it).
        hooks.sort_by_cached_key(HookPoint::to_string);
        Ok(hooks)
    }

    /// Errors unless `stage` has completed in this run (its manifest entry is written last).
    pub fn require_stage(&self, stage: &str) -> Result<crate::Manifest> {
        let fail = |message: String| DataError::Run {
            run: self.root.clone(),
            message,
        };
        let manifest = crate::Manifest::load(self);
        let completed = manifest
            .as_ref()
            .is_ok_and(|m| m.stages.contains_key(stage));
        // A sharded attempt without a completed result: name the shards still to run.
        if !completed {
            if let Some(plan) = crate::shards::ShardPlan::load(&self.root, stage)? {
                let missing: Vec<String> = plan
                    .incomplete(&self.root)
                    .iter()
                    .map(|s| format!("{}/{} ({})", s.index, s.count, s.state()))
                    .collect();
                return Err(fail(if missing.is_empty() {
                    format!(
                        "the sharded `{stage}` stage has every part but was not committed; run any one of its shards again (`glassbox {stage} … --shard i/{}`) to commit it",
                        plan.count
                    )
                } else {
                    format!(
                        "the sharded `{stage}` stage is incomplete: shard{} {} of {} not finished; run `glassbox {stage} … --shard i/{}` for each with the same settings (`glassbox inspect` shows every shard)",
                        if missing.len() == 1 { "" } else { "s" },
                        missing.join(", "),
                        plan.count,
                        plan.count
                    )
                }));
            }
        }
        // A staged attempt without a completed result: the stage was interrupted.
        let staged = self.root.join(STAGING_DIR).join(stage).join("FINGERPRINT");
        if !completed && staged.is_file() {
            return Err(fail(format!(
                "the `{stage}` stage has not completed: it was interrupted; run `glassbox {stage}` again with the same settings to resume it"
            )));
        }
        // Missing, or holding nothing but the lock this command just took.
        let nothing_here = std::fs::read_dir(&self.root).map_or(true, |entries| {
            entries.flatten().all(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(".glassbox.") && name.ends_with(".lock")
            })
        });
        if manifest.is_err() && nothing_here {
            return Err(fail(format!(
                "no such run directory (no `extract` stage has written it); check the path, or create the run with `glassbox extract --run {}`",
                self.root.display()
            )));
        }
        let manifest = manifest.map_err(|_| {
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

/// Lists `part-*.parquet` files in a folder, sorted; temp files are ignored. In the mirror of
/// a run on object storage this includes the parts that stay remote
/// ([`remote_parts`](crate::remote_parts)).
pub fn list_parts(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut parts = crate::remote_parts::remote_parts_in(dir);
    if !dir.exists() {
        parts.sort();
        return Ok(parts);
    }
    for entry in std::fs::read_dir(dir).map_err(DataError::io(dir))? {
        let path = entry.map_err(DataError::io(dir))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("part-") && name.ends_with(".parquet") {
            parts.push(path);
        }
    }
    parts.sort();
    parts.dedup();
    Ok(parts)
}

/// A target spec as a folder-name-safe slug (`class:tabby, tabby cat` → `class_tabby_tabby_cat`):
/// ASCII letters, digits and `-` kept, every other run of characters one `_`.
pub fn folder_slug(spec: &str) -> String {
    let mut out = String::new();
    for c in spec.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}
