//! The causal stage's measurements: per hook, the unedited forward, every finding's and every
//! random direction's steered forwards at each α, the erasures; then each test's statistics.

use anyhow::{anyhow, bail, Result};
use glassbox_concepts::causal::erasure::fit_erasure;
use glassbox_concepts::causal::leace::Eraser;
use glassbox_concepts::causal::stats::{finite_mean, slopes, verdict};
use glassbox_concepts::causal::{
    compare, CausalOptions, ClassSpec, Comparison, CurveRow, Intervention, Planned, ReadoutSpec,
    TestRow, Verdict,
};
use glassbox_concepts::stats::{bootstrap_mean_ci, holm, mean, variance};
use glassbox_data::examples::Examples as ExampleTable;
use glassbox_data::rng::SeededRng;
use glassbox_data::{HookPoint, Progress, RunDir};
use glassbox_models::LoadedModel;
use glassbox_probes::{token_classes, ProbeOptions, ProbeWeights};
use glassbox_runner::steering::{self, Batches, Clean, Edit, HeadClass, Readout};

/// The sampled examples and what the readouts need of them.
pub(crate) struct Sample {
    /// Indices into the run's examples, ascending.
    pub indices: Vec<usize>,
    pub batches: Batches,
    pub table: ExampleTable,
}

/// What the run's probes are, for resolving readouts.
pub(crate) struct Context<'a> {
    pub run: &'a RunDir,
    pub model: &'a LoadedModel,
    pub weights: &'a [ProbeWeights],
    pub probe_options: &'a ProbeOptions,
    pub options: &'a CausalOptions,
}

/// One test's measured outcome, before the run-wide correction.
pub(crate) struct Measured {
    pub planned: usize,
    pub comparison: Option<Comparison>,
    pub untestable: Option<String>,
    pub curve: Vec<CurveRow>,
    pub erasure: Option<(f64, f64, f64, f64)>,
}

/// The hooks with at least one testable test, in order.
pub(crate) fn tested_hooks(planned: &[Planned]) -> Vec<HookPoint> {
    let mut hooks: Vec<HookPoint> = planned
        .iter()
        .filter(|p| p.readout.is_ok())
        .map(|p| p.hook)
        .collect();
    hooks.sort();
    hooks.dedup();
    hooks
}

/// Forwards each test of `planned` needs, for the progress bar.
pub(crate) fn forwards(planned: &[Planned], options: &CausalOptions) -> u64 {
    let k = options.random_directions as u64;
    let hooks = tested_hooks(planned);
    let steer = planned
        .iter()
        .filter(|p| p.readout.is_ok() && matches!(p.intervention, Intervention::Steer(_)))
        .count() as u64;
    let erase = planned
        .iter()
        .filter(|p| p.readout.is_ok() && matches!(p.intervention, Intervention::Erase { .. }))
        .count() as u64;
    let a = options.alphas.len() as u64;
    hooks.len() as u64 * (1 + k * a) + steer * a + erase * (1 + k)
}

