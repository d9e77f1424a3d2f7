//! Overlap counts per unit and concept, under the real image ↔ mask pairing and under seeded
//! shuffles of it; the IoUs, the baseline test and the labels.

use super::DissectOptions;
use crate::stats::{benjamini_hochberg, normal_upper_tail};
use glassbox_data::masks::{Bitmap, MaskSet};
use glassbox_data::rng::SeededRng;
use glassbox_data::HookPoint;
use std::ops::Range;

/// One unit's label and its evidence (`dissection/units.parquet`).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitRow {
    pub hook: HookPoint,
    pub unit: u32,
    /// The top-quantile activation level.
    pub threshold: f32,
    /// Fraction of all pixels of all images where the unit is on.
    pub active_fraction: f64,
    /// The concept of highest IoU (empty when the unit is never on).
    pub concept: String,
    pub iou: f64,
    /// The same concept's IoU under shuffled pairings: mean and standard deviation.
    pub baseline_mean: f64,
    pub baseline_sd: f64,
    pub z: f64,
    /// One-sided normal p of `z`, times the number of concepts.
    pub p_value: f64,
    /// Benjamini–Hochberg over the hook's units.
    pub q_value: f64,
    pub labelled: bool,
    /// The second-best concept and its IoU.
    pub runner_up: String,
    pub runner_up_iou: f64,
}

/// Every unit × concept IoU (`dissection/scores.parquet`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    pub hook: HookPoint,
    pub unit: u32,
    pub concept: String,
    pub iou: f64,
    pub intersection: u64,
    pub activation_pixels: u64,
    pub mask_pixels: u64,
}

/// A top-activating image of a unit with its cell map (`dissection/examples.parquet`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleRow {
    pub hook: HookPoint,
    pub unit: u32,
    pub rank: u32,
    pub example_id: u64,
    pub max_activation: f32,
    /// The unit's cells, row-major.
    pub map: Vec<f32>,
}

/// Seeded random permutations of `0..n` (Fisher–Yates), one per baseline draw.
pub fn permutations(n: usize, count: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = SeededRng::new(seed ^ 0x0D15_5EC7);
    (0..count)
        .map(|_| {
            let mut p: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                p.swap(i, rng.below(i + 1));
            }
            p
        })
        .collect()
}

/// A unit's pixel counts: where it is on, and its intersections with each concept under the
/// real pairing (draw 0) and each shuffle (draws 1..).
#[derive(Debug, Clone)]
pub struct UnitCounts {
    concepts: usize,
    active: u64,
    intersections: Vec<u64>,
}

impl UnitCounts {
    pub fn new(draws: usize, concepts: usize) -> Self {
        Self {
            concepts,
            active: 0,
            intersections: vec![0; draws * concepts],
        }
    }

    /// Adds image `i`'s on-pixels (set only within `rows`).
    pub fn add(
        &mut self,
        on: &Bitmap,
        rows: Range<usize>,
        i: usize,
        perms: &[Vec<u32>],
        masks: &MaskSet,
    ) {
        let words = on.words_per_row;
        self.active += on.bits[rows.start * words..rows.end * words]
            .iter()
            .map(|w| w.count_ones() as u64)
            .sum::<u64>();
        let partners = std::iter::once(i).chain(perms.iter().map(|p| p[i] as usize));
        for (draw, j) in partners.enumerate() {
            for (c, mask) in masks.masks[j].iter().enumerate() {
                if let Some(mask) = mask {
                    self.intersections[draw * self.concepts + c] +=
                        on.and_count(mask, rows.clone());
                }
            }
        }
    }

    fn iou(&self, draw: usize, c: usize, mask_area: u64) -> f64 {
        let i = self.intersections[draw * self.concepts + c];
        let union = self.active + mask_area - i;
        if union == 0 {
            0.0
        } else {
            i as f64 / union as f64
        }
    }
}

