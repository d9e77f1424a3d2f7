//! glassbox-runner: everything that runs a model over a run directory — activations into the
//! store (text and images, sharded and resumable), target gradients, pooled activations of
//! concept sets, forwards with an activation replaced (SAE splicing; patching) — behind one
//! API the pipeline's stages call.
//!
//! Why a crate: `glassbox-models` stays a pure library (load a checkpoint, run a forward with
//! hooks that capture or replace, run a backward) and cannot write a run; the analysis crates
//! cannot run a model; and the resume protocol (shard markers, temp + rename) has one home.

#![warn(missing_docs)]

pub mod attribution;
pub mod dla;
pub mod extract;
pub mod gradient_store;
pub mod gradients;
pub mod image_sets;
pub mod interventions;
pub mod lens;
pub mod patch_tables;
pub mod patching;
pub mod steering;

pub use extract::{check_coverage, extract, Examples, Expected, ExtractOptions, ExtractSummary};
pub use glassbox_models::{ModelError, Result};
