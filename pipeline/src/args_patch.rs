//! The `patch` subcommand's flags (they fill the `[patch]` section). As in `args`, the doc
//! comments are `--help` text: `[@REVISION]` is argument syntax, not a doc link.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PatchArgs {
    /// ORG/NAME[@REVISION] or ./local/dir; default: the run's model.
    #[arg(long)]
    pub model: Option<String>,
    /// JSONL, CSV, TSV or Parquet with `clean`, `corrupted` and `answer`, `wrong` (causal LMs) or
    /// `target` (probe:LABEL=CLASS or class:LABEL, any model).
    #[arg(long)]
    pub pairs: PathBuf,
    /// Hook names or glob patterns to patch, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = crate::config::PatchSection::default().hooks)]
    pub hooks: Vec<String>,
    /// Run directory to write `patching/` into (created when missing).
    #[arg(long)]
    pub run: PathBuf,
    /// all, last, or 0-based positions (0,3,5).
    #[arg(long, default_value_t = crate::config::PatchSection::default().positions)]
    pub positions: glassbox_runner::patching::Positions,
    /// Patch attn.hook_z head by head.
    #[arg(long)]
    pub heads: bool,
    /// logit-diff (logit_diff), prob, logprob or kl.
    #[arg(long, value_enum, default_value = "logit-diff")]
    pub metric: MetricArg,
    /// denoise (corrupted run, clean activation) or noise (the reverse).
    #[arg(long, value_enum, default_value = "denoise")]
    pub direction: DirectionArg,
    /// Skip attribution patching (the first-order estimate written beside each exact effect).
    #[arg(long)]
    pub no_atp: bool,
    /// Patched runs per forward pass.
    #[arg(long, default_value_t = crate::config::PatchSection::default().batch_size)]
    pub batch_size: usize,
    /// Pairs per part: the unit an interrupted run resumes from and --shard deals out.
    #[arg(long, default_value_t = crate::config::PatchSection::default().part_size)]
    pub part_size: usize,
    /// Run one of N workers that write this run together: INDEX/COUNT (0/3, 1/3, 2/3). Part k
    /// (of --part-size pairs) is shard k mod COUNT's; the worker that finishes last runs the
    /// ablations and commits the run, which is then the single-process run byte for byte.
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<glassbox_data::shards::ShardSpec>,
    /// Also ablate every hook (each head of attn.hook_z with --heads) on the clean prompts:
    /// zero, mean (over the pairs' clean runs) or resample (another pair's clean run of the same
    /// length); the metric's and the next-token loss's change with bootstrap CIs.
    #[arg(long, value_enum)]
    pub ablate: Option<AblateArg>,
    /// Ablate mlp.hook_post hooks neuron by neuron (one row per unit).
    #[arg(long)]
    pub ablate_neurons: bool,
    /// Also ablate every active feature of the run's SAE at these hooks (from `glassbox
    /// dictionary`), one at a time through the spliced SAE.
    #[arg(long, value_delimiter = ',')]
    pub ablate_features: Vec<String>,
    /// Seed of the ablation's resample partners and bootstrap intervals.
    #[arg(long, default_value_t = crate::config::PatchSection::default().seed)]
    pub seed: u64,
    /// Read PyTorch pickle checkpoints.
    #[arg(long)]
    pub allow_pickle: bool,
    /// Patch again even when the run is up to date.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--metric`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MetricArg {
    #[value(alias = "logit_diff")]
    LogitDiff,
    Prob,
    Logprob,
    Kl,
}

impl From<MetricArg> for glassbox_runner::patching::Metric {
    fn from(m: MetricArg) -> Self {
        use glassbox_runner::patching::Metric;
        match m {
            MetricArg::LogitDiff => Metric::LogitDiff,
            MetricArg::Prob => Metric::Prob,
            MetricArg::Logprob => Metric::Logprob,
            MetricArg::Kl => Metric::Kl,
        }
    }
}

/// `--ablate`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AblateArg {
    Zero,
    Mean,
    Resample,
}

/// `--direction`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DirectionArg {
    Denoise,
    Noise,
}

impl From<DirectionArg> for glassbox_runner::patching::Direction {
    fn from(d: DirectionArg) -> Self {
        use glassbox_runner::patching::Direction;
        match d {
            DirectionArg::Denoise => Direction::Denoise,
            DirectionArg::Noise => Direction::Noise,
        }
    }
}

impl PatchArgs {
    /// The `[patch]` section these flags describe.
    pub fn settings(&self) -> crate::config::PatchSection {
        crate::config::PatchSection {
            pairs: self.pairs.clone(),
            hooks: self.hooks.clone(),
            positions: self.positions.clone(),
            heads: self.heads,
            metric: self.metric.into(),
            direction: self.direction.into(),
            atp: !self.no_atp,
            batch_size: self.batch_size,
            part_size: self.part_size,
            ablation: self.ablate.map(|a| match a {
                AblateArg::Zero => glassbox_runner::patching::Ablation::Zero,
                AblateArg::Mean => glassbox_runner::patching::Ablation::Mean,
                AblateArg::Resample => glassbox_runner::patching::Ablation::Resample,
            }),
            ablate_neurons: self.ablate_neurons,
            ablate_features: self.ablate_features.clone(),
            seed: self.seed,
            allow_pickle: self.allow_pickle,
        }
    }
}
