//! The pipeline configuration (TOML). Unknown keys are errors, so typos do not pass silently.

pub use crate::config_attribute::AttributeSection;
pub use crate::config_patch::PatchSection;
/// The `[causal]` section is the concepts crate's own options.
pub type CausalSection = glassbox_concepts::causal::CausalOptions;
/// The `[dissect]` section is the concepts crate's own options.
pub type DissectSection = glassbox_concepts::dissect::DissectOptions;
use anyhow::{bail, Context, Result};
use glassbox_data::store::{ActDtype, Codec};
use glassbox_data::Pool;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Run directory; relative paths are relative to the working directory.
    pub run: PathBuf,
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub extract: ExtractSection,
    #[serde(default)]
    pub probe: ProbeSection,
    /// Absent: no TCAV.
    #[serde(default)]
    pub tcav: Option<TcavSection>,
    /// Absent: no SAEs or unit explanations.
    #[serde(default)]
    pub dictionary: Option<DictionarySection>,
    /// Absent: no activation patching.
    #[serde(default)]
    pub patch: Option<PatchSection>,
    /// Absent: no causal validation of the findings.
    #[serde(default)]
    pub causal: Option<CausalSection>,
    /// Absent: no input attributions.
    #[serde(default)]
    pub attribute: Option<AttributeSection>,
    /// Absent: no Network Dissection (image runs with segmentation masks).
    #[serde(default)]
    pub dissect: Option<DissectSection>,
    #[serde(default)]
    pub report: ReportSection,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `ORG/NAME[@REVISION]` or a local folder.
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// JSONL, CSV, TSV or Parquet with a `text` column.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractSection {
    /// Hook names or glob patterns.
    pub hooks: Vec<String>,
    pub batch_size: usize,
    pub max_length: usize,
    /// `f32` or `f16`.
    pub dtype: ActDtype,
    /// Activation shard compression: `none`, `snappy` or `zstd`.
    pub compression: Codec,
    /// Sequence-level pools to store (`mean`, `cls`, `last`, `max`).
    pub pools: Vec<Pool>,
    /// Also store one row per token.
    pub token_level: bool,
    /// Examples per shard (the unit of resumption).
    pub shard_size: usize,
    /// Read PyTorch pickle checkpoints (`.pth`, `pytorch_model.bin`); off by default.
    pub allow_pickle: bool,
    /// Precision the model's weights are held in: `auto` (bf16/f16 checkpoints stay so where
    /// the family supports it), `f32`, `bf16` or `f16`. Computation is f32 either way.
    pub weights_dtype: glassbox_models::WeightsDtype,
    /// Precision of the extraction forward's matrix products: `f32`, or `bf16` (bf16 × bf16
    /// summed in f32; decoder families with weights held in bf16).
    pub compute_dtype: glassbox_models::ComputeDtype,
}

impl Default for ExtractSection {
    fn default() -> Self {
        Self {
            hooks: vec![
                "blocks.0.hook_resid_pre".into(),
                "blocks.*.hook_resid_post".into(),
            ],
            batch_size: 32,
            max_length: 128,
            dtype: ActDtype::F32,
            compression: Codec::None,
            pools: vec![Pool::Mean, Pool::Cls],
            token_level: true,
            shard_size: 256,
            allow_pickle: false,
            weights_dtype: glassbox_models::WeightsDtype::Auto,
            compute_dtype: glassbox_models::ComputeDtype::F32,
        }
    }
}

impl ExtractSection {
    /// Range checks that need no model or data (they run before anything is read or written).
    pub fn validate(&self) -> Result<()> {
        if self.hooks.is_empty() || self.hooks.iter().any(|h| h.trim().is_empty()) {
            bail!("extract: no hooks (or an empty hook name) given; pass --hooks NAME_OR_GLOB[,...], e.g. 'blocks.*.hook_resid_post'");
        }
        for (name, value) in [
            ("batch_size", self.batch_size),
            ("shard_size", self.shard_size),
            ("max_length", self.max_length),
        ] {
            if value == 0 {
                bail!("extract: {name} = 0; it must be at least 1");
            }
        }
        glassbox_data::limits::each_once("pools", &self.pools)
            .map_err(|e| anyhow::anyhow!("extract: {e}"))?;
        if self.pools.is_empty() && !self.token_level {
            bail!("extract: no pools and no token-level rows: nothing would be stored; pass --pools mean or drop --no-token-level");
        }
        Ok(())
    }
}

/// The `[probe]` section is the probe crate's own options.
pub type ProbeSection = glassbox_probes::ProbeOptions;

/// The `[dictionary]` section (with `[dictionary.sae]` and `[dictionary.explain]`) is the
/// concepts crate's own options.
pub type DictionarySection = glassbox_concepts::dictionary::DictionaryOptions;

