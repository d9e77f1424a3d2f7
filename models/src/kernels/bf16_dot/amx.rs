//! The same product on AMX tiles (`TDPBF16PS`), where the CPU has them (Intel Sapphire Rapids
//! and later): one instruction multiplies a 16 × 32 bf16 tile by a 32 × 16 one into a 16 × 16
//! f32 tile — 16,384 flops, against 64 for one `VDPBF16PS`. PyTorch's bf16 matmuls run on
//! these through oneDNN (`brg_matmul:…_amx`); without them glassbox's bf16 products ran at a
//! fifth of PyTorch's speed on such a CPU (docs/perf/memory.md).
//!
//! Both operands are already in AMX's layouts, so nothing is repacked:
//! - A (16 rows × 32 bf16) is 16 rows of the weight as the checkpoint holds it (`[out, in]`,
//!   row-major), 32 inputs of each: a strided load straight from the weight as held;
//! - B (16 rows of 16 bf16 pairs) must hold pair `q` of token `t` at row `q`, column `t`:
//!   exactly the parent's [`Packed`] panels (64 tokens per pair row, 256 bytes apart);
//! - C (16 × 16 f32) comes out `[weight row][token]`, the staging layout the parent already
//!   transposes into the row-major output.
//!
//! Eight tile registers hold a 2 × 2 block: two weight tiles, two token tiles and four
//! accumulators, i.e. 32 weight rows × 32 tokens per pass over the inputs.
//!
//! What it computes equals the `VDPBF16PS` kernel to f32 summation order: bf16 products with
//! f32 sums, subnormal inputs read as zero and subnormal results flushed (Intel SDM,
//! `TDPBF16PS`).
//!
//! Linux hands a process the 8 KB tile state only after it asks (`arch_prctl`
//! `ARCH_REQ_XCOMP_PERM`, kernel ≥ 5.16); [`available`] asks once and, refused, the parent's
//! `VDPBF16PS` kernel runs instead. Each rayon task loads the tile configuration (per-thread
//! state) on entry and releases the tiles on exit, so an idle thread's context switches do not
//! save 8 KB of tiles. `GLASSBOX_AMX=off` keeps the AMX path off, to compare the kernels.
//!
//! `unsafe_code` is allowed here for the instructions themselves (inline assembly: Rust's AMX
//! intrinsics are unstable) and the one system call.
#![allow(unsafe_code)]

use super::{pair_rows, tile_into, transpose_into, Packed, PANEL, ROWS};
use rayon::prelude::*;
use std::arch::asm;
use std::sync::OnceLock;

/// Rows of a tile (weight rows of A, pair rows of B, weight rows of C); also the tokens of B
/// and C, and the bf16 pairs of an A row.
const TILE: usize = 16;
/// Weight rows per 2 × 2 block.
const BLOCK_ROWS: usize = 2 * TILE;
/// Weight bytes a thread keeps hot while it sweeps its token panels: half of the 2 MB L2 of
/// the AMX CPUs (Sapphire, Emerald and Granite Rapids). Against the register tiles' 512 KB,
/// 5–15% faster on the 2,304-wide inputs of Gemma-2-2B (`examples/bf16_kernel_speed.rs`,
/// 2026-12-06: 21.9 against 23.2 ms for 1,024 × 2,304 × 9,216; 1.5 MB gave 21.1).
const AMX_WEIGHT_BLOCK_BYTES: usize = 1024 * 1024;
/// Most steps of 32 inputs per pass over the weights. A pass over all of a long input (the
/// MLP's down projection: 9,216) re-read every thread's panels from L3 for each block of
/// 32 weight rows; in chunks of at most 2,304 inputs the weight block holds 224 rows and the
/// panels are re-read 7× less often, for one more read-add-write of the output per chunk.
/// 1,024 × 9,216 × 2,304 (examples/bf16_kernel_speed.rs, 2026-12-06, Sapphire Rapids): 29.1 ms
/// in one pass, 22.5 in chunks of 72 steps, 22.7–23.3 at 48–144, 28.3 at 18.
const CHUNK_STEPS: usize = 72;

/// Steps per chunk for `steps` in all: equal chunks of at most [`CHUNK_STEPS`].
fn chunk_steps(steps: usize) -> usize {
    steps.div_ceil(steps.div_ceil(CHUNK_STEPS).max(1)).max(1)
}

