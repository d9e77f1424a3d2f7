//! PyTorch `torch.save` checkpoints without Python: the legacy (pre-1.6) stream format and the
//! zip format, state dicts of tensors only.
//!
//! Legacy layout: five pickles back to back — magic number, protocol version, system info, the
//! state dict (storages referenced by persistent id), the sorted list of storage keys — then,
//! per key in that order, an 8-byte little-endian element count and the raw bytes. Zip layout:
//! `*/data.pkl` plus one raw file `*/data/{key}` per storage.
//!
//! Tensors may be views into a shared storage at any offset and stride (converted checkpoints
//! often hold transposed, non-contiguous weights); each is gathered into a fresh contiguous
//! tensor, with every index checked against the storage's length.
//!
//! Pickle is a program, not data: only an allow-list of callables is interpreted (tensor and
//! parameter rebuilds, typed storages, `OrderedDict`), nothing is executed, and callers ask
//! for pickle explicitly (`--allow-pickle`).
//!
//! Here in `data` (no tensor library) so that model checkpoints (`glassbox-models` wraps the
//! result in candle tensors) and pickled dictionaries (`glassbox-concepts`) share one reader.

pub mod pickle;

use pickle::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A `torch.save` file that cannot be read as a state dict of tensors.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TorchError {
    pub path: PathBuf,
    pub message: String,
}

/// A tensor of a state dict, contiguous and row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchTensor {
    pub shape: Vec<usize>,
    pub values: TorchValues,
}

/// Element values: floating tensors as f32 (f16/bf16/f64 converted), integer ones as i64,
/// bytes and bools as u8.
#[derive(Debug, Clone, PartialEq)]
pub enum TorchValues {
    F32(Vec<f32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

impl TorchTensor {
    /// The values as f32 (integers converted), for weights stored in any numeric type.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.values {
            TorchValues::F32(v) => v.clone(),
            TorchValues::I64(v) => v.iter().map(|&x| x as f32).collect(),
            TorchValues::U8(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

/// The legacy format's first pickle, `0x1950a86a20f9469cfc6c`, as little-endian bytes.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL: i64 = 1001;

/// Whether `path` names a PyTorch pickle checkpoint by extension.
pub fn is_torch_checkpoint(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == "pth" || e == "pt" || e == "bin" || e == "ckpt")
}

/// Reads every tensor of a `torch.save`d state dict (legacy or zip), keyed by name. Floating
/// tensors become f32 (f16/bf16/f64 converted), integer ones i64, bytes/bools u8.
pub fn load(path: &Path) -> Result<HashMap<String, TorchTensor>, TorchError> {
    let bad = |message: String| TorchError {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let (state, storages) = if bytes.starts_with(b"PK\x03\x04") {
        read_zip(&bytes).map_err(bad)?
    } else {
        read_legacy(&bytes).map_err(bad)?
    };
    state_dict(state, &storages).map_err(bad)
}

/// Raw bytes of each storage, by key.
type Storages = HashMap<String, Vec<u8>>;

fn read_legacy(bytes: &[u8]) -> std::result::Result<(Value, Storages), String> {
    let mut pos = 0;
    let mut next =
        |what: &str| pickle::read(bytes, &mut pos).map_err(|e| format!("reading the {what}: {e}"));
    match next("magic number")? {
        Value::Long(m) if m == MAGIC => {}
        _ => {
            return Err("not a PyTorch checkpoint (no torch.save magic number); expected a .pth/.pt/.bin file written by torch.save".into())
        }
    }
    match next("protocol version")? {
        Value::Int(LEGACY_PROTOCOL) => {}
        other => return Err(format!("unsupported legacy protocol version {other:?}")),
    }
    next("system info")?;
    let state = next("state dict")?;
    let keys = match next("storage keys")? {
        Value::List(keys) => keys,
        _ => return Err("the storage key list is not a list".into()),
    };
    let element_sizes = storage_element_sizes(&state);
    let mut storages = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err("a storage key is not a string".into());
        };
        let header = bytes.get(pos..pos + 8).ok_or_else(|| {
            format!("storage `{key}`: the file ends before its size; the checkpoint is truncated")
        })?;
        let n = u64::from_le_bytes(header.try_into().expect("8 bytes")) as usize;
        pos += 8;
        let size = *element_sizes
            .get(&key)
            .ok_or_else(|| format!("storage `{key}` is listed but no tensor refers to it"))?;
        let len = n
            .checked_mul(size)
            .filter(|&l| pos + l <= bytes.len())
            .ok_or_else(|| format!("storage `{key}` ({n} elements) runs past the end of the file; the checkpoint is truncated"))?;
        storages.insert(key, bytes[pos..pos + len].to_vec());
        pos += len;
    }
    Ok((state, storages))
}

fn read_zip(bytes: &[u8]) -> std::result::Result<(Value, Storages), String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a readable zip checkpoint: {e}"))?;
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("zip entry names: {e}"))?;
    let pkl = names
        .iter()
        .find(|n| n.ends_with("data.pkl"))
        .ok_or("zip checkpoint without a data.pkl")?
        .clone();
    let prefix = pkl.trim_end_matches("data.pkl").to_owned();
    let mut read_entry = |name: &str| -> std::result::Result<Vec<u8>, String> {
        let mut entry = archive
            .by_name(name)
            .map_err(|e| format!("zip entry `{name}`: {e}"))?;
        let mut out = Vec::new();
        entry
            .read_to_end(&mut out)
            .map_err(|e| format!("zip entry `{name}`: {e}"))?;
        Ok(out)
    };
    let pickled = read_entry(&pkl)?;
    let mut pos = 0;
    let state = pickle::read(&pickled, &mut pos).map_err(|e| format!("reading {pkl}: {e}"))?;
    let mut storages = HashMap::new();
    for key in storage_element_sizes(&state).into_keys() {
        let data = read_entry(&format!("{prefix}data/{key}"))?;
        storages.insert(key, data);
    }
    Ok((state, storages))
}

