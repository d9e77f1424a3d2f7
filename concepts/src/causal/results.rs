//! `causal/tests.parquet` (one row per test: the effect, the random baseline, Holm and the
//! verdict) and `causal/curves.parquet` (steering's dose-response per α, with the random band).

use super::stats::Verdict;
use crate::ConceptError;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use arrow_array::{ArrayRef, RecordBatch};
use glassbox_data::table::{self, Columns};
use glassbox_data::HookPoint;
use serde::Serialize;
use std::path::Path;

/// One test of a finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestRow {
    /// The finding, as the report names it.
    pub finding: String,
    /// `probe`, `tcav`, `feature` or `neuron`.
    pub kind: String,
    /// What was done (`steer along class food`, `erase (LEACE)`).
    pub test: String,
    /// Where.
    pub hook: HookPoint,
    /// What was measured.
    pub readout: String,
    /// `raises`, `lowers` or `moves`.
    pub claim: String,
    /// Examples with a value.
    pub examples: u64,
    /// Mean effect: the dose-response slope (steering, per unit of the hook's typical norm) or
    /// the readout's change (erasure).
    pub effect: f64,
    /// Percentile-bootstrap 95% interval of `effect` over examples.
    pub ci_low: f64,
    /// Upper end of that interval.
    pub ci_high: f64,
    /// Mean effect of the random directions (erasers).
    pub random_mean: f64,
    /// Their standard deviation.
    pub random_sd: f64,
    /// `(effect − random_mean) / (random_sd · √(1 + 1/K))`.
    pub t: f64,
    /// Student-t p-value with `K − 1` degrees of freedom.
    pub p: f64,
    /// Holm-adjusted over every test of the run.
    pub p_holm: f64,
    /// `causally supported`, `not supported` or `not testable`.
    pub verdict: Verdict,
    /// Why (the statistic, or what made the test impossible).
    pub reason: String,
    /// Erasure only: the probe refitted on unerased rows (test accuracy).
    pub accuracy_before: Option<f64>,
    /// Erasure only: refitted on erased rows.
    pub accuracy_after: Option<f64>,
    /// Erasure only: lower end of that accuracy's 95% interval.
    pub accuracy_after_low: Option<f64>,
    /// Erasure only: the majority baseline.
    pub chance: Option<f64>,
}

/// One point of a steering curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurveRow {
    /// The finding.
    pub finding: String,
    /// The test (a finding may have several).
    pub test: String,
    /// The steering coefficient, in units of the hook's typical norm.
    pub alpha: f64,
    /// Mean readout change along the finding's direction.
    pub effect: f64,
    /// Bootstrap 95% interval of `effect` over examples.
    pub ci_low: f64,
    /// Upper end.
    pub ci_high: f64,
    /// Mean change along the random directions.
    pub random_mean: f64,
    /// Its standard deviation over directions.
    pub random_sd: f64,
}

/// Writes `tests.parquet` under `dir`.
pub fn write_tests(dir: &Path, rows: &[TestRow]) -> Result<(), ConceptError> {
    let mut c = Columns::default();
    c.text("finding", rows, |r| &r.finding)
        .text("kind", rows, |r| &r.kind)
        .text("test", rows, |r| &r.test)
        .hooks("hook", rows, |r| r.hook)
        .text("readout", rows, |r| &r.readout)
        .text("claim", rows, |r| &r.claim)
        .count("examples", rows, |r| r.examples)
        .float("effect", rows, |r| r.effect)
        .float("ci_low", rows, |r| r.ci_low)
        .float("ci_high", rows, |r| r.ci_high)
        .float("random_mean", rows, |r| r.random_mean)
        .float("random_sd", rows, |r| r.random_sd)
        .float("t", rows, |r| r.t)
        .float("p", rows, |r| r.p)
        .float("p_holm", rows, |r| r.p_holm)
        .text("verdict", rows, |r| r.verdict.as_str())
        .text("reason", rows, |r| &r.reason)
        .opt_float("accuracy_before", rows, |r| r.accuracy_before)
        .opt_float("accuracy_after", rows, |r| r.accuracy_after)
        .opt_float("accuracy_after_low", rows, |r| r.accuracy_after_low)
        .opt_float("chance", rows, |r| r.chance);
    c.write(&dir.join("tests.parquet"))?;
    Ok(())
}

/// Writes `curves.parquet` under `dir`.
pub fn write_curves(dir: &Path, rows: &[CurveRow]) -> Result<(), ConceptError> {
    let mut c = Columns::default();
    c.text("finding", rows, |r| &r.finding)
        .text("test", rows, |r| &r.test)
        .float("alpha", rows, |r| r.alpha)
        .float("effect", rows, |r| r.effect)
        .float("ci_low", rows, |r| r.ci_low)
        .float("ci_high", rows, |r| r.ci_high)
        .float("random_mean", rows, |r| r.random_mean)
        .float("random_sd", rows, |r| r.random_sd);
    c.write(&dir.join("curves.parquet"))?;
    Ok(())
}

