//! Multi-head self-attention over packed rows: each example attends only to its own tokens,
//! so no padding mask is needed (padding does not exist here). Causal attention and grouped
//! key/value heads are options of the same kernel.

use super::attend::attend;
use rayon::prelude::*;

/// The head layout of packed `qkv` rows, `[q | k | v]`: `q` is `heads × dim` wide, `k` and
/// `v` `kv_heads × dim` each; key/value head `j` serves query heads `j·r .. (j+1)·r` with
/// `r = heads / kv_heads` (grouped-query attention when `r > 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub dim: usize,
    /// Each token attends only to itself and the tokens before it.
    pub causal: bool,
    /// Multiplies the scores before the softmax (usually `1 / √dim`).
    pub scale: f32,
    /// Scaled scores become `cap · tanh(score / cap)` before the softmax (Gemma-2).
    pub softcap: Option<f32>,
    /// A sliding window: query `p` sees only keys `k` with `p − k < window`.
    pub window: Option<usize>,
}

impl Heads {
    /// Bidirectional attention with as many key/value heads as query heads (encoders).
    pub fn full(heads: usize, dim: usize) -> Self {
        Self {
            heads,
            kv_heads: heads,
            dim,
            causal: false,
            scale: 1.0 / (dim as f32).sqrt(),
            softcap: None,
            window: None,
        }
    }

    /// The width of one packed `qkv` row.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.dim
    }

    /// The width of one output row (`z`).
    pub fn z_width(&self) -> usize {
        self.heads * self.dim
    }
}

/// Splits a packed buffer of `width`-wide rows into one mutable slice per example.
pub fn split_examples<'a>(
    mut buf: &'a mut [f32],
    offsets: &[usize],
    width: usize,
) -> Vec<&'a mut [f32]> {
    let mut parts = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        let (head, tail) = buf.split_at_mut((w[1] - w[0]) * width);
        parts.push(head);
        buf = tail;
    }
    parts
}

/// Where each example's attention probabilities start in a buffer of `heads × len × len`
/// blocks per example (for [`attention`]'s `probs`).
pub fn attention_prob_offsets(offsets: &[usize], heads: usize) -> Vec<usize> {
    let mut out = vec![0];
    for w in offsets.windows(2) {
        let len = w[1] - w[0];
        out.push(out.last().copied().unwrap_or(0) + heads * len * len);
    }
    out
}

/// Multi-head self-attention over packed `qkv` rows laid out as `shape` says, into `z`
/// (`heads × dim` wide), examples in parallel. With `probs` (sized by
/// [`attention_prob_offsets`]) the softmax probabilities are kept, for a backward pass.
pub fn attention(
    qkv: &[f32],
    offsets: &[usize],
    shape: Heads,
    z: &mut [f32],
    probs: Option<&mut [f32]>,
) {
    assert!(
        shape.kv_heads > 0 && shape.heads.is_multiple_of(shape.kv_heads),
        "query heads must be a multiple of key/value heads"
    );
    let z_parts = split_examples(z, offsets, shape.z_width());
    let prob_parts: Vec<Option<&mut [f32]>> = match probs {
        Some(p) => split_examples(p, &attention_prob_offsets(offsets, shape.heads), 1)
            .into_iter()
            .map(Some)
            .collect(),
        None => z_parts.iter().map(|_| None).collect(),
    };
    z_parts
        .into_par_iter()
        .zip(prob_parts)
        .enumerate()
        .for_each(|(b, (z_b, kept))| {
            let width = shape.qkv_width();
            let rows = &qkv[offsets[b] * width..offsets[b + 1] * width];
            attend(rows, shape, z_b, kept);
        });
}

/// Element-wise work on each example's `qkv` rows inside [`attention_prepared`]'s parallel
/// loop, right before attention reads them: the rows are then in cache, where a separate pass
/// over the whole `[rows, qkv_width]` buffer goes to memory and back.
#[derive(Debug, Default, Clone, Copy)]
pub struct Prepare<'a> {
    /// Added to every row (the projections' bias).
    pub bias: Option<&'a [f32]>,
    /// Rotary positions on the query and key heads (positions `0..len` within each example):
    /// `(half, cos, sin)`, the tables `[seq, half]` of `Rotary::tables`.
    pub rotary: Option<(usize, &'a [f32], &'a [f32])>,
}

