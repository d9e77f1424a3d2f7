//! The token ids of every text, kept from the one tokenisation pass that writes
//! `tokens.parquet`, so that the forward passes do not tokenise the texts again.
//!
//! Why keep them: tokenising a batch again before its forward cost MiniLM's end-to-end
//! extraction ~3% of its time (0.12 s of ~4 s for 32,768 tokens, two cores). Kept flat, the ids
//! cost 4 bytes a token — about what the texts themselves already hold in memory — and segment
//! ids are kept only for tokenizers that set any (a single sequence's are all zero).

use glassbox_models::tokenizer::Encoded;
use glassbox_models::{Result, TokenBatch};

/// Every example's token ids, flat, in example order.
#[derive(Debug, Default)]
pub(super) struct TokenIds {
    ids: Vec<u32>,
    /// Segment ids, flat like `ids`; empty while every one seen is zero.
    type_ids: Vec<u32>,
    /// `ids[starts[i]..starts[i + 1]]` are example `i`'s.
    starts: Vec<usize>,
}

impl TokenIds {
    pub(super) fn new() -> Self {
        Self {
            starts: vec![0],
            ..Self::default()
        }
    }

    /// Appends the next example's encoding.
    pub(super) fn push(&mut self, e: &Encoded) {
        if self.type_ids.is_empty() && e.type_ids.iter().any(|&t| t != 0) {
            // The first non-zero segment id: the zeros so far become explicit.
            self.type_ids = vec![0; self.ids.len()];
        }
        self.ids.extend_from_slice(&e.ids);
        if !self.type_ids.is_empty() {
            self.type_ids.extend_from_slice(&e.type_ids);
            // An encoding without segment ids has all-zero ones.
            self.type_ids.resize(self.ids.len(), 0);
        }
        self.starts.push(self.ids.len());
    }

    /// Examples held.
    pub(super) fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// Tokens of each example.
    pub(super) fn lengths(&self) -> Vec<u32> {
        self.starts
            .windows(2)
            .map(|w| (w[1] - w[0]) as u32)
            .collect()
    }

    /// Example `i`'s (token ids, segment ids); the segment ids are empty when all zero.
    fn row(&self, i: usize) -> (&[u32], &[u32]) {
        let span = self.starts[i]..self.starts[i + 1];
        let types = if self.type_ids.is_empty() {
            &[][..]
        } else {
            &self.type_ids[span.clone()]
        };
        (&self.ids[span], types)
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
        let mut store = TokenIds::new();
        for e in &all {
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
        assert!(store.type_ids.is_empty());
        assert_eq!(store.row(1), (&[3u32][..], &[][..]));
    }
}
