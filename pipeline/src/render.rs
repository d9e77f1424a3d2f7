//! What the CLI prints for each stage's result: the stages return rows, this module turns
//! them into the terminal's tables or JSON (`--json`), on stdout through `outln!` (a closed
//! pipe ends the program quietly).

use crate::stages::attribute::AttributeDone;
use crate::stages::causal::CausalDone;
use crate::stages::dictionary::DictionaryRun;
use crate::stages::extract::Extracted;
use crate::stages::extract_shard::ShardOutcome;
use crate::stages::patch::PatchDone;
use crate::stages::report::ReportDone;
use anyhow::Result;
use glassbox_concepts::dictionary::HookSummary;
use glassbox_concepts::ScoreRow;
use glassbox_data::RunDir;
use glassbox_probes::ProbeResult;

/// Prints the new rows of a stage (nothing when it was up to date).
fn rows<T: serde::Serialize>(
    rows: Option<&[T]>,
    json: bool,
    table: fn(&[T]) -> String,
) -> Result<()> {
    match rows {
        Some(rows) if json => crate::outln!("{}", serde_json::to_string_pretty(rows)?)?,
        Some(rows) => crate::out!("{}", table(rows))?,
        None => {}
    }
    Ok(())
}

/// The extract stage's one line.
pub fn extracted(done: Option<&Extracted>) -> Result<()> {
    if let Some(e) = done {
        crate::outln!(
            "extract: {} examples, {} {}, {} hook{} → {}",
            e.n_examples,
            e.n_units,
            e.unit,
            e.hooks,
            if e.hooks == 1 { "" } else { "s" },
            crate::run_location::run_name(&RunDir::new(&e.run))
        )?;
    }
    Ok(())
}

/// What a shard worker of `extract --shard` did.
/// What a shard worker of a parted stage (`gradients`, `attribute`, `patch`) did; `committed`
/// renders the stage's result when this worker committed the run.
pub fn shard_run<T>(
    stage: &str,
    outcome: &crate::stages::parted::ShardRun<T>,
    run: &RunDir,
    committed: impl FnOnce(&T) -> Result<()>,
) -> Result<()> {
    use crate::stages::parted::ShardRun;
    match outcome {
        ShardRun::UpToDate => Ok(()),
        ShardRun::Waiting {
            shard,
            parts,
            computed,
            waiting,
        } => {
            crate::outln!(
                "{stage} shard {shard}: {parts} parts ({computed} computed now, {} kept from an earlier attempt) → {}",
                parts.saturating_sub(*computed),
                crate::run_location::run_name(run)
            )?;
            waiting_for(waiting, run)
        }
        ShardRun::Committed {
            shard,
            parts,
            computed,
            done,
        } => {
            if let Some(shard) = shard {
                crate::outln!(
                    "{stage} shard {shard}: {parts} parts ({computed} computed now, {} kept from an earlier attempt); every shard complete, run committed",
                    parts.saturating_sub(*computed)
                )?;
            }
            committed(done)
        }
    }
}

/// The shards a finished worker leaves still to run, or that the run is complete.
fn waiting_for(waiting: &[glassbox_data::shards::ShardStatus], run: &RunDir) -> Result<()> {
    if waiting.is_empty() {
        crate::outln!("the run is complete (or another worker is committing it)")?;
        return Ok(());
    }
    let list: Vec<String> = waiting
        .iter()
        .map(|s| {
            format!(
                "{}/{} {} ({} of {} parts)",
                s.index,
                s.count,
                s.state(),
                s.parts_done,
                s.parts
            )
        })
        .collect();
    crate::outln!(
        "waiting for {}; the last shard to finish commits the run (`glassbox inspect {}` shows every shard)",
        list.join(", "),
        crate::run_location::run_name(run)
    )?;
    Ok(())
}

