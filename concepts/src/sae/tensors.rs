//! Reading and writing f32 tensors as safetensors files (atomically), for checkpoints and the
//! SAELens layout.

use crate::ConceptError;
use glassbox_data::atomic;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// A safetensors file's string metadata.
pub type Metadata = HashMap<String, String>;

/// A tensor read back: shape and values widened to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

fn error(path: &Path, message: impl std::fmt::Display) -> ConceptError {
    ConceptError::Invalid(format!("{}: {message}", path.display()))
}

/// Writes `tensors` (name, shape, values) with `metadata` to `path` (temp file, then rename).
pub fn write(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: HashMap<String, String>,
) -> Result<(), ConceptError> {
    let buffers: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&buffers)
        .map(|((name, shape, _), data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.to_string(), v))
                .map_err(|e| error(path, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bytes =
        safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| error(path, e))?;
    let bytes = glassbox_data::canonical::sorted_safetensors_header(bytes);
    atomic::write_bytes(path, &bytes)?;
    Ok(())
}

/// Reads every tensor (f32, f16, bf16 or f64, widened/narrowed to f32) and the metadata.
pub fn read(path: &Path) -> Result<(HashMap<String, Loaded>, Metadata), ConceptError> {
    let bytes = std::fs::read(path).map_err(|e| error(path, format!("cannot read: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| error(path, e))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).map_err(|e| error(path, e))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(error(
                    path,
                    format!("tensor `{name}` has dtype {other:?}; expected a float type"),
                ))
            }
        };
        out.insert(
            name,
            Loaded {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok((out, metadata))
}
