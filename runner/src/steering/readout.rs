//! Reading a forward's readouts: linear heads on captured hooks (pooled, or averaged over
//! positions), next-token log-probabilities and their KL from the unedited run, classifier
//! class log-probabilities and theirs.

use super::{batch_size, real_length, Batch, HeadClass, Readout};
use candle_core::{DType, Tensor, D};
use glassbox_data::Pool;
use glassbox_models::{Capture, LoadedModel, ModelError, Result};

/// The model's output distribution as log-probabilities, one row per example, when a readout
/// needs it: a causal LM's next token after each example's last token (next-token readouts),
/// else a classifier's classes ([`Readout::OutputKl`]); empty when none does.
pub(super) fn output_log_probs(
    model: &LoadedModel,
    batch: &Batch,
    output: &Tensor,
    readouts: &[Readout],
) -> Result<Vec<Vec<f32>>> {
    let next_token = readouts
        .iter()
        .any(|r| matches!(r, Readout::NextToken { .. } | Readout::NextTokenKl));
    if !next_token {
        if !readouts.iter().any(|r| matches!(r, Readout::OutputKl)) {
            return Ok(Vec::new());
        }
        let logits = class_logits(model, batch, output)?;
        let logits = Tensor::new(logits, &candle_core::Device::Cpu)?;
        return Ok(candle_nn_log_softmax(&logits)?.to_vec2()?);
    }
    let Batch::Tokens(tokens) = batch else {
        return Ok(Vec::new());
    };
    let last: Vec<Tensor> = tokens
        .lengths
        .iter()
        .enumerate()
        .map(|(b, &n)| output.get(b)?.get(n - 1)?.unsqueeze(0))
        .collect::<candle_core::Result<_>>()?;
    let last = Tensor::cat(&last, 0)?.unsqueeze(1)?;
    let logits = model.model.unembed(&last).ok_or_else(|| {
        ModelError::Invalid(format!(
            "next-token readouts need a causal LM; {}",
            glassbox_models::why_no_next_token(model.model.as_ref())
        ))
    })??;
    let logits = logits.squeeze(1)?.to_dtype(DType::F32)?;
    let log_probs = candle_nn_log_softmax(&logits)?;
    Ok(log_probs.to_vec2()?)
}

/// A classifier's logits per example: a text classifier's class head on its last hidden
/// states, an image classifier's forward output.
fn class_logits(model: &LoadedModel, batch: &Batch, output: &Tensor) -> Result<Vec<Vec<f32>>> {
    let text_logits = match batch {
        Batch::Tokens(b) => model.model.classify(output, &b.lengths),
        Batch::Images(_) => None,
    };
    Ok(match (text_logits, output.rank()) {
        (Some(logits), _) => logits?.to_dtype(DType::F32)?.to_vec2()?,
        (None, 2) => output.to_dtype(DType::F32)?.to_vec2()?,
        (None, _) => {
            return Err(ModelError::Invalid(format!(
            "class readouts need a classifier's logits, but the {} forward returns a {:?} tensor",
            model.model.family(),
            output.dims()
        )))
        }
    })
}

fn candle_nn_log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let shifted = x.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&log_sum)
}

