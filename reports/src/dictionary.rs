//! The report's sparse-dictionary findings, read from a run: per hook, the SAE's metrics
//! against the PCA baseline and the most label-aligned features (and neurons) with their top
//! examples. `dictionary_render` writes them as sentences and report sections.

use crate::ReportError;
use glassbox_concepts::explain::read::{read_top_examples, read_units, UnitRow};
use glassbox_concepts::explain::UnitExample;
use glassbox_data::RunDir;
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

/// Units listed per hook and kind in the report (all of them are in the Parquet files).
pub const LISTED_UNITS: usize = 24;
/// Top examples shown per listed unit.
pub const LISTED_EXAMPLES: u32 = 3;

/// A listed unit with its strongest examples.
#[derive(Debug, Clone, Serialize)]
pub struct ListedUnit {
    #[serde(flatten)]
    pub row: UnitRow,
    pub examples: Vec<Snippet>,
}

/// A top example: the context window's tokens and the unit's activation on each.
#[derive(Debug, Clone, Serialize)]
pub struct Snippet {
    pub example_id: u64,
    pub position: u32,
    pub activation: f32,
    pub tokens: Vec<String>,
    pub activations: Vec<f32>,
    pub center: u32,
    /// Image runs: the image as the model saw it with the cell's receptive field outlined
    /// (base64 JPEG; not in `summary.json`).
    #[serde(skip)]
    pub thumbnail: Option<String>,
}

/// One hook's dictionary results.
#[derive(Debug, Clone, Serialize)]
pub struct DictionaryFinding {
    /// The hook the units belong to (a transcoder's: the hook it predicts).
    pub hook: glassbox_data::HookPoint,
    /// `"features"` (an SAE's latents), `"neurons"` (the hook's raw units) or
    /// `"transcoder_features"` (a transcoder's latents, read from `input_hook`).
    pub kind: String,
    /// A transcoder's input hook (its features fire on that hook's tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_hook: Option<glassbox_data::HookPoint>,
    /// How many units the Parquet files explain.
    pub units: usize,
    /// `metrics.json` of the SAE (null for neurons).
    pub metrics: Option<serde_json::Value>,
    /// SAEBench-style sparse probing of the SAE's features against the neurons (SAEs only).
    pub sparse_probing: Option<crate::sparse_probing::SparseProbing>,
    pub listed: Vec<ListedUnit>,
}

impl DictionaryFinding {
    /// The unit name in file names and anchors: `feature` or `neuron`.
    pub fn unit(&self) -> &'static str {
        if self.kind == "neurons" {
            "neuron"
        } else {
            "feature"
        }
    }

    /// The folder its tables are in.
    pub fn dir(&self, run: &RunDir) -> std::path::PathBuf {
        match self.input_hook {
            Some(_) => run.transcoder_dir(self.hook),
            None => run.dictionary_dir(self.hook),
        }
    }

    /// How headings name it: the hook, or a transcoder's `input → output`.
    pub fn title(&self) -> String {
        match self.input_hook {
            Some(input) => format!("{input} → {}", self.hook),
            None => self.hook.to_string(),
        }
    }
}

/// Reads every `dictionary/hook=*/` and `dictionary/transcoder=*/` folder of the run.
pub fn summarise(run: &RunDir) -> Result<Vec<DictionaryFinding>, ReportError> {
    let mut out = Vec::new();
    let mut inputs = crate::thumbnails::ModelInputs::open(run);
    for (hook, dir) in glassbox_concepts::explain::read::transcoder_folders(run)? {
        if !dir.join("features.parquet").exists() {
            continue;
        }
        let metrics = read_metrics(&dir.join("metrics.json"))?;
        let input_hook = metrics
            .as_ref()
            .and_then(|m| m["transcoder"]["input_hook"].as_str())
            .and_then(|h| h.parse().ok());
        let (units, listed) = listed_units(&dir, "feature")?;
        out.push(DictionaryFinding {
            hook,
            kind: "transcoder_features".into(),
            input_hook: Some(input_hook.ok_or_else(|| {
                ReportError::Invalid(format!(
                    "{}: metrics.json names no transcoder input hook; re-run the dictionary stage",
                    dir.display()
                ))
            })?),
            units,
            metrics,
            sparse_probing: None,
            listed,
        });
    }
    for (hook, dir) in glassbox_concepts::explain::read::dictionary_hooks(run)? {
        // Image runs write each hook's grid: its examples are cells, shown on their image.
        let grid = crate::thumbnails::read_grid(&dir);
        for (unit, kind) in [("feature", "features"), ("neuron", "neurons")] {
            if !dir.join(format!("{kind}.parquet")).exists() {
                continue;
            }
            let (metrics, sparse_probing) = if unit == "feature" {
                (
                    read_metrics(&dir.join("metrics.json"))?,
                    crate::sparse_probing::summarise(&dir)?,
                )
            } else {
                (None, None)
            };
            let (units, mut listed) = listed_units(&dir, unit)?;
            if let (Some(grid), Some(inputs)) = (&grid, inputs.as_mut()) {
                for s in listed.iter_mut().flat_map(|u| &mut u.examples) {
                    s.thumbnail = crate::thumbnails::cell(
                        inputs,
                        grid,
                        s.example_id,
                        s.position,
                        crate::thumbnails::SIDE,
                    );
                }
            }
            out.push(DictionaryFinding {
                hook,
                kind: kind.into(),
                input_hook: None,
                units,
                metrics,
                sparse_probing,
                listed,
            });
        }
    }
    Ok(out)
}

