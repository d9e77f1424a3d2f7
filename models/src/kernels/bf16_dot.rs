//! `x · Wᵀ` with bf16 inputs and f32 accumulation, on AVX-512 BF16's `VDPBF16PS` where the
//! CPU has it (two bf16 products per f32 lane per instruction: twice an f32 FMA's rate).
//!
//! What it computes, on every CPU: the activations rounded to bf16 (round to nearest even),
//! times a weight held in bf16, summed in f32. Without the instruction (AVX2-only CPUs,
//! `GLASSBOX_SIMD` below `avx512`) the same bf16-rounded values run through the f32 GEMM, so
//! a run's numbers agree across machines to f32 summation order — except for subnormals
//! (below 1.2e-38), which `VDPBF16PS` reads as zero and flushes.
//!
//! Layout. The weight stays as the checkpoint holds it (`[out, in]`, row-major, no packing
//! and no copy): each k-pair of a weight row is one 32-bit word, broadcast to all 16 lanes.
//! The activations are what gets packed — rounded once per input (q, k and v share one) into
//! panels of 64 tokens where lane `t` of word `q` holds token `t`'s pair `q` — because they are
//! a fraction of a layer's weights at extraction batch sizes (1,024 tokens against 2,304 ×
//! 9,216 weights). A register tile is six weight rows (output columns) × 64 tokens; tiles
//! are staged and transposed into the row-major output (`transpose`: 16 × 16 squares in
//! registers, for the packing too). Where the CPU has AMX, [`amx`] runs the same product on
//! its tiles instead (8× the register tiles' rate on Sapphire Rapids).
//!
//! A gated MLP ([`gated_into`], AMX only) takes both products, `act(gate) ⊙ up` and the
//! packing for the down projection in one pass over staged tiles, never writing either product.
//!
//! `unsafe_code` is allowed here (and in the child modules) for entering the
//! `target_feature` functions after checking that the CPU has the features, and for [`amx`]'s
//! inline assembly. The register kernels themselves are safe code (loads through slices,
//! `bytemuck` casts between vector and array types).
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
pub mod amx;
mod transpose;

use super::gemm::{matmul, View};
use bytemuck::Zeroable;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m512, __m512bh};
use transpose::transpose_into;

/// Tokens per packed panel: four vectors of 16 lanes.
pub const PANEL: usize = 64;
/// Vectors per panel.
const VECTORS: usize = PANEL / 16;
/// Weight rows (output columns) per register tile: 6 × 4 accumulators + 4 operands + 1
/// broadcast of the 32 vector registers.
const ROWS: usize = 6;
/// Weight bytes a thread keeps hot while it sweeps its token panels (half of a 1 MB L2).
const WEIGHT_BLOCK_BYTES: usize = 512 * 1024;

/// One 16-lane vector of bf16 pairs, as the kernel reads it.
#[cfg(target_arch = "x86_64")]
type Lanes = __m512bh;
#[cfg(not(target_arch = "x86_64"))]
type Lanes = [u32; 16];

/// Rounds an f32 to the nearest bf16 (ties to even), as its bit pattern; NaN stays NaN.
pub fn round_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let rounding = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// `v` rounded to bf16 and widened back: the value the bf16 product uses.
pub fn round(v: f32) -> f32 {
    f32::from_bits(u32::from(round_bits(v)) << 16)
}

/// Activations rounded to bf16 and packed in 64-token panels, reusable across projections
/// that share an input.
#[derive(Default)]
pub struct Packed {
    lanes: Vec<Lanes>,
    rows: usize,
    pairs: usize,
}

impl Packed {
    /// Rounds and packs `x` (`rows × in_dim`, row-major) into this buffer's memory.
    pub fn fill(&mut self, x: &[f32], in_dim: usize) {
        let rows = x.len() / in_dim;
        self.reset(rows, in_dim);
        let panel_len = self.panel_len();
        self.lanes
            .par_chunks_mut(panel_len)
            .enumerate()
            .for_each(|(p, panel)| {
                let words: &mut [u32] = bytemuck::cast_slice_mut(panel);
                let first = p * PANEL;
                transpose::pack_panel(x, in_dim, first, PANEL.min(rows - first), words);
            });
    }

