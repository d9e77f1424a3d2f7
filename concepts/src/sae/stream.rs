//! Training rows, streamed: a source of rows (the Parquet store, filtered; or a matrix in
//! memory) and a shuffling buffer between it and the batches, so memory stays bounded by the
//! buffer whatever the store's size.

use crate::ConceptError;
use glassbox_data::rng::SeededRng;
use glassbox_data::store::PartStream;
use glassbox_data::HookPoint;
use std::collections::HashSet;
use std::sync::Arc;

/// Where a row comes from: `(example_id, position)`.
pub type RowId = (u64, u32);

/// Something that yields rows of one width, epoch after epoch.
pub trait RowSource {
    fn width(&self) -> usize;
    /// Appends the next few rows (and their ids); `false` once the epoch is over.
    fn next_rows(
        &mut self,
        rows: &mut Vec<f32>,
        ids: &mut Vec<RowId>,
    ) -> Result<bool, ConceptError>;
    /// Starts the next epoch.
    fn rewind(&mut self);
}

/// Rows a source yields per epoch (one pass; the source is rewound before and after).
pub fn count_rows<S: RowSource + ?Sized>(source: &mut S) -> Result<u64, ConceptError> {
    let mut n = 0u64;
    // Chunks of one batch: counting holds no rows.
    for_each_chunk(source, 1, |_, ids| {
        n += ids.len() as u64;
        Ok(())
    })?;
    Ok(n)
}

/// One epoch of `source` in chunks of at least `chunk_rows` rows (the last may be shorter):
/// `f(rows, ids)` per chunk; the source is rewound before and after.
pub fn for_each_chunk<S: RowSource + ?Sized>(
    source: &mut S,
    chunk_rows: usize,
    mut f: impl FnMut(&[f32], &[RowId]) -> Result<(), ConceptError>,
) -> Result<(), ConceptError> {
    let (mut rows, mut ids) = (Vec::new(), Vec::new());
    source.rewind();
    loop {
        let more = source.next_rows(&mut rows, &mut ids)?;
        if ids.len() >= chunk_rows || (!more && !ids.is_empty()) {
            f(&rows, &ids)?;
            rows.clear();
            ids.clear();
        }
        if !more {
            break;
        }
    }
    source.rewind();
    Ok(())
}

/// Which examples a source keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Eval,
    All,
}

