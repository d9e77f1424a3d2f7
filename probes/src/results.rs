//! The probe stage's tables: `probes/results.parquet` (one row per hook × label),
//! `probes/neurons.parquet` (ranked units) and `probes/topk.parquet` (the ranking's check).

use crate::Result;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{BooleanArray, Int64Array};
use glassbox_data::table::Columns;
use glassbox_data::HookPoint;
use glassbox_data::{table, DataError, RunDir};
use std::sync::Arc;

/// The result of one probe. Scores are on the held-out test part; `score` is the accuracy for
/// classification and R² for regression (`metric` says which).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbeResult {
    pub hook: HookPoint,
    /// Block index, when the hook belongs to one.
    pub layer: Option<i64>,
    /// Residual-stream depth (see the store metadata), for ordering hooks.
    pub depth: f64,
    pub label: String,
    /// `sequence` or `token`.
    pub level: String,
    /// The pool of sequence-level probes; `token` for token-level ones.
    pub pool: String,
    /// `accuracy` (classification) or `r2` (regression).
    pub metric: String,
    /// How its rows were split: `text` (seeded, whole texts), `token` (seeded, token rows
    /// independently) or `data` (the data set's `split` column); empty in tables written
    /// before it was recorded.
    pub split_by: String,
    pub n_train: u64,
    pub n_validation: u64,
    pub n_test: u64,
    /// 0 for regression.
    pub n_classes: u64,
    /// The L2 strength chosen on the validation part (sklearn's `C` is `1 / l2`).
    pub l2: f64,
    pub score: f64,
    /// Percentile-bootstrap 95% interval of `score`.
    pub ci_low: f64,
    pub ci_high: f64,
    pub accuracy: Option<f64>,
    pub f1: Option<f64>,
    pub f1_ci_low: Option<f64>,
    pub f1_ci_high: Option<f64>,
    /// Majority-class accuracy, or the R² of predicting the training mean.
    pub majority: f64,
    /// The same probe's score on the control task.
    pub control_score: f64,
    /// `score − control_score`.
    pub selectivity: f64,
    /// Paired percentile-bootstrap 95% interval of `selectivity` (both probes on the same
    /// resampled test rows); `None` without bootstrap resamples, or in tables written before
    /// it was computed.
    pub selectivity_ci_low: Option<f64>,
    pub selectivity_ci_high: Option<f64>,
    /// Share of test-set bootstrap resamples in which this hook's probe scores highest of the
    /// label's hooks (ties split); `None` with one hook, without resamples, or in older tables.
    pub best_share: Option<f64>,
    /// Paired interval of the best hook's score minus this one's, simultaneous at 95% with every
    /// other pair of the label's hooks, on the same resampled
    /// test rows; `None` at the best hook itself (and as `best_share`). An interval that
    /// reaches 0: this hook is not told apart from the best.
    pub vs_best_ci_low: Option<f64>,
    pub vs_best_ci_high: Option<f64>,
    pub mdl_codelength: Option<f64>,
    pub mdl_uniform: Option<f64>,
    pub mdl_compression: Option<f64>,
    pub converged: bool,
}

impl ProbeResult {
    /// The 95% interval of `score`; `None` without bootstrap resamples (`bootstrap = 0` leaves
    /// it NaN).
    pub fn score_ci(&self) -> Option<(f64, f64)> {
        (self.ci_low.is_finite() && self.ci_high.is_finite()).then_some((self.ci_low, self.ci_high))
    }

    /// Whether the best hook's lead over this one is exactly 0 in every resample (both score
    /// every resampled test row alike, e.g. two perfect probes): shown as a tie, since an
    /// interval of [0, 0] reads as certainty about a difference there is no evidence of.
    pub fn tied_with_best(&self) -> bool {
        self.vs_best_ci_low == Some(0.0) && self.vs_best_ci_high == Some(0.0)
    }
}

/// One ranked unit of one probe.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NeuronRow {
    pub hook: HookPoint,
    pub label: String,
    pub level: String,
    pub class: String,
    pub unit: u32,
    pub weight: f64,
    pub rank: u32,
}

/// Accuracy with the top-k ranked units against k random ones.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopKRow {
    pub hook: HookPoint,
    pub label: String,
    pub level: String,
    pub k: u32,
    pub top_accuracy: f64,
    pub random_accuracy: f64,
}

fn results_path(run: &RunDir) -> std::path::PathBuf {
    run.probes_dir().join("results.parquet")
}

