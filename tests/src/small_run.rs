//! A small real run shared by the dictionary tests: 40 short sentences about food or sport
//! (`topic`), through a local MiniLM copy, token-level activations at one hook.

use crate::{assert_success, glassbox, local_minilm};
use std::path::{Path, PathBuf};

/// Extracts `hook` for the 40 sentences into `dir/run`; `None` where MiniLM is not available
/// outside CI (under `CI=true` its absence fails).
pub fn small_topic_run(dir: &Path, hook: &str) -> Option<PathBuf> {
    let model = local_minilm(dir)?;
    let rows: String = (0..40)
        .map(|i| {
            let topic = ["food", "sport"][i % 2];
            format!("{{\"text\":\"sentence {i} is about {topic} and more {topic}\",\"topic\":\"{topic}\"}}\n")
        })
        .collect();
    let data = dir.join("d.jsonl");
    std::fs::write(&data, rows).unwrap();
    let run = dir.join("run");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .args(["--hooks", hook, "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "extract");
    Some(run)
}
