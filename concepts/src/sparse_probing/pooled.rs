//! One pass over a hook's token rows: every example's mean activation (its neurons) and the
//! mean of the SAE's codes over the same rows (its features). SAEBench pools this way: codes
//! per token first, then the mean over the example's non-special tokens.
//!
//! An example's mean codes are as many entries as distinct latents fired on its rows — on a
//! 16k-latent SAE up to thousands per example, hundreds of MB over 5,000 examples. They are
//! written to a scratch file as each example finishes and read back by the task computations
//! (`columns`, `mean_differences`), so memory holds the neurons' means and one open example,
//! whatever the number of tokens.

use crate::sae::stream::RowSource;
use crate::sae::Sae;
use crate::ConceptError;
use glassbox_data::Progress;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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
    /// Per example: `(latent, mean code)` of every latent active on any of its rows.
    pub features: FeatureRows,
}

/// Where the examples' mean codes are.
pub enum FeatureRows {
    /// In memory, ascending by latent (tests, small inputs).
    InMemory(Vec<Vec<(u32, f32)>>),
    /// In a scratch file: per example its segments.
    Spilled(Spill),
}

/// A scratch file of `(latent u32, value f32)` entries, little-endian, removed when dropped.
pub struct Spill {
    path: PathBuf,
    file: File,
    /// Per example (in `example_ids` order): `(byte offset, entries, weight)`; an example's
    /// mean is the weighted sum of its segments (one segment, weight 1, unless its rows were
    /// split across parts).
    segments: Vec<Vec<(u64, u32, f32)>>,
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl FeatureRows {
    /// Calls `f(entries)` with example `row`'s `(latent, mean code)` entries, segment by
    /// segment (their values add up).
    fn visit(
        &self,
        row: usize,
        buffer: &mut Vec<u8>,
        mut f: impl FnMut(u32, f32),
    ) -> Result<(), ConceptError> {
        match self {
            Self::InMemory(rows) => rows[row].iter().for_each(|&(u, v)| f(u, v)),
            Self::Spilled(spill) => {
                for &(offset, entries, weight) in &spill.segments[row] {
                    buffer.resize(entries as usize * 8, 0);
                    let mut file = &spill.file;
                    file.seek(SeekFrom::Start(offset))
                        .and_then(|_| file.read_exact(buffer))
                        .map_err(|e| spill_error(&spill.path, e))?;
                    for pair in buffer.chunks_exact(8) {
                        let unit = u32::from_le_bytes(pair[..4].try_into().expect("4 bytes"));
                        let value = f32::from_le_bytes(pair[4..].try_into().expect("4 bytes"));
                        f(unit, if weight == 1.0 { value } else { value * weight });
                    }
                }
            }
        }
        Ok(())
    }
}

fn spill_error(path: &Path, e: std::io::Error) -> ConceptError {
    ConceptError::Invalid(format!(
        "{}: sparse probing's scratch file: {e} (is the disk full?)",
        path.display()
    ))
}

/// Sums of one example's rows while its rows are being read.
#[derive(Default)]
struct Sums {
    rows: u32,
    neurons: Vec<f64>,
    features: HashMap<u32, f64>,
}

/// An example whose rows have all been read (stores write an example's rows together): its
/// neurons' sums and its mean codes' segments in the scratch file.
struct Finished {
    rows: u32,
    neurons: Vec<f64>,
    segments: Vec<Segment>,
}

/// A segment in the scratch file: `(byte offset, entries, rows when written)`.
type Segment = (u64, u32, u32);

/// The example whose rows are being read: its id, sums and earlier segments.
type OpenExample = Option<(u64, Sums, Vec<Segment>)>;

/// The scratch file while it is written.
struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    at: u64,
}

impl Writer {
    /// Appends the example's mean codes so far (sums / rows, ascending by latent).
    fn segment(
        &mut self,
        sums: &HashMap<u32, f64>,
        rows: u32,
    ) -> Result<(u64, u32, u32), ConceptError> {
        let mut entries: Vec<(u32, f32)> = sums
            .iter()
            .map(|(&u, &v)| (u, (v / rows as f64) as f32))
            .collect();
        entries.sort_unstable_by_key(|&(u, _)| u);
        let offset = self.at;
        for (u, v) in &entries {
            self.out
                .write_all(&u.to_le_bytes())
                .and_then(|_| self.out.write_all(&v.to_le_bytes()))
                .map_err(|e| spill_error(&self.path, e))?;
        }
        self.at += entries.len() as u64 * 8;
        Ok((offset, entries.len() as u32, rows))
    }
}

