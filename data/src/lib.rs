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
pub mod grid;
pub mod hash;
pub mod hook_point;
pub mod images;
mod json_fields;
pub mod limits;
pub mod lock;
pub mod manifest;
pub mod masked_textures;
pub mod masks;
pub mod modality;
pub mod pairs;
pub mod pool;
pub mod preprocessor;
pub mod progress;
pub mod remote_parts;
pub mod rng;
pub mod run;
pub mod shards;
pub mod simd;
pub mod staging;
pub mod store;
pub mod suggest;
pub mod table;
pub mod textures;
pub mod tokens;
pub mod torch_pickle;

pub use dataset::{read_dataset, read_dataset_keyed, Column, ColumnKind, TextDataset, Value};
pub use error::DataError;
pub use hook_point::{ConvPart, HookError, HookPoint};
pub use manifest::{BuildRecord, Manifest, ModelRecord, StageRecord};
pub use modality::Modality;
pub use pool::Pool;
pub use progress::{NoProgress, Progress};
pub use run::RunDir;
pub use store::{ActDtype, ShardMeta, StoreKind};

include!(concat!(env!("OUT_DIR"), "/versions.rs"));

/// Result alias used throughout this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
