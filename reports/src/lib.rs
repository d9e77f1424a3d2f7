//! glassbox-reports: the report bundle of a run — `report/index.html` (self-contained, inline
//! SVG, no scripts or network), `report/summary.json` (versioned; its JSON Schema is written
//! next to it as `summary.schema.json`), `report/summary.md` and `report/figures/*.svg`.

mod atp_svg;
pub mod attribution;
pub mod attribution_summary;
pub mod causal;
pub mod dictionary;
pub mod dictionary_render;
pub mod dissection;
mod html;
mod markup;
pub mod md;
pub mod neuronpedia;
pub mod pages;
pub mod patching;
mod patching_html;
mod probe_render;
pub mod provenance;
pub mod sparse_probing;
mod summary_md;
mod svg;
mod tables;
mod tcav_svg;
mod thumbnails;

use glassbox_data::HookPoint;
use glassbox_data::{atomic, DataError, Manifest, RunDir};
use glassbox_probes::ProbeResult;
use serde::Serialize;

pub(crate) use probe_render::{
    finding_sentence, neuron_sentence, probe_table_header, probe_table_row, selectivity_ci,
    DEFINITIONS,
};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Probe(#[from] glassbox_probes::ProbeError),
    #[error(transparent)]
    Concept(#[from] glassbox_concepts::ConceptError),
    #[error("{0}")]
    Invalid(String),
}

/// Per-label summary: where the label is best decoded, and how that compares to chance and
/// to the control task.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelFinding {
    pub label: String,
    /// `sequence` or `token`.
    pub level: String,
    pub pool: String,
    /// `accuracy` or `r2`.
    pub metric: String,
    pub n_classes: u64,
    pub best_hook: HookPoint,
    pub best_score: f64,
    pub best_ci_low: f64,
    pub best_ci_high: f64,
    pub majority: f64,
    pub control_score: f64,
    pub selectivity: f64,
    /// Paired bootstrap 95% interval of `selectivity`, when the probe stage computed one.
    pub selectivity_ci: Option<(f64, f64)>,
    /// One row per hook, in depth order.
    pub by_hook: Vec<ProbeResult>,
    /// The ten highest-ranked units (all classes) of the probe at the best hook.
    pub top_neurons: Vec<glassbox_probes::NeuronRow>,
    /// At the best hook: a probe on only the top-k ranked units against k random units.
    pub top_k: Vec<glassbox_probes::TopKRow>,
}

/// Version of `report/summary.json`'s layout (`reports/schema/summary.schema.json`).
pub const SUMMARY_SCHEMA_VERSION: u32 = 5;

/// The JSON Schema of `summary.json`, also written next to it.
pub const SUMMARY_SCHEMA: &str = include_str!("../schema/summary.schema.json");

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub schema_version: u32,
    pub run: String,
    pub manifest: Manifest,
    pub probes: Vec<LabelFinding>,
    /// Every TCAV test (empty when the run has no `tcav` stage), from `tcav/scores.parquet`.
    pub tcav: Vec<glassbox_concepts::ScoreRow>,
    /// SAE metrics and listed features/neurons per hook (empty without a dictionary stage).
    pub dictionary: Vec<dictionary::DictionaryFinding>,
    /// Activation patching's effects, attribution patching's agreement and the logit lens
    /// (absent without a patch stage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patching: Option<patching::PatchingFinding>,
    /// The causal tests of the findings: each finding's verdict, every test, steering curves
    /// (absent without a causal stage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causal: Option<causal::CausalSummary>,
    /// The attribute stage's methods ranked per target, with their sanity verdicts (absent
    /// without the stage); the maps are on `attributions/index.html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributions: Option<Vec<attribution_summary::MethodStanding>>,
    /// Network Dissection's labels per hook and the units shown with their images (absent
    /// without a dissect stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dissection: Option<dissection::DissectionSummary>,
    /// Versions, config and metric definitions (fingerprints, seeds and timings are in `manifest`).
    pub provenance: provenance::Provenance,
    /// Image runs: the first images of each TCAV concept set (not in `summary.json`).
    #[serde(skip)]
    pub(crate) concept_strips: Vec<thumbnails::ConceptStrip>,
}

