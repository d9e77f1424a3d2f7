//! Reading safetensors checkpoints as they ship: one file or shards listed by
//! `model.safetensors.index.json`, tensor by tensor with positioned reads (no second copy of
//! the file in memory, no memory map, no `unsafe`), each tensor kept in its stored dtype or
//! converted as it is read.
//!
//! The format (`huggingface/safetensors`): an 8-byte little-endian header length, a JSON
//! header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the
//! tensors' bytes, offsets relative to the end of the header.

use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The suffix that marks a shard index.
pub const INDEX_SUFFIX: &str = ".index.json";

#[derive(Debug, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

#[derive(Debug, Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

fn bad(path: &Path, message: String) -> ModelError {
    ModelError::Weights {
        path: path.to_path_buf(),
        message,
    }
}

fn dtype_of(path: &Path, name: &str, s: &str) -> Result<DType> {
    Ok(match s {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "U32" => DType::U32,
        "U8" | "BOOL" => DType::U8,
        other => {
            return Err(bad(
                path,
                format!("tensor `{name}` has dtype {other}, which glassbox does not read (F32, F16, BF16, F64, I64, U32, U8)"),
            ))
        }
    })
}

/// How stored floating-point tensors are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// Upcast every float tensor to f32 as it is read.
    #[default]
    F32,
    /// Keep bf16/f16 tensors in their stored dtype (f32 stays f32).
    Stored,
    /// Convert float tensors to this dtype (e.g. an f32 checkpoint held in bf16).
    As(DType),
}

impl Keep {
    fn target(self, stored: DType) -> DType {
        let float = matches!(stored, DType::F32 | DType::F16 | DType::BF16 | DType::F64);
        match self {
            _ if !float => stored,
            Keep::F32 => DType::F32,
            Keep::Stored if stored == DType::F64 => DType::F32,
            Keep::Stored => stored,
            Keep::As(d) => d,
        }
    }
}

