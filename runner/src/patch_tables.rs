//! The patching stage's tables: `patching/results.parquet` (one row per pair × hook × position
//! × head), `patching/pairs.parquet` (each pair's tokens and its clean and corrupted metrics)
//! and `patching/atp.json` (how far attribution patching can be trusted, hook by hook).

use crate::dla::DlaRow;
use crate::lens::LensRow;
use crate::patching::{spearman, AblationRow, PairSummary, PatchRow};
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{Float64Array, Int64Array, UInt32Array};
use glassbox_data::table::Columns;
use glassbox_data::{atomic, HookPoint, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Writes `results.parquet` under `dir`.
pub fn write_results(dir: &Path, rows: &[PatchRow]) -> Result<()> {
    let mut c = Columns::default();
    c.count("pair", rows, |r| r.pair)
        .hooks("hook", rows, |r| r.hook)
        .add(
            "layer",
            Arc::new(Int64Array::from_iter(
                rows.iter().map(|r| r.hook.layer().map(|l| l as i64)),
            )),
        )
        .small("position", rows, |r| r.position)
        .add(
            "head",
            Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.head))),
        )
        .float("metric", rows, |r| r.metric)
        .float("metric_clean", rows, |r| r.metric_clean)
        .float("metric_corrupted", rows, |r| r.metric_corrupted)
        .float("normalized", rows, |r| r.normalized)
        .add(
            "atp_metric",
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.atp_metric))),
        )
        .add(
            "atp_normalized",
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| {
                r.atp_metric
                    .map(|m| (m - r.metric_corrupted) / (r.metric_clean - r.metric_corrupted))
            }))),
        );
    c.write(&dir.join("results.parquet"))
}

/// Writes `logit_lens.parquet` under `dir`.
pub fn write_lens(dir: &Path, rows: &[LensRow]) -> Result<()> {
    let mut c = Columns::default();
    c.count("pair", rows, |r| r.pair)
        .text("run", rows, |r| &r.run)
        .small("layer", rows, |r| r.layer)
        .small("answer_rank", rows, |r| r.answer_rank)
        .float("answer_prob", rows, |r| r.answer_prob)
        .float("wrong_prob", rows, |r| r.wrong_prob)
        .float("logit_diff", rows, |r| r.logit_diff);
    c.write(&dir.join("logit_lens.parquet"))
}

/// Writes `ablation.parquet` under `dir`.
pub fn write_ablation(dir: &Path, rows: &[AblationRow]) -> Result<()> {
    let mut c = Columns::default();
    c.hooks("hook", rows, |r| r.hook)
        .add(
            "layer",
            Arc::new(Int64Array::from_iter(
                rows.iter().map(|r| r.hook.layer().map(|l| l as i64)),
            )),
        )
        .add(
            "head",
            Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.head))),
        )
        .add(
            "neuron",
            Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.neuron))),
        )
        .add(
            "feature",
            Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.feature))),
        )
        .text("ablation", rows, |r| r.ablation)
        .float("delta", rows, |r| r.delta)
        .float("ci_low", rows, |r| r.ci_low)
        .float("ci_high", rows, |r| r.ci_high)
        .float("loss_delta", rows, |r| r.loss_delta)
        .float("loss_ci_low", rows, |r| r.loss_ci_low)
        .float("loss_ci_high", rows, |r| r.loss_ci_high)
        .count("n", rows, |r| r.n);
    c.write(&dir.join("ablation.parquet"))
}

/// Writes `dla.parquet` under `dir`.
pub fn write_dla(dir: &Path, rows: &[DlaRow]) -> Result<()> {
    let mut c = Columns::default();
    c.count("pair", rows, |r| r.pair)
        .text("run", rows, |r| &r.run)
        .text("component", rows, |r| &r.component)
        .add(
            "layer",
            Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.layer))),
        )
        .float("contribution", rows, |r| r.contribution)
        .add(
            "head",
            Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.head))),
        )
        .add(
            "part_of",
            Arc::new(arrow_array::StringArray::from_iter(
                rows.iter().map(|r| r.part_of.as_deref()),
            )),
        );
    c.write(&dir.join("dla.parquet"))
}

