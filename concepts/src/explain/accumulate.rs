//! Pass 1 of an explanation: per-unit statistics, top rows, reservoirs and label sums.

use super::clustered::ClusterMoments;
use super::{Activations, ExplainOptions, LabelCorrelation};
use crate::sae::stream::RowId;
use glassbox_data::rng::SeededRng;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

/// A label resolved to rows: the class index of every labelled row (unlabelled rows count as
/// outside every class).
#[derive(Debug, Clone)]
pub struct LabelTarget {
    pub name: String,
    pub classes: Vec<String>,
    pub class_of: HashMap<RowId, u32>,
}

/// A unit's summary (one row of `features.parquet` / `neurons.parquet`).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitStats {
    pub unit: usize,
    /// Rows where the activation is > 0.
    pub active_rows: u64,
    /// `active_rows / rows`.
    pub density: f64,
    /// Mean over all rows (inactive rows count 0 for SAE features).
    pub mean_activation: f64,
    /// Mean over the active rows.
    pub mean_when_active: f64,
    pub max_activation: f32,
    /// `(label, class, correlation)` with the highest correlation.
    pub top_label: Option<(String, String, f64)>,
    /// That correlation's Holm-adjusted p-value (over every unit × class of the hook).
    pub top_label_p_holm: Option<f64>,
    /// `("cav:<concept>" | "probe:<…>", cosine)` with the largest |cosine|.
    pub best_direction: Option<(String, f64)>,
    /// Distinct tokens of the top examples, strongest first (at most 5).
    pub top_tokens: Vec<String>,
    pub(super) sum: f64,
    pub(super) sum_sq: f64,
    pub(super) rows: u64,
    pub(super) class_sums: Vec<f64>,
    pub(super) class_counts: Vec<u64>,
}

/// A row chosen for a unit, whose context pass 2 fetches.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub unit: u32,
    pub kind: &'static str,
    pub rank: u32,
    pub bin: Option<u32>,
    pub activation: f32,
    pub id: RowId,
}

