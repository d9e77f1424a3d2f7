//! A weight matrix as the model holds it between forwards: a tensor (f32, or bf16/f16 that a
//! forward converts one matrix at a time) or a GGUF block-quantised matrix that a forward
//! dequantises one matrix at a time. Either way the arithmetic is f32 on the same values a
//! load-time conversion would give; what differs is the memory held.

use crate::quantized::QuantizedMatrix;
use crate::Result;
use candle_core::{DType, Tensor};
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
}
