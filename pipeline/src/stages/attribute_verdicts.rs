//! The attribute stage's run-wide verdicts, made once every part's maps are there: the
//! model-parameter (and, for probe targets, label) randomisation checks of Adebayo et al.
//! 2018 on the first examples, and per method × target the means and the rank.

use super::attribute_baseline::Baselines;
use super::attribute_inputs::{subject, Inputs, TargetKind};
use crate::config::AttributeSection;
use anyhow::Result;
use glassbox_concepts::stats::bootstrap_mean_ci;
use glassbox_data::{Progress, RunDir};
use glassbox_models::randomize::Randomization;
use glassbox_models::{
    load_model_randomized, resolve as resolve_model, LoadOptions, LoadedModel, ModelSpec,
};
use glassbox_runner::attribution::oracle::Target;
use glassbox_runner::attribution::sanity::{cascade_steps, passes, similarity};
use glassbox_runner::attribution::tables::{MethodRow, SanityRow, SummaryRow};
use glassbox_runner::attribution::{Method, MethodOptions};
use std::collections::BTreeMap;

/// The trained model's maps the checks compare against: (target, method, example) → map.
pub(crate) type Originals = BTreeMap<(usize, Method, usize), Vec<f32>>;

/// The cascading model-parameter randomisation: at each step the model is reloaded with layer
/// groups destroyed from the output down, the first `sanity_examples` examples re-explained,
/// and each map compared with the trained model's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sanity_check(
    run: &RunDir,
    settings: &AttributeSection,
    model: &LoadedModel,
    inputs: &Inputs,
    targets: &[(String, TargetKind)],
    methods: &[Method],
    opts: &MethodOptions,
    originals: &Originals,
    baselines: &Baselines,
    progress: &dyn Progress,
) -> Result<Vec<SanityRow>> {
    let spec: ModelSpec = super::run_model::run_model_spec(run)?.parse()?;
    let extract = crate::config::RunConfig::load(run).extract;
    let options = LoadOptions {
        max_length: None,
        allow_pickle: extract.as_ref().is_some_and(|e| e.allow_pickle),
        weights_dtype: extract
            .as_ref()
            .map(|e| e.weights_dtype)
            .unwrap_or_default(),
        compute_dtype: extract
            .as_ref()
            .map(|e| e.compute_dtype)
            .unwrap_or_default(),
    };
    // The first step (the output side) also tells how many layer groups there are.
    let load = |which: &Randomization| {
        load_model_randomized(resolve_model(&spec)?, options, which, settings.seed)
    };
    let mut first = Some(load(&Randomization::Cascade(0))?);
    let groups = first.as_ref().map_or(0, |(_, r)| r.groups);
    // Cascading (groups destroyed from the output down, cumulatively) and independent (one
    // group at a time, the rest trained) randomisation, Adebayo et al. 2018 §4; the output
    // group alone is the first step of both.
    let cascade = cascade_steps(groups);
    let steps: Vec<(Randomization, &str, usize)> = cascade
        .iter()
        .map(|&k| (Randomization::Cascade(k), "cascade", k + 1))
        .chain(
            cascade
                .iter()
                .filter(|&&k| k > 0)
                .map(|&k| (Randomization::Only(k), "independent", k + 1)),
        )
        .collect();
    let examples = settings.sanity_examples.min(inputs.len());
    let image = match inputs {
        Inputs::Images { size, .. } => Some(*size),
        Inputs::Texts(_) => None,
    };
    let compare = Comparison {
        settings,
        inputs,
        methods,
        opts,
        originals,
        baselines,
        image,
        examples,
    };
    let mut rows = Vec::new();
    progress.start("attribute: randomisation check", steps.len() as u64);
    for (which, kind_name, groups_randomized) in &steps {
        let (randomized, _) = match first.take() {
            Some(loaded) => loaded,
            None => load(which)?,
        };
        for (ti, (target, kind)) in targets.iter().enumerate() {
            let step = (*kind_name, *groups_randomized as u32, groups as u32);
            compare.step(&randomized, ti, target, kind, step, &mut rows)?;
        }
        progress.advance(1);
    }
    progress.finish();
    // Label randomisation (Adebayo et al. §5) for probe targets: the trained model, the probe
    // refitted on shuffled labels.
    for (ti, (target, kind)) in targets.iter().enumerate() {
        if !matches!(kind, TargetKind::Fixed(Target::Probe(_))) {
            continue;
        }
        let head =
            super::label_randomization::shuffled_label_head(run, model, target, settings.seed)?;
        let shuffled = TargetKind::Fixed(Target::Probe(head));
        compare.step(
            model,
            ti,
            target,
            &shuffled,
            ("labels", 0, groups as u32),
            &mut rows,
        )?;
    }
    Ok(rows)
}

