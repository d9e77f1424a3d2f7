//! The one dense product of an SAE step, `x · W_encᵀ`, on candle's CPU matmul (gemm,
//! multi-threaded). Everything after it is sparse and hand-written (see `train.rs`).

use crate::ConceptError;
use candle_core::{Device, Storage, Tensor};

/// Calls `f(first_row, block)` with `x · wᵀ` in blocks of rows (`block` is `rows × m`,
/// row-major), where `x` is `rows × d` and `w` is `m × d`, without copying the product out of
/// candle's storage.
///
/// Blocks stay under 16 MB: glibc then recycles their memory from one block (and one step) to
/// the next, where a single `rows × m` product (100 MB at 4,096 × 6,144) would be mapped and
/// unmapped every step, and unmapping touched pages costs as much as the product itself.
pub fn for_each_product_block(
    x: &[f32],
    d: usize,
    w: &[f32],
    mut f: impl FnMut(usize, &[f32]),
) -> Result<(), ConceptError> {
    let rows = x.len() / d;
    let m = w.len() / d;
    let block_rows = (BLOCK_BYTES / (4 * m.max(1))).clamp(1, rows.max(1));
    let w = Tensor::from_slice(w, (m, d), &Device::Cpu).map_err(candle)?;
    let wt = w.t().map_err(candle)?;
    let mut start = 0;
    while start < rows {
        let len = block_rows.min(rows - start);
        // One block of `x` at a time into candle: a whole part's rows (600 MB at d = 2304)
        // are never copied at once.
        let block = Tensor::from_slice(&x[start * d..(start + len) * d], (len, d), &Device::Cpu)
            .map_err(candle)?;
        let product = block.matmul(&wt).map_err(candle)?;
        let (storage, layout) = product.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(ConceptError::Invalid("candle matmul left the CPU".into()));
        };
        let all = cpu.as_slice::<f32>().map_err(candle)?;
        let (lo, hi) = layout.contiguous_offsets().ok_or_else(|| {
            ConceptError::Invalid("candle matmul output is not contiguous".into())
        })?;
        f(start, &all[lo..hi]);
        start += len;
    }
    Ok(())
}

const BLOCK_BYTES: usize = 16 << 20;

fn candle(e: candle_core::Error) -> ConceptError {
    ConceptError::Invalid(format!("candle: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn product_matches_a_naive_loop() {
        let (rows, d, m) = (5, 3, 4);
        let x: Vec<f32> = (0..rows * d).map(|i| i as f32 * 0.5 - 2.0).collect();
        let w: Vec<f32> = (0..m * d).map(|i| (i as f32).sin()).collect();
        let mut got = Vec::new();
        super::for_each_product_block(&x, d, &w, |start, p| {
            assert_eq!(start * m, got.len());
            got.extend_from_slice(p)
        })
        .unwrap();
        for r in 0..rows {
            for j in 0..m {
                let want: f32 = (0..d).map(|t| x[r * d + t] * w[j * d + t]).sum();
                assert!((got[r * m + j] - want).abs() < 1e-5);
            }
        }
    }
}
