//! A probe finding in words and tables, shared by the Markdown and HTML reports: where each
//! label is best decoded and how sure, its top neurons, the per-hook table and its definitions.

use crate::{md, LabelFinding};
use glassbox_probes::ProbeResult;

/// One sentence per label, shared by the Markdown and HTML reports.
pub(crate) fn finding_sentence(f: &LabelFinding) -> String {
    let what = if f.metric == "r2" {
        "numeric".to_owned()
    } else {
        format!("{} classes", f.n_classes)
    };
    let scope = if f.level == "token" {
        "token level".to_owned()
    } else {
        format!("sequence level, {} pooling", f.pool)
    };
    let baseline = if f.metric == "r2" {
        "predicting the training mean"
    } else {
        "majority baseline"
    };
    let selectivity_ci = f
        .selectivity_ci
        .map(|(lo, hi)| format!(" [95% CI {lo:.3}, {hi:.3}]"))
        .unwrap_or_default();
    let standing = standing_clause(f);
    // No interval without bootstrap resamples (`bootstrap = 0`).
    let score_ci = if f.best_ci_low.is_finite() && f.best_ci_high.is_finite() {
        format!(" [95% CI {:.3}, {:.3}]", f.best_ci_low, f.best_ci_high)
    } else {
        " (no CI: bootstrap = 0)".to_owned()
    };
    format!(
        "{} ({what}, {scope}) is best decoded at {}: {} {:.3}{score_ci} against {baseline} {:.3}; control task {:.3}, selectivity {:.3}{selectivity_ci}{standing}{}.",
        md::code(&f.label),
        md::code(&f.best_hook.to_string()),
        f.metric,
        f.best_score,
        f.majority,
        f.control_score,
        f.selectivity,
        caveat(f, baseline),
    )
}

/// What the intervals say against the finding, if anything: a best hook whose score interval
/// reaches its baseline decodes nothing, and one whose selectivity interval reaches 0 is no
/// more selective than the control task (Hewitt & Liang 2019) — the causal verdict that may
/// follow is then about a direction, not about a decodable label.
fn caveat(f: &LabelFinding, baseline: &str) -> String {
    if f.best_ci_low.is_finite() && f.best_ci_low <= f.majority {
        return format!(
            " — not above the {baseline} (its 95% CI reaches it): no evidence the label is decodable here"
        );
    }
    match f.selectivity_ci {
        Some((low, _)) if low <= 0.0 => " — no more selective than the control task (the selectivity CI reaches 0): a weak finding".to_owned(),
        _ => String::new(),
    }
}

/// How sure "best decoded at" is, when the probe stage compared the hooks: how often the best
/// hook came out best over the test resamples, and which hooks its lead does not exclude.
fn standing_clause(f: &LabelFinding) -> String {
    let Some(share) = f
        .by_hook
        .iter()
        .find(|r| r.hook == f.best_hook)
        .and_then(|r| r.best_share)
    else {
        return String::new();
    };
    let close: Vec<String> = f
        .by_hook
        .iter()
        .filter(|r| r.vs_best_ci_low.is_some_and(|lo| lo <= 0.0))
        .map(|r| md::code(&r.hook.to_string()))
        .collect();
    let share = format!("; best in {:.0}% of test resamples", 100.0 * share);
    const SHOWN: usize = 4;
    match close.len() {
        0 => format!(
            "{share}, ahead of every other hook (simultaneous 95% CIs of its lead exclude 0)"
        ),
        n => {
            let mut named = close[..n.min(SHOWN)].join(", ");
            if n > SHOWN {
                named.push_str(&format!(" and {} more", n - SHOWN));
            }
            format!(
                "{share}, not told apart from {named} (simultaneous 95% CIs of its lead reach 0)"
            )
        }
    }
}

/// A probe's selectivity interval, when its table has one.
pub(crate) fn selectivity_ci(r: &ProbeResult) -> Option<(f64, f64)> {
    r.selectivity_ci_low.zip(r.selectivity_ci_high)
}

/// The top neurons of a label's probe at its best hook, with the top-k check, in one sentence.
pub(crate) fn neuron_sentence(f: &LabelFinding) -> Option<String> {
    if f.top_neurons.is_empty() {
        return None;
    }
    let units: Vec<String> = f
        .top_neurons
        .iter()
        .take(5)
        .map(|n| format!("{} ({:+.3})", n.unit, n.weight))
        .collect();
    let check = f
        .top_k
        .iter()
        .find(|t| t.k == 5)
        .map(|t| {
            format!(
                "; those 5 units alone give accuracy {:.3} against {:.3} for 5 random units",
                t.top_accuracy, t.random_accuracy
            )
        })
        .unwrap_or_default();
    Some(format!(
        "Top neurons of the {} probe at {} (elastic-net rank, weight): {}{check}.",
        md::code(&f.label),
        md::code(&f.best_hook.to_string()),
        units.join(", ")
    ))
}

