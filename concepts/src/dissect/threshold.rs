//! Each unit's top-quantile activation level over a whole data set, streamed: the `k`-th
//! largest of its `n` cell values, `k = ⌈q·n⌉`, kept in a min-heap of `k` values per unit, so
//! memory is `q·n` values per unit instead of the activations themselves (Network Dissection's
//! `T_k`: P(a > T_k) = q over every cell of every image).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// An f32 ordered by `total_cmp` (the store refuses non-finite values upstream).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ordered(f32);
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The `k` largest values seen per unit.
pub struct TopQuantile {
    k: usize,
    heaps: Vec<BinaryHeap<Reverse<Ordered>>>,
    minima: Vec<f32>,
}

impl TopQuantile {
    /// For `units` units whose values will number `n` each, keeping the top `quantile`.
    pub fn new(units: usize, n: usize, quantile: f64) -> Self {
        let k = ((quantile * n as f64).ceil() as usize).clamp(1, n.max(1));
        Self {
            k,
            heaps: (0..units)
                .map(|_| BinaryHeap::with_capacity(k + 1))
                .collect(),
            minima: vec![f32::INFINITY; units],
        }
    }

    /// How many values each unit keeps.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Adds one row: a value per unit.
    pub fn push_row(&mut self, row: &[f32]) {
        for (m, &v) in self.minima.iter_mut().zip(row) {
            *m = m.min(v);
        }
        for (heap, &v) in self.heaps.iter_mut().zip(row) {
            if heap.len() < self.k {
                heap.push(Reverse(Ordered(v)));
            } else if heap.peek().is_some_and(|m| v > m.0 .0) {
                heap.pop();
                heap.push(Reverse(Ordered(v)));
            }
        }
    }

    /// Each unit's threshold: its `k`-th largest value, the unit being on at values `≥` it
    /// (so a unit whose top values tie — a saturated ReLU6 — is on at all of them). A unit whose
    /// `k`-th largest value is also its smallest (constant, dead) gets +∞: never on.
    pub fn thresholds(&self) -> Vec<f32> {
        self.heaps
            .iter()
            .zip(&self.minima)
            .map(|(h, &min)| match h.peek() {
                Some(t) if t.0 .0 > min => t.0 .0,
                _ => f32::INFINITY,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_the_kth_largest_of_a_full_sort() {
        let n = 1000;
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1009) as f32 * 0.5 - 100.0)
            .collect();
        let mut t = TopQuantile::new(2, n, 0.005);
        for &v in &values {
            t.push_row(&[v, -v]);
        }
        assert_eq!(t.k(), 5);
        let mut sorted = values.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut neg: Vec<f32> = values.iter().map(|v| -v).collect();
        neg.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(t.thresholds(), vec![sorted[4], neg[4]]);
        // A constant unit is never on.
        let mut c = TopQuantile::new(1, 10, 0.1);
        (0..10).for_each(|_| c.push_row(&[0.0]));
        assert_eq!(c.thresholds(), vec![f32::INFINITY]);
    }
}