struct Reader<'a> {
    path: &'a Path,
    batch: &'a RecordBatch,
}

impl Reader<'_> {
    fn column(&self, name: &str) -> Result<&ArrayRef, ConceptError> {
        self.batch.column_by_name(name).ok_or_else(|| {
            ConceptError::Invalid(format!(
                "{}: no column `{name}`; re-run `glassbox causal --force`",
                self.path.display()
            ))
        })
    }
    fn text(&self, name: &str) -> Result<Vec<String>, ConceptError> {
        Ok(self
            .column(name)?
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap_or_default().to_owned())
            .collect())
    }
    fn float(&self, name: &str) -> Result<Vec<f64>, ConceptError> {
        Ok(self
            .column(name)?
            .as_primitive::<Float64Type>()
            .iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    }
    fn opt_float(&self, name: &str) -> Result<Vec<Option<f64>>, ConceptError> {
        Ok(self
            .column(name)?
            .as_primitive::<Float64Type>()
            .iter()
            .collect())
    }
}

/// Reads `tests.parquet` under `dir` back.
pub fn read_tests(dir: &Path) -> Result<Vec<TestRow>, ConceptError> {
    let path = dir.join("tests.parquet");
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        let r = Reader {
            path: &path,
            batch: &batch,
        };
        let text: Vec<Vec<String>> = [
            "finding", "kind", "test", "readout", "claim", "verdict", "reason",
        ]
        .iter()
        .map(|n| r.text(n))
        .collect::<Result<_, _>>()?;
        let float: Vec<Vec<f64>> = [
            "effect",
            "ci_low",
            "ci_high",
            "random_mean",
            "random_sd",
            "t",
            "p",
            "p_holm",
        ]
        .iter()
        .map(|n| r.float(n))
        .collect::<Result<_, _>>()?;
        let opt: Vec<Vec<Option<f64>>> = [
            "accuracy_before",
            "accuracy_after",
            "accuracy_after_low",
            "chance",
        ]
        .iter()
        .map(|n| r.opt_float(n))
        .collect::<Result<_, _>>()?;
        let examples: Vec<u64> = r
            .column("examples")?
            .as_primitive::<UInt64Type>()
            .iter()
            .map(|v| v.unwrap_or(0))
            .collect();
        let hooks = r.column("hook")?.as_string::<i32>();
        for i in 0..batch.num_rows() {
            let verdict = Verdict::parse(&text[5][i]).ok_or_else(|| {
                ConceptError::Invalid(format!(
                    "{}: row {i}: unknown verdict `{}`",
                    path.display(),
                    text[5][i]
                ))
            })?;
            let hook = hooks.value(i).parse::<HookPoint>().map_err(|e| {
                ConceptError::Invalid(format!("{}: row {i}: column `hook`: {e}", path.display()))
            })?;
            out.push(TestRow {
                finding: text[0][i].clone(),
                kind: text[1][i].clone(),
                test: text[2][i].clone(),
                hook,
                readout: text[3][i].clone(),
                claim: text[4][i].clone(),
                examples: examples[i],
                effect: float[0][i],
                ci_low: float[1][i],
                ci_high: float[2][i],
                random_mean: float[3][i],
                random_sd: float[4][i],
                t: float[5][i],
                p: float[6][i],
                p_holm: float[7][i],
                verdict,
                reason: text[6][i].clone(),
                accuracy_before: opt[0][i],
                accuracy_after: opt[1][i],
                accuracy_after_low: opt[2][i],
                chance: opt[3][i],
            });
        }
    }
    Ok(out)
}

/// Reads `curves.parquet` under `dir` back.
pub fn read_curves(dir: &Path) -> Result<Vec<CurveRow>, ConceptError> {
    let path = dir.join("curves.parquet");
    let mut out = Vec::new();
    for batch in table::read_table(&path)? {
        let r = Reader {
            path: &path,
            batch: &batch,
        };
        let (finding, test) = (r.text("finding")?, r.text("test")?);
        let f: Vec<Vec<f64>> = [
            "alpha",
            "effect",
            "ci_low",
            "ci_high",
            "random_mean",
            "random_sd",
        ]
        .iter()
        .map(|n| r.float(n))
        .collect::<Result<_, _>>()?;
        for i in 0..batch.num_rows() {
            out.push(CurveRow {
                finding: finding[i].clone(),
                test: test[i].clone(),
                alpha: f[0][i],
                effect: f[1][i],
                ci_low: f[2][i],
                ci_high: f[3][i],
                random_mean: f[4][i],
                random_sd: f[5][i],
            });
        }
    }
    Ok(out)
}
