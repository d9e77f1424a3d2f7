//! The run transaction every stage goes through (design §10, "one stage runner").
//!
//! A stage has already resolved and validated its settings and read its inputs far enough to
//! fail before it begins a [`Transaction`]. Then it computes into a staging folder
//! (`<run>/.staging/<stage>/`, through [`Transaction::run`], a staged view of the run whose
//! output paths point there) and [`Transaction::commit`]s: the new manifest and `config.toml`
//! are written into a commit marker first, then the outputs are swapped in by rename and the
//! manifest saved. A stage that fails or is refused leaves the run as it was; one that is killed
//! leaves its staging folder, which the same command resumes; one killed in the middle of the
//! swap is rolled forward by [`recover`] when the next writer takes the run's lock.

use crate::config::RunConfig;
use anyhow::{Context, Result};
use glassbox_data::manifest::now_rfc3339;
use glassbox_data::run::STAGING_DIR;
use glassbox_data::{Manifest, RunDir, StageRecord};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The stages of a run, in order: committing one forgets the ones after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Extract,
    Probe,
    Tcav,
    Dictionary,
    Patch,
    Causal,
    Attribute,
    Dissect,
    Report,
}

impl Stage {
    pub const ALL: [Stage; 9] = [
        Stage::Extract,
        Stage::Probe,
        Stage::Tcav,
        Stage::Dictionary,
        Stage::Patch,
        Stage::Causal,
        Stage::Attribute,
        Stage::Dissect,
        Stage::Report,
    ];

    /// The name in the manifest and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Extract => "extract",
            Stage::Probe => "probe",
            Stage::Tcav => "tcav",
            Stage::Dictionary => "dictionary",
            Stage::Patch => "patch",
            Stage::Causal => "causal",
            Stage::Attribute => "attribute",
            Stage::Dissect => "dissect",
            Stage::Report => "report",
        }
    }

    /// This stage and every stage computed from its results, whose manifest entries a new
    /// result of it makes stale: everything after extraction; the probes feed TCAV's targets
    /// and the dictionary's directions; CAVs feed the dictionary; every stage feeds the report.
    /// Patching reads only the model and its pairs; attributions read the examples and the
    /// probes (their `probe:` targets); the causal tests, attributions and dissection (which
    /// reads the activations and masks alone) feed only the report.
    pub fn and_after(self) -> impl Iterator<Item = Stage> {
        Self::ALL.into_iter().filter(move |s| {
            *s == self
                || match self {
                    Stage::Extract => true,
                    Stage::Probe => *s > self && !matches!(s, Stage::Patch | Stage::Dissect),
                    Stage::Tcav | Stage::Dictionary => {
                        *s > self && !matches!(s, Stage::Patch | Stage::Attribute | Stage::Dissect)
                    }
                    Stage::Patch | Stage::Causal | Stage::Attribute | Stage::Dissect => {
                        *s == Stage::Report
                    }
                    Stage::Report => false,
                }
        })
    }

    /// Outputs of other stages that a new result of this one makes wrong, so committing it
    /// removes them: new activations void everything computed from the old ones; new probes
    /// void the stored target gradients (they are gradients of the probes' logits). Later
    /// stages' other outputs stay as caches (a trained SAE is reused when its fingerprint
    /// matches) but lose their manifest entries, so nothing reads them as complete.
    fn voids(self) -> &'static [&'static str] {
        match self {
            Stage::Extract => &[
                "probes",
                "tcav",
                "gradients",
                "dictionary",
                "patching",
                "causal",
                "attributions",
                "dissection",
                "report",
            ],
            Stage::Probe => &["gradients"],
            _ => &[],
        }
    }
}

/// What [`Transaction::commit`] records.
pub struct Completion {
    pub stage: Stage,
    pub fingerprint: String,
    pub seed: Option<u64>,
    pub params: serde_json::Value,
    pub started: std::time::Instant,
}

