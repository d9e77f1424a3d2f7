//! Reading and writing f32 tensors as safetensors files (atomically), for checkpoints and the
//! SAELens layout.

use crate::ConceptError;
use glassbox_data::atomic;
use safetensors::tensor::Dtype;
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

/// Writes `tensors` (name, shape, values) with `metadata` to `path` (temp file, then rename),
/// streaming each tensor's bytes to the file: no serialised copy of the weights exists (a
/// 16k-latent SAE at d = 2304 is 300 MB). The bytes are those of `safetensors::serialize`
/// with the header's keys sorted (`glassbox_data::canonical`): tensors in name order, header
/// JSON compact and space-padded to a multiple of 8.
pub fn write(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: HashMap<String, String>,
) -> Result<(), ConceptError> {
    use std::io::Write;
    let mut order: Vec<&(&str, Vec<usize>, &[f32])> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(b.0));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(metadata));
    let mut offset = 0usize;
    for (name, shape, values) in &order {
        if shape.iter().product::<usize>() != values.len() {
            return Err(error(
                path,
                format!(
                    "tensor `{name}`: shape {shape:?} does not hold {} values",
                    values.len()
                ),
            ));
        }
        let end = offset + 4 * values.len();
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| error(dir, e))?;
    }
    let tmp = atomic::temp_path(path);
    let written = (|| -> std::io::Result<()> {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        file.write_all(&(json.len() as u64).to_le_bytes())?;
        file.write_all(&json)?;
        for (_, _, values) in &order {
            for chunk in values.chunks(1 << 16) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
                file.write_all(&bytes)?;
            }
        }
        file.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(error(&tmp, e));
    }
    atomic::commit(&tmp, path)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    /// The streamed file is byte for byte what `safetensors::serialize` writes, header sorted.
    #[test]
    fn streamed_bytes_equal_the_crate_serialisation() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (vec![1.5f32, -2.0, 3.25], vec![0.5f32; 6], vec![7.0f32]);
        let tensors = [
            ("b_enc", vec![3], a.as_slice()),
            ("W_dec", vec![2, 3], b.as_slice()),
            ("threshold", vec![], c.as_slice()),
        ];
        for metadata in [
            HashMap::new(),
            HashMap::from([("k".to_owned(), "v".to_owned())]),
        ] {
            let path = dir.path().join("t.safetensors");
            write(&path, &tensors, metadata.clone()).unwrap();
            let buffers: Vec<Vec<u8>> = tensors
                .iter()
                .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
                .collect();
            let views: Vec<(String, TensorView<'_>)> = tensors
                .iter()
                .zip(&buffers)
                .map(|((n, s, _), d)| {
                    (
                        n.to_string(),
                        TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
                    )
                })
                .collect();
            let meta = Some(metadata);
            let want = glassbox_data::canonical::sorted_safetensors_header(
                safetensors::tensor::serialize(views, meta).unwrap(),
            );
            assert_eq!(std::fs::read(&path).unwrap(), want);
            let (read, _) = read(&path).unwrap();
            assert_eq!(read["b_enc"].values, a);
        }
    }
}
