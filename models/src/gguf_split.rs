//! A GGUF checkpoint as one or several files. llama.cpp's `gguf-split` (and its converter's
//! `--split-max-size`) cut large models into `NAME-00001-of-0000N.gguf` … files: the first holds
//! all metadata, every part some of the tensors and the keys `split.no` (0-based),
//! `split.count` and `split.tensors.count`. [`GgufParts::open`] reads every part of the set its
//! first file starts (checking each part's number, count and the total of tensors), so the
//! loader sees one metadata table and one tensor namespace.

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The parts of one GGUF checkpoint, opened.
pub(crate) struct GgufParts {
    /// Every part's tensor table (the first's included), with its file, by part number.
    parts: Vec<(PathBuf, Content)>,
    files: RefCell<Vec<File>>,
    /// Which part holds each tensor.
    owner: HashMap<String, usize>,
}

/// `(prefix, number, count)` of a split part's file name `PREFIX-0000K-of-0000N.gguf`.
pub fn split_name(path: &Path) -> Option<(String, u32, u32)> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".gguf")?;
    let (head, count) = stem.rsplit_once("-of-")?;
    let (prefix, number) = head.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(number) || !digits(count) {
        return None;
    }
    Some((prefix.to_owned(), number.parse().ok()?, count.parse().ok()?))
}

/// The file name of part `number` (1-based) of `count` after `prefix`.
pub fn part_name(prefix: &str, number: u32, count: u32) -> String {
    format!("{prefix}-{number:05}-of-{count:05}.gguf")
}

