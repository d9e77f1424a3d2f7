//! What patching is asked to do and what it returns: metrics, directions, positions, the
//! options, a prepared pair and a result row.

use glassbox_data::HookPoint;
use glassbox_models::tokenizer::Encoded;
use std::fmt;
use std::str::FromStr;

/// What a patched run is scored by, at the last position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// logit(answer) − logit(wrong).
    LogitDiff,
    /// Probability of the answer.
    Prob,
    /// Log-probability of the answer.
    Logprob,
    /// KL(clean ‖ run) of the next-token distribution, nats.
    Kl,
}

/// Which run is patched with which run's activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Run the corrupted prompt with clean activations (what is sufficient to restore).
    Denoise,
    /// Run the clean prompt with corrupted activations (what is necessary).
    Noise,
}

/// The positions patched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Positions {
    /// Every position of the prompt.
    All,
    /// The last position only.
    Last,
    /// These positions (0-based).
    Listed(Vec<usize>),
}

impl fmt::Display for Positions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Positions::All => f.write_str("all"),
            Positions::Last => f.write_str("last"),
            Positions::Listed(v) => {
                let s: Vec<String> = v.iter().map(ToString::to_string).collect();
                f.write_str(&s.join(","))
            }
        }
    }
}

impl FromStr for Positions {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "all" => Ok(Positions::All),
            "last" => Ok(Positions::Last),
            list => {
                let mut v = list
                    .split(',')
                    .map(|p| p.trim().parse::<usize>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| {
                        format!(
                            "positions `{s}`: use all, last, or 0-based positions such as 0,3,5"
                        )
                    })?;
                v.sort_unstable();
                v.dedup();
                Ok(Positions::Listed(v))
            }
        }
    }
}

impl serde::Serialize for Positions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Positions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How to patch.
#[derive(Debug, Clone)]
pub struct PatchOptions {
    /// Hooks patched (each one a position-wise activation of the model).
    pub hooks: Vec<HookPoint>,
    /// Positions patched.
    pub positions: Positions,
    /// Patch `attn.hook_z` head by head (other hooks stay whole).
    pub heads: bool,
    /// The score of a run.
    pub metric: Metric,
    /// Denoising or noising.
    pub direction: Direction,
    /// Patched runs per forward pass.
    pub batch_size: usize,
    /// Also estimate every effect by attribution patching.
    pub atp: bool,
}

/// A pair, tokenised and checked.
#[derive(Debug, Clone)]
pub struct PreparedPair {
    /// Row index in the pairs file (0-based).
    pub row: usize,
    /// The clean prompt's tokens.
    pub clean: Encoded,
    /// The corrupted prompt's tokens (same count).
    pub corrupted: Encoded,
    /// The answer's token id.
    pub answer: u32,
    /// The wrong token's id.
    pub wrong: u32,
}

/// One patched run's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PatchRow {
    /// Row index of the pair in the pairs file.
    pub pair: u64,
    /// The hook patched.
    pub hook: HookPoint,
    /// The position patched.
    pub position: u32,
    /// The head patched (`attn.hook_z` with `heads`), else `None`.
    pub head: Option<u32>,
    /// The patched run's metric.
    pub metric: f64,
    /// The clean run's metric.
    pub metric_clean: f64,
    /// The corrupted run's metric.
    pub metric_corrupted: f64,
    /// `(metric − metric_corrupted) / (metric_clean − metric_corrupted)`.
    pub normalized: f64,
    /// Attribution patching's estimate of `metric`, when computed.
    pub atp_metric: Option<f64>,
}

/// A pair's inputs and clean and corrupted scores (for `patching/pairs.parquet`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PairSummary {
    /// Row index in the pairs file.
    pub row: usize,
    /// The clean prompt's tokens (empty for images).
    pub clean_tokens: Vec<String>,
    /// The corrupted prompt's tokens.
    pub corrupted_tokens: Vec<String>,
    /// The answer's token id (causal-LM pairs).
    pub answer: Option<u32>,
    /// The wrong token's id (causal-LM pairs).
    pub wrong: Option<u32>,
    /// The target (target pairs).
    pub target: Option<String>,
    /// The clean run's metric.
    pub metric_clean: f64,
    /// The corrupted run's metric.
    pub metric_corrupted: f64,
}
