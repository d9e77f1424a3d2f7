//! Direct logit attribution (Elhage et al. 2021; TransformerLens's convention): the last
//! position's final residual stream is the sum of the embeddings and every block's attention
//! and MLP outputs; each component's contribution to logit(answer) − logit(wrong) is its read-out
//! through the final normalisation *with the normalisation's scale frozen* at the full
//! residual's value, dotted with `W_U[answer] − W_U[wrong]`. With the scale frozen the read-out
//! is linear, so the contributions (plus LayerNorm's bias term) sum to the logit difference.
//!
//! Each attention output is also split by head: `attn_out = Σ_h z_h W_O[h] + b_O`, so head `h`'s
//! share is the block's output with every other head's `z` zeroed minus the output with all
//! zeroed (the bias). Where a norm follows the projection (Gemma's and OLMo-2's post-norms)
//! the output is not linear in the heads: there each head's `z_h W_O[h]` (and the bias) is read
//! through that norm with its scale frozen at the whole output's, as the final norm is. Those
//! rows (`part_of` = the block's `hook_attn_out`: one per head, and `blocks.L.attn.bias`) sum to
//! that component and are not counted again in the total.
//!
//! A final logit soft-cap (Gemma-2: `c · tanh(x / c)`) is not linear either: the components sum
//! to the difference of the logits before it, and a `logit_softcap` row adds what the cap
//! changes, so the rows without `part_of` sum to the difference of the model's logits.

use crate::patching::PreparedPair;
use glassbox_data::HookPoint;
use glassbox_models::tokenizer::Encoded;
use glassbox_models::{
    AttentionOutput, Capture, FinalNorm, LoadedModel, ModelError, Result, TokenBatch,
};
use std::collections::BTreeMap;

/// One component's contribution for one run of one pair.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DlaRow {
    /// Row index of the pair.
    pub pair: u64,
    /// `clean` or `corrupted`.
    pub run: String,
    /// `hook_embed`, `hook_pos_embed`, `blocks.L.hook_attn_out`, `blocks.L.hook_mlp_out`,
    /// `ln_final.bias` (LayerNorm's β read out), or `logit_softcap` (what a final soft-cap
    /// changes in the difference).
    pub component: String,
    /// The block, for block components.
    pub layer: Option<u32>,
    /// The head, for a head's share of its block's attention output.
    pub head: Option<u32>,
    /// The component this row breaks down (a head's or the bias's share of
    /// `blocks.L.hook_attn_out`), else `None`: rows without it sum to the logit difference.
    pub part_of: Option<String>,
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
            .to_dtype(candle_core::DType::F32)?
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
        let norm_at = frozen(norm, residual)?;
        let read = |c: &[f64]| -> f64 { dot(&norm_at.apply(c), &direction) };
        for (i, &hook) in components.iter().enumerate() {
            rows.push(DlaRow {
                pair: pair.row as u64,
                run: run.to_owned(),
                component: hook.to_string(),
                layer: hook.layer().map(|l| l as u32),
                head: None,
                part_of: None,
                contribution: read(&acts[i]),
            });
        }
        for (layer, heads, bias) in head_outputs(model, encoded)? {
            let whole = HookPoint::AttnOut(layer).to_string();
            for (h, out) in heads.iter().enumerate() {
                rows.push(DlaRow {
                    pair: pair.row as u64,
                    run: run.to_owned(),
                    component: format!("blocks.{layer}.attn.head.{h}"),
                    layer: Some(layer as u32),
                    head: Some(h as u32),
                    part_of: Some(whole.clone()),
                    contribution: read(out),
                });
            }
            rows.push(DlaRow {
                pair: pair.row as u64,
                run: run.to_owned(),
                component: format!("blocks.{layer}.attn.bias"),
                layer: Some(layer as u32),
                head: None,
                part_of: Some(whole),
                contribution: read(&bias),
            });
        }
        if let Some(b) = &norm_at.beta {
            rows.push(DlaRow {
                pair: pair.row as u64,
                run: run.to_owned(),
                component: "ln_final.bias".into(),
                layer: None,
                head: None,
                part_of: None,
                contribution: b.iter().zip(&direction).map(|(b, d)| b * d).sum(),
            });
        }
        if let Some(cap) = model.model.final_logit_softcap() {
            // The logits before the cap, from the whole normalised residual.
            let mut normalized = norm_at.apply(residual);
            if let Some(beta) = &norm_at.beta {
                normalized.iter_mut().zip(beta).for_each(|(n, b)| *n += b);
            }
            let (la, lw) = (dot(&normalized, &a), dot(&normalized, &w));
            let capped = |x: f64| cap * (x / cap).tanh();
            rows.push(DlaRow {
                pair: pair.row as u64,
                run: run.to_owned(),
                component: "logit_softcap".into(),
                layer: None,
                head: None,
                part_of: None,
                contribution: (capped(la) - capped(lw)) - (la - lw),
            });
        }
    }
    Ok(rows)
}

