//! Named weight tensors from a safetensors file, with shape checks that name the tensor.

use crate::held::Held;
use crate::quantized::QuantizedMatrix;
use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::safetensors_file::Keep;

/// The tensors of one checkpoint, looked up by name under an optional prefix.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    /// GGUF block-quantised matrices, kept as blocks (names disjoint from `tensors`).
    quantized: HashMap<String, Arc<QuantizedMatrix>>,
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
        Ok(Self::from_tensors(path, tensors))
    }

    /// Reads safetensors, or a PyTorch pickle checkpoint when `allow_pickle`: pickle files can
    /// carry code, so reading one is the user's call (the reader executes none).
    pub fn load_any(path: &Path, device: &Device, allow_pickle: bool, keep: Keep) -> Result<Self> {
        let pickle_shards = crate::safetensors_file::is_index(path)
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".bin.index.json"));
        if !pickle_shards && !crate::torch_legacy::is_torch_checkpoint(path) {
            return Self::load_keeping(path, device, keep);
        }
        if !allow_pickle {
            return Err(ModelError::Weights {
                path: path.to_path_buf(),
                message: "is a PyTorch pickle checkpoint; pickle files can carry code, so reading them is opt-in: pass --allow-pickle (glassbox interprets tensors only and runs nothing), or convert the checkpoint to safetensors".into(),
            });
        }
        if pickle_shards {
            let tensors =
                crate::safetensors_file::read_shards_with(path, crate::torch_legacy::load)?;
            return Ok(Self::from_tensors(path, tensors));
        }
        Ok(Self::from_tensors(path, crate::torch_legacy::load(path)?))
    }

    /// Tensors already in memory, under their Hugging Face names.
    pub fn from_tensors(path: &Path, tensors: HashMap<String, Tensor>) -> Self {
        Self::with_quantized(path, tensors, HashMap::new())
    }

    /// Tensors and GGUF block-quantised matrices (held as blocks, dequantised on use).
    pub fn with_quantized(
        path: &Path,
        tensors: HashMap<String, Tensor>,
        quantized: HashMap<String, QuantizedMatrix>,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            tensors,
            quantized: quantized
                .into_iter()
                .map(|(name, q)| (name, Arc::new(q)))
                .collect(),
            prefix: String::new(),
        }
    }

    /// The same tensors under the full names `rename` gives (a family's layout of a checkpoint
    /// saved under other names).
    pub fn renamed(self, rename: impl Fn(&str) -> String) -> Self {
        Self {
            tensors: self
                .tensors
                .into_iter()
                .map(|(name, t)| (rename(&name), t))
                .collect(),
            quantized: self
                .quantized
                .into_iter()
                .map(|(name, q)| (rename(&name), q))
                .collect(),
            ..self
        }
    }

    /// Every tensor's full name (prefix included), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .tensors
            .keys()
            .chain(self.quantized.keys())
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The tensor stored under the full name `name`, as stored (`None` for a quantised
    /// matrix: see [`Self::dense`]).
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Whether a tensor or quantised matrix is stored under the full name `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.quantized.contains_key(name)
    }

    /// The values under the full name `name` as a tensor: as stored, or dequantised to f32.
    pub fn dense(&self, name: &str) -> Option<Result<Tensor>> {
        if let Some(t) = self.tensors.get(name) {
            return Some(Ok(t.clone()));
        }
        let q = self.quantized.get(name)?;
        Some(q.to_tensor().map_err(Into::into))
    }

    /// Replaces the tensor stored under the full name `name` (model-parameter randomisation).
    pub fn replace(&mut self, name: &str, tensor: Tensor) {
        self.quantized.remove(name);
        self.tensors.insert(name.to_owned(), tensor);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Uses the first prefix under which `probe` exists (checkpoints saved from a task model
    /// nest the base model, e.g. `bert.`).
    pub fn detect_prefix(&mut self, prefixes: &[&str], probe: &str) {
        if let Some(p) = prefixes.iter().find(|p| {
            let full = format!("{p}{probe}");
            self.tensors.contains_key(&full) || self.quantized.contains_key(&full)
        }) {
            self.prefix = (*p).to_owned();
        }
    }

    /// Whether `name` exists under the prefix (optional tensors such as attention biases).
    pub fn has(&self, name: &str) -> bool {
        let full = format!("{}{name}", self.prefix);
        self.tensors.contains_key(&full) || self.quantized.contains_key(&full)
    }

    /// `name` without the prefix (heads stored beside the base model, e.g. `lm_head.weight`),
    /// as f32, or `None` when absent.
    pub fn get_root(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        match self.get_root_stored(name, shape)? {
            Some(t) => Ok(Some(t.to_dtype(DType::F32)?)),
            None => Ok(None),
        }
    }

    /// `name` without the prefix, as stored (see [`Self::get_stored`]), or `None` when absent.
    pub fn get_root_stored(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        match self.lookup(&[name], "") {
            Some((full, held)) => Ok(Some(self.stored(&full, held, shape)?)),
            None => Ok(None),
        }
    }

    /// `name` without the prefix, as held (see [`Self::get_held`]), or `None` when absent.
    pub fn get_root_held(&self, name: &str, shape: &[usize]) -> Result<Option<Held>> {
        match self.lookup(&[name], "") {
            Some((full, held)) => Ok(Some(self.checked_held(&full, held, shape)?)),
            None => Ok(None),
        }
    }

    /// The tensor `name` (under the prefix) as f32, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_any(&[name], shape)
    }

    /// The tensor `name` (under the prefix) as stored (bf16/f16 when loaded with
    /// [`Keep::Stored`]; a quantised matrix dequantised to f32), checked against `shape`.
    pub fn get_stored(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (full, held) = self.find(&[name])?;
        self.stored(&full, held, shape)
    }

    /// The matrix `name` (under the prefix) as held — quantised matrices stay quantised — for
    /// forwards that convert one matrix at a time; checked against `shape`.
    pub fn get_held(&self, name: &str, shape: &[usize]) -> Result<Held> {
        let (full, held) = self.find(&[name])?;
        self.checked_held(&full, held, shape)
    }

    fn checked_held(&self, full: &str, held: Held, shape: &[usize]) -> Result<Held> {
        match &held {
            Held::Tensor(t) => self.check(full, t, shape)?,
            Held::Quantized(q) => self.check_dims(full, &[q.rows(), q.cols()], shape)?,
        }
        Ok(held)
    }

    /// The first of several alternative names that exists (old checkpoints call LayerNorm
    /// parameters `gamma`/`beta`), as f32.
    pub fn get_any(&self, names: &[&str], shape: &[usize]) -> Result<Tensor> {
        let (full, held) = self.find(names)?;
        Ok(self.stored(&full, held, shape)?.to_dtype(DType::F32)?)
    }

    /// A tensor as stored, a quantised matrix dequantised to f32, checked against `shape`.
    fn stored(&self, full: &str, held: Held, shape: &[usize]) -> Result<Tensor> {
        let t = match held {
            Held::Tensor(t) => t,
            Held::Quantized(q) => {
                self.check_dims(full, &[q.rows(), q.cols()], shape)?;
                q.to_tensor()?
            }
        };
        self.check(full, &t, shape)?;
        Ok(t)
    }

    /// The first of `names` under the prefix, or an error naming the first.
    fn find(&self, names: &[&str]) -> Result<(String, Held)> {
        self.lookup(names, &self.prefix)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                name: format!("{}{}", self.prefix, names[0]),
            })
    }

    /// The first of `names` under `prefix` that exists, with its full name.
    fn lookup(&self, names: &[&str], prefix: &str) -> Option<(String, Held)> {
        names.iter().find_map(|n| {
            let full = format!("{prefix}{n}");
            let held = match self.tensors.get(&full) {
                Some(t) => Held::Tensor(t.clone()),
                None => Held::Quantized(self.quantized.get(&full)?.clone()),
            };
            Some((full, held))
        })
    }

    fn check_dims(&self, name: &str, found: &[usize], shape: &[usize]) -> Result<()> {
        if found != shape {
            return Err(ModelError::TensorShape {
                path: self.path.clone(),
                name: name.to_owned(),
                found: found.to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(())
    }

    fn check(&self, name: &str, tensor: &Tensor, shape: &[usize]) -> Result<()> {
        self.check_dims(name, tensor.dims(), shape)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};

    fn quantized_weights() -> (Weights, Tensor) {
        let values: Vec<f32> = (0..4 * 64).map(|i| (i % 17) as f32 - 8.0).collect();
        let t = Tensor::from_vec(values, (4, 64), &Device::Cpu).unwrap();
        let q = QuantizedMatrix::new(QTensor::quantize(&t, GgmlDType::Q8_0).unwrap()).unwrap();
        let want = q.to_tensor().unwrap();
        let w = Weights::with_quantized(
            Path::new("m.gguf"),
            HashMap::new(),
            [("model.w.weight".to_owned(), q)].into(),
        );
        (w, want)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn quantised_matrices_are_held_and_read_dequantised() {
        let (mut w, want) = quantized_weights();
        w.detect_prefix(&["", "model."], "w.weight");
        assert!(w.has("w.weight"));
        assert_eq!(w.names(), ["model.w.weight"]);
        assert!(matches!(
            w.get_held("w.weight", &[4, 64]).unwrap(),
            Held::Quantized(_)
        ));
        assert_eq!(values(&w.get("w.weight", &[4, 64]).unwrap()), values(&want));
        assert_eq!(
            values(&w.dense("model.w.weight").unwrap().unwrap()),
            values(&want)
        );
        let e = w.get_held("w.weight", &[64, 4]).err().unwrap().to_string();
        assert!(e.contains("model.w.weight") && e.contains("[4, 64]"), "{e}");
        // Randomisation replaces a quantised matrix with a plain tensor.
        w.replace(
            "model.w.weight",
            Tensor::zeros((4, 64), DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(matches!(
            w.get_held("w.weight", &[4, 64]).unwrap(),
            Held::Tensor(_)
        ));
    }
}
