//! The packed fast forward of [`Decoder`] (Gemma-2/3, Qwen3, OLMo-2, Phi-3, and Llama held in
//! bf16): the same blocks as `forward.rs`, on packed tokens (no padding computed), matrix
//! multiplies into buffers reused across layers and batches, the fused kernels for the norms
//! and the gated MLP, and the register-tiled attention with its sliding window and
//! soft-capping. Not differentiable: `forward_differentiable` stays the graph forward, and so
//! do calls whose hooks need autograd or an attention pattern (`prenorm::usable`).
//!
//! Weights held in bf16/f16 are converted to f32 one matrix at a time into a reused buffer
//! (exact), so the model keeps the checkpoint's bytes and computes in f32 as the graph does.
//! Under `--compute-dtype bf16` the projections instead read the bf16 weights as held, with
//! each projection's input rounded to bf16 once (q, k and v share it; so do gate and up), in
//! [`kernels::bf16_dot`]; everything between the projections stays f32. A gated MLP whose
//! neurons no hook wants has them packed for the down projection straight from the staged
//! products (`bf16_dot::gated_into`), the same bits as written out.

use super::{Decoder, Layer, Mlp, QkNorm};
use crate::batch::TokenBatch;
use crate::borrowed::Borrowed;
use crate::held::Held;
use crate::hooks::{at, HookPoint, Hooks};
use crate::kernels::bf16_dot::{self, Packed};
use crate::kernels::{self, Heads, Prepare, WeightLayout};
use crate::layers::{Linear, RmsNorm};
use crate::packed::{take, Layout};
use crate::prefix::{PrefixCache, Suffixes};
use crate::prenorm::{add_bias_columns, add_into, Kv, Norm};
use crate::{ComputeDtype, ModelError, Result};
use candle_core::{CpuStorage, DType, Storage, Tensor};
use rayon::prelude::*;

/// Elements per parallel task when converting a reduced-precision weight.
const CONVERT_CHUNK: usize = 64 * 1024;

/// Calls `f` with a weight's values as `f32`: in place for an f32 tensor, else converted into
/// `scratch` (bf16 and f16 convert exactly; a GGUF matrix is dequantised).
fn with_f32<R>(w: &Held, scratch: &mut Vec<f32>, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = match w {
        Held::Tensor(t) => t,
        Held::Quantized(q) => {
            scratch.resize(q.rows() * q.cols(), 0.0);
            q.dequantize_into(scratch)?;
            return Ok(f(scratch));
        }
    };
    if t.dtype() == DType::F32 {
        let held = Borrowed::of(t)?;
        return Ok(f(held.slice()?));
    }
    let (storage, layout) = t.storage_and_layout();
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| ModelError::Invalid("the fast forward needs contiguous weights".into()))?;
    scratch.resize(end - start, 0.0);
    match &*storage {
        // bf16 is the top half of an f32: widening is a shift.
        Storage::Cpu(CpuStorage::BF16(v)) => scratch
            .par_chunks_mut(CONVERT_CHUNK)
            .zip(v[start..end].par_chunks(CONVERT_CHUNK))
            .for_each(|(dst, src)| {
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = f32::from_bits(u32::from(s.to_bits()) << 16);
                }
            }),
        Storage::Cpu(CpuStorage::F16(v)) => scratch
            .par_chunks_mut(CONVERT_CHUNK)
            .zip(v[start..end].par_chunks(CONVERT_CHUNK))
            .for_each(|(dst, src)| {
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = s.to_f32();
                }
            }),
        _ => {
            return Err(ModelError::Invalid(format!(
                "the fast forward reads f32, bf16 or f16 CPU weights, not {:?}",
                t.dtype()
            )))
        }
    }
    Ok(f(scratch))
}

/// Calls `f` with a bf16 weight's values as raw bits (`None` for any other dtype).
fn with_bf16_bits<R>(w: &Held, f: impl FnOnce(&[u16]) -> R) -> Result<Option<R>> {
    use half::slice::HalfFloatSliceExt;
    let Some(t) = w.tensor() else {
        return Ok(None);
    };
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::BF16(v)) = &*storage else {
        return Ok(None);
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| ModelError::Invalid("the fast forward needs contiguous weights".into()))?;
    Ok(Some(f(v[start..end].reinterpret_cast())))
}