/// The `[tcav]` section: concept sets, targets and the significance test.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcavSection {
    /// Concept sets: JSONL/CSV/Parquet files with a `text` column, or folders of `.txt` files.
    pub concepts: Vec<PathBuf>,
    /// `probe:<label>=<class>[@<hook>]`: the logit of a sequence-level probe from the run
    /// (default hook: the deepest one probed).
    pub targets: Vec<String>,
    /// Hooks (names or globs) whose activations the CAVs live in; by default every
    /// `hook_resid_post` before the target's hook.
    pub hooks: Vec<String>,
    /// Random counterpart runs R (and R random-vs-random baseline runs).
    pub random_runs: usize,
    /// Examples per random set; 0 uses the smallest concept's size.
    pub random_set_size: usize,
    /// Corpus of random examples; absent uses the built-in corpus.
    pub random_corpus: Option<PathBuf>,
    /// Concepts with fewer examples are an error.
    pub min_concept_size: usize,
    /// `logistic` or `hinge`.
    pub cav: glassbox_concepts::CavMethod,
    /// L2 strength of the CAV classifier (sklearn's `C = 1 / l2`).
    pub l2: f64,
    /// `logit` (Captum) or `loss` (TensorFlow TCAV).
    pub convention: glassbox_concepts::Convention,
    /// Significance level after Holm–Bonferroni correction.
    pub alpha: f64,
    /// Mean held-out CAV accuracy a concept needs to be called significant.
    pub min_cav_accuracy: f64,
    pub bootstrap: usize,
    pub seed: u64,
    /// Examples per forward/backward pass.
    pub batch_size: usize,
}

impl Default for TcavSection {
    fn default() -> Self {
        Self {
            concepts: Vec::new(),
            targets: Vec::new(),
            hooks: Vec::new(),
            random_runs: 20,
            random_set_size: 0,
            random_corpus: None,
            min_concept_size: 10,
            cav: glassbox_concepts::CavMethod::Logistic,
            l2: 1.0,
            convention: glassbox_concepts::Convention::Logit,
            alpha: 0.05,
            min_cav_accuracy: 0.6,
            bootstrap: 1000,
            seed: 0,
            batch_size: 16,
        }
    }
}

impl TcavSection {
    /// Range checks that need no model or data (they run before anything is read or written):
    /// a p-value threshold outside (0, 1) or an accuracy outside [0, 1] would let the stage
    /// call anything significant.
    pub fn validate(&self) -> Result<()> {
        let in_open_unit = |v: f64| v > 0.0 && v < 1.0;
        if !in_open_unit(self.alpha) {
            bail!(
                "tcav: alpha = {} must lie strictly between 0 and 1 (e.g. 0.05)",
                self.alpha
            );
        }
        if !(0.0..=1.0).contains(&self.min_cav_accuracy) {
            bail!(
                "tcav: min_cav_accuracy = {} must lie in [0, 1] (e.g. 0.6)",
                self.min_cav_accuracy
            );
        }
        if self.random_runs < 2 {
            bail!(
                "tcav: random_runs = {}; the t-test needs at least 2 random runs (the TCAV paper uses up to 500; default 20)",
                self.random_runs
            );
        }
        if !(self.l2 > 0.0 && self.l2.is_finite()) {
            bail!("tcav: l2 = {} must be a finite positive number", self.l2);
        }
        if self.min_concept_size < 2 {
            bail!(
                "tcav: min_concept_size = {} must be at least 2",
                self.min_concept_size
            );
        }
        if self.bootstrap == 0 || self.batch_size == 0 {
            bail!("tcav: bootstrap and batch_size must be at least 1");
        }
        glassbox_data::limits::baselines_and_resamples(
            "random_runs",
            self.random_runs,
            "each is a CAV fitted on a random set; the TCAV paper uses up to 500",
            self.bootstrap,
        )
        .map_err(|e| anyhow::anyhow!("tcav: {e}"))?;
        if self.targets.is_empty() {
            bail!("tcav: no targets; pass --target probe:<label>=<class> (text) or class:<name> (vision)");
        }
        if self.concepts.is_empty() {
            bail!("tcav: no concept sets; pass --concepts FILE_OR_FOLDER[,...]");
        }
        let mut stems: std::collections::BTreeMap<String, &PathBuf> = Default::default();
        for path in &self.concepts {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(other) = stems.insert(stem.clone(), path) {
                bail!(
                    "tcav: concept sets {} and {} share the name `{stem}`, so their rows could not be told apart; rename one",
                    other.display(),
                    path.display()
                );
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {}

impl PipelineConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// The resolved settings of the stages that ran, written to `config.toml` in the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<ExtractSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcav: Option<TcavSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dictionary: Option<DictionarySection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causal: Option<CausalSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<AttributeSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dissect: Option<DissectSection>,
}

impl RunConfig {
    /// Reads the run's `config.toml`, or starts an empty one.
    pub fn load(run: &glassbox_data::RunDir) -> Self {
        std::fs::read_to_string(run.config())
            .ok()
            .and_then(|t| toml::from_str(&t).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, run: &glassbox_data::RunDir) -> Result<()> {
        let text = toml::to_string_pretty(self).context("cannot serialise the run config")?;
        glassbox_data::atomic::write_bytes(&run.config(), text.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<PipelineConfig>(
            "run = 'r'\n[model]\nid = 'a/b'\n[data]\npath = 'd.jsonl'\n[extract]\nhook = ['x']\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `hook`"), "{err}");
    }

    #[test]
    fn defaults_fill_in() {
        let c: PipelineConfig =
            toml::from_str("run = 'r'\n[model]\nid = 'a/b'\n[data]\npath = 'd.jsonl'\n").unwrap();
        assert_eq!(c.extract, ExtractSection::default());
        assert!(c.probe.labels.is_empty());
    }

    #[test]
    fn shipped_configs_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
        let c = PipelineConfig::load(&dir.join("default.toml")).unwrap();
        assert!(!c.probe.labels.is_empty());
        let ioi = PipelineConfig::load(&dir.join("ioi.toml")).unwrap();
        let patch = ioi.patch.expect("ioi.toml patches");
        patch.validate().unwrap();
        assert_eq!(patch.metric, glassbox_runner::patching::Metric::LogitDiff);
        PipelineConfig::load(&dir.join("vision.toml")).unwrap();
    }
}
