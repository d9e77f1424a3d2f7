//! Activation parts that live on object storage, read with ranged requests.
//!
//! A run on object storage (`--run s3://…`) is worked on through a local mirror folder that
//! holds everything but the bulk stores (`activations/`, `pooled/`, `gradients/` parts): those
//! stay remote and are read in blocks as a stage streams them, so probing or training a
//! dictionary on a remote run never copies it whole. The object-store client lives in the
//! `glassbox-remote` crate; it registers each mirror here as a [`PartIndex`], and the store's
//! readers ([`list_parts`](crate::run::list_parts), [`PartFile::open`]) consult it, so every
//! stage reads a remote run through the same code as a local one.

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// One remote object, readable by byte range.
pub trait RangeSource: Send + Sync {
    /// The object's size in bytes.
    fn size(&self) -> u64;
    /// Bytes `start..end` (`end` ≤ [`size`](Self::size)).
    fn read_range(&self, start: u64, end: u64) -> std::io::Result<Bytes>;
    /// Where the object is, for error messages (`s3://bucket/run/activations/…`).
    fn location(&self) -> String;
    /// What names this version of the object in the process-wide block cache: the location
    /// plus whatever changes when it is rewritten (an e-tag).
    fn cache_key(&self) -> String {
        self.location()
    }
}

/// The remote parts of one mirrored run.
pub trait PartIndex: Send + Sync {
    /// The remote-only `part-*.parquet` files directly inside `dir` (a path in the mirror).
    fn parts_in(&self, dir: &Path) -> Vec<PathBuf>;
    /// Opens a remote part by its mirror path; `None` when it is not one.
    fn open(&self, path: &Path) -> Option<std::io::Result<Arc<dyn RangeSource>>>;
}

type Registry = RwLock<Vec<(PathBuf, Arc<dyn PartIndex>)>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(Vec::new()))
}

/// Makes the remote parts of the mirror at `root` visible to the store's readers (replacing
/// an earlier registration of the same root).
pub fn register(root: &Path, index: Arc<dyn PartIndex>) {
    let mut entries = registry().write().unwrap_or_else(|e| e.into_inner());
    entries.retain(|(r, _)| r != root);
    entries.push((root.to_path_buf(), index));
}

/// The index whose mirror contains `path`, if any.
fn index_for(path: &Path) -> Option<Arc<dyn PartIndex>> {
    let entries = registry().read().unwrap_or_else(|e| e.into_inner());
    entries
        .iter()
        .find(|(root, _)| path.starts_with(root))
        .map(|(_, index)| index.clone())
}

/// Remote parts directly inside `dir` (empty for a local run).
pub fn remote_parts_in(dir: &Path) -> Vec<PathBuf> {
    index_for(dir).map(|i| i.parts_in(dir)).unwrap_or_default()
}

/// Whether `path` names a remote part (so `path.exists()` is false but the part is there).
pub fn is_remote_part(path: &Path) -> bool {
    remote_parts_in(path.parent().unwrap_or(Path::new("")))
        .iter()
        .any(|p| p == path)
}

/// Block size of remote reads: large enough that streaming a part costs few requests (one per
/// 8 MiB), small enough that a footer read does not fetch the whole file.
const BLOCK: u64 = 8 << 20;

/// Bytes of remote blocks kept in memory, process-wide (`GLASSBOX_REMOTE_MEMORY_MB`, default
/// 512): stages that stream a hook several times (SAE training's epochs, one probe per label)
/// fetch each block once when the hook fits, and the oldest blocks go first when it does not.
fn memory_budget() -> u64 {
    static BUDGET: OnceLock<u64> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::env::var("GLASSBOX_REMOTE_MEMORY_MB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(512)
            << 20
    })
}

/// A least-recently-used cache of remote blocks, keyed by object location and block index.
#[derive(Default)]
struct BlockCache {
    blocks: std::collections::HashMap<(String, u64), (Bytes, u64)>,
    by_age: std::collections::BTreeMap<u64, (String, u64)>,
    tick: u64,
    bytes: u64,
}

impl BlockCache {
    fn get(&mut self, key: &(String, u64)) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        let (bytes, age) = self.blocks.get_mut(key)?;
        self.by_age.remove(age);
        *age = tick;
        self.by_age.insert(tick, key.clone());
        Some(bytes.clone())
    }

    fn insert(&mut self, key: (String, u64), bytes: Bytes, budget: u64) {
        self.tick += 1;
        self.bytes += bytes.len() as u64;
        if let Some((old, age)) = self.blocks.insert(key.clone(), (bytes, self.tick)) {
            self.bytes -= old.len() as u64;
            self.by_age.remove(&age);
        }
        self.by_age.insert(self.tick, key);
        while self.bytes > budget {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((gone, _)) = self.blocks.remove(&oldest) {
                self.bytes -= gone.len() as u64;
            }
        }
    }
}

fn block_cache() -> &'static Mutex<BlockCache> {
    static CACHE: OnceLock<Mutex<BlockCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(BlockCache::default()))
}

/// A remote part read through the process-wide block cache.
struct CachedRemote {
    source: Arc<dyn RangeSource>,
    location: String,
    cache_key: String,
}

