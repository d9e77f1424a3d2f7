//! PyTorch `torch.save` checkpoints as candle tensors: the reader itself (legacy and zip
//! formats, the allow-listed unpickler) is `glassbox_data::torch_pickle`, shared with the
//! pickled dictionaries `glassbox-concepts` opens.

use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use glassbox_data::torch_pickle::{self, TorchValues};
use std::collections::HashMap;
use std::path::Path;

pub use glassbox_data::torch_pickle::is_torch_checkpoint;

/// Reads every tensor of a `torch.save`d state dict (legacy or zip), keyed by name. Floating
/// tensors become f32 (f16/bf16/f64 converted), integer ones i64, bytes/bools u8.
pub fn load(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bad = |message: String| ModelError::Weights {
        path: path.to_path_buf(),
        message,
    };
    let tensors = torch_pickle::load(path).map_err(|e| bad(e.message))?;
    let device = &Device::Cpu;
    tensors
        .into_iter()
        .map(|(name, t)| {
            let tensor = match t.values {
                TorchValues::F32(v) => Tensor::from_vec(v, t.shape, device),
                TorchValues::I64(v) => Tensor::from_vec(v, t.shape, device),
                TorchValues::U8(v) => {
                    Tensor::from_vec(v, t.shape, device).and_then(|t| t.to_dtype(DType::U8))
                }
            };
            tensor
                .map(|tensor| (name.clone(), tensor))
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))
        })
        .collect()
}