/// In every block at once: keeps one head's slice of `attn.hook_z` per copy (copy `i` keeps
/// head `i`; the last copy keeps none), captures the attention output that makes, and hands
/// the unedited run's attention output on, so every later block sees the unedited stream.
struct OneHead {
    layers: Vec<usize>,
    head_dim: usize,
    /// The unedited run's attention output per block, `[1, t, hidden]`.
    unedited: BTreeMap<usize, candle_core::Tensor>,
    captured: BTreeMap<usize, candle_core::Tensor>,
}

impl glassbox_models::Hooks for OneHead {
    fn wants(&self, point: HookPoint) -> bool {
        match point {
            HookPoint::AttnZ(l) | HookPoint::AttnOut(l) => self.layers.contains(&l),
            _ => false,
        }
    }
    fn visit(
        &mut self,
        point: HookPoint,
        x: candle_core::Tensor,
    ) -> candle_core::Result<candle_core::Tensor> {
        match point {
            HookPoint::AttnOut(l) if self.layers.contains(&l) => {
                self.captured.insert(l, x.clone());
                self.unedited[&l].broadcast_as(x.shape())?.contiguous()
            }
            HookPoint::AttnZ(l) if self.layers.contains(&l) => {
                let (k, t, w) = x.dims3()?;
                let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
                for copy in 0..k {
                    for p in 0..t {
                        let row = &mut v[(copy * t + p) * w..(copy * t + p + 1) * w];
                        for (c, value) in row.iter_mut().enumerate() {
                            if c / self.head_dim != copy {
                                *value = 0.0;
                            }
                        }
                    }
                }
                candle_core::Tensor::from_vec(v, (k, t, w), x.device())
            }
            _ => Ok(x),
        }
    }
}

/// Per block with heads, each head's share of the attention output at the last position and
/// the output bias's (the output with every head zeroed).
type HeadShares = (usize, Vec<Vec<f64>>, Vec<f64>);