pub fn extract_shard(outcome: &ShardOutcome, run: &RunDir) -> Result<()> {
    match outcome {
        ShardOutcome::UpToDate => {}
        ShardOutcome::Done {
            shard,
            parts,
            resumed,
            waiting,
        } => {
            crate::outln!(
                "extract shard {shard}: {parts} parts written ({resumed} kept from an earlier attempt) → {}",
                crate::run_location::run_name(run)
            )?;
            waiting_for(waiting, run)?;
        }
        ShardOutcome::Committed {
            shard,
            parts,
            resumed,
            extracted: what,
        } => {
            crate::outln!(
                "extract shard {shard}: {parts} parts written ({resumed} kept from an earlier attempt); every shard complete, coverage checked, run committed"
            )?;
            extracted(Some(what))?;
        }
    }
    Ok(())
}

/// The probe stage's results.
pub fn probes(results: Option<&[ProbeResult]>, json: bool) -> Result<()> {
    rows(results, json, probe_table)
}

/// The TCAV stage's scores.
pub fn tcav(scores: Option<&[ScoreRow]>, json: bool) -> Result<()> {
    rows(scores, json, tcav_table)
}

/// The dictionary stage's summaries, or where its training paused.
pub fn dictionary(run: &DictionaryRun, json: bool) -> Result<()> {
    match run {
        DictionaryRun::UpToDate => Ok(()),
        DictionaryRun::Complete(summaries) => rows(Some(summaries), json, dictionary_table),
        DictionaryRun::Paused { hook, step, steps } => {
            eprintln!(
                "dictionary: SAE training at `{hook}` paused at step {step} of {steps}; run the command again without --force to resume"
            );
            Ok(())
        }
    }
}

/// The patching stage's largest effects.
pub fn patch(done: Option<&PatchDone>, json: bool) -> Result<()> {
    let Some(d) = done else { return Ok(()) };
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(d)?)?;
        return Ok(());
    }
    crate::outln!(
        "patch: {} pairs, {} patched runs → {}",
        d.pairs,
        d.runs,
        d.dir.display()
    )?;
    if let Some(rho) = d.atp_spearman {
        crate::outln!("attribution patching vs exact: Spearman ρ = {rho:.3}")?;
    }
    crate::outln!("largest mean normalised effects (1 = restores the clean metric):")?;
    for (hook, position, head, effect) in &d.top {
        let head = head.map_or(String::new(), |h| format!(" head {h}"));
        crate::outln!("  {hook} @ {position}{head}: {effect:+.3}")?;
    }
    Ok(())
}

/// The causal tests' verdicts.
pub fn causal(done: Option<&CausalDone>, json: bool) -> Result<()> {
    let Some(d) = done else { return Ok(()) };
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(d)?)?;
        return Ok(());
    }
    crate::outln!(
        "causal: {} tests: {} causally supported, {} not supported, {} not testable → {}",
        d.tests,
        d.supported,
        d.not_supported,
        d.not_testable,
        d.dir.display()
    )?;
    for (finding, test, verdict, effect, p_holm) in &d.rows {
        let numbers = if effect.is_finite() {
            format!(" (effect {effect:+.3}, p_holm {p_holm:.1e})")
        } else {
            String::new()
        };
        crate::outln!("  {finding} — {test}: {verdict}{numbers}")?;
    }
    Ok(())
}

/// Per hook: units labelled by Network Dissection and by which concepts.
pub fn dissect(done: Option<&crate::stages::dissect::DissectDone>, json: bool) -> Result<()> {
    let Some(d) = done else { return Ok(()) };
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(d)?)?;
        return Ok(());
    }
    crate::outln!(
        "dissect: {} images, concepts {} → {}",
        d.images,
        d.concepts.join(", "),
        d.dir.display()
    )?;
    for h in &d.hooks {
        let top: Vec<String> = h.concepts.iter().map(|(c, n)| format!("{c} {n}")).collect();
        crate::outln!(
            "  {}: {}/{} units labelled ({:.0} %){}{}",
            h.hook,
            h.labelled,
            h.units,
            100.0 * h.labelled as f64 / h.units.max(1) as f64,
            if top.is_empty() { "" } else { ": " },
            top.join(", ")
        )?;
    }
    Ok(())
}

