//! Sparse latent codes (one row per token, compressed) and the selection rules that make them.
//!
//! candle has no top-k, and a dense `rows × width` code matrix is mostly zeros: selection runs
//! straight on the pre-activation rows and keeps only the survivors.

use rayon::prelude::*;

/// Compressed sparse rows: row `r`'s active latents are `index[offsets[r]..offsets[r + 1]]`,
/// with activations `value[..]` (all > 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Codes {
    pub offsets: Vec<usize>,
    pub index: Vec<u32>,
    pub value: Vec<f32>,
}

impl Codes {
    pub fn rows(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    /// Active latents of row `r`, as `(latent, activation)`.
    pub fn row(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let span = self.offsets[r]..self.offsets[r + 1];
        self.index[span.clone()]
            .iter()
            .zip(&self.value[span])
            .map(|(&j, &v)| (j as usize, v))
    }
    /// Total number of active entries.
    pub fn nnz(&self) -> usize {
        self.index.len()
    }
    /// Joins per-chunk codes (each with its own offsets starting at 0) in order.
    pub fn concat(parts: Vec<Codes>) -> Codes {
        let mut out = Codes {
            offsets: vec![0],
            ..Codes::default()
        };
        for part in parts {
            let base = out.index.len();
            out.offsets
                .extend(part.offsets[1..].iter().map(|o| o + base));
            out.index.extend(part.index);
            out.value.extend(part.value);
        }
        out
    }
}

/// Which latents survive a row of pre-activations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Selection<'a> {
    /// The `k` largest, then ReLU (so fewer than `k` when fewer are positive).
    TopK(usize),
    /// Every positive one.
    Relu,
    /// The `k` largest among the listed latents only (AuxK over dead latents), then ReLU.
    TopKAmong(usize, &'a [u32]),
    /// Each one above its latent's threshold (and above 0).
    JumpRelu(&'a [f32]),
    /// Gated: latent `j` fires where its gate `pre_j + bias_j` is positive, with magnitude
    /// `ReLU(e^{r_mag_j} pre_j + magnitude_bias_j)` (`pre` is the raw product `W_enc x`).
    Gated {
        r_mag: &'a [f32],
        magnitude_bias: &'a [f32],
    },
}

/// Builds codes from `pre` (`rows × width`) in parallel blocks of rows: `keep(state, row,
/// part)` adds one row's entries to `part` (the row's offset is closed after it), with a
/// scratch `state` made once per block by `state()`. The selection rules and the
/// training-only ones (BatchTopK candidates, JumpReLU's band) all run through it.
pub(crate) fn by_row_blocks<S, F>(
    pre: &[f32],
    width: usize,
    state: impl Fn() -> S + Sync,
    keep: F,
) -> Codes
where
    F: Fn(&mut S, &[f32], &mut Codes) + Sync,
{
    let rows = pre.len() / width;
    // Chunks of rows per task: enough work per task, enough tasks per thread.
    let chunk = (rows / (4 * rayon::current_num_threads().max(1))).clamp(1, 256);
    let parts: Vec<Codes> = pre
        .par_chunks(chunk * width)
        .map(|block| {
            super::simd(
                #[inline(always)]
                || {
                    let mut part = Codes {
                        offsets: vec![0],
                        ..Codes::default()
                    };
                    let mut scratch = state();
                    for row in block.chunks_exact(width) {
                        keep(&mut scratch, row, &mut part);
                        part.offsets.push(part.index.len());
                    }
                    part
                },
            )
        })
        .collect();
    Codes::concat(parts)
}

/// Selects codes from `pre` (`rows × width`, row-major) plus `bias` (one per latent).
pub fn select(pre: &[f32], width: usize, bias: &[f32], selection: Selection<'_>) -> Codes {
    by_row_blocks(pre, width, Best::default, |best, row, part| {
        select_row(best, row, bias, selection, part)
    })
}

/// One row's survivors appended to `part` (`best` is scratch reused between rows).
#[inline(always)]
fn select_row(
    best: &mut Best,
    row: &[f32],
    bias: &[f32],
    selection: Selection<'_>,
    part: &mut Codes,
) {
    {
        match selection {
            Selection::TopK(k) => best.top_k_dense(row, bias, k),
            Selection::TopKAmong(k, among) => {
                best.reset(k);
                for &j in among {
                    best.offer(row[j as usize] + bias[j as usize], j);
                }
            }
            Selection::Relu => {
                best.reset(usize::MAX);
                for (j, (p, b)) in row.iter().zip(bias).enumerate() {
                    let v = p + b;
                    if v > 0.0 {
                        best.items.push((v, j as u32));
                    }
                }
            }
            Selection::JumpRelu(threshold) => {
                best.reset(usize::MAX);
                for (j, ((p, b), t)) in row.iter().zip(bias).zip(threshold).enumerate() {
                    let v = p + b;
                    if v > *t && v > 0.0 {
                        best.items.push((v, j as u32));
                    }
                }
            }
            Selection::Gated {
                r_mag,
                magnitude_bias,
            } => {
                best.reset(usize::MAX);
                for (j, (p, b)) in row.iter().zip(bias).enumerate() {
                    if p + b > 0.0 {
                        let v = r_mag[j].exp() * p + magnitude_bias[j];
                        if v > 0.0 {
                            best.items.push((v, j as u32));
                        }
                    }
                }
            }
        }
        for &(v, j) in &best.items {
            if v > 0.0 {
                part.index.push(j);
                part.value.push(v);
            }
        }
    }
}

/// The `k` largest `(value, latent)` pairs seen so far (unordered), with the smallest of them
/// tracked so a rejection costs one comparison. Ties keep the earlier latent; NaN never enters.
#[derive(Default)]
struct Best {
    items: Vec<(f32, u32)>,
    k: usize,
    min_at: usize,
}

impl Best {
    #[inline(always)]
    fn reset(&mut self, k: usize) {
        self.items.clear();
        self.k = k;
        self.min_at = 0;
    }

    #[inline(always)]
    fn full(&self) -> bool {
        self.items.len() >= self.k
    }

    #[inline(always)]
    fn threshold(&self) -> f32 {
        self.items[self.min_at].0
    }

    #[inline(always)]
    fn offer(&mut self, v: f32, j: u32) {
        if self.k == 0 {
            return;
        }
        if !self.full() {
            if v.is_nan() {
                return;
            }
            self.items.push((v, j));
            if self.full() {
                self.min_at = argmin(&self.items);
            }
        } else if v > self.threshold() {
            self.items[self.min_at] = (v, j);
            self.min_at = argmin(&self.items);
        }
    }

    /// Top-k over a whole row: blocks of 16 whose maximum cannot beat the current k-th value
    /// are skipped after one vectorised pass, which is almost every block once the set is full.
    #[inline(always)]
    fn top_k_dense(&mut self, row: &[f32], bias: &[f32], k: usize) {
        const L: usize = 16;
        self.reset(k);
        let mut values = [0.0f32; L];
        let blocks = row.chunks_exact(L).zip(bias.chunks_exact(L));
        for (c, (p, b)) in blocks.enumerate() {
            let mut max = f32::NEG_INFINITY;
            for l in 0..L {
                values[l] = p[l] + b[l];
                max = max.max(values[l]);
            }
            // (`max` ignores NaN; a block of NaN or of values ≤ the threshold is skipped.)
            if self.full()
                && max.partial_cmp(&self.threshold()) != Some(std::cmp::Ordering::Greater)
            {
                continue;
            }
            for (l, &v) in values.iter().enumerate() {
                self.offer(v, (c * L + l) as u32);
            }
        }
        let tail = row.len() - row.len() % L;
        for j in tail..row.len() {
            self.offer(row[j] + bias[j], j as u32);
        }
    }
}

#[inline(always)]
fn argmin(best: &[(f32, u32)]) -> usize {
    let mut at = 0;
    for (i, &(v, _)) in best.iter().enumerate().skip(1) {
        if v < best[at].0 {
            at = i;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(codes: &Codes, r: usize) -> Vec<(usize, f32)> {
        let mut row: Vec<_> = codes.row(r).collect();
        row.sort_by_key(|&(j, _)| j);
        row
    }

    #[test]
    fn top_k_keeps_the_largest_positive_values() {
        let pre = [
            0.5, -1.0, 3.0, 2.0, 0.1, /* row 2 */ -1.0, -2.0, -3.0, 0.2, -0.5,
        ];
        let codes = select(&pre, 5, &[0.0; 5], Selection::TopK(3));
        assert_eq!(codes.rows(), 2);
        assert_eq!(sorted(&codes, 0), vec![(0, 0.5), (2, 3.0), (3, 2.0)]);
        // Only one positive value in row 2: ReLU after top-k leaves one.
        assert_eq!(sorted(&codes, 1), vec![(3, 0.2)]);
    }

    #[test]
    fn bias_is_added_before_selection_and_relu_keeps_all_positive() {
        let pre = [0.0, 0.0, 0.0, 0.0];
        let codes = select(&pre, 4, &[1.0, -1.0, 2.0, 0.5], Selection::Relu);
        assert_eq!(sorted(&codes, 0), vec![(0, 1.0), (2, 2.0), (3, 0.5)]);
    }

    #[test]
    fn top_k_among_a_subset_ignores_the_others() {
        let pre = [9.0, 1.0, 2.0, 3.0];
        let codes = select(&pre, 4, &[0.0; 4], Selection::TopKAmong(2, &[1, 2, 3]));
        assert_eq!(sorted(&codes, 0), vec![(2, 2.0), (3, 3.0)]);
    }

    #[test]
    fn matches_a_full_sort_on_many_rows() {
        let mut rng = glassbox_data::rng::SeededRng::new(3);
        let (rows, width, k) = (300, 97, 7);
        let pre: Vec<f32> = (0..rows * width)
            .map(|_| rng.unit_f64() as f32 - 0.3)
            .collect();
        let codes = select(&pre, width, &vec![0.0; width], Selection::TopK(k));
        for r in 0..rows {
            let mut all: Vec<(usize, f32)> = pre[r * width..(r + 1) * width]
                .iter()
                .copied()
                .enumerate()
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut want: Vec<_> = all[..k].iter().filter(|(_, v)| *v > 0.0).copied().collect();
            want.sort_by_key(|&(j, _)| j);
            assert_eq!(sorted(&codes, r), want, "row {r}");
        }
    }
}
