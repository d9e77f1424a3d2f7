//! What a forward runs on: a padded batch of tokenised examples (text families) or a batch of
//! preprocessed images (vision families).

use crate::tokenizer::Encoded;
use crate::{ModelError, Result};
use candle_core::{Device, Tensor};

/// A padded batch of tokenised examples.
pub struct TokenBatch {
    /// `[batch, seq]` u32.
    pub input_ids: Tensor,
    /// `[batch, seq]` u32 segment ids.
    pub type_ids: Tensor,
    /// `[batch, seq]` f32: 1 for real tokens, 0 for padding.
    pub mask: Tensor,
    /// Real (unpadded) length of each example.
    pub lengths: Vec<usize>,
}

impl TokenBatch {
    /// Right-pads encodings to the longest one with `pad_id`.
    pub fn from_encoded(encoded: &[&Encoded], pad_id: u32, device: &Device) -> Result<Self> {
        let rows: Vec<(&[u32], &[u32])> = encoded
            .iter()
            .map(|e| (e.ids.as_slice(), e.type_ids.as_slice()))
            .collect();
        Self::from_ids(&rows, pad_id, device)
    }

    /// Right-pads rows of (token ids, segment ids) to the longest one with `pad_id`; an empty
    /// segment-id slice stands for all zeros (a single sequence).
    pub fn from_ids(rows: &[(&[u32], &[u32])], pad_id: u32, device: &Device) -> Result<Self> {
        let b = rows.len();
        let t = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        if b == 0 || t == 0 {
            return Err(ModelError::Invalid("cannot run an empty batch".into()));
        }
        let mut ids = vec![pad_id; b * t];
        let mut types = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (i, (row, row_types)) in rows.iter().enumerate() {
            let n = row.len();
            ids[i * t..i * t + n].copy_from_slice(row);
            if !row_types.is_empty() {
                if row_types.len() != n {
                    return Err(ModelError::Invalid(format!(
                        "row {i} of the batch has {n} token ids but {} segment ids",
                        row_types.len()
                    )));
                }
                types[i * t..i * t + n].copy_from_slice(row_types);
            }
            mask[i * t..i * t + n].fill(1.0);
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            type_ids: Tensor::from_vec(types, (b, t), device)?,
            mask: Tensor::from_vec(mask, (b, t), device)?,
            lengths: rows.iter().map(|(ids, _)| ids.len()).collect(),
        })
    }
}

/// Preprocessed images, channels-last.
pub struct ImageBatch {
    /// `batch × height × width × 3` values, row-major.
    pub pixels: Vec<f32>,
    /// Images in the batch.
    pub batch: usize,
    /// Rows of each image.
    pub height: usize,
    /// Columns of each image.
    pub width: usize,
}
