//! How a dictionary finding is written: its headline (reconstruction against PCA, dead and
//! dense latents, the spliced model's loss, with what makes a number unreadable said beside
//! it), the sparse-probing and feature-absorption sentences, plain statements about its most
//! label-aligned units, and the report's Markdown and HTML sections built from them.

use crate::dictionary::{page_path, DictionaryFinding, ListedUnit};
use crate::markup::escape;

pub(crate) fn number(v: Option<&serde_json::Value>, digits: usize) -> String {
    v.and_then(|v| v.as_f64())
        .map_or("–".to_owned(), |x| format!("{x:.digits$}"))
}

/// The feature-absorption sentence of an SAE, from `metrics.json`'s `absorption` summary.
pub fn absorption_line(f: &DictionaryFinding) -> Option<String> {
    let block = f.metrics.as_ref()?.get("absorption")?;
    let s = block.get("summary")?;
    let gate = number(block.get("options").and_then(|o| o.get("min_probe_f1")), 2);
    let count = |k: &str| s.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let (measured, with_tokens) = (count("letters_measured"), count("letters_with_tokens"));
    if measured == 0 {
        return Some(format!(
            "Feature absorption (first letter, `absorption.parquet`): not measurable here — none of the {with_tokens} letters with enough word tokens has a ground-truth probe reaching F1 {gate} on held-out words (best {}); the model or the run's text does not carry first letters linearly at this hook.",
            number(s.get("best_probe_f1"), 2)
        ));
    }
    let few = if measured < count("saebench_min_letters") {
        format!(
            " (SAEBench averages over at least {}; treat it as indicative)",
            count("saebench_min_letters")
        )
    } else {
        String::new()
    };
    Some(format!(
        "Feature absorption (first letter, `absorption.parquet`): over {measured} of {with_tokens} letters{few}, mean absorption fraction {}, full absorption on {} of the tokens the probe gets right, {} main latents per letter.",
        number(s.get("mean_absorption_fraction"), 3),
        percent(s.get("mean_full_absorption_rate")),
        number(s.get("mean_main_latents"), 1),
    ))
}

/// The one-line headline of an SAE (for the top findings and the Markdown summary).
pub fn headline(f: &DictionaryFinding) -> Option<String> {
    let m = f.metrics.as_ref()?;
    let sae = m.get("sae")?;
    let pca = m.get("pca_baseline").filter(|p| !p.is_null());
    // A transcoder predicts its output hook from its input's rows and stands in for the MLP.
    let (what, with) = match f.input_hook {
        Some(_) => ("Transcoder", "with the transcoder for the MLP"),
        None => ("SAE at", "with the SAE"),
    };
    let splice = m
        .get("splice")
        .filter(|s| !s.is_null())
        .map(|s| {
            let ce = |k: &str| s.get(k).and_then(serde_json::Value::as_f64);
            // The ratio's denominator is what zero-ablation costs; where it costs nothing (or
            // helps, as on random weights) the ratio says nothing about the dictionary.
            let meaningless = match (ce("ce_zero"), ce("ce_clean")) {
                (Some(zero), Some(clean)) if zero <= clean => {
                    " — not a meaningful ratio here: zero-ablating the hook does not raise the loss"
                }
                _ => "",
            };
            format!(
                "; spliced into the model it recovers {} of the next-token loss (CE {} clean, {} {with}, {} zero-ablated; KL {} nats){meaningless}",
                percent(s.get("ce_loss_recovered")),
                number(s.get("ce_clean"), 3),
                number(s.get("ce_sae"), 3),
                number(s.get("ce_zero"), 3),
                number(s.get("kl_sae"), 3)
            )
        })
        .unwrap_or_default();
    // An SAE that reconstructs no better than the mean activation is not a dictionary to read.
    let useless = match sae
        .get("explained_variance")
        .and_then(serde_json::Value::as_f64)
    {
        Some(ev) if ev <= 0.0 => {
            let steps = m
                .get("training")
                .and_then(|t| t.get("steps"))
                .and_then(serde_json::Value::as_u64)
                .map(|n| format!(" after {n} optimiser steps"))
                .unwrap_or_default();
            format!("; with explained variance ≤ 0 it is no better than the mean activation{steps}: raise train_tokens (or lower batch_size) before reading its features")
        }
        _ => String::new(),
    };
    Some(format!(
        "{what} `{}` ({} latents): explained variance {}{} on held-out tokens{} at L0 {}; {} of latents dead, {} dense{splice}{useless}",
        f.title(),
        f.units,
        number(sae.get("explained_variance"), 3),
        ev_interval(sae).map(|(lo, hi)| format!(" [95% CI {lo:.3}, {hi:.3}]")).unwrap_or_default(),
        pca.map(|p| format!(
            " (PCA with as many dimensions: {}{})",
            number(p.get("explained_variance"), 3),
            against_pca(m.get("sae_minus_pca"))
        ))
        .unwrap_or_default(),
        number(sae.get("l0"), 1),
        percent(sae.get("dead_fraction")),
        percent(sae.get("dense_fraction")),
    ))
}

