//! A weight matrix as the model holds it between forwards: a tensor (f32, or bf16/f16 that a
//! forward converts one matrix at a time) or a GGUF block-quantised matrix that a forward
//! dequantises one matrix at a time. Either way the arithmetic is f32 on the same values a
//! load-time conversion would give; what differs is the memory held.

use crate::quantized::QuantizedMatrix;
use crate::Result;
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

#[derive(Clone)]
pub enum Held {
    Tensor(Tensor),
    Quantized(Arc<QuantizedMatrix>),
}

impl Held {
    /// `(rows, cols)` of the matrix.
    pub fn dims2(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Held::Tensor(t) => t.dims2()?,
            Held::Quantized(q) => (q.rows(), q.cols()),
        })
    }

    /// How the values are held, for messages (`F32`, `BF16`, `Q4_1`, …).
    pub fn describe(&self) -> String {
        match self {
            Held::Tensor(t) => format!("{:?}", t.dtype()),
            Held::Quantized(q) => format!("{:?}", q.dtype()),
        }
    }

    /// The tensor as held, for readers that take tensors as they are (`None` when quantised).
    pub fn tensor(&self) -> Option<&Tensor> {
        match self {
            Held::Tensor(t) => Some(t),
            Held::Quantized(_) => None,
        }
    }

    /// Whether the matrix is held in bf16 (what the bf16 products read in place).
    pub fn is_bf16(&self) -> bool {
        self.tensor().is_some_and(|t| t.dtype() == DType::BF16)
    }

    /// The values as a tensor of `dtype`: the held tensor itself when it already is one, else a
    /// transient converted or dequantised copy.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        match self {
            Held::Tensor(t) if t.dtype() == dtype => Ok(t.clone()),
            Held::Tensor(t) => Ok(t.to_dtype(dtype)?),
            Held::Quantized(q) => Ok(q.to_tensor()?.to_dtype(dtype)?),
        }
    }

    /// Rows `[first, first + count)` as a matrix of their own, held the same way (a fused
    /// projection split at load: Phi-3's `qkv_proj`; GGUF blocks run along rows, so a block
    /// matrix splits exactly).
    pub fn rows(&self, first: usize, count: usize) -> Result<Held> {
        Ok(match self {
            Held::Tensor(t) => Held::Tensor(t.narrow(0, first, count)?.contiguous()?),
            Held::Quantized(q) => {
                let order: Vec<usize> = (first..first + count).collect();
                Held::Quantized(Arc::new(q.with_rows_reordered(&order)?))
            }
        })
    }

    /// Where the values live (GGUF blocks: the CPU).
    pub fn device(&self) -> Device {
        match self {
            Held::Tensor(t) => t.device().clone(),
            Held::Quantized(_) => Device::Cpu,
        }
    }

    /// Rows of an embedding table `[vocab, hidden]` for a batch's token ids, `[batch, seq,
    /// hidden]` in the table's dtype (f32 from blocks: only the rows looked up are
    /// dequantised).
    pub fn embedding(&self, batch: &crate::batch::TokenBatch) -> Result<Tensor> {
        let q = match self {
            Held::Tensor(t) => return Ok(embed_rows(t, batch)?),
            Held::Quantized(q) => q,
        };
        let (b, t) = batch.input_ids.dims2()?;
        let ids: Vec<u32> = batch.input_ids.flatten_all()?.to_vec1()?;
        let hidden = q.cols();
        let mut rows = vec![0f32; ids.len() * hidden];
        for (row, &id) in rows.chunks_exact_mut(hidden).zip(&ids) {
            if id as usize >= q.rows() {
                return Err(crate::ModelError::Invalid(format!(
                    "token id {id} is outside the embedding's {} rows",
                    q.rows()
                )));
            }
            q.dequantize_rows_into(id as usize, row)?;
        }
        Ok(Tensor::from_vec(rows, (b, t, hidden), &Device::Cpu)?)
    }
}

/// Rows of `table` (`[vocab, hidden]`) for the batch's token ids, as `[b, t, hidden]`.
pub(crate) fn embed_rows(
    table: &Tensor,
    batch: &crate::batch::TokenBatch,
) -> candle_core::Result<Tensor> {
    let (b, t) = batch.input_ids.dims2()?;
    table
        .index_select(&batch.input_ids.flatten_all()?, 0)?
        .reshape((b, t, table.dim(1)?))
}