    /// Empties the buffer for `rows` tokens of `in_dim` inputs, all zero (so are the padding
    /// tokens of the last panel and the half pair of an odd width).
    fn reset(&mut self, rows: usize, in_dim: usize) {
        let pairs = in_dim.div_ceil(2);
        self.rows = rows;
        self.pairs = pairs;
        self.lanes.clear();
        self.lanes
            .resize(rows.div_ceil(PANEL) * pairs * VECTORS, Lanes::zeroed());
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Panels per pool task (one task per thread), as [`Packed::tasks`] deals them out.
    fn panels_per_task(&self) -> usize {
        self.rows
            .div_ceil(PANEL)
            .div_ceil(super::threads().max(1))
            .max(1)
    }

    /// Values of one packed panel.
    fn panel_len(&self) -> usize {
        self.pairs * VECTORS
    }

    /// A product's tasks, one per pool thread: a run of whole panels with the rows of `dst`
    /// (rows `stride` wide) their tokens write, so no two tasks write the same row.
    fn tasks<'a>(
        &'a self,
        dst: &'a mut [f32],
        stride: usize,
    ) -> impl IndexedParallelIterator<Item = (&'a mut [f32], &'a [Lanes])> {
        let per_task = self.panels_per_task();
        dst[..self.rows * stride]
            .par_chunks_mut(per_task * PANEL * stride)
            .zip(self.lanes.par_chunks(per_task * self.panel_len()))
    }
}

/// Token `t`'s pairs from pair `from` on (`row` starting at that pair), rounded one by one.
fn pack_pairs(row: &[f32], from: usize, t: usize, words: &mut [u32]) {
    for (q, pair) in row.chunks(2).enumerate() {
        let low = u32::from(round_bits(pair[0]));
        let high = pair.get(1).map_or(0, |&v| u32::from(round_bits(v)));
        words[(from + q) * PANEL + t] = low | (high << 16);
    }
}

/// Whether [`matmul_wt`] reads only the packed activations for an `[out, in_dim]` weight `w`
/// (never its f32 rows, which only the f32 route reads): AMX for this width, or the
/// `VDPBF16PS` kernel with the weight's pairs 4-byte aligned. Then the rows need not exist,
/// as after [`gated_into`].
pub fn reads_packed_only(in_dim: usize, w: &[u16]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if amx::takes(in_dim) {
        return true;
    }
    native() && in_dim.is_multiple_of(2) && bytemuck::try_cast_slice::<u16, u32>(w).is_ok()
}

/// Whether the bf16 dot-product kernel runs here (else [`matmul_wt`] takes the f32 route).
pub fn native() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        glassbox_data::simd::level() == glassbox_data::simd::SimdLevel::Avx512
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `act(x · Gᵀ) ⊙ (x · Uᵀ)` packed into `out` as [`Packed::fill`] would pack it from the rows
/// written out — bit for bit — with the products from the kernel [`matmul_wt`] runs for them:
/// AMX (where it takes the input width; then `out_dim` must be whole tiles too) or the
/// `VDPBF16PS` kernel (weights 4-byte aligned, an even `out_dim`). `false`: not done here,
/// compute the products and pack them. A gated MLP's neurons go straight into the down
/// projection's input: neither product is transposed into rows, activated in another pass or
/// packed from memory. `gate` and `up` are `[out_dim, in]` bf16 weights as raw bits.
pub fn gated_into(
    x: &Packed,
    gate: &[u16],
    up: &[u16],
    out_dim: usize,
    act: super::Act,
    out: &mut Packed,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let in_dim = 2 * x.pairs;
        if gate.len() != out_dim * in_dim || up.len() != gate.len() {
            return false;
        }
        // The products come from the kernel `matmul_wt` would run for them (AMX where it
        // takes the input width), so the neurons are the same bits either way.
        if amx::takes(in_dim) {
            if !amx::takes(out_dim) {
                return false;
            }
            out.reset(x.rows, out_dim);
            // SAFETY: `takes` checked the CPU, the permission and both widths; `x` is packed
            // from rows of `in_dim` inputs (the weights' sizes checked above).
            unsafe { amx::gated(x, gate, up, out_dim, act, out) };
            return true;
        }
        let (g, u) = (
            bytemuck::try_cast_slice::<u16, u32>(gate),
            bytemuck::try_cast_slice::<u16, u32>(up),
        );
        if let (true, Ok(g), Ok(u)) = (native() && out_dim.is_multiple_of(2), g, u) {
            out.reset(x.rows, out_dim);
            // SAFETY: `native` checked that this CPU has AVX-512F and AVX-512 BF16; the
            // weights hold `out_dim` rows of `x.pairs` words (checked above).
            unsafe { tiles_gated(x, g, u, out_dim, act, out) };
            return true;
        }
    }
    let _ = (x, gate, up, out_dim, act, out);
    false
}

