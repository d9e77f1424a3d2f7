//! glassbox-reports: the report bundle of a run — `report/index.html` (self-contained, inline
//! SVG, no scripts or network), `report/summary.json` and `report/summary.md`.

mod html;
mod svg;

use glassbox_data::{atomic, DataError, Manifest, RunDir};
use glassbox_probes::ProbeResult;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Probe(#[from] glassbox_probes::ProbeError),
    #[error("{0}")]
    Invalid(String),
}

/// Per-label summary: where the label is best decoded, and how that compares to chance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelFinding {
    pub label: String,
    pub pool: String,
    pub n_classes: u64,
    pub best_hook: String,
    pub best_accuracy: f64,
    pub majority_baseline: f64,
    /// One row per hook, in depth order.
    pub by_hook: Vec<ProbeResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub run: String,
    pub manifest: Manifest,
    pub probes: Vec<LabelFinding>,
}

/// Paths of the written bundle.
#[derive(Debug, Clone)]
pub struct ReportPaths {
    pub index: PathBuf,
    pub summary_json: PathBuf,
    pub summary_md: PathBuf,
}

/// Builds the summary from a run with completed `extract` and `probe` stages.
pub fn summarise(run: &RunDir) -> Result<Summary, ReportError> {
    let manifest = run.require_stage("probe")?;
    let results = glassbox_probes::read_results(run)?;
    let mut labels: Vec<(String, String)> = results
        .iter()
        .map(|r| (r.label.clone(), r.pool.clone()))
        .collect();
    labels.sort();
    labels.dedup();
    let probes = labels
        .into_iter()
        .map(|(label, pool)| {
            let mut by_hook: Vec<ProbeResult> = results
                .iter()
                .filter(|r| r.label == label && r.pool == pool)
                .cloned()
                .collect();
            by_hook.sort_by(|a, b| a.depth.total_cmp(&b.depth).then(a.hook.cmp(&b.hook)));
            // Ties go to the shallowest hook: the earliest point the label is decodable.
            let best = by_hook
                .iter()
                .fold(None::<&ProbeResult>, |acc, r| match acc {
                    Some(b) if b.accuracy >= r.accuracy => Some(b),
                    _ => Some(r),
                })
                .expect("every label has at least one result");
            LabelFinding {
                best_hook: best.hook.clone(),
                best_accuracy: best.accuracy,
                majority_baseline: best.majority_baseline,
                n_classes: best.n_classes,
                label,
                pool,
                by_hook,
            }
        })
        .collect();
    Ok(Summary {
        run: run.root().display().to_string(),
        manifest,
        probes,
    })
}

/// Writes the bundle under `report/`, each file atomically.
pub fn write_report(run: &RunDir) -> Result<ReportPaths, ReportError> {
    let summary = summarise(run)?;
    let dir = run.report_dir();
    let paths = ReportPaths {
        index: dir.join("index.html"),
        summary_json: dir.join("summary.json"),
        summary_md: dir.join("summary.md"),
    };
    let json = serde_json::to_vec_pretty(&summary).map_err(|source| DataError::Json {
        path: paths.summary_json.clone(),
        source,
    })?;
    atomic::write_bytes(&paths.summary_json, &json)?;
    atomic::write_bytes(&paths.summary_md, markdown(&summary).as_bytes())?;
    atomic::write_bytes(&paths.index, html::render(&summary).as_bytes())?;
    Ok(paths)
}

/// One sentence per label, shared by the Markdown and HTML reports.
pub(crate) fn finding_sentence(f: &LabelFinding) -> String {
    format!(
        "`{}` ({} classes) is best decoded at `{}` with held-out accuracy {:.3}, against a majority baseline of {:.3} ({} pooling).",
        f.label, f.n_classes, f.best_hook, f.best_accuracy, f.majority_baseline, f.pool
    )
}

fn markdown(s: &Summary) -> String {
    let mut md = String::from("# glassbox report\n\n");
    if let Some(m) = &s.manifest.model {
        md.push_str(&format!(
            "Model: `{}` at revision `{}` ({}).\n\n",
            m.id, m.revision, m.family
        ));
    }
    if let Some(d) = &s.manifest.data {
        md.push_str(&format!(
            "Data: `{}` (sha256 `{}`), {} examples, {} tokens.\n\n",
            d.path, d.sha256, d.n_examples, d.n_tokens
        ));
    }
    md.push_str("## Linear probes\n\n");
    for f in &s.probes {
        md.push_str(&format!("- {}\n", finding_sentence(f)));
    }
    for f in &s.probes {
        md.push_str(&format!(
            "\n### `{}`\n\n| hook | accuracy | majority | n_train | n_test |\n|---|---|---|---|---|\n",
            f.label
        ));
        for r in &f.by_hook {
            md.push_str(&format!(
                "| `{}` | {:.3} | {:.3} | {} | {} |\n",
                r.hook, r.accuracy, r.majority_baseline, r.n_train, r.n_test
            ));
        }
    }
    md.push_str(
        "\nAccuracy is measured on a seeded, stratified held-out split; the majority baseline always predicts the most frequent training class. Figures come from `probes/results.parquet`.\n",
    );
    md
}