/// Appends each readout's value for the batch's examples to `values`.
#[allow(clippy::too_many_arguments)]
pub(super) fn read(
    model: &LoadedModel,
    batch: &Batch,
    output: &Tensor,
    capture: &Capture,
    log_probs: &[Vec<f32>],
    reference: Option<&[Vec<f32>]>,
    readouts: &[Readout],
    offset: usize,
    values: &mut [Vec<f64>],
) -> Result<()> {
    let n = batch_size(batch);
    for (readout, out) in readouts.iter().zip(values.iter_mut()) {
        match readout {
            Readout::Head {
                hook,
                pool,
                weight,
                bias,
                class,
            } => {
                if pool.is_some() && matches!(class, HeadClass::PerToken(_)) {
                    return Err(ModelError::Invalid(format!(
                        "a pooled head on `{hook}` has no positions to read per-token classes at"
                    )));
                }
                let h: Vec<Vec<Vec<f32>>> = capture
                    .get(*hook, model.model.family())?
                    .to_dtype(DType::F32)?
                    .to_vec3()?;
                for (b, rows) in h.iter().enumerate() {
                    let real = &rows[..real_length(batch, b).min(rows.len())];
                    let which = match class {
                        HeadClass::Raw => Which::Raw,
                        HeadClass::PerExample(c) => match c[offset + b] {
                            Some(c) => Which::Class(c),
                            None => Which::Nothing,
                        },
                        HeadClass::PerToken(c) => {
                            let classes = &c[offset + b];
                            if classes.len() != real.len() {
                                return Err(ModelError::Invalid(format!(
                                    "example {} of the readout has {} token classes for {} tokens; the run's tokens.parquet is from another tokenizer — re-run extract with --force",
                                    offset + b,
                                    classes.len(),
                                    real.len()
                                )));
                            }
                            Which::PerToken(classes)
                        }
                    };
                    out.push(head_value(real, *pool, weight, bias, which));
                }
            }
            Readout::NextToken { id } => {
                out.extend(log_probs.iter().map(|lp| lp[*id as usize] as f64));
            }
            Readout::NextTokenKl | Readout::OutputKl => match reference {
                None => out.extend(std::iter::repeat_n(0.0, n)),
                Some(reference) => {
                    out.extend(log_probs.iter().zip(reference).map(|(edited, clean)| {
                        clean
                            .iter()
                            .zip(edited)
                            .map(|(c, e)| (*c as f64).exp() * (*c as f64 - *e as f64))
                            .sum::<f64>()
                    }))
                }
            },
            Readout::OutputClass { class } => {
                let logits = class_logits(model, batch, output)?;
                for z in logits {
                    if *class >= z.len() {
                        return Err(ModelError::Invalid(format!(
                            "class {class} is out of range: the model has {} outputs",
                            z.len()
                        )));
                    }
                    let z: Vec<f64> = z.iter().map(|v| *v as f64).collect();
                    out.push(log_probability(&z, Some(*class)));
                }
            }
        }
    }
    Ok(())
}

/// What one example's head value reads.
#[derive(Debug, Clone, Copy)]
enum Which<'a> {
    /// The raw single output.
    Raw,
    /// This class's log-probability.
    Class(usize),
    /// Each position's own class (token level); positions without one are left out.
    PerToken(&'a [Option<usize>]),
    /// Nothing: the example has no class.
    Nothing,
}

/// The value of a linear head on an example's real rows: pooled, or the mean over positions of
/// the per-position value. NaN when the example has no class to read.
fn head_value(
    rows: &[Vec<f32>],
    pool: Option<Pool>,
    weight: &[f32],
    bias: &[f32],
    which: Which<'_>,
) -> f64 {
    let width = weight.len() / bias.len().max(1);
    let value_of = |x: &[f64], class: Option<usize>| -> f64 {
        let z: Vec<f64> = bias
            .iter()
            .enumerate()
            .map(|(o, b)| {
                weight[o * width..(o + 1) * width]
                    .iter()
                    .zip(x)
                    .map(|(w, v)| *w as f64 * v)
                    .sum::<f64>()
                    + *b as f64
            })
            .collect();
        log_probability(&z, class)
    };
    let class_at = |position: usize| -> Option<Option<usize>> {
        match which {
            Which::Raw => Some(None),
            Which::Class(c) => Some(Some(c)),
            Which::PerToken(classes) => classes[position].map(Some),
            Which::Nothing => None,
        }
    };
    match pool {
        Some(pool) => match which {
            Which::Raw => value_of(&pooled(rows, pool, width), None),
            Which::Class(c) => value_of(&pooled(rows, pool, width), Some(c)),
            // A pooled row has no positions to read classes at.
            Which::PerToken(_) | Which::Nothing => f64::NAN,
        },
        None => {
            let per: Vec<f64> = rows
                .iter()
                .enumerate()
                .filter_map(|(p, r)| {
                    let class = class_at(p)?;
                    Some(value_of(
                        &r.iter().map(|v| *v as f64).collect::<Vec<_>>(),
                        class,
                    ))
                })
                .collect();
            if per.is_empty() {
                f64::NAN
            } else {
                per.iter().sum::<f64>() / per.len() as f64
            }
        }
    }
}