/// An explained variance's interval over the evaluation texts, when `metrics.json` has one.
pub(crate) fn ev_interval(metrics: &serde_json::Value) -> Option<(f64, f64)> {
    let ci = metrics.get("explained_variance_ci")?.as_array()?;
    Some((ci.first()?.as_f64()?, ci.get(1)?.as_f64()?))
}

/// "; the SAE ahead by 0.246 [95% CI …]" from the paired SAE − PCA difference.
fn against_pca(difference: Option<&serde_json::Value>) -> String {
    let Some(d) = difference.filter(|d| !d.is_null()) else {
        return String::new();
    };
    let get = |k: &str| d.get(k).and_then(serde_json::Value::as_f64);
    let (Some(x), Some(lo), Some(hi)) = (get("explained_variance"), get("ci_low"), get("ci_high"))
    else {
        return String::new();
    };
    let ci = format!("[paired 95% CI {lo:.3}, {hi:.3}]");
    if lo > 0.0 {
        format!("; the SAE ahead by {x:.3} {ci}")
    } else if hi < 0.0 {
        format!("; the SAE behind by {:.3} {ci}", -x)
    } else {
        format!("; not told apart from the SAE: difference {x:.3} {ci}")
    }
}

/// The sparse-probing sentence of an SAE (k features against k neurons at the smallest k).
pub fn sparse_probing_line(f: &DictionaryFinding) -> Option<String> {
    crate::sparse_probing::headline(&f.hook.to_string(), f.sparse_probing.as_ref()?)
}

/// Plain statements about the `n` most label-aligned units of a finding.
pub fn unit_findings(
    f: &DictionaryFinding,
    n: usize,
    causal: Option<&crate::causal::CausalSummary>,
) -> Vec<String> {
    let unit = f.unit();
    f.listed
        .iter()
        .filter(|u| glassbox_concepts::explain::read::is_finding(&u.row))
        .take(n)
        .map(|u| {
            let r = &u.row;
            let tokens: Vec<String> = r.top_tokens.iter().take(3).map(|t| crate::md::code(t)).collect();
            let (label, class) = (
                r.top_label.as_deref().unwrap_or_default(),
                r.top_class.as_deref().unwrap_or_default(),
            );
            let id = glassbox_concepts::causal::unit_finding(unit, r.unit, f.hook, label, class);
            let p = r
                .top_label_p_holm
                .map(|p| format!(", p_holm {}", p_value(p)))
                .unwrap_or_default();
            format!(
                "{unit} {} at {} tracks {} = {} (r {:.2}{p}; active on {:.1}% of tokens), top tokens {}{}",
                r.unit,
                crate::md::code(&f.hook.to_string()),
                crate::md::code(label),
                crate::md::code(class),
                r.top_label_correlation.unwrap_or_default(),
                100.0 * r.density,
                tokens.join(", "),
                crate::causal::suffix(causal, &id)
            )
        })
        .collect()
}

/// A p-value in scientific notation; one that underflowed to 0 as a bound.
fn p_value(p: f64) -> String {
    if p < 1e-300 {
        "< 1e-300".to_owned()
    } else {
        format!("{p:.1e}")
    }
}

/// An explained variance with its interval, for a table cell.
fn with_interval(metrics: Option<&serde_json::Value>) -> String {
    let value = number(metrics.and_then(|m| m.get("explained_variance")), 3);
    match metrics.and_then(ev_interval) {
        Some((lo, hi)) => format!("{value} [{lo:.3}, {hi:.3}]"),
        None => value,
    }
}

