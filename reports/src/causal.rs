//! The report's causal section: every finding's verdict (from `causal/tests.parquet`), shown
//! next to the finding wherever it is listed, the tests' table, and one dose-response curve per
//! steering test with the random directions' band.

use crate::markup::{escape, inline};
use crate::ReportError;
use glassbox_concepts::causal::{read_curves, read_tests, CurveRow, TestRow, Verdict};
use glassbox_data::RunDir;
use serde::Serialize;

/// A finding's verdict over its tests.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CausalFinding {
    pub finding: String,
    /// Supported when any of its tests is (each corrected over the run); not supported when
    /// none is and at least one could run; not testable otherwise.
    pub verdict: Verdict,
    pub tests: usize,
    pub supported: usize,
    /// The deciding test's reason.
    pub reason: String,
}

/// What the causal stage found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CausalSummary {
    /// One per finding, in the order the stage tested them.
    pub findings: Vec<CausalFinding>,
    /// Every test.
    pub tests: Vec<TestRow>,
    /// Steering's dose-response points.
    pub curves: Vec<CurveRow>,
}

/// Reads the run's `causal/` folder; `None` without a completed causal stage.
pub fn summarise(run: &RunDir) -> Result<Option<CausalSummary>, ReportError> {
    let manifest = glassbox_data::Manifest::load_or_default(run)?;
    if !manifest.stages.contains_key("causal") {
        return Ok(None);
    }
    let dir = run.path("causal");
    let tests = read_tests(&dir)?;
    let curves = read_curves(&dir)?;
    let mut findings: Vec<CausalFinding> = Vec::new();
    for t in &tests {
        if findings.iter().any(|f| f.finding == t.finding) {
            continue;
        }
        let own: Vec<&TestRow> = tests.iter().filter(|x| x.finding == t.finding).collect();
        let supported: Vec<&&TestRow> = own
            .iter()
            .filter(|x| x.verdict == Verdict::Supported)
            .collect();
        let ran = own.iter().find(|x| x.verdict == Verdict::NotSupported);
        let (verdict, reason) = if let Some(s) = supported.first() {
            (Verdict::Supported, format!("{}: {}", s.test, s.reason))
        } else if let Some(n) = ran {
            (Verdict::NotSupported, format!("{}: {}", n.test, n.reason))
        } else {
            (Verdict::NotTestable, own[0].reason.clone())
        };
        findings.push(CausalFinding {
            finding: t.finding.clone(),
            verdict,
            tests: own.len(),
            supported: supported.len(),
            reason,
        });
    }
    Ok(Some(CausalSummary {
        findings,
        tests,
        curves,
    }))
}

/// ` — causally supported (2 of 5 tests …)` for a finding, or nothing when it was not tested.
pub(crate) fn suffix(summary: Option<&CausalSummary>, finding: &str) -> String {
    let Some(f) = summary.and_then(|s| s.findings.iter().find(|f| f.finding == finding)) else {
        return String::new();
    };
    match f.verdict {
        Verdict::Supported => format!(
            " — causally supported ({} of {} tests; {})",
            f.supported, f.tests, f.reason
        ),
        Verdict::NotSupported => format!(" — not supported causally ({})", f.reason),
        Verdict::NotTestable => format!(" — causally not testable ({})", f.reason),
    }
}

/// One sentence for the headline findings.
pub fn headline(c: &CausalSummary) -> Option<String> {
    if c.findings.is_empty() {
        return None;
    }
    let count = |v: Verdict| c.findings.iter().filter(|f| f.verdict == v).count();
    Some(format!(
        "causal tests: {} of {} findings causally supported, {} not supported, {} not testable ({} tests, Holm-corrected against random directions)",
        count(Verdict::Supported),
        c.findings.len(),
        count(Verdict::NotSupported),
        count(Verdict::NotTestable),
        c.tests.len()
    ))
}

pub(crate) const HEADER: [&str; 7] = [
    "finding",
    "test",
    "readout",
    "effect [95% CI]",
    "random (mean ± sd)",
    "p (Holm)",
    "verdict",
];

pub(crate) fn row(t: &TestRow) -> [String; 7] {
    let number = |v: f64| {
        if v.is_finite() {
            format!("{v:+.3}")
        } else {
            "–".into()
        }
    };
    let mut verdict = t.verdict.as_str().to_owned();
    if let (Some(after), Some(chance)) = (t.accuracy_after, t.chance) {
        verdict.push_str(&format!(
            " (refit after erasure {after:.3} vs chance {chance:.3})"
        ));
    }
    [
        t.finding.clone(),
        t.test.clone(),
        t.readout.clone(),
        format!(
            "{} [{}, {}]",
            number(t.effect),
            number(t.ci_low),
            number(t.ci_high)
        ),
        format!("{} ± {:.3}", number(t.random_mean), t.random_sd),
        if t.p_holm.is_finite() {
            format!("{:.1e}", t.p_holm)
        } else {
            "–".into()
        },
        verdict,
    ]
}

pub(crate) const DEFINITIONS: &str = "Steering adds α·n·v at every real position of the finding's hook (v the unit direction, n the hook's median activation norm, α on the grid) and reads a later probe of the same label, the TCAV target or the next-token distribution; the effect is the dose-response slope Σα·Δ/Σα² per example, averaged (95% bootstrap CI). Erasure applies LEACE (fitted on the probe's training rows) and reads the later probe's log-probability of each example's own class; it counts only when a probe refitted on erased rows drops to chance. Each effect is compared with the same intervention along random directions of equal norm (random erasers of equal rank): t = (effect − mean)/(sd·√(1+1/K)), Student t with K − 1 degrees of freedom, Holm-adjusted over every test of the run. A finding is causally supported when any of its tests is significant in the claimed direction. Figures come from `causal/tests.parquet` and `causal/curves.parquet`.";

