//! Every table of the report as Parquet under `report/tables/`, for notebooks: the findings,
//! the probe results, the TCAV tests, the dictionary metrics, the causal tests and curves, and
//! the patching tables.

use crate::{ranked_findings, ReportError, Summary};
use arrow_array::{Float64Array, UInt32Array};
use glassbox_data::table::Columns;
use glassbox_data::{atomic, RunDir};
use std::sync::Arc;

pub(crate) fn write_tables(run: &RunDir, summary: &Summary) -> Result<(), ReportError> {
    let dir = run.report_dir().join("tables");
    let findings: Vec<String> = ranked_findings(summary)
        .into_iter()
        .map(|l| l.replace('`', ""))
        .collect();
    let mut c = Columns::default();
    c.add(
        "rank",
        Arc::new(UInt32Array::from_iter_values(0..findings.len() as u32)),
    )
    .text("finding", &findings, |f| f.as_str());
    c.write(&dir.join("findings.parquet"))?;
    // The stage tables as they are.
    for (from, to) in [
        ("probes/results.parquet", "probes.parquet"),
        ("tcav/scores.parquet", "tcav.parquet"),
        ("causal/tests.parquet", "causal_tests.parquet"),
        ("causal/curves.parquet", "causal_curves.parquet"),
        ("patching/results.parquet", "patching_results.parquet"),
        ("patching/pairs.parquet", "patching_pairs.parquet"),
        ("patching/ablation.parquet", "patching_ablation.parquet"),
        ("patching/dla.parquet", "patching_dla.parquet"),
        ("patching/logit_lens.parquet", "patching_logit_lens.parquet"),
    ] {
        let src = run.path(from);
        if src.exists() {
            let bytes = std::fs::read(&src)
                .map_err(|e| ReportError::Invalid(format!("{}: {e}", src.display())))?;
            atomic::write_bytes(&dir.join(to), &bytes)?;
        }
    }
    if !summary.dictionary.is_empty() {
        let d = &summary.dictionary;
        let metric = |f: &crate::dictionary::DictionaryFinding, section: &str, key: &str| {
            f.metrics
                .as_ref()
                .and_then(|m| m.get(section))
                .and_then(|s| s.get(key))
                .and_then(|v| v.as_f64())
        };
        let mut c = Columns::default();
        c.hooks("hook", d, |f| f.hook)
            .text("kind", d, |f| f.kind.as_str())
            .count("units", d, |f| f.units as u64);
        for key in [
            "l0",
            "explained_variance",
            "fvu",
            "mse",
            "normalised_mse",
            "cosine",
            "dead_fraction",
            "dense_fraction",
        ] {
            c.add(
                key,
                Arc::new(Float64Array::from_iter(
                    d.iter().map(|f| metric(f, "sae", key)),
                )),
            );
        }
        // The explained variance's interval over the evaluation texts ([low, high] in
        // metrics.json) and the paired SAE − PCA difference.
        let ci = |f: &crate::dictionary::DictionaryFinding, section: &str| {
            f.metrics
                .as_ref()
                .and_then(|m| m.get(section))
                .and_then(crate::dictionary_render::ev_interval)
        };
        for (name, side) in [
            ("explained_variance_ci_low", 0),
            ("explained_variance_ci_high", 1),
        ] {
            c.add(
                name,
                Arc::new(Float64Array::from_iter(d.iter().map(|f| {
                    ci(f, "sae").map(|(lo, hi)| if side == 0 { lo } else { hi })
                }))),
            );
        }
        c.add(
            "pca_explained_variance",
            Arc::new(Float64Array::from_iter(
                d.iter()
                    .map(|f| metric(f, "pca_baseline", "explained_variance")),
            )),
        );
        for key in ["ci_low", "ci_high"] {
            c.add(
                &format!("sae_minus_pca_{key}"),
                Arc::new(Float64Array::from_iter(
                    d.iter().map(|f| metric(f, "sae_minus_pca", key)),
                )),
            );
        }
        c.write(&dir.join("dictionary.parquet"))?;
    }
    Ok(())
}