fn pooled(rows: &[Vec<f32>], pool: Pool, width: usize) -> Vec<f64> {
    let mut out = vec![0.0; width];
    match pool {
        Pool::Mean => {
            for r in rows {
                for (o, v) in out.iter_mut().zip(r) {
                    *o += *v as f64 / rows.len() as f64;
                }
            }
        }
        Pool::Cls => out = rows[0].iter().map(|v| *v as f64).collect(),
        Pool::Last => out = rows[rows.len() - 1].iter().map(|v| *v as f64).collect(),
        Pool::Max => {
            out.fill(f64::NEG_INFINITY);
            for r in rows {
                for (o, v) in out.iter_mut().zip(r) {
                    *o = o.max(*v as f64);
                }
            }
        }
    }
    out
}

/// `log p(class)` from head outputs `z` (one output: a binary logit), or the raw single output
/// when there is no class.
pub fn log_probability(z: &[f64], class: Option<usize>) -> f64 {
    let Some(class) = class else {
        return z[0];
    };
    let log_sigmoid = |l: f64| -> f64 {
        if l > 0.0 {
            -(-l).exp().ln_1p()
        } else {
            l - l.exp().ln_1p()
        }
    };
    if z.len() == 1 {
        return log_sigmoid(if class == 1 { z[0] } else { -z[0] });
    }
    let top = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let log_sum = z.iter().map(|v| (v - top).exp()).sum::<f64>().ln() + top;
    z[class] - log_sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probabilities_of_binary_and_multiclass_heads() {
        let p = log_probability(&[0.0], Some(1));
        assert!((p - 0.5f64.ln()).abs() < 1e-12);
        let p1 = log_probability(&[2.0], Some(1)).exp();
        let p0 = log_probability(&[2.0], Some(0)).exp();
        assert!((p0 + p1 - 1.0).abs() < 1e-12);
        let total: f64 = (0..3)
            .map(|c| log_probability(&[1.0, -2.0, 0.5], Some(c)).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(log_probability(&[3.5], None), 3.5);
    }

    #[test]
    fn a_pooled_head_reads_mean_and_token_level_rows() {
        let rows = vec![vec![1.0f32, 0.0], vec![3.0, 2.0]];
        // One raw output reading unit 0: mean pool 2.0, token level (1 + 3) / 2.
        let (w, b) = (vec![1.0f32, 0.0], vec![0.0f32]);
        assert_eq!(head_value(&rows, Some(Pool::Mean), &w, &b, Which::Raw), 2.0);
        assert_eq!(head_value(&rows, None, &w, &b, Which::Raw), 2.0);
        assert_eq!(head_value(&rows, Some(Pool::Last), &w, &b, Which::Raw), 3.0);
        assert!(head_value(&rows, Some(Pool::Mean), &w, &b, Which::Nothing).is_nan());
    }

    #[test]
    fn a_token_level_head_reads_each_positions_own_class() {
        // Binary head on unit 0: logits 1 and 3 at the two positions.
        let rows = vec![vec![1.0f32, 0.0], vec![3.0, 2.0]];
        let (w, b) = (vec![1.0f32, 0.0], vec![0.0f32]);
        let own = [Some(0), Some(1)];
        let want = (log_probability(&[1.0], Some(0)) + log_probability(&[3.0], Some(1))) / 2.0;
        let got = head_value(&rows, None, &w, &b, Which::PerToken(&own));
        assert!((got - want).abs() < 1e-12);
        // Positions without a class are left out of the mean, not read as class 0.
        let second = [None, Some(1)];
        let got = head_value(&rows, None, &w, &b, Which::PerToken(&second));
        assert!((got - log_probability(&[3.0], Some(1))).abs() < 1e-12);
        assert!(head_value(&rows, None, &w, &b, Which::PerToken(&[None, None])).is_nan());
    }
}
