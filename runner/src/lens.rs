//! The logit lens (nostalgebraist 2020): each block's output residual at the last position,
//! read out through the final normalisation and the unembedding, as if the model stopped
//! there — where the answer appears, layer by layer, in the clean and the corrupted run.

use crate::patching::PreparedPair;
use candle_core::Tensor;
use glassbox_data::HookPoint;
use glassbox_models::tokenizer::Encoded;
use glassbox_models::{Capture, LoadedModel, ModelError, Result, TokenBatch};

/// One layer's read-out of one run of one pair.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LensRow {
    /// Row index of the pair.
    pub pair: u64,
    /// `clean` or `corrupted`.
    pub run: String,
    /// The block whose output is read (`blocks.L.hook_resid_post`).
    pub layer: u32,
    /// 1-based rank of the answer among all tokens (1 = the top prediction).
    pub answer_rank: u32,
    /// Probability of the answer.
    pub answer_prob: f64,
    /// Probability of the wrong token.
    pub wrong_prob: f64,
    /// logit(answer) − logit(wrong).
    pub logit_diff: f64,
}

/// The logit lens of a pair's clean and corrupted runs at every block.
pub fn logit_lens(model: &LoadedModel, pair: &PreparedPair) -> Result<Vec<LensRow>> {
    let layers: Vec<HookPoint> = model
        .model
        .hook_points()
        .into_iter()
        .filter(|h| matches!(h, HookPoint::ResidPost(_)))
        .collect();
    let mut rows = Vec::new();
    for (run, encoded) in [("clean", &pair.clean), ("corrupted", &pair.corrupted)] {
        rows.extend(read_out(model, encoded, &layers, pair, run)?);
    }
    Ok(rows)
}

fn read_out(
    model: &LoadedModel,
    encoded: &Encoded,
    layers: &[HookPoint],
    pair: &PreparedPair,
    run: &'static str,
) -> Result<Vec<LensRow>> {
    let batch = TokenBatch::from_encoded(&[encoded], model.pad_id, &model.device)?;
    // The lens unembeds the captured streams itself: the forward stops after the last.
    let mut capture = Capture::only(layers.iter().copied());
    model.model.forward((&batch).into(), &mut capture)?;
    let t = encoded.ids.len();
    // Every layer's last position at once, `[layers, 1, hidden]`: one multiply by the
    // unembedding instead of one per layer.
    let last: Vec<Tensor> = layers
        .iter()
        .map(|&hook| {
            let x = capture.get(hook, model.model.family())?;
            Ok(x.narrow(1, t - 1, 1)?.squeeze(0)?)
        })
        .collect::<Result<_>>()?;
    let last = Tensor::stack(&last, 0)?.contiguous()?;
    let normed = model.model.final_norm(&last).ok_or_else(|| {
        ModelError::Invalid(format!(
            "the {} model has no final norm to read a residual through",
            model.model.family()
        ))
    })??;
    let all: Vec<Vec<Vec<f32>>> = model
        .model
        .unembed(&normed)
        .ok_or_else(|| ModelError::Invalid("a causal LM has an unembedding".into()))??
        .to_vec3()?;
    let mut out = Vec::with_capacity(layers.len());
    for (&hook, logits) in layers.iter().zip(all) {
        let logits = logits.into_iter().next().unwrap_or_default();
        let (a, w) = (logits[pair.answer as usize], logits[pair.wrong as usize]);
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = logits
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        out.push(LensRow {
            pair: pair.row as u64,
            run: run.to_owned(),
            layer: hook.layer().unwrap_or(0) as u32,
            answer_rank: 1 + logits.iter().filter(|&&v| v > a).count() as u32,
            answer_prob: (a as f64 - lse).exp(),
            wrong_prob: (w as f64 - lse).exp(),
            logit_diff: a as f64 - w as f64,
        });
    }
    Ok(out)
}