/// Paths of the written bundle.
#[derive(Debug, Clone)]
pub struct ReportPaths {
    pub index: PathBuf,
    pub summary_json: PathBuf,
    pub summary_md: PathBuf,
}

/// The headline findings, plain text, most important first: where each label is best decoded,
/// the strongest significant TCAV results, each SAE's fit, patching's strongest effect, the
/// causal tests' tally and each attribution target's most faithful sane method.
pub fn top_findings(summary: &Summary, max_tcav: usize) -> Vec<String> {
    let mut lines: Vec<String> = summary
        .probes
        .iter()
        .map(|f| probe_line(f, summary))
        .collect();
    lines.extend(
        tcav_findings(&summary.tcav, summary.causal.as_ref())
            .into_iter()
            .filter(|l| l.starts_with("concept "))
            .take(max_tcav),
    );
    lines.extend(
        summary
            .dictionary
            .iter()
            .filter_map(dictionary_render::headline),
    );
    lines.extend(
        summary
            .dictionary
            .iter()
            .filter_map(dictionary_render::sparse_probing_line),
    );
    lines.extend(summary.patching.as_ref().and_then(patching::headline));
    lines.extend(summary.causal.as_ref().and_then(causal::headline));
    lines.extend(summary.dissection.as_ref().and_then(dissection::headline));
    lines.extend(
        summary
            .attributions
            .iter()
            .flat_map(|a| attribution_summary::headlines(a)),
    );
    // Plain text: the code marks are for the Markdown and HTML reports.
    lines.into_iter().map(|l| l.replace('`', "")).collect()
}

/// A probe's finding sentence with its causal verdict, when tested.
pub(crate) fn probe_line(f: &LabelFinding, summary: &Summary) -> String {
    let id = glassbox_concepts::causal::probe_finding(&f.label, &f.level, f.best_hook);
    finding_sentence(f) + &causal::suffix(summary.causal.as_ref(), &id)
}

/// Every finding, ranked, with `code` marks: where each label is best decoded, significant TCAV
/// results by effect, each SAE's fit and its most label-aligned features, then what was tested
/// and not found significant.
pub(crate) fn ranked_findings(summary: &Summary) -> Vec<String> {
    let mut lines: Vec<String> = summary
        .probes
        .iter()
        .map(|f| probe_line(f, summary))
        .collect();
    let tcav = tcav_findings(&summary.tcav, summary.causal.as_ref());
    lines.extend(tcav.iter().filter(|l| l.starts_with("concept ")).cloned());
    for f in &summary.dictionary {
        lines.extend(dictionary_render::headline(f));
        lines.extend(dictionary_render::sparse_probing_line(f));
        lines.extend(dictionary_render::unit_findings(
            f,
            3,
            summary.causal.as_ref(),
        ));
    }
    lines.extend(summary.patching.as_ref().and_then(patching::headline));
    lines.extend(summary.causal.as_ref().and_then(causal::headline));
    lines.extend(summary.dissection.as_ref().and_then(dissection::headline));
    lines.extend(
        summary
            .attributions
            .iter()
            .flat_map(|a| attribution_summary::headlines(a)),
    );
    lines.extend(tcav.into_iter().filter(|l| !l.starts_with("concept ")));
    lines
}