/// Orders activations totally (NaN cannot occur: inputs are checked finite).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key(f32, RowId);
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        // Larger activation first; among equals, the earlier row wins.
        self.0
            .total_cmp(&other.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

pub(super) struct Accumulator {
    rows: u64,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    active: Vec<u64>,
    max: Vec<f32>,
    top: Vec<BinaryHeap<Reverse<Key>>>,
    reservoir: Vec<Vec<(f32, RowId)>>,
    rng: SeededRng,
    /// Per label, the offset of its classes in the flattened class arrays.
    label_offsets: Vec<usize>,
    total_classes: usize,
    class_sums: Vec<f64>,
    class_counts: Vec<u64>,
    labels: Vec<LabelTarget>,
    /// Per-text moments for the clustered tests of token-level labels.
    clusters: ClusterMoments,
    options: ExplainOptions,
}

impl Accumulator {
    pub fn new(units: usize, labels: &[LabelTarget], options: &ExplainOptions) -> Self {
        let mut label_offsets = Vec::new();
        let mut total = 0;
        for l in labels {
            label_offsets.push(total);
            total += l.classes.len();
        }
        Self {
            rows: 0,
            sum: vec![0.0; units],
            sum_sq: vec![0.0; units],
            active: vec![0; units],
            max: vec![f32::NEG_INFINITY; units],
            top: (0..units).map(|_| BinaryHeap::new()).collect(),
            reservoir: vec![Vec::new(); units],
            rng: SeededRng::new(options.seed ^ 0xE1_AB1A),
            label_offsets,
            total_classes: total,
            class_sums: vec![0.0; units * total],
            class_counts: vec![0; total],
            labels: labels.to_vec(),
            clusters: ClusterMoments::new(units, total),
            options: options.clone(),
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn add(&mut self, ids: &[RowId], acts: &Activations) {
        let t = self.total_classes;
        let mut classes: Vec<usize> = Vec::new();
        for (r, &id) in ids.iter().enumerate().take(acts.rows()) {
            self.rows += 1;
            classes.clear();
            for (l, label) in self.labels.iter().enumerate() {
                if let Some(&c) = label.class_of.get(&id) {
                    let slot = self.label_offsets[l] + c as usize;
                    self.class_counts[slot] += 1;
                    classes.push(slot);
                }
            }
            self.clusters.row(id.0, &classes);
            for (unit, v) in acts.row(r) {
                let v64 = v as f64;
                self.clusters.value(unit, v64, &classes);
                self.sum[unit] += v64;
                self.sum_sq[unit] += v64 * v64;
                if v > self.max[unit] {
                    self.max[unit] = v;
                }
                for &slot in &classes {
                    self.class_sums[unit * t + slot] += v64;
                }
                if v <= 0.0 {
                    continue;
                }
                self.active[unit] += 1;
                let heap = &mut self.top[unit];
                let key = Key(v, id);
                if heap.len() < self.options.top_examples {
                    heap.push(Reverse(key));
                } else if heap.peek().is_some_and(|Reverse(min)| key > *min) {
                    heap.pop();
                    heap.push(Reverse(key));
                }
                // Reservoir sampling (Algorithm R) over the active rows.
                let seen = self.active[unit];
                let res = &mut self.reservoir[unit];
                if res.len() < self.options.reservoir {
                    res.push((v, id));
                } else {
                    let j = self.rng.below(seen as usize);
                    if j < self.options.reservoir {
                        res[j] = (v, id);
                    }
                }
            }
        }
    }

    /// Unit summaries, the rows whose contexts to fetch and the per-text moments of the
    /// token-level labels' clustered tests.
    pub fn finish(mut self) -> (Vec<UnitStats>, Vec<Request>, ClusterMoments) {
        self.clusters.finish();
        let n = self.rows.max(1) as f64;
        let t = self.total_classes;
        let mut stats = Vec::with_capacity(self.sum.len());
        let mut requests = Vec::new();
        for (unit, heap) in self.top.into_iter().enumerate() {
            let mut top: Vec<Key> = heap.into_iter().map(|Reverse(k)| k).collect();
            top.sort_by(|a, b| b.cmp(a));
            for (rank, k) in top.iter().enumerate() {
                requests.push(Request {
                    unit: unit as u32,
                    kind: "top",
                    rank: rank as u32,
                    bin: None,
                    activation: k.0,
                    id: k.1,
                });
            }
            let mut res = self.reservoir[unit].clone();
            res.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let (bins, per_bin) = (self.options.quantile_bins, self.options.per_bin);
            if !res.is_empty() && bins > 0 && per_bin > 0 {
                let mut rank = 0;
                for b in 0..bins {
                    let (lo, hi) = (b * res.len() / bins, (b + 1) * res.len() / bins);
                    if hi <= lo {
                        continue;
                    }
                    let take = per_bin.min(hi - lo);
                    for s in 0..take {
                        let i = lo + (hi - lo) * (2 * s + 1) / (2 * take);
                        requests.push(Request {
                            unit: unit as u32,
                            kind: "quantile",
                            rank,
                            bin: Some(b as u32),
                            activation: res[i].0,
                            id: res[i].1,
                        });
                        rank += 1;
                    }
                }
            }
            let active = self.active[unit];
            stats.push(UnitStats {
                unit,
                active_rows: active,
                density: active as f64 / n,
                mean_activation: self.sum[unit] / n,
                mean_when_active: if active > 0 {
                    // Sparse features: the sum is over active rows only.
                    self.sum[unit] / active as f64
                } else {
                    0.0
                },
                max_activation: if self.max[unit].is_finite() {
                    self.max[unit]
                } else {
                    0.0
                },
                top_label: None,
                top_label_p_holm: None,
                best_direction: None,
                top_tokens: Vec::new(),
                sum: self.sum[unit],
                sum_sq: self.sum_sq[unit],
                rows: self.rows,
                class_sums: self.class_sums[unit * t..(unit + 1) * t].to_vec(),
                class_counts: self.class_counts.clone(),
            });
        }
        (stats, requests, self.clusters)
    }
}

/// Pearson correlation of each unit's activation with membership of each class, each with its
/// two-sided p-value — the cluster-robust t of [`super::clustered`], texts as clusters on
/// `texts − 1` df: a text's tokens are not independent observations, whether the label is the
/// same on all of them (sequence level) or not (token level) — and Holm's adjustment over all
/// of them.
pub(super) fn correlations(
    stats: &[UnitStats],
    labels: &[LabelTarget],
    clusters: &ClusterMoments,
) -> Vec<LabelCorrelation> {
    let texts = clusters.distinct_texts();
    let mut out = Vec::new();
    for s in stats {
        let n = s.rows.max(1) as f64;
        let mean = s.sum / n;
        let var = (s.sum_sq / n - mean * mean).max(0.0);
        let mut slot = 0;
        for label in labels {
            for class in &label.classes {
                let count = s.class_counts[slot];
                let p = count as f64 / n;
                let cov = s.class_sums[slot] / n - mean * p;
                let denom = (var * p * (1.0 - p)).sqrt();
                let correlation = if denom > 0.0 { cov / denom } else { 0.0 };
                let clustered =
                    clusters.test(s.unit, slot, (s.rows, s.sum, s.class_sums[slot], count));
                // Without whole texts to cluster (rows of a text interleaved with another's,
                // or fewer than three texts): Student's t with the texts as the observations.
                let (effective_rows, p) = match clustered {
                    Some(test) => (test.clusters, test.p),
                    None => {
                        let n = texts.min(s.rows);
                        (n, correlation_p(correlation, n))
                    }
                };
                out.push(LabelCorrelation {
                    unit: s.unit as u32,
                    label: label.name.clone(),
                    class: class.clone(),
                    correlation,
                    effective_rows,
                    p,
                    p_holm: f64::NAN,
                    mean_in_class: if count > 0 {
                        s.class_sums[slot] / count as f64
                    } else {
                        0.0
                    },
                    rows_in_class: count,
                });
                slot += 1;
            }
        }
    }
    let p: Vec<f64> = out.iter().map(|c| c.p).collect();
    for (c, adjusted) in out.iter_mut().zip(crate::stats::holm(&p)) {
        c.p_holm = adjusted;
    }
    out
}

/// Two-sided p-value of a Pearson correlation `r` over `n` independent observations:
/// `t = r √((n − 2) / (1 − r²))` on `n − 2` degrees of freedom; NaN with fewer than 3.
pub(super) fn correlation_p(r: f64, n: u64) -> f64 {
    if n < 3 {
        return f64::NAN;
    }
    let df = (n - 2) as f64;
    let t = r * (df / (1.0 - r * r).max(f64::MIN_POSITIVE)).sqrt();
    crate::stats::student_t_two_sided(t, df)
}
