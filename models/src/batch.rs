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
        let b = encoded.len();
        let t = encoded.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if b == 0 || t == 0 {
            return Err(ModelError::Invalid("cannot run an empty batch".into()));
        }
        let mut ids = vec![pad_id; b * t];
        let mut types = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (i, e) in encoded.iter().enumerate() {
            let n = e.ids.len();
            ids[i * t..i * t + n].copy_from_slice(&e.ids);
            types[i * t..i * t + n].copy_from_slice(&e.type_ids);
            mask[i * t..i * t + n].fill(1.0);
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            type_ids: Tensor::from_vec(types, (b, t), device)?,
            mask: Tensor::from_vec(mask, (b, t), device)?,
            lengths: encoded.iter().map(|e| e.ids.len()).collect(),
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
