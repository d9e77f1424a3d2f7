//! The token ids of every text, kept from the one tokenisation pass that writes
//! `tokens.parquet`, so that the forward passes do not tokenise the texts again.
//!
//! Why keep them: tokenising a batch again before its forward cost MiniLM's end-to-end
//! extraction ~1% of its time (two cores). They cost 4 bytes a token — about what the texts
//! themselves already hold in memory — and segment ids are kept only for tokenizers that set
//! any (a single sequence's are all zero).
//!
//! Where they live matters more than their size: every block comes from the heap
//! (`pipeline/src/allocator.rs`), and ids copied out of each chunk's encodings into buffers
//! allocated among them (one flat buffer grown by doubling, or one per text) survived the
//! encodings they were copied from and cut the freed memory into holes that the later batches'
//! multi-megabyte activation buffers could not use: peak RSS for 200,000 tokens grew by 35 and
//! 20 MiB (AVX2). A chunk's buffer is therefore reserved before the chunk is tokenised, at its
//! largest possible size (texts × the tokenizer's maximum length; pages never written cost
//! nothing), so the encodings are allocated after it and free one contiguous region.

use glassbox_models::tokenizer::Encoded;
use glassbox_models::{Result, TokenBatch};

/// Every example's token ids, chunk by chunk, in example order.
#[derive(Debug, Default)]
pub(super) struct TokenIds {
    /// Per chunk: its examples' ids end to end.
    chunks: Vec<Vec<u32>>,
    /// Per chunk, when any of its segment ids is non-zero: its segment ids, like `chunks`.
    types: Vec<Option<Vec<u32>>>,
    /// Per example: (chunk, start, length).
    at: Vec<(u32, u32, u32)>,
}

impl TokenIds {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Starts a chunk of up to `tokens` ids: call before tokenising it (see the module docs).
    pub(super) fn begin_chunk(&mut self, tokens: usize) {
        self.chunks.push(Vec::with_capacity(tokens));
        self.types.push(None);
    }

    /// Appends the next example's encoding to the current chunk.
    pub(super) fn push(&mut self, e: &Encoded) {
        if self.chunks.is_empty() {
            self.begin_chunk(e.ids.len());
        }
        let c = self.chunks.len() - 1;
        let ids = &mut self.chunks[c];
        let start = ids.len();
        ids.extend_from_slice(&e.ids);
        let types = &mut self.types[c];
        if types.is_none() && e.type_ids.iter().any(|&t| t != 0) {
            // The chunk's first non-zero segment id: the zeros so far become explicit.
            *types = Some(vec![0; start]);
        }
        if let Some(types) = types {
            types.extend_from_slice(&e.type_ids);
            // An encoding without segment ids has all-zero ones.
            types.resize(start + e.ids.len(), 0);
        }
        self.at.push((c as u32, start as u32, e.ids.len() as u32));
    }

    /// Examples held.
    pub(super) fn len(&self) -> usize {
        self.at.len()
    }

    /// Tokens of each example.
    pub(super) fn lengths(&self) -> Vec<u32> {
        self.at.iter().map(|&(_, _, n)| n).collect()
    }

    /// Example `i`'s (token ids, segment ids); the segment ids are empty when all zero.
    fn row(&self, i: usize) -> (&[u32], &[u32]) {
        let (c, start, n) = self.at[i];
        let span = start as usize..(start + n) as usize;
        let types = match &self.types[c as usize] {
            Some(t) => &t[span.clone()],
            None => &[][..],
        };
        (&self.chunks[c as usize][span], types)
    }

    /// The examples in `range` as a right-padded batch.
    pub(super) fn batch(
        &self,
        range: std::ops::Range<usize>,
        pad_id: u32,
        device: &candle_core::Device,
    ) -> Result<TokenBatch> {
        let rows: Vec<(&[u32], &[u32])> = range.map(|i| self.row(i)).collect();
        TokenBatch::from_ids(&rows, pad_id, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(ids: &[u32], types: &[u32]) -> Encoded {
        Encoded {
            ids: ids.to_vec(),
            type_ids: types.to_vec(),
            tokens: ids.iter().map(|i| i.to_string()).collect(),
            spans: vec![None; ids.len()],
        }
    }

    #[test]
    fn batches_equal_the_encodings_batched_directly() {
        let all = [
            encoded(&[5, 6, 7], &[0, 0, 0]),
            encoded(&[8], &[0]),
            encoded(&[9, 10], &[1, 1]),
            encoded(&[11, 12, 13, 14], &[0, 0, 1, 1]),
        ];
        // Two chunks, the second holding the mixed segment ids.
        let mut store = TokenIds::new();
        store.begin_chunk(4);
        for e in &all[..2] {
            store.push(e);
        }
        store.begin_chunk(2);
        for e in &all[2..] {
            store.push(e);
        }
        assert_eq!(store.len(), 4);
        assert_eq!(store.lengths(), vec![3, 1, 2, 4]);
        let device = candle_core::Device::Cpu;
        for range in [0..2, 1..4, 0..4, 3..4] {
            let refs: Vec<&Encoded> = all[range.clone()].iter().collect();
            let want = TokenBatch::from_encoded(&refs, 99, &device).unwrap();
            let got = store.batch(range, 99, &device).unwrap();
            for (a, b) in [
                (&got.input_ids, &want.input_ids),
                (&got.type_ids, &want.type_ids),
            ] {
                assert_eq!(a.to_vec2::<u32>().unwrap(), b.to_vec2::<u32>().unwrap());
            }
            assert_eq!(
                got.mask.to_vec2::<f32>().unwrap(),
                want.mask.to_vec2::<f32>().unwrap()
            );
            assert_eq!(got.lengths, want.lengths);
        }
    }

    #[test]
    fn all_zero_segment_ids_are_not_stored() {
        let mut store = TokenIds::new();
        store.push(&encoded(&[1, 2], &[0, 0]));
        store.push(&encoded(&[3], &[0]));
        assert!(store.types.iter().all(Option::is_none));
        assert_eq!(store.row(1), (&[3u32][..], &[][..]));
    }
}