/// Bytes between successive pair rows of a [`Packed`] panel.
const PANEL_ROW_BYTES: usize = PANEL * 4;

/// Whether the AMX kernel runs on this machine: the CPU has AMX-TILE and AMX-BF16, the
/// `VDPBF16PS` kernel would run (so `GLASSBOX_SIMD` below `avx512` turns AMX off too),
/// `GLASSBOX_AMX` is not `off`, and the kernel granted the tile state.
pub fn available() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    super::native()
        && *READY.get_or_init(|| {
            let wanted = std::env::var("GLASSBOX_AMX")
                .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "off" | "0" | "no"))
                .unwrap_or(true);
            wanted && cpu_has_amx_bf16() && request_tile_state()
        })
}

/// CPUID leaf 7, sub-leaf 0: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
fn cpu_has_amx_bf16() -> bool {
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    leaf.edx & (1 << 22) != 0 && leaf.edx & (1 << 24) != 0
}

/// Asks Linux for permission to use the tile data state (XTILEDATA, state component 18).
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: `arch_prctl` with these arguments only changes the process's permitted
    // extended-state components; it reads and writes no memory of ours.
    let status = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    status == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// The 64-byte tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn all_full() -> Self {
        let mut bytes = [0u8; 64];
        bytes[0] = 1;
        for t in 0..8 {
            bytes[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            bytes[48 + t] = TILE as u8;
        }
        Self(bytes)
    }
}

/// Whether [`tiles`] takes this input width: whole A tiles (32 inputs) along every row.
pub fn takes(in_dim: usize) -> bool {
    in_dim.is_multiple_of(2 * TILE) && available()
}

/// The parent's `tiles` on AMX: token panels split across threads, weight rows in blocks that
/// stay in L2 while a thread sweeps its panels, 32-row steps on the tiles and the last
/// `out_dim % 32` rows on the `VDPBF16PS` register tile.
///
/// # Safety
/// [`takes`] must have returned true for `w.len() / out_dim`, and `x` must have been packed
/// from rows of that width.
pub unsafe fn tiles(
    x: &Packed,
    w: &[u16],
    out_dim: usize,
    dst: &mut [f32],
    (first, stride): (usize, usize),
    accumulate: bool,
) {
    let pairs = x.pairs;
    let in_dim = 2 * pairs;
    assert_eq!(w.len(), out_dim * in_dim, "weight of {out_dim} × {in_dim}");
    assert!(in_dim.is_multiple_of(2 * TILE), "whole A tiles");
    let panel_len = x.panel_len();
    let steps = in_dim / (2 * TILE);
    let chunk_steps = chunk_steps(steps);
    let chunk_pairs = chunk_steps * TILE;
    let block_rows =
        (AMX_WEIGHT_BLOCK_BYTES / (chunk_pairs * 4)).max(BLOCK_ROWS) / BLOCK_ROWS * BLOCK_ROWS;
    // The rows past the last whole 32 as 32-bit words for the register tile (a copy: the
    // weight as held need not be 4-byte aligned).
    let tail_from = out_dim / BLOCK_ROWS * BLOCK_ROWS;
    let tail: Vec<u32> = w[tail_from * in_dim..]
        .chunks_exact(2)
        .map(|p| u32::from(p[0]) | (u32::from(p[1]) << 16))
        .collect();
    x.tasks(dst, stride).for_each(|(out, lanes)| {
        let config = TileConfig::all_full();
        // SAFETY: `takes` checked AMX and the tile permission; the configuration is valid.
        unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack)) };
        let mut stage = vec![0f32; block_rows.min(out_dim) * PANEL];
        for chunk in (0..steps).step_by(chunk_steps) {
            let chunk = chunk..steps.min(chunk + chunk_steps);
            // Later chunks add onto what the first wrote; the tail rows (whole sums on the
            // register tile) are done in the first.
            let (first_chunk, accumulate) = (chunk.start == 0, accumulate || chunk.start > 0);
            for block in (0..out_dim).step_by(block_rows) {
                let width = block_rows.min(out_dim - block);
                let whole = tail_from.min(block + width).saturating_sub(block);
                for (p, panel) in lanes.chunks_exact(panel_len).enumerate() {
                    for j in (0..whole).step_by(BLOCK_ROWS) {
                        let a = &w[(block + j) * in_dim..(block + j + BLOCK_ROWS) * in_dim];
                        for half in 0..2 {
                            let c = &mut stage[j * PANEL..(j + BLOCK_ROWS) * PANEL];
                            let t0 = half * BLOCK_ROWS;
                            // SAFETY: tiles configured above; `block_2x2` reads within
                            // `a` and the panel and writes within `c` (its doc says how).
                            unsafe { block_2x2(a, in_dim, panel, t0, c, chunk.clone()) };
                        }
                    }
                    let width = if first_chunk { width } else { whole };
                    for j in (whole..width).step_by(ROWS) {
                        let n = ROWS.min(width - j);
                        let from = (block + j - tail_from) * pairs;
                        let w = &tail[from..from + n * pairs];
                        // SAFETY: AMX implies the AVX-512 BF16 that `tile_into` needs
                        // (`available` requires the parent's `native`).
                        unsafe { tile_into(panel, w, n, pairs, &mut stage[j * PANEL..]) };
                    }
                    let out = &mut out[p * PANEL * stride..];
                    let tokens = PANEL.min(out.len() / stride);
                    let cols = (first + block, stride);
                    transpose_into(&stage, width, tokens, out, cols, accumulate);
                }
            }
        }
        // SAFETY: returns the tiles to their initial state; no operands.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    });
}