/// Builds the summary from a run with a completed `extract` stage and whatever later stages
/// completed (a run with attributions or patching but no probes gets a report too).
pub fn summarise(run: &RunDir) -> Result<Summary, ReportError> {
    let manifest = run.require_stage("extract")?;
    let (results, neurons, topk) = if manifest.stages.contains_key("probe") {
        (
            glassbox_probes::read_results(run)?,
            glassbox_probes::read_neurons(run)?,
            glassbox_probes::read_topk(run)?,
        )
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    let mut labels: Vec<(String, String, String)> = results
        .iter()
        .map(|r| (r.level.clone(), r.label.clone(), r.pool.clone()))
        .collect();
    labels.sort();
    labels.dedup();
    let probes = labels
        .into_iter()
        .map(|(level, label, pool)| {
            let mut by_hook: Vec<ProbeResult> = results
                .iter()
                .filter(|r| r.level == level && r.label == label && r.pool == pool)
                .cloned()
                .collect();
            by_hook.sort_by(|a, b| a.depth.total_cmp(&b.depth).then(a.hook.cmp(&b.hook)));
            let best = glassbox_probes::best_per_label(&by_hook)[0];
            let at_best =
                |h: HookPoint, l: &str, v: &str| h == best.hook && l == label && v == level;
            let mut top_neurons: Vec<glassbox_probes::NeuronRow> = neurons
                .iter()
                .filter(|n| at_best(n.hook, &n.label, &n.level) && n.class == "*" && n.rank < 10)
                .cloned()
                .collect();
            top_neurons.sort_by_key(|n| n.rank);
            let top_k = topk
                .iter()
                .filter(|t| at_best(t.hook, &t.label, &t.level))
                .cloned()
                .collect();
            LabelFinding {
                top_neurons,
                top_k,
                best_hook: best.hook,
                metric: best.metric.clone(),
                best_score: best.score,
                best_ci_low: best.ci_low,
                best_ci_high: best.ci_high,
                majority: best.majority,
                control_score: best.control_score,
                selectivity: best.selectivity,
                selectivity_ci: selectivity_ci(best),
                n_classes: best.n_classes,
                label,
                level,
                pool,
                by_hook,
            }
        })
        .collect();
    let tcav = if manifest.stages.contains_key("tcav") {
        glassbox_concepts::read_scores(run)?
    } else {
        Vec::new()
    };
    let dictionary = if manifest.stages.contains_key("dictionary") {
        dictionary::summarise(run)?
    } else {
        Vec::new()
    };
    let manifest_has_dissect = manifest.stages.contains_key("dissect");
    let manifest_has_tcav = manifest.stages.contains_key("tcav");
    Ok(Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        run: run.name(),
        manifest,
        probes,
        tcav,
        dictionary,
        patching: patching::summarise(run)?,
        causal: causal::summarise(run)?,
        attributions: attribution_summary::summarise(run)?,
        dissection: if manifest_has_dissect {
            dissection::summarise(run)?
        } else {
            None
        },
        provenance: provenance::provenance(run),
        concept_strips: if manifest_has_tcav {
            thumbnails::concept_strips(run)
        } else {
            Vec::new()
        },
    })
}

/// Writes the bundle under `report/`, each file atomically.
pub fn write_report(run: &RunDir) -> Result<(ReportPaths, Summary), ReportError> {
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
    atomic::write_bytes(&paths.summary_md, summary_md::markdown(&summary).as_bytes())?;
    atomic::write_bytes(&dir.join("summary.schema.json"), SUMMARY_SCHEMA.as_bytes())?;
    // Each figure also as a standalone SVG file, for slides and PRs.
    for f in &summary.probes {
        let name = file_name(&format!("probe-{}-{}-{}.svg", f.level, f.pool, f.label));
        atomic::write_bytes(
            &dir.join("figures").join(name),
            svg::accuracy_chart(f).as_bytes(),
        )?;
    }
    for (target, rows) in tcav_by_target(&summary.tcav) {
        let name = file_name(&format!("tcav-{target}.svg"));
        atomic::write_bytes(
            &dir.join("figures").join(name),
            tcav_svg::tcav_chart(&target, &rows).as_bytes(),
        )?;
    }
    tables::write_tables(run, &summary)?;
    pages::write_pages(run, &summary.dictionary)?;
    for f in summary.dictionary.iter().filter(|f| f.kind == "features") {
        if let Some(hist) = f
            .metrics
            .as_ref()
            .and_then(|m| m.get("sae"))
            .and_then(|s| s.get("density_histogram"))
        {
            let name = file_name(&format!("density-{}.svg", f.hook));
            atomic::write_bytes(
                &dir.join("figures").join(name),
                dictionary::density_svg(hist).as_bytes(),
            )?;
        }
    }
    atomic::write_bytes(&paths.index, html::render(&summary).as_bytes())?;
    Ok((paths, summary))
}

