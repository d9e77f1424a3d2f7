//! The attribute stage's tables under `attributions/`: the maps
//! (`method=<m>/target=<slug>/part-NNNNN.parquet`, one per part of the stage's examples), `summary.parquet` (one row per example × method
//! × target), `curves.parquet`, `sanity.parquet` and `methods.parquet` (the per-method verdicts
//! the report ranks by).

use arrow_array::{BooleanArray, Float32Array, StringArray, UInt32Array};
use glassbox_data::table::Columns;
use glassbox_data::Result;
use std::path::Path;
use std::sync::Arc;

pub use glassbox_data::run::folder_slug as slug;

/// One example's map: per token (text, with the token) or per pixel (images, with its row and
/// column).
pub struct MapRows<'a> {
    /// The example.
    pub example_id: u64,
    /// Per-position attributions.
    pub values: &'a [f32],
    /// Text: the tokens.
    pub tokens: Option<&'a [String]>,
    /// Images: the width in pixels (position = y · width + x).
    pub image_width: Option<usize>,
}

/// Writes one method × target's maps of the stage's part `part` (`part-NNNNN.parquet` under
/// `dir`).
pub fn write_maps(dir: &Path, part: usize, maps: &[MapRows<'_>]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(glassbox_data::DataError::io(dir))?;
    let n: usize = maps.iter().map(|m| m.values.len()).sum();
    let (mut ids, mut pos, mut vals) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut tokens, mut ys, mut xs) = (Vec::new(), Vec::new(), Vec::new());
    for m in maps {
        for (i, v) in m.values.iter().enumerate() {
            ids.push(m.example_id);
            pos.push(i as u32);
            vals.push(*v);
            if let Some(t) = m.tokens {
                tokens.push(t.get(i).cloned().unwrap_or_default());
            }
            if let Some(w) = m.image_width {
                ys.push((i / w) as u32);
                xs.push((i % w) as u32);
            }
        }
    }
    let mut c = Columns::default();
    c.count("example_id", &ids, |v| *v)
        .small("position", &pos, |v| *v)
        .add("attribution", Arc::new(Float32Array::from(vals)));
    if tokens.len() == n && n > 0 {
        c.add("token", Arc::new(StringArray::from(tokens)));
    }
    if ys.len() == n && n > 0 {
        c.add("y", Arc::new(UInt32Array::from(ys)))
            .add("x", Arc::new(UInt32Array::from(xs)));
    }
    c.write(&dir.join(glassbox_data::run::part_name(part)))
}

/// One row of `summary.parquet`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SummaryRow {
    /// The example.
    pub example_id: u64,
    /// Method name.
    pub method: String,
    /// Target spec as given.
    pub target: String,
    /// The class the model predicts (classifiers), or the next token's text (LMs).
    pub predicted: Option<String>,
    /// `f(x)`.
    pub f_input: f64,
    /// `f(baseline)`.
    pub f_baseline: f64,
    /// Σ attributions.
    pub attribution_sum: f64,
    /// IG's completeness error.
    pub completeness_error: Option<f64>,
    /// Areas under the four curves.
    pub deletion_morf_auc: Option<f64>,
    /// Least relevant removed first.
    pub deletion_lerf_auc: Option<f64>,
    /// Most relevant inserted first.
    pub insertion_morf_auc: Option<f64>,
    /// Least relevant inserted first.
    pub insertion_lerf_auc: Option<f64>,
    /// ERASER comprehensiveness (text).
    pub comprehensiveness: Option<f64>,
    /// ERASER sufficiency (text).
    pub sufficiency: Option<f64>,
    /// Max-sensitivity.
    pub max_sensitivity: Option<f64>,
}

impl SummaryRow {
    /// Area between the deletion curves (LeRF − MoRF, Samek et al.'s ABPC): higher = the map
    /// orders features by how much `f` needs them.
    pub fn faithfulness(&self) -> Option<f64> {
        Some(self.deletion_lerf_auc? - self.deletion_morf_auc?)
    }
}

/// Writes `summary.parquet` under `dir`.
pub fn write_summary(dir: &Path, rows: &[SummaryRow]) -> Result<()> {
    let mut c = Columns::default();
    c.count("example_id", rows, |r| r.example_id)
        .text("method", rows, |r| &r.method)
        .text("target", rows, |r| &r.target)
        .add(
            "predicted",
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.predicted.as_deref()),
            )),
        )
        .float("f_input", rows, |r| r.f_input)
        .float("f_baseline", rows, |r| r.f_baseline)
        .float("attribution_sum", rows, |r| r.attribution_sum)
        .opt_float("completeness_error", rows, |r| r.completeness_error)
        .opt_float("deletion_morf_auc", rows, |r| r.deletion_morf_auc)
        .opt_float("deletion_lerf_auc", rows, |r| r.deletion_lerf_auc)
        .opt_float("insertion_morf_auc", rows, |r| r.insertion_morf_auc)
        .opt_float("insertion_lerf_auc", rows, |r| r.insertion_lerf_auc)
        .opt_float("faithfulness", rows, SummaryRow::faithfulness)
        .opt_float("comprehensiveness", rows, |r| r.comprehensiveness)
        .opt_float("sufficiency", rows, |r| r.sufficiency)
        .opt_float("max_sensitivity", rows, |r| r.max_sensitivity);
    c.write(&dir.join("summary.parquet"))
}

/// One point of a perturbation curve.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CurveRow {
    /// The example.
    pub example_id: u64,
    /// Method name.
    pub method: String,
    /// Target spec.
    pub target: String,
    /// `deletion_morf`, `deletion_lerf`, `insertion_morf` or `insertion_lerf`.
    pub curve: String,
    /// Fraction of units removed or inserted.
    pub fraction: f64,
    /// `f` there.
    pub value: f64,
}

