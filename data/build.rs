//! Records the versions of the dependencies that decide glassbox's numbers (read from the
//! workspace's Cargo.lock at build time), so every report can say which code produced it.

use std::fmt::Write;

const CRATES: &[&str] = &[
    "candle-core",
    "tokenizers",
    "hf-hub",
    "safetensors",
    "gemm",
    "arrow-array",
    "parquet",
    "linfa",
    "linfa-elasticnet",
    "linfa-reduction",
];

fn main() {
    let lock =
        std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut found: Vec<(String, String)> = Vec::new();
    let mut name: Option<String> = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            if CRATES.contains(&n.as_str()) && !found.iter().any(|(f, _)| *f == n) {
                found.push((n, v.trim_matches('"').to_owned()));
            }
        }
    }
    found.sort();
    let mut out = String::from("/// Versions of the numerically relevant dependencies this build links (from Cargo.lock).\npub const DEPENDENCY_VERSIONS: &[(&str, &str)] = &[\n");
    for (n, v) in found {
        writeln!(out, "    ({n:?}, {v:?}),").unwrap();
    }
    out.push_str("];\n");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("versions.rs");
    std::fs::write(dest, out).unwrap();
}