/// Writes `pairs.parquet` under `dir`.
pub fn write_pairs(dir: &Path, pairs: &[PairSummary]) -> Result<()> {
    let tokens = |pick: fn(&PairSummary) -> &Vec<String>| {
        let mut b = ListBuilder::new(StringBuilder::new());
        for p in pairs {
            for t in pick(p) {
                b.values().append_value(t);
            }
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let mut c = Columns::default();
    c.count("pair", pairs, |p| p.row as u64)
        .add("clean_tokens", tokens(|p| &p.clean_tokens))
        .add("corrupted_tokens", tokens(|p| &p.corrupted_tokens))
        .add(
            "answer_id",
            Arc::new(UInt32Array::from_iter(pairs.iter().map(|p| p.answer))),
        )
        .add(
            "wrong_id",
            Arc::new(UInt32Array::from_iter(pairs.iter().map(|p| p.wrong))),
        )
        .add(
            "target",
            Arc::new(arrow_array::StringArray::from_iter(
                pairs.iter().map(|p| p.target.as_deref()),
            )),
        )
        .float("metric_clean", pairs, |p| p.metric_clean)
        .float("metric_corrupted", pairs, |p| p.metric_corrupted);
    c.write(&dir.join("pairs.parquet"))
}

/// Attribution patching against the exact effects: Spearman's ρ of the effects
/// (`metric − metric_corrupted`… here `metric − base`, the same ranking) per hook and overall,
/// and the ten largest disagreements in normalised units. `None` when AtP was not computed.
pub fn atp_summary(rows: &[PatchRow]) -> Option<serde_json::Value> {
    let with: Vec<&PatchRow> = rows.iter().filter(|r| r.atp_metric.is_some()).collect();
    if with.is_empty() {
        return None;
    }
    let mut by_hook: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let (mut exact, mut approx) = (Vec::new(), Vec::new());
    for r in &with {
        let a = r.atp_metric.expect("filtered");
        let e = by_hook.entry(r.hook.to_string()).or_default();
        e.0.push(r.metric);
        e.1.push(a);
        exact.push(r.metric);
        approx.push(a);
    }
    let per_hook: serde_json::Map<String, serde_json::Value> = by_hook
        .iter()
        .map(|(h, (e, a))| {
            (
                h.clone(),
                serde_json::json!({"n": e.len(), "spearman": finite(spearman(e, a))}),
            )
        })
        .collect();
    let mut worst: Vec<&&PatchRow> = with.iter().collect();
    let gap = |r: &PatchRow| {
        ((r.atp_metric.expect("filtered") - r.metric) / (r.metric_clean - r.metric_corrupted)).abs()
    };
    worst.sort_by(|a, b| gap(b).total_cmp(&gap(a)));
    let worst: Vec<serde_json::Value> = worst
        .iter()
        .take(10)
        .map(|r| {
            serde_json::json!({
                "pair": r.pair, "hook": r.hook, "position": r.position, "head": r.head,
                "normalized": finite(r.normalized),
                "atp_normalized": finite((r.atp_metric.expect("filtered") - r.metric_corrupted) / (r.metric_clean - r.metric_corrupted)),
            })
        })
        .collect();
    Some(serde_json::json!({
        "n": exact.len(),
        "spearman": finite(spearman(&exact, &approx)),
        "per_hook": per_hook,
        "largest_disagreements": worst,
        "definition": "attribution patching's first-order estimate of each patched run's metric against the exact patched metric: Spearman's rank correlation over every (pair, position, head), per hook and overall; disagreements in units of the pair's clean − corrupted metric gap",
    }))
}

fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::Value::Null
    }
}

/// Writes `atp.json` under `dir` (when AtP was computed).
pub fn write_atp(dir: &Path, rows: &[PatchRow]) -> Result<()> {
    if let Some(summary) = atp_summary(rows) {
        let text = serde_json::to_string_pretty(&summary).expect("JSON values serialise");
        atomic::write_bytes(&dir.join("atp.json"), text.as_bytes())?;
    }
    Ok(())
}

/// Mean normalised effect per (hook, position, head) over the pairs, largest first: what the
/// terminal and the report show.
pub fn mean_effects(rows: &[PatchRow]) -> Vec<(HookPoint, u32, Option<u32>, f64)> {
    type Key = (String, u32, Option<u32>);
    let mut sums: BTreeMap<Key, (HookPoint, f64, usize)> = BTreeMap::new();
    for r in rows {
        let e = sums
            .entry((r.hook.to_string(), r.position, r.head))
            .or_insert((r.hook, 0.0, 0));
        if r.normalized.is_finite() {
            e.1 += r.normalized;
            e.2 += 1;
        }
    }
    let mut out: Vec<_> = sums
        .into_iter()
        .filter(|(_, (_, _, n))| *n > 0)
        .map(|((_, p, h), (hook, s, n))| (hook, p, h, s / n as f64))
        .collect();
    out.sort_by(|a, b| b.3.abs().total_cmp(&a.3.abs()));
    out
}
