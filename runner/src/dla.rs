//! Direct logit attribution (Elhage et al. 2021; TransformerLens's convention): the last
//! position's final residual stream is the sum of the embeddings and every block's attention
//! and MLP outputs; each component's contribution to logit(answer) − logit(wrong) is its read-out
//! through the final normalisation *with the normalisation's scale frozen* at the full
//! residual's value, dotted with `W_U[answer] − W_U[wrong]`. With the scale frozen the read-out
//! is linear, so the contributions (plus LayerNorm's bias term) sum to the logit difference.

use crate::patching::PreparedPair;
use glassbox_data::HookPoint;
use glassbox_models::tokenizer::Encoded;
use glassbox_models::{Capture, FinalNorm, LoadedModel, ModelError, Result, TokenBatch};

/// One component's contribution for one run of one pair.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DlaRow {
    /// Row index of the pair.
    pub pair: u64,
    /// `clean` or `corrupted`.
    pub run: &'static str,
    /// `hook_embed`, `hook_pos_embed`, `blocks.L.hook_attn_out`, `blocks.L.hook_mlp_out`, or
    /// `ln_final.bias` (LayerNorm's β read out).
    pub component: String,
    /// The block, for block components.
    pub layer: Option<u32>,
    /// Its contribution to logit(answer) − logit(wrong).
    pub contribution: f64,
}

/// Direct logit attribution of a pair's clean and corrupted runs.
pub fn direct_logit_attribution(model: &LoadedModel, pair: &PreparedPair) -> Result<Vec<DlaRow>> {
    let norm = model.model.final_norm_parts().ok_or_else(|| {
        ModelError::Invalid(format!(
            "the {} model exposes no final norm for direct logit attribution",
            model.model.family()
        ))
    })?;
    let unembedding = model.model.unembedding().ok_or_else(|| {
        ModelError::Invalid("direct logit attribution needs an unembedding".into())
    })?;
    let row = |i: u32| -> Result<Vec<f64>> {
        Ok(unembedding
            .narrow(0, i as usize, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect())
    };
    let (a, w) = (row(pair.answer)?, row(pair.wrong)?);
    let direction: Vec<f64> = a.iter().zip(&w).map(|(x, y)| x - y).collect();
    let points = model.model.hook_points();
    let mut components: Vec<HookPoint> = [HookPoint::Embed, HookPoint::PosEmbed]
        .into_iter()
        .filter(|p| points.contains(p))
        .collect();
    components.extend(
        points
            .iter()
            .copied()
            .filter(|p| matches!(p, HookPoint::AttnOut(_) | HookPoint::MlpOut(_))),
    );
    let last_block = points
        .iter()
        .filter_map(|p| match p {
            HookPoint::ResidPost(l) => Some(*l),
            _ => None,
        })
        .max()
        .ok_or_else(|| ModelError::Invalid("no residual stream hooks".into()))?;
    let mut rows = Vec::new();
    for (run, encoded) in [("clean", &pair.clean), ("corrupted", &pair.corrupted)] {
        let mut wanted = components.clone();
        wanted.push(HookPoint::ResidPost(last_block));
        let acts = last_position(model, encoded, &wanted)?;
        let residual = &acts[wanted.len() - 1];
        let (weight, bias, scale, center) = frozen(norm, residual)?;
        let read = |c: &[f64]| -> f64 {
            let mean = if center {
                c.iter().sum::<f64>() / c.len() as f64
            } else {
                0.0
            };
            c.iter()
                .zip(&weight)
                .zip(&direction)
                .map(|((v, g), d)| (v - mean) * scale * g * d)
                .sum()
        };
        for (i, &hook) in components.iter().enumerate() {
            rows.push(DlaRow {
                pair: pair.row as u64,
                run,
                component: hook.to_string(),
                layer: hook.layer().map(|l| l as u32),
                contribution: read(&acts[i]),
            });
        }
        if let Some(b) = bias {
            rows.push(DlaRow {
                pair: pair.row as u64,
                run,
                component: "ln_final.bias".into(),
                layer: None,
                contribution: b.iter().zip(&direction).map(|(b, d)| b * d).sum(),
            });
        }
    }
    Ok(rows)
}

/// γ, β, the frozen scale 1/σ (or 1/rms) of `residual`, and whether components are centred.
type Frozen = (Vec<f64>, Option<Vec<f64>>, f64, bool);

fn frozen(norm: FinalNorm<'_>, residual: &[f64]) -> Result<Frozen> {
    let vec = |t: &candle_core::Tensor| -> Result<Vec<f64>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect())
    };
    let n = residual.len() as f64;
    Ok(match norm {
        FinalNorm::Layer { weight, bias, eps } => {
            let mean = residual.iter().sum::<f64>() / n;
            let var = residual.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            (
                vec(weight)?,
                Some(vec(bias)?),
                1.0 / (var + eps).sqrt(),
                true,
            )
        }
        FinalNorm::Rms { weight, eps } => {
            let ms = residual.iter().map(|v| v * v).sum::<f64>() / n;
            (vec(weight)?, None, 1.0 / (ms + eps).sqrt(), false)
        }
    })
}

/// The last position's activation at each of `hooks`, in order.
fn last_position(
    model: &LoadedModel,
    encoded: &Encoded,
    hooks: &[HookPoint],
) -> Result<Vec<Vec<f64>>> {
    let batch = TokenBatch::from_encoded(&[encoded], model.pad_id, &model.device)?;
    let mut capture = Capture::new(hooks.iter().copied());
    model.model.forward((&batch).into(), &mut capture)?;
    let t = encoded.ids.len();
    hooks
        .iter()
        .map(|h| {
            let x = capture.get(*h, model.model.family())?;
            Ok(x.narrow(1, t - 1, 1)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect())
        })
        .collect()
}
