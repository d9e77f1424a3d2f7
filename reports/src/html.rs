//! The self-contained HTML page. Every piece of run-supplied text is escaped.

use crate::{
    finding_sentence, probe_table_header, probe_table_row, svg, tcav_findings, tcav_row, Summary,
    DEFINITIONS, TCAV_DEFINITIONS, TCAV_HEADER,
};

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes, then renders `code` spans written with backticks.
pub(crate) fn inline(text: &str) -> String {
    escape(text)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_owned()
            }
        })
        .collect()
}

pub(crate) fn render(s: &Summary) -> String {
    let mut body = String::new();
    body.push_str("<h1>glassbox report</h1>\n");
    body.push_str(&findings_html(s));
    body.push_str("<h2>Linear probes</h2>\n<ul>\n");
    for f in &s.probes {
        body.push_str(&format!("<li>{}</li>\n", inline(&finding_sentence(f))));
    }
    body.push_str("</ul>\n");
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
    body.push_str(&format!("<p class=\"note\">{}</p>\n", inline(DEFINITIONS)));
    if !s.tcav.is_empty() {
        body.push_str("<section id=\"tcav\">\n<h2>TCAV</h2>\n<ul>\n");
        for line in tcav_findings(&s.tcav) {
            body.push_str(&format!("<li>{}</li>\n", inline(&line)));
        }
        body.push_str("</ul>\n");
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
    body.push_str(&crate::dictionary::html(&s.dictionary));
    body.push_str(&crate::provenance::html(&s.manifest, &s.provenance));
    page(&s.run, &body)
}

/// A self-contained page: inline style, no scripts; `title` is escaped here.
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>glassbox report — {}</title>\n<style>{}</style>\n</head>\n<body>\n{}</body>\n</html>\n",
        escape(title),
        STYLE,
        body
    )
}

/// A context window with each token shaded by the unit's activation on it (the example token
/// outlined; the exact value in its tooltip).
pub(crate) fn snippet(
    tokens: &[String],
    activations: &[f32],
    center: u32,
    activation: f32,
) -> String {
    let max = activations.iter().fold(0.0f32, |a, &b| a.max(b)).max(1e-6);
    let mut h = format!("<div class=\"snippet\" title=\"activation {activation:.3}\">");
    for (i, (t, a)) in tokens.iter().zip(activations).enumerate() {
        let alpha = (a.max(0.0) / max).min(1.0);
        let class = if i as u32 == center {
            " class=\"center\""
        } else {
            ""
        };
        // Inactive tokens (most of a window) carry no style or tooltip: pages of 100 units
        // with 20 windows each stay small.
        if *a == 0.0 {
            h.push_str(&format!("<span{class}>{}</span> ", escape(t)));
        } else {
            h.push_str(&format!(
                "<span{class} style=\"background:rgba(230,120,20,{alpha:.2})\" title=\"{a:.3}\">{}</span> ",
                escape(t)
            ));
        }
    }
    h.push_str("</div>\n");
    h
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

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
code{background:#f3f3f3;padding:0 .2em;border-radius:3px}\
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}\
td:first-child,th:first-child{text-align:left}dt{font-weight:600}dd{margin:0 0 .5rem 1rem}\
small{color:#666}figure{margin:1rem 0}figcaption{color:#555;font-size:.9rem}.note{color:#555}\
tr.significant td{background:#eef6ee}\
.unit{margin:.6rem 0}.unit-head{font-size:.95rem}.snippet{font-family:ui-monospace,monospace;font-size:.85rem;margin:.15rem 0 .15rem 1rem}\
.snippet span{padding:0 1px;border-radius:2px}.snippet span.center{outline:1px solid #b55}\
.unit-page{border-top:1px solid #ddd;margin-top:1rem}.bin{color:#777;font-size:.8rem;margin-left:1rem}.nav{color:#555}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<script>\"&'"), "&lt;script&gt;&quot;&amp;&#39;");
        assert_eq!(inline("a `<b>` c"), "a <code>&lt;b&gt;</code> c");
    }
}