impl Pooled {
    /// Reads `source` to the end of its epoch, encoding with `sae` the rows of the examples
    /// `keep` accepts (the others are skipped before encoding). The mean codes go to a scratch
    /// file in `scratch_dir` (removed when the result is dropped).
    pub fn collect(
        source: &mut dyn RowSource,
        sae: &Sae,
        keep: &dyn Fn(u64) -> bool,
        scratch_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<Self, ConceptError> {
        let d = source.width();
        let path = scratch_dir.join(".sparse_probing_codes.tmp");
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| spill_error(&path, e))?;
        let mut writer = Writer {
            path: path.clone(),
            out: BufWriter::new(file.try_clone().map_err(|e| spill_error(&path, e))?),
            at: 0,
        };
        // From here on the file is removed on every exit.
        let mut spill = Spill {
            path,
            file,
            segments: Vec::new(),
        };
        let mut finished: HashMap<u64, Finished> = HashMap::new();
        let mut open: OpenExample = None;
        let (mut rows, mut ids) = (Vec::new(), Vec::new());
        let (mut kept_rows, mut kept_ids) = (Vec::new(), Vec::new());
        let mut close = |open: &mut OpenExample,
                         finished: &mut HashMap<u64, Finished>|
         -> Result<(), ConceptError> {
            if let Some((e, sums, mut segments)) = open.take() {
                segments.push(writer.segment(&sums.features, sums.rows)?);
                finished.insert(
                    e,
                    Finished {
                        rows: sums.rows,
                        neurons: sums.neurons,
                        segments,
                    },
                );
            }
            Ok(())
        };
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
                    if open.as_ref().is_none_or(|(e, _, _)| *e != example) {
                        close(&mut open, &mut finished)?;
                        // An example seen before (its rows split across parts) continues its
                        // neurons' sums; its codes get another segment.
                        let (sums, segments) = match finished.remove(&example) {
                            Some(f) => (
                                Sums {
                                    rows: f.rows,
                                    neurons: f.neurons,
                                    features: HashMap::new(),
                                },
                                f.segments,
                            ),
                            None => (
                                Sums {
                                    neurons: vec![0.0; d],
                                    ..Sums::default()
                                },
                                Vec::new(),
                            ),
                        };
                        open = Some((example, sums, segments));
                    }
                    let (_, s, _) = open.as_mut().expect("opened above");
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
        close(&mut open, &mut finished)?;
        writer
            .out
            .flush()
            .map_err(|e| spill_error(&writer.path, e))?;
        let mut example_ids: Vec<u64> = finished.keys().copied().collect();
        example_ids.sort_unstable();
        let mut neurons = Vec::with_capacity(example_ids.len() * d);
        for id in &example_ids {
            let f = finished.remove(id).expect("listed above");
            let n = f.rows as f64;
            neurons.extend(f.neurons.iter().map(|v| (v / n) as f32));
            // Each segment holds sums / (rows then); weighted back to the example's mean.
            spill.segments.push(
                f.segments
                    .iter()
                    .map(|&(offset, entries, rows)| {
                        let weight = if rows == f.rows {
                            1.0
                        } else {
                            (rows as f64 / n) as f32
                        };
                        (offset, entries, weight)
                    })
                    .collect(),
            );
        }
        Ok(Self {
            example_ids,
            d,
            neurons,
            width: sae.width,
            features: FeatureRows::Spilled(spill),
        })
    }

    pub fn len(&self) -> usize {
        self.example_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.example_ids.is_empty()
    }

    /// `n × units.len()` dense matrix of the chosen units.
    pub fn columns(&self, kind: Units, units: &[u32]) -> Result<Vec<f32>, ConceptError> {
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
                let mut buffer = Vec::new();
                for row in 0..self.len() {
                    self.features.visit(row, &mut buffer, |u, v| {
                        if let Some(&c) = column.get(&u) {
                            out[row * k + c] += v;
                        }
                    })?;
                }
            }
        }
        Ok(out)
    }

    /// Per unit, the mean over `rows` (examples' indices) where `positive` holds minus the
    /// mean over the others.
    pub fn mean_differences(
        &self,
        kind: Units,
        rows: &[usize],
        positive: &[bool],
    ) -> Result<Vec<f64>, ConceptError> {
        let units = match kind {
            Units::Neurons => self.d,
            Units::Features => self.width,
        };
        let (mut pos, mut neg) = (vec![0.0f64; units], vec![0.0f64; units]);
        let (mut n_pos, mut n_neg) = (0usize, 0usize);
        let mut buffer = Vec::new();
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
                    self.features
                        .visit(r, &mut buffer, |u, v| sums[u as usize] += v as f64)?;
                }
            }
        }
        let (n_pos, n_neg) = (n_pos.max(1) as f64, n_neg.max(1) as f64);
        Ok(pos
            .iter()
            .zip(&neg)
            .map(|(p, n)| p / n_pos - n / n_neg)
            .collect())
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
            features: FeatureRows::InMemory(vec![
                vec![(1, 2.0)],
                vec![(1, 4.0), (3, 1.0)],
                vec![(0, 1.0)],
            ]),
        };
        assert_eq!(
            pooled.columns(Units::Features, &[3, 1]).unwrap(),
            vec![0.0, 2.0, 1.0, 4.0, 0.0, 0.0]
        );
        assert_eq!(
            pooled.columns(Units::Neurons, &[1]).unwrap(),
            vec![0.0, 0.0, 1.0]
        );
        let positive = [true, true, false];
        let f = pooled
            .mean_differences(Units::Features, &[0, 1, 2], &positive)
            .unwrap();
        assert_eq!(f, vec![-1.0, 3.0, 0.0, 0.5]);
        let n = pooled
            .mean_differences(Units::Neurons, &[0, 1, 2], &positive)
            .unwrap();
        assert_eq!(n, vec![-3.0, -1.0]);
    }
}
