//! One example's multi-head attention on explicit SIMD register tiles (pulp's `Simd` types).
//!
//! Per key/value head, the keys are packed once as `Kᵀ` (`dim` rows of `len` keys, padded to
//! whole vectors) and the values contiguously; then query rows go through in blocks of
//! [`BLOCK`]: scores for the block, softmax, and the block's share of `P V`, while its scores
//! are still in L1. Against the two `gemm` calls per head this replaced, bidirectional
//! attention runs at the same speed; causal attention computes only the keys a block can see,
//! and grouped query heads share one packing of their key/value head.

use super::rows::{exp_shifted_row, softcap_row};
use super::Heads;
use pulp::{Simd, WithSimd};

/// Query rows whose scores are computed, normalised and applied together.
const BLOCK: usize = 24;
/// Rows of one register tile (a multiple of which `BLOCK` is).
const TILE_ROWS: usize = 6;

/// One example: `rows` its packed `qkv` rows, `z` its output rows (`heads × dim` wide);
/// `kept`, when given, receives the probabilities as `heads` blocks of `len × len`.
pub(super) fn attend(rows: &[f32], shape: Heads, z: &mut [f32], kept: Option<&mut [f32]>) {
    glassbox_data::simd::arch().dispatch(Attend {
        rows,
        shape,
        z,
        kept,
    })
}

struct Attend<'a> {
    rows: &'a [f32],
    shape: Heads,
    z: &'a mut [f32],
    kept: Option<&'a mut [f32]>,
}

impl WithSimd for Attend<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Attend {
            rows,
            shape,
            z,
            mut kept,
        } = self;
        let lanes = S::F32_LANES;
        let (dim, width, z_width) = (shape.dim, shape.qkv_width(), shape.z_width());
        let len = rows.len() / width;
        let padded = len.div_ceil(lanes) * lanes;
        let group = shape.heads / shape.kv_heads;
        let (keys, values) = (z_width, z_width + shape.kv_heads * dim);
        let mut kt = vec![0f32; dim * padded];
        let mut vp = vec![0f32; len * dim];
        let mut scores = vec![0f32; BLOCK * padded];
        for head in 0..shape.heads {
            let (q_col, kv_col) = (head * dim, (head / group) * dim);
            if head % group == 0 {
                // Kᵀ for this key/value head; the padding columns stay zero.
                for (j, row) in rows.chunks_exact(width).enumerate() {
                    let key = &row[keys + kv_col..keys + kv_col + dim];
                    for (d, &v) in key.iter().enumerate() {
                        kt[d * padded + j] = v;
                    }
                    let value = &row[values + kv_col..values + kv_col + dim];
                    vp[j * dim..(j + 1) * dim].copy_from_slice(value);
                }
            }
            for first in (0..len).step_by(BLOCK) {
                let block = BLOCK.min(len - first);
                // Keys this block sees: all, or up to its last row when causal.
                let seen = if shape.causal { first + block } else { len };
                let seen_padded = seen.div_ceil(lanes) * lanes;
                let q = |r: usize| {
                    let at = (first + r) * width + q_col;
                    &rows[at..at + dim]
                };
                let s = &mut scores[..block * padded];
                scaled_scores(simd, q, block, &kt, padded, seen_padded, shape.scale, s);
                // Unnormalised: each row's 1 / Σ is applied to its share of P V instead.
                let mut inv = [0f32; BLOCK];
                for (r, row) in s.chunks_exact_mut(padded).enumerate() {
                    let past = if shape.causal { first + r + 1 } else { len };
                    // A sliding window hides the keys more than `window − 1` places back.
                    let from = shape
                        .window
                        .map_or(0, |w| (first + r + 1).saturating_sub(w));
                    let from = from.min(past);
                    let live = &mut row[from..past];
                    if let Some(cap) = shape.softcap {
                        softcap_row(live, cap);
                    }
                    inv[r] = 1.0 / exp_shifted_row(simd, live);
                    row[..from].fill(0.0);
                    row[past..seen].fill(0.0);
                }
                if let Some(p) = kept.as_deref_mut() {
                    let at = (head * len + first) * len;
                    for (r, row) in s.chunks_exact(padded).enumerate() {
                        let kept_row = &mut p[at + r * len..at + (r + 1) * len];
                        for (k, v) in kept_row.iter_mut().zip(&row[..seen]) {
                            *k = v * inv[r];
                        }
                        kept_row[seen..].fill(0.0);
                    }
                }
                let v = |j: usize| &vp[j * dim..(j + 1) * dim];
                let out = &mut z[first * z_width..(first + block) * z_width];
                weighted_values(simd, (s, &inv), padded, seen, v, dim, out, (q_col, z_width));
            }
        }
    }
}

