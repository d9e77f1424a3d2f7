//! Computes the source identity the manifest records for every stage (`GLASSBOX_SOURCE_ID`): a
//! hash of the code this binary is built from (every crate it links, the embedded data files,
//! the workspace manifests and `Cargo.lock`). The version alone stays `0.1.0` across changes
//! that move numbers; this names the exact source, with or without a git checkout, dirty or not.

use std::path::{Path, PathBuf};

/// What decides the binary's behaviour, relative to the workspace root.
const INPUTS: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "pipeline/src",
    "pipeline/build.rs",
    "pipeline/Cargo.toml",
    "models/src",
    "models/Cargo.toml",
    "runner/src",
    "runner/Cargo.toml",
    "data/src",
    "data/build.rs",
    "data/Cargo.toml",
    "data/lexicon",
    "data/sets",
    "probes/src",
    "probes/Cargo.toml",
    "concepts/src",
    "concepts/Cargo.toml",
    "reports/src",
    "reports/schema",
    "reports/Cargo.toml",
    "remote/src",
    "remote/Cargo.toml",
];

fn main() {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let mut files = Vec::new();
    for input in INPUTS {
        let path = root.join(input);
        println!("cargo:rerun-if-changed={}", path.display());
        collect(&path, &mut files);
    }
    // Relative paths in a fixed order, so the identity does not depend on where the checkout
    // lives or in which order the file system lists a folder.
    let mut named: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|f| {
            let name = f
                .strip_prefix(&root)
                .unwrap_or(&f)
                .to_string_lossy()
                .replace('\\', "/");
            (name, f)
        })
        .collect();
    named.sort();
    let mut hash = Fnv64::default();
    for (name, path) in &named {
        let bytes = std::fs::read(path).unwrap_or_default();
        hash.write(name.as_bytes());
        hash.write(&[0]);
        hash.write(&(bytes.len() as u64).to_le_bytes());
        hash.write(&bytes);
    }
    println!("cargo:rustc-env=GLASSBOX_SOURCE_ID={:016x}", hash.0);
    println!("cargo:rustc-env=GLASSBOX_SOURCE_FILES={}", named.len());
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let child = entry.path();
        // Editors' swap files and other dot-files are not source.
        if !entry.file_name().to_string_lossy().starts_with('.') {
            collect(&child, out);
        }
    }
}

/// FNV-1a, 64 bits: an identity for builds, not a defence against forgery, and stable across
/// Rust versions (the standard library's hasher is not promised to be).
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
