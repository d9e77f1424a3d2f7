//! What only a causal LM adds to a dictionary (it needs the model, so it lives here rather than
//! in the concepts crate): the tokens each SAE feature's decoder direction promotes through the
//! unembedding (and those it suppresses most), and the next-token loss when the SAE's reconstruction is spliced in at its hook
//! (measured by `glassbox_runner::interventions::splice_metrics`, recorded in `metrics.json`
//! under `splice` with the names `ce_sae` / `kl_sae`).

use anyhow::{Context, Result};
use candle_core::Tensor;
use glassbox_concepts::dictionary::TranscoderSpec;
use glassbox_concepts::sae::{saelens, transcoder_formats, Sae};
use glassbox_data::table::Columns;
use glassbox_data::RunDir;
use glassbox_models::{HookPoint, LoadedModel};
use glassbox_runner::interventions::{splice_metrics, splice_metrics_from, SpliceMetrics};

const TOP_TOKENS: usize = 10;

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
        let sae = &loaded.sae;
        let reconstruct = |rows: &[f32]| -> std::result::Result<Vec<f32>, String> {
            sae.reconstruct(rows).map_err(|e| e.to_string())
        };
        let m = splice_metrics(run, model, hook, &reconstruct)?;
        record_splice(&dir, &m)?;
    }
    Ok(())
}

/// The same for transcoders: promoted tokens of their decoder rows, and the spliced-MLP loss —
/// the output hook replaced by the transcoder's prediction from the input hook's rows.
pub fn add_transcoder_outputs(
    run: &RunDir,
    model: &LoadedModel,
    transcoders: &[TranscoderSpec],
) -> Result<()> {
    let Some(unembedding) = model.model.unembedding() else {
        return Ok(());
    };
    for spec in transcoders {
        let dir = run.transcoder_dir(spec.output);
        let loaded = ["sparsify", "saelens"]
            .iter()
            .find_map(|f| transcoder_formats::load(&dir.join(f)).ok())
            .with_context(|| format!("{}: no saved transcoder", dir.display()))?;
        let t = &loaded.transcoder;
        promoted_tokens(&dir, model, unembedding, &t.sae)?;
        let predict = |rows: &[f32]| -> std::result::Result<Vec<f32>, String> {
            t.predict(rows).map_err(|e| e.to_string())
        };
        let m = splice_metrics_from(run, model, spec.input, spec.output, &predict)?;
        record_splice(&dir, &m)?;
    }
    Ok(())
}

/// Adds the `splice` entry to the folder's `metrics.json`.
fn record_splice(dir: &std::path::Path, m: &SpliceMetrics) -> Result<()> {
    Ok(glassbox_concepts::dictionary::add_to_metrics(
        dir,
        "splice",
        splice_json(m),
    )?)
}

/// `feature_promoted_tokens.parquet` and `feature_suppressed_tokens.parquet`: feature, rank,
/// token_id, token, logit (`W_U · d_j`) — the tokens each decoder direction raises most, and
/// those it lowers most (most negative first).
fn promoted_tokens(
    dir: &std::path::Path,
    model: &LoadedModel,
    unembedding: &Tensor,
    sae: &Sae,
) -> Result<()> {
    let w_dec = Tensor::from_slice(&sae.w_dec, (sae.width, sae.d_in), &candle_core::Device::Cpu)?;
    // [width, vocab]: each feature's decoder direction read out by every token's row.
    let logits = w_dec.matmul(&unembedding.to_dtype(w_dec.dtype())?.t()?)?;
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let (mut promoted, mut suppressed) = (Vec::new(), Vec::new());
    for (f, row) in rows.iter().enumerate() {
        for (out, sign) in [(&mut promoted, 1.0f32), (&mut suppressed, -1.0)] {
            for (r, t) in extreme_tokens(row, sign).into_iter().enumerate() {
                out.push(Promoted {
                    feature: f as u32,
                    rank: r as u32,
                    token_id: t as u32,
                    token: model.tokenizer()?.token(t as u32).unwrap_or_default(),
                    logit: row[t] as f64,
                });
            }
        }
    }
    for (rows, name) in [
        (&promoted, "feature_promoted_tokens.parquet"),
        (&suppressed, "feature_suppressed_tokens.parquet"),
    ] {
        let mut c = Columns::default();
        c.small("feature", rows, |r| r.feature)
            .small("rank", rows, |r| r.rank)
            .small("token_id", rows, |r| r.token_id)
            .text("token", rows, |r| &r.token)
            .float("logit", rows, |r| r.logit);
        c.write(&dir.join(name))?;
    }
    Ok(())
}

/// The [`TOP_TOKENS`] tokens with the largest `sign · logit`, largest first.
fn extreme_tokens(row: &[f32], sign: f32) -> Vec<usize> {
    let key = |t: &usize| sign * row[*t];
    let mut order: Vec<usize> = (0..row.len()).collect();
    let k = TOP_TOKENS.min(order.len());
    order.select_nth_unstable_by(k.saturating_sub(1), |a, b| key(b).total_cmp(&key(a)));
    order.truncate(k);
    order.sort_by(|a, b| key(b).total_cmp(&key(a)));
    order
}

struct Promoted {
    feature: u32,
    rank: u32,
    token_id: u32,
    token: String,
    logit: f64,
}

/// The `splice` entry of `metrics.json` (its field names predate the runner's).
fn splice_json(m: &SpliceMetrics) -> serde_json::Value {
    serde_json::json!({
        "tokens": m.tokens,
        "ce_clean": m.ce_clean,
        "ce_sae": m.ce_spliced,
        "ce_zero": m.ce_zero,
        "ce_loss_recovered": m.ce_loss_recovered,
        "kl_sae": m.kl_spliced,
        "kl_zero": m.kl_zero,
        "definitions": {
            "ce_loss_recovered": "(ce_zero − ce_sae) / (ce_zero − ce_clean): next-token cross-entropy with the hook replaced by the SAE's reconstruction, relative to zero-ablating the hook (0) and the clean model (1)",
            "kl_sae": "mean over predicted positions of KL(clean ‖ SAE-spliced) next-token distributions, in nats",
        },
    })
}
