//! Minimum description length probing with the online code (Voita & Titov 2020).
//!
//! The rows (already shuffled) are cut at the fractions 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25,
//! 12.5, 25, 50 and 100 % of their number. The first block is sent with the uniform code
//! (`log2 K` bits a label); every later block is sent with a probe trained on all rows before
//! it, costing `Σ −log2 p(y | x)` bits. The compression is the uniform code length of all rows
//! divided by the online code length: 1 means the probe learnt nothing transmissible.
//!
//! Token-level rows split by text are sent text by text: the texts are shuffled, and each cut
//! moves to the end of the text it falls in, so no block shares a text with the rows its code
//! was trained on — as the split keeps a text's tokens in one part.

use crate::logistic::{self, Problem};

const FRACTIONS: [f64; 11] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0,
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mdl {
    /// Online code length in bits.
    pub codelength: f64,
    /// Uniform code length in bits: `n · log2 K`.
    pub uniform: f64,
    pub compression: f64,
}

/// `x` is standardised, row-major `y.len() × d`, in transmission order; `ends`, when given,
/// are the positions where a text ends (ascending, the last one `y.len()`): the only places a
/// block may end.
pub fn online_code(
    x: &[f32],
    d: usize,
    y: &[usize],
    n_classes: usize,
    l2: f64,
    max_iterations: usize,
    ends: Option<&[usize]>,
) -> Mdl {
    let n = y.len();
    let bits_per_label = (n_classes as f64).log2();
    let cuts = cuts(n, ends);
    let mut codelength = cuts[0] as f64 * bits_per_label;
    for pair in cuts.windows(2) {
        let (seen, upto) = (pair[0], pair[1]);
        let present = {
            let mut p = y[..seen].to_vec();
            p.sort_unstable();
            p.dedup();
            p.len()
        };
        let block = &y[seen..upto];
        if present < 2 {
            // Nothing to learn from one class yet: send the block with the uniform code.
            codelength += block.len() as f64 * bits_per_label;
            continue;
        }
        let problem = Problem {
            x: &x[..seen * d],
            d,
            y: &y[..seen],
            n_classes,
        };
        let model = logistic::fit(&problem, l2, max_iterations, None);
        let p = model.probabilities(&x[seen * d..upto * d]);
        codelength += block
            .iter()
            .enumerate()
            .map(|(i, &c)| -p[i * n_classes + c].max(1e-300).log2())
            .sum::<f64>();
    }
    let uniform = n as f64 * bits_per_label;
    Mdl {
        codelength,
        uniform,
        compression: uniform / codelength,
    }
}

/// Where the blocks end: the fractions of `n`, each moved to the end of the text it falls in
/// when `ends` are given.
fn cuts(n: usize, ends: Option<&[usize]>) -> Vec<usize> {
    let mut cuts: Vec<usize> = FRACTIONS
        .iter()
        .map(|f| ((f * n as f64).round() as usize).clamp(1, n))
        .map(|cut| match ends {
            Some(ends) => ends[ends.partition_point(|&e| e < cut).min(ends.len() - 1)],
            None => cut,
        })
        .collect();
    cuts.dedup();
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_end_where_texts_end() {
        assert_eq!(
            cuts(1000, None),
            [1, 2, 4, 8, 16, 32, 63, 125, 250, 500, 1000]
        );
        // Texts of 7 rows: every cut moves up to the next multiple of 7, the last to n.
        let ends: Vec<usize> = (1..=143).map(|t| (t * 7).min(1000)).collect();
        assert_eq!(
            cuts(1000, Some(&ends)),
            [7, 14, 21, 35, 63, 126, 252, 504, 1000]
        );
    }

    #[test]
    fn learnable_labels_compress_and_random_ones_do_not() {
        let n = 2000;
        let mut x = Vec::new();
        let mut learnable = Vec::new();
        let mut random = Vec::new();
        let mut s = 7u64;
        for i in 0..n {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5;
            x.push(v);
            x.push(((i * 13 % 7) as f32 - 3.0) / 3.0);
            learnable.push(usize::from(v > 0.0));
            random.push(((s >> 20) & 1) as usize);
        }
        let good = online_code(&x, 2, &learnable, 2, 1.0, 100, None);
        let bad = online_code(&x, 2, &random, 2, 1.0, 100, None);
        assert!(good.compression > 3.0, "{good:?}");
        assert!(bad.compression < 1.05, "{bad:?}");
        assert_eq!(good.uniform, 2000.0);
    }
}
