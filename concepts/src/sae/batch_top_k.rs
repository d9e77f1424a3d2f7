//! BatchTopK (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders"; SAELens `batchtopk`):
//! keep the `k · B` largest positive pre-activations of the whole batch of `B` tokens rather
//! than `k` per token, so easy tokens use fewer latents and hard ones more. At inference the
//! batch is gone: the SAE becomes a JumpReLU with one threshold for every latent, a running
//! average of the smallest activation the batch selection kept (SAELens's `topk_threshold`).
//!
//! The cut is exact without holding the batch's `B × width` pre-activations: each row first
//! keeps its best `c` candidates (a per-row top-c on each product block, as TopK does); `t`,
//! the `k·B`-th largest candidate, can only be at or below the true cut, and a row whose `c`-th
//! candidate still reaches `t` may hold more entries above it, so such rows are recomputed in
//! full and the cut redone, until no row is in doubt. The rows in doubt are recomputed together, as one
//! product.

use super::codes::{by_row_blocks, Codes};
use super::{dense, Sae};
use crate::ConceptError;
use rayon::prelude::*;
use std::cmp::Ordering;

/// Candidates kept per row before the batch-wide cut.
pub(crate) fn candidates(k: usize, width: usize) -> usize {
    (4 * k).min(width)
}

