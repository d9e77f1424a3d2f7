//! The PCA baseline: the best linear reconstruction through as many dimensions as the SAE has
//! active latents per token. An SAE that cannot beat it at equal L0 has learnt little that is
//! sparse. Fitted with linfa-reduction's PCA (truncated SVD, fixed seed: deterministic).

use super::ev_bootstrap::Bootstrap;
use super::metrics::{MetricSums, Metrics};
use super::stream::RowSource;
use crate::ConceptError;
use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_reduction::Pca;
use ndarray::Array2;

/// A fitted principal subspace.
#[derive(Debug, Clone)]
pub struct PcaBaseline {
    pub components: usize,
    mean: Vec<f64>,
    /// `components × d`, orthonormal rows.
    basis: Vec<f64>,
    d: usize,
}

impl PcaBaseline {
    /// Fits `components` principal directions to `rows` (`· × d`).
    pub fn fit(rows: &[f32], d: usize, components: usize) -> Result<Self, ConceptError> {
        let n = rows.len() / d;
        let components = components.clamp(1, d);
        if n < 2 {
            return Err(ConceptError::Invalid(
                "the PCA baseline needs at least two training rows".into(),
            ));
        }
        let x = Array2::from_shape_vec((n, d), rows.iter().map(|&v| v as f64).collect())
            .map_err(|e| ConceptError::Invalid(format!("PCA input: {e}")))?;
        let pca = Pca::params(components)
            .fit(&DatasetBase::from(x))
            .map_err(|e| ConceptError::Invalid(format!("PCA baseline: {e}")))?;
        Ok(Self {
            components,
            mean: pca.mean().to_vec(),
            basis: pca.components().iter().copied().collect(),
            d,
        })
    }

    /// Projections of `x` (`rows × d`) onto the subspace, back in activation space.
    pub fn reconstruct(&self, x: &[f32]) -> Vec<f32> {
        let d = self.d;
        let mut out = Vec::with_capacity(x.len());
        let mut centred = vec![0.0f64; d];
        for row in x.chunks_exact(d) {
            centred
                .iter_mut()
                .zip(row)
                .zip(&self.mean)
                .for_each(|((c, v), m)| *c = *v as f64 - m);
            let mut rec = self.mean.clone();
            for b in self.basis.chunks_exact(d) {
                let coef: f64 = b.iter().zip(&centred).map(|(a, c)| a * c).sum();
                rec.iter_mut().zip(b).for_each(|(r, a)| *r += coef * a);
            }
            out.extend(rec.iter().map(|&v| v as f32));
        }
        out
    }

    /// Reconstruction metrics over one epoch of `source` (sparsity fields are meaningless for
    /// PCA and left at their empty values); the same `bootstrap` as an SAE's evaluation on the
    /// same rows draws the same resamples (a paired comparison).
    pub fn evaluate<S: RowSource>(
        &self,
        source: &mut S,
        bootstrap: Bootstrap,
    ) -> Result<Metrics, ConceptError> {
        let mut sums = MetricSums::new(self.d, 0).with_bootstrap(bootstrap);
        let (mut rows, mut ids) = (Vec::new(), Vec::new());
        source.rewind();
        while source.next_rows(&mut rows, &mut ids)? {
            let rec = self.reconstruct(&rows);
            sums.add_rows(&ids, &rows, &rec, None);
            rows.clear();
            ids.clear();
        }
        source.rewind();
        let mut m = sums.finish();
        m.l0 = self.components as f64;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_planted_plane() {
        // Points on the plane spanned by e0 and e1 (plus a tiny e2 component) in 3-D.
        let mut rng = glassbox_data::rng::SeededRng::new(1);
        let rows: Vec<f32> = (0..200)
            .flat_map(|_| {
                let (a, b) = (rng.unit_f64() * 4.0 - 2.0, rng.unit_f64() * 2.0 - 1.0);
                [a as f32 + 1.0, b as f32, 0.001 * (rng.unit_f64() as f32)]
            })
            .collect();
        let pca = PcaBaseline::fit(&rows, 3, 2).unwrap();
        let rec = pca.reconstruct(&rows);
        let err: f32 = rows
            .iter()
            .zip(&rec)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-2, "{err}");
        let one = PcaBaseline::fit(&rows, 3, 1).unwrap();
        let mut sums = MetricSums::new(3, 0);
        sums.add(&rows, &one.reconstruct(&rows), None);
        let ev = sums.finish().explained_variance;
        // The first direction (variance 4/3) carries 80 % of the variance (4/3 + 1/3).
        assert!((ev - 0.8).abs() < 0.05, "{ev}");
    }
}
