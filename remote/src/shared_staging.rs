//! Shard workers of one remote run, on any number of machines, share the extraction's staging
//! through the bucket: `<run>/.staging/<stage>/` there holds what a local run's staging folder
//! holds (the plan, the fingerprint, each part's marker, the parts, the tables of shard 0).
//! A worker pulls it into its mirror's staging before it starts (so it sees the plan and the
//! parts already done), publishes the plan with a conditional put (the first worker's wins),
//! and pushes its parts and markers when they are written. The worker that finds every marker
//! present takes the commit lease and commits as on a local run: the coverage check reads the
//! parts' footers by range, and the push after the commit copies the staged parts to their
//! final keys inside the bucket (server-side) before the manifest is written, then removes the
//! staging.

use crate::error::Result;
use crate::mirror::{is_bulk_part, Mirror};
use crate::tree;
use std::path::PathBuf;

pub use crate::keys::staging_prefix;

/// The plan's run-relative key.
fn plan_rel(stage: &str) -> String {
    format!(
        "{}{}",
        staging_prefix(stage),
        glassbox_data::shards::PLAN_FILE
    )
}

impl Mirror {
    /// Brings the bucket's staging of `stage` into the mirror's: small files downloaded
    /// (overwriting: the bucket's plan and markers are the shared truth), parts registered for
    /// ranged reads, and local copies of parts the bucket already holds removed.
    pub fn pull_staging(&self, stage: &str) -> Result<()> {
        self.pull_staging_files(stage)
    }

    /// Only the plans, fingerprints and part markers of every stage's staging in the bucket
    /// (one listing): what `inspect` and a later stage's refusal need to name the shards.
    /// Nothing is registered for reading, so a stage that writes a staging joins it only
    /// through [`pull_staging`](Self::pull_staging) (a worker) or when its fingerprint is the
    /// bucket's.
    pub fn pull_staging_statuses(&self) -> Result<()> {
        let prefix = format!("{}/", glassbox_data::run::STAGING_DIR);
        let wanted: Vec<(String, PathBuf)> = self
            .store
            .list_under(&prefix)?
            .into_iter()
            .filter(|item| is_status_file(&item.rel))
            .map(|item| {
                let local = self.root().join(&item.rel);
                (item.rel, local)
            })
            .collect();
        self.store.download_all(&wanted)?;
        Ok(())
    }

    fn pull_staging_files(&self, stage: &str) -> Result<()> {
        let prefix = staging_prefix(stage);
        self.touch_staging(stage);
        let listed = self.store.list_under(&prefix)?;
        let mut wanted = Vec::new();
        let mut parts = Vec::new();
        for item in &listed {
            let local = self.root().join(&item.rel);
            if is_bulk_part(&item.rel) {
                if local.is_file() {
                    std::fs::remove_file(&local).map_err(crate::mirror::io(&local))?;
                }
                if let Some(dir) = local.parent() {
                    std::fs::create_dir_all(dir).map_err(crate::mirror::io(dir))?;
                }
                parts.push((item.rel.clone(), (item.size, item.e_tag.clone())));
            } else if tree::stamp(&local).is_none_or(|s| s.len != item.size)
                || is_status_file(&item.rel)
            {
                wanted.push((item.rel.clone(), local));
            }
        }
        self.store.download_all(&wanted)?;
        self.add_parts(parts);
        Ok(())
    }

