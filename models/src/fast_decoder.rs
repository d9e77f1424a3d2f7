//! The fast forward shared by the causal decoders (Llama family, GPT-2, GPT-NeoX): packed
//! tokens (no padding anywhere), matrix multiplies through `gemm` into buffers reused across
//! layers and batches, and fused multi-threaded kernels for the norms, rotary positions,
//! causal grouped-query attention and the (gated) MLP.
//!
//! Each family describes its weights as a [`Decoder`] of references to the tensors its graph
//! forward uses; the kernels read those tensors' memory in place, so the fast path costs no
//! second copy of the weights. Hooks see the graph forward's `[batch, seq, width]` tensors at
//! the same points (padding rows zero) and may replace them. The attention pattern is not
//! materialised here: a family falls back to its graph forward when a hook wants it
//! ([`usable`]).

use crate::hooks::{HookPoint, Hooks};
use crate::kernels::{self, Act, Heads, WeightLayout};
use crate::layers::{LayerNorm, RmsNorm, Rotary};
use crate::loader::TokenBatch;
use crate::packed::{take, Layout, Spare};
use crate::{ModelError, Result};
use candle_core::{CpuStorage, Device, Storage, StorageRef, Tensor};
use rayon::prelude::*;

/// Whether the fast forward can serve this call: CPU weights and no hook on an attention
/// pattern (which only the graph forward materialises).
pub(crate) fn usable(device: &Device, layers: usize, hooks: &dyn Hooks) -> bool {
    device.is_cpu() && !(0..layers).any(|i| hooks.wants(HookPoint::AttnPattern(i)))
}

/// An `f32` tensor's memory, borrowed for as long as the guard lives.
struct Borrowed<'t> {
    guard: StorageRef<'t>,
    range: (usize, usize),
}

impl Borrowed<'_> {
    fn of(t: &Tensor) -> Result<Borrowed<'_>> {
        let (guard, layout) = t.storage_and_layout();
        let range = layout.contiguous_offsets().ok_or_else(|| {
            ModelError::Invalid("the fast forward needs contiguous weights".into())
        })?;
        let borrowed = Borrowed { guard, range };
        borrowed.slice()?;
        Ok(borrowed)
    }

    fn slice(&self) -> Result<&[f32]> {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(&v[self.range.0..self.range.1]),
            _ => Err(ModelError::Invalid(
                "the fast forward needs f32 weights on the CPU".into(),
            )),
        }
    }
}

/// A projection `x · W (+ b)`.
pub(crate) struct Proj<'m> {
    pub(crate) weight: &'m Tensor,
    pub(crate) bias: Option<&'m Tensor>,
    pub(crate) layout: WeightLayout,
}

impl Proj<'_> {
    fn dims(&self) -> Result<(usize, usize)> {
        let (a, b) = self.weight.dims2()?;
        Ok(match self.layout {
            WeightLayout::OutIn => (b, a),
            WeightLayout::InOut => (a, b),
        })
    }

    /// Columns `(first, stride)` of `dst` `= x · W + b`, or `+=` with `accumulate`.
    fn apply(
        &self,
        x: &[f32],
        dst: &mut [f32],
        cols: (usize, usize),
        accumulate: bool,
    ) -> Result<()> {
        self.apply_unbiased(x, dst, cols, accumulate)?;
        if let Some(bias) = self.bias {
            add_bias_columns(dst, Borrowed::of(bias)?.slice()?, cols);
        }
        Ok(())
    }

    /// As [`Self::apply`] without the bias.
    fn apply_unbiased(
        &self,
        x: &[f32],
        dst: &mut [f32],
        cols: (usize, usize),
        accumulate: bool,
    ) -> Result<()> {
        let (input, output) = self.dims()?;
        let w = Borrowed::of(self.weight)?;
        kernels::matmul_into(
            x,
            input,
            w.slice()?,
            self.layout,
            output,
            dst,
            cols,
            accumulate,
        );
        Ok(())
    }
}

/// `bias` added to columns `first ..` of rows `stride` wide.
fn add_bias_columns(dst: &mut [f32], bias: &[f32], (first, stride): (usize, usize)) {
    if first == 0 && stride == bias.len() {
        kernels::add_bias(dst, bias);
    } else {
        dst.par_chunks_mut(stride).for_each(|row| {
            for (v, b) in row[first..first + bias.len()].iter_mut().zip(bias) {
                *v += b;
            }
        });
    }
}

