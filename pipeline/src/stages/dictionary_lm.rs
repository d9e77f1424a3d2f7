//! What only a causal LM adds to a dictionary (it needs the model, so it lives here rather than
//! in the concepts crate): the tokens each SAE feature's decoder direction promotes through the
//! unembedding, and the next-token loss when the SAE's reconstruction is spliced in at its hook.
//!
//! Splicing, over up to 64 examples of the run (real positions only, predicting token t + 1):
//! `ce_clean` (the model as is), `ce_sae` (hook replaced by the SAE's reconstruction), `ce_zero`
//! (hook zero-ablated); `ce_loss_recovered = (ce_zero − ce_sae) / (ce_zero − ce_clean)`;
//! `kl_sae` and `kl_zero` are the mean KL(clean ‖ spliced) of the next-token distributions.

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use glassbox_concepts::sae::{saelens, Sae};
use glassbox_data::examples::read_examples;
use glassbox_data::table::Columns;
use glassbox_data::{atomic, RunDir};
use glassbox_models::{Capture, HookPoint, Hooks, LoadedModel, TokenBatch};

const TOP_TOKENS: usize = 10;
const SPLICE_EXAMPLES: usize = 64;

/// Adds promoted tokens and splice metrics for every SAE of the run at a decoder model's hooks.
pub fn add_lm_outputs(run: &RunDir, model: &LoadedModel, hooks: &[HookPoint]) -> Result<()> {
    let Some(unembedding) = model.model.unembedding() else {
        return Ok(()); // encoders have no next-token distribution
    };
    for &hook in hooks {
        let dir = run.dictionary_dir(hook);
        let Ok(loaded) = saelens::load(&dir.join("sae")) else {
            continue;
        };
        promoted_tokens(&dir, model, unembedding, &loaded.sae)?;
        let splice = splice_metrics(run, model, hook, &loaded.sae)?;
        let path = dir.join("metrics.json");
        let mut metrics: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?,
        )?;
        metrics["splice"] = splice;
        atomic::write_bytes(&path, serde_json::to_string_pretty(&metrics)?.as_bytes())?;
    }
    Ok(())
}

/// `feature_promoted_tokens.parquet`: feature, rank, token_id, token, logit (`W_U · d_j`).
fn promoted_tokens(
    dir: &std::path::Path,
    model: &LoadedModel,
    unembedding: &Tensor,
    sae: &Sae,
) -> Result<()> {
    let w_dec = Tensor::from_slice(&sae.w_dec, (sae.width, sae.d_in), &candle_core::Device::Cpu)?;
    // [width, vocab]: each feature's decoder direction read out by every token's row.
    let logits = w_dec.matmul(&unembedding.t()?)?;
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let mut out: Vec<Promoted> = Vec::new();
    for (f, row) in rows.iter().enumerate() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        let k = TOP_TOKENS.min(order.len());
        order.select_nth_unstable_by(k.saturating_sub(1), |a, b| row[*b].total_cmp(&row[*a]));
        order.truncate(k);
        order.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
        for (r, &t) in order.iter().enumerate() {
            out.push(Promoted {
                feature: f as u32,
                rank: r as u32,
                token_id: t as u32,
                token: model.tokenizer()?.token(t as u32).unwrap_or_default(),
                logit: row[t] as f64,
            });
        }
    }
    let mut c = Columns::default();
    c.small("feature", &out, |r| r.feature)
        .small("rank", &out, |r| r.rank)
        .small("token_id", &out, |r| r.token_id)
        .text("token", &out, |r| &r.token)
        .float("logit", &out, |r| r.logit);
    c.write(&dir.join("feature_promoted_tokens.parquet"))?;
    Ok(())
}

struct Promoted {
    feature: u32,
    rank: u32,
    token_id: u32,
    token: String,
    logit: f64,
}

/// Replaces one hook's activation by the SAE's reconstruction, or by zeros.
struct Splice<'a> {
    point: HookPoint,
    sae: Option<&'a Sae>,
}

impl Hooks for Splice<'_> {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn visit(&mut self, _point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let Some(sae) = self.sae else {
            return x.zeros_like();
        };
        let (b, t, d) = x.dims3()?;
        let rows: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let codes = sae
            .encode(&rows)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Tensor::from_vec(sae.decode(&codes), (b, t, d), x.device())
    }
}

/// Per-position next-token log-probabilities `[b][t][vocab]` of a forward with `hooks`.
fn log_probs(
    model: &LoadedModel,
    batch: &TokenBatch,
    hooks: &mut dyn Hooks,
) -> Result<Vec<Vec<Vec<f64>>>> {
    let normalized = model.model.forward(batch.into(), hooks)?;
    let logits = model
        .model
        .unembed(&normalized)
        .context("a causal LM has an unembedding")??;
    let mut rows: Vec<Vec<Vec<f64>>> = logits.to_dtype(DType::F64)?.to_vec3()?;
    for row in rows.iter_mut().flatten() {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = row.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
        row.iter_mut().for_each(|v| *v -= log_sum);
    }
    Ok(rows)
}

fn splice_metrics(
    run: &RunDir,
    model: &LoadedModel,
    point: HookPoint,
    sae: &Sae,
) -> Result<serde_json::Value> {
    let examples = read_examples(run)?;
    let texts: Vec<&str> = examples
        .texts
        .iter()
        .take(SPLICE_EXAMPLES)
        .map(String::as_str)
        .collect();
    let (mut ce, mut kl, mut tokens) = ([0.0f64; 3], [0.0f64; 2], 0u64);
    for chunk in texts.chunks(8) {
        let encoded = model.tokenizer()?.encode(chunk)?;
        let batch = TokenBatch::from_encoded(
            &encoded.iter().collect::<Vec<_>>(),
            model.pad_id,
            &model.device,
        )?;
        let clean = log_probs(model, &batch, &mut Capture::new([]))?;
        let spliced = log_probs(
            model,
            &batch,
            &mut Splice {
                point,
                sae: Some(sae),
            },
        )?;
        let zeroed = log_probs(model, &batch, &mut Splice { point, sae: None })?;
        for (i, e) in encoded.iter().enumerate() {
            for p in 0..e.ids.len().saturating_sub(1) {
                let next = e.ids[p + 1] as usize;
                for (k, lp) in [&clean, &spliced, &zeroed].iter().enumerate() {
                    ce[k] -= lp[i][p][next];
                }
                for (k, lp) in [&spliced, &zeroed].iter().enumerate() {
                    kl[k] += clean[i][p]
                        .iter()
                        .zip(&lp[i][p])
                        .map(|(c, s)| c.exp() * (c - s))
                        .sum::<f64>();
                }
                tokens += 1;
            }
        }
    }
    let n = tokens.max(1) as f64;
    let [clean, with_sae, zero] = ce.map(|v| v / n);
    Ok(serde_json::json!({
        "tokens": tokens,
        "ce_clean": clean,
        "ce_sae": with_sae,
        "ce_zero": zero,
        "ce_loss_recovered": (zero - with_sae) / (zero - clean),
        "kl_sae": kl[0] / n,
        "kl_zero": kl[1] / n,
        "definitions": {
            "ce_loss_recovered": "(ce_zero − ce_sae) / (ce_zero − ce_clean): next-token cross-entropy with the hook replaced by the SAE's reconstruction, relative to zero-ablating the hook (0) and the clean model (1)",
            "kl_sae": "mean over predicted positions of KL(clean ‖ SAE-spliced) next-token distributions, in nats",
        },
    }))
}
