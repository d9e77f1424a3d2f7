//! The mirror folder as a set of files with stamps, to tell what a stage changed.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What identifies one version of a local file: a rewrite (temp file + rename) changes the
/// inode, an edit in place the size or the modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub len: u64,
    pub modified_ns: u128,
    pub inode: u64,
}

/// The stamp of a file or folder, `None` when it does not exist.
pub fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Some(Stamp {
        len: if meta.is_dir() { 0 } else { meta.len() },
        modified_ns,
        inode: inode(&meta),
    })
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// Paths that are the mirror's own business: locks, staging, temp files, its state (any
/// component starting with a dot). Never synced in either direction.
pub fn is_private(rel: &str) -> bool {
    rel.split('/').any(|c| c.starts_with('.'))
}

/// The mirror's files and the folders of its remote parts, each with a stamp.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    files: BTreeMap<String, Stamp>,
    /// Folders holding remote parts: replacing one (a stage's commit renames its staged folder
    /// into place) means its old remote parts are gone.
    part_dirs: BTreeMap<String, Option<Stamp>>,
}

/// What a push has to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub upload: Vec<String>,
    pub delete: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.upload.is_empty() && self.delete.is_empty()
    }
}

/// Snapshots `root`; `part_dirs` are the run-relative folders of the remote parts.
pub fn snapshot(root: &Path, part_dirs: &BTreeSet<String>) -> std::io::Result<Snapshot> {
    let mut files = BTreeMap::new();
    walk(root, root, &mut |rel, path, is_dir| {
        if !is_dir {
            if let Some(s) = stamp(path) {
                files.insert(rel.to_owned(), s);
            }
        }
    })?;
    let part_dirs = part_dirs
        .iter()
        .map(|d| (d.clone(), stamp(&root.join(d))))
        .collect();
    Ok(Snapshot { files, part_dirs })
}

impl Snapshot {
    /// From `self` (before a stage) to `after`: new or rewritten files to upload; files that
    /// went, and remote parts whose folder was replaced or removed, to delete.
    pub fn changes<V>(&self, after: &Snapshot, remote_parts: &BTreeMap<String, V>) -> Changes {
        let upload = after
            .files
            .iter()
            .filter(|(rel, s)| self.files.get(*rel) != Some(s))
            .map(|(rel, _)| rel.clone())
            .collect();
        let mut delete: Vec<String> = self
            .files
            .keys()
            .filter(|rel| !after.files.contains_key(*rel))
            .cloned()
            .collect();
        // Parts in a staging folder are moved or removed by the push itself.
        for rel in remote_parts.keys().filter(|r| !is_private(r)) {
            let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
            let before = self.part_dirs.get(dir).cloned().flatten();
            let now = after.part_dirs.get(dir).cloned().flatten();
            let replaced = match (&before, &now) {
                (Some(b), Some(n)) => b.inode != n.inode,
                _ => true,
            };
            if replaced && !after.files.contains_key(rel) {
                delete.push(rel.clone());
            }
        }
        delete.sort();
        delete.dedup();
        Changes { upload, delete }
    }
}

/// Removes the files under `root` (private ones aside) that `keep` does not list, then the
/// folders left empty that hold nothing `keep` lists.
pub fn remove_others(root: &Path, keep: &BTreeSet<String>) -> std::io::Result<()> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    walk(root, root, &mut |rel, path, is_dir| {
        if is_dir {
            dirs.push((rel.to_owned(), path.to_path_buf()));
        } else if !keep.contains(rel) {
            files.push(path.to_path_buf());
        }
    })?;
    for file in files {
        std::fs::remove_file(&file)?;
    }
    // Deepest first, so a parent is looked at after its children went.
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (rel, path) in dirs {
        let prefix = format!("{rel}/");
        let holds_kept = keep
            .range(prefix.clone()..)
            .next()
            .is_some_and(|k| k.starts_with(&prefix));
        if !holds_kept && std::fs::read_dir(&path)?.next().is_none() {
            std::fs::remove_dir(&path)?;
        }
    }
    Ok(())
}

/// Visits every non-private file and folder under `dir` with its path relative to `root`.
pub(crate) fn walk(
    root: &Path,
    dir: &Path,
    visit: &mut dyn FnMut(&str, &Path, bool),
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        if is_private(&rel) {
            continue;
        }
        let is_dir = entry.file_type()?.is_dir();
        if is_dir {
            walk(root, &path, visit)?;
        }
        visit(&rel, &path, is_dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_folder_deletes_its_old_remote_parts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("activations/hook=a")).unwrap();
        std::fs::write(root.join("manifest.json"), b"{}").unwrap();
        let remote: BTreeMap<String, u64> = [
            ("activations/hook=a/part-00000.parquet".to_owned(), 10),
            ("activations/hook=a/part-00001.parquet".to_owned(), 10),
        ]
        .into();
        let dirs: BTreeSet<String> = ["activations/hook=a".to_owned()].into();
        let before = snapshot(root, &dirs).unwrap();
        assert!(before
            .changes(&snapshot(root, &dirs).unwrap(), &remote)
            .is_empty());
        // A commit renames a new folder with one part over the old one.
        std::fs::create_dir_all(root.join("new")).unwrap();
        std::fs::write(root.join("new/part-00000.parquet"), b"p").unwrap();
        std::fs::remove_dir_all(root.join("activations/hook=a")).unwrap();
        std::fs::rename(root.join("new"), root.join("activations/hook=a")).unwrap();
        std::fs::write(root.join("config.toml"), b"x").unwrap();
        let changes = before.changes(&snapshot(root, &dirs).unwrap(), &remote);
        assert_eq!(
            changes.upload,
            ["activations/hook=a/part-00000.parquet", "config.toml"]
        );
        assert_eq!(changes.delete, ["activations/hook=a/part-00001.parquet"]);
    }

    #[test]
    fn private_paths_are_never_synced_and_empty_folders_go() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(".staging/probe")).unwrap();
        std::fs::create_dir_all(root.join("probes")).unwrap();
        std::fs::create_dir_all(root.join("activations/hook=a")).unwrap();
        std::fs::write(root.join("probes/old.parquet"), b"x").unwrap();
        std::fs::write(root.join(".glassbox.lock"), b"x").unwrap();
        let keep: BTreeSet<String> = ["activations/hook=a/part-00000.parquet".to_owned()].into();
        remove_others(root, &keep).unwrap();
        assert!(!root.join("probes").exists());
        assert!(root.join("activations/hook=a").is_dir());
        assert!(root.join(".staging/probe").is_dir() && root.join(".glassbox.lock").is_file());
    }
}