/// A projection's input: f32 rows, and under bf16 compute the same rows rounded and packed.
#[derive(Clone, Copy)]
struct Operand<'a> {
    rows: &'a [f32],
    packed: Option<&'a Packed>,
}

/// `rows` (`width` wide) as a projection input: also rounded and packed into `packed` when the
/// products are bf16.
fn operand<'a>(
    compute: ComputeDtype,
    rows: &'a [f32],
    width: usize,
    packed: &'a mut Packed,
) -> Operand<'a> {
    let packed = (compute == ComputeDtype::Bf16).then(|| {
        packed.fill(rows, width);
        &*packed
    });
    Operand { rows, packed }
}

/// Columns `(first, stride)` of `dst` set to `x · Wᵀ + b` for a `Linear` (`[out, in]`).
fn project(
    l: &Linear<Held>,
    x: Operand<'_>,
    dst: &mut [f32],
    cols: (usize, usize),
    scratch: &mut Vec<f32>,
) -> Result<()> {
    let (output, input) = l.weight.dims2()?;
    let bf16 = match x.packed {
        Some(packed) => with_bf16_bits(&l.weight, |w| {
            bf16_dot::matmul_wt(packed, x.rows, w, output, dst, cols, false, scratch);
        })?,
        None => None,
    };
    if bf16.is_none() {
        with_f32(&l.weight, scratch, |w| {
            kernels::matmul_into(
                x.rows,
                input,
                w,
                WeightLayout::OutIn,
                output,
                dst,
                cols,
                false,
            );
        })?;
    }
    if let Some(bias) = &l.bias {
        add_bias_columns(dst, Borrowed::of(bias)?.slice()?, cols);
    }
    Ok(())
}

/// `dst = norm(x)`, or a copy of `x` where the block has no such norm.
fn normed(norm: &Option<RmsNorm>, x: &[f32], dst: &mut [f32]) -> Result<()> {
    match norm {
        Some(n) => Norm::Rms(n).apply(x, dst),
        None => {
            dst.copy_from_slice(x);
            Ok(())
        }
    }
}

/// `x = norm(x)` row by row (rows as wide as the norm's weight).
fn in_place(n: &RmsNorm, x: &mut [f32]) -> Result<()> {
    let w = Borrowed::of(&n.weight)?;
    kernels::rms_norm(x, w.slice()?, n.eps as f32);
    Ok(())
}

/// A q or k norm on columns `first .. first + width` of rows `stride` wide: over the whole
/// block (OLMo-2) or over each head's values (Qwen3, Gemma-3).
fn qk_norm(
    norm: &Option<QkNorm>,
    rows: &mut [f32],
    (first, width, stride): (usize, usize, usize),
) -> Result<()> {
    let n = match norm {
        Some(QkNorm::Whole(n) | QkNorm::PerHead(n)) => n,
        None => return Ok(()),
    };
    let w = Borrowed::of(&n.weight)?;
    kernels::rms_norm_columns(rows, (first, width, stride), w.slice()?, n.eps as f32);
    Ok(())
}

