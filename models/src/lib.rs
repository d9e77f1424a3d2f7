//! glassbox-models: hub access, weights, tokenizers, hookable model implementations (one family
//! per file) and the extraction loop that runs data through a model into the store.

pub mod batch;
pub mod bert;
pub mod error;
pub mod extract;
pub mod gguf;
pub mod gpt2;
pub mod gradients;
pub mod hooks;
pub mod hub;
pub mod kernels;
mod layers;
pub mod llama;
pub mod loader;
pub mod neox;
mod packed;
pub mod pool;
mod prenorm;
pub mod registry;
pub mod tokenizer;
pub mod torch_legacy;
pub mod vision;
pub mod weights;

pub use error::ModelError;
pub use extract::{extract, ExtractOptions, ExtractSummary};
pub use hooks::{Capture, ConvPart, HookPoint, Hooks};
pub use hub::{resolve, ModelSpec, ResolvedModel};
pub use loader::{HookableModel, TokenBatch};
pub use pool::Pool;
pub use registry::{load_model, LoadedModel, SUPPORTED_FAMILIES};
pub use vision::{load_vision_model, ImageBatch, LoadedVisionModel, VisionModel};

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