/// The attribution methods ranked per target, with their sanity verdicts.
pub fn attribute(done: Option<&AttributeDone>, json: bool) -> Result<()> {
    let Some(d) = done else { return Ok(()) };
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(d)?)?;
        return Ok(());
    }
    crate::outln!("attribute: {} examples → {}", d.examples, d.dir.display())?;
    let fmt = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.3}"));
    let mut rows: Vec<_> = d.methods.iter().collect();
    rows.sort_by(|a, b| a.target.cmp(&b.target).then(a.rank.cmp(&b.rank)));
    let mut target = "";
    for r in rows {
        if r.target != target {
            target = &r.target;
            crate::outln!("target `{target}` (rank, method, faithfulness [95% CI], against the top, max-sensitivity, IG completeness error, sanity):")?;
        }
        let labels = r
            .label_randomized_spearman
            .map(|v| format!(", {} with the labels shuffled", fmt(Some(v))))
            .unwrap_or_default();
        let sanity = match r.sanity_passed {
            Some(true) => format!("passed (|ρ| {}{labels})", fmt(r.randomized_spearman)),
            Some(false) => format!(
                "FAILED (|ρ| {} with the model randomised{labels})",
                fmt(r.randomized_spearman)
            ),
            None => "not run".to_owned(),
        };
        let faithfulness = glassbox_reports::attribution::fmt_ci(
            r.faithfulness,
            r.faithfulness_ci_low.zip(r.faithfulness_ci_high),
        );
        let against =
            glassbox_reports::attribution::vs_top(r.rank, r.vs_top_ci_low.zip(r.vs_top_ci_high));
        crate::outln!(
            "  {}. {:<22} {:>23}  {:<32} {:>8} {:>8}  {sanity}",
            r.rank,
            r.method,
            faithfulness,
            against,
            fmt(r.max_sensitivity),
            fmt(r.completeness_error)
        )?;
        if let Some(warning) =
            glassbox_reports::attribution::completeness_warning(&r.method, r.completeness_error)
        {
            crate::outln!("     warning: {warning}")?;
        }
    }
    Ok(())
}

/// The report's location and its top findings.
pub fn report(done: &ReportDone) -> Result<()> {
    crate::outln!("report: {}", done.index.display())?;
    crate::outln!("top findings:")?;
    for line in glassbox_reports::top_findings(&done.summary, 3) {
        crate::outln!("  - {line}")?;
    }
    Ok(())
}

/// A fixed-width table of probe results for the terminal.
pub fn probe_table(results: &[ProbeResult]) -> String {
    let width = |f: fn(&ProbeResult) -> usize, min: usize| {
        results.iter().map(f).max().unwrap_or(min).max(min)
    };
    let hook_w = width(|r| r.hook.to_string().len(), 4);
    let label_w = width(|r| r.label.len() + r.level.len() + 3, 5);
    let mut out = format!(
        "{:<label_w$}  {:<hook_w$}  {:>6}  {:>15}  {:>15}  {:>6}  {:>8}  {:>7}  {:>11}  {:>7}\n",
        "label (level)",
        "hook",
        "metric",
        "score [95% CI]",
        "behind the best",
        "f1",
        "majority",
        "control",
        "selectivity",
        "n_test"
    );
    for r in results {
        let f1 = r.f1.map_or("-".to_owned(), |f| format!("{f:.3}"));
        // No interval without bootstrap resamples (`--bootstrap 0`).
        let ci = r
            .score_ci()
            .map_or("[-]".to_owned(), |(lo, hi)| format!("[{lo:.2},{hi:.2}]"));
        // The best hook's share of resamples, or the others' simultaneous interval of its lead.
        let standing = match (r.vs_best_ci_low.zip(r.vs_best_ci_high), r.best_share) {
            _ if r.tied_with_best() => "tied".to_owned(),
            (Some((lo, hi)), _) => format!("[{lo:.2},{hi:.2}]"),
            (None, Some(share)) => format!("best in {:.0}%", 100.0 * share),
            (None, None) => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<label_w$}  {:<hook_w$}  {:>6}  {:>5.3} {ci:<11}  {standing:>15}  {:>6}  {:>8.3}  {:>7.3}  {:>11.3}  {:>7}\n",
            format!("{} ({})", r.label, r.level),
            r.hook,
            if r.metric == "accuracy" { "acc" } else { "r2" },
            r.score,
            f1,
            r.majority,
            r.control_score,
            r.selectivity,
            r.n_test
        ));
    }
    if results.iter().any(|r| r.best_share.is_some()) {
        out.push_str("(behind the best: the best hook's lead over this one, 95% intervals that hold together over every pair of the label's hooks; one reaching 0 is not told apart from the best)\n");
    }
    if results.iter().any(|r| r.tied_with_best()) {
        out.push_str("(tied: the lead is 0 in every resample — both hooks score each test row alike — so nothing separates them on this test set)\n");
    }
    out
}

