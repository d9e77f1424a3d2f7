//! Run directories on object storage: `--run s3://bucket/prefix` (also `gs://`, `az://`,
//! `file://`), through the Arrow project's `object_store` client.
//!
//! A remote run is worked on through a local mirror ([`mirror`]): stages read and write a
//! local folder exactly as for a local run, the bulk activation stores stay remote and are
//! read by range, and each committed stage is pushed with its manifest written last. A lease
//! object ([`lease`]) keeps two machines from writing one run at once.

pub mod aws_profile;
pub mod error;
mod keys;
pub mod lease;
pub mod location;
pub mod mirror;
pub mod shared_staging;
pub mod store;
mod tree;

pub use error::{RemoteError, Result};
pub use location::{is_remote, RemoteUrl};
pub use mirror::{Mirror, Pushed};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Mirrors opened by this process, by local root; and the write session of each, if any.
#[derive(Default)]
struct Open {
    mirrors: HashMap<PathBuf, Arc<Mirror>>,
    sessions: HashMap<PathBuf, Arc<Mutex<Session>>>,
}

fn open_mirrors() -> &'static Mutex<Open> {
    static OPEN: OnceLock<Mutex<Open>> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(Open::default()))
}

/// Opens the remote run `url` (connecting lazily) and returns its mirror folder, which the
/// caller uses as the run's root. `cache` overrides [`location::cache_root`].
pub fn open(url: &str, cache: Option<&Path>) -> Result<PathBuf> {
    let url = RemoteUrl::parse(url)?;
    let cache = cache.map_or_else(location::cache_root, Path::to_path_buf);
    let root = url.mirror_dir(&cache);
    let mut open = open_mirrors().lock().unwrap_or_else(|e| e.into_inner());
    if !open.mirrors.contains_key(&root) {
        let store = store::RemoteStore::connect(&url)?;
        open.mirrors
            .insert(root.clone(), Arc::new(Mirror::new(store, root.clone())));
    }
    Ok(root)
}

/// The mirror whose local folder is `root`, if `root` is one.
pub fn mirror_of(root: &Path) -> Option<Arc<Mirror>> {
    let open = open_mirrors().lock().unwrap_or_else(|e| e.into_inner());
    open.mirrors.get(root).cloned()
}

/// A writer's hold on a remote run: the lease, and what the last pull or push saw.
pub struct Session {
    mirror: Arc<Mirror>,
    pulled: mirror::Pulled,
    _lease: lease::Lease,
}

/// For a mirror folder: takes the run's lease and pulls, so the stage sees the bucket's
/// current run. `None` for a local run. The caller holds the mirror's local lock.
pub fn begin_write(root: &Path, command: &str) -> Result<Option<SessionGuard>> {
    let Some(mirror) = mirror_of(root) else {
        return Ok(None);
    };
    let lease = lease::Lease::acquire(mirror.store.clone(), command)?;
    let pulled = mirror.pull()?;
    let session = Arc::new(Mutex::new(Session {
        mirror,
        pulled,
        _lease: lease,
    }));
    let mut open = open_mirrors().lock().unwrap_or_else(|e| e.into_inner());
    open.sessions.insert(root.to_path_buf(), session);
    Ok(Some(SessionGuard {
        root: root.to_path_buf(),
    }))
}

/// For a mirror folder before it is read (`inspect`, a stage's checks): pulls, with the
/// status of each sharded stage in progress (so its shards can be named). `false`
/// for a local run.
pub fn refresh(root: &Path) -> Result<bool> {
    match mirror_of(root) {
        Some(mirror) => {
            mirror.pull()?;
            mirror.pull_staging_statuses()?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// For a mirror folder whose staging of `stage` was just discarded by a new attempt with
/// `fingerprint`: see [`Mirror::discard_staging`] (a no-op for a local run).
pub fn discard_staging(root: &Path, stage: &str, fingerprint: &str) -> Result<()> {
    match mirror_of(root) {
        Some(mirror) => mirror.discard_staging(stage, fingerprint),
        None => Ok(()),
    }
}

/// Pushes what a commit changed in `root`, if it is a mirror with a write session: called by
/// the stage runner after each commit. `None` for a local run.
pub fn push_commit(root: &Path) -> Result<Option<(String, Pushed)>> {
    let session = {
        let open = open_mirrors().lock().unwrap_or_else(|e| e.into_inner());
        open.sessions.get(root).cloned()
    };
    let Some(session) = session else {
        return Ok(None);
    };
    let mut session = session.lock().unwrap_or_else(|e| e.into_inner());
    let Session { mirror, pulled, .. } = &mut *session;
    let pushed = mirror.push(pulled)?;
    Ok(Some((mirror.url().to_owned(), pushed)))
}

/// Ends a write session when dropped: the lease is released (what was committed has been
/// pushed commit by commit).
pub struct SessionGuard {
    root: PathBuf,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut open = open_mirrors().lock().unwrap_or_else(|e| e.into_inner());
        open.sessions.remove(&self.root);
    }
}
