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
/// intervals (`resamples`, `seed`) of each faithfulness and of the top method's lead over each.
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
            let of = |method: &str| -> BTreeMap<u64, f64> {
                summary
                    .iter()
                    .filter(|r| r.method == method && &r.target == target)
                    .filter_map(|r| Some((r.example_id, r.faithfulness()?)))
                    .filter(|(_, f)| f.is_finite())
                    .collect()
            };
            let best = of(&rows[top].method);
            for (i, row) in rows.iter_mut().enumerate() {
                if i == top {
                    continue;
                }
                // Per example, the top method's faithfulness minus this one's: resampling the
                // differences resamples the examples with both methods' values together.
                let lead: Vec<f64> = of(&row.method)
                    .iter()
                    .filter_map(|(e, f)| Some(best.get(e)? - f))
                    .collect();
                if lead.is_empty() {
                    continue;
                }
                let (lo, hi) = bootstrap_mean_ci(&lead, resamples, seed ^ 0x1ead);
                if lo.is_finite() {
                    (row.vs_top_ci_low, row.vs_top_ci_high) = (Some(lo), Some(hi));
                }
            }
        }
        out.extend(rows);
    }
    out
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
