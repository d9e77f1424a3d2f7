//! GGUF quantised matrices held as their blocks and dequantised on use, a row range at a time,
//! into a buffer the caller owns: a Q4_1 checkpoint keeps its ~4.5 bits per weight in memory
//! and a forward widens one matrix at a time, as it widens bf16 weights
//! (`decoder::fast::with_f32`). The values are candle's `GgmlType::to_float` of each block — the
//! same as dequantising the whole tensor at load (`QTensor::dequantize`), bit for bit (tested).
//!
//! `unsafe_code` is allowed here for one thing: reading the held bytes as candle's block structs
//! (`#[repr(C)]`, fields `u8`/`i8`/`f16` only, so every bit pattern is a valid block). The
//! length and alignment are checked when the matrix is built, and the bytes are never written.
#![allow(unsafe_code)]

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0, GgmlType,
};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// Output values per parallel task when dequantising (whole rows, at least one).
const CHUNK: usize = 64 * 1024;

/// A `[rows, cols]` weight matrix in one of GGUF's block-quantised formats.
pub struct QuantizedMatrix {
    tensor: QTensor,
    rows: usize,
    cols: usize,
}

/// Why a GGUF tensor cannot be held quantised (the loader names the tensor).
#[derive(Debug, thiserror::Error)]
pub enum QuantizedError {
    #[error("{0:?} is not a block-quantised type glassbox dequantises on use")]
    Unsupported(GgmlDType),
    #[error("shape {0:?} is not a matrix")]
    NotMatrix(Vec<usize>),
    #[error("rows of {cols} values are not whole {dtype:?} blocks of {block}")]
    PartialBlocks {
        cols: usize,
        dtype: GgmlDType,
        block: usize,
    },
    #[error("holds {found} bytes where a {rows} × {cols} {dtype:?} matrix has {expected}")]
    Size {
        found: usize,
        expected: usize,
        rows: usize,
        cols: usize,
        dtype: GgmlDType,
    },
    #[error("block storage is not aligned for {0:?} blocks")]
    Alignment(GgmlDType),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Calls `$f::<Block>` for `$dtype`'s block type (the types [`QuantizedMatrix`] holds).
macro_rules! with_block {
    ($dtype:expr, $f:ident ( $($arg:expr),* )) => {
        match $dtype {
            GgmlDType::Q4_0 => Some($f::<BlockQ4_0>($($arg),*)),
            GgmlDType::Q4_1 => Some($f::<BlockQ4_1>($($arg),*)),
            GgmlDType::Q5_0 => Some($f::<BlockQ5_0>($($arg),*)),
            GgmlDType::Q5_1 => Some($f::<BlockQ5_1>($($arg),*)),
            GgmlDType::Q8_0 => Some($f::<BlockQ8_0>($($arg),*)),
            GgmlDType::Q2K => Some($f::<BlockQ2K>($($arg),*)),
            GgmlDType::Q3K => Some($f::<BlockQ3K>($($arg),*)),
            GgmlDType::Q4K => Some($f::<BlockQ4K>($($arg),*)),
            GgmlDType::Q5K => Some($f::<BlockQ5K>($($arg),*)),
            GgmlDType::Q6K => Some($f::<BlockQ6K>($($arg),*)),
            _ => None,
        }
    };
}

/// The block formats [`QuantizedMatrix`] holds (GGUF's f32/f16/bf16 tensors are plain tensors).
pub const BLOCK_TYPES: &[GgmlDType] = &[
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// Whether `dtype` is one of [`BLOCK_TYPES`].
pub fn is_block_quantised(dtype: GgmlDType) -> bool {
    BLOCK_TYPES.contains(&dtype)
}

fn block_size<T: GgmlType>() -> usize {
    T::BLCK_SIZE
}

fn layout_ok<T: GgmlType>(bytes: &[u8]) -> bool {
    bytes.len().is_multiple_of(std::mem::size_of::<T>())
        && bytes
            .as_ptr()
            .align_offset(std::mem::align_of::<T>())
            .eq(&0)
}

/// The held bytes as blocks.
fn blocks<T: GgmlType>(bytes: &[u8]) -> &[T] {
    debug_assert!(layout_ok::<T>(bytes));
    // SAFETY: `QuantizedMatrix::new` checked that these bytes (candle's own `Vec<T>` storage
    // seen as bytes) are a whole number of `T`s at `T`'s alignment; `T` is a `#[repr(C)]`
    // block of plain integers and `f16`s, valid for any bits; the slice borrows `bytes`.
    unsafe {
        std::slice::from_raw_parts(
            bytes.as_ptr().cast::<T>(),
            bytes.len() / std::mem::size_of::<T>(),
        )
    }
}

/// Rows `first..` of `bytes` (rows of `cols` values) into `out` (whole rows), in parallel.
fn dequantize_rows<T: GgmlType>(bytes: &[u8], cols: usize, first: usize, out: &mut [f32]) {
    let per_row = cols / T::BLCK_SIZE;
    let all = blocks::<T>(bytes);
    let rows_per_task = (CHUNK / cols).max(1);
    out.par_chunks_mut(rows_per_task * cols)
        .enumerate()
        .for_each(|(task, dst)| {
            let row = first + task * rows_per_task;
            let n = dst.len() / cols;
            T::to_float(&all[row * per_row..(row + n) * per_row], dst);
        });
}

impl QuantizedMatrix {
    /// Holds `tensor` (shape `[rows, cols]`, a block format whose rows are whole blocks).
    pub fn new(tensor: QTensor) -> Result<Self, QuantizedError> {
        let dtype = tensor.dtype();
        let block = with_block!(dtype, block_size()).ok_or(QuantizedError::Unsupported(dtype))?;
        let (rows, cols) = match tensor.shape().dims() {
            &[rows, cols] => (rows, cols),
            dims => return Err(QuantizedError::NotMatrix(dims.to_vec())),
        };
        if !cols.is_multiple_of(block) {
            return Err(QuantizedError::PartialBlocks { cols, dtype, block });
        }
        let expected = rows * cols / block * dtype.type_size();
        let found = tensor.storage_size_in_bytes();
        if found != expected {
            return Err(QuantizedError::Size {
                found,
                expected,
                rows,
                cols,
                dtype,
            });
        }
        if with_block!(dtype, layout_ok(&tensor.data()?)) != Some(true) {
            return Err(QuantizedError::Alignment(dtype));
        }
        Ok(Self { tensor, rows, cols })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn dtype(&self) -> GgmlDType {
        self.tensor.dtype()
    }

    /// Bytes held (the blocks).
    pub fn bytes(&self) -> usize {
        self.tensor.storage_size_in_bytes()
    }

    /// The whole matrix into `out` (`rows × cols` values, row-major).
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<(), QuantizedError> {
        self.dequantize_rows_into(0, out)
    }

    /// Rows `first .. first + out.len() / cols` into `out`.
    pub fn dequantize_rows_into(
        &self,
        first: usize,
        out: &mut [f32],
    ) -> Result<(), QuantizedError> {
        let count = out.len() / self.cols;
        if !out.len().is_multiple_of(self.cols) || first + count > self.rows {
            return Err(QuantizedError::Candle(candle_core::Error::Msg(format!(
                "rows {first}..{} of {} × {} asked into {} values",
                first + count,
                self.rows,
                self.cols,
                out.len()
            ))));
        }
        let bytes = self.tensor.data()?;
        with_block!(self.dtype(), dequantize_rows(&bytes, self.cols, first, out))
            .ok_or(QuantizedError::Unsupported(self.dtype()))
    }

    /// The matrix as an f32 tensor (a transient copy for readers that need a whole tensor).
    pub fn to_tensor(&self) -> Result<Tensor, QuantizedError> {
        let mut values = vec![0.0f32; self.rows * self.cols];
        self.dequantize_into(&mut values)?;
        Ok(Tensor::from_vec(
            values,
            (self.rows, self.cols),
            &Device::Cpu,
        )?)
    }

    /// The same blocks with rows reordered: row `i` of the result is row `order[i]` (rows are
    /// independent runs of blocks, so this is exact).
    pub fn with_rows_reordered(&self, order: &[usize]) -> Result<Self, QuantizedError> {
        let row_bytes = self.bytes() / self.rows.max(1);
        let bytes = self.tensor.data()?;
        let mut reordered = Vec::with_capacity(bytes.len());
        for &r in order {
            reordered.extend_from_slice(&bytes[r * row_bytes..(r + 1) * row_bytes]);
        }
        let storage = QStorage::from_data(Cow::Owned(reordered), &Device::Cpu, self.dtype())?;
        Self::new(QTensor::new(storage, (order.len(), self.cols))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn values(rows: usize, cols: usize) -> Tensor {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1009) as f32 / 97.0 - 5.0)
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    /// Row-range dequantisation equals candle's whole-tensor dequantisation bit for bit, for
    /// every block format (rows long enough for the 256-value k-quant blocks, several tasks).
    #[test]
    fn dequantised_rows_equal_whole_tensor_dequantisation() {
        let (rows, cols) = (300, 512);
        for &dtype in BLOCK_TYPES {
            let q = QTensor::quantize(&values(rows, cols), dtype).unwrap();
            let want: Vec<f32> = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let m = QuantizedMatrix::new(q).unwrap();
            let mut all = vec![f32::NAN; rows * cols];
            m.dequantize_into(&mut all).unwrap();
            assert_eq!(all, want, "{dtype:?}");
            let mut some = vec![f32::NAN; 3 * cols];
            m.dequantize_rows_into(17, &mut some).unwrap();
            assert_eq!(some[..], want[17 * cols..20 * cols], "{dtype:?}");
        }
    }

    #[test]
    fn reordered_rows_are_the_same_rows() {
        let q = QTensor::quantize(&values(4, 64), GgmlDType::Q4_1).unwrap();
        let m = QuantizedMatrix::new(q).unwrap();
        let r = m.with_rows_reordered(&[2, 0, 3, 1]).unwrap();
        let (mut a, mut b) = (vec![0.0; 4 * 64], vec![0.0; 4 * 64]);
        m.dequantize_into(&mut a).unwrap();
        r.dequantize_into(&mut b).unwrap();
        for (i, &from) in [2usize, 0, 3, 1].iter().enumerate() {
            assert_eq!(b[i * 64..(i + 1) * 64], a[from * 64..(from + 1) * 64]);
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        let f32_tensor = QTensor::quantize(&values(2, 64), GgmlDType::F32).unwrap();
        assert!(matches!(
            QuantizedMatrix::new(f32_tensor),
            Err(QuantizedError::Unsupported(GgmlDType::F32))
        ));
        let m = QuantizedMatrix::new(QTensor::quantize(&values(2, 64), GgmlDType::Q8_0).unwrap())
            .unwrap();
        assert!(m.dequantize_rows_into(1, &mut [0.0; 128]).is_err());
        assert!(m.dequantize_rows_into(0, &mut [0.0; 100]).is_err());
    }
}
