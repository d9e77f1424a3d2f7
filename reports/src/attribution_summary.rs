//! The attribute stage in the main report: each method's standing per target (rank,
//! faithfulness, the randomisation check) as `summary.json` carries it, the findings lines and
//! the report's table. The attribution page itself is `attribution.rs`.

use crate::attribution::{completeness_warning, fmt, fmt_ci, verdicts, vs_top};
use crate::markup::escape;
use crate::ReportError;
use glassbox_data::RunDir;

/// One method's standing for one target, for the main report and `summary.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MethodStanding {
    pub target: String,
    pub method: String,
    /// 1 = most faithful among the methods that passed the sanity check.
    pub rank: u32,
    pub faithfulness: Option<f64>,
    /// Bootstrap 95% interval of `faithfulness` over the examples (absent in older summaries).
    #[serde(default)]
    pub faithfulness_ci: Option<(f64, f64)>,
    /// Paired interval of the top-ranked method's faithfulness minus this one's (simultaneous
    /// at 95% over the pairs of methods); `None` at
    /// the top method (and in older summaries).
    #[serde(default)]
    pub vs_top_ci: Option<(f64, f64)>,
    /// The model-randomisation check; `None` where it was not run.
    pub sanity_passed: Option<bool>,
    /// Integrated gradients: the median completeness error over the examples; `None` for other
    /// methods (and in `summary.json` written before it was recorded).
    #[serde(default)]
    pub completeness_error: Option<f64>,
}

/// The attribute stage's verdicts, summarised for the main report (absent without the stage).
pub fn summarise(run: &RunDir) -> Result<Option<Vec<MethodStanding>>, ReportError> {
    let dir = run.root().join("attributions");
    if !dir.join("methods.parquet").is_file() {
        return Ok(None);
    }
    let mut rows: Vec<MethodStanding> = verdicts(&dir)?
        .into_iter()
        .map(|v| MethodStanding {
            target: v.target,
            method: v.method,
            rank: v.rank,
            faithfulness: v.faithfulness,
            faithfulness_ci: v.faithfulness_ci,
            vs_top_ci: v.vs_top_ci,
            sanity_passed: v.sanity_passed,
            completeness_error: v.completeness_error,
        })
        .collect();
    rows.sort_by(|a, b| a.target.cmp(&b.target).then(a.rank.cmp(&b.rank)));
    Ok(Some(rows))
}

/// One finding per target: the most faithful method that passed the sanity check, the methods
/// that failed it (whose maps must not be read as explanations), and an integral that has not
/// converged.
pub fn headlines(rows: &[MethodStanding]) -> Vec<String> {
    let mut targets: Vec<&str> = rows.iter().map(|r| r.target.as_str()).collect();
    targets.dedup();
    targets
        .into_iter()
        .filter_map(|t| {
            let mine: Vec<&MethodStanding> = rows.iter().filter(|r| r.target == t).collect();
            let best = mine
                .iter()
                .filter(|r| r.sanity_passed != Some(false))
                .min_by_key(|r| r.rank)?;
            let checked = match best.sanity_passed {
                Some(true) => "passed the model-randomisation check",
                _ => "randomisation check not run",
            };
            let failed: Vec<String> = mine
                .iter()
                .filter(|r| r.sanity_passed == Some(false))
                .map(|r| format!("`{}`", r.method))
                .collect();
            let failed = if failed.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} failed it: their maps do not depend on the model",
                    failed.join(", ")
                )
            };
            let unconverged: String = mine
                .iter()
                .filter_map(|r| completeness_warning(&r.method, r.completeness_error))
                .map(|w| format!("; {w}"))
                .collect();
            // Methods that passed whose faithfulness the examples do not tell apart from the
            // best one's (the paired interval of its lead reaches 0).
            let close: Vec<String> = mine
                .iter()
                .filter(|r| r.sanity_passed != Some(false) && r.rank != best.rank)
                .filter(|r| r.vs_top_ci.is_some_and(|(lo, _)| lo <= 0.0))
                .map(|r| format!("`{}`", r.method))
                .collect();
            let close = if close.is_empty() {
                String::new()
            } else {
                format!(
                    "; not told apart from {} on these examples (simultaneous 95% CIs of its lead reach 0)",
                    close.join(", ")
                )
            };
            Some(format!(
                "attributions of `{t}`: `{}` is the most faithful method (faithfulness {}; {checked}){close}{failed}{unconverged}",
                best.method,
                fmt_ci(best.faithfulness, best.faithfulness_ci)
            ))
        })
        .collect()
}