/// One stage's unfinished outputs, staged inside the run until commit.
pub struct Transaction {
    live: RunDir,
    staged: RunDir,
    dir: PathBuf,
    outputs: Vec<PathBuf>,
    /// False when this attempt resumed an interrupted one's staging (kept after a failure).
    fresh: bool,
    /// Keep the staging folder on drop (committed, or paused for resumption).
    keep: bool,
}

const FINGERPRINT_FILE: &str = "FINGERPRINT";
const COMMIT_FILE: &str = "COMMIT.json";

impl Transaction {
    /// Starts staging `outputs` (paths relative to the run) for `name` (a stage, or a step such
    /// as `gradients`). Staged outputs of an interrupted attempt with the same `fingerprint`
    /// are resumed when `resume` is true; any other staging of `name` is discarded.
    pub fn begin(
        run: &RunDir,
        name: &str,
        outputs: Vec<PathBuf>,
        fingerprint: &str,
        resume: bool,
    ) -> Result<Self> {
        let dir = staging_dir(run, name);
        let marker = dir.join(FINGERPRINT_FILE);
        let resumable =
            resume && std::fs::read_to_string(&marker).is_ok_and(|f| f.trim() == fingerprint);
        if !resumable {
            remove_path(&dir)?;
            // On object storage, what a discarded attempt staged in the bucket must neither be
            // moved into the run at this attempt's commit nor resumed as this attempt's.
            glassbox_remote::discard_staging(run.root(), name, fingerprint)?;
            glassbox_data::atomic::write_bytes(&marker, fingerprint.as_bytes())?;
        }
        Ok(Self {
            live: run.clone(),
            staged: run.staged(&dir, &outputs),
            dir,
            outputs,
            fresh: !resumable,
            keep: false,
        })
    }

    /// Whether an interrupted attempt of `name` with this `fingerprint` is staged: a resumable
    /// stage resumes it rather than calling an equal completed result up to date (a forced
    /// re-run that was paused or killed continues when run again without `--force`).
    pub fn pending(run: &RunDir, name: &str, fingerprint: &str) -> bool {
        std::fs::read_to_string(staging_dir(run, name).join(FINGERPRINT_FILE))
            .is_ok_and(|f| f.trim() == fingerprint)
    }

    /// The run as this stage sees it: its outputs in staging, its inputs in the run.
    pub fn run(&self) -> &RunDir {
        &self.staged
    }

    /// Whether this attempt continues an interrupted one.
    pub fn resumed(&self) -> bool {
        !self.fresh
    }

    /// Never removes the staging folder on failure, even when this attempt created it: shard
    /// workers share it, and one worker's failure must not discard the others' parts.
    pub fn shared(mut self) -> Self {
        self.fresh = false;
        self
    }

    /// Leaves the staging folder for the next attempt (a paused dictionary training).
    pub fn keep_for_resume(mut self) {
        self.keep = true;
    }

