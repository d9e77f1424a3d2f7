//! NumPy `.npz` archives (a zip of `.npy` files, stored or deflated) of float arrays, for
//! Gemma Scope's `params.npz`. The `.npy` format (numpy `lib/format.py`): magic `\x93NUMPY`,
//! version, a little-endian header length, a Python-literal header
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (d, m), }`, then the data.

use crate::ConceptError;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// One array: its shape and values widened to f32 (C order).
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

fn bad(path: &Path, m: impl std::fmt::Display) -> ConceptError {
    ConceptError::Invalid(format!("{}: {m}", path.display()))
}

/// Calls `f` with each entry's name (without `.npy`) and a reader of its bytes.
fn for_each_entry(
    path: &Path,
    mut f: impl FnMut(&str, &mut dyn Read) -> Result<(), ConceptError>,
) -> Result<(), ConceptError> {
    let file = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| bad(path, format!("not an .npz (zip) archive: {e}")))?;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| bad(path, format!("entry {i}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| bad(path, format!("entry {i}: {e}")))?
            .trim_end_matches(".npy")
            .to_owned();
        f(&name, &mut entry)?;
    }
    Ok(())
}

/// Every array of an `.npz` file, by name (without `.npy`).
pub fn read(path: &Path) -> Result<HashMap<String, Array>, ConceptError> {
    let mut out = HashMap::new();
    for_each_entry(path, |name, entry| {
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(path, format!("`{name}`: cannot read: {e}")))?;
        let array = parse_npy(&bytes).map_err(|m| bad(path, format!("`{name}`: {m}")))?;
        out.insert(name.to_owned(), array);
        Ok(())
    })?;
    Ok(out)
}

/// Each array's name, dtype and shape, from the `.npy` headers only.
pub fn headers(path: &Path) -> Result<Vec<(String, String, Vec<usize>)>, ConceptError> {
    let mut out = Vec::new();
    for_each_entry(path, |name, entry| {
        // The header fits in its first 64 KiB (numpy pads it to a multiple of 64 bytes).
        let mut head = Vec::new();
        entry
            .take(1 << 16)
            .read_to_end(&mut head)
            .map_err(|e| bad(path, format!("`{name}`: {e}")))?;
        let (descr, _, shape, _) =
            parse_header(&head).map_err(|m| bad(path, format!("`{name}`: {m}")))?;
        out.push((name.to_owned(), descr, shape));
        Ok(())
    })?;
    out.sort();
    Ok(out)
}

/// The array `name` alone, if the archive has it.
pub fn read_one(path: &Path, name: &str) -> Result<Option<Array>, ConceptError> {
    let file = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| bad(path, format!("not an .npz (zip) archive: {e}")))?;
    let Ok(mut entry) = zip.by_name(&format!("{name}.npy")) else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| bad(path, format!("`{name}`: cannot read: {e}")))?;
    parse_npy(&bytes)
        .map(Some)
        .map_err(|m| bad(path, format!("`{name}`: {m}")))
}

/// The `.npy` header: dtype, Fortran order, shape, and where the data starts.
fn parse_header(bytes: &[u8]) -> Result<(String, bool, Vec<usize>, usize), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!(".npy version {v} is not supported")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-text .npy header")?;
    let field = |key: &str| -> Result<&str, String> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or(format!("header has no `{key}`"))?;
        let rest = header[at + key.len() + 2..].trim_start();
        Ok(rest.strip_prefix(':').unwrap_or(rest).trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or("malformed descr")?;
    let fortran = field("fortran_order")?.starts_with("True");
    let shape_text = field("shape")?;
    let shape_text = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("malformed shape")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("malformed shape ({e})"))?;
    Ok((descr.to_owned(), fortran, shape, start + header_len))
}

/// Parses one `.npy` file's bytes.
pub fn parse_npy(bytes: &[u8]) -> Result<Array, String> {
    let (descr, fortran, shape, data_start) = parse_header(bytes)?;
    let descr = descr.as_str();
    let numel: usize = shape.iter().product();
    let data = &bytes[data_start..];
    let (width, convert): (usize, fn(&[u8]) -> f32) = match descr {
        "<f4" | "|f4" => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        "<f8" => (8, |b| {
            f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32
        }),
        "<f2" => (2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        other => {
            return Err(format!(
                "dtype `{other}` is not supported (little-endian f2, f4 or f8)"
            ))
        }
    };
    if data.len() != numel * width {
        return Err(format!(
            "shape {shape:?} of `{descr}` needs {} bytes, the file has {}",
            numel * width,
            data.len()
        ));
    }
    let mut values: Vec<f32> = data.chunks_exact(width).map(convert).collect();
    if fortran && shape.len() == 2 {
        let (r, c) = (shape[0], shape[1]);
        let mut c_order = vec![0.0f32; values.len()];
        for i in 0..r {
            for j in 0..c {
                c_order[i * c + j] = values[j * r + i];
            }
        }
        values = c_order;
    } else if fortran && shape.len() > 2 {
        return Err("Fortran-ordered arrays of more than two dimensions are not supported".into());
    }
    Ok(Array { shape, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn reads_c_and_fortran_order() {
        let data: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let c = parse_npy(&npy("<f4", false, "(2, 3)", &data)).unwrap();
        assert_eq!(c.shape, vec![2, 3]);
        assert_eq!(c.values, vec![1., 2., 3., 4., 5., 6.]);
        let f = parse_npy(&npy("<f4", true, "(2, 3)", &data)).unwrap();
        assert_eq!(f.values, vec![1., 3., 5., 2., 4., 6.]);
        let v = parse_npy(&npy("<f4", false, "(6,)", &data)).unwrap();
        assert_eq!(v.shape, vec![6]);
        let e = parse_npy(&npy("<i4", false, "(6,)", &data)).unwrap_err();
        assert!(e.contains("<i4"), "{e}");
        let e = parse_npy(&npy("<f4", false, "(7,)", &data)).unwrap_err();
        assert!(e.contains("28 bytes"), "{e}");
    }
}
