//! glassbox-models: hub access, weights, tokenizers and hookable model implementations (one
//! family per file) behind one interface, [`HookedModel`], for text and vision. A pure library:
//! load a checkpoint, run a forward with hooks that capture or replace, run a backward. Running
//! models over a run directory is `glassbox-runner`'s.

pub mod batch;
pub mod bert;
mod borrowed;
mod decoder;
pub mod error;
pub mod gemma2;
pub mod gemma3;
pub mod gguf;
pub mod gpt2;
pub mod hooks;
pub mod hub;
pub mod kernels;
mod layers;
pub mod llama;
pub mod model;
pub mod neox;
pub mod olmo2;
mod packed;
pub mod phi3;
pub mod precision;
pub mod prefix;
mod prenorm;
pub mod qwen3;
pub mod randomize;
pub mod registry;
mod rotary;
pub mod safetensors_file;
pub mod tokenizer;
pub mod torch_legacy;
pub mod vision;
pub mod weights;

pub use batch::{ImageBatch, TokenBatch};
pub use error::ModelError;
pub use glassbox_data::pool::{self, Pool};
pub use glassbox_data::Modality;
pub use hooks::{Capture, ConvPart, HookError, HookPoint, Hooks};
pub use hub::{resolve, ModelSpec, ResolvedModel};
pub use model::{FinalNorm, HookedModel, Input, PixelGradients};
pub use prefix::{PrefixCache, Suffixes};
pub use registry::{
    load_model, load_model_randomized, ComputeDtype, LoadOptions, LoadedModel, WeightsDtype,
    FAMILIES, REDUCED_PRECISION_FAMILIES,
};

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// The SHA-256 a run records for a checkpoint: of the weights file, or for shards listed by a
/// `*.safetensors.index.json`, of the index and each shard's hash in turn.
pub fn weights_sha256(path: &std::path::Path) -> Result<String> {
    use glassbox_data::hash::sha256_file;
    let hash = |p: &std::path::Path| {
        sha256_file(p).map_err(|e| ModelError::Weights {
            path: p.to_path_buf(),
            message: format!("cannot hash: {e}"),
        })
    };
    if !safetensors_file::is_index(path) {
        return hash(path);
    }
    let mut parts = vec![hash(path)?];
    for (shard, _) in safetensors_file::shards(path)? {
        parts.push(hash(&shard)?);
    }
    Ok(glassbox_data::hash::sha256_bytes(
        parts.join("\n").as_bytes(),
    ))
}
