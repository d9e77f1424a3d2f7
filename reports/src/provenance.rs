//! What produced the run: versions, the resolved config, stage fingerprints, seeds and timings
//! (the last three from the manifest), and the metric definitions the report uses.

use crate::markup::escape;
use glassbox_data::{Manifest, RunDir};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    /// The glassbox that wrote this report (the manifest has the one that extracted).
    pub report_glassbox_version: String,
    /// Numerically relevant dependency versions of that build (from its Cargo.lock).
    pub dependencies: BTreeMap<String, String>,
    /// The run's resolved `config.toml` (null when absent).
    pub config_toml: Option<String>,
    /// Metric definitions by section.
    pub definitions: BTreeMap<String, String>,
}

pub fn provenance(run: &RunDir) -> Provenance {
    let definitions = [
        ("probes", crate::DEFINITIONS),
        ("tcav", crate::TCAV_DEFINITIONS),
        ("dictionary", crate::dictionary_render::METRIC_NOTE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Provenance {
        report_glassbox_version: env!("CARGO_PKG_VERSION").to_owned(),
        dependencies: glassbox_data::DEPENDENCY_VERSIONS
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        config_toml: std::fs::read_to_string(run.config()).ok(),
        definitions,
    }
}

/// The provenance block at the top of the page.
pub fn html(manifest: &Manifest, p: &Provenance) -> String {
    let mut body = String::from(
        "<section id=\"provenance\" class=\"provenance\">\n<h2>Provenance</h2>\n<dl>\n",
    );
    if let Some(m) = &manifest.model {
        body.push_str(&format!(
            "<dt>Model</dt><dd><code>{}</code> @ <code>{}</code> ({}, {})<br><small>weights sha256 {}</small></dd>\n",
            escape(&m.id),
            escape(&m.revision),
            escape(&m.family),
            escape(&m.source),
            escape(&m.weights_sha256)
        ));
    }
    if let Some(d) = &manifest.data {
        body.push_str(&format!(
            "<dt>Data</dt><dd><code>{}</code>: {} examples, {} tokens<br><small>sha256 {}</small></dd>\n",
            escape(&d.path),
            d.n_examples,
            d.n_tokens,
            escape(&d.sha256)
        ));
    }
    body.push_str("<dt>Stages</dt><dd><table class=\"stages\"><thead><tr><th>stage</th><th>finished</th><th>seconds</th><th>seed</th><th>build</th><th>fingerprint</th></tr></thead><tbody>\n");
    for (stage, r) in &manifest.stages {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><small>{}</small></td><td><small>{}</small></td></tr>\n",
            escape(stage),
            escape(&r.finished_at),
            r.seconds.map_or("–".to_owned(), |s| format!("{s:.1}")),
            r.seed.map_or("–".to_owned(), |s| s.to_string()),
            r.build.as_ref().map_or("–".to_owned(), |b| escape(&b.short())),
            escape(&r.fingerprint)
        ));
    }
    body.push_str("</tbody></table></dd>\n");
    let deps: Vec<String> = p
        .dependencies
        .iter()
        .map(|(n, v)| format!("{} {}", escape(n), escape(v)))
        .collect();
    body.push_str(&format!(
        "<dt>Versions</dt><dd>glassbox {} (extract), {} (report); {}</dd>\n",
        escape(&manifest.glassbox_version),
        escape(&p.report_glassbox_version),
        deps.join(", ")
    ));
    if let Some(config) = &p.config_toml {
        body.push_str(&format!(
            "<dt>Config</dt><dd><details><summary><code>config.toml</code></summary><pre>{}</pre></details></dd>\n",
            escape(config)
        ));
    }
    body.push_str("</dl>\n</section>\n");
    body
}