/// Writes `probes/results.parquet` atomically.
/// Where each probed (level, label, pool) is best decoded: the row with the highest score,
/// ties going to the shallowest hook (the earliest point the label is decodable). In order of
/// (level, label, pool).
pub fn best_per_label(rows: &[ProbeResult]) -> Vec<&ProbeResult> {
    let mut keys: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.level.as_str(), r.label.as_str(), r.pool.as_str()))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|(level, label, pool)| {
            let mut group: Vec<&ProbeResult> = rows
                .iter()
                .filter(|r| r.level == level && r.label == label && r.pool == pool)
                .collect();
            group.sort_by(|a, b| a.depth.total_cmp(&b.depth).then(a.hook.cmp(&b.hook)));
            group
                .into_iter()
                .fold(None::<&ProbeResult>, |acc, r| match acc {
                    Some(b) if b.score >= r.score => Some(b),
                    _ => Some(r),
                })
        })
        .collect()
}

pub fn write_results(run: &RunDir, rows: &[ProbeResult]) -> Result<()> {
    let mut c = Columns::default();
    c.hooks("hook", rows, |r| r.hook)
        .add(
            "layer",
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.layer))),
        )
        .float("depth", rows, |r| r.depth)
        .text("label", rows, |r| &r.label)
        .text("level", rows, |r| &r.level)
        .text("pool", rows, |r| &r.pool)
        .text("metric", rows, |r| &r.metric)
        .text("split_by", rows, |r| &r.split_by)
        .count("n_train", rows, |r| r.n_train)
        .count("n_validation", rows, |r| r.n_validation)
        .count("n_test", rows, |r| r.n_test)
        .count("n_classes", rows, |r| r.n_classes)
        .float("l2", rows, |r| r.l2)
        .float("score", rows, |r| r.score)
        .float("ci_low", rows, |r| r.ci_low)
        .float("ci_high", rows, |r| r.ci_high)
        .opt_float("accuracy", rows, |r| r.accuracy)
        .opt_float("f1", rows, |r| r.f1)
        .opt_float("f1_ci_low", rows, |r| r.f1_ci_low)
        .opt_float("f1_ci_high", rows, |r| r.f1_ci_high)
        .float("majority", rows, |r| r.majority)
        .float("control_score", rows, |r| r.control_score)
        .float("selectivity", rows, |r| r.selectivity)
        .opt_float("selectivity_ci_low", rows, |r| r.selectivity_ci_low)
        .opt_float("selectivity_ci_high", rows, |r| r.selectivity_ci_high)
        .opt_float("best_share", rows, |r| r.best_share)
        .opt_float("vs_best_ci_low", rows, |r| r.vs_best_ci_low)
        .opt_float("vs_best_ci_high", rows, |r| r.vs_best_ci_high)
        .opt_float("mdl_codelength", rows, |r| r.mdl_codelength)
        .opt_float("mdl_uniform", rows, |r| r.mdl_uniform)
        .opt_float("mdl_compression", rows, |r| r.mdl_compression)
        .add(
            "converged",
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.converged)),
            )),
        );
    c.write(&results_path(run))?;
    Ok(())
}

pub fn write_neurons(run: &RunDir, rows: &[NeuronRow]) -> Result<()> {
    let mut c = Columns::default();
    c.hooks("hook", rows, |r| r.hook)
        .text("label", rows, |r| &r.label)
        .text("level", rows, |r| &r.level)
        .text("class", rows, |r| &r.class)
        .small("unit", rows, |r| r.unit)
        .float("weight", rows, |r| r.weight)
        .small("rank", rows, |r| r.rank);
    c.write(&run.probes_dir().join("neurons.parquet"))?;
    Ok(())
}

pub fn write_topk(run: &RunDir, rows: &[TopKRow]) -> Result<()> {
    let mut c = Columns::default();
    c.hooks("hook", rows, |r| r.hook)
        .text("label", rows, |r| &r.label)
        .text("level", rows, |r| &r.level)
        .small("k", rows, |r| r.k)
        .float("top_accuracy", rows, |r| r.top_accuracy)
        .float("random_accuracy", rows, |r| r.random_accuracy);
    c.write(&run.probes_dir().join("topk.parquet"))?;
    Ok(())
}