pub(crate) fn percent(v: Option<&serde_json::Value>) -> String {
    v.and_then(|v| v.as_f64())
        .map_or("–".to_owned(), |x| format!("{:.1}%", 100.0 * x))
}

pub(crate) fn unit_line(u: &ListedUnit, unit: &str) -> String {
    let r = &u.row;
    let mut parts = vec![format!(
        "{unit} {} · density {:.2}% · max {:.2}",
        r.unit,
        100.0 * r.density,
        r.max_activation
    )];
    if let (Some(l), Some(c), Some(x)) = (&r.top_label, &r.top_class, r.top_label_correlation) {
        match r.top_label_p_holm {
            Some(p) => parts.push(format!("`{l}` = `{c}` (r {x:.2}, p_holm {})", p_value(p))),
            None => parts.push(format!("`{l}` = `{c}` (r {x:.2})")),
        }
    }
    if let (Some(d), Some(c)) = (&r.best_direction, r.best_direction_cosine) {
        parts.push(format!("closest direction `{d}` (cos {c:.2})"));
    }
    parts.join(" · ")
}

/// The Markdown section.
pub fn markdown(findings: &[DictionaryFinding]) -> String {
    if findings.is_empty() {
        return String::new();
    }
    let mut md = String::from("\n## Sparse dictionary features and neurons\n\n");
    for f in findings {
        let unit = f.unit();
        md.push_str(&format!(
            "### `{}`: {} {}\n\n",
            f.title(),
            f.units,
            f.kind.replace('_', " ")
        ));
        if let Some(h) = headline(f) {
            md.push_str(&format!("{h}.\n\n"));
        }
        if let Some(s) = &f.sparse_probing {
            md.push_str(&crate::sparse_probing::markdown(s));
        }
        if let Some(line) = absorption_line(f) {
            md.push_str(&format!("{line}\n\n"));
        }
        for u in f.listed.iter().take(10) {
            let tokens = u
                .row
                .top_tokens
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ");
            md.push_str(&format!("- {}; top tokens {tokens}\n", unit_line(u, unit)));
        }
        md.push('\n');
    }
    md.push_str(METRIC_NOTE);
    md.push('\n');
    if findings.iter().any(|f| f.sparse_probing.is_some()) {
        md.push('\n');
        md.push_str(crate::sparse_probing::NOTE);
        md.push('\n');
    }
    md
}

pub(crate) const METRIC_NOTE: &str = "Explained variance = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² over held-out tokens (x̄: their per-dimension mean); L0: mean active latents per token; dead: never active on the evaluation tokens; dense: active on more than 10% of them. Every definition is in each hook's `metrics.json`; every feature's and neuron's examples, label correlations and direction cosines are in `dictionary/hook=<hook>/*.parquet`. Units are listed by their strongest correlation with a label class; a unit counts as tracking a label when that correlation is at least 0.3 and significant after Holm's correction over every unit × class of its table (Student's t on the rows, or on the texts for a sequence-level label, which is the same on every token of a text).";

