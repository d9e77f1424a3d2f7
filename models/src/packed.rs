//! Packed-row bookkeeping shared by the fast forwards: the tokens of every example one after
//! another, no padding, `offsets[b]..offsets[b + 1]` being example `b`'s rows. Hooks still see
//! the `[batch, seq, width]` tensors of the graph forwards (padding rows zero); a hook that
//! returns a different tensor has its values copied back into the packed buffer.

use crate::hooks::{HookPoint, Hooks};
use crate::{ModelError, Result};
use candle_core::{Device, Tensor};

/// Where each example's rows lie in a packed buffer.
pub(crate) struct Layout {
    pub(crate) offsets: Vec<usize>,
    pub(crate) batch: usize,
    pub(crate) seq: usize,
}

impl Layout {
    /// The layout of a right-padded batch of `seq` positions with these real lengths.
    pub(crate) fn new(lengths: &[usize], seq: usize) -> Self {
        let mut offsets = Vec::with_capacity(lengths.len() + 1);
        offsets.push(0);
        for &len in lengths {
            offsets.push(offsets.last().copied().unwrap_or(0) + len);
        }
        Self {
            offsets,
            batch: lengths.len(),
            seq,
        }
    }

    pub(crate) fn rows(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }

    /// Every example fills all `seq` positions: packed rows are the padded tensor's layout.
    pub(crate) fn is_unpadded(&self) -> bool {
        self.rows() == self.batch * self.seq
    }

    /// `[batch, seq, width]` with zero padding, from packed rows.
    pub(crate) fn padded(&self, packed: &[f32], width: usize) -> Result<Tensor> {
        // Built by appending rather than zeroed and then overwritten: each value is written
        // once (the zeroing pass measured as part of the hooks' 5% of a MiniLM forward).
        let mut out = Vec::with_capacity(self.batch * self.seq * width);
        for b in 0..self.batch {
            let (s, e) = (self.offsets[b], self.offsets[b + 1]);
            out.extend_from_slice(&packed[s * width..e * width]);
            out.resize((b + 1) * self.seq * width, 0.0);
        }
        Ok(Tensor::from_vec(
            out,
            (self.batch, self.seq, width),
            &Device::Cpu,
        )?)
    }

    /// Packed rows from a `[batch, seq, width]` tensor.
    pub(crate) fn unpad(
        &self,
        t: &Tensor,
        width: usize,
        point: HookPoint,
        packed: &mut [f32],
    ) -> Result<()> {
        if t.dims() != [self.batch, self.seq, width] {
            return Err(ModelError::Invalid(format!(
                "hook `{point}` returned shape {:?}, expected [{}, {}, {width}]",
                t.dims(),
                self.batch,
                self.seq
            )));
        }
        let values: Vec<f32> = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        for b in 0..self.batch {
            let (s, e) = (self.offsets[b], self.offsets[b + 1]);
            packed[s * width..e * width]
                .copy_from_slice(&values[b * self.seq * width..(b * self.seq + e - s) * width]);
        }
        Ok(())
    }

    /// Calls the hook on a packed buffer; copies a replacement back in and says whether there
    /// was one.
    pub(crate) fn hook(
        &self,
        hooks: &mut dyn Hooks,
        point: HookPoint,
        buf: &mut [f32],
        width: usize,
    ) -> Result<bool> {
        if !hooks.wants(point) {
            return Ok(false);
        }
        let tensor = self.padded(buf, width)?;
        let id = tensor.id();
        let out = hooks.visit(point, tensor)?;
        let replaced = out.id() != id;
        if replaced {
            self.unpad(&out, width, point, buf)?;
        }
        Ok(replaced)
    }

    /// Hooks the `width` columns starting at `first` of packed rows `stride` wide (one of the
    /// query, key and value blocks of a fused projection).
    pub(crate) fn hook_columns(
        &self,
        hooks: &mut dyn Hooks,
        point: HookPoint,
        buf: &mut [f32],
        (first, width, stride): (usize, usize, usize),
    ) -> Result<()> {
        if !hooks.wants(point) {
            return Ok(());
        }
        let mut cols: Vec<f32> = buf
            .chunks_exact(stride)
            .flat_map(|row| row[first..first + width].iter().copied())
            .collect();
        if self.hook(hooks, point, &mut cols, width)? {
            for (row, new) in buf.chunks_exact_mut(stride).zip(cols.chunks_exact(width)) {
                row[first..first + width].copy_from_slice(new);
            }
        }
        Ok(())
    }
}

