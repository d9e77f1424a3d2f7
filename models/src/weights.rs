//! Named weight tensors from a safetensors file, with shape checks that name the tensor.

use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use crate::safetensors_file::Keep;

/// The tensors of one checkpoint, looked up by name under an optional prefix.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    prefix: String,
}

impl Weights {
    /// Reads a safetensors file, or the shards a `*.safetensors.index.json` lists, tensor by
    /// tensor, float tensors upcast to f32.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_keeping(path, device, Keep::F32)
    }

    /// [`Self::load`], float tensors held as `keep` says (bf16 checkpoints stay bf16 with
    /// [`Keep::Stored`]: half the memory of f32; [`Self::get`] still hands out f32).
    pub fn load_keeping(path: &Path, device: &Device, keep: Keep) -> Result<Self> {
        let tensors = if crate::safetensors_file::is_index(path) {
            crate::safetensors_file::read_sharded(path, device, keep)?
        } else {
            crate::safetensors_file::read_file(path, device, keep)?
        };
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            prefix: String::new(),
        })
    }

    /// Reads safetensors, or a PyTorch pickle checkpoint when `allow_pickle`: pickle files can
    /// carry code, so reading one is the user's call (the reader executes none).
    pub fn load_any(path: &Path, device: &Device, allow_pickle: bool, keep: Keep) -> Result<Self> {
        if !crate::torch_legacy::is_torch_checkpoint(path) {
            return Self::load_keeping(path, device, keep);
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
    /// as f32, or `None` when absent.
    pub fn get_root(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        match self.get_root_stored(name, shape)? {
            Some(t) => Ok(Some(t.to_dtype(DType::F32)?)),
            None => Ok(None),
        }
    }

    /// `name` without the prefix, as held (see [`Self::get_stored`]), or `None` when absent.
    pub fn get_root_stored(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        let Some(tensor) = self.tensors.get(name) else {
            return Ok(None);
        };
        self.check(name, tensor, shape)?;
        Ok(Some(tensor.clone()))
    }

    /// The tensor `name` (under the prefix) as f32, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_any(&[name], shape)
    }

    /// The tensor `name` (under the prefix) as held (bf16/f16 when loaded with
    /// [`Keep::Stored`]), checked against `shape`: for forwards that convert per layer.
    pub fn get_stored(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.find(&[name], shape)?.clone())
    }

    /// The first of several alternative names that exists (old checkpoints call LayerNorm
    /// parameters `gamma`/`beta`), as f32.
    pub fn get_any(&self, names: &[&str], shape: &[usize]) -> Result<Tensor> {
        Ok(self.find(names, shape)?.to_dtype(DType::F32)?)
    }

    /// The first of `names` under the prefix, as held, checked against `shape`.
    fn find(&self, names: &[&str], shape: &[usize]) -> Result<&Tensor> {
        let found = names.iter().find_map(|n| {
            let full = format!("{}{n}", self.prefix);
            self.tensors.get(&full).map(|t| (full, t))
        });
        let Some((name, tensor)) = found else {
            return Err(ModelError::MissingTensor {
                path: self.path.clone(),
                name: format!("{}{}", self.prefix, names[0]),
            });
        };
        self.check(&name, tensor, shape)?;
        Ok(tensor)
    }

    fn check(&self, name: &str, tensor: &Tensor, shape: &[usize]) -> Result<()> {
        if tensor.dims() != shape {
            return Err(ModelError::TensorShape {
                path: self.path.clone(),
                name: name.to_owned(),
                found: tensor.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        if !matches!(
            tensor.dtype(),
            DType::F32 | DType::BF16 | DType::F16 | DType::F64
        ) {
            return Err(ModelError::Weights {
                path: self.path.clone(),
                message: format!(
                    "tensor `{name}` holds {:?} values where the model needs floating-point weights",
                    tensor.dtype()
                ),
            });
        }
        Ok(())
    }
}