/// The TCAV results for the terminal.
pub fn tcav_table(rows: &[ScoreRow]) -> String {
    let cw = rows
        .iter()
        .map(|r| r.concept.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let hw = rows
        .iter()
        .map(|r| r.hook.to_string().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let tw = rows
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:<cw$}  {:<hw$}  {:<tw$}  {:>6}  {:>9}  {:>6}  {:>8}  {:>8}  {:>7}  sig\n",
        "concept", "hook", "target", "score", "magnitude", "random", "p", "p_holm", "cav_acc"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<cw$}  {:<hw$}  {:<tw$}  {:>6.3}  {:>9.3}  {:>6.3}  {:>8.2e}  {:>8.2e}  {:>7.3}  {}\n",
            r.concept,
            r.hook,
            r.target,
            r.score,
            r.magnitude,
            r.random_mean,
            r.p,
            r.p_holm,
            r.cav_accuracy,
            if r.significant { "*" } else { "" }
        ));
    }
    out.push_str(
        "(* significant after Holm–Bonferroni correction with CAV accuracy above the minimum)\n",
    );
    out
}

/// A fixed-width table of what each hook got.
pub fn dictionary_table(rows: &[HookSummary]) -> String {
    let hook_w = rows
        .iter()
        .map(|r| r.hook.to_string().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<hook_w$}  {:>8}  {:>6}  {:>6}  {:>20}  {:>8}  {:>8}  {:>6}  {:>6}\n",
        "hook", "source", "units", "L0", "EV [95% CI]", "EV(PCA)", "cos", "dead", "dense"
    );
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    for r in rows {
        let m = r.metrics.as_ref();
        // The interval over held-out texts, when there were at least two.
        let ev = m.map_or("-".to_owned(), |m| match m.explained_variance_ci {
            Some((lo, hi)) => format!("{:.3} [{lo:.2},{hi:.2}]", m.explained_variance),
            None => format!("{:.3}", m.explained_variance),
        });
        out.push_str(&format!(
            "{:<hook_w$}  {:>8}  {:>6}  {:>6}  {:>20}  {:>8}  {:>8}  {:>6}  {:>6}\n",
            r.hook,
            r.source,
            r.units,
            m.map_or("-".to_owned(), |m| format!("{:.1}", m.l0)),
            ev,
            f(r.pca.as_ref().map(|p| p.explained_variance)),
            f(m.map(|m| m.cosine)),
            f(m.map(|m| m.dead_fraction)),
            f(m.map(|m| m.dense_fraction)),
        ));
    }
    for r in rows.iter().filter(|r| !r.sparse_probing.is_empty()) {
        let ks: Vec<String> = r
            .sparse_probing
            .iter()
            .map(|a| {
                format!(
                    "k={} {:.1}% vs {:.1}%",
                    a.k,
                    100.0 * a.feature_accuracy,
                    100.0 * a.neuron_accuracy
                )
            })
            .collect();
        out.push_str(&format!(
            "sparse probing at {} (features vs neurons, mean over {} tasks): {}\n",
            r.hook,
            r.sparse_probing[0].tasks,
            ks.join(" · ")
        ));
    }
    out
}