/// Reads every tensor of one safetensors file.
pub fn read_file(path: &Path, device: &Device, keep: Keep) -> Result<HashMap<String, Tensor>> {
    let mut file = File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
    let file_len = file
        .metadata()
        .map_err(|e| bad(path, format!("cannot stat: {e}")))?
        .len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| {
        bad(
            path,
            format!("not a safetensors file (no header length): {e}"),
        )
    })?;
    let header_len = u64::from_le_bytes(len);
    if header_len > file_len.saturating_sub(8) || header_len > 100 << 20 {
        return Err(bad(
            path,
            format!("not a safetensors file: header of {header_len} bytes in a file of {file_len}; the download may be truncated — delete it and fetch again"),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(path, format!("cannot read the header: {e}")))?;
    let mut entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(path, format!("the header is not valid JSON: {e}")))?;
    entries.remove("__metadata__");
    let data_start = 8 + header_len;
    let mut tensors = HashMap::with_capacity(entries.len());
    for (name, value) in entries {
        let entry: Entry = serde_json::from_value(value).map_err(|e| {
            bad(
                path,
                format!("tensor `{name}`: malformed header entry: {e}"),
            )
        })?;
        let dtype = dtype_of(path, &name, &entry.dtype)?;
        let [begin, end] = entry.data_offsets;
        let numel: usize = entry.shape.iter().product();
        let expected = (numel * dtype.size_in_bytes()) as u64;
        if end < begin || end - begin != expected || data_start + end > file_len {
            return Err(bad(
                path,
                format!(
                    "tensor `{name}` ({} {:?}) should take {expected} bytes, its offsets say {begin}..{end} of {} data bytes; the file is corrupt or truncated",
                    entry.dtype,
                    entry.shape,
                    file_len - data_start
                ),
            ));
        }
        file.seek(SeekFrom::Start(data_start + begin))
            .map_err(|e| bad(path, format!("tensor `{name}`: cannot seek: {e}")))?;
        let target = keep.target(dtype);
        let tensor = decode(&mut file, dtype, target, numel, &entry.shape, device)
            .map_err(|e| bad(path, format!("tensor `{name}`: cannot read: {e}")))?;
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

/// Bytes decoded per read: the only transient buffer, whatever the tensor's size.
const CHUNK: usize = 1 << 20;

/// Reads `numel` little-endian values of `stored` from `file`'s position into a tensor of
/// `target`, converting a chunk at a time — so holding a tensor costs its own bytes, not a
/// second copy of its stored bytes.
fn decode(
    file: &mut File,
    stored: DType,
    target: DType,
    numel: usize,
    shape: &[usize],
    device: &Device,
) -> std::result::Result<Tensor, String> {
    use half::{bf16, f16};
    fn read<T>(
        file: &mut File,
        numel: usize,
        width: usize,
        convert: impl Fn(&[u8]) -> T,
    ) -> std::io::Result<Vec<T>> {
        let mut out = Vec::with_capacity(numel);
        crate::huge_pages::advise(&out);
        let mut buf = vec![0u8; CHUNK.min(numel * width).max(width)];
        let mut left = numel;
        while left > 0 {
            let n = left.min(buf.len() / width);
            file.read_exact(&mut buf[..n * width])?;
            out.extend(buf[..n * width].chunks_exact(width).map(&convert));
            left -= n;
        }
        Ok(out)
    }
    let f32_of = |stored: DType| -> fn(&[u8]) -> f32 {
        match stored {
            DType::BF16 => |b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            DType::F16 => |b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            _ => |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    };
    let io = |e: std::io::Error| e.to_string();
    let t = match (stored, target) {
        (DType::F32 | DType::BF16 | DType::F16, DType::F32) => {
            let v = read(file, numel, stored.size_in_bytes(), f32_of(stored)).map_err(io)?;
            Tensor::from_vec(v, shape, device)
        }
        (DType::BF16, DType::BF16) => {
            let v = read(file, numel, 2, |b| {
                bf16::from_bits(u16::from_le_bytes([b[0], b[1]]))
            })
            .map_err(io)?;
            Tensor::from_vec(v, shape, device)
        }
        (DType::F16, DType::F16) => {
            let v = read(file, numel, 2, |b| {
                f16::from_bits(u16::from_le_bytes([b[0], b[1]]))
            })
            .map_err(io)?;
            Tensor::from_vec(v, shape, device)
        }
        (DType::F32 | DType::F16, DType::BF16) => {
            let f = f32_of(stored);
            let v = read(file, numel, stored.size_in_bytes(), |b| {
                bf16::from_f32(f(b))
            })
            .map_err(io)?;
            Tensor::from_vec(v, shape, device)
        }
        (DType::F32 | DType::BF16, DType::F16) => {
            let f = f32_of(stored);
            let v =
                read(file, numel, stored.size_in_bytes(), |b| f16::from_f32(f(b))).map_err(io)?;
            Tensor::from_vec(v, shape, device)
        }
        // Rare dtypes (f64, integers): read whole, then convert.
        _ => {
            let mut bytes = vec![0u8; numel * stored.size_in_bytes()];
            file.read_exact(&mut bytes).map_err(io)?;
            Tensor::from_raw_buffer(&bytes, stored, shape, device).and_then(|t| {
                if target == stored {
                    Ok(t)
                } else {
                    t.to_dtype(target)
                }
            })
        }
    };
    t.map_err(|e| e.to_string())
}

/// Whether `path` is a shard index (`*.safetensors.index.json`).
pub fn is_index(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(INDEX_SUFFIX))
}

fn read_index(index: &Path) -> Result<Index> {
    let text = std::fs::read_to_string(index)
        .map_err(|e| bad(index, format!("cannot read the shard index: {e}")))?;
    serde_json::from_str(&text).map_err(|e| {
        bad(
            index,
            format!("not a shard index (`weight_map` of tensor → file): {e}"),
        )
    })
}

/// The shard files an index lists (beside it), each with one tensor it should hold.
pub fn shards(index: &Path) -> Result<Vec<(PathBuf, String)>> {
    shards_of(index, &read_index(index)?)
}

fn shards_of(index: &Path, parsed: &Index) -> Result<Vec<(PathBuf, String)>> {
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut by_file: BTreeMap<&str, &str> = BTreeMap::new();
    for (tensor, file) in &parsed.weight_map {
        if file.contains("..") || file.starts_with('/') {
            return Err(bad(
                index,
                format!("tensor `{tensor}` is mapped to `{file}`, outside the checkpoint folder"),
            ));
        }
        by_file.entry(file).or_insert(tensor);
    }
    Ok(by_file
        .into_iter()
        .map(|(f, t)| (dir.join(f), t.to_owned()))
        .collect())
}

/// Reads the shards an index lists and checks that each holds the tensors mapped to it.
pub fn read_sharded(index: &Path, device: &Device, keep: Keep) -> Result<HashMap<String, Tensor>> {
    read_shards_with(index, |shard| read_file(shard, device, keep))
}

/// Reads the shards an index lists with `read` (safetensors, or PyTorch pickles for
/// `pytorch_model.bin.index.json`) and checks that each holds the tensors mapped to it.
pub fn read_shards_with(
    index: &Path,
    read: impl Fn(&Path) -> Result<HashMap<String, Tensor>>,
) -> Result<HashMap<String, Tensor>> {
    let parsed = read_index(index)?;
    let mut tensors = HashMap::with_capacity(parsed.weight_map.len());
    for (shard, example) in shards_of(index, &parsed)? {
        if !shard.is_file() {
            return Err(bad(
                index,
                format!(
                    "lists shard `{}` (holding `{example}`, among others), which is missing; fetch the checkpoint again",
                    shard.display()
                ),
            ));
        }
        let read = read(&shard)?;
        for (name, file) in &parsed.weight_map {
            if index.with_file_name(file) == shard && !read.contains_key(name) {
                return Err(bad(
                    &shard,
                    format!("the index maps `{name}` to this shard, but it has no such tensor"),
                ));
            }
        }
        tensors.extend(read);
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, tensors: &[(&str, &Tensor)]) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).clone()))
            .collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    #[test]
    fn reads_back_in_the_stored_or_requested_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let a = Tensor::new(&[[1.5f32, -2.0], [0.25, 3.0]], &Device::Cpu).unwrap();
        let b = a.to_dtype(DType::BF16).unwrap();
        write(&path, &[("a", &a), ("b", &b)]);
        let f32s = read_file(&path, &Device::Cpu, Keep::F32).unwrap();
        assert_eq!(f32s["b"].dtype(), DType::F32);
        assert_eq!(
            f32s["b"].to_vec2::<f32>().unwrap(),
            a.to_vec2::<f32>().unwrap()
        );
        let stored = read_file(&path, &Device::Cpu, Keep::Stored).unwrap();
        assert_eq!(
            (stored["a"].dtype(), stored["b"].dtype()),
            (DType::F32, DType::BF16)
        );
        let halved = read_file(&path, &Device::Cpu, Keep::As(DType::BF16)).unwrap();
        assert_eq!(halved["a"].dtype(), DType::BF16);
    }

    #[test]
    fn a_truncated_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let a = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        write(&path, &[("a", &a)]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let e = read_file(&path, &Device::Cpu, Keep::F32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`a`") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn shards_are_read_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        write(
            &dir.path().join("model-00001-of-00002.safetensors"),
            &[("x.a", &a)],
        );
        write(
            &dir.path().join("model-00002-of-00002.safetensors"),
            &[("x.b", &a)],
        );
        let index = dir.path().join("model.safetensors.index.json");
        std::fs::write(
            &index,
            r#"{"metadata": {}, "weight_map": {"x.a": "model-00001-of-00002.safetensors", "x.b": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let all = read_sharded(&index, &Device::Cpu, Keep::F32).unwrap();
        assert_eq!(all.len(), 2);
        std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
        let e = read_sharded(&index, &Device::Cpu, Keep::F32)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model-00002-of-00002.safetensors") && e.contains("x.b"),
            "{e}"
        );
    }
}
