//! The report's activation-patching section: read from `patching/` (when the run has a
//! `patch` stage), the mean normalised effect of every (hook, position, head) over the pairs
//! with a 95% interval, each hook's layer × position heatmap, attribution patching's agreement
//! with the exact effects, and the logit lens.

use crate::ReportError;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt32Type, UInt64Type};
use arrow_array::Array;
use glassbox_data::{table, HookPoint, RunDir};
use serde::Serialize;
use std::collections::BTreeMap;

/// One (hook, position, head)'s effect over the pairs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Effect {
    pub hook: HookPoint,
    pub position: u32,
    pub head: Option<u32>,
    /// Mean normalised effect (1 = restores the clean metric) over the pairs.
    pub mean: f64,
    /// 95% interval of the mean: Student's t over the pairs (`n − 1` degrees of freedom; a
    /// normal 1.96 would be 6.5× too narrow at 2 pairs, 1.4× at 5).
    pub ci_low: f64,
    pub ci_high: f64,
    /// Pairs with a finite normalised effect.
    pub n: u64,
    /// Attribution patching's estimate of `mean` (the mean of its normalised estimates), when
    /// computed.
    pub atp: Option<f64>,
}

/// The logit lens averaged over pairs at one block.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LensLayer {
    pub layer: u32,
    pub clean_answer_prob: f64,
    pub corrupted_answer_prob: f64,
    pub clean_logit_diff: f64,
    pub corrupted_logit_diff: f64,
}

/// One residual component's direct logit attribution, averaged over pairs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DlaComponent {
    pub component: String,
    pub clean: f64,
    pub corrupted: f64,
}

/// One ablated unit's effect (from `ablation.parquet`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AblationEffect {
    pub hook: HookPoint,
    /// The head, the neuron, or the whole hook (`None`).
    pub unit: Option<String>,
    pub ablation: String,
    pub delta: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub loss_delta: Option<f64>,
    pub n: u64,
}

/// What the patching stage found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PatchingFinding {
    pub pairs: u64,
    /// Every effect, largest |mean| first.
    pub effects: Vec<Effect>,
    /// Spearman's ρ of attribution patching against the exact effects (when computed).
    pub atp_spearman: Option<f64>,
    pub lens: Vec<LensLayer>,
    /// Direct logit attribution per component (largest clean − corrupted change first).
    pub dla: Vec<DlaComponent>,
    /// The first pair's clean tokens (the heatmaps' position labels).
    pub tokens: Vec<String>,
    /// Ablations (when run), largest |delta| first.
    pub ablation: Vec<AblationEffect>,
}