/// Each row's best `c` positive pre-activations (`pre + bias`), by partitioning the row: at
/// `c = 4k` this beats the incremental top-k, whose replacements cost `O(c)` each.
pub(crate) fn row_candidates(pre: &[f32], width: usize, bias: &[f32], c: usize) -> Codes {
    by_row_blocks(
        pre,
        width,
        || (),
        |_, row, part| {
            let mut entries: Vec<(f32, u32)> = row
                .iter()
                .zip(bias)
                .enumerate()
                .map(|(j, (p, b))| (p + b, j as u32))
                .filter(|&(v, _)| v > 0.0)
                .collect();
            if entries.len() > c {
                // Larger first, ties to the lower latent (as the incremental top-k keeps).
                entries
                    .select_nth_unstable_by(c - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                entries.truncate(c);
            }
            for (v, j) in entries {
                part.index.push(j);
                part.value.push(v);
            }
        },
    )
}

/// One selected or candidate entry.
#[derive(Clone, Copy)]
struct Entry {
    value: f32,
    row: u32,
    latent: u32,
}

/// Larger values first; ties by row then latent, so the cut is the same whatever the order
/// the entries arrive in.
fn rank(a: &Entry, b: &Entry) -> Ordering {
    b.value
        .total_cmp(&a.value)
        .then(a.row.cmp(&b.row))
        .then(a.latent.cmp(&b.latent))
}

/// The batch-wide cut of `row_candidates` (each row's best `candidates(k, width)` positive
/// pre-activations, from the same `x`, `sae` and encoder `bias`): the `k · rows` largest
/// positive pre-activations of the batch, rows in order, latents ascending within a row.
pub(crate) fn cut(
    row_candidates: Codes,
    k: usize,
    x: &[f32],
    sae: &Sae,
    bias: &[f32],
) -> Result<Codes, ConceptError> {
    let rows = row_candidates.rows();
    let keep = k * rows;
    let c = candidates(k, sae.width);
    let mut per_row: Vec<Vec<Entry>> = (0..rows)
        .map(|r| {
            row_candidates
                .row(r)
                .map(|(j, v)| Entry {
                    value: v,
                    row: r as u32,
                    latent: j as u32,
                })
                .collect()
        })
        .collect();
    // A row is complete once it holds every positive pre-activation it has.
    let mut complete: Vec<bool> = per_row.iter().map(|e| e.len() < c).collect();
    loop {
        let mut all: Vec<Entry> = per_row.iter().flatten().copied().collect();
        let cut_at = if all.len() > keep && keep > 0 {
            all.select_nth_unstable_by(keep - 1, rank);
            Some(all[keep - 1])
        } else {
            None
        };
        // Rows in doubt: incomplete, with their smallest candidate not below the cut (or any
        // incomplete row when the candidates do not even fill the quota).
        let doubtful: Vec<usize> = (0..rows)
            .filter(|&r| !complete[r])
            .filter(|&r| match &cut_at {
                None => true,
                Some(t) => per_row[r]
                    .iter()
                    .min_by(|a, b| rank(b, a))
                    .is_some_and(|smallest| rank(smallest, t) != Ordering::Greater),
            })
            .collect();
        if doubtful.is_empty() {
            let mut chosen = match cut_at {
                Some(_) => all[..keep].to_vec(),
                None => all,
            };
            chosen.sort_unstable_by_key(|e| (e.row, e.latent));
            return Ok(to_codes(&chosen, rows));
        }
        for (r, entries) in doubtful
            .iter()
            .copied()
            .zip(positive_rows(x, sae, bias, &doubtful)?)
        {
            per_row[r] = entries;
            complete[r] = true;
        }
    }
}

/// Every positive pre-activation of the listed rows, from one product over them.
fn positive_rows(
    x: &[f32],
    sae: &Sae,
    bias: &[f32],
    rows: &[usize],
) -> Result<Vec<Vec<Entry>>, ConceptError> {
    let d = sae.d_in;
    let gathered: Vec<f32> = rows
        .iter()
        .flat_map(|&r| x[r * d..(r + 1) * d].iter().copied())
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    dense::for_each_product_block(&gathered, d, &sae.w_enc, |first, block| {
        let found: Vec<Vec<Entry>> = block
            .par_chunks(sae.width)
            .enumerate()
            .map(|(i, pre)| {
                let r = rows[first + i] as u32;
                pre.iter()
                    .zip(bias)
                    .enumerate()
                    .filter_map(|(j, (p, b))| {
                        let value = p + b;
                        (value > 0.0).then_some(Entry {
                            value,
                            row: r,
                            latent: j as u32,
                        })
                    })
                    .collect()
            })
            .collect();
        out.extend(found);
    })?;
    Ok(out)
}

fn to_codes(chosen: &[Entry], rows: usize) -> Codes {
    let mut codes = Codes {
        offsets: Vec::with_capacity(rows + 1),
        index: Vec::with_capacity(chosen.len()),
        value: Vec::with_capacity(chosen.len()),
    };
    codes.offsets.push(0);
    let mut at = 0;
    for r in 0..rows {
        while at < chosen.len() && chosen[at].row as usize == r {
            codes.index.push(chosen[at].latent);
            codes.value.push(chosen[at].value);
            at += 1;
        }
        codes.offsets.push(codes.index.len());
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::codes::{select, Selection};
    use crate::sae::dot;
    use crate::sae::Architecture;
    use glassbox_data::rng::SeededRng;

    /// Every positive pre-activation of row `r`, computed directly.
    fn positive_entries(x: &[f32], sae: &Sae, bias: &[f32], r: usize) -> Vec<Entry> {
        let d = sae.d_in;
        let row = &x[r * d..(r + 1) * d];
        crate::sae::simd(
            #[inline(always)]
            || {
                sae.w_enc
                    .chunks_exact(d)
                    .zip(bias)
                    .enumerate()
                    .filter_map(|(j, (w, b))| {
                        let value = dot(w, row) + b;
                        (value > 0.0).then_some(Entry {
                            value,
                            row: r as u32,
                            latent: j as u32,
                        })
                    })
                    .collect()
            },
        )
    }

    /// The pre-activations of `sae` on `x` computed row by row, and the batch's top `k·rows`
    /// positive ones by a full sort.
    fn by_full_sort(sae: &Sae, x: &[f32], bias: &[f32], k: usize) -> Vec<(usize, usize)> {
        let rows = x.len() / sae.d_in;
        let mut all: Vec<Entry> = (0..rows)
            .flat_map(|r| positive_entries(x, sae, bias, r))
            .collect();
        all.sort_by(rank);
        all.truncate(k * rows);
        let mut out: Vec<(usize, usize)> = all
            .iter()
            .map(|e| (e.row as usize, e.latent as usize))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_cut_equals_a_full_sort_of_the_batch_even_for_lopsided_rows() {
        let (d, width, rows, k) = (5, 40, 30, 2);
        let mut rng = SeededRng::new(17);
        let mut w_enc: Vec<f32> = (0..width * d).map(|_| rng.gaussian() as f32).collect();
        // Latents 0..20 fire strongly on rows with a large first coordinate: those rows want
        // far more than 4k = 8 latents, and the per-row candidates must be completed.
        for j in 0..20 {
            w_enc[j * d] = 3.0;
        }
        let sae = Sae {
            input_norm: Default::default(),
            d_in: d,
            width,
            architecture: Architecture::BatchTopK { k },
            w_dec: w_enc.clone(),
            w_enc,
            b_enc: vec![0.0; width],
            b_dec: vec![0.0; d],
            threshold: Vec::new(),
            gate: None,
        };
        let x: Vec<f32> = (0..rows * d)
            .map(|i| {
                let v = rng.gaussian() as f32;
                if i % d == 0 && (i / d) % 7 == 0 {
                    10.0
                } else {
                    v
                }
            })
            .collect();
        let bias = vec![0.0; width];
        let pre: Vec<f32> = (0..rows)
            .flat_map(|r| {
                let row = &x[r * d..(r + 1) * d];
                sae.w_enc
                    .chunks_exact(d)
                    .map(|w| dot(w, row))
                    .collect::<Vec<_>>()
            })
            .collect();
        let first = row_candidates(&pre, width, &bias, candidates(k, width));
        let incremental = select(&pre, width, &bias, Selection::TopK(candidates(k, width)));
        for r in 0..rows {
            let mut a: Vec<_> = first.row(r).map(|(j, _)| j).collect();
            let mut b: Vec<_> = incremental.row(r).map(|(j, _)| j).collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "row {r}");
        }
        let codes = cut(first, k, &x, &sae, &bias).unwrap();
        let got: Vec<(usize, usize)> = (0..rows)
            .flat_map(|r| codes.row(r).map(move |(j, _)| (r, j)))
            .collect();
        assert_eq!(got, by_full_sort(&sae, &x, &bias, k));
        assert_eq!(codes.nnz(), k * rows);
        let busiest = (0..rows)
            .map(|r| codes.offsets[r + 1] - codes.offsets[r])
            .max();
        assert!(busiest > Some(candidates(k, width)), "{busiest:?}");
    }
}
