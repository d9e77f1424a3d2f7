//! The sentences of a dictionary finding: its headline (reconstruction against PCA, dead and
//! dense latents, the spliced model's loss, with what makes a number unreadable said beside
//! it), the sparse-probing and feature-absorption sentences, and plain statements about its
//! most label-aligned units.

use crate::dictionary::{DictionaryFinding, ListedUnit};

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
            format!(" — no better than the mean activation{steps}: raise train_tokens (or lower batch_size) before reading its features")
        }
        _ => String::new(),
    };
    Some(format!(
        "{what} `{}` ({} latents): explained variance {} on held-out tokens{useless}{} at L0 {}; {} of latents dead, {} dense{splice}",
        f.title(),
        f.units,
        number(sae.get("explained_variance"), 3),
        pca.map(|p| format!(" (PCA with as many dimensions: {})", number(p.get("explained_variance"), 3)))
            .unwrap_or_default(),
        number(sae.get("l0"), 1),
        percent(sae.get("dead_fraction")),
        percent(sae.get("dense_fraction")),
    ))
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
        .filter(|u| {
            u.row
                .top_label_correlation
                .is_some_and(|r| r >= glassbox_concepts::explain::read::FINDING_CORRELATION)
        })
        .take(n)
        .map(|u| {
            let r = &u.row;
            let tokens: Vec<String> = r.top_tokens.iter().take(3).map(|t| crate::md::code(t)).collect();
            let (label, class) = (
                r.top_label.as_deref().unwrap_or_default(),
                r.top_class.as_deref().unwrap_or_default(),
            );
            let id = glassbox_concepts::causal::unit_finding(unit, r.unit, f.hook, label, class);
            format!(
                "{unit} {} at {} tracks {} = {} (r {:.2}; active on {:.1}% of tokens), top tokens {}{}",
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
        parts.push(format!("`{l}` = `{c}` (r {x:.2})"));
    }
    if let (Some(d), Some(c)) = (&r.best_direction, r.best_direction_cosine) {
        parts.push(format!("closest direction `{d}` (cos {c:.2})"));
    }
    parts.join(" · ")
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