/// A storage reference: key and element type.
struct StorageRef {
    key: String,
    dtype: StorageType,
}

#[derive(Clone, Copy)]
enum StorageType {
    F32,
    F64,
    F16,
    Bf16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageType {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::Bf16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::F32 | Self::I32 => 4,
            Self::F64 | Self::I64 => 8,
            Self::F16 | Self::Bf16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

fn storage_ref(pid: &Value) -> std::result::Result<StorageRef, String> {
    let Value::Tuple(items) = pid else {
        return Err("a persistent id is not a tuple".into());
    };
    match items.as_slice() {
        [Value::Str(kind), Value::Global(module, name), Value::Str(key), ..]
            if kind == "storage" && module == "torch" =>
        {
            let dtype = StorageType::from_name(name)
                .ok_or_else(|| format!("storage type torch.{name} is not supported"))?;
            Ok(StorageRef {
                key: key.clone(),
                dtype,
            })
        }
        _ => Err(format!(
            "unexpected persistent id {items:?}; only tensor storages are supported"
        )),
    }
}

/// Element size of every storage the state dict refers to.
fn storage_element_sizes(v: &Value) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    fn walk(v: &Value, out: &mut HashMap<String, usize>) {
        match v {
            Value::Persistent(pid) => {
                if let Ok(s) = storage_ref(pid) {
                    out.insert(s.key, s.dtype.size());
                }
            }
            Value::Tuple(xs) | Value::List(xs) => xs.iter().for_each(|x| walk(x, out)),
            Value::Dict(kv) => kv.iter().for_each(|(k, v)| {
                walk(k, out);
                walk(v, out)
            }),
            Value::Call { args, .. } => args.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

/// Turns the unpickled state dict into named tensors.
fn state_dict(
    state: Value,
    storages: &Storages,
) -> std::result::Result<HashMap<String, TorchTensor>, String> {
    let pairs = dict_pairs(state)?;
    refuse_calls(&pairs)?;
    let pairs = match pairs {
        // Training checkpoints nest the weights under `state_dict` or `model`.
        pairs if pairs.iter().all(|(_, v)| !is_tensor(v)) => {
            match pairs
                .into_iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == "state_dict" || s == "model"))
            {
                Some((_, inner)) => dict_pairs(inner)?,
                None => return Err(
                    "no tensors found: the pickle is not a state dict (save `model.state_dict()`)"
                        .into(),
                ),
            }
        }
        pairs => pairs,
    };
    refuse_calls(&pairs)?;
    let mut tensors = HashMap::new();
    for (key, value) in pairs {
        let Value::Str(name) = key else {
            return Err(format!("a state dict key is not a string: {key:?}"));
        };
        if !is_tensor(&value) {
            continue; // metadata entries (e.g. `_metadata`) carry no weights
        }
        let t = rebuild_tensor(&value, storages).map_err(|e| format!("tensor `{name}`: {e}"))?;
        tensors.insert(name, t);
    }
    Ok(tensors)
}

/// Errors on any entry built by a callable a state dict never holds (a rebuilt tensor, an
/// `OrderedDict`): such a pickle is code, and its call is named, not run.
fn refuse_calls(pairs: &[(Value, Value)]) -> std::result::Result<(), String> {
    for (key, value) in pairs {
        if is_tensor(value) {
            continue;
        }
        if let Some((module, name)) = callable_name(value) {
            if !(module == "collections" && name == "OrderedDict") {
                return Err(format!(
                    "entry {key:?} is built by calling `{module}.{name}`, which a state dict of \
                     tensors never does; refused (nothing in the file was run)"
                ));
            }
        }
    }
    Ok(())
}

fn dict_pairs(v: Value) -> std::result::Result<Vec<(Value, Value)>, String> {
    match v {
        Value::Dict(pairs) => Ok(pairs),
        Value::Call { callable, mut args, .. } => match *callable {
            Value::Global(m, n) if m == "collections" && n == "OrderedDict" => {
                match args.pop() {
                    Some(Value::Dict(pairs)) => Ok(pairs),
                    None => Ok(Vec::new()),
                    Some(Value::List(_)) | Some(_) => {
                        Err("OrderedDict built from something other than a dict".into())
                    }
                }
            }
            Value::Global(m, n) => Err(format!(
                "refusing to interpret `{m}.{n}`: the checkpoint is not a plain state dict of tensors"
            )),
            _ => Err("the checkpoint's top level is not a dict".into()),
        },
        _ => Err("the checkpoint's top level is not a dict".into()),
    }
}

fn callable_name(v: &Value) -> Option<(&str, &str)> {
    match v {
        Value::Call { callable, .. } => match callable.as_ref() {
            Value::Global(m, n) => Some((m.as_str(), n.as_str())),
            _ => None,
        },
        _ => None,
    }
}

fn is_tensor(v: &Value) -> bool {
    matches!(
        callable_name(v),
        Some((
            "torch._utils",
            "_rebuild_tensor_v2" | "_rebuild_tensor" | "_rebuild_parameter"
        ))
    )
}

fn int(v: &Value, what: &str) -> std::result::Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => Err(format!(
            "{what} is {other:?}, expected a non-negative integer"
        )),
    }
}

