use std::path::PathBuf;

/// Errors from reading data sets and reading/writing the run directory.
///
/// Every variant names the file (and row/column where there is one) so a user can fix the input.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data file {path} does not exist; pass a JSONL, CSV, TSV or Parquet file with a `{key}` column"
    )]
    MissingFile { path: PathBuf, key: String },
    #[error(
        "{path}: unsupported data file extension; use .jsonl, .ndjson, .csv, .tsv or .parquet"
    )]
    UnsupportedFormat { path: PathBuf },
    #[error("{path}: row {row}: {message}")]
    MalformedRow {
        path: PathBuf,
        row: usize,
        message: String,
    },
    #[error(
        "{path}: row {row} has no `{column}` field; every row needs a non-null string `{column}`"
    )]
    MissingText {
        path: PathBuf,
        row: usize,
        column: String,
    },
    #[error("{path}: the data set is empty; it needs at least one row with a `{column}` field")]
    EmptyDataset { path: PathBuf, column: String },
    #[error("{path}: column `{column}`: {message}")]
    BadColumn {
        path: PathBuf,
        column: String,
        message: String,
    },
    #[error("{path}: parquet: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: arrow: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("run {run}: {message}")]
    Run { run: PathBuf, message: String },
    #[error("{path}: {message}")]
    Store { path: PathBuf, message: String },
    /// A bad input file that is none of the above (an undecodable image, a bad preprocessor).
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A hook name that is not a hook point.
    #[error(transparent)]
    Hook(#[from] crate::hook_point::HookError),
}

impl DataError {
    /// Wraps an I/O error with the path it happened at.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
        let path = path.into();
        move |source| DataError::Io { path, source }
    }
    pub(crate) fn parquet(
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(parquet::errors::ParquetError) -> DataError {
        let path = path.into();
        move |source| DataError::Parquet { path, source }
    }
    pub fn arrow(path: impl Into<PathBuf>) -> impl FnOnce(arrow_schema::ArrowError) -> DataError {
        let path = path.into();
        move |source| DataError::Arrow { path, source }
    }
}