/// The parent's [`super::gated_into`]: for each block of 32-row steps and each token panel,
/// both products land in their staging buffers (`[neuron][token]`, as [`tiles`] stages them),
/// `act(gate) ⊙ up` is taken there by the row kernel `act_mul` uses, and each pair of neuron
/// rows is rounded into the pair row of `out`'s panel — which is the staging layout already
/// (tokens along the row), so no transpose is needed on either side. One pass over the inputs
/// (no chunks): the gate and up blocks share the L2 budget.
///
/// # Safety
/// [`takes`] must have returned true for the input width (`2 · x.pairs`) and for `out_dim`;
/// `out` must have been reset for `x.rows` tokens of `out_dim` inputs.
pub unsafe fn gated(
    x: &Packed,
    gate: &[u16],
    up: &[u16],
    out_dim: usize,
    act: crate::kernels::Act,
    out: &mut Packed,
) {
    let pairs = x.pairs;
    let in_dim = 2 * pairs;
    assert_eq!(gate.len(), out_dim * in_dim, "gate of {out_dim} × {in_dim}");
    assert_eq!(up.len(), out_dim * in_dim, "up of {out_dim} × {in_dim}");
    assert!(
        in_dim.is_multiple_of(2 * TILE) && out_dim.is_multiple_of(BLOCK_ROWS),
        "whole tiles"
    );
    assert_eq!(
        (out.rows, out.pairs),
        (x.rows, out_dim / 2),
        "output panels"
    );
    let steps = in_dim / (2 * TILE);
    let block_rows =
        (AMX_WEIGHT_BLOCK_BYTES / (2 * pairs * 4)).max(BLOCK_ROWS) / BLOCK_ROWS * BLOCK_ROWS;
    let (panel_len, out_panel_len) = (x.panel_len(), out.panel_len());
    let per_task = x.panels_per_task();
    let inputs = x.lanes.par_chunks(per_task * panel_len);
    let outputs = out.lanes.par_chunks_mut(per_task * out_panel_len);
    inputs.zip(outputs).for_each(|(lanes, outs)| {
        let config = TileConfig::all_full();
        // SAFETY: `takes` checked AMX and the tile permission; the configuration is valid.
        unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack)) };
        let stage_len = block_rows.min(out_dim) * PANEL;
        let (mut g_stage, mut u_stage) = (vec![0f32; stage_len], vec![0f32; stage_len]);
        for block in (0..out_dim).step_by(block_rows) {
            let width = block_rows.min(out_dim - block);
            let rows = block * in_dim..(block + width) * in_dim;
            let (g, u) = (&gate[rows.clone()], &up[rows]);
            let panels = lanes.chunks_exact(panel_len);
            for (panel, outs) in panels.zip(outs.chunks_exact_mut(out_panel_len)) {
                for (w, stage) in [(g, &mut g_stage), (u, &mut u_stage)] {
                    for j in (0..width).step_by(BLOCK_ROWS) {
                        let a = &w[j * in_dim..(j + BLOCK_ROWS) * in_dim];
                        for half in 0..2 {
                            let c = &mut stage[j * PANEL..(j + BLOCK_ROWS) * PANEL];
                            // SAFETY: tiles configured above; `block_2x2` reads within `a`
                            // and the panel and writes within `c` (its doc says how).
                            unsafe { block_2x2(a, in_dim, panel, half * BLOCK_ROWS, c, 0..steps) };
                        }
                    }
                }
                let (g_rows, u_rows) = (&mut g_stage[..width * PANEL], &u_stage[..width * PANEL]);
                crate::kernels::rows::act_mul(g_rows, u_rows, act);
                let words: &mut [u32] = bytemuck::cast_slice_mut(outs);
                // SAFETY: AMX implies the AVX-512 BF16 that `pair_rows` needs (`available`
                // requires the parent's `native`).
                unsafe { pair_rows(g_rows, &mut words[block / 2 * PANEL..]) };
            }
        }
        // SAFETY: returns the tiles to their initial state; no operands.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    });
}