pub(crate) enum Norm<'m> {
    Layer(&'m LayerNorm),
    Rms(&'m RmsNorm),
}

impl Norm<'_> {
    /// `dst = norm(x)`.
    fn apply(&self, x: &[f32], dst: &mut [f32]) -> Result<()> {
        dst.copy_from_slice(x);
        match self {
            Norm::Layer(n) => {
                let (w, b) = (Borrowed::of(&n.weight)?, Borrowed::of(&n.bias)?);
                kernels::layer_norm(dst, &[], &[], w.slice()?, b.slice()?, n.eps);
            }
            Norm::Rms(n) => {
                let w = Borrowed::of(&n.weight)?;
                kernels::rms_norm(dst, w.slice()?, n.eps as f32);
            }
        }
        Ok(())
    }
}

/// The query, key and value projections, producing packed `[q | k | v]` rows.
pub(crate) enum Qkv<'m> {
    /// Three projections (Llama).
    Separate([Proj<'m>; 3]),
    /// One projection whose output is already `[q | k | v]` (GPT-2's `c_attn`).
    Fused(Proj<'m>),
    /// One projection whose output is `[q | k | v]` per head (GPT-NeoX's `query_key_value`).
    FusedPerHead(Proj<'m>),
}

/// The MLP's input projection(s).
pub(crate) enum MlpIn<'m> {
    /// `act(x · W_in + b)`.
    Plain(Proj<'m>),
    /// `act(x · W_gate) ⊙ (x · W_up)` (SwiGLU and relatives).
    Gated { gate: Proj<'m>, up: Proj<'m> },
}

pub(crate) struct Block<'m> {
    pub(crate) norm1: Norm<'m>,
    pub(crate) qkv: Qkv<'m>,
    pub(crate) out: Proj<'m>,
    pub(crate) norm2: Norm<'m>,
    pub(crate) mlp_in: MlpIn<'m>,
    pub(crate) down: Proj<'m>,
    /// GPT-NeoX's parallel residual: attention and MLP both read `resid_pre`.
    pub(crate) parallel: bool,
    /// Attention scores' scale (GPT-2 may scale by the layer index too).
    pub(crate) scale: f32,
}

pub(crate) enum Positions<'m> {
    /// Learned absolute position embeddings `[max_positions, hidden]` (GPT-2).
    Learned(&'m Tensor),
    /// Rotary positions on queries and keys.
    Rotary(&'m Rotary),
}

pub(crate) struct Decoder<'m> {
    pub(crate) embed: &'m Tensor,
    pub(crate) positions: Positions<'m>,
    pub(crate) blocks: Vec<Block<'m>>,
    pub(crate) final_norm: Norm<'m>,
    pub(crate) unembed: &'m Tensor,
    /// Query heads, key/value heads and head size (`scale` is per block).
    pub(crate) heads: Heads,
    pub(crate) act: Act,
    pub(crate) inner: usize,
}

/// Cosine and sine of every position's angle per rotary pair, `[seq, half]` each, angles in
/// f32 as `transformers` computes them.
fn rotary_tables(rotary: &Rotary, seq: usize) -> (Vec<f32>, Vec<f32>) {
    let half = rotary.inv_freq.len();
    let (mut cos, mut sin) = (
        Vec::with_capacity(seq * half),
        Vec::with_capacity(seq * half),
    );
    for p in 0..seq {
        for f in &rotary.inv_freq {
            let angle = (p as f32) * (*f as f32);
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Rows of `table` (`[vocab, width]`) for `ids` into packed `dst`, naming `what` in errors.
fn gather(
    table: &Tensor,
    layout: &Layout,
    ids: &[Vec<u32>],
    dst: &mut [f32],
    what: &str,
) -> Result<()> {
    let (count, width) = table.dims2()?;
    let t = Borrowed::of(table)?;
    let t = t.slice()?;
    for (b, ids) in ids.iter().enumerate() {
        for (p, &id) in ids[..layout.offsets[b + 1] - layout.offsets[b]]
            .iter()
            .enumerate()
        {
            let id = id as usize;
            if id >= count {
                return Err(ModelError::Invalid(format!(
                    "{what} {id} is outside the embedding table of {count} rows"
                )));
            }
            let row = layout.offsets[b] + p;
            dst[row * width..(row + 1) * width].copy_from_slice(&t[id * width..(id + 1) * width]);
        }
    }
    Ok(())
}

/// The decoder on `batch`, hooks called in the graph forward's order; returns the final
/// norm's output `[batch, seq, hidden]` (after its hook).
pub(crate) fn forward(
    d: &Decoder,
    batch: &TokenBatch,
    hooks: &mut dyn Hooks,
    spare: &Spare,
) -> Result<Tensor> {
    let (b, t) = batch.input_ids.dims2()?;
    debug_assert_eq!(batch.lengths.len(), b);
    let layout = Layout::new(&batch.lengths, t);
    let rows = layout.rows();
    let hidden = d.embed.dim(1)?;
    let shape = d.heads;
    let (qkv_width, z_width) = (shape.qkv_width(), shape.z_width());
    let (keys, values) = (z_width, z_width + shape.kv_heads * shape.dim);

    let mut pool = spare.take_all();
    let mut x = take(&mut pool, rows * hidden);
    let mut normed = take(&mut pool, rows * hidden);
    let mut qkv = take(&mut pool, rows * qkv_width);
    let mut z = take(&mut pool, rows * z_width);
    let mut side = take(&mut pool, rows * hidden);
    let mut neurons = take(&mut pool, rows * d.inner);
    let gated = d
        .blocks
        .iter()
        .any(|b| matches!(b.mlp_in, MlpIn::Gated { .. }));
    let mut up = take(&mut pool, if gated { rows * d.inner } else { 0 });
    let per_head = d
        .blocks
        .iter()
        .any(|b| matches!(b.qkv, Qkv::FusedPerHead(_)));
    let mut interleaved = take(&mut pool, if per_head { rows * qkv_width } else { 0 });

    let ids = batch.input_ids.to_vec2::<u32>()?;
    gather(d.embed, &layout, &ids, &mut x, "token id")?;
    layout.hook(hooks, HookPoint::Embed, &mut x, hidden)?;
    let positions = layout.positions();
    let mut rotary = None;
    match d.positions {
        Positions::Learned(table) => {
            let position_ids: Vec<Vec<u32>> = (0..b).map(|_| (0..t as u32).collect()).collect();
            gather(table, &layout, &position_ids, &mut side, "position")?;
            layout.hook(hooks, HookPoint::PosEmbed, &mut side, hidden)?;
            add_into(&mut x, &side);
        }
        Positions::Rotary(r) => rotary = Some((r.inv_freq.len(), rotary_tables(r, t))),
    }

    for (i, blk) in d.blocks.iter().enumerate() {
        layout.hook(hooks, HookPoint::ResidPre(i), &mut x, hidden)?;
        blk.norm1.apply(&x, &mut normed)?;
        match &blk.qkv {
            Qkv::Separate([q, k, v]) => {
                q.apply(&normed, &mut qkv, (0, qkv_width), false)?;
                k.apply(&normed, &mut qkv, (keys, qkv_width), false)?;
                v.apply(&normed, &mut qkv, (values, qkv_width), false)?;
            }
            Qkv::Fused(p) => p.apply(&normed, &mut qkv, (0, qkv_width), false)?,
            Qkv::FusedPerHead(p) => {
                p.apply(&normed, &mut interleaved, (0, qkv_width), false)?;
                regroup_per_head(&interleaved, &mut qkv, shape);
            }
        }
        let kv_width = shape.kv_heads * shape.dim;
        layout.hook_columns(
            hooks,
            HookPoint::AttnQ(i),
            &mut qkv,
            (0, z_width, qkv_width),
        )?;
        layout.hook_columns(
            hooks,
            HookPoint::AttnK(i),
            &mut qkv,
            (keys, kv_width, qkv_width),
        )?;
        layout.hook_columns(
            hooks,
            HookPoint::AttnV(i),
            &mut qkv,
            (values, kv_width, qkv_width),
        )?;
        if let Some((half, (cos, sin))) = &rotary {
            let (heads, dim) = (shape.heads, shape.dim);
            kernels::rotate(
                &mut qkv,
                &positions,
                (0, heads, dim, qkv_width),
                *half,
                cos,
                sin,
            );
            let kv = shape.kv_heads;
            kernels::rotate(
                &mut qkv,
                &positions,
                (keys, kv, dim, qkv_width),
                *half,
                cos,
                sin,
            );
        }
        let block_shape = Heads {
            scale: blk.scale,
            ..shape
        };
        kernels::attention(&qkv, &layout.offsets, block_shape, &mut z, None);
        layout.hook(hooks, HookPoint::AttnZ(i), &mut z, z_width)?;

        if blk.parallel {
            // resid_post = resid_pre + attn_out + mlp_out, both branches reading resid_pre.
            blk.out.apply(&z, &mut side, (0, hidden), false)?;
            layout.hook(hooks, HookPoint::AttnOut(i), &mut side, hidden)?;
            blk.norm2.apply(&x, &mut normed)?;
            add_into(&mut x, &side);
        } else {
            // x becomes resid_mid in place: the residual needs no copy of its own.
            add_output(
                hooks,
                HookPoint::AttnOut(i),
                &layout,
                &blk.out,
                &z,
                &mut x,
                &mut side,
            )?;
            layout.hook(hooks, HookPoint::ResidMid(i), &mut x, hidden)?;
            blk.norm2.apply(&x, &mut normed)?;
        }
        match &blk.mlp_in {
            MlpIn::Plain(p) => {
                p.apply_unbiased(&normed, &mut neurons, (0, d.inner), false)?;
                match p.bias {
                    Some(bias) => {
                        kernels::bias_act(&mut neurons, Borrowed::of(bias)?.slice()?, d.act)
                    }
                    None => kernels::bias_act(&mut neurons, &vec![0.0; d.inner], d.act),
                }
            }
            MlpIn::Gated { gate, up: up_proj } => {
                gate.apply(&normed, &mut neurons, (0, d.inner), false)?;
                up_proj.apply(&normed, &mut up, (0, d.inner), false)?;
                kernels::act_mul(&mut neurons, &up, d.act);
            }
        }
        layout.hook(hooks, HookPoint::MlpPost(i), &mut neurons, d.inner)?;
        add_output(
            hooks,
            HookPoint::MlpOut(i),
            &layout,
            &blk.down,
            &neurons,
            &mut x,
            &mut side,
        )?;
        layout.hook(hooks, HookPoint::ResidPost(i), &mut x, hidden)?;
    }
    d.final_norm.apply(&x, &mut normed)?;
    let out = layout.padded(&normed, hidden)?;
    // In reverse order of taking, so each buffer comes back to the same role.
    spare.keep(vec![interleaved, up, neurons, side, z, qkv, normed, x]);
    crate::layers::final_hooks(hooks, out, d.unembed)
}

/// `x += proj(input)`: straight into `x` by an accumulating multiply, unless a hook wants the
/// projection's output at `point`, which then goes through `scratch`.
fn add_output(
    hooks: &mut dyn Hooks,
    point: HookPoint,
    layout: &Layout,
    proj: &Proj,
    input: &[f32],
    x: &mut [f32],
    scratch: &mut [f32],
) -> Result<()> {
    let hidden = proj.dims()?.1;
    if hooks.wants(point) {
        proj.apply(input, scratch, (0, hidden), false)?;
        layout.hook(hooks, point, scratch, hidden)?;
        add_into(x, scratch);
        Ok(())
    } else {
        proj.apply(input, x, (0, hidden), true)
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(16 * 1024)
        .zip(y.par_chunks(16 * 1024))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
}

/// `[q | k | v]` per head (`heads` blocks of `3 · dim`) into `[q | k | v]` per projection.
fn regroup_per_head(interleaved: &[f32], qkv: &mut [f32], shape: Heads) {
    debug_assert_eq!(shape.heads, shape.kv_heads);
    let (dim, width) = (shape.dim, shape.qkv_width());
    let z = shape.z_width();
    qkv.par_chunks_mut(width)
        .zip(interleaved.par_chunks(width))
        .for_each(|(dst, src)| {
            for h in 0..shape.heads {
                let s = &src[h * 3 * dim..(h + 1) * 3 * dim];
                dst[h * dim..(h + 1) * dim].copy_from_slice(&s[..dim]);
                dst[z + h * dim..z + (h + 1) * dim].copy_from_slice(&s[dim..2 * dim]);
                dst[2 * z + h * dim..2 * z + (h + 1) * dim].copy_from_slice(&s[2 * dim..]);
            }
        });
}