/// Two forwards: the unedited run (its attention outputs), then `heads + 1` copies that split
/// every block's attention output by head at once (see [`OneHead`]).
fn head_outputs(model: &LoadedModel, encoded: &Encoded) -> Result<Vec<HeadShares>> {
    let Some(heads) = model.model.attention_heads() else {
        return Ok(Vec::new());
    };
    let points = model.model.hook_points();
    let layers: Vec<usize> = points
        .iter()
        .filter_map(|p| match p {
            HookPoint::AttnZ(l) if points.contains(&HookPoint::AttnOut(*l)) => Some(*l),
            _ => None,
        })
        .collect();
    // Blocks with a norm after the projection: their shares from `z` through the frozen norm.
    let (normed, layers): (Vec<usize>, Vec<usize>) = layers
        .into_iter()
        .partition(|&l| model.model.attention_post_norm(l).is_some());
    let mut out = Vec::new();
    if !normed.is_empty() {
        let points: Vec<HookPoint> = normed.iter().map(|&l| HookPoint::AttnZ(l)).collect();
        for (&layer, z) in normed.iter().zip(last_position(model, encoded, &points)?) {
            let parts = model
                .model
                .attention_post_norm(layer)
                .expect("partitioned on it")?;
            out.push(post_norm_shares(parts, layer, &z, heads)?);
        }
    }
    let Some(&first) = layers.first() else {
        return Ok(out);
    };
    let t = encoded.ids.len();
    let one = TokenBatch::from_encoded(&[encoded], model.pad_id, &model.device)?;
    let mut capture = Capture::only(layers.iter().map(|&l| HookPoint::AttnOut(l)));
    model.model.forward((&one).into(), &mut capture)?;
    let unedited = layers
        .iter()
        .map(|&l| {
            Ok((
                l,
                capture
                    .get(HookPoint::AttnOut(l), model.model.family())?
                    .clone(),
            ))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    let refs: Vec<&Encoded> = vec![encoded; heads + 1];
    let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device)?;
    let mut hooks = OneHead {
        head_dim: model.model.hook_width(HookPoint::AttnZ(first)) / heads,
        layers,
        unedited,
        captured: BTreeMap::new(),
    };
    model.model.forward((&batch).into(), &mut hooks)?;
    for &layer in &hooks.layers {
        let a = hooks
            .captured
            .get(&layer)
            .ok_or_else(|| ModelError::UnknownHook {
                name: HookPoint::AttnOut(layer).to_string(),
                hint: format!(" (the {} forward never reached it)", model.model.family()),
            })?;
        let last: Vec<Vec<f32>> = a.narrow(1, t - 1, 1)?.squeeze(1)?.to_vec2()?;
        let bias = &last[heads];
        let shares = last[..heads]
            .iter()
            .map(|row| {
                row.iter()
                    .zip(bias)
                    .map(|(v, b)| f64::from(*v) - f64::from(*b))
                    .collect()
            })
            .collect();
        out.push((layer, shares, bias.iter().map(|v| f64::from(*v)).collect()));
    }
    out.sort_by_key(|(layer, _, _)| *layer);
    Ok(out)
}

/// A post-normed block's head shares at one position: `z_h W_O[h]ᵀ` per head and the
/// projection's bias, each read through the norm with its scale (and centring) frozen at the
/// whole output `Σ_h z_h W_O[h]ᵀ + b`'s, so they sum to the block's `hook_attn_out`; a
/// LayerNorm's β goes with the bias.
fn post_norm_shares(
    parts: AttentionOutput<'_>,
    layer: usize,
    z: &[f64],
    heads: usize,
) -> Result<HeadShares> {
    let rows: Vec<Vec<f32>> = parts.weight.to_dtype(candle_core::DType::F32)?.to_vec2()?;
    let head_dim = z.len() / heads;
    let shares: Vec<Vec<f64>> = (0..heads)
        .map(|h| {
            rows.iter()
                .map(|row| {
                    row[h * head_dim..(h + 1) * head_dim]
                        .iter()
                        .zip(&z[h * head_dim..(h + 1) * head_dim])
                        .map(|(w, z)| f64::from(*w) * z)
                        .sum()
                })
                .collect()
        })
        .collect();
    let bias: Vec<f64> = match parts.bias {
        Some(b) => b
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect(),
        None => vec![0.0; rows.len()],
    };
    let whole: Vec<f64> = (0..rows.len())
        .map(|i| shares.iter().map(|s| s[i]).sum::<f64>() + bias[i])
        .collect();
    let norm = frozen(parts.norm, &whole)?;
    let shares = shares.iter().map(|s| norm.apply(s)).collect();
    let mut bias = norm.apply(&bias);
    if let Some(beta) = &norm.beta {
        bias.iter_mut().zip(beta).for_each(|(b, beta)| *b += beta);
    }
    Ok((layer, shares, bias))
}

/// A normalisation with its scale frozen at one vector's value: linear in what it reads, so
/// components read through it add up to the whole.
struct Frozen {
    gamma: Vec<f64>,
    /// LayerNorm's β (RMSNorm has none).
    beta: Option<Vec<f64>>,
    /// 1/σ (or 1/rms) of the vector it was frozen at.
    scale: f64,
    /// Whether components are centred (LayerNorm).
    center: bool,
}

impl Frozen {
    /// `(c − mean c) · scale · γ` (the mean only for LayerNorm); β is not added.
    fn apply(&self, c: &[f64]) -> Vec<f64> {
        let mean = if self.center {
            c.iter().sum::<f64>() / c.len() as f64
        } else {
            0.0
        };
        c.iter()
            .zip(&self.gamma)
            .map(|(v, g)| (v - mean) * self.scale * g)
            .collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

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
            Frozen {
                gamma: vec(weight)?,
                beta: Some(vec(bias)?),
                scale: 1.0 / (var + eps).sqrt(),
                center: true,
            }
        }
        FinalNorm::Rms { weight, eps } => {
            let ms = residual.iter().map(|v| v * v).sum::<f64>() / n;
            Frozen {
                gamma: vec(weight)?,
                beta: None,
                scale: 1.0 / (ms + eps).sqrt(),
                center: false,
            }
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
    let mut capture = Capture::only(hooks.iter().copied());
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