/// `c[r][t0 + t] = Σ_k a[r][k] · panel[t0 + t][k]` for the 32 weight rows `r` of `a` (rows
/// `in_dim` bf16 wide) and the 32 tokens `t0 ..` of the 64-token `panel`, over the inputs
/// `32 × steps`; `c` has 64-token rows (the parent's staging layout).
///
/// # Safety
/// The tiles must be configured as [`TileConfig::all_full`]; `a` must hold 32 rows of
/// `in_dim` (a multiple of 32) values, `panel` `in_dim / 2` pair rows of 64 tokens, `c` 32 rows
/// of 64 floats, and `t0` be 0 or 32.
#[inline]
unsafe fn block_2x2(
    a: &[u16],
    in_dim: usize,
    panel: &[super::Lanes],
    t0: usize,
    c: &mut [f32],
    steps: std::ops::Range<usize>,
) {
    debug_assert!(a.len() >= BLOCK_ROWS * in_dim && t0 + 2 * TILE <= PANEL);
    debug_assert!(panel.len() * 16 >= in_dim / 2 * PANEL && c.len() >= BLOCK_ROWS * PANEL);
    let a_stride = in_dim * 2;
    let top = a.as_ptr().cast::<u8>();
    // SAFETY (all pointer arithmetic below): offsets stay inside `a`, `panel` and `c` by the
    // sizes asserted above; tile loads read 16 rows of 64 bytes at the given stride.
    unsafe {
        let bottom = top.add(TILE * a_stride);
        let b = panel.as_ptr().cast::<u8>().add(t0 * 4);
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        // Each step: 32 inputs (64 bytes of an A row, 16 pair rows of B).
        for step in steps {
            let a_top = top.add(step * 64);
            let a_bottom = bottom.add(step * 64);
            let b_left = b.add(step * TILE * PANEL_ROW_BYTES);
            asm!(
                "tileloadd tmm4, [{a_top} + {a_stride}*1]",
                "tileloadd tmm6, [{b_left} + {b_stride}*1]",
                "tileloadd tmm7, [{b_right} + {b_stride}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a_bottom} + {a_stride}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a_top = in(reg) a_top,
                a_bottom = in(reg) a_bottom,
                b_left = in(reg) b_left,
                b_right = in(reg) b_left.add(TILE * 4),
                a_stride = in(reg) a_stride,
                b_stride = in(reg) PANEL_ROW_BYTES,
                options(nostack, readonly)
            );
        }
        let c = c.as_mut_ptr().add(t0).cast::<u8>();
        asm!(
            "tilestored [{top_left} + {c_stride}*1], tmm0",
            "tilestored [{top_right} + {c_stride}*1], tmm1",
            "tilestored [{bottom_left} + {c_stride}*1], tmm2",
            "tilestored [{bottom_right} + {c_stride}*1], tmm3",
            top_left = in(reg) c,
            top_right = in(reg) c.add(TILE * 4),
            bottom_left = in(reg) c.add(TILE * PANEL_ROW_BYTES),
            bottom_right = in(reg) c.add(TILE * PANEL_ROW_BYTES + TILE * 4),
            c_stride = in(reg) PANEL_ROW_BYTES,
            options(nostack)
        );
    }
}