fn ints(v: &Value, what: &str) -> std::result::Result<Vec<usize>, String> {
    match v {
        Value::Tuple(xs) | Value::List(xs) => xs.iter().map(|x| int(x, what)).collect(),
        other => Err(format!("{what} is {other:?}, expected a tuple")),
    }
}

fn rebuild_tensor(v: &Value, storages: &Storages) -> std::result::Result<TorchTensor, String> {
    let Value::Call { args, .. } = v else {
        unreachable!("checked by is_tensor")
    };
    if callable_name(v) == Some(("torch._utils", "_rebuild_parameter")) {
        // Parameter(data, requires_grad, hooks): the data is itself a tensor rebuild.
        let data = args.first().ok_or("parameter without data")?;
        if !is_tensor(data) {
            return Err("parameter data is not a tensor".into());
        }
        return rebuild_tensor(data, storages);
    }
    let [Value::Persistent(pid), offset, size, stride, ..] = args.as_slice() else {
        return Err("unexpected tensor rebuild arguments".into());
    };
    let storage = storage_ref(pid)?;
    let bytes = storages
        .get(&storage.key)
        .ok_or_else(|| format!("storage `{}` is missing from the file", storage.key))?;
    let offset = int(offset, "storage offset")?;
    let shape = ints(size, "size")?;
    let strides = ints(stride, "stride")?;
    if shape.len() != strides.len() {
        return Err(format!(
            "size {shape:?} and stride {strides:?} differ in rank"
        ));
    }
    let esize = storage.dtype.size();
    let n_storage = bytes.len() / esize;
    let numel: usize = shape.iter().product();
    // The furthest element the view touches must lie inside the storage.
    if numel > 0 {
        let last = offset
            + shape
                .iter()
                .zip(&strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>();
        if last >= n_storage {
            return Err(format!(
                "view (offset {offset}, size {shape:?}, stride {strides:?}) reaches element {last} of a storage of {n_storage}"
            ));
        }
    }
    let gathered = gather(bytes, esize, offset, &shape, &strides);
    Ok(to_tensor(&gathered, storage.dtype, &shape))
}

/// Copies a strided view into contiguous row-major order.
fn gather(
    bytes: &[u8],
    esize: usize,
    offset: usize,
    shape: &[usize],
    strides: &[usize],
) -> Vec<u8> {
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel * esize);
    if numel == 0 {
        return out;
    }
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        let at = offset + index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&bytes[at * esize..(at + 1) * esize]);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

