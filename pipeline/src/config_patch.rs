//! The `[patch]` section: activation patching over prompt pairs.

use anyhow::{bail, Result};
use glassbox_runner::patching::{Ablation, Direction, Metric, Positions};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Settings of the `patch` stage (CLI flags and the `[patch]` section alike).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PatchSection {
    /// Prompt pairs: JSONL, CSV, TSV or Parquet with `clean`, `corrupted` and `answer`, `wrong` (causal
    /// LMs) or `target` (probe or class targets, any model).
    pub pairs: PathBuf,
    /// Hook names or glob patterns to patch.
    pub hooks: Vec<String>,
    /// `all`, `last`, or 0-based positions (`0,3,5`).
    pub positions: Positions,
    /// Patch `attn.hook_z` head by head.
    pub heads: bool,
    /// `logit_diff` (default), `prob`, `logprob` or `kl`.
    pub metric: Metric,
    /// `denoise` (corrupted run, clean activation; default) or `noise`.
    pub direction: Direction,
    /// Also estimate every effect by attribution patching and compare.
    pub atp: bool,
    /// Patched runs per forward pass.
    pub batch_size: usize,
    /// Pairs per part: the unit an interrupted run resumes from and `--shard` deals out.
    pub part_size: usize,
    /// Also ablate every hook (head by head for `attn.hook_z` with `heads`) on the clean
    /// prompts: `zero`, `mean` (over the pairs' clean runs) or `resample` (another pair's clean
    /// run of the same length); absent: no ablation.
    pub ablation: Option<Ablation>,
    /// Ablate `mlp.hook_post` hooks unit by unit (one row per neuron).
    pub ablate_neurons: bool,
    /// Also ablate every active feature of the run's SAE at these hooks (trained by the
    /// dictionary stage), one at a time through the spliced SAE.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ablate_features: Vec<String>,
    /// Seed of the ablation's resample partners and bootstrap intervals.
    pub seed: u64,
    /// Read PyTorch pickle checkpoints.
    pub allow_pickle: bool,
}

impl Default for PatchSection {
    fn default() -> Self {
        Self {
            pairs: PathBuf::new(),
            hooks: vec!["blocks.*.hook_resid_pre".into()],
            positions: Positions::All,
            heads: false,
            metric: Metric::LogitDiff,
            direction: Direction::Denoise,
            atp: true,
            batch_size: 32,
            part_size: 16,
            ablation: None,
            ablate_neurons: false,
            ablate_features: Vec::new(),
            seed: 0,
            allow_pickle: false,
        }
    }
}

impl PatchSection {
    /// Checks that need no model or data.
    pub fn validate(&self) -> Result<()> {
        if self.pairs.as_os_str().is_empty() {
            bail!("patch: no pairs file; pass --pairs FILE (JSONL, CSV, TSV or Parquet with clean, corrupted and answer, wrong — or target)");
        }
        if self.hooks.is_empty() || self.hooks.iter().any(|h| h.trim().is_empty()) {
            bail!("patch: no hooks (or an empty hook name); pass --hooks NAME_OR_GLOB[,...], e.g. 'blocks.*.hook_resid_pre'");
        }
        if self.batch_size == 0 {
            bail!("patch: batch_size = 0; it must be at least 1");
        }
        if self.part_size == 0 {
            bail!("patch: part_size = 0; it must be at least 1");
        }
        if !self.ablate_features.is_empty() && self.ablation.is_none() {
            bail!(
                "patch: ablate_features without an ablation; pass --ablate zero|mean|resample too"
            );
        }
        if self.ablate_neurons && self.ablation.is_none() {
            bail!(
                "patch: ablate_neurons without an ablation; pass --ablate zero|mean|resample too"
            );
        }
        if let Positions::Listed(v) = &self.positions {
            if v.is_empty() {
                bail!("patch: no positions; use all, last or 0-based positions");
            }
        }
        Ok(())
    }
}