/// Runs every testable test of `planned` at `hook`.
pub(crate) fn measure_hook(
    cx: &Context<'_>,
    sample: &Sample,
    planned: &[Planned],
    hook: HookPoint,
    progress: &dyn Progress,
) -> Result<Vec<Measured>> {
    let here: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].hook == hook && planned[i].readout.is_ok())
        .collect();
    // Readouts, shared between tests that read the same thing.
    let mut specs: Vec<ReadoutSpec> = Vec::new();
    let mut readout_of = vec![0usize; planned.len()];
    for &i in &here {
        let spec = planned[i].readout.as_ref().expect("testable").clone();
        readout_of[i] = match specs.iter().position(|s| *s == spec) {
            Some(r) => r,
            None => {
                specs.push(spec);
                specs.len() - 1
            }
        };
    }
    let readouts: Vec<Readout> = specs
        .iter()
        .map(|s| resolve(cx, sample, s))
        .collect::<Result<_>>()?;
    let clean = steering::clean(cx.model, &sample.batches, hook, &readouts)?;
    progress.advance(1);
    let width = cx.model.model.hook_width(hook);
    let opts = cx.options;
    let scale = clean.typical_norm;
    // Random unit directions, the same for every test at this hook.
    let hook_salt = hook
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
    let mut rng = SeededRng::new(opts.seed ^ hook_salt);
    let randoms: Vec<Vec<f64>> = (0..opts.random_directions)
        .map(|_| unit(&(0..width).map(|_| rng.gaussian()).collect::<Vec<_>>()))
        .collect();
    let steer = |direction: &[f64]| -> Result<Vec<Vec<Vec<f64>>>> {
        // [alpha][readout][example] effects.
        opts.alphas
            .iter()
            .map(|alpha| {
                let v: Vec<f32> = direction
                    .iter()
                    .map(|d| (alpha * scale * d) as f32)
                    .collect();
                let values = steering::edited(
                    cx.model,
                    &sample.batches,
                    hook,
                    &Edit::Add(v),
                    &readouts,
                    &clean,
                )?;
                progress.advance(1);
                Ok(effects(&values, &clean))
            })
            .collect()
    };
    let random_steered: Vec<Vec<Vec<Vec<f64>>>> = if here
        .iter()
        .any(|&i| matches!(planned[i].intervention, Intervention::Steer(_)))
    {
        randoms.iter().map(|r| steer(r)).collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for &i in &here {
        let p = &planned[i];
        let r = readout_of[i];
        let members = member_mask(sample, p)?;
        let signed = specs[r].signed();
        let mask = |values: &[f64]| -> Vec<f64> {
            values
                .iter()
                .zip(&members)
                .map(|(v, keep)| if *keep { *v } else { f64::NAN })
                .collect()
        };
        match &p.intervention {
            Intervention::Steer(direction) => {
                if direction.len() != width {
                    bail!(
                        "{}: its direction has {} values but `{hook}` is {width} wide; the run's tables come from another model — re-run the stages that wrote them",
                        p.finding,
                        direction.len()
                    );
                }
                let norm = direction.iter().map(|v| v * v).sum::<f64>().sqrt();
                if norm == 0.0 || !norm.is_finite() {
                    out.push(Measured::untestable(
                        i,
                        "its direction is zero (or not finite)",
                    ));
                    continue;
                }
                let own = steer(&unit(direction))?;
                let per_alpha = |e: &[Vec<Vec<f64>>]| -> Vec<Vec<f64>> {
                    e.iter().map(|a| mask(&a[r])).collect()
                };
                let finding_slopes = slopes(&opts.alphas, &per_alpha(&own), signed);
                let random_effects: Vec<f64> = random_steered
                    .iter()
                    .map(|e| finite_mean(&slopes(&opts.alphas, &per_alpha(e), signed)))
                    .collect();
                let seed = opts.seed ^ (i as u64).wrapping_mul(0x9e37_79b9);
                let comparison = compare(
                    &finding_slopes,
                    &random_effects,
                    p.claim,
                    opts.bootstrap,
                    seed,
                );
                let curve = opts
                    .alphas
                    .iter()
                    .enumerate()
                    .map(|(a, &alpha)| {
                        let own_a: Vec<f64> = mask(&own[a][r])
                            .into_iter()
                            .filter(|v| v.is_finite())
                            .collect();
                        let random_a: Vec<f64> = random_steered
                            .iter()
                            .map(|e| finite_mean(&mask(&e[a][r])))
                            .collect();
                        let ci = bootstrap_mean_ci(&own_a, opts.bootstrap, seed ^ a as u64);
                        CurveRow {
                            finding: p.finding.clone(),
                            test: p.test.clone(),
                            alpha,
                            effect: if own_a.is_empty() {
                                f64::NAN
                            } else {
                                mean(&own_a)
                            },
                            ci_low: ci.0,
                            ci_high: ci.1,
                            random_mean: mean(&random_a),
                            random_sd: variance(&random_a).sqrt(),
                        }
                    })
                    .collect();
                out.push(Measured {
                    planned: i,
                    comparison: Some(comparison),
                    untestable: None,
                    curve,
                    erasure: None,
                });
            }
            Intervention::Erase { label, pool } => {
                // A label the split cannot serve (a class too small for train and test) makes
                // this test impossible, not the stage.
                let fit = match fit_erasure(
                    cx.run,
                    label,
                    hook,
                    *pool,
                    cx.probe_options,
                    opts.random_directions,
                    opts.seed,
                ) {
                    Ok(fit) => fit,
                    Err(e) => {
                        out.push(Measured::untestable(
                            i,
                            &format!("LEACE could not be fitted: {e}"),
                        ));
                        continue;
                    }
                };
                let erase = |e: &Eraser| -> Result<Vec<f64>> {
                    let edit = Edit::Erase {
                        matrix: e.matrix.iter().map(|v| *v as f32).collect(),
                        mean: e.mean.iter().map(|v| *v as f32).collect(),
                    };
                    let values = steering::edited(
                        cx.model,
                        &sample.batches,
                        hook,
                        &edit,
                        &readouts,
                        &clean,
                    )?;
                    progress.advance(1);
                    Ok(mask(&effects(&values, &clean)[r]))
                };
                let own = erase(&fit.eraser)?;
                let random_effects: Vec<f64> = fit
                    .randoms
                    .iter()
                    .map(|e| erase(e).map(|v| finite_mean(&v)))
                    .collect::<Result<_>>()?;
                let seed = opts.seed ^ (i as u64).wrapping_mul(0x9e37_79b9);
                let comparison = compare(&own, &random_effects, p.claim, opts.bootstrap, seed);
                let erasure = Some((
                    fit.accuracy_before,
                    fit.accuracy_after,
                    fit.accuracy_after_ci.0,
                    fit.chance,
                ));
                if !fit.counts() {
                    out.push(Measured {
                        planned: i,
                        comparison: Some(comparison),
                        untestable: Some(format!(
                            "the erasure does not count: a probe refitted on the erased rows still scores {:.3} (95% CI from {:.3}) against chance {:.3}",
                            fit.accuracy_after, fit.accuracy_after_ci.0, fit.chance
                        )),
                        curve: Vec::new(),
                        erasure,
                    });
                    continue;
                }
                out.push(Measured {
                    planned: i,
                    comparison: Some(comparison),
                    untestable: None,
                    curve: Vec::new(),
                    erasure,
                });
            }
        }
    }
    Ok(out)
}

