//! Progress reporting without printing: libraries call this trait, the binary draws bars.

/// Receives progress from long-running library work.
pub trait Progress: Sync {
    /// A new phase of `total` units (examples, tokens, hooks…) has started.
    fn start(&self, label: &str, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The phase has finished.
    fn finish(&self);
    /// A one-line note for the user (skipped work, resumed shards…).
    fn note(&self, _message: &str) {}
}

/// Discards all progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _label: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}
