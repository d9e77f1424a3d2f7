//! Large activation and gradient buffers handed back after a batch and handed out again
//! without being cleared.
//!
//! Why: a fresh `Vec` must be initialised, and zeroing the image models' 20–80 MB buffers was
//! ~20% of integrated gradients' time on EfficientNet-Lite0 (two cores, 30 GB zeroed for 8
//! images × 64 steps) even with both cores on it ([`super::zeros`]). Most of those buffers are
//! outputs that a matrix product or a convolution overwrites entirely, so the zeros were never
//! read. A model keeps one [`Recycler`]; its taped forward and backward
//! [`take`](Recycler::take) their outputs from it and [`give`](Recycler::give) them back when
//! done, and the next batch (same shapes) finds them there.
//!
//! Only where the buffers would all be alive at once anyway (a backward's tape): the pool
//! keeps every size it was given, so a plain forward that recycled each layer's output kept
//! one batch's every activation resident where freeing them let the allocator reuse the
//! memory across sizes (ResNet-50, forward only: 2.7 against 0.8 GB peak; EfficientNet-Lite0
//! extraction: 488 against 369 MB).
//!
//! Contract: [`Recycler::take`]'s contents are whatever the buffer last held — for outputs the
//! caller overwrites entirely (a `gemm` without `accumulate`, a convolution that starts each
//! output from its bias). An accumulator clears what it takes where it first writes it (the
//! depthwise transpose clears each gradient row just before its first taps).

use super::{zeros, PARALLEL_ZEROS_FROM};
use std::sync::Mutex;

/// Buffers kept at most: after one integration batch EfficientNet-Lite0's pool holds 43 and
/// MiniLM's backward's 36 (measured); beyond this a returned buffer is freed.
const MAX_KEPT: usize = 160;

/// A pool of large `f32` buffers (see the module documentation).
#[derive(Debug, Default)]
pub struct Recycler {
    /// Kept buffers, each with the batch ([`Recycler::end_batch`] count) it came back in.
    free: Mutex<Vec<(Vec<f32>, u64)>>,
    batch: std::sync::atomic::AtomicU64,
}

impl Recycler {
    /// `n` values with unspecified contents (left over from an earlier batch, or zeros): only
    /// for outputs the caller overwrites entirely before reading them.
    pub fn take(&self, n: usize) -> Vec<f32> {
        if n < PARALLEL_ZEROS_FROM {
            return vec![0.0; n];
        }
        match self.best_fit(n) {
            Some(mut v) => {
                if v.len() >= n {
                    v.truncate(n);
                } else {
                    // Within its capacity: only the new tail is written.
                    v.resize(n, 0.0);
                }
                v
            }
            None => zeros(n),
        }
    }

    /// Hands `v` back for a later [`take`](Self::take). Small buffers are simply freed.
    pub fn give(&self, v: Vec<f32>) {
        if v.capacity() < PARALLEL_ZEROS_FROM {
            return;
        }
        let batch = self.batch.load(std::sync::atomic::Ordering::Relaxed);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < MAX_KEPT {
            free.push((v, batch));
        }
    }

    /// Marks the end of a batch: buffers that no request of the batch just ended took (kept
    /// since before it) are freed — an odd-sized batch's buffers would otherwise stay for
    /// good and add to the peak of every later one.
    pub fn end_batch(&self) {
        let batch = self
            .batch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.retain(|(_, given)| *given >= batch);
    }

    /// Buffers kept now.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The kept buffer with the smallest capacity that holds `n` values, taken out of the pool.
    /// (Refusing buffers over a quarter larger than asked was measured worse: 736 against 714
    /// MB peak for integrated gradients on EfficientNet-Lite0, as fewer requests found one.)
    fn best_fit(&self, n: usize) -> Option<Vec<f32>> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, (v, _))| v.capacity() >= n)
            .min_by_key(|(_, (v, _))| v.capacity())
            .map(|(i, _)| i)?;
        Some(free.swap_remove(best).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_by_best_fit_uncleared_and_idle_ones_are_freed() {
        let pool = Recycler::default();
        let (big, small) = (PARALLEL_ZEROS_FROM * 3, PARALLEL_ZEROS_FROM * 2);
        let mut a = pool.take(big);
        let mut b = pool.take(small);
        a.fill(7.0);
        b.fill(5.0);
        let (a_ptr, b_ptr) = (a.as_ptr(), b.as_ptr());
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.kept(), 2);
        // The smaller buffer serves the smaller request, stale contents and all.
        let again = pool.take(small - 10);
        assert_eq!(again.as_ptr(), b_ptr);
        assert_eq!(again.len(), small - 10);
        assert!(again.iter().all(|&v| v == 5.0));
        // A request past the len but within the capacity writes only the tail.
        pool.give(again);
        let grown = pool.take(small);
        assert_eq!(grown.as_ptr(), b_ptr);
        assert!(grown[..small - 10].iter().all(|&v| v == 5.0));
        assert!(grown[small - 10..].iter().all(|&v| v == 0.0));
        // The larger buffer serves the larger request, uncleared.
        let big_again = pool.take(big);
        assert_eq!(big_again.as_ptr(), a_ptr);
        assert_eq!(big_again.len(), big);
        assert!(big_again.iter().all(|&v| v == 7.0));
        // Nothing fits: a fresh zeroed one. Small buffers are never kept.
        pool.give(big_again);
        assert!(pool.take(big * 2).iter().all(|&v| v == 0.0));
        pool.give(vec![1.0; 16]);
        assert_eq!(pool.kept(), 1);
        // A buffer nobody took for a whole batch is freed at the batch's end.
        pool.end_batch();
        assert_eq!(pool.kept(), 1);
        pool.end_batch();
        assert_eq!(pool.kept(), 0);
    }
}
