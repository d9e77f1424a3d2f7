//! The `[causal]` section: how the causal validation of directions intervenes and tests.

use crate::ConceptError;
use serde::{Deserialize, Serialize};

/// Settings of the `causal` stage (CLI flags and the `[causal]` section alike).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CausalOptions {
    /// Steering coefficients, in units of the hook's typical activation norm (the median L2
    /// norm over real positions); symmetric about 0 so even-order responses cancel.
    pub alphas: Vec<f64>,
    /// Random directions (and random erasers) per hook, the baseline of every test: at least 20.
    pub random_directions: usize,
    /// Examples of the run the interventions run on (a seeded sample).
    pub examples: usize,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// Family-wise error rate of the Holm correction over every test of the run.
    pub significance: f64,
    /// Bootstrap resamples of the effects' 95% intervals.
    pub bootstrap: usize,
    /// Seed of the example sample, the random directions and the bootstraps.
    pub seed: u64,
}

/// Fewest random directions a test accepts: with fewer, the baseline's spread is too uncertain
/// for a corrected test to mean much.
pub const MIN_RANDOM_DIRECTIONS: usize = 20;

impl Default for CausalOptions {
    fn default() -> Self {
        Self {
            alphas: vec![-0.5, -0.25, 0.25, 0.5],
            random_directions: MIN_RANDOM_DIRECTIONS,
            examples: 64,
            batch_size: 32,
            significance: 0.05,
            bootstrap: 1000,
            seed: 0,
        }
    }
}

/// The largest |α| of the steering grid.
pub const MOST_ALPHA: f64 = 1_000.0;

impl CausalOptions {
    /// Checks that need no run.
    pub fn validate(&self) -> Result<(), ConceptError> {
        let bad = |m: String| Err(ConceptError::Invalid(format!("causal: {m}")));
        if self.alphas.is_empty() {
            return bad("the α grid is empty; pass --alphas with at least one non-zero value, e.g. -0.5,-0.25,0.25,0.5".into());
        }
        if let Some(a) = self.alphas.iter().find(|a| !a.is_finite() || **a == 0.0) {
            return bad(format!(
                "α = {a} in the grid; every coefficient must be finite and non-zero (0 is the unedited run, always measured)"
            ));
        }
        // α is in units of the hook's typical (median) activation norm: far beyond it every readout has
        // saturated, and near 1e30 the steered activations overflow f32 (no finite effect).
        if let Some(a) = self.alphas.iter().find(|a| a.abs() > MOST_ALPHA) {
            let a = if a.abs() >= 1e6 {
                format!("{a:e}")
            } else {
                a.to_string()
            };
            return bad(format!(
                "α = {a} in the grid; |α| must be at most {MOST_ALPHA} (α counts the hook's typical activation norm, the median over its positions, so {MOST_ALPHA} already pushes a thousand norms along the direction)"
            ));
        }
        if let Err(m) = glassbox_data::limits::each_once("alphas", &self.alphas) {
            return bad(m);
        }
        if self.random_directions < MIN_RANDOM_DIRECTIONS {
            return bad(format!(
                "random_directions = {}; at least {MIN_RANDOM_DIRECTIONS} are needed for the baseline",
                self.random_directions
            ));
        }
        let bounded = glassbox_data::limits::baselines_and_resamples(
            "random_directions",
            self.random_directions,
            "each is a steered forward over every example",
            self.bootstrap,
        );
        if let Err(m) = bounded {
            return bad(m);
        }
        if self.examples < 2 {
            return bad(format!(
                "examples = {}; at least 2 are needed",
                self.examples
            ));
        }
        if self.batch_size == 0 {
            return bad("batch_size = 0; it must be at least 1".into());
        }
        if !(self.significance > 0.0 && self.significance < 1.0) {
            return bad(format!(
                "significance = {}; it must lie in (0, 1)",
                self.significance
            ));
        }
        Ok(())
    }
}
