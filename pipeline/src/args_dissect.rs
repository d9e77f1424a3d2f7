//! The `dissect` subcommand's flags (they fill the `[dissect]` section).

use crate::config::DissectSection;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DissectArgs {
    /// Run directory of an image model with a completed extract stage (per-cell rows:
    /// `token_level = true`).
    #[arg(long)]
    pub run: PathBuf,
    /// Hooks to dissect (names or glob patterns, comma-separated); default: every stored hook
    /// with a spatial layout.
    #[arg(long, value_delimiter = ',')]
    pub hooks: Vec<String>,
    /// An image manifest with `mask_<concept>` columns, one row per image of the run, in the
    /// run's order; default: the run's own data file.
    #[arg(long)]
    pub masks: Option<PathBuf>,
    /// Fraction of each unit's cell values above its threshold.
    #[arg(long, default_value_t = DissectSection::default().quantile)]
    pub quantile: f64,
    /// IoU a label needs.
    #[arg(long, default_value_t = DissectSection::default().iou_threshold)]
    pub iou_threshold: f64,
    /// Shuffles of the image ↔ mask pairing for the baseline (≥ 20).
    #[arg(long, default_value_t = DissectSection::default().permutations)]
    pub permutations: usize,
    /// False discovery rate of the labels within a hook (Benjamini–Hochberg).
    #[arg(long, default_value_t = DissectSection::default().alpha)]
    pub alpha: f64,
    /// Seed of the shuffles.
    #[arg(long, default_value_t = DissectSection::default().seed)]
    pub seed: u64,
    /// Top-activating images kept per unit for the report.
    #[arg(long, default_value_t = DissectSection::default().top_examples)]
    pub top_examples: usize,
    /// Dissect again even when the run is up to date.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl DissectArgs {
    /// The `[dissect]` section these flags describe.
    pub fn settings(&self) -> DissectSection {
        DissectSection {
            hooks: self.hooks.clone(),
            masks: self.masks.clone(),
            quantile: self.quantile,
            iou_threshold: self.iou_threshold,
            permutations: self.permutations,
            alpha: self.alpha,
            seed: self.seed,
            top_examples: self.top_examples,
        }
    }
}