/// Reads the run's `patching/` folder; `None` when it has none.
pub fn summarise(run: &RunDir) -> Result<Option<PatchingFinding>, ReportError> {
    let dir = run.path("patching");
    let results = dir.join("results.parquet");
    if !results.is_file() {
        return Ok(None);
    }
    type Key = (String, u32, Option<u32>);
    let mut by_key: BTreeMap<Key, (HookPoint, Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut pairs = std::collections::BTreeSet::new();
    for batch in table::read_table(&results)? {
        let col = |n: &str| {
            batch.column_by_name(n).cloned().ok_or_else(|| {
                ReportError::Invalid(format!("{}: no column `{n}`", results.display()))
            })
        };
        let (pair, hook, pos, head, norm) = (
            col("pair")?,
            col("hook")?,
            col("position")?,
            col("head")?,
            col("normalized")?,
        );
        let (pair, hook, pos) = (
            pair.as_primitive::<UInt64Type>(),
            hook.as_string::<i32>(),
            pos.as_primitive::<UInt32Type>(),
        );
        let (head, norm) = (
            head.as_primitive::<UInt32Type>(),
            norm.as_primitive::<Float64Type>(),
        );
        let atp = batch
            .column_by_name("atp_normalized")
            .map(|a| a.as_primitive::<Float64Type>().clone());
        for r in 0..batch.num_rows() {
            let h = table::parse_hook(&results, r, hook.value(r))?;
            let hd = (!head.is_null(r)).then(|| head.value(r));
            pairs.insert(pair.value(r));
            let e = by_key.entry((h.to_string(), pos.value(r), hd)).or_insert((
                h,
                Vec::new(),
                Vec::new(),
            ));
            if norm.value(r).is_finite() {
                e.1.push(norm.value(r));
            }
            if let Some(a) = atp
                .as_ref()
                .filter(|a| !a.is_null(r) && a.value(r).is_finite())
            {
                e.2.push(a.value(r));
            }
        }
    }
    let mut effects: Vec<Effect> = by_key
        .into_iter()
        .filter(|(_, (_, v, _))| !v.is_empty())
        .map(|((_, position, head), (hook, v, atp))| {
            let (mean, ci_low, ci_high) = mean_interval(&v);
            Effect {
                hook,
                position,
                head,
                mean,
                ci_low,
                ci_high,
                n: v.len() as u64,
                atp: (!atp.is_empty()).then(|| atp.iter().sum::<f64>() / atp.len() as f64),
            }
        })
        .collect();
    effects.sort_by(|a, b| b.mean.abs().total_cmp(&a.mean.abs()));
    let atp_spearman = std::fs::read_to_string(dir.join("atp.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["spearman"].as_f64());
    Ok(Some(PatchingFinding {
        pairs: pairs.len() as u64,
        effects,
        atp_spearman,
        lens: read_lens(&dir.join("logit_lens.parquet"))?,
        dla: read_dla(&dir.join("dla.parquet"))?,
        tokens: first_tokens(&dir.join("pairs.parquet"))?,
        ablation: read_ablation(&dir.join("ablation.parquet"))?,
    }))
}

fn read_ablation(path: &std::path::Path) -> Result<Vec<AblationEffect>, ReportError> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for batch in table::read_table(path)? {
        let col = |n: &str| {
            batch
                .column_by_name(n)
                .cloned()
                .ok_or_else(|| ReportError::Invalid(format!("{}: no column `{n}`", path.display())))
        };
        let (hook, head, kind) = (col("hook")?, col("head")?, col("ablation")?);
        let (hook, head, kind) = (
            hook.as_string::<i32>(),
            head.as_primitive::<UInt32Type>(),
            kind.as_string::<i32>(),
        );
        let neuron = batch.column_by_name("neuron").cloned();
        let feature = batch.column_by_name("feature").cloned();
        let loss = batch.column_by_name("loss_delta").cloned();
        let f = |n: &str| -> Result<Vec<f64>, ReportError> {
            Ok(col(n)?.as_primitive::<Float64Type>().values().to_vec())
        };
        let (delta, lo, hi) = (f("delta")?, f("ci_low")?, f("ci_high")?);
        let n = col("n")?;
        let n = n.as_primitive::<UInt64Type>();
        for r in 0..batch.num_rows() {
            let named = |column: &Option<arrow_array::ArrayRef>, what: &str| {
                column
                    .as_ref()
                    .map(|c| c.as_primitive::<UInt32Type>().clone())
                    .filter(|c| !c.is_null(r))
                    .map(|c| format!("{what} {}", c.value(r)))
            };
            let unit = if !head.is_null(r) {
                Some(format!("head {}", head.value(r)))
            } else {
                named(&neuron, "neuron").or_else(|| named(&feature, "feature"))
            };
            out.push(AblationEffect {
                hook: table::parse_hook(path, r, hook.value(r))?,
                unit,
                ablation: kind.value(r).to_owned(),
                delta: delta[r],
                ci_low: lo[r],
                ci_high: hi[r],
                loss_delta: loss
                    .as_ref()
                    .map(|c| c.as_primitive::<Float64Type>().value(r)),
                n: n.value(r),
            });
        }
    }
    out.sort_by(|a, b| b.delta.abs().total_cmp(&a.delta.abs()));
    Ok(out)
}

fn read_lens(path: &std::path::Path) -> Result<Vec<LensLayer>, ReportError> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    // layer → (clean prob, corrupted prob, clean diff, corrupted diff, clean n, corrupted n)
    let mut acc: BTreeMap<u32, [f64; 6]> = BTreeMap::new();
    for batch in table::read_table(path)? {
        let run = batch.column(1).as_string::<i32>().clone();
        let layer = batch.column(2).as_primitive::<UInt32Type>().clone();
        let prob = batch.column(4).as_primitive::<Float64Type>().clone();
        let diff = batch.column(6).as_primitive::<Float64Type>().clone();
        for r in 0..batch.num_rows() {
            let a = acc.entry(layer.value(r)).or_default();
            let k = usize::from(run.value(r) != "clean");
            a[k] += prob.value(r);
            a[2 + k] += diff.value(r);
            a[4 + k] += 1.0;
        }
    }
    Ok(acc
        .into_iter()
        .map(|(layer, a)| LensLayer {
            layer,
            clean_answer_prob: a[0] / a[4].max(1.0),
            corrupted_answer_prob: a[1] / a[5].max(1.0),
            clean_logit_diff: a[2] / a[4].max(1.0),
            corrupted_logit_diff: a[3] / a[5].max(1.0),
        })
        .collect())
}

fn read_dla(path: &std::path::Path) -> Result<Vec<DlaComponent>, ReportError> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    // component → (clean sum, corrupted sum, clean n, corrupted n), in first-seen order
    let mut order: Vec<String> = Vec::new();
    let mut acc: BTreeMap<String, [f64; 4]> = BTreeMap::new();
    for batch in table::read_table(path)? {
        let run = batch.column(1).as_string::<i32>().clone();
        let component = batch.column(2).as_string::<i32>().clone();
        let value = batch.column(4).as_primitive::<Float64Type>().clone();
        for r in 0..batch.num_rows() {
            let name = component.value(r).to_owned();
            if !acc.contains_key(&name) {
                order.push(name.clone());
            }
            let a = acc.entry(name).or_default();
            let k = usize::from(run.value(r) != "clean");
            a[k] += value.value(r);
            a[2 + k] += 1.0;
        }
    }
    let mut out: Vec<DlaComponent> = order
        .into_iter()
        .map(|c| {
            let a = acc[&c];
            DlaComponent {
                component: c,
                clean: a[0] / a[2].max(1.0),
                corrupted: a[1] / a[3].max(1.0),
            }
        })
        .collect();
    out.sort_by(|x, y| {
        (y.clean - y.corrupted)
            .abs()
            .total_cmp(&(x.clean - x.corrupted).abs())
    });
    Ok(out)
}

