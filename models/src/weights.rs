//! Named weight tensors from a safetensors file, with shape checks that name the tensor.

use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The tensors of one checkpoint, looked up by name under an optional prefix.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    prefix: String,
}

impl Weights {
    /// Reads a safetensors file (fully, without memory mapping: this crate forbids `unsafe`).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors =
            candle_core::safetensors::load(path, device).map_err(|e| ModelError::Weights {
                path: path.to_path_buf(),
                message: format!("cannot read safetensors: {e}"),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            prefix: String::new(),
        })
    }

    /// Reads safetensors, or a PyTorch pickle checkpoint when `allow_pickle`: pickle files can
    /// carry code, so reading one is the user's call (the reader executes none).
    pub fn load_any(path: &Path, device: &Device, allow_pickle: bool) -> Result<Self> {
        if !crate::torch_legacy::is_torch_checkpoint(path) {
            return Self::load(path, device);
        }
        if !allow_pickle {
            return Err(ModelError::Weights {
                path: path.to_path_buf(),
                message: "is a PyTorch pickle checkpoint; pickle files can carry code, so reading them is opt-in: pass --allow-pickle (glassbox interprets tensors only and runs nothing), or convert the checkpoint to safetensors".into(),
            });
        }
        Ok(Self::from_tensors(path, crate::torch_legacy::load(path)?))
    }

    /// Tensors already in memory (dequantised GGUF), under their Hugging Face names.
    pub fn from_tensors(path: &Path, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            path: path.to_path_buf(),
            tensors,
            prefix: String::new(),
        }
    }

    /// Every tensor's full name (prefix included), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }

    /// The tensor stored under the full name `name`, as stored.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Replaces the tensor stored under the full name `name` (model-parameter randomisation).
    pub fn replace(&mut self, name: &str, tensor: Tensor) {
        self.tensors.insert(name.to_owned(), tensor);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Uses the first prefix under which `probe` exists (checkpoints saved from a task model
    /// nest the base model, e.g. `bert.`).
    pub fn detect_prefix(&mut self, prefixes: &[&str], probe: &str) {
        if let Some(p) = prefixes
            .iter()
            .find(|p| self.tensors.contains_key(&format!("{p}{probe}")))
        {
            self.prefix = (*p).to_owned();
        }
    }

    /// Whether `name` exists under the prefix (optional tensors such as attention biases).
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(&format!("{}{name}", self.prefix))
    }

    /// `name` without the prefix (heads stored beside the base model, e.g. `lm_head.weight`),
    /// or `None` when absent.
    pub fn get_root(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        let Some(tensor) = self.tensors.get(name) else {
            return Ok(None);
        };
        if tensor.dims() != shape {
            return Err(ModelError::TensorShape {
                path: self.path.clone(),
                name: name.to_owned(),
                found: tensor.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(Some(tensor.to_dtype(DType::F32)?))
    }

    /// The tensor `name` (under the prefix) as f32, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_any(&[name], shape)
    }

    /// The first of several alternative names that exists (old checkpoints call LayerNorm
    /// parameters `gamma`/`beta`).
    pub fn get_any(&self, names: &[&str], shape: &[usize]) -> Result<Tensor> {
        let found = names.iter().find_map(|n| {
            self.tensors
                .get(&format!("{}{n}", self.prefix))
                .map(|t| (n, t))
        });
        let Some((name, tensor)) = found else {
            return Err(ModelError::MissingTensor {
                path: self.path.clone(),
                name: format!("{}{}", self.prefix, names[0]),
            });
        };
        if tensor.dims() != shape {
            return Err(ModelError::TensorShape {
                path: self.path.clone(),
                name: format!("{}{name}", self.prefix),
                found: tensor.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(tensor.to_dtype(DType::F32)?)
    }
}