impl CachedRemote {
    fn block(&self, index: u64) -> std::io::Result<Bytes> {
        let key = (self.cache_key.clone(), index);
        if let Some(hit) = block_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(hit);
        }
        let start = index * BLOCK;
        let end = (start + BLOCK).min(self.source.size());
        let bytes = self.source.read_range(start, end)?;
        if bytes.len() as u64 != end - start {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: asked for bytes {start}..{end}, got {}",
                    self.location,
                    bytes.len()
                ),
            ));
        }
        block_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, bytes.clone(), memory_budget());
        Ok(bytes)
    }

    /// Bytes `start..start + length`, assembled from blocks (a range inside one block is a
    /// slice of it, no copy).
    fn range(&self, start: u64, length: usize) -> std::io::Result<Bytes> {
        let end = start + length as u64;
        if end > self.source.size() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: bytes {start}..{end} lie past its end ({})",
                    self.location,
                    self.source.size()
                ),
            ));
        }
        if length == 0 {
            return Ok(Bytes::new());
        }
        let (first, last) = (start / BLOCK, (end - 1) / BLOCK);
        if first == last {
            let block = self.block(first)?;
            let offset = (start - first * BLOCK) as usize;
            return Ok(block.slice(offset..offset + length));
        }
        // Wider than a block (a large column chunk): one request for the whole range.
        self.source.read_range(start, end)
    }
}

/// A part file to read: on local disk, or remote behind ranged reads. Implements Parquet's
/// `ChunkReader`, so every reader of the store opens parts through it.
pub enum PartFile {
    Local(std::fs::File),
    Remote(Arc<CachedRemoteHandle>),
}

/// Shared state of an open remote part (public only as the payload of [`PartFile::Remote`]).
pub struct CachedRemoteHandle(CachedRemote);

impl PartFile {
    /// Opens `path`: the local file when it exists, else the remote part of a registered
    /// mirror.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        match std::fs::File::open(path) {
            Ok(file) => Ok(Self::Local(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match index_for(path).and_then(|i| i.open(path)) {
                    Some(source) => {
                        let source = source?;
                        Ok(Self::Remote(Arc::new(CachedRemoteHandle(CachedRemote {
                            location: source.location(),
                            cache_key: source.cache_key(),
                            source,
                        }))))
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl parquet::file::reader::Length for PartFile {
    fn len(&self) -> u64 {
        match self {
            Self::Local(file) => parquet::file::reader::Length::len(file),
            Self::Remote(remote) => remote.0.source.size(),
        }
    }
}

/// A `Read` from a [`PartFile`] starting at an offset.
pub enum PartRead {
    Local(std::io::BufReader<std::fs::File>),
    Remote {
        part: Arc<CachedRemoteHandle>,
        pos: u64,
    },
}

impl std::io::Read for PartRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Local(reader) => reader.read(buf),
            Self::Remote { part, pos } => {
                let remote = &part.0;
                let len = remote.source.size();
                if *pos >= len || buf.is_empty() {
                    return Ok(0);
                }
                let index = *pos / BLOCK;
                let block = remote.block(index)?;
                let offset = (*pos - index * BLOCK) as usize;
                let n = buf.len().min(block.len() - offset);
                buf[..n].copy_from_slice(&block[offset..offset + n]);
                *pos += n as u64;
                Ok(n)
            }
        }
    }
}

impl parquet::file::reader::ChunkReader for PartFile {
    type T = PartRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<PartRead> {
        match self {
            Self::Local(file) => Ok(PartRead::Local(file.get_read(start)?)),
            Self::Remote(part) => Ok(PartRead::Remote {
                part: part.clone(),
                pos: start,
            }),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            Self::Local(file) => file.get_bytes(start, length),
            Self::Remote(part) => part
                .0
                .range(start, length)
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Memory {
        bytes: Bytes,
        requests: AtomicUsize,
    }

    impl RangeSource for Memory {
        fn size(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn read_range(&self, start: u64, end: u64) -> std::io::Result<Bytes> {
            self.requests.fetch_add(1, Ordering::Relaxed);
            Ok(self.bytes.slice(start as usize..end as usize))
        }
        fn location(&self) -> String {
            "memory://x".into()
        }
    }

    struct OneDir {
        dir: PathBuf,
        source: Arc<Memory>,
    }

    impl PartIndex for OneDir {
        fn parts_in(&self, dir: &Path) -> Vec<PathBuf> {
            if dir == self.dir {
                vec![self.dir.join("part-00000.parquet")]
            } else {
                Vec::new()
            }
        }
        fn open(&self, path: &Path) -> Option<std::io::Result<Arc<dyn RangeSource>>> {
            (path == self.dir.join("part-00000.parquet"))
                .then(|| Ok(self.source.clone() as Arc<dyn RangeSource>))
        }
    }

    #[test]
    fn remote_reads_return_the_bytes_asked_for_across_blocks() {
        let data: Vec<u8> = (0..(BLOCK as usize * 2 + 1000))
            .map(|i| (i % 251) as u8)
            .collect();
        let source = Arc::new(Memory {
            bytes: Bytes::from(data.clone()),
            requests: AtomicUsize::new(0),
        });
        let root = PathBuf::from("/nonexistent-mirror-for-test/a");
        register(
            &root,
            Arc::new(OneDir {
                dir: root.join("activations/hook=x"),
                source: source.clone(),
            }),
        );
        let dir = root.join("activations/hook=x");
        assert_eq!(remote_parts_in(&dir), vec![dir.join("part-00000.parquet")]);
        assert!(is_remote_part(&dir.join("part-00000.parquet")));
        let part = PartFile::open(&dir.join("part-00000.parquet")).unwrap();
        use parquet::file::reader::{ChunkReader, Length};
        assert_eq!(part.len(), data.len() as u64);
        let start = BLOCK - 10;
        let got = part.get_bytes(start, 20).unwrap();
        assert_eq!(&got[..], &data[start as usize..start as usize + 20]);
        let mut all = Vec::new();
        part.get_read(5).unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(&all[..], &data[5..]);
        // Three blocks for the whole file, one wide request: not one request per read call.
        assert!(source.requests.load(Ordering::Relaxed) <= 4);
        assert!(part.get_bytes(data.len() as u64 - 1, 2).is_err());
    }
}