/// The main report's section: methods ranked per target, failures named, a link to the page.
pub(crate) fn section_html(rows: &[MethodStanding]) -> String {
    let mut h = String::from(
        "<section id=\"attributions\">\n<h2>Input attributions</h2>\n<p>Maps over the inputs, with deletion/insertion curves and the model-randomisation check, are on the <a href=\"../attributions/index.html\">attribution page</a>.</p>\n<table><thead><tr><th>target</th><th>rank</th><th>method</th><th>faithfulness [95% CI]</th><th>against the top</th><th>sanity check</th><th>IG completeness error</th></tr></thead><tbody>\n",
    );
    for r in rows {
        let verdict = match r.sanity_passed {
            Some(true) => "passed",
            Some(false) => "FAILED — its maps do not depend on the model",
            None => "not run",
        };
        let completeness = match (
            r.completeness_error,
            completeness_warning(&r.method, r.completeness_error),
        ) {
            (e, None) => fmt(e),
            (e, Some(_)) => format!("{} — <strong>not converged</strong>", fmt(e)),
        };
        h.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{completeness}</td></tr>\n",
            escape(&r.target),
            r.rank,
            escape(&r.method),
            fmt_ci(r.faithfulness, r.faithfulness_ci),
            escape(&vs_top(r.rank, r.vs_top_ci)),
            verdict
        ));
    }
    h.push_str("</tbody></table>\n</section>\n");
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_report_section_names_failed_methods_and_links_the_page() {
        let row = |method: &str, rank, passed| super::MethodStanding {
            target: "class:tabby".into(),
            method: method.into(),
            rank,
            faithfulness: Some(0.25),
            faithfulness_ci: None,
            vs_top_ci: None,
            sanity_passed: passed,
            completeness_error: None,
        };
        let h = super::section_html(&[
            row("integrated_gradients", 1, Some(true)),
            row("edges", 2, Some(false)),
            row("occlusion", 3, None),
        ]);
        assert!(h.contains("href=\"../attributions/index.html\""));
        assert!(
            h.contains("<td>edges</td><td>0.250</td><td>–</td><td>FAILED"),
            "{h}"
        );
        assert!(
            h.contains("<td>occlusion</td><td>0.250</td><td>–</td><td>not run"),
            "{h}"
        );
    }

    #[test]
    fn the_headline_is_the_best_sane_method_and_names_the_failures() {
        let row = |target: &str, method: &str, rank, passed| super::MethodStanding {
            target: target.into(),
            method: method.into(),
            rank,
            faithfulness: Some(0.5),
            faithfulness_ci: None,
            vs_top_ci: None,
            sanity_passed: passed,
            completeness_error: None,
        };
        // A failed method never heads a target, even at rank 1.
        let lines = super::headlines(&[
            row("class:tabby", "edges", 1, Some(false)),
            row("class:tabby", "occlusion", 2, Some(true)),
            row("token: Paris", "saliency", 1, None),
        ]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("attributions of `class:tabby`: `occlusion`"),
            "{lines:?}"
        );
        assert!(
            lines[0].contains("passed the model-randomisation check); `edges` failed it"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("`saliency`") && lines[1].contains("not run"),
            "{lines:?}"
        );
        // Every method failed: nothing is presented as an explanation.
        assert!(super::headlines(&[row("class:cat", "edges", 1, Some(false))]).is_empty());
    }

    #[test]
    fn the_headline_names_the_methods_the_examples_do_not_tell_apart_from_the_best() {
        let row = |method: &str, rank, vs_top| super::MethodStanding {
            target: "class:tabby".into(),
            method: method.into(),
            rank,
            faithfulness: Some(0.5),
            faithfulness_ci: Some((0.4, 0.6)),
            vs_top_ci: vs_top,
            sanity_passed: Some(true),
            completeness_error: None,
        };
        let lines = super::headlines(&[
            row("integrated_gradients", 1, None),
            row("occlusion", 2, Some((-0.02, 0.05))),
            row("saliency", 3, Some((0.10, 0.30))),
        ]);
        assert!(
            lines[0].contains("faithfulness 0.500 [0.400, 0.600]"),
            "{lines:?}"
        );
        assert!(
            lines[0].contains("not told apart from `occlusion`") && !lines[0].contains("saliency"),
            "{lines:?}"
        );
        let h = super::section_html(&[row("saliency", 3, Some((0.10, 0.30)))]);
        assert!(h.contains("behind by [0.100, 0.300]"), "{h}");
    }

    #[test]
    fn an_integral_that_has_not_converged_is_named_with_its_error() {
        let row = |error| super::MethodStanding {
            target: "token: Paris".into(),
            method: "integrated_gradients".into(),
            rank: 1,
            faithfulness: Some(0.5),
            faithfulness_ci: None,
            vs_top_ci: None,
            sanity_passed: Some(true),
            completeness_error: error,
        };
        let lines = super::headlines(&[row(Some(0.84))]);
        assert!(
            lines[0].contains("`integrated_gradients` has not converged")
                && lines[0].contains("by 84.0 %")
                && lines[0].contains("--steps"),
            "{lines:?}"
        );
        let h = super::section_html(&[row(Some(0.84))]);
        assert!(h.contains("0.840 — <strong>not converged</strong>"), "{h}");
        // Within the tolerance (and for methods without the axiom) nothing is said.
        for error in [Some(0.009), None] {
            assert!(!super::headlines(&[row(error)])[0].contains("converged"));
            assert!(!super::section_html(&[row(error)]).contains("converged"));
        }
    }
}
