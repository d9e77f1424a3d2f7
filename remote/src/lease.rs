//! The writer's lease on a remote run: an object created only if absent (a conditional put),
//! so two machines cannot write one run at once. The local `flock` (data::lock) still guards
//! the mirror folder on each machine.

use crate::error::{RemoteError, Result};
use crate::store::RemoteStore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The lease object, beside the run's files (a dot name: never mirrored).
pub const LEASE: &str = ".glassbox.lock";

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    host: String,
    pid: u32,
    command: String,
    since: String,
}

/// A held lease; deleted when dropped.
pub struct Lease {
    store: Arc<RemoteStore>,
    key: String,
}

impl Lease {
    /// Takes the lease, or says who holds it. A lease left by a dead process of this host is
    /// taken over; one from another host must be cleared by hand (the error says how).
    pub fn acquire(store: Arc<RemoteStore>, command: &str) -> Result<Self> {
        Self::acquire_key(store, LEASE, command)
    }

    /// [`acquire`](Self::acquire) for the lease object `key` (a shard's, or the commit's).
    pub fn acquire_key(store: Arc<RemoteStore>, key: &str, command: &str) -> Result<Self> {
        let me = Holder {
            host: hostname(),
            pid: std::process::id(),
            command: command.to_owned(),
            since: glassbox_data::manifest::now_rfc3339(),
        };
        let bytes = serde_json::to_vec_pretty(&me).unwrap_or_default();
        for _ in 0..3 {
            if store.put_if_absent(key, bytes.clone())? {
                return Ok(Self {
                    store,
                    key: key.to_owned(),
                });
            }
            let Some(current) = store.get(key)? else {
                continue; // released between our two requests
            };
            let holder: Option<Holder> = serde_json::from_slice(&current).ok();
            match holder {
                Some(h) if h.host == me.host && !process_alive(h.pid) => {
                    store.delete_all(&[key.to_owned()])?;
                }
                Some(h) => {
                    return Err(RemoteError::Busy {
                        url: store.url.url.clone(),
                        holder: format!(
                            "pid {} on {} (`{}`, since {})",
                            h.pid, h.host, h.command, h.since
                        ),
                        lock: store.url.join(key),
                    })
                }
                None => {
                    return Err(RemoteError::Busy {
                        url: store.url.url.clone(),
                        holder: "an unreadable lease".into(),
                        lock: store.url.join(key),
                    })
                }
            }
        }
        Err(RemoteError::Busy {
            url: store.url.url.clone(),
            holder: "writers that keep taking the lease".into(),
            lock: store.url.join(key),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.store.delete_all(std::slice::from_ref(&self.key));
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether a process of this host still runs (Linux: its /proc entry exists). Where that
/// cannot be told, it is assumed alive, so a lease is never taken from a live writer.
fn process_alive(pid: u32) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether a lease object's holder is a process of this host that no longer runs (a killed
/// worker's lease: taken over by the next one, and not shown as running).
pub(crate) fn is_stale_here(lease: &[u8]) -> bool {
    serde_json::from_slice::<Holder>(lease)
        .is_ok_and(|h| h.host == hostname() && !process_alive(h.pid))
}