/// Columns `first .. first + out_dim` of `dst` (rows `stride` wide) `= x · Wᵀ` (or `+=` with
/// `accumulate`), `x` packed by [`Packed::fill`] from `x_f32` (its unrounded values, which the
/// f32 route rounds the same way), `w` the `[out, in]` bf16 weight as raw bits.
#[allow(clippy::too_many_arguments)]
pub fn matmul_wt(
    x: &Packed,
    x_f32: &[f32],
    w: &[u16],
    out_dim: usize,
    dst: &mut [f32],
    (first, stride): (usize, usize),
    accumulate: bool,
    scratch: &mut Vec<f32>,
) {
    let in_dim = w.len() / out_dim.max(1);
    debug_assert_eq!(w.len(), out_dim * in_dim);
    debug_assert_eq!(x.rows * in_dim, x_f32.len());
    let words = in_dim
        .is_multiple_of(2)
        .then(|| bytemuck::try_cast_slice::<u16, u32>(w).ok())
        .flatten();
    #[cfg(target_arch = "x86_64")]
    if amx::takes(in_dim) {
        // SAFETY: `takes` checked the CPU, the permission and the width; `x` holds rows of
        // `in_dim` (asserted above in debug builds, and by `tiles` on the weight's size).
        unsafe { amx::tiles(x, w, out_dim, dst, (first, stride), accumulate) };
        return;
    }
    match words {
        #[cfg(target_arch = "x86_64")]
        Some(words) if native() => {
            // SAFETY: `native` checked that this CPU has AVX-512F and AVX-512 BF16.
            unsafe { tiles(x, words, out_dim, dst, (first, stride), accumulate) }
        }
        _ => f32_route(x_f32, w, out_dim, dst, (first, stride), accumulate, scratch),
    }
}

/// The same product in f32: `x` rounded to bf16 values, `w` widened, through `gemm`.
fn f32_route(
    x: &[f32],
    w: &[u16],
    out_dim: usize,
    dst: &mut [f32],
    (first, stride): (usize, usize),
    accumulate: bool,
    scratch: &mut Vec<f32>,
) {
    let in_dim = w.len() / out_dim;
    let rows = x.len() / in_dim;
    scratch.clear();
    scratch.extend(w.iter().map(|&b| f32::from_bits(u32::from(b) << 16)));
    let rounded: Vec<f32> = x.par_iter().map(|&v| round(v)).collect();
    matmul(
        (rows, in_dim, out_dim),
        dst,
        View {
            offset: first,
            row_stride: stride,
            col_stride: 1,
        },
        &rounded,
        View::rows(0, in_dim),
        scratch,
        View::transposed(0, in_dim),
        1.0,
        accumulate,
        super::threads(),
    );
}

/// Every register tile, token panels split across threads (each writes its own rows of
/// `dst`), weight rows in blocks that stay in L2 while a thread sweeps its panels. A block's
/// tiles for one panel land in a staging buffer in the tiles' own layout (whole-vector
/// stores), which is then transposed into `dst` a token row at a time: stored straight from
/// the tiles, each of a tile's 64 tokens touched its own cache line of `dst` for six values,
/// and that cost 13% of the kernel's time on the Gemma-2-2B shapes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn tiles(
    x: &Packed,
    w: &[u32],
    out_dim: usize,
    dst: &mut [f32],
    (first, stride): (usize, usize),
    accumulate: bool,
) {
    let (pairs, panel_len) = (x.pairs, x.panel_len());
    let block_rows = (WEIGHT_BLOCK_BYTES / (pairs * 4)).max(ROWS) / ROWS * ROWS;
    x.tasks(dst, stride).for_each(|(out, lanes)| {
        // `[weight row of the block][token of the panel]`.
        let mut stage = vec![0f32; block_rows.min(out_dim) * PANEL];
        for block in (0..out_dim).step_by(block_rows) {
            let width = block_rows.min(out_dim - block);
            for (p, panel) in lanes.chunks_exact(panel_len).enumerate() {
                for j in (0..width).step_by(ROWS) {
                    let n = ROWS.min(width - j);
                    let w = &w[(block + j) * pairs..(block + j + n) * pairs];
                    tile_into(panel, w, n, pairs, &mut stage[j * PANEL..]);
                }
                let out = &mut out[p * PANEL * stride..];
                let tokens = PANEL.min(out.len() / stride);
                let cols = first + block;
                transpose_into(&stage, width, tokens, out, (cols, stride), accumulate);
            }
        }
    });
}

/// [`tile`]'s `n` rows stored into the first `n` rows of `stage` (64 tokens each).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn tile_into(panel: &[__m512bh], w: &[u32], n: usize, pairs: usize, stage: &mut [f32]) {
    let acc = tile(panel, w, n, pairs);
    for (vectors, row) in acc.iter().take(n).zip(stage.chunks_exact_mut(PANEL)) {
        for (lanes, vector) in row.chunks_exact_mut(16).zip(vectors) {
            lanes.copy_from_slice(&bytemuck::cast::<__m512, [f32; 16]>(*vector));
        }
    }
}

