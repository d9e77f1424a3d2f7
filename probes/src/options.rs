//! Probe options; also the `[probe]` section of a pipeline config.

use crate::{labels::BUILTIN_LABELERS, ProbeError, Result};
use glassbox_data::Pool;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeOptions {
    /// Sequence-level label columns of `examples.parquet`.
    pub labels: Vec<String>,
    /// Token-level labels: columns of per-word lists, or built-in labelers
    /// (`@word_class`, `@is_number`, `@is_capitalised`, `@position`).
    pub token_labels: Vec<String>,
    /// The pooled activations of sequence-level probes: `mean`, `cls`, `last` or `max`.
    pub pool: Pool,
    pub seed: u64,
    /// How rows are split: `text` (seeded; at token level every token of a text in one part,
    /// test CIs resampling texts), `token` (seeded; token rows split independently — sentences
    /// then straddle train and test) or `data` (the data set's own `split` column: train,
    /// validation, test). Sequence-level rows are texts under `text` and `token` alike.
    pub split_by: SplitBy,
    /// Fraction of each class held out for testing.
    pub test_fraction: f64,
    /// Fraction of each class held out to choose the L2 strength.
    pub validation_fraction: f64,
    /// L2 strengths tried (sklearn's `C` is `1 / l2`); the best on validation is kept.
    pub l2_grid: Vec<f64>,
    /// L-BFGS iterations per fit (sklearn's default is 100).
    pub max_iterations: usize,
    /// Bootstrap resamples for the confidence intervals.
    pub bootstrap: usize,
    /// At most this many examples (sequence) or tokens (token level) per class, a seeded
    /// sample; 0 keeps all. Bounds memory on large stores.
    pub max_per_class: usize,
    /// Online-code MDL (Voita & Titov 2020) for classification probes; ~10 extra fits each.
    pub mdl: bool,
    /// Elastic-net neuron ranking and its top-k check.
    pub neurons: bool,
    pub elastic_net_l1: f64,
    pub elastic_net_l2: f64,
    /// Unit counts of the top-k against random-k check.
    pub top_k: Vec<usize>,
    /// Random unit subsets averaged per k.
    pub random_draws: usize,
}

/// The unit a token-level split keeps in one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitBy {
    Text,
    Token,
    /// The data set's own `split` column.
    Data,
}

impl std::fmt::Display for SplitBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitBy::Text => "text",
            SplitBy::Token => "token",
            SplitBy::Data => "data",
        })
    }
}

impl std::str::FromStr for SplitBy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "text" => Ok(SplitBy::Text),
            "token" => Ok(SplitBy::Token),
            "data" => Ok(SplitBy::Data),
            other => Err(format!(
                "unknown split `{other}`; use `text` (tokens of a text stay together), `token` or `data` (the data set's `split` column)"
            )),
        }
    }
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            labels: Vec::new(),
            token_labels: Vec::new(),
            pool: Pool::Mean,
            seed: 0,
            split_by: SplitBy::Text,
            test_fraction: 0.2,
            validation_fraction: 0.2,
            l2_grid: vec![0.1, 1.0, 10.0, 100.0, 1000.0],
            max_iterations: 100,
            bootstrap: 1000,
            max_per_class: 10_000,
            mdl: false,
            neurons: true,
            elastic_net_l1: 1e-3,
            elastic_net_l2: 1e-3,
            top_k: vec![1, 5, 20, 100],
            random_draws: 3,
        }
    }
}

impl ProbeOptions {
    /// Parts of the split: train, test, and validation when its fraction is positive.
    pub fn split_parts(&self) -> usize {
        2 + usize::from(self.validation_fraction > 0.0)
    }

    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(ProbeError::Invalid(m));
        if self.labels.is_empty() && self.token_labels.is_empty() {
            return invalid(
                "no labels given; pass --label COLUMN (sequence level) or --token-label NAME (token level)".into(),
            );
        }
        let fractions = self.test_fraction + self.validation_fraction;
        if !(self.test_fraction > 0.0 && self.validation_fraction >= 0.0 && fractions < 1.0) {
            return invalid(format!(
                "test fraction {} and validation fraction {} must be positive and sum below 1",
                self.test_fraction, self.validation_fraction
            ));
        }
        if self.l2_grid.is_empty() || self.l2_grid.iter().any(|v| !(*v >= 0.0 && v.is_finite())) {
            return invalid(format!(
                "l2 grid {:?} must hold at least one finite, non-negative value",
                self.l2_grid
            ));
        }
        if self.max_iterations == 0 {
            return invalid("max iterations must be at least 1".into());
        }
        use glassbox_data::limits::{at_most, MOST_BOOTSTRAP};
        at_most(
            "bootstrap",
            self.bootstrap,
            MOST_BOOTSTRAP,
            glassbox_data::limits::BOOTSTRAP_WHY,
        )
        .map_err(|e| ProbeError::Invalid(format!("probe: {e}")))?;
        // A label probed twice would write its results and weights twice under one name.
        use glassbox_data::limits::each_once;
        each_once("labels", &self.labels)
            .and_then(|()| each_once("token_labels", &self.token_labels))
            .and_then(|()| each_once("top_k", &self.top_k))
            .map_err(|e| ProbeError::Invalid(format!("probe: {e}")))?;
        for name in &self.token_labels {
            if name.starts_with('@') && !BUILTIN_LABELERS.contains(&name.as_str()) {
                return invalid(format!(
                    "unknown built-in token labeler `{name}`; available: {}",
                    BUILTIN_LABELERS.join(", ")
                ));
            }
        }
        Ok(())
    }
}
