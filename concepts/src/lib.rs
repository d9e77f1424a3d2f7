//! glassbox-concepts: concept activation vectors and TCAV over the store (sparse dictionary
//! features are to follow). Reads activations and gradients; never runs a model.

pub mod cav;
mod results;
pub mod stats;
pub mod tcav;

pub use cav::{train_cav, Cav, CavMethod};
pub use results::{read_scores, tcav_dir, write_cavs, write_scores};
pub use tcav::{run_tcav, CavRow, Convention, HookSets, Options, ScoreRow, TargetGradients};

/// Errors from concept analysis; each names the concept or hook at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConceptError {
    #[error("concept `{concept}` at hook `{hook}`: {message}")]
    Cav {
        concept: String,
        hook: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Data(#[from] glassbox_data::DataError),
}
pub mod sae;
