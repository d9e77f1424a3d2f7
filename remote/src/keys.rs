//! Run-relative keys shared by the mirror and the shared staging.

/// `.staging/<stage>/`, the staging prefix of `stage` relative to the run.
pub fn staging_prefix(stage: &str) -> String {
    format!("{}/{stage}/", glassbox_data::run::STAGING_DIR)
}