/// A file name from free text (labels, targets): anything but `[A-Za-z0-9._-]` becomes `_`.
pub(crate) fn file_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// TCAV rows grouped by target, targets in first-seen order.
pub(crate) fn tcav_by_target(
    rows: &[glassbox_concepts::ScoreRow],
) -> Vec<(String, Vec<&glassbox_concepts::ScoreRow>)> {
    let mut groups: Vec<(String, Vec<&glassbox_concepts::ScoreRow>)> = Vec::new();
    for r in rows {
        match groups.iter_mut().find(|(t, _)| *t == r.target) {
            Some((_, g)) => g.push(r),
            None => groups.push((r.target.clone(), vec![r])),
        }
    }
    groups
}

pub(crate) const TCAV_HEADER: [&str; 8] = [
    "concept",
    "hook",
    "target",
    "TCAV score [95% CI]",
    "random (mean ± sd)",
    "p (Holm)",
    "CAV accuracy",
    "significant",
];

pub(crate) fn tcav_row(r: &glassbox_concepts::ScoreRow) -> [String; 8] {
    [
        r.concept.clone(),
        r.hook.to_string(),
        r.target.clone(),
        format!("{:.3} [{:.3}, {:.3}]", r.score, r.ci_low, r.ci_high),
        format!("{:.3} ± {:.3}", r.random_mean, r.random_std),
        format!("{:.2e}", r.p_holm),
        format!("{:.3}", r.cav_accuracy),
        if r.significant { "yes" } else { "no" }.to_owned(),
    ]
}

/// One sentence per significant TCAV result (strongest first), then what was not significant.
pub(crate) fn tcav_findings(
    rows: &[glassbox_concepts::ScoreRow],
    causal: Option<&causal::CausalSummary>,
) -> Vec<String> {
    let mut significant: Vec<&glassbox_concepts::ScoreRow> =
        rows.iter().filter(|r| r.significant).collect();
    significant.sort_by(|a, b| {
        (a.score - 0.5)
            .abs()
            .total_cmp(&(b.score - 0.5).abs())
            .reverse()
    });
    let mut lines: Vec<String> =
        significant
            .iter()
            .map(|r| {
                format!(
                "concept {} {} {} at {} (TCAV {:.2} vs random {:.2}, p_holm {:.1e}, {} convention){}",
                md::code(&r.concept),
                if r.score > r.random_mean { "raises" } else { "lowers" },
                md::code(&r.target),
                md::code(&r.hook.to_string()),
                r.score,
                r.random_mean,
                r.p_holm,
                r.convention,
                causal::suffix(
                    causal,
                    &glassbox_concepts::causal::tcav_finding(&r.concept, &r.target, r.hook)
                )
            )
            })
            .collect();
    let not: Vec<String> = rows
        .iter()
        .filter(|r| !r.significant)
        .map(|r| {
            format!(
                "{}→{}@{}",
                md::code(&r.concept),
                md::code(&r.target),
                md::code(&r.hook.to_string())
            )
        })
        .collect();
    if !not.is_empty() {
        lines.push(format!(
            "not significant after correction ({} of {} tests): {}",
            not.len(),
            rows.len(),
            not.join(", ")
        ));
    }
    lines
}

pub(crate) const TCAV_DEFINITIONS: &str = "TCAV score: the fraction of the target class's examples whose target rises (logit convention) along the concept's CAV, Σ_t ∇f(h_t)·v; the mean over R CAVs trained against R random sets. Random: the same for R random-vs-random CAVs. p: two-sided Welch t-test of the R concept scores against the R random scores, Holm–Bonferroni adjusted over every test in the run; significant needs p_holm < alpha and a mean held-out CAV accuracy above the minimum. Figures come from `tcav/scores.parquet`.";

/// Metric definitions, printed under the tables.
/// What the probe section says in a run without probes.
pub(crate) const NO_PROBES: &str = "No probes in this run: `glassbox probe` fits them (on a data set with a label column); the sections below come from the stages that ran.";
