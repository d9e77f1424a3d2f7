//! The fast forward of the pre-norm transformer stacks: the causal decoders (Llama family,
//! GPT-2, GPT-NeoX) and the vision encoders (ViT, CLIP's image tower). Packed tokens (no
//! padding anywhere), matrix multiplies (`gemm`, or `kernels::skinny` for few rows) into
//! buffers reused across layers and batches, and fused multi-threaded kernels for the norms, rotary positions, (causal,
//! grouped-query) attention and the (gated) MLP.
//!
//! Each family describes its weights as a [`Stack`] (and, for decoders, a [`Decoder`]) of
//! references to the tensors its graph forward uses; the kernels read those tensors' memory in
//! place, so the fast path costs no second copy of the weights. Hooks see the graph forward's
//! `[batch, seq, width]` tensors at the same points (padding rows zero) and may replace them.
//! The attention pattern is not materialised here, and replacements cannot carry autograd
//! through packed buffers: a family falls back to its graph forward for those ([`usable`]).

use crate::batch::TokenBatch;
use crate::borrowed::Borrowed;
use crate::hooks::{HookPoint, Hooks};
use crate::kernels::{self, Act, Heads, Prepare, WeightLayout};
use crate::layers::{LayerNorm, Linear, RmsNorm, Rotary};
use crate::packed::{take, Layout, Spare};
use crate::prefix::PrefixCache;
use crate::{ModelError, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

mod family;
mod suffix;
pub(crate) use family::{fast_decoder_methods, from_block, keeping_prefix, suffixes, FastDecoder};
pub(crate) use suffix::{forward_keeping_prefix, forward_suffixes, prefix_length, suffix_rows};

/// Whether the fast forward can serve this call: CPU weights, no hook on an attention pattern
/// (which only the graph forward materialises) and hooks that do not need autograd.
pub(crate) fn usable(device: &Device, layers: usize, hooks: &dyn Hooks) -> bool {
    device.is_cpu()
        && !hooks.needs_graph()
        && !(0..layers).any(|i| hooks.wants(HookPoint::AttnPattern(i)))
}

/// A projection `x · W (+ b)`.
pub(crate) struct Proj<'m> {
    pub(crate) weight: &'m Tensor,
    pub(crate) bias: Option<&'m Tensor>,
    pub(crate) layout: WeightLayout,
}

impl<'m> Proj<'m> {
    /// An `nn.Linear`-style layer (`[out, in]` weight, optional bias).
    pub(crate) fn linear(l: &'m Linear) -> Self {
        Proj {
            weight: &l.weight,
            bias: l.bias.as_ref(),
            layout: WeightLayout::OutIn,
        }
    }

    fn dims(&self) -> Result<(usize, usize)> {
        let (a, b) = self.weight.dims2()?;
        Ok(match self.layout {
            WeightLayout::OutIn => (b, a),
            WeightLayout::InOut => (a, b),
        })
    }

    /// Columns `(first, stride)` of `dst` set to, or increased by, `x · W (+ b)`.
    fn apply(&self, x: &[f32], dst: &mut [f32], cols: (usize, usize), write: Write) -> Result<()> {
        let (input, output) = self.dims()?;
        let w = Borrowed::of(self.weight)?;
        let accumulate = write == Write::Add;
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
        match self.bias {
            Some(bias) if write != Write::SetWithoutBias => {
                add_bias_columns(dst, Borrowed::of(bias)?.slice()?, cols);
            }
            _ => {}
        }
        Ok(())
    }
}

/// How [`Proj::apply`] writes its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// `dst = x · W + b`.
    Set,
    /// `dst = x · W`: the bias is left to a later kernel.
    SetWithoutBias,
    /// `dst += x · W + b` (the residual stream).
    Add,
}

/// `bias` added to columns `first ..` of rows `stride` wide.
pub(crate) fn add_bias_columns(dst: &mut [f32], bias: &[f32], (first, stride): (usize, usize)) {
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
    pub(crate) fn apply(&self, x: &[f32], dst: &mut [f32]) -> Result<()> {
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
    /// This block's sliding window where a stack's layers differ (GPT-Neo's `local` layers);
    /// `None`: the stack's (`Heads::window`).
    pub(crate) window: Option<usize>,
}

/// The blocks of a pre-norm transformer and what they share.
pub(crate) struct Stack<'m> {
    pub(crate) blocks: Vec<Block<'m>>,
    /// Query heads, key/value heads, head size and causality (`scale` is per block).
    pub(crate) heads: Heads,
    pub(crate) act: Act,
    pub(crate) inner: usize,
    /// Rotary positions on queries and keys, if the model uses them.
    pub(crate) rotary: Option<&'m Rotary>,
}