    /// Swaps the staged outputs in and records the stage: `update` sets the manifest's model
    /// and data records where the stage owns them, `record` the stage's section of
    /// `config.toml`.
    pub fn commit(
        self,
        done: Completion,
        update: impl FnOnce(&mut Manifest),
        record: impl FnOnce(&mut RunConfig),
    ) -> Result<()> {
        let mut manifest = load_manifest_for_commit(&self.live, Some(done.stage))?;
        for stage in done.stage.and_after() {
            manifest.stages.remove(stage.name());
        }
        let invalidated = manifest.clone();
        update(&mut manifest);
        let seconds = (done.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        manifest.stages.insert(
            done.stage.name().into(),
            StageRecord {
                fingerprint: done.fingerprint,
                finished_at: now_rfc3339(),
                seconds: Some(seconds),
                seed: done.seed,
                params: done.params,
                build: Some(crate::fingerprint::build_record()),
            },
        );
        let mut config = RunConfig::load(&self.live);
        record(&mut config);
        self.apply(
            done.stage.voids().iter().map(PathBuf::from).collect(),
            invalidated,
            manifest,
            &config,
        )
    }

    /// Records a step that is not a stage of the manifest (`gradients`): swaps its outputs in.
    pub fn commit_outputs(self) -> Result<()> {
        let manifest = load_manifest_for_commit(&self.live, None)?;
        let config = RunConfig::load(&self.live);
        self.apply(Vec::new(), manifest.clone(), manifest, &config)
    }

    /// Writes the commit marker, then carries it out.
    fn apply(
        mut self,
        voided: Vec<PathBuf>,
        invalidated: Manifest,
        manifest: Manifest,
        config: &RunConfig,
    ) -> Result<()> {
        let plan = CommitPlan {
            outputs: self
                .outputs
                .iter()
                .map(|rel| (rel.clone(), self.dir.join(rel).exists()))
                .collect(),
            voided,
            invalidated,
            manifest,
            config: toml::to_string_pretty(config).context("cannot serialise the run config")?,
        };
        self.keep = true;
        let bytes = serde_json::to_vec_pretty(&plan)?;
        glassbox_data::atomic::write_bytes(&self.dir.join(COMMIT_FILE), &bytes)?;
        plan.apply(&self.live, &self.dir)?;
        crate::run_location::push_commit(&self.live)
    }
}

impl Drop for Transaction {
    /// A failed attempt takes its staging with it, so the run is as it was before; staging an
    /// interrupted attempt left for resumption stays.
    fn drop(&mut self) {
        if !self.keep && self.fresh {
            let _ = std::fs::remove_dir_all(&self.dir);
            remove_empty_staging_root(&self.live);
        }
    }
}

/// The staging folder of `name` in `run`.
pub fn staging_dir(run: &RunDir, name: &str) -> PathBuf {
    run.root().join(STAGING_DIR).join(name)
}

/// The manifest to commit into: the run's, or a new one. An unreadable manifest is an error,
/// except for extract, which only gets here over one with `--force` and replaces the run.
fn load_manifest_for_commit(run: &RunDir, stage: Option<Stage>) -> Result<Manifest> {
    match Manifest::load_or_default(run) {
        Err(_) if stage == Some(Stage::Extract) => Ok(Manifest::empty()),
        other => Ok(other?),
    }
}

/// Everything a commit does, written down before it starts so a killed commit can finish.
#[derive(Serialize, Deserialize)]
struct CommitPlan {
    /// Each staged output and whether the stage produced it (one it did not is removed from
    /// the run: a vision re-extraction leaves no old `tokens.parquet`).
    outputs: Vec<(PathBuf, bool)>,
    /// Outputs of other stages that this result makes wrong.
    voided: Vec<PathBuf>,
    /// The manifest while the swap is under way: this stage and later ones unmarked.
    invalidated: Manifest,
    /// The manifest after the commit.
    manifest: Manifest,
    /// `config.toml` after the commit.
    config: String,
}

impl CommitPlan {
    /// Idempotent, so [`recover`] can run it again after a kill at any point.
    fn apply(&self, run: &RunDir, dir: &Path) -> Result<()> {
        self.invalidated.save(run)?;
        let old = dir.with_extension("old");
        for rel in &self.voided {
            move_aside(&run.root().join(rel), &old.join(rel))?;
        }
        for (rel, produced) in &self.outputs {
            let staged = dir.join(rel);
            let live = run.root().join(rel);
            if *produced && staged.exists() {
                move_aside(&live, &old.join(rel))?;
                rename(&staged, &live)?;
            } else if !*produced {
                move_aside(&live, &old.join(rel))?;
            }
        }
        glassbox_data::atomic::write_bytes(&run.config(), self.config.as_bytes())?;
        self.manifest.save(run)?;
        remove_path(&old)?;
        remove_path(dir)?;
        remove_empty_staging_root(run);
        Ok(())
    }
}

/// Finishes any commit a killed process left half done. Called with the run's lock held,
/// before a stage reads the run.
pub fn recover(run: &RunDir) -> Result<()> {
    let root = run.root().join(STAGING_DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let marker = dir.join(COMMIT_FILE);
        if !marker.is_file() {
            continue;
        }
        let plan: CommitPlan = serde_json::from_slice(&std::fs::read(&marker)?)
            .with_context(|| format!("{}: unreadable commit marker", marker.display()))?;
        plan.apply(run, &dir)
            .with_context(|| format!("finishing the interrupted commit in {}", dir.display()))?;
    }
    Ok(())
}

/// The stages whose staging folders hold an interrupted attempt (for `inspect`).
pub fn interrupted(run: &RunDir) -> Vec<String> {
    let root = run.root().join(STAGING_DIR);
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join(FINGERPRINT_FILE).is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn move_aside(live: &Path, old: &Path) -> Result<()> {
    if live.exists() {
        if let Some(parent) = old.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        remove_path(old)?;
        rename(live, old)?;
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::rename(from, to)
        .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))
}

fn remove_empty_staging_root(run: &RunDir) {
    let _ = std::fs::remove_dir(run.root().join(STAGING_DIR));
}

/// Removes a file or folder if it exists.
pub fn remove_path(path: &Path) -> Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path)
            .with_context(|| format!("cannot remove {}", path.display()))?;
    } else if path.exists() || path.is_symlink() {
        std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(root).unwrap().display().to_string();
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    fn done(stage: Stage) -> Completion {
        Completion {
            stage,
            fingerprint: "fp".into(),
            seed: None,
            params: serde_json::json!({}),
            started: std::time::Instant::now(),
        }
    }

    #[test]
    fn a_failed_attempt_leaves_the_run_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        std::fs::create_dir_all(run.probes_dir()).unwrap();
        std::fs::write(run.probes_dir().join("results.parquet"), b"old").unwrap();
        let before = snapshot(dir.path());
        {
            let tx = Transaction::begin(&run, "probe", vec!["probes".into()], "fp", true).unwrap();
            std::fs::create_dir_all(tx.run().probes_dir()).unwrap();
            std::fs::write(tx.run().probes_dir().join("results.parquet"), b"new").unwrap();
            // Dropped without commit: the stage failed.
        }
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn commit_swaps_outputs_in_and_voids_downstream() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        std::fs::create_dir_all(run.probes_dir()).unwrap();
        std::fs::write(run.probes_dir().join("stale.parquet"), b"old").unwrap();
        std::fs::create_dir_all(run.gradients_target_dir("t")).unwrap();
        let tx = Transaction::begin(&run, "probe", vec!["probes".into()], "fp", true).unwrap();
        assert_eq!(
            tx.run().probes_dir(),
            staging_dir(&run, "probe").join("probes")
        );
        std::fs::create_dir_all(tx.run().probes_dir()).unwrap();
        std::fs::write(tx.run().probes_dir().join("results.parquet"), b"new").unwrap();
        tx.commit(done(Stage::Probe), |_| {}, |_| {}).unwrap();
        let files: Vec<String> = snapshot(dir.path()).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            files,
            ["config.toml", "manifest.json", "probes/results.parquet"]
        );
        let manifest = Manifest::load(&run).unwrap();
        assert_eq!(manifest.stage_fingerprint("probe"), Some("fp"));
    }

    #[test]
    fn a_commit_killed_half_way_is_rolled_forward() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let tx = Transaction::begin(&run, "probe", vec!["probes".into()], "fp", true).unwrap();
        std::fs::create_dir_all(tx.run().probes_dir()).unwrap();
        std::fs::write(tx.run().probes_dir().join("results.parquet"), b"new").unwrap();
        let staging = staging_dir(&run, "probe");
        // Write the marker as commit does, then stop before applying it.
        let plan = CommitPlan {
            outputs: vec![("probes".into(), true)],
            voided: vec![],
            invalidated: Manifest::default(),
            manifest: Manifest {
                glassbox_version: "x".into(),
                ..Manifest::default()
            },
            config: String::new(),
        };
        std::fs::write(
            staging.join(COMMIT_FILE),
            serde_json::to_vec(&plan).unwrap(),
        )
        .unwrap();
        tx.keep_for_resume();
        recover(&run).unwrap();
        assert_eq!(
            std::fs::read(run.probes_dir().join("results.parquet")).unwrap(),
            b"new"
        );
        assert!(!run.root().join(STAGING_DIR).exists());
        assert_eq!(Manifest::load(&run).unwrap().glassbox_version, "x");
    }
}
