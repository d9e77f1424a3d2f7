//! The report's sparse-probing lines: per SAE hook and k, how k of the SAE's features fare
//! against k of the hook's neurons over the run's label tasks (every row is in
//! `dictionary/hook=<hook>/sparse_probing.parquet`).

use crate::markup::escape;
use crate::ReportError;
use glassbox_concepts::sparse_probing::{by_k, read_rows, AtK};
use serde::Serialize;
use std::path::Path;

/// A hook's sparse probing, summarised.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SparseProbing {
    pub by_k: Vec<AtK>,
}

/// Reads the hook's table (`None` when sparse probing did not run there).
pub fn summarise(dir: &Path) -> Result<Option<SparseProbing>, ReportError> {
    let rows = read_rows(dir).map_err(|e| ReportError::Invalid(e.to_string()))?;
    Ok(rows
        .filter(|r| !r.is_empty())
        .map(|rows| SparseProbing { by_k: by_k(&rows) }))
}

/// One sentence for the findings: the smallest k.
pub fn headline(hook: &str, s: &SparseProbing) -> Option<String> {
    let first = s.by_k.first()?;
    Some(format!(
        "sparse probing at `{hook}`: {k} SAE feature{plural} per task reach{verb} {f:.1}% mean accuracy against {n:.1}% for {k} neuron{plural} ({t} label task{tp}; features better in {fb}, neurons better in {nb} after Holm correction; every neuron: {d:.1}%)",
        k = first.k,
        plural = if first.k == 1 { "" } else { "s" },
        verb = if first.k == 1 { "es" } else { "" },
        f = 100.0 * first.feature_accuracy,
        n = 100.0 * first.neuron_accuracy,
        t = first.tasks,
        tp = if first.tasks == 1 { "" } else { "s" },
        fb = first.features_better,
        nb = first.neurons_better,
        d = 100.0 * first.dense_neuron_accuracy,
    ))
}

const HEADER: [&str; 8] = [
    "k",
    "tasks",
    "features: accuracy",
    "neurons: accuracy",
    "features: selectivity",
    "neurons: selectivity",
    "features / neurons better",
    "every neuron",
];

fn cells(a: &AtK) -> [String; 8] {
    [
        a.k.to_string(),
        a.tasks.to_string(),
        format!("{:.1}%", 100.0 * a.feature_accuracy),
        format!("{:.1}%", 100.0 * a.neuron_accuracy),
        format!("{:+.1} pts", 100.0 * a.feature_selectivity),
        format!("{:+.1} pts", 100.0 * a.neuron_selectivity),
        format!("{} / {}", a.features_better, a.neurons_better),
        format!("{:.1}%", 100.0 * a.dense_neuron_accuracy),
    ]
}

pub const NOTE: &str = "Sparse probing (SAEBench): each label class against the rest, on example-mean codes and activations; the k units with the largest class-mean difference on the training split, a logistic probe on them scored on held-out examples, minus a control task with random labels per text (selectivity). Features and neurons are compared on the same test examples (exact McNemar, Holm-corrected over the hook's tasks and k); CIs and the selected units are in `sparse_probing.parquet`.";

/// The Markdown table.
pub fn markdown(s: &SparseProbing) -> String {
    let mut md = format!(
        "\nSparse probing:\n\n| {} |\n|{}\n",
        HEADER.join(" | "),
        "---|".repeat(HEADER.len())
    );
    for a in &s.by_k {
        md.push_str(&format!("| {} |\n", cells(a).join(" | ")));
    }
    md.push('\n');
    md
}

/// The HTML table.
pub fn html(s: &SparseProbing) -> String {
    let mut h = String::from("<table class=\"sparse-probing\"><caption>Sparse probing: k SAE features against k neurons</caption><tr>");
    for c in HEADER {
        h.push_str(&format!("<th>{}</th>", escape(c)));
    }
    h.push_str("</tr>");
    for a in &s.by_k {
        h.push_str("<tr>");
        for c in cells(a) {
            h.push_str(&format!("<td>{}</td>", escape(&c)));
        }
        h.push_str("</tr>");
    }
    h.push_str(&format!("</table><p class=\"note\">{}</p>", escape(NOTE)));
    h
}