/// The per-unit rows and every unit × concept score.
pub fn finish(
    hook: HookPoint,
    counts: &[UnitCounts],
    thresholds: &[f32],
    masks: &MaskSet,
    pixels: f64,
    opts: &DissectOptions,
) -> (Vec<UnitRow>, Vec<ScoreRow>) {
    let concepts = masks.concepts.len();
    let mut units = Vec::with_capacity(counts.len());
    let mut scores = Vec::with_capacity(counts.len() * concepts);
    for (u, k) in counts.iter().enumerate() {
        let ious: Vec<f64> = (0..concepts).map(|c| k.iou(0, c, masks.areas[c])).collect();
        for (c, &iou) in ious.iter().enumerate() {
            scores.push(ScoreRow {
                hook,
                unit: u as u32,
                concept: masks.concepts[c].clone(),
                iou,
                intersection: k.intersections[c],
                activation_pixels: k.active,
                mask_pixels: masks.areas[c],
            });
        }
        let mut order: Vec<usize> = (0..concepts).collect();
        order.sort_by(|&a, &b| ious[b].total_cmp(&ious[a]).then(a.cmp(&b)));
        let best = order[0];
        let null: Vec<f64> = (1..=opts.permutations)
            .map(|d| k.iou(d, best, masks.areas[best]))
            .collect();
        let mean = crate::stats::mean(&null);
        let sd = crate::stats::variance(&null).sqrt();
        let observed = ious[best];
        let z = if sd > 0.0 {
            (observed - mean) / sd
        } else if observed > mean {
            f64::INFINITY
        } else {
            0.0
        };
        let p_value = if k.active == 0 {
            1.0
        } else {
            (normal_upper_tail(z) * concepts as f64).min(1.0)
        };
        let second = order.get(1).copied();
        units.push(UnitRow {
            hook,
            unit: u as u32,
            threshold: thresholds[u],
            active_fraction: k.active as f64 / pixels,
            concept: if k.active == 0 {
                String::new()
            } else {
                masks.concepts[best].clone()
            },
            iou: observed,
            baseline_mean: mean,
            baseline_sd: sd,
            z,
            p_value,
            q_value: f64::NAN,
            labelled: false,
            runner_up: second
                .map(|c| masks.concepts[c].clone())
                .unwrap_or_default(),
            runner_up_iou: second.map_or(0.0, |c| ious[c]),
        });
    }
    let p: Vec<f64> = units.iter().map(|u| u.p_value).collect();
    for (row, q) in units.iter_mut().zip(benjamini_hochberg(&p)) {
        row.q_value = q;
        row.labelled = row.iou >= opts.iou_threshold && q <= opts.alpha && !row.concept.is_empty();
    }
    (units, scores)
}

/// Each unit's top images by their largest cell, ties broken by the mean over cells (units
/// that saturate — ReLU6 at 6.0 — tie on the maximum in many images), with the map, kept while
/// streaming.
pub struct TopExamples {
    keep: usize,
    /// Per unit, best first.
    best: Vec<Vec<Kept>>,
}

/// A kept image: its (max, mean) ranking key, id and map.
struct Kept {
    key: (f32, f32),
    id: u64,
    map: Vec<f32>,
}

impl TopExamples {
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            best: Vec::new(),
        }
    }

    /// Offers one image's maps (unit-major, `cells` per unit).
    pub fn offer(&mut self, id: u64, maps: &[f32], cells: usize) {
        let units = maps.len() / cells;
        if self.best.len() < units {
            self.best.resize_with(units, Vec::new);
        }
        if self.keep == 0 {
            return;
        }
        let better = |a: (f32, f32), b: (f32, f32)| a.0 > b.0 || (a.0 == b.0 && a.1 > b.1);
        for (u, kept) in self.best.iter_mut().enumerate() {
            let map = &maps[u * cells..(u + 1) * cells];
            let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mean = map.iter().sum::<f32>() / cells as f32;
            let key = (max, mean);
            if kept.len() == self.keep && kept.last().is_some_and(|l| !better(key, l.key)) {
                continue;
            }
            let at = kept.partition_point(|e| !better(key, e.key));
            kept.insert(
                at,
                Kept {
                    key,
                    id,
                    map: map.to_vec(),
                },
            );
            kept.truncate(self.keep);
        }
    }

    pub fn rows(self, hook: HookPoint) -> Vec<ExampleRow> {
        self.best
            .into_iter()
            .enumerate()
            .flat_map(|(u, kept)| {
                kept.into_iter()
                    .enumerate()
                    .map(move |(rank, k)| ExampleRow {
                        hook,
                        unit: u as u32,
                        rank: rank as u32,
                        example_id: k.id,
                        max_activation: k.key.0,
                        map: k.map,
                    })
            })
            .collect()
    }
}
