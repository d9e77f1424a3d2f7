//! The two transposes around the bf16 product kernels, 16 × 16 words at a time in AVX-512
//! registers: packing tokens into panels (token-major rows in, pair-major panel rows out) and
//! the kernels' `[weight row][token]` staging into the row-major output. Done one word at a
//! time, each touched a different cache line per word: with the products on AMX tiles the two
//! took 20–25% of a Gemma-2-2B projection's time (packing 5.3 ms of 28 on the 9,216-wide
//! input, `examples/bf16_kernel_speed.rs`).

use super::{pack_pairs, PANEL};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::__m512;

/// Sixteen vectors of sixteen 32-bit lanes.
#[cfg(target_arch = "x86_64")]
type Square = [__m512; 16];

/// `out[c][r] = rows[r][c]` for a 16 × 16 square of 32-bit values (floats or bf16 pairs: only
/// the bits move). Four rounds: 32-bit and 64-bit interleaves within 128-bit lanes, then two
/// rounds of 128-bit lane shuffles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose16(rows: &Square) -> Square {
    use std::arch::x86_64::{
        _mm512_castpd_ps, _mm512_castps_pd, _mm512_shuffle_f32x4, _mm512_unpackhi_pd,
        _mm512_unpackhi_ps, _mm512_unpacklo_pd, _mm512_unpacklo_ps,
    };
    let mut t = *rows;
    for j in 0..8 {
        t[2 * j] = _mm512_unpacklo_ps(rows[2 * j], rows[2 * j + 1]);
        t[2 * j + 1] = _mm512_unpackhi_ps(rows[2 * j], rows[2 * j + 1]);
    }
    // u[4j + m], 128-bit lane L: rows 4j .. 4j + 4 of column 4L + m.
    let mut u = t;
    let pd = _mm512_castps_pd;
    for j in 0..4 {
        let (a, b, c, d) = (t[4 * j], t[4 * j + 1], t[4 * j + 2], t[4 * j + 3]);
        u[4 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        u[4 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        u[4 * j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        u[4 * j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    // 0x88 takes 128-bit lanes 0 and 2 of each operand, 0xDD lanes 1 and 3.
    let mut v = u;
    for m in 0..4 {
        v[m] = _mm512_shuffle_f32x4::<0x88>(u[m], u[m + 4]);
        v[m + 4] = _mm512_shuffle_f32x4::<0xDD>(u[m], u[m + 4]);
        v[m + 8] = _mm512_shuffle_f32x4::<0x88>(u[m + 8], u[m + 12]);
        v[m + 12] = _mm512_shuffle_f32x4::<0xDD>(u[m + 8], u[m + 12]);
    }
    let mut out = v;
    for m in 0..4 {
        out[m] = _mm512_shuffle_f32x4::<0x88>(v[m], v[m + 8]);
        out[m + 8] = _mm512_shuffle_f32x4::<0xDD>(v[m], v[m + 8]);
        out[m + 4] = _mm512_shuffle_f32x4::<0x88>(v[m + 4], v[m + 12]);
        out[m + 12] = _mm512_shuffle_f32x4::<0xDD>(v[m + 4], v[m + 12]);
    }
    out
}

/// Packs rows `first ..` of `x` (rows `in_dim` wide, at most [`PANEL`] of them: `count`) into
/// one panel's words (`words[q * PANEL + t]` = token `t`'s pair `q`, bf16 rounded to nearest
/// even). 16 tokens × 32 inputs at a time: each token's 32 floats rounded into one vector of
/// 16 pairs (`VCVTNE2PS2BF16`), the square transposed, and each pair's 16 tokens stored as one
/// vector. Inputs past the last whole 32 go one by one.
pub(super) fn pack_panel(x: &[f32], in_dim: usize, first: usize, count: usize, words: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if super::native() {
        // SAFETY: `native` checked that this CPU has AVX-512F and AVX-512 BF16.
        unsafe { pack_panel_native(x, in_dim, first, count, words) };
        return;
    }
    for t in 0..count {
        let row = &x[(first + t) * in_dim..(first + t + 1) * in_dim];
        pack_pairs(row, 0, t, words);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn pack_panel_native(x: &[f32], in_dim: usize, first: usize, count: usize, words: &mut [u32]) {
    use std::arch::x86_64::{_mm512_cvtne2ps_pbh, _mm512_setzero_ps};
    let whole = in_dim / 32;
    let row = |t: usize| &x[(first + t) * in_dim..(first + t + 1) * in_dim];
    for group in (0..count).step_by(16) {
        let tokens = 16.min(count - group);
        for c in 0..whole {
            let mut square: Square = [_mm512_setzero_ps(); 16];
            for (t, lanes) in square.iter_mut().enumerate().take(tokens) {
                let chunk = &row(group + t)[c * 32..c * 32 + 32];
                let low: [f32; 16] = chunk[..16].try_into().expect("16 floats");
                let high: [f32; 16] = chunk[16..].try_into().expect("16 floats");
                let pairs = _mm512_cvtne2ps_pbh(bytemuck::cast(high), bytemuck::cast(low));
                *lanes = bytemuck::cast(pairs);
            }
            for (i, tokens) in transpose16(&square).iter().enumerate() {
                let at = (c * 16 + i) * PANEL + group;
                let dst: &mut [u32; 16] = (&mut words[at..at + 16]).try_into().expect("16");
                *dst = bytemuck::cast(*tokens);
            }
        }
        if whole * 32 < in_dim {
            for t in group..group + tokens {
                pack_pairs(&row(t)[whole * 32..], whole * 16, t, words);
            }
        }
    }
}

/// `out[t][cols + c] (+)= stage[c][t]` for `c < width`, `t < tokens` (`stage` rows
/// [`PANEL`] wide).
pub(super) fn transpose_into(
    stage: &[f32],
    width: usize,
    tokens: usize,
    out: &mut [f32],
    (cols, stride): (usize, usize),
    accumulate: bool,
) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::native() && tokens == PANEL {
        // SAFETY: `native` checked that this CPU has AVX-512F.
        unsafe { transpose_squares(stage, width, out, (cols, stride), accumulate) };
        done = width / 16 * 16;
    }
    if done == width {
        return;
    }
    for t in 0..tokens {
        let row = &mut out[t * stride + cols + done..t * stride + cols + width];
        let column = stage[done * PANEL + t..].iter().step_by(PANEL);
        if accumulate {
            row.iter_mut().zip(column).for_each(|(o, v)| *o += v);
        } else {
            row.iter_mut().zip(column).for_each(|(o, v)| *o = *v);
        }
    }
}

/// [`transpose_into`]'s whole 16 × 16 squares of a full panel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose_squares(
    stage: &[f32],
    width: usize,
    out: &mut [f32],
    (cols, stride): (usize, usize),
    accumulate: bool,
) {
    use std::arch::x86_64::{_mm512_add_ps, _mm512_setzero_ps};
    for c0 in (0..width / 16 * 16).step_by(16) {
        for t0 in (0..PANEL).step_by(16) {
            let mut square: Square = [_mm512_setzero_ps(); 16];
            for (c, lanes) in square.iter_mut().enumerate() {
                let at = (c0 + c) * PANEL + t0;
                let src: [f32; 16] = stage[at..at + 16].try_into().expect("16 floats");
                *lanes = bytemuck::cast(src);
            }
            for (t, values) in transpose16(&square).into_iter().enumerate() {
                let at = (t0 + t) * stride + cols + c0;
                let dst: &mut [f32; 16] = (&mut out[at..at + 16]).try_into().expect("16");
                *dst = if accumulate {
                    bytemuck::cast(_mm512_add_ps(bytemuck::cast(*dst), values))
                } else {
                    bytemuck::cast(values)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::round_bits;
    use super::*;

    #[test]
    fn squares_transpose_like_the_scalar_loop() {
        // A full panel and a last panel of 9 tokens, a width with a remainder of 5 columns, both
        // write modes, onto a wider output (columns 2 .. 2 + 37 of rows 41 wide).
        let width = 37;
        let stage: Vec<f32> = (0..width * PANEL).map(|i| i as f32 * 0.5 - 3.0).collect();
        for tokens in [PANEL, 9] {
            for accumulate in [false, true] {
                let stride = 41;
                let mut out = vec![1.0f32; PANEL * stride];
                transpose_into(&stage, width, tokens, &mut out, (2, stride), accumulate);
                for t in 0..PANEL {
                    for j in 0..stride {
                        let inside = t < tokens && (2..2 + width).contains(&j);
                        let expected = match (inside, accumulate) {
                            (false, _) => 1.0,
                            (true, false) => stage[(j - 2) * PANEL + t],
                            (true, true) => 1.0 + stage[(j - 2) * PANEL + t],
                        };
                        assert_eq!(out[t * stride + j], expected, "token {t}, column {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn panels_pack_like_the_scalar_packing() {
        // 40 tokens (two whole groups and 8), 70 inputs (two whole 32s and a remainder of 6,
        // an odd count's worth of pairs), values that round either way.
        let (count, in_dim) = (40, 70);
        let mut x: Vec<f32> = (0..(count + 3) * in_dim)
            .map(|i| ((i as f32) * 0.7548).sin() * 1.5)
            .collect();
        // Ties to even both ways, in a whole 32 and in the remainder; the largest finite value
        // (rounds to infinity), infinities.
        for at in [3 * in_dim + 5, 3 * in_dim + 66, 20 * in_dim + 1] {
            x[at] = f32::from_bits(0x3F80_8000);
            x[at + 1] = f32::from_bits(0xBF81_8000);
        }
        let specials = [
            f32::from_bits(0x7F7F_FFFF),
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        x[30 * in_dim + 7..30 * in_dim + 10].copy_from_slice(&specials);
        let pairs = in_dim / 2;
        let mut expected = vec![0u32; pairs * PANEL];
        for t in 0..count {
            let row = &x[(3 + t) * in_dim..(4 + t) * in_dim];
            for q in 0..pairs {
                let low = u32::from(round_bits(row[2 * q]));
                let high = u32::from(round_bits(row[2 * q + 1]));
                expected[q * PANEL + t] = low | (high << 16);
            }
        }
        let mut words = vec![0u32; pairs * PANEL];
        pack_panel(&x, in_dim, 3, count, &mut words);
        assert_eq!(words, expected);
    }
}