fn read_metrics(path: &Path) -> Result<Option<serde_json::Value>, ReportError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let mut v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ReportError::Invalid(format!("{}: {e}", path.display())))?;
    // The training curve and options stay in metrics.json; the summary keeps the figures.
    if let Some(o) = v.as_object_mut() {
        o.remove("options");
        if let Some(t) = o.get_mut("training").and_then(|t| t.as_object_mut()) {
            t.remove("curve");
        }
        if let Some(p) = o.get_mut("pca_baseline").and_then(|s| s.as_object_mut()) {
            p.remove("density_histogram");
        }
    }
    Ok(Some(v))
}

/// The live units most correlated with a label class (ties: the densest), with top examples.
fn listed_units(dir: &Path, unit: &str) -> Result<(usize, Vec<ListedUnit>), ReportError> {
    let rows = read_units(dir, unit)?;
    let total = rows.len();
    let mut live: Vec<UnitRow> = rows.into_iter().filter(|r| r.active_rows > 0).collect();
    live.sort_by(|a, b| {
        let key = |r: &UnitRow| r.top_label_correlation.unwrap_or(0.0);
        key(b)
            .total_cmp(&key(a))
            .then(b.density.total_cmp(&a.density))
    });
    live.truncate(LISTED_UNITS);
    let wanted: HashSet<u32> = live.iter().map(|r| r.unit).collect();
    let examples = read_top_examples(dir, unit, &wanted, LISTED_EXAMPLES)?;
    let listed = live
        .into_iter()
        .map(|row| {
            let mut ex: Vec<&UnitExample> =
                examples.iter().filter(|e| e.unit == row.unit).collect();
            ex.sort_by_key(|e| e.rank);
            ListedUnit {
                examples: ex
                    .into_iter()
                    .map(|e| Snippet {
                        example_id: e.example_id,
                        position: e.position,
                        activation: e.activation,
                        tokens: e.context_tokens.clone(),
                        activations: e.context_activations.clone(),
                        center: e.center,
                        thumbnail: None,
                    })
                    .collect(),
                row,
            }
        })
        .collect();
    Ok((total, listed))
}

/// Bars of latent counts per density bin (from `metrics.json`'s `density_histogram`).
pub fn density_svg(hist: &serde_json::Value) -> String {
    let bins: Vec<(f64, f64, f64)> = hist
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| {
                    let get = |k: &str| {
                        b.get(k)
                            .and_then(|v| v.as_f64())
                            .unwrap_or(f64::NEG_INFINITY)
                    };
                    (
                        get("log10_lo"),
                        get("log10_hi"),
                        b.get("latents").and_then(|v| v.as_f64()).unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let (w, h, pad) = (480.0, 160.0, 30.0);
    let max = bins.iter().map(|b| b.2).fold(1.0, f64::max);
    let bar = (w - 2.0 * pad) / bins.len().max(1) as f64;
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"feature density histogram\">");
    for (i, (lo, hi, n)) in bins.iter().enumerate() {
        let bh = (h - 2.0 * pad) * n / max;
        let x = pad + i as f64 * bar;
        let label = if lo.is_finite() {
            format!("{lo:.1}")
        } else {
            "never".into()
        };
        svg.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{label} to {hi:.1}: {n} latents</title></rect>",
            h - pad - bh,
            bar - 2.0,
            if lo.is_finite() { "#4a7ab5" } else { "#b55" }
        ));
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\">{label}</text>",
            x + bar / 2.0,
            h - pad + 12.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{pad}\" y=\"14\" font-size=\"10\">max {max} latents per bin</text></svg>"
    ));
    svg
}

pub const UNITS_PER_PAGE: usize = 100;

/// The page (relative to `report/`) holding `unit` of a finding.
pub fn page_path(f: &DictionaryFinding, unit: u32) -> String {
    format!(
        "units/{}/{}-{:03}.html",
        crate::file_name(&f.hook.to_string()),
        f.kind,
        unit as usize / UNITS_PER_PAGE
    )
}
