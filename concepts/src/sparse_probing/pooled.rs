//! One pass over a hook's token rows: every example's mean activation (its neurons) and the
//! mean of the SAE's codes over the same rows (its features). SAEBench pools this way: codes
//! per token first, then the mean over the example's non-special tokens.

use crate::sae::stream::RowSource;
use crate::sae::Sae;
use crate::ConceptError;
use glassbox_data::Progress;
use std::collections::HashMap;

/// Per-example means of the neurons and of the SAE's codes.
pub struct Pooled {
    /// Examples with at least one row, ascending.
    pub example_ids: Vec<u64>,
    /// The hook's width.
    pub d: usize,
    /// `n × d` mean activations, in `example_ids` order.
    pub neurons: Vec<f32>,
    /// The SAE's width.
    pub width: usize,
    /// Per example: `(latent, mean code)` of every latent active on any of its rows,
    /// ascending by latent. Sparse: memory follows the active latents, not the SAE's width.
    pub features: Vec<Vec<(u32, f32)>>,
}

/// Sums of one example's rows while its rows are being read.
#[derive(Default)]
struct Sums {
    rows: u32,
    neurons: Vec<f64>,
    features: HashMap<u32, f64>,
}

/// An example whose rows have all been read (stores write an example's rows together): its
/// feature sums packed, 8 bytes an active latent rather than a hash map's ~20.
struct Finished {
    rows: u32,
    neurons: Vec<f64>,
    features: Vec<(u32, f32)>,
}

impl Sums {
    fn finish(self) -> Finished {
        let mut features: Vec<(u32, f32)> = self
            .features
            .into_iter()
            .map(|(u, v)| (u, v as f32))
            .collect();
        features.sort_unstable_by_key(|&(u, _)| u);
        Finished {
            rows: self.rows,
            neurons: self.neurons,
            features,
        }
    }
}

impl Finished {
    /// Back to open sums (a store whose example's rows are split across parts).
    fn reopen(self) -> Sums {
        Sums {
            rows: self.rows,
            neurons: self.neurons,
            features: self
                .features
                .into_iter()
                .map(|(u, v)| (u, v as f64))
                .collect(),
        }
    }
}

impl Pooled {
    /// Reads `source` to the end of its epoch, encoding with `sae` the rows of the examples
    /// `keep` accepts (the others are skipped before encoding).
    pub fn collect(
        source: &mut dyn RowSource,
        sae: &Sae,
        keep: &dyn Fn(u64) -> bool,
        progress: &dyn Progress,
    ) -> Result<Self, ConceptError> {
        let d = source.width();
        let mut finished: HashMap<u64, Finished> = HashMap::new();
        let mut open: Option<(u64, Sums)> = None;
        let (mut rows, mut ids) = (Vec::new(), Vec::new());
        let (mut kept_rows, mut kept_ids) = (Vec::new(), Vec::new());
        progress.start("sparse probing: pooling codes and neurons (rows)", 0);
        while source.next_rows(&mut rows, &mut ids)? {
            for (r, &id) in ids.iter().enumerate() {
                if keep(id.0) {
                    kept_rows.extend_from_slice(&rows[r * d..(r + 1) * d]);
                    kept_ids.push(id);
                }
            }
            if !kept_ids.is_empty() {
                let codes = sae.encode(&kept_rows)?;
                for (r, &(example, _)) in kept_ids.iter().enumerate() {
                    if open.as_ref().is_none_or(|(e, _)| *e != example) {
                        if let Some((e, sums)) = open.take() {
                            finished.insert(e, sums.finish());
                        }
                        let sums = finished.remove(&example).map_or_else(
                            || Sums {
                                neurons: vec![0.0; d],
                                ..Sums::default()
                            },
                            Finished::reopen,
                        );
                        open = Some((example, sums));
                    }
                    let (_, s) = open.as_mut().expect("opened above");
                    s.rows += 1;
                    for (acc, &v) in s.neurons.iter_mut().zip(&kept_rows[r * d..(r + 1) * d]) {
                        *acc += v as f64;
                    }
                    for (unit, v) in codes.row(r) {
                        *s.features.entry(unit as u32).or_insert(0.0) += v as f64;
                    }
                }
            }
            progress.advance(ids.len() as u64);
            for v in [&mut rows, &mut kept_rows] {
                v.clear();
            }
            ids.clear();
            kept_ids.clear();
        }
        progress.finish();
        if let Some((e, sums)) = open.take() {
            finished.insert(e, sums.finish());
        }
        let mut example_ids: Vec<u64> = finished.keys().copied().collect();
        example_ids.sort_unstable();
        let mut neurons = Vec::with_capacity(example_ids.len() * d);
        let mut features = Vec::with_capacity(example_ids.len());
        for id in &example_ids {
            let f = finished.remove(id).expect("listed above");
            let n = f.rows as f64;
            neurons.extend(f.neurons.iter().map(|v| (v / n) as f32));
            features.push(
                f.features
                    .into_iter()
                    .map(|(u, v)| (u, (v as f64 / n) as f32))
                    .collect(),
            );
        }
        Ok(Self {
            example_ids,
            d,
            neurons,
            width: sae.width,
            features,
        })
    }