/// The HTML section (all run-supplied text escaped).
pub fn html(findings: &[DictionaryFinding]) -> String {
    if findings.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<section id=\"dictionary\">\n<h2>Sparse dictionary features and neurons</h2>\n",
    );
    for f in findings {
        let unit = f.unit();
        h.push_str(&format!(
            "<h3><code>{}</code>: {} {}</h3>\n",
            escape(&f.title()),
            f.units,
            escape(&f.kind.replace('_', " "))
        ));
        if let Some(m) = &f.metrics {
            let sae = m.get("sae");
            let pca = m.get("pca_baseline").filter(|p| !p.is_null());
            let get = |k: &str| sae.and_then(|s| s.get(k));
            h.push_str("<table class=\"metrics\"><thead><tr><th>model</th><th>L0</th><th>explained variance [95% CI]</th><th>FVU</th><th>normalised MSE</th><th>cosine</th><th>dead</th><th>dense</th><th>tokens</th></tr></thead><tbody>\n");
            h.push_str(&format!(
                "<tr><td>SAE</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                number(get("l0"), 1),
                with_interval(sae),
                number(get("fvu"), 3),
                number(get("normalised_mse"), 3),
                number(get("cosine"), 3),
                percent(get("dead_fraction")),
                percent(get("dense_fraction")),
                number(get("tokens"), 0)
            ));
            if let Some(p) = pca {
                h.push_str(&format!(
                    "<tr><td>PCA baseline</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>–</td><td>–</td><td>{}</td></tr>\n",
                    number(p.get("l0"), 0),
                    with_interval(Some(p)),
                    number(p.get("fvu"), 3),
                    number(p.get("normalised_mse"), 3),
                    number(p.get("cosine"), 3),
                    number(p.get("tokens"), 0)
                ));
            }
            h.push_str("</tbody></table>\n");
            if let Some(s) = &f.sparse_probing {
                h.push_str(&crate::sparse_probing::html(s));
            }
            if let Some(line) = absorption_line(f) {
                h.push_str(&format!(
                    "<p class=\"absorption\">{}</p>\n",
                    crate::markup::inline(&line)
                ));
            }
            if let Some(line) =
                headline(f).filter(|_| m.get("splice").is_some_and(|s| !s.is_null()))
            {
                h.push_str(&format!(
                    "<p class=\"splice\">{}</p>\n",
                    crate::markup::inline(&line)
                ));
            }
        }
        h.push_str(&format!(
            "<ol class=\"units\" data-kind=\"{}\">\n",
            escape(&f.kind)
        ));
        for u in &f.listed {
            h.push_str(&format!(
                "<li class=\"unit\" data-unit=\"{}\"><div class=\"unit-head\"><a href=\"{}#{unit}-{}\">{}</a>: {}</div>\n",
                u.row.unit,
                escape(&page_path(f, u.row.unit)),
                u.row.unit,
                unit,
                crate::markup::inline(&unit_line(u, unit))
            ));
            for s in u.examples.iter().filter(|s| s.thumbnail.is_none()) {
                h.push_str(&crate::markup::snippet(
                    &s.tokens,
                    &s.activations,
                    s.center,
                    s.activation,
                ));
            }
            let images: String = u
                .examples
                .iter()
                .filter_map(|s| {
                    Some(format!(
                        "<img alt=\"example {} cell {}\" title=\"activation {:.3}\" width=\"{side}\" height=\"{side}\" src=\"data:image/jpeg;base64,{}\">",
                        s.example_id,
                        escape(s.tokens.get(s.center as usize).map_or("", String::as_str)),
                        s.activation,
                        s.thumbnail.as_ref()?,
                        side = crate::thumbnails::SIDE
                    ))
                })
                .collect();
            if !images.is_empty() {
                h.push_str(&format!("<div class=\"thumbs\">{images}</div>\n"));
            }
            h.push_str("</li>\n");
        }
        h.push_str("</ol>\n");
    }
    h.push_str(&format!(
        "<p class=\"note\">{}</p>\n</section>\n",
        crate::markup::inline(METRIC_NOTE)
    ));
    h
}

#[cfg(test)]
mod tests {
    use super::headline;
    use crate::dictionary::DictionaryFinding;
    use serde_json::json;

    fn finding(ev: f64, ce_zero: f64) -> DictionaryFinding {
        DictionaryFinding {
            hook: "blocks.1.hook_resid_post".parse().unwrap(),
            kind: "features".into(),
            input_hook: None,
            units: 128,
            metrics: Some(json!({
                "sae": {"explained_variance": ev, "l0": 25.8, "dead_fraction": 0.0, "dense_fraction": 0.1},
                "training": {"steps": 13},
                "splice": {"ce_clean": 8.4, "ce_sae": 8.43, "ce_zero": ce_zero,
                           "ce_loss_recovered": (ce_zero - 8.43) / (ce_zero - 8.4), "kl_sae": 0.7},
            })),
            sparse_probing: None,
            listed: Vec::new(),
        }
    }

    #[test]
    fn an_sae_no_better_than_the_mean_and_a_splice_that_cannot_be_read_are_said_so() {
        let line = headline(&finding(-0.003, 6.2)).unwrap();
        assert!(
            line.contains("no better than the mean activation after 13 optimiser steps")
                && line.contains("raise train_tokens"),
            "{line}"
        );
        assert!(line.contains("not a meaningful ratio here"), "{line}");
        let line = headline(&finding(0.8, 11.0)).unwrap();
        assert!(
            !line.contains("mean activation") && !line.contains("meaningful"),
            "{line}"
        );
    }
}
