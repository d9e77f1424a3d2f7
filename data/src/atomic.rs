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

/// Whether `path` (which need not exist yet) lies inside `folder` or is it, links resolved.
pub fn is_within(path: &Path, folder: &Path) -> bool {
    let Ok(folder) = folder.canonicalize() else {
        return false;
    };
    // Resolve the deepest part of `path` that exists; the rest is appended as written.
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return false,
        }
    }
    let Ok(mut resolved) = existing.canonicalize() else {
        return false;
    };
    for name in rest.iter().rev() {
        match name.to_str() {
            Some("..") => {
                resolved.pop();
            }
            Some(".") => {}
            _ => resolved.push(name),
        }
    }
    resolved.starts_with(&folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_a_folder_are_told_with_links_and_missing_parts() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("activations")).unwrap();
        assert!(is_within(&run, &run));
        assert!(is_within(&run.join("activations/new/deeper"), &run));
        assert!(is_within(&run.join("activations/../x"), &run));
        assert!(
            !is_within(&dir.path().join("runs"), &run),
            "a sibling sharing a prefix"
        );
        assert!(!is_within(&run.join("../out"), &run));
        assert!(!is_within(&run.join("missing/../../out"), &run));
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&run, &link).unwrap();
            assert!(is_within(&link.join("export"), &run));
        }
    }

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
