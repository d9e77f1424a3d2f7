//! Multi-head self-attention over packed rows: each example attends only to its own tokens,
//! so no mask is needed (padding does not exist here).

use super::gemm::{matmul, View};
use super::rows::softmax_rows;
use rayon::prelude::*;

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

/// Multi-head self-attention over packed `qkv` rows (`[q | k | v]`, each `heads × head_dim`
/// wide) into `z` (`heads × head_dim` wide), examples in parallel. With `probs` (sized by
/// [`attention_prob_offsets`]) the softmax probabilities are kept, for a backward pass.
pub fn attention(
    qkv: &[f32],
    offsets: &[usize],
    heads: usize,
    head_dim: usize,
    z: &mut [f32],
    probs: Option<&mut [f32]>,
) {
    let h = heads * head_dim;
    let z_parts = split_examples(z, offsets, h);
    let prob_parts: Vec<Option<&mut [f32]>> = match probs {
        Some(p) => split_examples(p, &attention_prob_offsets(offsets, heads), 1)
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
            let rows = &qkv[offsets[b] * 3 * h..offsets[b + 1] * 3 * h];
            attend(rows, heads, head_dim, z_b, kept, &mut Vec::new());
        });
}

/// One example's attention: `rows` are its packed `qkv` rows, `z` its output rows. Scores go
/// to `kept` when given, else to the reusable `scratch`.
fn attend(
    rows: &[f32],
    heads: usize,
    head_dim: usize,
    z: &mut [f32],
    mut kept: Option<&mut [f32]>,
    scratch: &mut Vec<f32>,
) {
    let h = heads * head_dim;
    let len = rows.len() / (3 * h);
    let scale = 1.0 / (head_dim as f32).sqrt();
    for head in 0..heads {
        let col = head * head_dim;
        let scores: &mut [f32] = match kept.as_deref_mut() {
            Some(p) => &mut p[head * len * len..(head + 1) * len * len],
            None => {
                scratch.resize(len * len, 0.0);
                &mut scratch[..]
            }
        };
        // scores = scale · Q Kᵀ
        matmul(
            (len, head_dim, len),
            scores,
            View::rows(0, len),
            rows,
            View {
                offset: col,
                row_stride: 3 * h,
                col_stride: 1,
            },
            rows,
            View {
                offset: h + col,
                row_stride: 1,
                col_stride: 3 * h,
            },
            scale,
            false,
            1,
        );
        softmax_rows(scores, len);
        // z_head = P V
        matmul(
            (len, len, head_dim),
            z,
            View {
                offset: col,
                row_stride: h,
                col_stride: 1,
            },
            scores,
            View::rows(0, len),
            rows,
            View {
                offset: 2 * h + col,
                row_stride: 3 * h,
                col_stride: 1,
            },
            1.0,
            false,
            1,
        );
    }
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
        attention(&qkv, &[0, 1], heads, dim, &mut z, None);
        assert_eq!(z, qkv[12..18].to_vec());
    }

    #[test]
    fn examples_attend_only_to_their_own_tokens() {
        let (heads, dim) = (3, 4);
        let offsets = [0, 5, 6, 13];
        let h = heads * dim;
        let qkv: Vec<f32> = (0..13 * 3 * h).map(|v| (v as f32 * 0.37).sin()).collect();
        let mut z1 = vec![0.0; 13 * h];
        attention(&qkv, &offsets, heads, dim, &mut z1, None);
        // Each output row is a convex combination of its own example's values only.
        let v = |row: usize, c: usize| qkv[row * 3 * h + 2 * h + c];
        for c in 0..h {
            let (lo, hi) = (6..13)
                .map(|r| v(r, c))
                .fold((f32::MAX, f32::MIN), |(a, b), x| (a.min(x), b.max(x)));
            assert!((lo - 1e-6..=hi + 1e-6).contains(&z1[8 * h + c]));
        }
    }
}