/// What every step of the sanity checks compares against: the trained model's maps of the
/// first `examples` examples.
struct Comparison<'a> {
    settings: &'a AttributeSection,
    inputs: &'a Inputs,
    methods: &'a [Method],
    opts: &'a MethodOptions,
    originals: &'a Originals,
    baselines: &'a Baselines,
    image: Option<(usize, usize)>,
    examples: usize,
}

impl Comparison<'_> {
    /// Explains the examples again with `model` for `kind` (target `ti`) and records each
    /// map's similarity to the trained model's; `step` = (randomization, groups randomised,
    /// groups in all).
    fn step(
        &self,
        model: &LoadedModel,
        ti: usize,
        target: &str,
        kind: &TargetKind,
        (randomization, groups_randomized, groups_total): (&str, u32, u32),
        rows: &mut Vec<SanityRow>,
    ) -> Result<()> {
        for i in 0..self.examples {
            let s = subject(model, self.inputs, i, kind, self.settings.batch_size)?;
            let baseline = self.baselines.for_subject(&s, self.settings)?;
            let x = glassbox_runner::attribution::oracle::Oracle::input(s.oracle()).to_vec();
            for &method in self.methods {
                let Some(original) = self.originals.get(&(ti, method, i)) else {
                    continue;
                };
                let again = s.explain(method, &x, &baseline, self.opts)?;
                let sim = similarity(original, &again.positions, self.image);
                rows.push(SanityRow {
                    method: method.as_str().to_owned(),
                    target: target.to_owned(),
                    example_id: match self.inputs {
                        Inputs::Texts(t) => t[i].0,
                        Inputs::Images { images, .. } => images[i].0,
                    },
                    randomization: randomization.into(),
                    groups_randomized,
                    groups_total,
                    spearman: sim.spearman,
                    ssim: sim.ssim,
                });
            }
        }
        Ok(())
    }
}

fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = values.flatten().filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Per method × target: means over examples (the completeness error's median), the sanity verdict, and the rank (by faithfulness
/// among methods that passed; failed and unchecked methods after them), with bootstrap
/// intervals (`resamples`, `seed`) of each faithfulness and, simultaneous over the pairs of
/// methods, of the top method's lead over each.
pub(crate) fn method_rows(
    targets: &[(String, TargetKind)],
    methods: &[Method],
    summary: &[SummaryRow],
    sanity: &[SanityRow],
    threshold: f64,
    (resamples, seed): (usize, u64),
) -> Vec<MethodRow> {
    let mut out = Vec::new();
    for (target, _) in targets {
        let mut rows: Vec<MethodRow> = methods
            .iter()
            .map(|m| {
                let name = m.as_str();
                let mine: Vec<&SummaryRow> = summary
                    .iter()
                    .filter(|r| r.method == name && &r.target == target)
                    .collect();
                // The verdict: the cascade's last step (every group destroyed).
                let cascade = |r: &&SanityRow| {
                    r.method == name && &r.target == target && r.randomization == "cascade"
                };
                let last = sanity
                    .iter()
                    .filter(cascade)
                    .map(|r| r.groups_randomized)
                    .max();
                let final_rho: Vec<Option<f64>> = sanity
                    .iter()
                    .filter(cascade)
                    .filter(|r| Some(r.groups_randomized) == last)
                    .map(|r| r.spearman)
                    .collect();
                // Probe targets: the maps of a probe refitted on shuffled labels.
                let label_rho: Vec<Option<f64>> = sanity
                    .iter()
                    .filter(|r| {
                        r.method == name && &r.target == target && r.randomization == "labels"
                    })
                    .map(|r| r.spearman)
                    .collect();
                let cascade_passed = (!final_rho.is_empty()).then(|| passes(&final_rho, threshold));
                let labels_passed = (!label_rho.is_empty()).then(|| passes(&label_rho, threshold));
                let faithful: Vec<f64> = mine
                    .iter()
                    .filter_map(|r| r.faithfulness())
                    .filter(|x| x.is_finite())
                    .collect();
                let ci = (!faithful.is_empty())
                    .then(|| bootstrap_mean_ci(&faithful, resamples, seed ^ 0xfa17))
                    .filter(|c| c.0.is_finite());
                MethodRow {
                    method: name.to_owned(),
                    target: target.clone(),
                    examples: mine.len() as u64,
                    faithfulness: mean(mine.iter().map(|r| r.faithfulness())),
                    faithfulness_ci_low: ci.map(|c| c.0),
                    faithfulness_ci_high: ci.map(|c| c.1),
                    vs_top_ci_low: None,
                    vs_top_ci_high: None,
                    comprehensiveness: mean(mine.iter().map(|r| r.comprehensiveness)),
                    sufficiency: mean(mine.iter().map(|r| r.sufficiency)),
                    max_sensitivity: mean(mine.iter().map(|r| r.max_sensitivity)),
                    // The median: one example whose f(x) ≈ f(baseline) makes its relative
                    // error arbitrarily large, and a mean would report that example alone.
                    completeness_error: median(mine.iter().map(|r| r.completeness_error)),
                    randomized_spearman: mean(
                        final_rho.iter().map(|r| Some(r.map_or(0.0, f64::abs))),
                    ),
                    label_randomized_spearman: mean(
                        label_rho.iter().map(|r| Some(r.map_or(0.0, f64::abs))),
                    ),
                    // Both checks where both ran: failing either fails the method.
                    sanity_passed: match (cascade_passed, labels_passed) {
                        (Some(a), Some(b)) => Some(a && b),
                        (a, b) => a.or(b),
                    },
                    rank: 0,
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| {
            let key = |r: &MethodRow| {
                (
                    r.sanity_passed != Some(true),
                    -r.faithfulness.unwrap_or(f64::NEG_INFINITY),
                )
            };
            let (ka, kb) = (key(&rows[a]), key(&rows[b]));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        });
        for (rank, &i) in order.iter().enumerate() {
            rows[i].rank = rank as u32 + 1;
        }
        if let Some(&top) = order.first() {
            let names: Vec<&str> = rows.iter().map(|r| r.method.as_str()).collect();
            let leads = leads_over_top(summary, target, &names, top, (resamples, seed));
            for (row, lead) in rows.iter_mut().zip(leads) {
                (row.vs_top_ci_low, row.vs_top_ci_high) = lead.unzip();
            }
        }
        out.extend(rows);
    }
    out
}

/// Per method, the interval of the top method's faithfulness minus its own, on the examples
/// every compared method has a finite faithfulness for, resampled together (paired) and
/// simultaneous at 95% with every other pair of methods (`glassbox_probes::simultaneous`): the
/// top method is this data's winner, so leads judged one by one would overstate how far ahead
/// it is. `None` at the top method and for methods without values.
fn leads_over_top(
    summary: &[SummaryRow],
    target: &str,
    methods: &[&str],
    top: usize,
    (resamples, seed): (usize, u64),
) -> Vec<Option<(f64, f64)>> {
    let per_method: Vec<BTreeMap<u64, f64>> = methods
        .iter()
        .map(|&method| {
            summary
                .iter()
                .filter(|r| r.method == method && r.target == target)
                .filter_map(|r| Some((r.example_id, r.faithfulness()?)))
                .filter(|(_, f)| f.is_finite())
                .collect()
        })
        .collect();
    let mut none = vec![None; methods.len()];
    if per_method[top].is_empty() || resamples == 0 {
        return none;
    }
    // Methods with values, and the examples all of them have.
    let compared: Vec<usize> = (0..methods.len())
        .filter(|&m| !per_method[m].is_empty())
        .collect();
    let examples: Vec<u64> = per_method[top]
        .keys()
        .filter(|e| compared.iter().all(|&m| per_method[m].contains_key(e)))
        .copied()
        .collect();
    if examples.is_empty() || compared.len() < 2 {
        return none;
    }
    let values: Vec<Vec<f64>> = examples
        .iter()
        .map(|e| compared.iter().map(|&m| per_method[m][e]).collect())
        .collect();
    let mean_of = |sample: &mut dyn Iterator<Item = usize>| {
        let mut sum = vec![0.0; compared.len()];
        let mut n = 0.0;
        for e in sample {
            sum.iter_mut().zip(&values[e]).for_each(|(s, v)| *s += v);
            n += 1.0;
        }
        sum.into_iter().map(|s| s / n).collect::<Vec<f64>>()
    };
    let observed = mean_of(&mut (0..examples.len()));
    let mut resampled = Vec::with_capacity(resamples);
    glassbox_probes::metrics::each_resample(examples.len(), resamples, seed ^ 0x1ead, |s| {
        resampled.push(mean_of(&mut s.iter().copied()))
    });
    let at_top = compared
        .iter()
        .position(|&m| m == top)
        .expect("top has values");
    let leads = glassbox_probes::simultaneous::leads_over(&observed, &resampled, at_top, 0.05);
    for (&m, lead) in compared.iter().zip(leads) {
        none[m] = lead;
    }
    none
}

fn median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.flatten().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n > 0).then(|| match n % 2 {
        1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    })
}

#[cfg(test)]
mod tests {
    use glassbox_runner::attribution::tables::SummaryRow;

    fn row(example_id: u64, method: &str, faithfulness: f64) -> SummaryRow {
        SummaryRow {
            example_id,
            method: method.into(),
            target: "class:cat".into(),
            predicted: None,
            f_input: 1.0,
            f_baseline: 0.0,
            attribution_sum: 1.0,
            completeness_error: None,
            deletion_morf_auc: Some(0.0),
            deletion_lerf_auc: Some(faithfulness),
            insertion_morf_auc: None,
            insertion_lerf_auc: None,
            comprehensiveness: None,
            sufficiency: None,
            max_sensitivity: None,
        }
    }

    /// A method 0.3 behind on every example is behind; one that differs from the top by
    /// ±0.01 noise is not told apart; one with no values gets no interval; and the intervals
    /// are those of the examples all compared methods share (the top's extra example is left
    /// out of the paired comparison).
    #[test]
    fn leads_are_paired_over_shared_examples() {
        let mut summary = Vec::new();
        for e in 0..30u64 {
            let base = 0.4 + 0.02 * (e % 7) as f64;
            let wiggle = if e % 2 == 0 { 0.01 } else { -0.01 };
            summary.push(row(e, "ig", base));
            summary.push(row(e, "saliency", base - 0.3));
            summary.push(row(e, "occlusion", base + wiggle));
        }
        summary.push(row(99, "ig", 100.0));
        let mut nan = row(0, "random", f64::NAN);
        nan.deletion_lerf_auc = Some(f64::NAN);
        summary.push(nan);
        let methods = ["ig", "saliency", "occlusion", "random"];
        let leads = super::leads_over_top(&summary, "class:cat", &methods, 0, (500, 1));
        assert!(leads[0].is_none() && leads[3].is_none(), "{leads:?}");
        let (lo, hi) = leads[1].unwrap();
        assert!(
            (lo - 0.3).abs() < 1e-9 && (hi - 0.3).abs() < 1e-9,
            "constant lead: {lo} {hi}"
        );
        let (lo, hi) = leads[2].unwrap();
        assert!(lo < 0.0 && hi > 0.0 && hi < 0.02, "a tie: {lo} {hi}");
        let again = super::leads_over_top(&summary, "class:cat", &methods, 0, (500, 1));
        assert_eq!(leads, again);
        assert!(
            super::leads_over_top(&summary, "class:cat", &methods, 0, (0, 1))
                .iter()
                .all(Option::is_none)
        );
    }

    #[test]
    fn the_median_skips_missing_and_non_finite_values() {
        let m = |v: &[Option<f64>]| super::median(v.iter().copied());
        assert_eq!(
            m(&[Some(3.0), None, Some(1.0), Some(f64::NAN), Some(150.0)]),
            Some(3.0)
        );
        assert_eq!(m(&[Some(4.0), Some(1.0)]), Some(2.5));
        assert_eq!(m(&[None]), None);
    }
}
