//! A CPU `f32` tensor's memory read in place by the kernels: the fast forwards and the
//! unembedding multiply weights without a copy of them.

use crate::{ModelError, Result};
use candle_core::{CpuStorage, Storage, StorageRef, Tensor};

/// An `f32` tensor's memory, borrowed for as long as the guard lives.
pub(crate) struct Borrowed<'t> {
    guard: StorageRef<'t>,
    range: (usize, usize),
}

impl Borrowed<'_> {
    pub(crate) fn of(t: &Tensor) -> Result<Borrowed<'_>> {
        let (guard, layout) = t.storage_and_layout();
        let range = layout.contiguous_offsets().ok_or_else(|| {
            ModelError::Invalid("the fast forward needs contiguous weights".into())
        })?;
        let borrowed = Borrowed { guard, range };
        borrowed.slice()?;
        Ok(borrowed)
    }

    pub(crate) fn slice(&self) -> Result<&[f32]> {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(&v[self.range.0..self.range.1]),
            _ => Err(ModelError::Invalid(
                "the fast forward needs f32 weights on the CPU".into(),
            )),
        }
    }
}
