//! glassbox: CLI, configuration and stage orchestration.
//!
//! Each stage (`extract`, `probe`, `report`) reads and writes one run directory. A stage is
//! skipped when the fingerprint of its inputs (its settings, its upstream fingerprints and the
//! glassbox version) matches what it recorded last time; `--force` re-runs it.

pub mod allocator;
pub mod args;
pub mod args_attribute;
pub mod args_causal;
pub mod args_dissect;
pub mod args_export;
pub mod args_patch;
pub mod cli;
pub mod config;
pub mod config_attribute;
pub mod config_patch;
pub mod error_message;
pub mod export_delphi;
pub mod fingerprint;
pub mod inspect;
pub mod output;
pub mod progress;
pub mod render;
pub mod run_location;
pub mod run_pipeline;
pub mod stages;