/// A residual stream between steps of a forward: packed rows in a buffer of the forward's
/// own, or — once a hook has taken them — the hook's tensor itself, read in place.
///
/// Without padding, packed rows *are* the `[batch, seq, width]` tensor, so a hooked stream is
/// handed over without a copy (copying MiniLM's 7 hidden states was 2–4% of its forward, and
/// evicted the next projection's input from cache). The forward reads it through the tensor
/// until it next overwrites the stream, which then goes to a fresh buffer: the tensor's
/// values are never changed after a hook has seen them.
pub(crate) enum Stream {
    Owned(Vec<f32>),
    Shared(Tensor),
}

impl Stream {
    /// Calls the hook on the stream; a replacement becomes the stream.
    pub(crate) fn hook(
        &mut self,
        layout: &Layout,
        hooks: &mut dyn Hooks,
        point: HookPoint,
        width: usize,
    ) -> Result<()> {
        if !hooks.wants(point) {
            return Ok(());
        }
        if !layout.is_unpadded() {
            return layout.hook(hooks, point, self.owned()?, width).map(|_| ());
        }
        let tensor = match std::mem::replace(self, Stream::Owned(Vec::new())) {
            Stream::Owned(values) => {
                Tensor::from_vec(values, (layout.batch, layout.seq, width), &Device::Cpu)?
            }
            Stream::Shared(tensor) => tensor,
        };
        let out = hooks.visit(point, tensor.clone())?;
        *self = if out.id() == tensor.id() {
            Stream::Shared(tensor)
        } else {
            let mut values = vec![0.0; layout.rows() * width];
            layout.unpad(&out, width, point, &mut values)?;
            Stream::Owned(values)
        };
        Ok(())
    }

    /// Runs `f` on the packed rows.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
        match self {
            Stream::Owned(values) => Ok(f(values)),
            Stream::Shared(tensor) => {
                let (storage, tensor_layout) = tensor.storage_and_layout();
                let candle_core::Storage::Cpu(cpu) = &*storage else {
                    return Err(ModelError::Invalid(
                        "hooked stream is not on the CPU".into(),
                    ));
                };
                let start = tensor_layout.start_offset();
                let values = cpu.as_slice::<f32>()?;
                Ok(f(&values[start..start + tensor.elem_count()]))
            }
        }
    }

    /// A buffer of `len` values to overwrite with the next value of the stream (contents stale;
    /// a fresh one if a hook holds the current values).
    pub(crate) fn overwrite(&mut self, len: usize) -> &mut Vec<f32> {
        if let Stream::Shared(_) = self {
            *self = Stream::Owned(Vec::new());
        }
        match self {
            Stream::Owned(values) => {
                values.resize(len, 0.0);
                values
            }
            Stream::Shared(_) => unreachable!("replaced above"),
        }
    }

    /// The rows in a buffer of the forward's own (copied out of a hook's tensor if needed).
    fn owned(&mut self) -> Result<&mut Vec<f32>> {
        if let Stream::Shared(tensor) = self {
            let values = tensor.flatten_all()?.to_vec1::<f32>()?;
            *self = Stream::Owned(values);
        }
        match self {
            Stream::Owned(values) => Ok(values),
            Stream::Shared(_) => unreachable!("replaced above"),
        }
    }

    /// The `[batch, seq, width]` tensor of the stream (zero padding), and the buffer to keep for
    /// the next forward, if it is still the forward's own.
    pub(crate) fn finish(
        self,
        layout: &Layout,
        width: usize,
    ) -> Result<(Tensor, Option<Vec<f32>>)> {
        match self {
            Stream::Shared(tensor) => Ok((tensor, None)),
            Stream::Owned(values) => Ok((layout.padded(&values, width)?, Some(values))),
        }
    }
}

/// Buffers of the last forward, reused by the next: fresh ones cost page faults and zeroing
/// on every batch. Every buffer taken from here is overwritten before it is read, so stale
/// contents never leak.
#[derive(Default)]
pub(crate) struct Spare(std::sync::Mutex<Vec<Vec<f32>>>);

impl Spare {
    /// The buffers left by the last forward (none after a panic poisoned the lock).
    pub(crate) fn take_all(&self) -> Vec<Vec<f32>> {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    /// Keeps `buffers` for the next forward, which pops them in reverse order.
    pub(crate) fn keep(&self, buffers: Vec<Vec<f32>>) {
        if let Ok(mut pool) = self.0.lock() {
            *pool = buffers;
        }
    }
}

/// A buffer of `len` values from `spare` (or a fresh one); its contents are stale.
pub(crate) fn take(spare: &mut Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut buf = spare.pop().unwrap_or_default();
    buf.resize(len, 0.0);
    buf
}