/// Column headers of the per-hook probe table, shared by the Markdown and HTML reports.
pub(crate) fn probe_table_header(metric: &str) -> [String; 9] {
    [
        "hook".into(),
        format!("{metric} [95% CI]"),
        "behind the best [95% CI]".into(),
        "macro-F1".into(),
        "majority".into(),
        "control".into(),
        "selectivity [95% CI]".into(),
        "MDL compression".into(),
        "n_test".into(),
    ]
}

/// One probe's row of that table (text, unescaped; the hook is cell 0).
pub(crate) fn probe_table_row(r: &ProbeResult) -> [String; 9] {
    [
        r.hook.to_string(),
        match r.score_ci() {
            Some((lo, hi)) => format!("{:.3} [{lo:.3}, {hi:.3}]", r.score),
            None => format!("{:.3}", r.score),
        },
        match (r.vs_best_ci_low.zip(r.vs_best_ci_high), r.best_share) {
            _ if r.tied_with_best() => "tied on every resample".to_owned(),
            (Some((lo, hi)), _) => format!("[{lo:.3}, {hi:.3}]"),
            (None, Some(share)) => format!("best in {:.0}%", 100.0 * share),
            (None, None) => "–".to_owned(),
        },
        r.f1.map_or("–".to_owned(), |v| format!("{v:.3}")),
        format!("{:.3}", r.majority),
        format!("{:.3}", r.control_score),
        match selectivity_ci(r) {
            Some((lo, hi)) => format!("{:.3} [{lo:.3}, {hi:.3}]", r.selectivity),
            None => format!("{:.3}", r.selectivity),
        },
        r.mdl_compression
            .map_or("–".to_owned(), |v| format!("{v:.2}")),
        r.n_test.to_string(),
    ]
}

pub(crate) const DEFINITIONS: &str = "Scores are on a seeded, stratified held-out test split; the L2 strength is chosen on a separate validation split. Accuracy CIs over independent test rows are Wilson score intervals (60 of 60 right: [0.940, 1.000]; a bootstrap would collapse to [1.000, 1.000]); other CIs are expanded percentile bootstraps over test rows (Hesterberg 2015: the percentiles widened to Student's t width for few rows or texts, 1.9% and 98.1% at 30). Token-level splits keep every token of a text in one part and their CIs resample test texts (cluster bootstrap), unless the run's config sets `split_by = \"token\"` under `[probe]`; `split_by = \"data\"` takes the parts from the data set's `split` column. The majority baseline always predicts the most frequent training class. The control task (Hewitt & Liang 2019) gives every word type (token level) or text (sequence level) a random label with the same label distribution; selectivity = score − control score, its CI a paired bootstrap (probe and control scored on the same resampled test rows). MDL compression (when run) is the uniform code length over the online code length (Voita & Titov 2020); token rows split by text are sent whole text by whole text. Behind the best: a paired bootstrap interval of the best hook's score minus this hook's, every hook scored on the same resampled test rows (texts), simultaneous at 95% over every pair of hooks (the largest |t| among all pairs, Romano & Wolf 2005), so that the best hook, the winner of this test set, is not called ahead of equally good hooks by chance; an interval that reaches 0 means the test set does not tell the hook apart from the best; the best hook's cell gives the share of resamples in which it scores highest; the chart draws the hooks behind the best hollow. Figures come from `probes/results.parquet`.";

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(ci_low: f64, selectivity_ci: (f64, f64)) -> LabelFinding {
        LabelFinding {
            label: "topic".into(),
            level: "sequence".into(),
            pool: "mean".into(),
            metric: "accuracy".into(),
            n_classes: 3,
            best_hook: glassbox_data::HookPoint::ResidPost(1),
            best_score: 0.6,
            best_ci_low: ci_low,
            best_ci_high: 0.7,
            majority: 0.4,
            control_score: 0.3,
            selectivity: 0.3,
            selectivity_ci: Some(selectivity_ci),
            by_hook: Vec::new(),
            top_neurons: Vec::new(),
            top_k: Vec::new(),
        }
    }

    /// A finding whose intervals reach its baseline or the control task says so; one clear of
    /// both says nothing more.
    #[test]
    fn findings_the_intervals_do_not_support_say_so() {
        let clear = finding_sentence(&finding(0.5, (0.1, 0.4)));
        assert!(
            !clear.contains(" — not above") && !clear.contains("no more selective"),
            "{clear}"
        );
        let baseline = finding_sentence(&finding(0.35, (0.1, 0.4)));
        assert!(
            baseline.contains("not above the majority baseline"),
            "{baseline}"
        );
        let control = finding_sentence(&finding(0.5, (-0.05, 0.4)));
        assert!(
            control.contains("no more selective than the control task"),
            "{control}"
        );
    }
}