/// A decoder: token (and learned position) embeddings, the stack, the final norm.
pub(crate) struct Decoder<'m> {
    pub(crate) embed: &'m Tensor,
    /// Learned absolute position embeddings `[max_positions, hidden]` (GPT-2).
    pub(crate) positions: Option<&'m Tensor>,
    pub(crate) stack: Stack<'m>,
    pub(crate) final_norm: Norm<'m>,
    /// `None`: a checkpoint without its language-model head.
    pub(crate) unembed: Option<&'m Tensor>,
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
    run(d, batch, Start::Embeddings, hooks, spare, &mut Kv::Own)
}

/// The decoder from block `first` on, given the residual stream entering it
/// (`[batch, seq, hidden]`, `blocks.{first}.hook_resid_pre`, whose hook is called first): the
/// blocks before it are not run. Same values and hooks as [`forward`] from there on. `None`
/// where the fast path cannot run (see [`usable`]) or `first` is past the last block.
pub(crate) fn forward_from(
    d: &Decoder,
    batch: &TokenBatch,
    first: usize,
    resid_pre: &Tensor,
    hooks: &mut dyn Hooks,
    spare: &Spare,
) -> Option<Result<Tensor>> {
    let layers = d.stack.blocks.len();
    if first >= layers || !usable(d.embed.device(), layers, hooks) {
        return None;
    }
    let start = Start::Residual(first, resid_pre);
    Some(run(d, batch, start, hooks, spare, &mut Kv::Own))
}

/// Where a fast forward starts.
enum Start<'a> {
    /// From the token (and position) embeddings.
    Embeddings,
    /// From this residual stream entering this block.
    Residual(usize, &'a Tensor),
}

fn run(
    d: &Decoder,
    batch: &TokenBatch,
    start: Start<'_>,
    hooks: &mut dyn Hooks,
    spare: &Spare,
    kv: &mut Kv<'_>,
) -> Result<Tensor> {
    let (b, t) = batch.input_ids.dims2()?;
    debug_assert_eq!(batch.lengths.len(), b);
    let layout = Layout::new(&batch.lengths, t);
    let rows = layout.rows();
    let hidden = d.embed.dim(1)?;
    let mut pool = spare.take_all();
    let mut x = take(&mut pool, rows * hidden);
    let mut side = take(&mut pool, rows * hidden);
    let first = match start {
        Start::Residual(first, resid_pre) => {
            layout.unpad(resid_pre, hidden, HookPoint::ResidPre(first), &mut x)?;
            first
        }
        Start::Embeddings => {
            let ids = batch.input_ids.to_vec2::<u32>()?;
            gather(d.embed, &layout, &ids, &mut x, "token id")?;
            layout.hook(hooks, HookPoint::Embed, &mut x, hidden)?;
            if let Some(table) = d.positions {
                let position_ids: Vec<Vec<u32>> = (0..b).map(|_| (0..t as u32).collect()).collect();
                gather(table, &layout, &position_ids, &mut side, "position")?;
                layout.hook(hooks, HookPoint::PosEmbed, &mut side, hidden)?;
                add_into(&mut x, &side);
            }
            0
        }
    };
    finish(d, &layout, (x, side), hooks, (pool, spare), (first, kv))
}