impl Measured {
    pub(crate) fn untestable(planned: usize, why: &str) -> Self {
        Self {
            planned,
            comparison: None,
            untestable: Some(why.to_owned()),
            curve: Vec::new(),
            erasure: None,
        }
    }
}

fn unit(v: &[f64]) -> Vec<f64> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

/// `edited − clean`, `[readout][example]`.
fn effects(values: &[Vec<f64>], clean: &Clean) -> Vec<Vec<f64>> {
    values
        .iter()
        .zip(&clean.values)
        .map(|(e, c)| e.iter().zip(c).map(|(a, b)| a - b).collect())
        .collect()
}

/// Which sampled examples a test averages over (TCAV: the target class's members).
fn member_mask(sample: &Sample, p: &Planned) -> Result<Vec<bool>> {
    let Some((label, class)) = &p.members else {
        return Ok(vec![true; sample.indices.len()]);
    };
    let column = sample
        .table
        .column(label)
        .ok_or_else(|| anyhow!("{}: examples.parquet has no column `{label}`", p.finding))?;
    Ok(sample
        .indices
        .iter()
        .map(|&i| column.values[i].class_name().as_deref() == Some(class.as_str()))
        .collect())
}

/// The model-side readout of a spec.
fn resolve(cx: &Context<'_>, sample: &Sample, spec: &ReadoutSpec) -> Result<Readout> {
    Ok(match spec {
        ReadoutSpec::Probe {
            label,
            level,
            hook,
            pool,
            class,
        } => {
            let w = cx
                .weights
                .iter()
                .find(|w| w.level == *level && w.label == *label && w.hook == *hook)
                .ok_or_else(|| {
                    anyhow!("probes/weights.safetensors lacks the {level} probe of `{label}` at `{hook}`; re-run `glassbox probe --force`")
                })?;
            let class = match class {
                ClassSpec::Raw => HeadClass::Raw,
                ClassSpec::Named(name) => {
                    let c = w.classes.iter().position(|x| x == name).ok_or_else(|| {
                        anyhow!(
                            "the `{label}` probe at `{hook}` has no class `{name}` (classes: {})",
                            w.classes.join(", ")
                        )
                    })?;
                    HeadClass::PerExample(vec![Some(c); sample.indices.len()])
                }
                ClassSpec::Truth if level == "token" => {
                    token_truth(cx.run, sample, label, &w.classes)?
                }
                ClassSpec::Truth => {
                    let column = sample
                        .table
                        .column(label)
                        .ok_or_else(|| anyhow!("examples.parquet has no column `{label}`"))?;
                    HeadClass::PerExample(
                        sample
                            .indices
                            .iter()
                            .map(|&i| {
                                column.values[i]
                                    .class_name()
                                    .and_then(|n| w.classes.iter().position(|c| *c == n))
                            })
                            .collect(),
                    )
                }
            };
            Readout::Head {
                hook: *hook,
                pool: *pool,
                weight: w.weight.clone(),
                bias: w.bias.clone(),
                class,
            }
        }
        ReadoutSpec::Token { text } => {
            let pieces = cx.model.tokenizer()?.encode_plain(text)?;
            let [(id, _)] = pieces.as_slice() else {
                bail!(
                    "token readout `{text}` is {} tokens ({}), not one",
                    pieces.len(),
                    pieces
                        .iter()
                        .map(|(_, t)| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            };
            Readout::NextToken { id: *id }
        }
        ReadoutSpec::NextTokenKl => Readout::NextTokenKl,
        ReadoutSpec::OutputKl => Readout::OutputKl,
        ReadoutSpec::OutputClass { class, .. } => Readout::OutputClass { class: *class },
    })
}

/// Each sampled example's tokens' own classes under the token-level `label` (index into the
/// probe's `classes`; `None` for a token without a label or with a class the probe left out).
fn token_truth(
    run: &RunDir,
    sample: &Sample,
    label: &str,
    classes: &[String],
) -> Result<HeadClass> {
    let truth = token_classes(run, label)?;
    let per_example = sample
        .indices
        .iter()
        .map(|&i| {
            let id = sample.table.example_ids[i];
            let n = *truth.lengths.get(&id).ok_or_else(|| {
                anyhow!("tokens.parquet has no tokens of example {id}; re-run extract with --force")
            })?;
            Ok((0..n as u32)
                .map(|p| {
                    truth
                        .by_token
                        .get(&(id, p))
                        .and_then(|name| classes.iter().position(|c| c == name))
                })
                .collect())
        })
        .collect::<Result<_>>()?;
    Ok(HeadClass::PerToken(per_example))
}

/// Holm over every measured test, verdicts, and the rows of `tests.parquet`.
pub(crate) fn rows(planned: &[Planned], measured: &[Measured], significance: f64) -> Vec<TestRow> {
    let p: Vec<f64> = planned
        .iter()
        .enumerate()
        .map(|(i, _)| {
            measured
                .iter()
                .find(|m| m.planned == i && m.untestable.is_none())
                .and_then(|m| m.comparison)
                .map_or(f64::NAN, |c| c.p)
        })
        .collect();
    let adjusted = holm(&p);
    planned
        .iter()
        .enumerate()
        .map(|(i, plan)| {
            let m = measured.iter().find(|m| m.planned == i);
            let c = m.and_then(|m| m.comparison);
            let (verdict_, reason) = match (&plan.readout, m) {
                (Err(why), _) => (Verdict::NotTestable, why.clone()),
                (
                    Ok(_),
                    Some(Measured {
                        untestable: Some(why),
                        ..
                    }),
                ) => (Verdict::NotTestable, why.clone()),
                (Ok(_), Some(m)) => match m.comparison {
                    Some(c) => verdict(&c, plan.claim, adjusted[i], significance),
                    None => (Verdict::NotTestable, "not measured".into()),
                },
                (Ok(_), None) => (Verdict::NotTestable, "not measured".into()),
            };
            let nan = f64::NAN;
            let erasure = m.and_then(|m| m.erasure);
            TestRow {
                finding: plan.finding.clone(),
                kind: plan.kind.to_owned(),
                test: plan.test.clone(),
                hook: plan.hook,
                readout: plan
                    .readout
                    .as_ref()
                    .map_or("–".into(), ReadoutSpec::describe),
                claim: plan.claim.as_str().to_owned(),
                examples: c.map_or(0, |c| c.examples as u64),
                effect: c.map_or(nan, |c| c.effect),
                ci_low: c.map_or(nan, |c| c.ci.0),
                ci_high: c.map_or(nan, |c| c.ci.1),
                random_mean: c.map_or(nan, |c| c.random_mean),
                random_sd: c.map_or(nan, |c| c.random_sd),
                t: c.map_or(nan, |c| c.t),
                p: p[i],
                p_holm: adjusted[i],
                verdict: verdict_,
                reason,
                accuracy_before: erasure.map(|e| e.0),
                accuracy_after: erasure.map(|e| e.1),
                accuracy_after_low: erasure.map(|e| e.2),
                chance: erasure.map(|e| e.3),
            }
        })
        .collect()
}
