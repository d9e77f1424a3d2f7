//! The local mirror of a run on object storage.
//!
//! Stages work on a local folder exactly as on a local run; this module keeps that folder and
//! the bucket in step:
//! - [`Mirror::pull`] makes the folder equal to the bucket: small files (manifest, config,
//!   examples, probe and TCAV tables, dictionaries, report) are downloaded when they changed;
//!   the bulk stores' parts (`activations/`, `pooled/`, `gradients/`) are *not* downloaded but
//!   registered with the store's readers, which fetch them in ranged blocks as they stream.
//! - [`Mirror::push`] sends what a committed stage changed: the manifest without the changed
//!   stages first (so no reader trusts half-uploaded outputs), then deletions and uploads, then
//!   the new manifest last — the marker that makes the stage's outputs visible together.

use crate::error::{RemoteError, Result};
use crate::store::{Listed, RemoteStore};
use crate::tree::{self, Snapshot};
use glassbox_data::remote_parts::{PartIndex, RangeSource};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Local-only bookkeeping inside the mirror (a dot name: never synced, never read by stages).
const STATE_FILE: &str = ".remote-state.json";
/// The manifest: uploaded last, it is what makes a stage's outputs count as complete.
const MANIFEST: &str = "manifest.json";

/// Top-level folders whose `part-*.parquet` files stay remote and are read by range.
const BULK_ROOTS: [&str; 3] = ["activations", "pooled", "gradients"];

/// Whether `rel` is a bulk part read by range rather than downloaded.
pub fn is_bulk_part(rel: &str) -> bool {
    // A shared staging's parts (`.staging/<stage>/activations/…`) are bulk parts too.
    let staging = format!("{}/", glassbox_data::run::STAGING_DIR);
    let rel = match rel.strip_prefix(&staging) {
        Some(rest) => rest.split_once('/').map_or("", |(_, r)| r),
        None => rel,
    };
    let name = rel.rsplit('/').next().unwrap_or_default();
    let root = rel.split('/').next().unwrap_or_default();
    BULK_ROOTS.contains(&root) && name.starts_with("part-") && name.ends_with(".parquet")
}

/// What the mirror knows about each downloaded file, to skip unchanged ones next time.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    url: String,
    files: BTreeMap<String, Synced>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Synced {
    size: u64,
    e_tag: Option<String>,
    /// The local file's stamp right after it was written, to notice local edits.
    stamp: tree::Stamp,
}

/// A run on object storage and its local mirror folder.
pub struct Mirror {
    pub(crate) store: Arc<RemoteStore>,
    root: PathBuf,
    parts: Arc<BulkParts>,
    /// Stages whose bucket staging this process pulled whole or pushed to: when their local
    /// staging is gone at a push (committed), the bucket's goes too.
    pub(crate) stagings: std::sync::Mutex<BTreeSet<String>>,
}

/// What a pull saw, for the push that follows the stage.
pub struct Pulled {
    before: Snapshot,
    /// The remote manifest as pulled (None: the run had none).
    manifest: Option<serde_json::Value>,
}

/// What a push sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub uploaded: usize,
    /// Staged parts copied to their final keys inside the bucket.
    pub copied: usize,
    pub deleted: usize,
    pub bytes: u64,
}