/// The stack from block `first` on over packed rows `x`, then the final norm (into `side`) and
/// its hooks; the buffers go back to `spare`.
fn finish(
    d: &Decoder,
    layout: &Layout,
    (mut x, mut side): (Vec<f32>, Vec<f32>),
    hooks: &mut dyn Hooks,
    (mut pool, spare): (Vec<Vec<f32>>, &Spare),
    (first, kv): (usize, &mut Kv<'_>),
) -> Result<Tensor> {
    let hidden = d.embed.dim(1)?;
    run_stack(&d.stack, layout, &mut x, hooks, &mut pool, first, kv)?;
    d.final_norm.apply(&x, &mut side)?;
    let out = layout.padded(&side, hidden)?;
    pool.extend([side, x]);
    spare.keep(pool);
    crate::layers::final_hooks(hooks, out, d.unembed)
}

/// What attention reads besides each example's own rows.
pub(crate) enum Kv<'a> {
    /// Nothing: each example attends over its own rows.
    Own,
    /// The same, and each block's prepared `[q | k | v]` rows of the one example are kept
    /// (pushed in block order) for later runs that share its prefix.
    Keep(&'a mut Vec<Vec<f32>>),
    /// Example `b` holds positions `starts[b] ..` of a run that equals the cached one before
    /// them (causal models): it attends over the cache's rows first.
    AfterPrefix {
        prefix: &'a PrefixCache,
        starts: &'a [usize],
    },
}

/// The stack's blocks from `first` on, on packed rows `x` (`layout` says whose), in place,
/// with the hooks of every block; scratch buffers come from `pool` and go back to it.
pub(crate) fn run_stack(
    s: &Stack,
    layout: &Layout,
    x: &mut [f32],
    hooks: &mut dyn Hooks,
    pool: &mut Vec<Vec<f32>>,
    first: usize,
    kv: &mut Kv<'_>,
) -> Result<()> {
    let rows = layout.rows();
    let hidden = x.len() / rows.max(1);
    let shape = s.heads;
    let (qkv_width, z_width) = (shape.qkv_width(), shape.z_width());
    let (keys, values) = (z_width, z_width + shape.kv_heads * shape.dim);
    let kv_width = shape.kv_heads * shape.dim;
    let gated = s
        .blocks
        .iter()
        .any(|b| matches!(b.mlp_in, MlpIn::Gated { .. }));
    let per_head = s
        .blocks
        .iter()
        .any(|b| matches!(b.qkv, Qkv::FusedPerHead(_)));
    let mut normed = take(pool, rows * hidden);
    let mut qkv = take(pool, rows * qkv_width);
    let mut z = take(pool, rows * z_width);
    let mut side = take(pool, rows * hidden);
    let mut neurons = take(pool, rows * s.inner);
    let mut up = take(pool, if gated { rows * s.inner } else { 0 });
    let mut interleaved = take(pool, if per_head { rows * qkv_width } else { 0 });
    // Rotary angles for every position a row can have: past the prefix, for suffixes.
    let positions = match kv {
        Kv::AfterPrefix { prefix, .. } => prefix.len().max(layout.seq),
        _ => layout.seq,
    };
    let rotary = s.rotary.map(|r| (r.inv_freq.len(), r.tables(positions)));

    for (i, blk) in s.blocks.iter().enumerate().skip(first) {
        layout.hook(hooks, HookPoint::ResidPre(i), x, hidden)?;
        blk.norm1.apply(x, &mut normed)?;
        let columns = [
            (HookPoint::AttnQ(i), (0, z_width, qkv_width)),
            (HookPoint::AttnK(i), (keys, kv_width, qkv_width)),
            (HookPoint::AttnV(i), (values, kv_width, qkv_width)),
        ];
        // The bias is left to attention's per-example loop unless a hook must see it.
        let hooked = columns.iter().any(|(point, _)| hooks.wants(*point));
        let deferred_bias = match (&blk.qkv, hooked) {
            (Qkv::FusedPerHead(_), _) | (_, true) => None,
            (qkv_weights, false) => qkv_bias(qkv_weights, shape)?,
        };
        let write = match deferred_bias {
            Some(_) => Write::SetWithoutBias,
            None => Write::Set,
        };
        match &blk.qkv {
            Qkv::Separate(projections) => {
                for (p, first) in projections.iter().zip([0, keys, values]) {
                    p.apply(&normed, &mut qkv, (first, qkv_width), write)?;
                }
            }
            Qkv::Fused(p) => p.apply(&normed, &mut qkv, (0, qkv_width), write)?,
            Qkv::FusedPerHead(p) => {
                p.apply(&normed, &mut interleaved, (0, qkv_width), Write::Set)?;
                regroup_per_head(&interleaved, &mut qkv, shape);
            }
        }
        for (point, cols) in columns {
            layout.hook_columns(hooks, point, &mut qkv, cols)?;
        }
        let prepare = Prepare {
            bias: deferred_bias.as_deref(),
            rotary: rotary
                .as_ref()
                .map(|(half, (cos, sin))| (*half, &cos[..], &sin[..])),
        };
        let block_shape = Heads {
            scale: blk.scale,
            window: blk.window.or(shape.window),
            ..shape
        };
        match kv {
            Kv::AfterPrefix { prefix, starts } => {
                let cached = &prefix.blocks[i];
                let offsets = &layout.offsets;
                kernels::attention_after_prefix(
                    &mut qkv,
                    offsets,
                    starts,
                    cached,
                    block_shape,
                    &mut z,
                    prepare,
                );
            }
            Kv::Own | Kv::Keep(_) => {
                kernels::attention_prepared(
                    &mut qkv,
                    &layout.offsets,
                    block_shape,
                    &mut z,
                    prepare,
                );
            }
        }
        if let Kv::Keep(kept) = kv {
            kept.push(qkv.clone());
        }
        layout.hook(hooks, HookPoint::AttnZ(i), &mut z, z_width)?;

        if blk.parallel {
            // resid_post = resid_pre + attn_out + mlp_out, both branches reading resid_pre.
            blk.out.apply(&z, &mut side, (0, hidden), Write::Set)?;
            layout.hook(hooks, HookPoint::AttnOut(i), &mut side, hidden)?;
            blk.norm2.apply(x, &mut normed)?;
            add_into(x, &side);
        } else {
            // x becomes resid_mid in place: the residual needs no copy of its own.
            let point = HookPoint::AttnOut(i);
            add_output(hooks, point, layout, &blk.out, &z, x, &mut side)?;
            layout.hook(hooks, HookPoint::ResidMid(i), x, hidden)?;
            blk.norm2.apply(x, &mut normed)?;
        }
        match &blk.mlp_in {
            MlpIn::Plain(p) => {
                // The bias goes into the activation's pass rather than a pass of its own.
                p.apply(&normed, &mut neurons, (0, s.inner), Write::SetWithoutBias)?;
                let bias = p.bias.map(Borrowed::of).transpose()?;
                let bias = bias.as_ref().map(Borrowed::slice).transpose()?;
                kernels::bias_act(&mut neurons, bias.unwrap_or(&[]), s.act);
            }
            MlpIn::Gated { gate, up: up_proj } => {
                gate.apply(&normed, &mut neurons, (0, s.inner), Write::Set)?;
                up_proj.apply(&normed, &mut up, (0, s.inner), Write::Set)?;
                kernels::act_mul(&mut neurons, &up, s.act);
            }
        }
        layout.hook(hooks, HookPoint::MlpPost(i), &mut neurons, s.inner)?;
        let point = HookPoint::MlpOut(i);
        add_output(hooks, point, layout, &blk.down, &neurons, x, &mut side)?;
        layout.hook(hooks, HookPoint::ResidPost(i), x, hidden)?;
        if hooks.satisfied() {
            break;
        }
    }
    // In reverse order of taking, so each buffer comes back to the same role.
    pool.extend([interleaved, up, neurons, side, z, qkv, normed]);
    Ok(())
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
        proj.apply(input, scratch, (0, hidden), Write::Set)?;
        layout.hook(hooks, point, scratch, hidden)?;
        add_into(x, scratch);
        Ok(())
    } else {
        proj.apply(input, x, (0, hidden), Write::Add)
    }
}

/// `x += y`, in parallel.
pub(crate) fn add_into(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(16 * 1024)
        .zip(y.par_chunks(16 * 1024))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
}

/// The bias of packed `[q | k | v]` rows (zeros where a projection has none), or `None` when
/// no projection has one.
fn qkv_bias(qkv: &Qkv, shape: Heads) -> Result<Option<Vec<f32>>> {
    let projections: &[Proj] = match qkv {
        Qkv::Separate(p) => p,
        Qkv::Fused(p) | Qkv::FusedPerHead(p) => std::slice::from_ref(p),
    };
    if projections.iter().all(|p| p.bias.is_none()) {
        return Ok(None);
    }
    let mut bias = Vec::with_capacity(shape.qkv_width());
    for p in projections {
        let width = p.dims()?.1;
        match p.bias {
            Some(b) => bias.extend_from_slice(Borrowed::of(b)?.slice()?),
            None => bias.resize(bias.len() + width, 0.0),
        }
    }
    Ok(Some(bias))
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
