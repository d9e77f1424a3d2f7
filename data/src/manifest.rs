//! `manifest.json`: model id and resolved revision, data hash, seeds, versions and one entry per
//! completed stage. A stage's entry is written last, so its presence means the stage completed.

use crate::{atomic, DataError, Result, RunDir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The glassbox version that wrote a file.
pub const GLASSBOX_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub glassbox_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataRecord>,
    #[serde(default)]
    pub stages: BTreeMap<String, StageRecord>,
}

/// Which model produced the activations, pinned to a commit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelRecord {
    /// `ORG/NAME` for hub models, the folder path for local ones.
    pub id: String,
    /// The resolved commit sha (hub) or `local` for a folder.
    pub revision: String,
    /// `hub` or `local`.
    pub source: String,
    /// Model family, e.g. `bert`.
    pub family: String,
    /// What the model reads (absent in runs written before it was recorded: tell by family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<crate::Modality>,
    /// SHA-256 of the weights file.
    pub weights_sha256: String,
    /// Image models: the preprocessing the images went through (absent for text models and
    /// runs written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessor: Option<crate::images::Preprocessor>,
}

/// The data set that was run through the model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DataRecord {
    /// The path as given (relative paths are relative to where extract ran).
    pub path: String,
    pub sha256: String,
    pub n_examples: u64,
    pub n_tokens: u64,
    /// The same path made absolute when extract ran (absent in runs written before it was
    /// recorded): later stages that reread the data (image runs) find it from another
    /// working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute: Option<String>,
}

impl DataRecord {
    /// Where the data is now: the path as given when it exists from here, else the absolute
    /// path extract recorded when that exists, else the path as given (whose reader then
    /// names it as missing).
    pub fn locate(&self) -> std::path::PathBuf {
        let given = std::path::PathBuf::from(&self.path);
        if given.exists() {
            return given;
        }
        match self.absolute.as_deref().map(std::path::PathBuf::from) {
            Some(absolute) if absolute.exists() => absolute,
            _ => given,
        }
    }
}

/// One completed stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageRecord {
    /// Hash of the stage's config, its upstream fingerprints and the code version.
    pub fingerprint: String,
    pub finished_at: String,
    /// Wall-clock seconds the stage's last (completing) run took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The stage's resolved parameters, for provenance.
    #[serde(default)]
    pub params: serde_json::Value,
    /// The build and the arithmetic that produced the stage (absent in runs written before it
    /// was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildRecord>,
}

/// Which code and which arithmetic produced a stage. Its fingerprint keys on the version, not
/// on this, so a rebuilt glassbox keeps a completed stage; this is how a reader tells that the
/// numbers came from another build, or from other vector instructions (sums in another order:
/// equal to rounding, not bit for bit).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildRecord {
    pub glassbox_version: String,
    /// A hash of the source the binary was built from (`glassbox --version` prints it).
    pub source: String,
    /// The instruction set glassbox's kernels ran at: `avx512`, `avx2` or `scalar`
    /// (`GLASSBOX_SIMD` caps it).
    pub simd: String,
    /// The CPU's model name, where the system says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
}

impl BuildRecord {
    /// This process's record, for a binary whose source hashes to `source`.
    pub fn current(source: &str) -> Self {
        Self {
            glassbox_version: GLASSBOX_VERSION.to_owned(),
            source: source.to_owned(),
            simd: crate::simd::level().as_str().to_owned(),
            cpu: cpu_model(),
        }
    }

    /// `0.1.0 · source 1a2b… · avx512`, for tables.
    pub fn short(&self) -> String {
        format!(
            "{} · source {} · {}",
            self.glassbox_version, self.source, self.simd
        )
    }
}

/// The first `model name` line of `/proc/cpuinfo` (Linux); `None` elsewhere.
fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, name)| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

impl Manifest {
    pub fn load(run: &RunDir) -> Result<Self> {
        let path = run.manifest();
        let text = std::fs::read_to_string(&path).map_err(DataError::io(&path))?;
        serde_json::from_str(&text).map_err(|source| DataError::Json { path, source })
    }

    /// Loads the manifest, or starts an empty one if the run has none yet.
    pub fn load_or_default(run: &RunDir) -> Result<Self> {
        if run.manifest().exists() {
            Self::load(run)
        } else {
            Ok(Self::empty())
        }
    }

    /// The manifest of a run with no stage yet.
    pub fn empty() -> Self {
        Self {
            glassbox_version: GLASSBOX_VERSION.to_owned(),
            ..Self::default()
        }
    }

    pub fn save(&self, run: &RunDir) -> Result<()> {
        let path = run.manifest();
        let json = serde_json::to_vec_pretty(self).map_err(|source| DataError::Json {
            path: path.clone(),
            source,
        })?;
        atomic::write_bytes(&path, &json)
    }

    pub fn stage_fingerprint(&self, stage: &str) -> Option<&str> {
        self.stages.get(stage).map(|s| s.fingerprint.as_str())
    }
}

/// Current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn data_is_located_as_given_then_by_its_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.jsonl");
        std::fs::write(&file, "{}").unwrap();
        let record = |path: &str, absolute: Option<&Path>| DataRecord {
            path: path.into(),
            sha256: String::new(),
            n_examples: 1,
            n_tokens: 1,
            absolute: absolute.map(|p| p.display().to_string()),
        };
        // A relative path that does not resolve from here: the recorded absolute one.
        assert_eq!(record("no/such/data.jsonl", Some(&file)).locate(), file);
        // The path as given wins where it exists; neither existing gives it back as given.
        let given = file.display().to_string();
        assert_eq!(record(&given, Some(Path::new("/elsewhere"))).locate(), file);
        let missing = record("no/such/data.jsonl", Some(Path::new("/no/such/either")));
        assert_eq!(missing.locate(), Path::new("no/such/data.jsonl"));
        assert_eq!(
            record("no/such/data.jsonl", None).locate(),
            Path::new("no/such/data.jsonl")
        );
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let mut m = Manifest::load_or_default(&run).unwrap();
        m.stages.insert(
            "extract".into(),
            StageRecord {
                fingerprint: "abc".into(),
                finished_at: now_rfc3339(),
                seconds: Some(1.5),
                seed: None,
                params: serde_json::json!({"hooks": ["x"]}),
                build: Some(BuildRecord::current("0123456789abcdef")),
            },
        );
        m.save(&run).unwrap();
        assert_eq!(Manifest::load(&run).unwrap(), m);
        assert!(run.require_stage("extract").is_ok());
        let err = run.require_stage("probe").unwrap_err().to_string();
        assert!(err.contains("`probe`"), "{err}");
    }
}