/// [`gated_into`] on the `VDPBF16PS` register tiles: per weight block and token panel, both
/// products staged as [`tiles`] stages them, `act(gate) ⊙ up` taken there and each neuron pair
/// rounded into `out`'s panel row (the staging layout already). `out` must have been reset
/// for `x.rows` tokens of `out_dim` (even) inputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn tiles_gated(
    x: &Packed,
    gate: &[u32],
    up: &[u32],
    out_dim: usize,
    act: super::Act,
    out: &mut Packed,
) {
    let (pairs, panel_len, out_panel_len) = (x.pairs, x.panel_len(), out.panel_len());
    // Rows per block stay a multiple of ROWS, so even: every block starts on a neuron pair.
    let block_rows = (WEIGHT_BLOCK_BYTES / (2 * pairs * 4)).max(ROWS) / ROWS * ROWS;
    let per_task = x.panels_per_task();
    let inputs = x.lanes.par_chunks(per_task * panel_len);
    let outputs = out.lanes.par_chunks_mut(per_task * out_panel_len);
    inputs.zip(outputs).for_each(|(lanes, outs)| {
        let stage_len = block_rows.min(out_dim) * PANEL;
        let (mut g_stage, mut u_stage) = (vec![0f32; stage_len], vec![0f32; stage_len]);
        for block in (0..out_dim).step_by(block_rows) {
            let width = block_rows.min(out_dim - block);
            let panels = lanes.chunks_exact(panel_len);
            for (panel, outs) in panels.zip(outs.chunks_exact_mut(out_panel_len)) {
                for (w, stage) in [(gate, &mut g_stage), (up, &mut u_stage)] {
                    for j in (0..width).step_by(ROWS) {
                        let n = ROWS.min(width - j);
                        let w = &w[(block + j) * pairs..(block + j + n) * pairs];
                        tile_into(panel, w, n, pairs, &mut stage[j * PANEL..]);
                    }
                }
                let (g_rows, u_rows) = (&mut g_stage[..width * PANEL], &u_stage[..width * PANEL]);
                super::rows::act_mul(g_rows, u_rows, act);
                let words: &mut [u32] = bytemuck::cast_slice_mut(outs);
                pair_rows(g_rows, &mut words[block / 2 * PANEL..]);
            }
        }
    });
}

/// `words[q][t]` (rows of [`PANEL`] words) = the bf16 pair of `stage[2q][t]` (low half) and
/// `stage[2q + 1][t]` (high half), rounded to nearest even by `VCVTNEPS2BF16` as the parent's
/// packing rounds, for every row pair of `stage` (rows of [`PANEL`] floats).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn pair_rows(stage: &[f32], words: &mut [u32]) {
    use std::arch::x86_64::{
        __m256i, _mm512_cvtepu16_epi32, _mm512_cvtneps_pbh, _mm512_or_si512, _mm512_slli_epi32,
    };
    for (q, rows) in stage.chunks_exact(2 * PANEL).enumerate() {
        let (low, high) = rows.split_at(PANEL);
        for v in 0..PANEL / 16 {
            let lanes = |row: &[f32]| -> [f32; 16] {
                row[v * 16..v * 16 + 16].try_into().expect("16 floats")
            };
            let widen = |row: &[f32]| {
                let halves = _mm512_cvtneps_pbh(bytemuck::cast(lanes(row)));
                _mm512_cvtepu16_epi32(bytemuck::cast::<_, __m256i>(halves))
            };
            let pair = _mm512_or_si512(widen(low), _mm512_slli_epi32::<16>(widen(high)));
            let at = q * PANEL + v * 16;
            let dst: &mut [u32; 16] = (&mut words[at..at + 16]).try_into().expect("16 words");
            *dst = bytemuck::cast(pair);
        }
    }
}

/// Accumulators of one tile: `[weight row][token vector]`.
#[cfg(target_arch = "x86_64")]
type Tile = [[__m512; VECTORS]; ROWS];

/// One register tile: `n ≤ ROWS` weight rows of `pairs` words each against a 64-token panel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
fn tile(panel: &[__m512bh], w: &[u32], n: usize, pairs: usize) -> Tile {
    use std::arch::x86_64::{_mm512_dpbf16_ps, _mm512_set1_epi32, _mm512_setzero_ps};
    let mut acc: Tile = [[_mm512_setzero_ps(); VECTORS]; ROWS];
    // Rows past `n` read row 0 again (their sums are never stored): one loop shape for all.
    let row = |r: usize| &w[(if r < n { r } else { 0 }) * pairs..][..pairs];
    let rows: [&[u32]; ROWS] = std::array::from_fn(row);
    for (q, lanes) in panel.chunks_exact(VECTORS).enumerate() {
        let lanes: &[__m512bh; VECTORS] = lanes.try_into().expect("four vectors per pair");
        for r in 0..ROWS {
            let pair: __m512bh = bytemuck::cast(_mm512_set1_epi32(rows[r][q] as i32));
            for v in 0..VECTORS {
                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], lanes[v], pair);
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests;