/// `s[r][0..seen_padded] = scale · q(r) · Kᵀ` for `block` query rows (row stride `padded`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scaled_scores<'q, S: Simd>(
    simd: S,
    q: impl Fn(usize) -> &'q [f32],
    block: usize,
    kt: &[f32],
    padded: usize,
    seen_padded: usize,
    scale: f32,
    s: &mut [f32],
) {
    let lanes = S::F32_LANES;
    let mut r = 0;
    while r < block {
        let tall = if block - r >= TILE_ROWS { TILE_ROWS } else { 1 };
        let mut c = 0;
        while c < seen_padded {
            let wide = (seen_padded - c) / lanes;
            if tall == TILE_ROWS && wide >= 4 {
                let a: [&[f32]; TILE_ROWS] = std::array::from_fn(|i| q(r + i));
                let acc = tile::<S, TILE_ROWS, 4>(simd, a, &kt[c..], padded);
                store(simd, acc, &mut s[r * padded + c..], padded, [scale; _]);
                c += 4 * lanes;
            } else if tall == TILE_ROWS {
                let a: [&[f32]; TILE_ROWS] = std::array::from_fn(|i| q(r + i));
                let acc = tile::<S, TILE_ROWS, 1>(simd, a, &kt[c..], padded);
                store(simd, acc, &mut s[r * padded + c..], padded, [scale; _]);
                c += lanes;
            } else {
                let acc = tile::<S, 1, 1>(simd, [q(r)], &kt[c..], padded);
                store(simd, acc, &mut s[r * padded + c..], padded, [scale; _]);
                c += lanes;
            }
        }
        r += tall;
    }
}

/// `out[r][col..col + dim] = inv[r] · Σ_{j < seen} p[r][j] · v(j)` for the block's rows (`p`
/// rows `padded` apart, `out` rows `stride` apart).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn weighted_values<'v, S: Simd>(
    simd: S,
    (p, inv): (&[f32], &[f32; BLOCK]),
    padded: usize,
    seen: usize,
    v: impl Fn(usize) -> &'v [f32],
    dim: usize,
    out: &mut [f32],
    (col, stride): (usize, usize),
) {
    let lanes = S::F32_LANES;
    let block = p.len() / padded;
    let vectors = dim / lanes;
    let p_row = |r: usize| &p[r * padded..r * padded + seen];
    let mut r = 0;
    while r < block {
        let tall = if block - r >= TILE_ROWS { TILE_ROWS } else { 1 };
        let mut c = 0;
        while c < vectors {
            let b = |j: usize| &v(j)[c * lanes..];
            let at = r * stride + col + c * lanes;
            if tall == TILE_ROWS {
                let a: [&[f32]; TILE_ROWS] = std::array::from_fn(|i| p_row(r + i));
                let scales = std::array::from_fn(|i| inv[r + i]);
                if vectors - c >= 2 {
                    let acc = tile_rows::<S, TILE_ROWS, 2>(simd, a, b);
                    store(simd, acc, &mut out[at..], stride, scales);
                    c += 2;
                } else {
                    let acc = tile_rows::<S, TILE_ROWS, 1>(simd, a, b);
                    store(simd, acc, &mut out[at..], stride, scales);
                    c += 1;
                }
            } else {
                let acc = tile_rows::<S, 1, 1>(simd, [p_row(r)], b);
                store(simd, acc, &mut out[at..], stride, [inv[r]]);
                c += 1;
            }
        }
        r += tall;
    }
    // Head dimensions that are not whole vectors (small test models): the rest one by one.
    for d in vectors * lanes..dim {
        for i in 0..block {
            let sum = p_row(i)
                .iter()
                .enumerate()
                .fold(0f32, |acc, (j, &w)| w.mul_add(v(j)[d], acc));
            out[i * stride + col + d] = sum * inv[i];
        }
    }
}

/// `acc[r][c] = Σ_k a[r][k] · b[k · stride + c · lanes ..]`: `R × C` vector accumulators,
/// each `b` vector loaded once for `R` rows and each `a` value broadcast once for `C` vectors.
#[inline(always)]
fn tile<S: Simd, const R: usize, const C: usize>(
    simd: S,
    a: [&[f32]; R],
    b: &[f32],
    stride: usize,
) -> [[S::f32s; C]; R] {
    let lanes = S::F32_LANES;
    tile_rows::<S, R, C>(simd, a, |k| &b[k * stride..k * stride + C * lanes])
}

/// As [`tile`], with row `k` of `b` given by a function (the values of token `k`).
#[inline(always)]
fn tile_rows<'b, S: Simd, const R: usize, const C: usize>(
    simd: S,
    a: [&[f32]; R],
    b: impl Fn(usize) -> &'b [f32],
) -> [[S::f32s; C]; R] {
    let lanes = S::F32_LANES;
    let depth = a[0].len();
    let mut acc = [[simd.splat_f32s(0.0); C]; R];
    for k in 0..depth {
        let (vecs, _) = S::as_simd_f32s(&b(k)[..C * lanes]);
        for (acc_r, a_r) in acc.iter_mut().zip(&a) {
            let x = simd.splat_f32s(a_r[k]);
            for (acc_rc, v) in acc_r.iter_mut().zip(vecs) {
                *acc_rc = simd.mul_add_f32s(x, *v, *acc_rc);
            }
        }
    }
    acc
}

/// Writes `scale[r] · acc[r][c]` to `out[r · stride + c · lanes ..]`.
#[inline(always)]
fn store<S: Simd, const R: usize, const C: usize>(
    simd: S,
    acc: [[S::f32s; C]; R],
    out: &mut [f32],
    stride: usize,
    scale: [f32; R],
) {
    let lanes = S::F32_LANES;
    for (r, row) in acc.iter().enumerate() {
        let at = r * stride;
        let (vecs, _) = S::as_mut_simd_f32s(&mut out[at..at + C * lanes]);
        let s = simd.splat_f32s(scale[r]);
        for (dst, v) in vecs.iter_mut().zip(row) {
            *dst = simd.mul_f32s(*v, s);
        }
    }
}