/// A non-negative metadata integer, whatever width and signedness the converter wrote it in
/// (u32 or u64 for most keys, u16 and i32 for the split keys).
pub(crate) fn unsigned(v: &Value) -> Option<u64> {
    match v {
        Value::U8(n) => Some(u64::from(*n)),
        Value::U16(n) => Some(u64::from(*n)),
        Value::U32(n) => Some(u64::from(*n)),
        Value::U64(n) => Some(*n),
        Value::I8(n) => u64::try_from(*n).ok(),
        Value::I16(n) => u64::try_from(*n).ok(),
        Value::I32(n) => u64::try_from(*n).ok(),
        Value::I64(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn integer(content: &Content, key: &str) -> Option<u64> {
    content.metadata.get(key).and_then(unsigned)
}

fn read_part(path: &Path) -> Result<(File, Content), String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let content = Content::read(&mut file)
        .map_err(|e| format!("{} is not a readable GGUF file: {e}", path.display()))?;
    Ok((file, content))
}

impl GgufParts {
    /// `path` and, where its metadata says it is the first of a split set, the other parts
    /// beside it. Errors are messages naming the file and key at fault.
    pub fn open(path: &Path) -> Result<Self, String> {
        let (file, first) = read_part(path)?;
        let count = integer(&first, "split.count").unwrap_or(1).max(1);
        let number = integer(&first, "split.no").unwrap_or(0);
        let mut parts = vec![(path.to_path_buf(), first)];
        let mut files = vec![file];
        if count > 1 {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            let Some((prefix, _, _)) = split_name(path) else {
                return Err(format!(
                    "{name} is part {} of a {count}-part split GGUF (`split.count`) but is not named PREFIX-0000K-of-0000N.gguf, so its other parts cannot be found; merge the parts with llama.cpp's `llama-gguf-split --merge`",
                    number + 1
                ));
            };
            if number != 0 {
                return Err(format!(
                    "{name} is part {} of {count} of a split GGUF; pass its first part, {}",
                    number + 1,
                    part_name(&prefix, 1, count as u32)
                ));
            }
            for k in 1..count {
                let part = path.with_file_name(part_name(&prefix, k as u32 + 1, count as u32));
                if !part.is_file() {
                    return Err(format!(
                        "part {} of {count} of the split GGUF, {}, is missing (it must sit beside {name})",
                        k + 1,
                        part.display()
                    ));
                }
                let (file, content) = read_part(&part)?;
                let said = (
                    integer(&content, "split.no"),
                    integer(&content, "split.count"),
                );
                if said != (Some(k), Some(count)) {
                    return Err(format!(
                        "{} says it is part {:?} of {:?} (`split.no`, `split.count`); expected part {} of {count}",
                        part.display(),
                        said.0.map(|n| n + 1),
                        said.1,
                        k + 1
                    ));
                }
                parts.push((part, content));
                files.push(file);
            }
        }
        let mut owner = HashMap::new();
        for (i, (part, content)) in parts.iter().enumerate() {
            for name in content.tensor_infos.keys() {
                if owner.insert(name.clone(), i).is_some() {
                    return Err(format!(
                        "tensor `{name}` is in two parts of the split GGUF (again in {})",
                        part.display()
                    ));
                }
            }
        }
        if let Some(total) = integer(&parts[0].1, "split.tensors.count").filter(|_| count > 1) {
            if total != owner.len() as u64 {
                return Err(format!(
                    "the split GGUF's `split.tensors.count` is {total} but its {count} parts hold {} tensors",
                    owner.len()
                ));
            }
        }
        Ok(Self {
            parts,
            files: RefCell::new(files),
            owner,
        })
    }

    /// The first (or only) part: all the metadata.
    pub fn content(&self) -> &Content {
        &self.parts[0].1
    }

    /// Every tensor of every part, with its description.
    pub fn tensor_infos(&self) -> impl Iterator<Item = (&String, &TensorInfo)> {
        self.parts.iter().flat_map(|(_, c)| c.tensor_infos.iter())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.owner.contains_key(name)
    }

    /// A small tensor (rotary factors) as f32 values, whatever it is stored as.
    pub fn vector(&self, name: &str) -> Result<Vec<f32>, String> {
        self.tensor(name, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .and_then(|t| {
                t.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()
            })
            .map_err(|e| format!("tensor `{name}`: {e}"))
    }

    /// Tensor `name`, read from the part that holds it.
    pub fn tensor(&self, name: &str, device: &Device) -> candle_core::Result<QTensor> {
        let Some(&i) = self.owner.get(name) else {
            candle_core::bail!("no tensor `{name}` in the file")
        };
        let mut files = self.files.borrow_mut();
        self.parts[i].1.tensor(&mut files[i], name, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_parse_and_print() {
        let p = Path::new("/m/Qwen2.5-72B-Q4_K_M-00002-of-00012.gguf");
        assert_eq!(split_name(p), Some(("Qwen2.5-72B-Q4_K_M".into(), 2, 12)));
        assert_eq!(
            part_name("Qwen2.5-72B-Q4_K_M", 1, 12),
            "Qwen2.5-72B-Q4_K_M-00001-of-00012.gguf"
        );
        assert_eq!(split_name(Path::new("model-q4-of-x.gguf")), None);
        assert_eq!(split_name(Path::new("model.gguf")), None);
    }

    /// Writes `count` parts after `prefix` in `dir`, part k holding tensor `t{k}` and stating
    /// `split.no` = `numbers[k]`, with `total` as `split.tensors.count`.
    fn write_parts(dir: &Path, prefix: &str, numbers: &[u16], total: i32) {
        use candle_core::quantized::{gguf_file, GgmlDType};
        use candle_core::{DType, Tensor};
        let count = numbers.len() as u16;
        for (k, &no) in numbers.iter().enumerate() {
            let t = Tensor::full(k as f32, 32, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
            let arch = Value::String("llama".into());
            let (no, n, total) = (Value::U16(no), Value::U16(count), Value::I32(total));
            let mut meta = vec![("split.no", &no), ("split.count", &n)];
            meta.push(("split.tensors.count", &total));
            if k == 0 {
                meta.push(("general.architecture", &arch));
            }
            let path = dir.join(part_name(prefix, k as u32 + 1, count as u32));
            let mut f = File::create(path).unwrap();
            let name = format!("t{k}");
            gguf_file::write(&mut f, &meta, &[(name.as_str(), &q)]).unwrap();
        }
    }

    #[test]
    fn a_split_set_reads_as_one_file() {
        let dir = tempfile::tempdir().unwrap();
        write_parts(dir.path(), "m", &[0, 1, 2], 3);
        let parts = GgufParts::open(&dir.path().join("m-00001-of-00003.gguf")).unwrap();
        assert!(parts
            .content()
            .metadata
            .contains_key("general.architecture"));
        let mut names: Vec<_> = parts.tensor_infos().map(|(n, _)| n.clone()).collect();
        names.sort();
        assert_eq!(names, ["t0", "t1", "t2"]);
        for k in 0..3 {
            let t = parts.tensor(&format!("t{k}"), &Device::Cpu).unwrap();
            let v = t
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(v[0], k as f32, "t{k} read from its own part");
        }
    }

    /// A part missing, a part passed for the first, a part that says it is another and a
    /// tensor count that disagrees are each named.
    #[test]
    fn a_broken_split_set_is_named() {
        let dir = tempfile::tempdir().unwrap();
        // Part k states `split.no` = numbers[k]; `removed`/`opened` are 1-based part numbers.
        struct Broken {
            prefix: &'static str,
            numbers: &'static [u16],
            total: i32,
            removed: Option<u32>,
            opened: u32,
            needles: [&'static str; 2],
        }
        let case = |prefix, numbers, total, removed, opened, needles| Broken {
            prefix,
            numbers,
            total,
            removed,
            opened,
            needles,
        };
        let cases = [
            case(
                "m",
                &[0, 1, 2],
                3,
                Some(3),
                1,
                ["m-00003-of-00003.gguf", "missing"],
            ),
            case(
                "n",
                &[0, 1, 2],
                3,
                None,
                2,
                ["part 2 of 3", "n-00001-of-00003.gguf"],
            ),
            case(
                "o",
                &[0, 2, 1],
                3,
                None,
                1,
                ["o-00002-of-00003.gguf", "split.no"],
            ),
            case("p", &[0, 1], 5, None, 1, ["split.tensors.count", "5"]),
        ];
        for c in cases {
            write_parts(dir.path(), c.prefix, c.numbers, c.total);
            let count = c.numbers.len() as u32;
            if let Some(k) = c.removed {
                std::fs::remove_file(dir.path().join(part_name(c.prefix, k, count))).unwrap();
            }
            let path = dir.path().join(part_name(c.prefix, c.opened, count));
            let e = GgufParts::open(&path).err().unwrap();
            assert!(c.needles.iter().all(|n| e.contains(n)), "{e}");
        }

        // A first part renamed so its siblings cannot be derived.
        write_parts(dir.path(), "q", &[0, 1], 2);
        let odd = dir.path().join("renamed.gguf");
        std::fs::rename(dir.path().join("q-00001-of-00002.gguf"), &odd).unwrap();
        let e = GgufParts::open(&odd).err().unwrap();
        assert!(e.contains("llama-gguf-split --merge"), "{e}");
    }
}
