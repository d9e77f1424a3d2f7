//! The training curve: what `fit` records every few steps and a checkpoint carries, so a
//! resumed run reports every step.

use super::train::StepStats;

/// One point of the training curve: the step's statistics (before its update) and rate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CurvePoint {
    pub step: usize,
    pub lr: f64,
    #[serde(flatten)]
    pub stats: StepStats,
}