/// Whether `example_id` belongs to the held-out evaluation examples: a seeded hash, so the
/// split is the same in every stage and needs no list.
pub fn is_eval(example_id: u64, seed: u64, fraction: f64) -> bool {
    let mut rng = SeededRng::new(seed ^ example_id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.unit_f64() < fraction
}

/// Token rows of one hook in the store, filtered by split and (optionally) special tokens.
pub struct StoreRows {
    stream: PartStream,
    hook: HookPoint,
    split: Split,
    eval_fraction: f64,
    seed: u64,
    /// Special-token rows to skip (`None` keeps them).
    special: Option<Arc<HashSet<RowId>>>,
    width: usize,
}

impl StoreRows {
    pub fn open(
        stream: PartStream,
        hook: HookPoint,
        split: Split,
        eval_fraction: f64,
        seed: u64,
        special: Option<Arc<HashSet<RowId>>>,
    ) -> Result<Self, ConceptError> {
        let mut rows = Self {
            stream,
            hook,
            split,
            eval_fraction,
            seed,
            special,
            width: 0,
        };
        // The width comes from the first batch.
        if let Some(batch) = rows.stream.next_batch()? {
            rows.width = batch.width;
        }
        rows.stream.rewind();
        if rows.width == 0 {
            return Err(ConceptError::Invalid(format!(
                "{}: hook `{hook}` has no rows",
                rows.stream.dir().display()
            )));
        }
        Ok(rows)
    }

    /// Counts the rows this source yields per epoch (one pass over the store).
    pub fn count(&mut self) -> Result<u64, ConceptError> {
        count_rows(self)
    }

    fn keeps(&self, id: RowId) -> bool {
        let split_ok = match self.split {
            Split::All => true,
            Split::Eval => is_eval(id.0, self.seed, self.eval_fraction),
            Split::Train => !is_eval(id.0, self.seed, self.eval_fraction),
        };
        split_ok && !self.special.as_ref().is_some_and(|s| s.contains(&id))
    }
}

impl RowSource for StoreRows {
    fn width(&self) -> usize {
        self.width
    }

    fn next_rows(
        &mut self,
        rows: &mut Vec<f32>,
        ids: &mut Vec<RowId>,
    ) -> Result<bool, ConceptError> {
        let Some(batch) = self.stream.next_batch()? else {
            return Ok(false);
        };
        let Some(positions) = &batch.positions else {
            return Err(ConceptError::Invalid(format!(
                "{}: hook `{}` holds pooled rows (no `position` column); SAEs train on token rows",
                self.stream.dir().display(),
                self.hook
            )));
        };
        for (i, (&example, &position)) in batch.example_ids.iter().zip(positions).enumerate() {
            if !self.keeps((example, position)) {
                continue;
            }
            let row = &batch.values[i * batch.width..(i + 1) * batch.width];
            if let Some(unit) = row.iter().position(|v| !v.is_finite()) {
                return Err(ConceptError::Invalid(format!(
                    "{}: hook `{}` example {example} position {position} unit {unit} is {}; \
                     re-extract the activations (a model or dtype overflow upstream?)",
                    self.stream.dir().display(),
                    self.hook,
                    row[unit]
                )));
            }
            rows.extend_from_slice(row);
            ids.push((example, position));
        }
        Ok(true)
    }

    fn rewind(&mut self) {
        self.stream.rewind();
    }
}

/// A transcoder's rows: each token's row at the input hook followed by its row at the target
/// hook (`[x | y]`, twice the width). Both sources must yield the same tokens in the same
/// order (the store writes every hook of a part together); a mismatch names the token.
pub struct PairedRows<A: RowSource, B: RowSource> {
    input: A,
    target: B,
    /// What each side has read that the other has not caught up with.
    queued: [(Vec<f32>, Vec<RowId>); 2],
    /// Names the pair in errors (`input → target`).
    what: String,
}

impl<A: RowSource, B: RowSource> PairedRows<A, B> {
    pub fn new(input: A, target: B, what: String) -> Result<Self, ConceptError> {
        if input.width() != target.width() {
            return Err(ConceptError::Invalid(format!(
                "{what}: the input hook has width {} and the target {}; a transcoder here maps \
                 between hooks of one width (e.g. blocks.L.hook_resid_mid → blocks.L.hook_mlp_out)",
                input.width(),
                target.width()
            )));
        }
        Ok(Self {
            input,
            target,
            queued: Default::default(),
            what,
        })
    }
}

impl<A: RowSource, B: RowSource> RowSource for PairedRows<A, B> {
    fn width(&self) -> usize {
        2 * self.input.width()
    }

    fn next_rows(
        &mut self,
        rows: &mut Vec<f32>,
        ids: &mut Vec<RowId>,
    ) -> Result<bool, ConceptError> {
        let d = self.input.width();
        let [a, b] = &mut self.queued;
        // `next_rows` may add no rows (all filtered) and still say more follow.
        let a_more = !a.1.is_empty() || self.input.next_rows(&mut a.0, &mut a.1)?;
        let b_more = !b.1.is_empty() || self.target.next_rows(&mut b.0, &mut b.1)?;
        if !a_more && !b_more {
            return Ok(false);
        }
        for (more, short, other) in [(a_more, "input", &b.1), (b_more, "target", &a.1)] {
            if let (false, Some(&(e, p))) = (more, other.first()) {
                return Err(ConceptError::Invalid(format!(
                    "{}: the {short} hook's rows end before example {e} position {p}; both \
                     hooks must hold the same tokens (re-extract them together)",
                    self.what
                )));
            }
        }
        let n = a.1.len().min(b.1.len());
        for i in 0..n {
            if a.1[i] != b.1[i] {
                let ((ea, pa), (eb, pb)) = (a.1[i], b.1[i]);
                return Err(ConceptError::Invalid(format!(
                    "{}: the input hook's row is example {ea} position {pa} where the target's \
                     is example {eb} position {pb}; both hooks must hold the same tokens in the \
                     same order (re-extract them together)",
                    self.what
                )));
            }
            rows.extend_from_slice(&a.0[i * d..(i + 1) * d]);
            rows.extend_from_slice(&b.0[i * d..(i + 1) * d]);
        }
        ids.extend_from_slice(&a.1[..n]);
        for q in [a, b] {
            q.0.drain(..n * d);
            q.1.drain(..n);
        }
        Ok(true)
    }

    fn rewind(&mut self) {
        self.input.rewind();
        self.target.rewind();
        self.queued = Default::default();
    }
}

/// Rows from a matrix in memory (tests, benchmarks), in chunks of up to 8,192.
pub struct MatrixRows {
    values: Vec<f32>,
    width: usize,
    next: usize,
}

impl MatrixRows {
    pub fn new(values: Vec<f32>, width: usize) -> Self {
        Self {
            values,
            width,
            next: 0,
        }
    }
}

impl RowSource for MatrixRows {
    fn width(&self) -> usize {
        self.width
    }
    fn next_rows(
        &mut self,
        rows: &mut Vec<f32>,
        ids: &mut Vec<RowId>,
    ) -> Result<bool, ConceptError> {
        let total = self.values.len() / self.width;
        if self.next >= total {
            return Ok(false);
        }
        let end = (self.next + 8192).min(total);
        rows.extend_from_slice(&self.values[self.next * self.width..end * self.width]);
        ids.extend((self.next..end).map(|r| (r as u64, 0)));
        self.next = end;
        Ok(true)
    }
    fn rewind(&mut self) {
        self.next = 0;
    }
}

/// A shuffling buffer: `capacity` rows, of which the first `serve` are handed out in batches
/// and then replaced by fresh rows from the source before the whole buffer is reshuffled
/// (the source is cycled epoch after epoch). Seeded: same source, same seed ⇒ same batches.
pub struct MixingBuffer<S: RowSource> {
    source: S,
    width: usize,
    capacity: usize,
    serve: usize,
    batch: usize,
    cursor: usize,
    rows: Vec<f32>,
    spare: Vec<f32>,
    pending: Vec<f32>,
    pending_ids: Vec<RowId>,
    pending_at: usize,
    order: Vec<usize>,
    rng: SeededRng,
    /// One factor per segment of the row (one segment, or a transcoder's input and target).
    scales: Vec<f32>,
}

impl<S: RowSource> MixingBuffer<S> {
    /// Fills the buffer. `scale_inputs`: multiply every row by `√width / mean norm` of the first
    /// fill (see [`scale`](Self::scale)).
    pub fn new(
        source: S,
        capacity: usize,
        batch: usize,
        seed: u64,
        scale_inputs: bool,
    ) -> Result<Self, ConceptError> {
        Self::with_segments(source, capacity, batch, seed, scale_inputs, 1)
    }

    /// [`new`](Self::new) for rows made of `segments` equal parts (a transcoder's `[x | y]`),
    /// each scaled by its own factor, so input and target both get mean norm `√(its width)`.
    pub fn with_segments(
        source: S,
        capacity: usize,
        batch: usize,
        seed: u64,
        scale_inputs: bool,
        segments: usize,
    ) -> Result<Self, ConceptError> {
        let width = source.width();
        let capacity = capacity.max(batch).max(1);
        // Serve about half the buffer between refills, in whole batches.
        let serve = ((capacity / 2) / batch).max(1) * batch;
        let mut buffer = Self {
            source,
            width,
            capacity,
            serve: serve.min(capacity),
            batch,
            cursor: 0,
            rows: Vec::new(),
            spare: Vec::new(),
            pending: Vec::new(),
            pending_ids: Vec::new(),
            pending_at: 0,
            order: (0..capacity).collect(),
            rng: SeededRng::new(seed),
            scales: vec![1.0; segments.max(1)],
        };
        let mut first = Vec::with_capacity(capacity * width);
        buffer.pull(capacity, &mut first)?;
        if scale_inputs {
            let part = width / buffer.scales.len();
            for (s, scale) in buffer.scales.iter_mut().enumerate() {
                let mean_norm = first
                    .chunks_exact(width)
                    .map(|r| {
                        r[s * part..(s + 1) * part]
                            .iter()
                            .map(|v| (*v as f64).powi(2))
                            .sum::<f64>()
                            .sqrt()
                    })
                    .sum::<f64>()
                    / capacity as f64;
                if mean_norm.is_nan() || mean_norm <= 0.0 {
                    return Err(ConceptError::Invalid(
                        "every training row is zero; nothing to learn a dictionary of".into(),
                    ));
                }
                *scale = ((part as f64).sqrt() / mean_norm) as f32;
            }
            buffer.apply_scales(&mut first);
        }
        buffer.rows = first;
        buffer.shuffle();
        Ok(buffer)
    }

    /// The factor applied to every row (1 without input scaling); a transcoder's input's.
    pub fn scale(&self) -> f32 {
        self.scales[0]
    }

    /// The factor of each segment.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    fn apply_scales(&self, rows: &mut [f32]) {
        if self.scales.iter().all(|&s| s == 1.0) {
            return;
        }
        let part = self.width / self.scales.len();
        for row in rows.chunks_exact_mut(self.width) {
            for (segment, &s) in row.chunks_exact_mut(part).zip(&self.scales) {
                segment.iter_mut().for_each(|v| *v *= s);
            }
        }
    }

    /// The buffer's current rows (scaled), e.g. to initialise the decoder bias.
    pub fn contents(&self) -> &[f32] {
        &self.rows
    }

    /// The next batch (`batch × width`, scaled).
    pub fn next_batch(&mut self) -> Result<&[f32], ConceptError> {
        if self.cursor + self.batch > self.serve {
            let mut fresh = std::mem::take(&mut self.spare);
            fresh.clear();
            self.pull(self.serve, &mut fresh)?;
            self.apply_scales(&mut fresh);
            self.rows[..self.serve * self.width].copy_from_slice(&fresh);
            self.spare = fresh;
            self.shuffle();
            self.cursor = 0;
        }
        let start = self.cursor * self.width;
        self.cursor += self.batch;
        Ok(&self.rows[start..start + self.batch * self.width])
    }

    /// Appends `n` rows from the source to `out`, cycling epochs.
    fn pull(&mut self, n: usize, out: &mut Vec<f32>) -> Result<(), ConceptError> {
        let mut needed = n;
        // Set by a rewind, cleared by any row: a second end-of-epoch while set means an
        // epoch with no rows at all.
        let mut empty_epoch = false;
        while needed > 0 {
            let available = self.pending_ids.len() - self.pending_at;
            if available > 0 {
                let take = available.min(needed);
                let w = self.width;
                out.extend_from_slice(
                    &self.pending[self.pending_at * w..(self.pending_at + take) * w],
                );
                self.pending_at += take;
                needed -= take;
                empty_epoch = false;
                continue;
            }
            self.pending.clear();
            self.pending_ids.clear();
            self.pending_at = 0;
            if !self
                .source
                .next_rows(&mut self.pending, &mut self.pending_ids)?
            {
                if empty_epoch {
                    return Err(ConceptError::Invalid(
                        "the training rows ran out: a whole pass over the store yielded none"
                            .into(),
                    ));
                }
                self.source.rewind();
                empty_epoch = true;
            }
        }
        Ok(())
    }

    /// Permutes the rows (into the spare allocation, then swapped: no per-shuffle allocation
    /// once warm).
    fn shuffle(&mut self) {
        self.rng.shuffle(&mut self.order);
        let w = self.width;
        let mut out = std::mem::take(&mut self.spare);
        out.clear();
        out.reserve(self.capacity * w);
        for &i in &self.order {
            out.extend_from_slice(&self.rows[i * w..(i + 1) * w]);
        }
        self.spare = std::mem::replace(&mut self.rows, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_row_and_are_seeded() {
        let (n, w) = (100usize, 3usize);
        let values: Vec<f32> = (0..n * w).map(|i| (i / w) as f32).collect();
        let take = |seed| {
            let mut b =
                MixingBuffer::new(MatrixRows::new(values.clone(), w), 40, 10, seed, false).unwrap();
            (0..30)
                .flat_map(|_| b.next_batch().unwrap().to_vec())
                .collect::<Vec<f32>>()
        };
        let a = take(1);
        assert_eq!(a, take(1));
        assert_ne!(a, take(2));
        // 300 rows drawn from a 100-row source: every row appears.
        let seen: HashSet<u32> = a.chunks(w).map(|r| r[0] as u32).collect();
        assert_eq!(seen.len(), n);
        // Rows stay whole.
        assert!(a.chunks(w).all(|r| r[0] == r[1] && r[1] == r[2]));
    }

    #[test]
    fn input_scaling_gives_mean_norm_sqrt_d() {
        let values: Vec<f32> = (0..64 * 4).map(|i| (i % 7) as f32 + 1.0).collect();
        let b = MixingBuffer::new(MatrixRows::new(values, 4), 64, 8, 0, true).unwrap();
        let mean_norm: f64 = b
            .contents()
            .chunks(4)
            .map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
            .sum::<f64>()
            / 64.0;
        assert!((mean_norm - 2.0).abs() < 1e-4, "{mean_norm}");
    }

    #[test]
    fn eval_split_is_seeded_and_near_its_fraction() {
        let n = (0..10_000u64).filter(|&id| is_eval(id, 7, 0.1)).count();
        assert!((900..1100).contains(&n), "{n}");
        assert_eq!(is_eval(42, 7, 0.1), is_eval(42, 7, 0.1));
    }
}