fn to_tensor(bytes: &[u8], dtype: StorageType, shape: &[usize]) -> TorchTensor {
    let chunks = |n: usize| bytes.chunks_exact(n);
    let values = match dtype {
        StorageType::F32 => TorchValues::F32(
            chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
        ),
        StorageType::F64 => TorchValues::F32(
            chunks(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
        StorageType::F16 => TorchValues::F32(
            chunks(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        StorageType::Bf16 => TorchValues::F32(
            chunks(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        StorageType::I64 => TorchValues::I64(
            chunks(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ),
        StorageType::I32 => TorchValues::I64(
            chunks(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                .collect(),
        ),
        StorageType::I16 => TorchValues::I64(
            chunks(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as i64)
                .collect(),
        ),
        StorageType::I8 => TorchValues::I64(bytes.iter().map(|&b| b as i8 as i64).collect()),
        StorageType::U8 | StorageType::Bool => TorchValues::U8(bytes.to_vec()),
    };
    TorchTensor {
        shape: shape.to_vec(),
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_transposed_views() {
        // A 2×3 storage read as its 3×2 transpose: stride (1, 3).
        let storage: Vec<u8> = (0u8..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let g = gather(&storage, 4, 0, &[3, 2], &[1, 3]);
        let t = to_tensor(&g, StorageType::F32, &[3, 2]);
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(t.values, TorchValues::F32(vec![0., 3., 1., 4., 2., 5.]));
        // An offset view of one row.
        let g = gather(&storage, 4, 3, &[3], &[1]);
        let t = to_tensor(&g, StorageType::F32, &[3]);
        assert_eq!(t.values, TorchValues::F32(vec![3., 4., 5.]));
    }

    #[test]
    fn rejects_views_past_the_storage() {
        let storage: Vec<u8> = (0u8..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let storages = Storages::from([("0".to_string(), storage)]);
        let tensor = Value::Call {
            callable: Box::new(Value::Global(
                "torch._utils".into(),
                "_rebuild_tensor_v2".into(),
            )),
            args: vec![
                Value::Persistent(Box::new(Value::Tuple(vec![
                    Value::Str("storage".into()),
                    Value::Global("torch".into(), "FloatStorage".into()),
                    Value::Str("0".into()),
                    Value::Str("cpu".into()),
                    Value::Int(6),
                ]))),
                Value::Int(2),
                Value::Tuple(vec![Value::Int(2), Value::Int(3)]),
                Value::Tuple(vec![Value::Int(3), Value::Int(1)]),
            ],
            state: None,
        };
        let e = rebuild_tensor(&tensor, &storages).unwrap_err();
        assert!(e.contains("reaches element 7 of a storage of 6"), "{e}");
    }
}