/// As [`attention`] (without kept probabilities), after `prepare` on each example's rows,
/// which are left prepared.
pub fn attention_prepared(
    qkv: &mut [f32],
    offsets: &[usize],
    shape: Heads,
    z: &mut [f32],
    prepare: Prepare,
) {
    let width = shape.qkv_width();
    let longest = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let positions: Vec<usize> = (0..longest).collect();
    let z_parts = split_examples(z, offsets, shape.z_width());
    split_examples(qkv, offsets, width)
        .into_par_iter()
        .zip(z_parts)
        .for_each(|(rows, z_b)| {
            if let Some(bias) = prepare.bias {
                super::rows::bias_act(rows, bias, super::Act::Identity);
            }
            if let Some((half, cos, sin)) = prepare.rotary {
                let at = &positions[..rows.len() / width];
                let (dim, keys) = (shape.dim, shape.z_width());
                let q_cols = (0, shape.heads, dim, width);
                super::rows::rotate(rows, at, q_cols, half, cos, sin);
                let k_cols = (keys, shape.kv_heads, dim, width);
                super::rows::rotate(rows, at, k_cols, half, cos, sin);
            }
            attend(rows, shape, z_b, None);
        });
}

/// As [`attention_prepared`] for causal runs that share a prefix with a base run: example `b`
/// holds positions `starts[b] ..` only, and its queries attend over the base run's prepared
/// rows `prefix[0..starts[b]]` (its keys and values; `prefix` is `[len × qkv_width]`, prepared
/// as this function leaves rows) followed by its own rows, prepared here with rotary positions
/// from `starts[b]` on. The prefix's own queries are attended too and their output dropped:
/// the kernel works on whole sequences, and for prompts of a few dozen tokens that costs less
/// than the projections the prefix spares.
pub fn attention_after_prefix(
    qkv: &mut [f32],
    offsets: &[usize],
    starts: &[usize],
    prefix: &[f32],
    shape: Heads,
    z: &mut [f32],
    prepare: Prepare,
) {
    assert!(shape.causal, "a shared prefix needs causal attention");
    let (width, z_width) = (shape.qkv_width(), shape.z_width());
    let z_parts = split_examples(z, offsets, z_width);
    split_examples(qkv, offsets, width)
        .into_par_iter()
        .zip(z_parts)
        .zip(starts)
        .for_each(|((rows, z_b), &start)| {
            let len = rows.len() / width;
            if let Some(bias) = prepare.bias {
                super::rows::bias_act(rows, bias, super::Act::Identity);
            }
            if let Some((half, cos, sin)) = prepare.rotary {
                let at: Vec<usize> = (start..start + len).collect();
                let (dim, keys) = (shape.dim, shape.z_width());
                let q_cols = (0, shape.heads, dim, width);
                super::rows::rotate(rows, &at, q_cols, half, cos, sin);
                let k_cols = (keys, shape.kv_heads, dim, width);
                super::rows::rotate(rows, &at, k_cols, half, cos, sin);
            }
            let mut full = Vec::with_capacity((start + len) * width);
            full.extend_from_slice(&prefix[..start * width]);
            full.extend_from_slice(rows);
            let mut z_full = vec![0f32; (start + len) * z_width];
            attend(&full, shape, &mut z_full, None);
            z_b.copy_from_slice(&z_full[start * z_width..]);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_of_one_token_returns_its_value() {
        // One example of one token: softmax over a single key is 1, so z = v.
        let (heads, dim) = (2, 3);
        let qkv: Vec<f32> = (0..18).map(|v| v as f32).collect();
        let mut z = vec![0.0; 6];
        attention(&qkv, &[0, 1], Heads::full(heads, dim), &mut z, None);
        assert_eq!(z, qkv[12..18].to_vec());
    }

    #[test]
    fn examples_attend_only_to_their_own_tokens() {
        let (heads, dim) = (3, 4);
        let offsets = [0, 5, 6, 13];
        let h = heads * dim;
        let qkv: Vec<f32> = (0..13 * 3 * h).map(|v| (v as f32 * 0.37).sin()).collect();
        let mut z1 = vec![0.0; 13 * h];
        attention(&qkv, &offsets, Heads::full(heads, dim), &mut z1, None);
        // Each output row is a convex combination of its own example's values only.
        let v = |row: usize, c: usize| qkv[row * 3 * h + 2 * h + c];
        for c in 0..h {
            let (lo, hi) = (6..13)
                .map(|r| v(r, c))
                .fold((f32::MAX, f32::MIN), |(a, b), x| (a.min(x), b.max(x)));
            assert!((lo - 1e-6..=hi + 1e-6).contains(&z1[8 * h + c]));
        }
    }

    /// Attention (and its kept probabilities) against a direct evaluation of the definition
    /// in f64, for `shape` on examples of these lengths.
    fn check_against_definition(shape: Heads, lengths: &[usize]) {
        let offsets: Vec<usize> = std::iter::once(0)
            .chain(lengths.iter().scan(0, |end, len| {
                *end += len;
                Some(*end)
            }))
            .collect();
        let rows = *offsets.last().unwrap();
        let (width, dim) = (shape.qkv_width(), shape.dim);
        let qkv: Vec<f32> = (0..rows * width).map(|v| (v as f32 * 0.61).cos()).collect();
        let mut z = vec![f32::NAN; rows * shape.z_width()];
        let mut probs = vec![
            f32::NAN;
            *attention_prob_offsets(&offsets, shape.heads)
                .last()
                .unwrap()
        ];
        attention(&qkv, &offsets, shape, &mut z, Some(&mut probs));
        let prob_at = attention_prob_offsets(&offsets, shape.heads);
        let at = |row: usize, col: usize| qkv[row * width + col] as f64;
        let (keys, values) = (shape.heads * dim, (shape.heads + shape.kv_heads) * dim);
        for (b, w) in offsets.windows(2).enumerate() {
            let len = w[1] - w[0];
            for q in w[0]..w[1] {
                let seen = if shape.causal { q + 1 } else { w[1] };
                let from = shape
                    .window
                    .map_or(w[0], |win| (q + 1).saturating_sub(win).max(w[0]));
                for h in 0..shape.heads {
                    let kv = h / (shape.heads / shape.kv_heads);
                    let (kc, vc) = (keys + kv * dim, values + kv * dim);
                    let scores: Vec<f64> = (from..seen)
                        .map(|k| {
                            let s = (0..dim)
                                .map(|i| at(q, h * dim + i) * at(k, kc + i))
                                .sum::<f64>()
                                * shape.scale as f64;
                            shape
                                .softcap
                                .map_or(s, |c| c as f64 * (s / c as f64).tanh())
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for i in 0..dim {
                        let want: f64 = (from..seen)
                            .zip(&e)
                            .map(|(k, p)| p / total * at(k, vc + i))
                            .sum();
                        let got = z[q * shape.z_width() + h * dim + i] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{shape:?} row {q} head {h} dim {i}: {got} vs {want}"
                        );
                    }
                    let kept = prob_at[b] + (h * len + q - w[0]) * len;
                    for k in 0..len {
                        let key = w[0] + k;
                        let want = if key >= from && key < seen {
                            e[key - from] / total
                        } else {
                            0.0
                        };
                        let got = probs[kept + k] as f64;
                        assert!(
                            (got - want).abs() < 1e-6,
                            "{shape:?} p[{q}][{k}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn attention_matches_its_definition() {
        // Head sizes below, at and between whole SIMD vectors; lengths below, at and across
        // the query block and the register tiles; grouped-query heads; causal or not.
        for (heads, kv_heads, dim) in [(4, 2, 3), (2, 2, 32), (3, 1, 48), (2, 1, 64), (1, 1, 20)] {
            for causal in [false, true] {
                let shape = Heads {
                    heads,
                    kv_heads,
                    dim,
                    causal,
                    scale: 0.7 / (dim as f32).sqrt(),
                    softcap: None,
                    window: None,
                };
                check_against_definition(shape, &[5, 1, 2, 37, 24, 50]);
            }
        }
    }

    #[test]
    fn sliding_windows_and_soft_caps_match_their_definition() {
        // Windows shorter than, equal to and longer than the query block; a cap that binds
        // (scores of a few units against a cap of 0.5) and one that hardly does.
        for window in [None, Some(1), Some(3), Some(24), Some(30)] {
            for softcap in [None, Some(0.5), Some(50.0)] {
                let shape = Heads {
                    heads: 4,
                    kv_heads: 2,
                    dim: 20,
                    causal: true,
                    scale: 0.3,
                    softcap,
                    window,
                };
                check_against_definition(shape, &[5, 1, 37, 50]);
            }
        }
    }

    #[test]
    fn suffixes_after_a_prefix_equal_the_whole_sequence() {
        // One base sequence of 9 rows, prepared (bias, rotary) in full; then copies holding
        // positions 0.., 3.., 8.. only, attending over the base's prepared prefix.
        let shape = Heads {
            heads: 4,
            kv_heads: 2,
            dim: 8,
            causal: true,
            scale: 0.3,
            softcap: None,
            window: None,
        };
        let (width, z_width, len, half) = (shape.qkv_width(), shape.z_width(), 9, 4);
        let raw: Vec<f32> = (0..len * width).map(|v| (v as f32 * 0.41).sin()).collect();
        let bias: Vec<f32> = (0..width).map(|v| (v as f32 * 0.13).cos()).collect();
        let angles: Vec<f32> = (0..len * half)
            .map(|i| (i / half) as f32 / (1 + i % half) as f32)
            .collect();
        let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
        let prepare = Prepare {
            bias: Some(&bias),
            rotary: Some((half, &cos, &sin)),
        };
        let mut base = raw.clone();
        let mut want = vec![0f32; len * z_width];
        attention_prepared(&mut base, &[0, len], shape, &mut want, prepare);
        let starts = [0, 3, 8];
        let mut offsets = vec![0];
        let mut suffixes = Vec::new();
        for &s in &starts {
            suffixes.extend_from_slice(&raw[s * width..]);
            offsets.push(offsets.last().unwrap() + len - s);
        }
        let rows = *offsets.last().unwrap();
        let mut got = vec![f32::NAN; rows * z_width];
        attention_after_prefix(
            &mut suffixes,
            &offsets,
            &starts,
            &base,
            shape,
            &mut got,
            prepare,
        );
        for (b, &s) in starts.iter().enumerate() {
            let got_b = &got[offsets[b] * z_width..offsets[b + 1] * z_width];
            for (g, w) in got_b.iter().zip(&want[s * z_width..]) {
                assert!((g - w).abs() < 1e-5, "copy {b}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn adding_the_bias_inside_equals_adding_it_first() {
        let shape = Heads::full(3, 4);
        let offsets = [0, 6, 7, 12];
        let width = shape.qkv_width();
        let qkv: Vec<f32> = (0..12 * width).map(|v| (v as f32 * 0.29).sin()).collect();
        let bias: Vec<f32> = (0..width).map(|v| (v as f32 * 0.7).cos()).collect();
        let mut biased = qkv.clone();
        super::super::add_bias(&mut biased, &bias);
        let mut want = vec![0.0; 12 * shape.z_width()];
        attention(&biased, &offsets, shape, &mut want, None);
        let (mut fused, mut got) = (qkv, vec![0.0; 12 * shape.z_width()]);
        let prepare = Prepare {
            bias: Some(&bias),
            rotary: None,
        };
        attention_prepared(&mut fused, &offsets, shape, &mut got, prepare);
        assert_eq!(
            fused, biased,
            "the bias is left added, as add_bias leaves it"
        );
        assert_eq!(got, want);
    }
}
