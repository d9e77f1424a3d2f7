//! Write-then-rename, so a reader never sees a half-written file under its final name.

use crate::{DataError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name a file is written under before it is renamed to `path`.
///
/// A leading dot and a `.tmp` suffix keep it out of `*.parquet` globs (polars, DuckDB).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(DataError::io(dir))?;
    }
    let tmp = temp_path(path);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(source) = written {
        // A full disk must not stay full of our half-written temp files.
        let _ = std::fs::remove_file(&tmp);
        return Err(DataError::Io { path: tmp, source });
    }
    commit(&tmp, path)
}

/// Renames a finished temp file to its final name.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(DataError::io(path))
}

/// `out` may be missing (it is created) or a folder, not a file.
pub fn require_folder(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(DataError::Invalid {
            path: out.to_path_buf(),
            message: "a file, not a folder; name a folder to write into (it is created if missing)"
                .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_name_hides_from_parquet_globs() {
        let tmp = temp_path(Path::new("/r/activations/hook=x/part-00001.parquet"));
        assert_eq!(
            tmp,
            Path::new("/r/activations/hook=x/.part-00001.parquet.tmp")
        );
    }

    #[test]
    fn write_bytes_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/file.json");
        write_bytes(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert!(!temp_path(&path).exists());
    }
}
