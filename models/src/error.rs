use std::path::PathBuf;

/// Errors from resolving, loading and running models. Each names the file, tensor or hook at
/// fault and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("bad model spec `{spec}`: {message}")]
    BadSpec { spec: String, message: String },
    #[error(
        "model `{id}` (revision `{revision}`) is not in the Hugging Face cache at {cache} and {why}. \
         Run `just models` to lay the registry-shipped models into the cache, set HF_HOME to a cache \
         that holds it, or pass --model ./local/dir"
    )]
    NotFound {
        id: String,
        revision: String,
        cache: PathBuf,
        why: String,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "{path}: unsupported architecture `{found}`; supported model_type values: {supported}"
    )]
    UnsupportedArchitecture {
        path: PathBuf,
        found: String,
        supported: String,
    },
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("unknown hook `{name}`{hint}; `glassbox hooks MODEL` lists the hook points")]
    UnknownHook { name: String, hint: String },
    #[error(transparent)]
    UnknownPool(#[from] glassbox_data::pool::UnknownPool),
    #[error("{0}")]
    Invalid(String),
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("dequantising a GGUF matrix: {0}")]
    Quantized(#[from] crate::quantized::QuantizedError),
    #[error(transparent)]
    Data(#[from] glassbox_data::DataError),
    #[error(transparent)]
    Hook(#[from] glassbox_data::hook_point::HookError),
}