/// The HTML section.
pub(crate) fn section_html(c: &CausalSummary) -> String {
    let mut h = String::from("<section id=\"causal\">\n<h2>Causal tests</h2>\n");
    if let Some(line) = headline(c) {
        h.push_str(&format!("<p>{}</p>\n", inline(&line)));
    }
    h.push_str("<table><thead><tr>");
    for col in HEADER {
        h.push_str(&format!("<th>{}</th>", escape(col)));
    }
    h.push_str("</tr></thead><tbody>\n");
    for t in &c.tests {
        let cells: String = row(t)
            .iter()
            .map(|cell| format!("<td>{}</td>", escape(cell)))
            .collect();
        let class = if t.verdict == Verdict::Supported {
            " class=\"significant\""
        } else {
            ""
        };
        h.push_str(&format!("<tr{class}>{cells}</tr>\n"));
    }
    h.push_str("</tbody></table>\n<div class=\"curves\">\n");
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for p in &c.curves {
        if seen.contains(&(p.finding.as_str(), p.test.as_str())) {
            continue;
        }
        seen.push((&p.finding, &p.test));
        let points: Vec<&CurveRow> = c
            .curves
            .iter()
            .filter(|q| q.finding == p.finding && q.test == p.test)
            .collect();
        h.push_str(&format!(
            "<figure>{}<figcaption>{}</figcaption></figure>\n",
            curve_svg(&points),
            escape(&format!("{} — {}", p.finding, p.test))
        ));
    }
    h.push_str(&format!(
        "</div>\n<p class=\"note\">{}</p>\n</section>\n",
        inline(DEFINITIONS)
    ));
    h
}

/// The Markdown section.
pub(crate) fn markdown(c: &CausalSummary) -> String {
    let mut md = String::from("\n## Causal tests\n\n");
    if let Some(line) = headline(c) {
        md.push_str(&format!("{line}.\n\n"));
    }
    md.push_str(&format!(
        "| {} |\n|{}\n",
        HEADER.join(" | "),
        "---|".repeat(HEADER.len())
    ));
    for t in &c.tests {
        let cells: Vec<String> = row(t).iter().map(|cell| cell.replace('|', "\\|")).collect();
        md.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    md.push_str(&format!("\n{DEFINITIONS}\n"));
    md
}

/// A dose-response curve: the finding's mean change per α with its CI (dark), the random
/// directions' mean ± 2 sd (grey band).
pub(crate) fn curve_svg(points: &[&CurveRow]) -> String {
    const W: f64 = 300.0;
    const H: f64 = 180.0;
    const PAD: f64 = 34.0;
    let mut points: Vec<&CurveRow> = points.to_vec();
    points.sort_by(|a, b| a.alpha.total_cmp(&b.alpha));
    let finite = |v: f64| if v.is_finite() { Some(v) } else { None };
    let values: Vec<f64> = points
        .iter()
        .flat_map(|p| {
            [
                p.ci_low,
                p.ci_high,
                p.random_mean - 2.0 * p.random_sd,
                p.random_mean + 2.0 * p.random_sd,
                0.0,
            ]
        })
        .filter_map(finite)
        .collect();
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let span = (hi - lo).max(1e-12);
    let (amin, amax) = (
        points.first().map_or(-1.0, |p| p.alpha),
        points.last().map_or(1.0, |p| p.alpha),
    );
    let x = |a: f64| PAD + (W - 2.0 * PAD) * (a - amin) / (amax - amin).max(1e-12);
    let y = |v: f64| H - PAD - (H - 2.0 * PAD) * (v - lo) / span;
    let path = |f: &dyn Fn(&CurveRow) -> f64| -> String {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.alpha), y(f(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let band: String = points
        .iter()
        .map(|p| {
            format!(
                "{:.1},{:.1}",
                x(p.alpha),
                y(p.random_mean + 2.0 * p.random_sd)
            )
        })
        .chain(points.iter().rev().map(|p| {
            format!(
                "{:.1},{:.1}",
                x(p.alpha),
                y(p.random_mean - 2.0 * p.random_sd)
            )
        }))
        .collect::<Vec<_>>()
        .join(" ");
    let ci: String = points
        .iter()
        .map(|p| {
            format!(
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#1f4e79\"/>",
                y(p.ci_low),
                y(p.ci_high),
                x = x(p.alpha)
            )
        })
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"steering dose-response\">\
<polygon points=\"{band}\" fill=\"#ddd\"/>\
<line x1=\"{PAD}\" x2=\"{x1}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#999\" stroke-dasharray=\"3 3\"/>\
<polyline points=\"{own}\" fill=\"none\" stroke=\"#1f4e79\" stroke-width=\"2\"/>{ci}\
<text x=\"{PAD}\" y=\"{yb}\" font-size=\"10\">α {amin}</text><text x=\"{x1}\" y=\"{yb}\" font-size=\"10\" text-anchor=\"end\">α {amax}</text>\
<text x=\"2\" y=\"{ty:.1}\" font-size=\"10\">{hi:.2}</text><text x=\"2\" y=\"{by:.1}\" font-size=\"10\">{lo:.2}</text></svg>",
        x1 = W - PAD,
        y0 = y(0.0),
        own = path(&|p| p.effect),
        yb = H - 8.0,
        ty = y(hi) + 4.0,
        by = y(lo),
    )
}