impl Mirror {
    pub fn new(store: RemoteStore, root: PathBuf) -> Self {
        let store = Arc::new(store);
        let parts = Arc::new(BulkParts {
            root: root.clone(),
            store: store.clone(),
            parts: RwLock::new(BTreeMap::new()),
        });
        glassbox_data::remote_parts::register(&root, parts.clone());
        Self {
            store,
            root,
            parts,
            stagings: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    /// The local folder stages work on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The run's URL.
    pub fn url(&self) -> &str {
        &self.store.url.url
    }

    /// Makes the mirror equal to the bucket (see the module docs). Call with the mirror's
    /// local lock held.
    pub fn pull(&self) -> Result<Pulled> {
        let listed = self.store.list()?;
        let mut state = self.load_state();
        if state.url != self.url() {
            state = State {
                url: self.url().to_owned(),
                ..State::default()
            };
        }
        let remote: BTreeMap<&str, &Listed> = listed
            .iter()
            .filter(|l| !tree::is_private(&l.rel))
            .map(|l| (l.rel.as_str(), l))
            .collect();
        let mut bulk = BTreeMap::new();
        let mut wanted = Vec::new();
        for (rel, item) in &remote {
            let local = self.root.join(rel);
            if is_bulk_part(rel) {
                bulk.insert(rel.to_string(), (item.size, item.e_tag.clone()));
                // A local copy (left by an interrupted push) would shadow the remote part.
                if local.is_file() {
                    std::fs::remove_file(&local).map_err(io(&local))?;
                }
                if let Some(dir) = local.parent() {
                    std::fs::create_dir_all(dir).map_err(io(dir))?;
                }
                continue;
            }
            let unchanged = state.files.get(*rel).is_some_and(|s| {
                s.size == item.size
                    && s.e_tag == item.e_tag
                    && tree::stamp(&local).as_ref() == Some(&s.stamp)
            });
            if !unchanged {
                wanted.push((rel.to_string(), local));
            }
        }
        let tags = self.store.download_all(&wanted)?;
        for ((rel, local), e_tag) in wanted.iter().zip(tags) {
            let stamp = tree::stamp(local).ok_or_else(|| RemoteError::Io {
                path: local.clone(),
                source: std::io::Error::other("vanished right after download"),
            })?;
            let size = remote[rel.as_str()].size;
            let e_tag = e_tag.or_else(|| remote[rel.as_str()].e_tag.clone());
            state
                .files
                .insert(rel.clone(), Synced { size, e_tag, stamp });
        }
        state
            .files
            .retain(|rel, _| remote.contains_key(rel.as_str()));
        // What the bucket does not have goes (a stale copy of a run rewritten elsewhere).
        let keep: BTreeSet<String> = remote.keys().map(|r| r.to_string()).collect();
        tree::remove_others(&self.root, &keep).map_err(io(&self.root))?;
        {
            // Parts of a shared staging stay known (`pull_staging` registered them).
            let mut parts = self.parts.parts.write().unwrap_or_else(|e| e.into_inner());
            parts.retain(|rel, _| tree::is_private(rel));
            parts.extend(bulk);
        }
        self.save_state(&state)?;
        let manifest = read_json(&self.root.join(MANIFEST));
        Ok(Pulled {
            before: tree::snapshot(&self.root, &self.parts.dirs()).map_err(io(&self.root))?,
            manifest,
        })
    }

    /// Sends what changed in the mirror since `pulled` (see the module docs) and returns the
    /// new baseline for the next push.
    pub fn push(&self, pulled: &mut Pulled) -> Result<Pushed> {
        let after = tree::snapshot(&self.root, &self.parts.dirs()).map_err(io(&self.root))?;
        let changes = pulled.before.changes(&after, &self.parts.list());
        // Parts a sharded stage's workers staged in the bucket, now committed: copied to their
        // final keys inside the bucket.
        let (moves, committed_stagings) = self.committed_staged_parts();
        if changes.is_empty() && moves.is_empty() && committed_stagings.is_empty() {
            return Ok(Pushed::default());
        }
        let manifest_changed = changes.upload.iter().any(|r| r == MANIFEST);
        let new_manifest = read_json(&self.root.join(MANIFEST));
        // 1. Unmark the stages whose records change, so nothing trusts the outputs mid-way.
        if manifest_changed {
            if let Some(old) = &pulled.manifest {
                let interim = without_changed_stages(old, new_manifest.as_ref());
                if &interim != old {
                    self.store.put(
                        MANIFEST,
                        serde_json::to_vec_pretty(&interim).unwrap_or_default(),
                    )?;
                }
            }
        }
        // 2. Deletions and uploads; 3. the manifest last.
        let mut kept: BTreeSet<&String> = changes.upload.iter().collect();
        kept.extend(moves.iter().map(|(_, to)| to));
        let deletions: Vec<String> = changes
            .delete
            .iter()
            .filter(|r| !kept.contains(r))
            .cloned()
            .collect();
        self.store.delete_all(&deletions)?;
        self.store.copy_all(&moves)?;
        let jobs: Vec<(String, PathBuf)> = changes
            .upload
            .iter()
            .filter(|r| r.as_str() != MANIFEST)
            .map(|r| (r.clone(), self.root.join(r)))
            .collect();
        let bytes: u64 = jobs
            .iter()
            .filter_map(|(_, p)| std::fs::metadata(p).ok().map(|m| m.len()))
            .sum();
        let mut tags = self.store.upload_all(&jobs)?;
        let mut jobs = jobs;
        if manifest_changed {
            let path = self.root.join(MANIFEST);
            tags.extend(
                self.store
                    .upload_all(&[(MANIFEST.to_owned(), path.clone())])?,
            );
            jobs.push((MANIFEST.to_owned(), path));
        }
        // The committed stagings go from the bucket only now: a push cut short before the
        // manifest leaves them for the stage to be committed again.
        if !committed_stagings.is_empty() {
            let prefixes: Vec<String> = committed_stagings
                .iter()
                .map(|s| crate::keys::staging_prefix(s))
                .collect();
            for prefix in &prefixes {
                let staged: Vec<String> = self
                    .store
                    .list_under(prefix)?
                    .into_iter()
                    .map(|l| l.rel)
                    .collect();
                self.store.delete_all(&staged)?;
            }
            let mut touched = self.stagings.lock().unwrap_or_else(|e| e.into_inner());
            touched.retain(|s| !committed_stagings.contains(s));
        }
        // Uploaded bulk parts become remote-only; other files are recorded as in sync.
        let mut state = self.load_state();
        let mut parts = self.parts.list();
        for rel in &deletions {
            parts.remove(rel);
            state.files.remove(rel);
        }
        for (from, to) in &moves {
            if let Some(found) = parts.remove(from) {
                parts.insert(to.clone(), found);
            }
        }
        for ((rel, path), e_tag) in jobs.iter().zip(tags) {
            let size = std::fs::metadata(path).map(|m| m.len()).map_err(io(path))?;
            if is_bulk_part(rel) {
                std::fs::remove_file(path).map_err(io(path))?;
                parts.insert(rel.clone(), (size, e_tag));
            } else if let Some(stamp) = tree::stamp(path) {
                state
                    .files
                    .insert(rel.clone(), Synced { size, e_tag, stamp });
            }
        }
        *self.parts.parts.write().unwrap_or_else(|e| e.into_inner()) = parts;
        self.save_state(&state)?;
        pulled.before = tree::snapshot(&self.root, &self.parts.dirs()).map_err(io(&self.root))?;
        pulled.manifest = new_manifest;
        Ok(Pushed {
            uploaded: jobs.len(),
            copied: moves.len(),
            deleted: deletions.len(),
            bytes,
        })
    }

    /// Keeps only the registered remote parts whose path passes `keep`.
    pub(crate) fn retain_parts(&self, keep: impl Fn(&str) -> bool) {
        let mut known = self.parts.parts.write().unwrap_or_else(|e| e.into_inner());
        known.retain(|rel, _| keep(rel));
    }

    /// Registers remote parts for ranged reads.
    pub(crate) fn add_parts(&self, parts: Vec<(String, (u64, Option<String>))>) {
        let mut known = self.parts.parts.write().unwrap_or_else(|e| e.into_inner());
        known.extend(parts);
    }

    /// Takes the lease object `key` of this run (see [`crate::lease`]).
    pub fn lease(&self, key: &str, command: &str) -> Result<crate::lease::Lease> {
        crate::lease::Lease::acquire_key(self.store.clone(), key, command)
    }

    /// The staged parts of stages whose staging folder is gone from the mirror because the stage
    /// committed: each with its final key (the path inside the staging).
    fn committed_staged_parts(&self) -> (Vec<(String, String)>, BTreeSet<String>) {
        let staging = format!("{}/", glassbox_data::run::STAGING_DIR);
        let mut moves = Vec::new();
        let mut stages = BTreeSet::new();
        for rel in self.parts.list().into_keys() {
            let Some((stage, rest)) = rel.strip_prefix(&staging).and_then(|r| r.split_once('/'))
            else {
                continue;
            };
            let committed = !self.root.join(&staging).join(stage).exists();
            let target_dir = rest.rsplit_once('/').map_or("", |(d, _)| d);
            if committed && self.root.join(target_dir).is_dir() {
                moves.push((rel.clone(), rest.to_owned()));
                stages.insert(stage.to_owned());
            }
        }
        // Stagings without bulk parts (fragments, markers, small outputs) go the same way.
        let touched = self.stagings.lock().unwrap_or_else(|e| e.into_inner());
        stages.extend(
            touched
                .iter()
                .filter(|stage| !self.root.join(&staging).join(stage).exists())
                .cloned(),
        );
        (moves, stages)
    }

    fn load_state(&self) -> State {
        read_json(&self.root.join(STATE_FILE))
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }

    fn save_state(&self, state: &State) -> Result<()> {
        let bytes = serde_json::to_vec(state).unwrap_or_default();
        glassbox_data::atomic::write_bytes(&self.root.join(STATE_FILE), &bytes)?;
        Ok(())
    }
}

/// The old manifest less every stage whose record is different (or gone) in the new one.
fn without_changed_stages(
    old: &serde_json::Value,
    new: Option<&serde_json::Value>,
) -> serde_json::Value {
    let mut interim = old.clone();
    let new_stages = new.and_then(|n| n.get("stages"));
    if let Some(stages) = interim.get_mut("stages").and_then(|s| s.as_object_mut()) {
        stages.retain(|name, record| new_stages.and_then(|n| n.get(name)) == Some(record));
    }
    interim
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RemoteError + '_ {
    move |source| RemoteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The bulk parts of a mirror that stay remote, as the store's readers see them.
struct BulkParts {
    root: PathBuf,
    store: Arc<RemoteStore>,
    /// Run-relative path → size and e-tag.
    parts: RwLock<BTreeMap<String, (u64, Option<String>)>>,
}

impl BulkParts {
    fn list(&self) -> BTreeMap<String, (u64, Option<String>)> {
        self.parts.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Folders holding remote parts (run-relative).
    fn dirs(&self) -> BTreeSet<String> {
        self.list()
            .keys()
            .filter_map(|rel| rel.rsplit_once('/').map(|(d, _)| d.to_owned()))
            .collect()
    }

    fn rel(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        Some(
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }
}

impl PartIndex for BulkParts {
    fn parts_in(&self, dir: &Path) -> Vec<PathBuf> {
        let Some(rel_dir) = self.rel(dir) else {
            return Vec::new();
        };
        self.list()
            .keys()
            .filter(|rel| rel.rsplit_once('/').is_some_and(|(d, _)| d == rel_dir))
            .map(|rel| self.root.join(rel))
            .collect()
    }

    fn open(&self, path: &Path) -> Option<std::io::Result<Arc<dyn RangeSource>>> {
        let rel = self.rel(path)?;
        let (size, e_tag) = self.list().get(&rel)?.clone();
        Some(Ok(Arc::new(RemotePart {
            store: self.store.clone(),
            rel,
            size,
            e_tag,
        })))
    }
}

/// One remote part, read by range.
struct RemotePart {
    store: Arc<RemoteStore>,
    rel: String,
    size: u64,
    e_tag: Option<String>,
}

impl RangeSource for RemotePart {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_range(&self, start: u64, end: u64) -> std::io::Result<bytes::Bytes> {
        self.store
            .get_range(&self.rel, start, end)
            .map_err(std::io::Error::other)
    }

    fn location(&self) -> String {
        self.store.url.join(&self.rel)
    }

    fn cache_key(&self) -> String {
        format!(
            "{}#{}#{}",
            self.location(),
            self.size,
            self.e_tag.as_deref().unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bulk_store_parts_stay_remote() {
        assert!(is_bulk_part(
            "activations/hook=blocks.0.hook_resid_post/part-00000.parquet"
        ));
        assert!(is_bulk_part("pooled/hook=x/pool=mean/part-00003.parquet"));
        assert!(is_bulk_part("gradients/target=t/hook=x/part-00000.parquet"));
        assert!(!is_bulk_part("examples.parquet"));
        assert!(!is_bulk_part(
            "attributions/method=saliency/target=t/part-0.parquet"
        ));
    }

    #[test]
    fn the_interim_manifest_drops_changed_and_removed_stages() {
        let old = serde_json::json!({"stages": {"extract": {"f": 1}, "probe": {"f": 2}, "report": {"f": 3}}});
        let new = serde_json::json!({"stages": {"extract": {"f": 1}, "probe": {"f": 9}}});
        let interim = without_changed_stages(&old, Some(&new));
        assert_eq!(
            interim,
            serde_json::json!({"stages": {"extract": {"f": 1}}})
        );
    }
}
