//! The report's main page, built from the sections (`dictionary`, `provenance`, the TCAV
//! chart) over the markup primitives of `markup`. Every piece of run-supplied text is escaped.

use crate::markup::{escape, inline, page};
use crate::{
    probe_table_header, probe_table_row, svg, tcav_findings, tcav_row, Summary, DEFINITIONS,
    TCAV_DEFINITIONS, TCAV_HEADER,
};

pub(crate) fn render(s: &Summary) -> String {
    let mut body = String::new();
    body.push_str("<h1>glassbox report</h1>\n");
    body.push_str(&findings_html(s));
    body.push_str("<h2>Linear probes</h2>\n");
    if s.probes.is_empty() {
        body.push_str(&format!("<p>{}</p>\n", inline(crate::NO_PROBES)));
    } else {
        body.push_str("<ul>\n");
    }
    for f in &s.probes {
        body.push_str(&format!("<li>{}</li>\n", inline(&crate::probe_line(f, s))));
    }
    if !s.probes.is_empty() {
        body.push_str("</ul>\n");
    }
    for f in &s.probes {
        body.push_str(&format!(
            "<h3>{}</h3>\n<figure>{}<figcaption>Held-out probe {} by hook (solid, 95% CI band) against the control task (dotted) and the majority baseline (dashed).</figcaption></figure>\n",
            inline(&format!(
                "`{}` ({})",
                f.label,
                if f.level == "token" { "token level".to_owned() } else { format!("{} pooling", f.pool) }
            )),
            svg::accuracy_chart(f),
            escape(&f.metric)
        ));
        let header: String = probe_table_header(&f.metric)
            .iter()
            .map(|h| format!("<th>{}</th>", escape(h)))
            .collect();
        body.push_str(&format!("<table><thead><tr>{header}</tr></thead><tbody>\n"));
        for r in &f.by_hook {
            let cells: String = probe_table_row(r)
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        format!("<td><code>{}</code></td>", escape(c))
                    } else {
                        format!("<td>{}</td>", escape(c))
                    }
                })
                .collect();
            body.push_str(&format!("<tr>{cells}</tr>\n"));
        }
        body.push_str("</tbody></table>\n");
        if let Some(line) = crate::neuron_sentence(f) {
            body.push_str(&format!("<p class=\"neurons\">{}</p>\n", inline(&line)));
        }
    }
    if !s.probes.is_empty() {
        body.push_str(&format!("<p class=\"note\">{}</p>\n", inline(DEFINITIONS)));
    }
    if !s.tcav.is_empty() {
        body.push_str("<section id=\"tcav\">\n<h2>TCAV</h2>\n<ul>\n");
        for line in tcav_findings(&s.tcav, s.causal.as_ref()) {
            body.push_str(&format!("<li>{}</li>\n", inline(&line)));
        }
        body.push_str("</ul>\n");
        if !s.concept_strips.is_empty() {
            body.push_str("<h3>Concept sets</h3>\n");
            for c in &s.concept_strips {
                let images: String = c
                    .images
                    .iter()
                    .map(|t| format!("<img alt=\"{}\" width=\"{side}\" height=\"{side}\" src=\"data:image/jpeg;base64,{t}\">", escape(&c.name), side = crate::thumbnails::PAGE_SIDE))
                    .collect();
                body.push_str(&format!(
                    "<div class=\"thumbs\"><code>{}</code> {images}</div>\n",
                    escape(&c.name)
                ));
            }
        }
        for (target, rows) in crate::tcav_by_target(&s.tcav) {
            body.push_str(&format!(
                "<figure>{}<figcaption>{}</figcaption></figure>\n",
                crate::tcav_svg::tcav_chart(&target, &rows),
                inline(&format!("TCAV scores for `{target}` by concept and hook (bar: mean over random runs; whisker: ±1 sd of the concept runs; grey band: random-vs-random mean ±1 sd; `*` and dark bar: significant after Holm–Bonferroni correction)."))
            ));
        }
        body.push_str("<table><thead><tr>");
        for h in TCAV_HEADER {
            body.push_str(&format!("<th>{}</th>", escape(h)));
        }
        body.push_str("</tr></thead><tbody>\n");
        for r in &s.tcav {
            let cells: String = tcav_row(r)
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i < 3 {
                        format!("<td><code>{}</code></td>", escape(c))
                    } else {
                        format!("<td>{}</td>", escape(c))
                    }
                })
                .collect();
            let class = if r.significant {
                " class=\"significant\""
            } else {
                ""
            };
            body.push_str(&format!("<tr{class}>{cells}</tr>\n"));
        }
        body.push_str(&format!(
            "</tbody></table>\n<p class=\"note\">{}</p>\n</section>\n",
            inline(TCAV_DEFINITIONS)
        ));
    }
    body.push_str(&crate::dictionary_render::html(&s.dictionary));
    if let Some(p) = &s.patching {
        body.push_str(&crate::patching_html::section_html(p));
    }
    if let Some(c) = &s.causal {
        body.push_str(&crate::causal::section_html(c));
    }
    if let Some(a) = s.attributions.as_deref().filter(|a| !a.is_empty()) {
        body.push_str(&crate::attribution_summary::section_html(a));
    }
    if let Some(d) = &s.dissection {
        body.push_str(&crate::dissection::section_html(d));
    }
    body.push_str(&crate::provenance::html(&s.manifest, &s.provenance));
    page(&s.run, &body)
}

/// The ranked findings first: what an auditor reads before anything else.
fn findings_html(s: &Summary) -> String {
    let mut h =
        String::from("<section id=\"findings\">\n<h2>Findings</h2>\n<ol class=\"findings\">\n");
    for line in crate::ranked_findings(s) {
        h.push_str(&format!("<li>{}</li>\n", inline(&line)));
    }
    h.push_str("</ol>\n<p class=\"note\">Ranked: where each label is best decoded, significant TCAV results by effect, the SAE's fit against PCA, then what was tested and not found significant. <a href=\"#provenance\">Provenance</a> is at the end.</p>\n</section>\n");
    h
}