fn first_tokens(path: &std::path::Path) -> Result<Vec<String>, ReportError> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let batches = table::read_table(path)?;
    let Some(batch) = batches.first().filter(|b| b.num_rows() > 0) else {
        return Ok(Vec::new());
    };
    let list = batch.column(1).as_list::<i32>().value(0);
    let strings = list.as_string::<i32>();
    Ok((0..strings.len())
        .map(|i| strings.value(i).to_owned())
        .collect())
}

/// The mean of `v` and Student's t 95% interval of it (`n − 1` degrees of freedom; NaN bounds
/// for one value, which has no spread).
fn mean_interval(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN, f64::NAN);
    }
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let half = glassbox_probes::distributions::student_t_critical(0.05, n - 1.0) * sd / n.sqrt();
    (mean, mean - half, mean + half)
}

/// The headline: the strongest effect and how far attribution patching agrees.
pub fn headline(f: &PatchingFinding) -> Option<String> {
    let top = f.effects.first()?;
    let head = top.head.map_or(String::new(), |h| format!(" head {h}"));
    let atp = f.atp_spearman.map_or(String::new(), |r| {
        format!("; attribution patching ranks effects with Spearman ρ = {r:.2}")
    });
    // One pair has no spread to estimate: say so rather than print a NaN interval.
    let spread = if top.n > 1 {
        format!(
            "95% CI [{:.2}, {:.2}], {} pairs",
            top.ci_low, top.ci_high, top.n
        )
    } else {
        "a single pair reaches this position, so no CI".to_owned()
    };
    Some(format!(
        "patching `{}` at position {}{head} has the largest mean normalised effect, {:.2} (1 restores the clean answer, 0 changes nothing; {spread}){atp}",
        top.hook, top.position, top.mean
    ))
}

#[cfg(test)]
mod tests {
    use super::mean_interval;

    /// scipy 1.17: `stats.t.interval(0.95, n - 1, loc=mean, scale=stats.sem(v))`.
    #[test]
    fn effects_get_students_interval() {
        let (mean, lo, hi) = mean_interval(&[0.2, 0.9]);
        assert!((mean - 0.55).abs() < 1e-12);
        assert!((lo - -3.897_171_657_661_143).abs() < 1e-9, "{lo}");
        assert!((hi - 4.997_171_657_661_142).abs() < 1e-9, "{hi}");
        let (_, lo, hi) = mean_interval(&[1.0, 0.8, 1.1, 0.95, 0.7]);
        assert!((lo - 0.711_722_159_954_518_5).abs() < 1e-9, "{lo}");
        assert!((hi - 1.108_277_840_045_481_8).abs() < 1e-9, "{hi}");
        let (mean, lo, _) = mean_interval(&[0.4]);
        assert!(mean == 0.4 && lo.is_nan());
    }
}
