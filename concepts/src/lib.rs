//! glassbox-concepts: concept activation vectors and TCAV, sparse dictionaries (SAEs) and
//! unit explanations, all over the store. Reads activations and gradients; never runs a model.

pub mod absorption;
pub mod causal;
pub mod cav;
pub mod delphi_cache;
pub mod dictionary;
pub mod dictionary_check;
mod dictionary_options;
mod dictionary_outputs;
mod dictionary_transcoder;
pub mod dissect;
mod results;
pub mod sparse_probing;
pub mod stats;
pub mod target;
pub mod tcav;

pub use cav::{train_cav, Cav, CavMethod};
pub use results::{read_cavs, read_scores, tcav_dir, write_cavs, write_scores};
pub use tcav::{run_tcav, CavRow, Convention, HookSets, Options, ScoreRow, TargetGradients};

/// Errors from concept analysis; each names the concept or hook at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConceptError {
    #[error("concept `{concept}` at hook `{hook}`: {message}")]
    Cav {
        concept: String,
        hook: glassbox_data::HookPoint,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Data(#[from] glassbox_data::DataError),
    #[error(transparent)]
    Probe(#[from] glassbox_probes::ProbeError),
}
pub mod explain;
pub mod sae;