    /// Uploads what the mirror's staging of `stage` holds and the bucket lacks (this worker's
    /// parts, markers, tables, fingerprint); uploaded parts leave the mirror. Returns how many
    /// files went up.
    pub fn push_staging(&self, stage: &str) -> Result<usize> {
        let prefix = staging_prefix(stage);
        self.touch_staging(stage);
        let remote: std::collections::BTreeMap<String, u64> = self
            .store
            .list_under(&prefix)?
            .into_iter()
            .map(|l| (l.rel, l.size))
            .collect();
        let dir = self.root().join(&prefix);
        let mut jobs: Vec<(String, PathBuf)> = Vec::new();
        tree::walk(&dir, &dir, &mut |rel, path, is_dir| {
            if is_dir {
                return;
            }
            let rel = format!("{prefix}{rel}");
            let name = rel.rsplit('/').next().unwrap_or_default();
            // Temp files of a write in progress, and the plan (published by `publish_plan`).
            if name.starts_with('.') || rel == plan_rel(stage) {
                return;
            }
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if remote.get(&rel) != Some(&size) {
                jobs.push((rel, path.to_path_buf()));
            }
        })
        .map_err(crate::mirror::io(&dir))?;
        // Markers after the parts they vouch for, so a marker in the bucket means its part is.
        jobs.sort_by_key(|(rel, _)| rel.contains("/_progress/"));
        let (markers, data): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .partition(|(rel, _)| rel.contains("/_progress/"));
        let tags = self.store.upload_all(&data)?;
        let mut parts = Vec::new();
        for ((rel, path), e_tag) in data.iter().zip(tags) {
            if is_bulk_part(rel) {
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(path).map_err(crate::mirror::io(path))?;
                parts.push((rel.clone(), (size, e_tag)));
            }
        }
        self.add_parts(parts);
        self.store.upload_all(&markers)?;
        Ok(data.len() + markers.len())
    }

    /// Records that this process works on the bucket's staging of `stage`.
    fn touch_staging(&self, stage: &str) {
        let mut touched = self.stagings.lock().unwrap_or_else(|e| e.into_inner());
        touched.insert(stage.to_owned());
    }

    /// A new attempt of `stage` with `fingerprint` discarded the local staging: the staged parts
    /// this process knew of are forgotten (none may be moved into the run at a commit), and the
    /// bucket's staging goes too when it holds an attempt with another fingerprint — its
    /// markers must not vouch for parts of this one. (The bucket's staging of this very
    /// attempt is left: other workers may be writing it.)
    pub fn discard_staging(&self, stage: &str, fingerprint: &str) -> Result<()> {
        let prefix = staging_prefix(stage);
        self.retain_parts(|rel| !rel.starts_with(&prefix));
        match self.staged_fingerprint(stage)? {
            Some(theirs) if theirs != fingerprint => {
                let staged: Vec<String> = self
                    .store
                    .list_under(&prefix)?
                    .into_iter()
                    .map(|l| l.rel)
                    .collect();
                self.store.delete_all(&staged)
            }
            _ => Ok(()),
        }
    }

    /// The shards `(index, count)` whose lease object is in the bucket, but for leases left by
    /// dead processes of this host.
    pub fn leased_shards(&self) -> Result<Vec<(usize, usize)>> {
        let mut held = Vec::new();
        for listed in self.store.list()? {
            let Some((index, count)) = listed
                .rel
                .strip_prefix(".glassbox.shard-")
                .and_then(|r| r.strip_suffix(".lock"))
                .and_then(|r| r.split_once("-of-"))
                .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
            else {
                continue;
            };
            let stale = self
                .store
                .get(&listed.rel)?
                .is_some_and(|b| crate::lease::is_stale_here(&b));
            if !stale {
                held.push((index, count));
            }
        }
        Ok(held)
    }

    /// The fingerprint of the attempt staged in the bucket for `stage`, if any.
    pub fn staged_fingerprint(&self, stage: &str) -> Result<Option<String>> {
        let rel = format!("{}FINGERPRINT", staging_prefix(stage));
        Ok(self
            .store
            .get(&rel)?
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned()))
    }

    /// Publishes `stage`'s plan (with its fingerprint file first) unless the bucket has one;
    /// returns the bucket's plan when another worker's was there first.
    pub fn publish_plan(&self, stage: &str, plan: &[u8]) -> Result<Option<bytes::Bytes>> {
        let fingerprint = format!("{}FINGERPRINT", staging_prefix(stage));
        let local = self.root().join(&fingerprint);
        if local.is_file() {
            self.store.upload_all(&[(fingerprint, local)])?;
        }
        if self.store.put_if_absent(&plan_rel(stage), plan.to_vec())? {
            return Ok(None);
        }
        self.store.get(&plan_rel(stage))
    }
}

/// The small files that say where a sharded attempt stands: its plan, its fingerprint and its
/// part markers (always re-downloaded: other workers change them).
fn is_status_file(rel: &str) -> bool {
    rel.contains("/_progress/")
        || rel.ends_with(glassbox_data::shards::PLAN_FILE)
        || rel.ends_with("FINGERPRINT")
}