impl Decoder {
    /// The graph forward's values and hooks, on packed rows; returns the final norm's output
    /// `[batch, seq, hidden]` (after its hook).
    pub(super) fn fast_forward(&self, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor> {
        self.fast_run_with(batch, None, hooks, &mut Kv::Own)
    }

    /// [`Self::fast_forward`] from block `first` on, given the residual stream entering it
    /// (`blocks.{first}.hook_resid_pre`, whose hook is called first): the blocks before it are
    /// not run (patching and steering at a later block).
    pub(super) fn fast_forward_from(
        &self,
        batch: &TokenBatch,
        first: usize,
        resid_pre: &Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        self.fast_run_with(batch, Some((first, resid_pre)), hooks, &mut Kv::Own)
    }

    /// [`Self::fast_forward`] over one unpadded example, keeping each block's prepared
    /// attention rows for [`Self::fast_suffixes`].
    pub(super) fn fast_keeping_prefix(
        &self,
        batch: &TokenBatch,
        hooks: &mut dyn Hooks,
    ) -> Result<(Tensor, PrefixCache)> {
        let t = crate::prenorm::prefix_length(batch)?;
        let mut kept = Vec::with_capacity(self.layers.len());
        let out = self.fast_run_with(batch, None, hooks, &mut Kv::Keep(&mut kept))?;
        Ok((out, PrefixCache::new(kept, t, self.qkv_width())))
    }

    /// Copies of a kept run, copy `c` recomputed from position `starts[c]` and block
    /// `suffixes.block` on, attending over the kept rows before it (see
    /// [`crate::HookedModel::forward_suffixes`]).
    pub(super) fn fast_suffixes(
        &self,
        suffixes: &Suffixes<'_>,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        let mut pool = self.spare.take_all();
        let model = (self.layers.len(), self.dims.hidden, self.qkv_width());
        let (layout, x) = crate::prenorm::suffix_rows(suffixes, model, &mut pool)?;
        let mut kv = Kv::AfterPrefix {
            prefix: suffixes.prefix,
            starts: suffixes.starts,
        };
        self.run_blocks(&layout, x, pool, suffixes.block, hooks, &mut kv)
    }

    fn qkv_width(&self) -> usize {
        (self.dims.heads + 2 * self.dims.kv_heads) * self.dims.head_dim
    }

    fn fast_run_with(
        &self,
        batch: &TokenBatch,
        start: Option<(usize, &Tensor)>,
        hooks: &mut dyn Hooks,
        kv: &mut Kv<'_>,
    ) -> Result<Tensor> {
        crate::layers::check_positions(batch, self.dims.max_positions, "max_position_embeddings")?;
        let (b, t) = batch.input_ids.dims2()?;
        let layout = Layout::new(&batch.lengths, t);
        debug_assert_eq!(layout.batch, b);
        let (rows, hidden) = (layout.rows(), self.dims.hidden);
        let mut pool = self.spare.take_all();
        let mut x = take(&mut pool, rows * hidden);
        let first = match start {
            Some((first, resid_pre)) => {
                layout.unpad(resid_pre, hidden, HookPoint::ResidPre(first), &mut x)?;
                first
            }
            None => {
                // The embedding as the graph forward computes it (rows of a bf16 table upcast,
                // then Gemma's scale), so `hook_embed` sees the same tensor.
                let embedded = self.embed.embedding(batch)?.to_dtype(DType::F32)?;
                let embedded = match self.embed_scale {
                    Some(s) => (embedded * f64::from(s))?,
                    None => embedded,
                };
                let embedded = at(hooks, HookPoint::Embed, embedded)?;
                layout.unpad(&embedded, hidden, HookPoint::Embed, &mut x)?;
                0
            }
        };
        self.run_blocks(&layout, x, pool, first, hooks, kv)
    }

    /// Blocks `first ..` on packed rows `x`, then the final norm (and its hook, and the
    /// logits' where wanted); `[batch, seq, hidden]` out. Buffers go back to the spares.
    fn run_blocks(
        &self,
        layout: &Layout,
        mut x: Vec<f32>,
        mut pool: Vec<Vec<f32>>,
        first: usize,
        hooks: &mut dyn Hooks,
        kv: &mut Kv<'_>,
    ) -> Result<Tensor> {
        let hidden = self.dims.hidden;
        let mut bufs = Buffers::take(&mut pool, layout, self);
        for i in first..self.layers.len() {
            self.fast_block(i, layout, &mut x, &mut bufs, hooks, kv)?;
            if hooks.satisfied() {
                break;
            }
        }
        let mut out = std::mem::take(&mut bufs.side);
        Norm::Rms(&self.norm).apply(&x, &mut out)?;
        let padded = layout.padded(&out, hidden)?;
        bufs.side = out;
        bufs.give_back(&mut pool);
        pool.push(x);
        self.spare.keep(pool);
        let normalized = at(hooks, HookPoint::LnFinal, padded)?;
        if hooks.wants(HookPoint::Logits) {
            let logits = self.logits(&normalized)?;
            at(hooks, HookPoint::Logits, logits)?;
        }
        Ok(normalized)
    }

    /// Block `i` on packed rows `x` (the residual stream, updated in place).
    fn fast_block(
        &self,
        i: usize,
        layout: &Layout,
        x: &mut [f32],
        bufs: &mut Buffers,
        hooks: &mut dyn Hooks,
        kv: &mut Kv<'_>,
    ) -> Result<()> {
        let Layer {
            attn_norm,
            attn: a,
            attn_post_norm,
            mlp_norm,
            mlp,
            mlp_post_norm,
        } = &self.layers[i];
        let d = self.dims;
        let hidden = d.hidden;
        let shape = Heads {
            heads: d.heads,
            kv_heads: d.kv_heads,
            dim: d.head_dim,
            causal: true,
            scale: self.attn_scale as f32,
            softcap: self.attn_softcap.map(|c| c as f32),
            window: a.window,
        };
        let (qkv_width, z_width) = (shape.qkv_width(), shape.z_width());
        let kv_width = d.kv_heads * d.head_dim;
        let (keys, values) = (z_width, z_width + kv_width);
        let scratch = &mut bufs.weight;

        layout.hook(hooks, HookPoint::ResidPre(i), x, hidden)?;
        normed(attn_norm, x, &mut bufs.normed)?;
        let input = operand(self.compute, &bufs.normed, hidden, &mut bufs.packed);
        for (l, first) in [(&a.q, 0), (&a.k, keys), (&a.v, values)] {
            project(l, input, &mut bufs.qkv, (first, qkv_width), scratch)?;
        }
        let columns = [
            (HookPoint::AttnQ(i), (0, z_width, qkv_width)),
            (HookPoint::AttnK(i), (keys, kv_width, qkv_width)),
            (HookPoint::AttnV(i), (values, kv_width, qkv_width)),
        ];
        for (point, cols) in columns {
            layout.hook_columns(hooks, point, &mut bufs.qkv, cols)?;
        }
        qk_norm(&a.q_norm, &mut bufs.qkv, (0, z_width, qkv_width))?;
        qk_norm(&a.k_norm, &mut bufs.qkv, (keys, kv_width, qkv_width))?;
        // Per layer: Gemma-3's local and global layers rotate with different bases. Suffix rows
        // sit past the kept prefix: angles for every position they can have.
        let positions = match kv {
            Kv::AfterPrefix { prefix, .. } => prefix.len().max(layout.seq),
            _ => layout.seq,
        };
        let (cos, sin) = a.rotary.tables(positions);
        let prepare = Prepare {
            bias: None,
            rotary: Some((a.rotary.inv_freq.len(), &cos, &sin)),
        };
        match kv {
            Kv::AfterPrefix { prefix, starts } => kernels::attention_after_prefix(
                &mut bufs.qkv,
                &layout.offsets,
                starts,
                &prefix.blocks[i],
                shape,
                &mut bufs.z,
                prepare,
            ),
            Kv::Own | Kv::Keep(_) => kernels::attention_prepared(
                &mut bufs.qkv,
                &layout.offsets,
                shape,
                &mut bufs.z,
                prepare,
            ),
        }
        if let Kv::Keep(kept) = kv {
            kept.push(bufs.qkv.clone());
        }
        layout.hook(hooks, HookPoint::AttnZ(i), &mut bufs.z, z_width)?;

        let z = operand(self.compute, &bufs.z, z_width, &mut bufs.packed);
        project(&a.o, z, &mut bufs.side, (0, hidden), scratch)?;
        if let Some(n) = attn_post_norm {
            in_place(n, &mut bufs.side)?;
        }
        layout.hook(hooks, HookPoint::AttnOut(i), &mut bufs.side, hidden)?;
        add_into(x, &bufs.side);
        layout.hook(hooks, HookPoint::ResidMid(i), x, hidden)?;

        normed(mlp_norm, x, &mut bufs.normed)?;
        let input = operand(self.compute, &bufs.normed, hidden, &mut bufs.packed);
        // Under bf16 products (AMX or the VDPBF16PS tiles), with no hook on the neurons,
        // `act(gate) ⊙ up` goes straight into the down projection's packed input.
        let gated =
            !hooks.wants(HookPoint::MlpPost(i)) && self.gated_into(mlp, input, &mut bufs.gated)?;
        let neurons = if gated {
            // The product exists only packed; the down projection's kernel reads nothing else
            // (`reads_packed_only`: `rows` is never read).
            Operand {
                rows: &bufs.neurons,
                packed: Some(&bufs.gated),
            }
        } else {
            project(&mlp.gate, input, &mut bufs.neurons, (0, d.inner), scratch)?;
            project(&mlp.up, input, &mut bufs.up, (0, d.inner), scratch)?;
            kernels::act_mul(&mut bufs.neurons, &bufs.up, self.act.kernel());
            layout.hook(hooks, HookPoint::MlpPost(i), &mut bufs.neurons, d.inner)?;
            operand(self.compute, &bufs.neurons, d.inner, &mut bufs.packed)
        };
        project(&mlp.down, neurons, &mut bufs.side, (0, hidden), scratch)?;
        if let Some(n) = mlp_post_norm {
            in_place(n, &mut bufs.side)?;
        }
        layout.hook(hooks, HookPoint::MlpOut(i), &mut bufs.side, hidden)?;
        add_into(x, &bufs.side);
        layout.hook(hooks, HookPoint::ResidPost(i), x, hidden)?;
        Ok(())
    }
}

impl Decoder {
    /// The gated MLP's neurons packed into `out` by [`bf16_dot::gated_into`], if it runs here:
    /// bf16 products, bias-free bf16 gate and up weights, a kernel that takes them, and a down
    /// projection that will read only the packed neurons (`reads_packed_only`).
    fn gated_into(&self, mlp: &Mlp, input: Operand<'_>, out: &mut Packed) -> Result<bool> {
        let Some(packed) = input.packed else {
            return Ok(false);
        };
        if mlp.gate.bias.is_some() || mlp.up.bias.is_some() {
            return Ok(false);
        }
        let inner = mlp.gate.weight.dims2()?.0;
        let down = with_bf16_bits(&mlp.down.weight, |w| bf16_dot::reads_packed_only(inner, w))?;
        if down != Some(true) {
            return Ok(false);
        }
        let act = self.act.kernel();
        let done = with_bf16_bits(&mlp.gate.weight, |gate| {
            with_bf16_bits(&mlp.up.weight, |up| {
                bf16_dot::gated_into(packed, gate, up, inner, act, out)
            })
        })?;
        Ok(matches!(done, Some(Ok(Some(true)))))
    }
}

/// The scratch buffers of one fast forward, taken from and given back to the model's spares.
struct Buffers {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    z: Vec<f32>,
    side: Vec<f32>,
    neurons: Vec<f32>,
    up: Vec<f32>,
    /// One reduced-precision weight converted to f32 (empty for f32 models).
    weight: Vec<f32>,
    /// A projection's input rounded to bf16 and packed (bf16 compute only).
    packed: Packed,
    /// A gated MLP's neurons packed as the down projection's input (`gated_into`).
    gated: Packed,
}

impl Buffers {
    fn take(pool: &mut Vec<Vec<f32>>, layout: &Layout, m: &Decoder) -> Self {
        let d = m.dims;
        let rows = layout.rows();
        let qkv_width = m.qkv_width();
        // Popped in the reverse order of `give_back`, so each buffer keeps its role.
        let weight = pool.pop().unwrap_or_default();
        Buffers {
            normed: take(pool, rows * d.hidden),
            qkv: take(pool, rows * qkv_width),
            z: take(pool, rows * d.heads * d.head_dim),
            side: take(pool, rows * d.hidden),
            neurons: take(pool, rows * d.inner),
            up: take(pool, rows * d.inner),
            weight,
            packed: Packed::default(),
            gated: Packed::default(),
        }
    }

    fn give_back(self, pool: &mut Vec<Vec<f32>>) {
        pool.extend([
            self.up,
            self.neurons,
            self.side,
            self.z,
            self.qkv,
            self.normed,
            self.weight,
        ]);
    }
}
