//! Sharded stages: `--shard i/N` workers that share one run.
//!
//! A sharded stage cuts its work into numbered parts (extract: `shard_size` examples each),
//! and part `k` belongs to worker `k mod N`. Every part is written, and marked done, exactly as
//! a single process writes it, so the merged run is the single-process run byte for byte. The
//! first worker writes a [`ShardPlan`] into the stage's staging folder: the settings every
//! worker must share and how many parts there are. From it and the parts' markers anyone can
//! tell which shards are complete, running, interrupted or not started (`glassbox inspect`,
//! and later stages refusing an incomplete run).

use crate::lock::shard_running;
use crate::staging::{progress_in, stage_dir};
use crate::{atomic, DataError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The stages (and steps) that run as `--shard i/N` workers.
pub const SHARDED_STAGES: [&str; 4] = ["extract", "gradients", "patch", "attribute"];

/// The plan's file name inside `<run>/.staging/<stage>/`.
pub const PLAN_FILE: &str = "SHARDS.json";

/// One worker's share of a sharded stage: shard `index` of `count` (counted from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    /// Which shard, `0..count`.
    pub index: usize,
    /// How many shards the work is cut into.
    pub count: usize,
}

impl ShardSpec {
    /// Whether part `part` is this shard's work.
    pub fn owns(&self, part: usize) -> bool {
        part % self.count == self.index
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for ShardSpec {
    type Err = String;

    /// `i/N`, e.g. `0/3`, `1/3`, `2/3` for three workers.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let usage = "write it as INDEX/COUNT with 0 ≤ INDEX < COUNT, e.g. 0/3, 1/3 and 2/3 for three workers";
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a shard; {usage}"))?;
        let parse = |v: &str, what: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{s}`: the {what} `{v}` is not a whole number; {usage}"))
        };
        let (index, count) = (parse(i, "index")?, parse(n, "count")?);
        if count == 0 {
            return Err(format!(
                "`{s}`: the count must be at least 1 (one shard is the whole run); {usage}"
            ));
        }
        if index >= count {
            return Err(format!(
                "`{s}`: shards are counted from 0, so the last of {count} is {}/{count}; {usage}",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }
}

/// What every worker of one sharded stage shares, written by the first one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlan {
    /// The stage (`extract`).
    pub stage: String,
    /// Workers the parts are dealt to.
    pub count: usize,
    /// Parts of the stage's work (part `k` belongs to shard `k mod count`).
    pub parts: usize,
    /// The stage's fingerprint (equal to the single-process run's).
    pub fingerprint: String,
    /// The settings the fingerprint was made of, so a worker started differently is told which
    /// setting differs.
    pub params: serde_json::Value,
}

/// Where one shard stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardStatus {
    /// Shard index.
    pub index: usize,
    /// Shard count.
    pub count: usize,
    /// Its parts with a completion marker.
    pub parts_done: usize,
    /// Its parts.
    pub parts: usize,
    /// A worker holds it now.
    pub running: bool,
}

impl ShardStatus {
    /// `complete`, `running`, `interrupted` (some parts done, no worker) or `not started`.
    pub fn state(&self) -> &'static str {
        if self.parts_done == self.parts {
            "complete"
        } else if self.running {
            "running"
        } else if self.parts_done > 0 {
            "interrupted"
        } else {
            "not started"
        }
    }
}

impl ShardPlan {
    /// `<run>/.staging/<stage>/SHARDS.json`.
    pub fn path(root: &Path, stage: &str) -> PathBuf {
        stage_dir(root, stage).join(PLAN_FILE)
    }

    /// The plan of `stage`'s sharded attempt in progress, if there is one.
    pub fn load(root: &Path, stage: &str) -> Result<Option<Self>> {
        let path = Self::path(root, stage);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DataError::Io { path, source: e }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DataError::Run {
                run: root.to_path_buf(),
                message: format!(
                    "{}: unreadable shard plan ({e}); remove `.staging/{stage}` and start the shards again",
                    path.display()
                ),
            })
    }

    /// Writes the plan (atomically: temp + rename).
    pub fn save(&self, root: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| DataError::Run {
            run: root.to_path_buf(),
            message: format!("cannot serialise the shard plan: {e}"),
        })?;
        atomic::write_bytes(&Self::path(root, &self.stage), &bytes)
    }

    /// The completion marker of part `part` in the stage's staging.
    pub fn part_marker(root: &Path, stage: &str, part: usize) -> PathBuf {
        progress_in(&stage_dir(root, stage), stage).join(format!("shard-{part:05}.done"))
    }

    /// The parts with a completion marker.
    pub fn parts_done(&self, root: &Path) -> Vec<bool> {
        (0..self.parts)
            .map(|k| Self::part_marker(root, &self.stage, k).is_file())
            .collect()
    }

    /// Every shard's state, from the part markers and the shard locks.
    pub fn status(&self, root: &Path) -> Vec<ShardStatus> {
        let done = self.parts_done(root);
        (0..self.count)
            .map(|index| {
                let spec = ShardSpec {
                    index,
                    count: self.count,
                };
                let mine: Vec<bool> = (0..self.parts)
                    .filter(|&k| spec.owns(k))
                    .map(|k| done[k])
                    .collect();
                ShardStatus {
                    index,
                    count: self.count,
                    parts_done: mine.iter().filter(|&&d| d).count(),
                    parts: mine.len(),
                    running: shard_running(root, index, self.count),
                }
            })
            .collect()
    }

    /// The shards that have not completed, as `i/N` (empty when every part is done).
    pub fn incomplete(&self, root: &Path) -> Vec<ShardStatus> {
        self.status(root)
            .into_iter()
            .filter(|s| s.parts_done < s.parts)
            .collect()
    }
}

/// The setting names whose values differ between two plans' parameters, each with both values.
/// Nested sections are compared setting by setting (`attribute.steps`), so the refusal names
/// the one that differs rather than the whole section.
pub fn differing_settings(earlier: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    let (Some(_), Some(_)) = (earlier.as_object(), now.as_object()) else {
        return vec![format!("settings (was {earlier}, now {now})")];
    };
    let mut out = Vec::new();
    differing_under("", Some(earlier), Some(now), &mut out);
    out
}

fn differing_under(
    path: &str,
    a: Option<&serde_json::Value>,
    b: Option<&serde_json::Value>,
    out: &mut Vec<String>,
) {
    if a == b {
        return;
    }
    if let (Some(serde_json::Value::Object(a)), Some(serde_json::Value::Object(b))) = (a, b) {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let name = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            differing_under(&name, a.get(k), b.get(k), out);
        }
        return;
    }
    let show = |v: Option<&serde_json::Value>| match v {
        None => "unset".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    out.push(format!(
        "{path} (the shards already started use {}, this one {})",
        show(a),
        show(b)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_settings_name_the_nested_setting() {
        let a = serde_json::json!({"model": "m", "attribute": {"steps": 32, "seed": 0}});
        let b = serde_json::json!({"model": "m", "attribute": {"steps": 16, "seed": 0}});
        assert_eq!(
            differing_settings(&a, &b),
            vec!["attribute.steps (the shards already started use 32, this one 16)"]
        );
        assert!(differing_settings(&a, &a).is_empty());
    }

    #[test]
    fn shards_parse_and_deal_every_part_to_exactly_one_worker() {
        let specs: Vec<ShardSpec> = ["0/3", "1/3", "2/3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        for part in 0..20 {
            assert_eq!(specs.iter().filter(|s| s.owns(part)).count(), 1);
        }
        assert_eq!(specs[2].to_string(), "2/3");
        for (bad, says) in [
            ("3/3", "counted from 0"),
            ("0/0", "at least 1"),
            ("1", "INDEX/COUNT"),
            ("a/2", "not a whole number"),
            ("-1/2", "not a whole number"),
        ] {
            let err = bad.parse::<ShardSpec>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_status_follows_the_part_markers() {
        let dir = tempfile::tempdir().unwrap();
        let plan = ShardPlan {
            stage: "extract".into(),
            count: 2,
            parts: 5,
            fingerprint: "f".into(),
            params: serde_json::json!({}),
        };
        plan.save(dir.path()).unwrap();
        assert_eq!(
            ShardPlan::load(dir.path(), "extract").unwrap(),
            Some(plan.clone())
        );
        for part in [0, 2, 4, 1] {
            let marker = ShardPlan::part_marker(dir.path(), "extract", part);
            atomic::write_bytes(&marker, b"1\n").unwrap();
        }
        let status = plan.status(dir.path());
        assert_eq!(status[0].state(), "complete");
        assert_eq!((status[1].parts_done, status[1].parts), (1, 2));
        assert_eq!(status[1].state(), "interrupted");
        assert_eq!(plan.incomplete(dir.path()).len(), 1);
    }

    #[test]
    fn differing_settings_are_named_with_both_values() {
        let a = serde_json::json!({"model_id": "m", "hooks": ["a"], "dtype": "f32"});
        let b = serde_json::json!({"model_id": "m", "hooks": ["a", "b"], "dtype": "f32"});
        let d = differing_settings(&a, &b);
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("hooks"), "{d:?}");
    }
}
