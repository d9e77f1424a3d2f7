//! glassbox-data: data sets, concept sets, the run directory and its Parquet activation store.
//!
//! Everything that crosses a stage boundary lives here, so the analysis crates (`probes`,
//! `concepts`, `reports`) can read a run without knowing anything about models.

mod arrow_values;
pub mod atomic;
pub mod canonical;
pub mod concepts;
pub mod dataset;
pub mod error;
pub mod examples;
pub mod hash;
pub mod images;
mod json_fields;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod rng;
pub mod run;
pub mod simd;
pub mod store;
pub mod table;
pub mod textures;
pub mod tokens;

pub use dataset::{read_dataset, read_dataset_keyed, Column, ColumnKind, TextDataset, Value};
pub use error::DataError;
pub use manifest::{Manifest, ModelRecord, StageRecord};
pub use progress::{NoProgress, Progress};
pub use run::RunDir;
pub use store::{ActDtype, ShardMeta, StoreKind};

include!(concat!(env!("OUT_DIR"), "/versions.rs"));

/// Result alias used throughout this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