    pub fn len(&self) -> usize {
        self.example_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.example_ids.is_empty()
    }

    /// `n × units.len()` dense matrix of the chosen units.
    pub fn columns(&self, kind: Units, units: &[u32]) -> Vec<f32> {
        let k = units.len();
        let mut out = vec![0.0f32; self.len() * k];
        match kind {
            Units::Neurons => {
                for (row, chunk) in out.chunks_mut(k.max(1)).enumerate().take(self.len()) {
                    let from = &self.neurons[row * self.d..(row + 1) * self.d];
                    for (o, &u) in chunk.iter_mut().zip(units) {
                        *o = from[u as usize];
                    }
                }
            }
            Units::Features => {
                let column: HashMap<u32, usize> =
                    units.iter().enumerate().map(|(c, &u)| (u, c)).collect();
                for (row, codes) in self.features.iter().enumerate() {
                    for &(u, v) in codes {
                        if let Some(&c) = column.get(&u) {
                            out[row * k + c] = v;
                        }
                    }
                }
            }
        }
        out
    }

    /// Per unit, the mean over `rows` (examples' indices) where `positive` holds minus the
    /// mean over the others.
    pub fn mean_differences(&self, kind: Units, rows: &[usize], positive: &[bool]) -> Vec<f64> {
        let units = match kind {
            Units::Neurons => self.d,
            Units::Features => self.width,
        };
        let (mut pos, mut neg) = (vec![0.0f64; units], vec![0.0f64; units]);
        let (mut n_pos, mut n_neg) = (0usize, 0usize);
        for &r in rows {
            let (sums, count) = if positive[r] {
                (&mut pos, &mut n_pos)
            } else {
                (&mut neg, &mut n_neg)
            };
            *count += 1;
            match kind {
                Units::Neurons => {
                    for (s, &v) in sums
                        .iter_mut()
                        .zip(&self.neurons[r * self.d..(r + 1) * self.d])
                    {
                        *s += v as f64;
                    }
                }
                Units::Features => {
                    for &(u, v) in &self.features[r] {
                        sums[u as usize] += v as f64;
                    }
                }
            }
        }
        let (n_pos, n_neg) = (n_pos.max(1) as f64, n_neg.max(1) as f64);
        pos.iter()
            .zip(&neg)
            .map(|(p, n)| p / n_pos - n / n_neg)
            .collect()
    }
}

/// Which units a sparse probe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// The SAE's latents (mean codes).
    Features,
    /// The hook's raw dimensions (mean activations).
    Neurons,
}

/// The `k` units with the largest |mean difference|, ties to the lower index (SAEBench's
/// selection: class means on the training examples only).
pub fn top_k_units(differences: &[f64], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..differences.len() as u32).collect();
    order.sort_by(|&a, &b| {
        differences[b as usize]
            .abs()
            .total_cmp(&differences[a as usize].abs())
            .then(a.cmp(&b))
    });
    order.truncate(k);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_absolute_difference_then_index() {
        assert_eq!(top_k_units(&[0.1, -0.5, 0.5, 0.0], 3), vec![1, 2, 0]);
        assert_eq!(top_k_units(&[0.1, 0.2], 5), vec![1, 0]);
    }

    #[test]
    fn columns_and_differences_from_sparse_codes() {
        let pooled = Pooled {
            example_ids: vec![0, 1, 2],
            d: 2,
            neurons: vec![1.0, 0.0, 3.0, 0.0, 5.0, 1.0],
            width: 4,
            features: vec![vec![(1, 2.0)], vec![(1, 4.0), (3, 1.0)], vec![(0, 1.0)]],
        };
        assert_eq!(
            pooled.columns(Units::Features, &[3, 1]),
            vec![0.0, 2.0, 1.0, 4.0, 0.0, 0.0]
        );
        assert_eq!(pooled.columns(Units::Neurons, &[1]), vec![0.0, 0.0, 1.0]);
        let positive = [true, true, false];
        let f = pooled.mean_differences(Units::Features, &[0, 1, 2], &positive);
        assert_eq!(f, vec![-1.0, 3.0, 0.0, 0.5]);
        let n = pooled.mean_differences(Units::Neurons, &[0, 1, 2], &positive);
        assert_eq!(n, vec![-3.0, -1.0]);
    }
}