/// Reads `probes/results.parquet` back.
pub fn read_results(run: &RunDir) -> Result<Vec<ProbeResult>> {
    let path = results_path(run);
    if !path.exists() {
        return Err(DataError::Store {
            path,
            message: "not found: this run has no probes yet; run `glassbox probe --run DIR --label COLUMN` first".into(),
        }
        .into());
    }
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        let col = |name: &str| {
            batch.column_by_name(name).cloned().ok_or_else(|| DataError::Store {
                path: path.clone(),
                message: format!("no column `{name}` (an older glassbox wrote it?); re-run `glassbox probe --force`"),
            })
        };
        let text = |name: &str| -> Result<Vec<String>> {
            let a = col(name)?;
            Ok(a.as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_owned())
                .collect())
        };
        let opt = |name: &str| -> Result<Vec<Option<f64>>> {
            Ok(col(name)?.as_primitive::<Float64Type>().iter().collect())
        };
        let float = |name: &str| -> Result<Vec<f64>> {
            Ok(opt(name)?
                .into_iter()
                .map(|v| v.unwrap_or(f64::NAN))
                .collect())
        };
        let count = |name: &str| -> Result<Vec<u64>> {
            Ok(col(name)?.as_primitive::<UInt64Type>().values().to_vec())
        };
        let layer: Vec<Option<i64>> = col("layer")?.as_primitive::<Int64Type>().iter().collect();
        let converged: Vec<bool> = col("converged")?
            .as_boolean()
            .iter()
            .map(|v| v.unwrap_or(false))
            .collect();
        let (hook, label, level, pool, metric) = (
            text("hook")?,
            text("label")?,
            text("level")?,
            text("pool")?,
            text("metric")?,
        );
        let (n_train, n_validation, n_test, n_classes) = (
            count("n_train")?,
            count("n_validation")?,
            count("n_test")?,
            count("n_classes")?,
        );
        let (depth, l2, score, ci_low, ci_high) = (
            float("depth")?,
            float("l2")?,
            float("score")?,
            float("ci_low")?,
            float("ci_high")?,
        );
        let (accuracy, f1, f1_lo, f1_hi) = (
            opt("accuracy")?,
            opt("f1")?,
            opt("f1_ci_low")?,
            opt("f1_ci_high")?,
        );
        let (majority, control, selectivity) = (
            float("majority")?,
            float("control_score")?,
            float("selectivity")?,
        );
        // Added later than the rest: absent from older tables, read as unknown.
        let optional = |name: &str| -> Vec<Option<f64>> {
            match batch.column_by_name(name) {
                Some(a) => a.as_primitive::<Float64Type>().iter().collect(),
                None => vec![None; batch.num_rows()],
            }
        };
        let split_by: Vec<String> = match batch.column_by_name("split_by") {
            Some(a) => a
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_owned())
                .collect(),
            None => vec![String::new(); batch.num_rows()],
        };
        let (selectivity_lo, selectivity_hi) = (
            optional("selectivity_ci_low"),
            optional("selectivity_ci_high"),
        );
        let (best_share, vs_best_lo, vs_best_hi) = (
            optional("best_share"),
            optional("vs_best_ci_low"),
            optional("vs_best_ci_high"),
        );
        let (mdl_c, mdl_u, mdl_x) = (
            opt("mdl_codelength")?,
            opt("mdl_uniform")?,
            opt("mdl_compression")?,
        );
        for r in 0..batch.num_rows() {
            out.push(ProbeResult {
                hook: table::parse_hook(&path, r, &hook[r])?,
                layer: layer[r],
                depth: depth[r],
                label: label[r].clone(),
                level: level[r].clone(),
                pool: pool[r].clone(),
                metric: metric[r].clone(),
                split_by: split_by[r].clone(),
                n_train: n_train[r],
                n_validation: n_validation[r],
                n_test: n_test[r],
                n_classes: n_classes[r],
                l2: l2[r],
                score: score[r],
                ci_low: ci_low[r],
                ci_high: ci_high[r],
                accuracy: accuracy[r],
                f1: f1[r],
                f1_ci_low: f1_lo[r],
                f1_ci_high: f1_hi[r],
                majority: majority[r],
                control_score: control[r],
                selectivity: selectivity[r],
                selectivity_ci_low: selectivity_lo[r],
                selectivity_ci_high: selectivity_hi[r],
                best_share: best_share[r],
                vs_best_ci_low: vs_best_lo[r],
                vs_best_ci_high: vs_best_hi[r],
                mdl_codelength: mdl_c[r],
                mdl_uniform: mdl_u[r],
                mdl_compression: mdl_x[r],
                converged: converged[r],
            });
        }
    }
    Ok(out)
}