/// Writes `curves.parquet` under `dir`.
pub fn write_curves(dir: &Path, rows: &[CurveRow]) -> Result<()> {
    let mut c = Columns::default();
    c.count("example_id", rows, |r| r.example_id)
        .text("method", rows, |r| &r.method)
        .text("target", rows, |r| &r.target)
        .text("curve", rows, |r| &r.curve)
        .float("fraction", rows, |r| r.fraction)
        .float("value", rows, |r| r.value);
    c.write(&dir.join("curves.parquet"))
}

/// One comparison of the randomisation check.
#[derive(Debug, Clone)]
pub struct SanityRow {
    /// Method name.
    pub method: String,
    /// Target spec.
    pub target: String,
    /// The example.
    pub example_id: u64,
    /// `cascade` (groups from the output down, cumulatively) or `independent` (one group).
    pub randomization: String,
    /// Cascade: layer groups destroyed, from the output; independent: the destroyed group's
    /// position from the output (1 = the output side).
    pub groups_randomized: u32,
    /// Layer groups in the model.
    pub groups_total: u32,
    /// Spearman's ρ against the trained model's map.
    pub spearman: Option<f64>,
    /// SSIM against it (images).
    pub ssim: Option<f64>,
}

/// Writes `sanity.parquet` under `dir`.
pub fn write_sanity(dir: &Path, rows: &[SanityRow]) -> Result<()> {
    let mut c = Columns::default();
    c.text("method", rows, |r| &r.method)
        .text("target", rows, |r| &r.target)
        .count("example_id", rows, |r| r.example_id)
        .text("randomization", rows, |r| &r.randomization)
        .small("groups_randomized", rows, |r| r.groups_randomized)
        .small("groups_total", rows, |r| r.groups_total)
        .opt_float("spearman", rows, |r| r.spearman)
        .opt_float("ssim", rows, |r| r.ssim);
    c.write(&dir.join("sanity.parquet"))
}

/// One method's verdict over every example of a target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MethodRow {
    /// Method name.
    pub method: String,
    /// Target spec.
    pub target: String,
    /// Examples explained.
    pub examples: u64,
    /// Mean faithfulness (area between the deletion curves).
    pub faithfulness: Option<f64>,
    /// Percentile-bootstrap 95% interval of `faithfulness` over the examples.
    pub faithfulness_ci_low: Option<f64>,
    /// Its upper end.
    pub faithfulness_ci_high: Option<f64>,
    /// Paired interval of the top-ranked method's faithfulness minus this one's, simultaneous at
    /// 95% with every other pair of methods, over the
    /// examples both explained (resampled together); `None` at the top-ranked method. An
    /// interval that reaches 0: the examples do not tell this method apart from the top one.
    pub vs_top_ci_low: Option<f64>,
    /// Its upper end.
    pub vs_top_ci_high: Option<f64>,
    /// Mean ERASER comprehensiveness (text).
    pub comprehensiveness: Option<f64>,
    /// Mean ERASER sufficiency (text).
    pub sufficiency: Option<f64>,
    /// Mean max-sensitivity.
    pub max_sensitivity: Option<f64>,
    /// Mean IG completeness error.
    pub completeness_error: Option<f64>,
    /// Mean |ρ| with the trained map once every layer group is destroyed.
    pub randomized_spearman: Option<f64>,
    /// Mean |ρ| with the maps of the probe refitted on shuffled labels (`probe:` targets).
    pub label_randomized_spearman: Option<f64>,
    /// Whether the randomisation checks passed: the model's, and for `probe:` targets the
    /// labels' too (`None`: not run).
    pub sanity_passed: Option<bool>,
    /// 1 = most faithful among the methods that passed (failed methods rank after them).
    pub rank: u32,
}

/// Writes `methods.parquet` under `dir`.
pub fn write_methods(dir: &Path, rows: &[MethodRow]) -> Result<()> {
    let mut c = Columns::default();
    c.text("method", rows, |r| &r.method)
        .text("target", rows, |r| &r.target)
        .count("examples", rows, |r| r.examples)
        .opt_float("faithfulness", rows, |r| r.faithfulness)
        .opt_float("faithfulness_ci_low", rows, |r| r.faithfulness_ci_low)
        .opt_float("faithfulness_ci_high", rows, |r| r.faithfulness_ci_high)
        .opt_float("vs_top_ci_low", rows, |r| r.vs_top_ci_low)
        .opt_float("vs_top_ci_high", rows, |r| r.vs_top_ci_high)
        .opt_float("comprehensiveness", rows, |r| r.comprehensiveness)
        .opt_float("sufficiency", rows, |r| r.sufficiency)
        .opt_float("max_sensitivity", rows, |r| r.max_sensitivity)
        .opt_float("completeness_error", rows, |r| r.completeness_error)
        .opt_float("randomized_spearman", rows, |r| r.randomized_spearman)
        .opt_float("label_randomized_spearman", rows, |r| {
            r.label_randomized_spearman
        })
        .add(
            "sanity_passed",
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| r.sanity_passed),
            )),
        )
        .small("rank", rows, |r| r.rank);
    c.write(&dir.join("methods.parquet"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_are_folder_safe() {
        assert_eq!(
            super::slug("class:tabby, tabby cat"),
            "class_tabby_tabby_cat"
        );
        assert_eq!(super::slug("token: Paris"), "token_Paris");
        assert_eq!(
            super::slug("logit_diff: Mary| John"),
            "logit_diff_Mary_John"
        );
    }
}
