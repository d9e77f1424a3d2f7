//! The `causal` subcommand's flags (they fill the `[causal]` section).

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CausalArgs {
    /// Run directory with completed extract and probe stages (tcav and dictionary when run).
    #[arg(long)]
    pub run: PathBuf,
    /// Steering coefficients in units of the hook's typical activation norm, comma-separated.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true,
          default_values_t = crate::config::CausalSection::default().alphas)]
    pub alphas: Vec<f64>,
    /// Random directions (and random erasers) per hook, the baseline of every test (≥ 20).
    #[arg(long, default_value_t = crate::config::CausalSection::default().random_directions)]
    pub random_directions: usize,
    /// Examples of the run the interventions run on (a seeded sample).
    #[arg(long, default_value_t = crate::config::CausalSection::default().examples)]
    pub examples: usize,
    /// Examples per forward pass.
    #[arg(long, default_value_t = crate::config::CausalSection::default().batch_size)]
    pub batch_size: usize,
    /// Family-wise error rate of the Holm correction over the run's tests.
    #[arg(long, default_value_t = crate::config::CausalSection::default().significance)]
    pub significance: f64,
    /// Bootstrap resamples of the effects' 95% intervals.
    #[arg(long, default_value_t = crate::config::CausalSection::default().bootstrap)]
    pub bootstrap: usize,
    /// Seed of the example sample, the random directions and the bootstraps.
    #[arg(long, default_value_t = crate::config::CausalSection::default().seed)]
    pub seed: u64,
    /// Test again even when the run is up to date.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl CausalArgs {
    /// The `[causal]` section these flags describe.
    pub fn settings(&self) -> crate::config::CausalSection {
        crate::config::CausalSection {
            alphas: self.alphas.clone(),
            random_directions: self.random_directions,
            examples: self.examples,
            batch_size: self.batch_size,
            significance: self.significance,
            bootstrap: self.bootstrap,
            seed: self.seed,
        }
    }
}