/// Reads `probes/neurons.parquet` (empty when the probe stage ran without neuron rankings).
pub fn read_neurons(run: &RunDir) -> Result<Vec<NeuronRow>> {
    let path = run.probes_dir().join("neurons.parquet");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        let s = |i: usize| batch.column(i).as_string::<i32>().clone();
        let (hook, label, level, class) = (s(0), s(1), s(2), s(3));
        let unit = batch.column(4).as_primitive::<UInt32Type>().clone();
        let weight = batch.column(5).as_primitive::<Float64Type>().clone();
        let rank = batch.column(6).as_primitive::<UInt32Type>().clone();
        for r in 0..batch.num_rows() {
            out.push(NeuronRow {
                hook: table::parse_hook(&path, r, hook.value(r))?,
                label: label.value(r).to_owned(),
                level: level.value(r).to_owned(),
                class: class.value(r).to_owned(),
                unit: unit.value(r),
                weight: weight.value(r),
                rank: rank.value(r),
            });
        }
    }
    Ok(out)
}

/// Reads `probes/topk.parquet` back (empty when the ranking was not run).
pub fn read_topk(run: &RunDir) -> Result<Vec<TopKRow>> {
    let path = run.probes_dir().join("topk.parquet");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        let s = |i: usize| batch.column(i).as_string::<i32>().clone();
        let (hook, label, level) = (s(0), s(1), s(2));
        let k = batch.column(3).as_primitive::<UInt32Type>().clone();
        let top = batch.column(4).as_primitive::<Float64Type>().clone();
        let random = batch.column(5).as_primitive::<Float64Type>().clone();
        for r in 0..batch.num_rows() {
            out.push(TopKRow {
                hook: table::parse_hook(&path, r, hook.value(r))?,
                label: label.value(r).to_owned(),
                level: level.value(r).to_owned(),
                k: k.value(r),
                top_accuracy: top.value(r),
                random_accuracy: random.value(r),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProbeResult {
        ProbeResult {
            hook: "blocks.0.hook_resid_post".parse().unwrap(),
            layer: Some(0),
            depth: 1.0,
            label: "topic".into(),
            level: "sequence".into(),
            pool: "mean".into(),
            metric: "accuracy".into(),
            split_by: "text".into(),
            n_train: 30,
            n_validation: 10,
            n_test: 10,
            n_classes: 3,
            l2: 1.0,
            score: 0.9,
            ci_low: 0.8,
            ci_high: 1.0,
            accuracy: Some(0.9),
            f1: Some(0.85),
            f1_ci_low: Some(0.7),
            f1_ci_high: Some(0.95),
            majority: 0.4,
            control_score: 0.5,
            selectivity: 0.4,
            selectivity_ci_low: Some(0.3),
            selectivity_ci_high: Some(0.5),
            best_share: Some(0.7),
            vs_best_ci_low: None,
            vs_best_ci_high: None,
            mdl_codelength: None,
            mdl_uniform: None,
            mdl_compression: None,
            converged: true,
        }
    }

    #[test]
    fn a_lead_of_zero_in_every_resample_is_a_tie() {
        let mut r = sample();
        assert!(!r.tied_with_best(), "the best hook itself");
        (r.vs_best_ci_low, r.vs_best_ci_high) = (Some(0.0), Some(0.0));
        assert!(r.tied_with_best());
        r.vs_best_ci_high = Some(0.05);
        assert!(!r.tied_with_best(), "an interval reaching 0 is not a tie");
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let r = sample();
        let mut r2 = r.clone();
        r2.layer = None;
        r2.metric = "r2".into();
        r2.accuracy = None;
        r2.mdl_compression = Some(2.0);
        r2.selectivity_ci_low = None;
        write_results(&run, &[r.clone(), r2.clone()]).unwrap();
        assert_eq!(read_results(&run).unwrap(), vec![r, r2]);
        let t = TopKRow {
            hook: glassbox_data::HookPoint::ResidPost(0),
            label: "l".into(),
            level: "token".into(),
            k: 5,
            top_accuracy: 0.9,
            random_accuracy: 0.5,
        };
        write_topk(&run, std::slice::from_ref(&t)).unwrap();
        assert_eq!(read_topk(&run).unwrap(), vec![t]);
    }
}
