//! Which causal tests a run calls for: one per finding the report lists, each with its
//! direction, its intervention, its downstream readout and its claim — or the reason it cannot
//! be tested.
//!
//! - **Probes** (where each label is best decoded): for each class, steer along the class's
//!   direction (`w_c − mean_c' w_c'`; a binary probe's `w`) and read the *same label's* probe at
//!   the deepest later hook (its log-probability of the class: `raises`); for classification
//!   probes also erase the label with LEACE and read the later probe's log-probability of each
//!   example's own class — at token level each token's own class, averaged over the example's
//!   labelled tokens (`lowers`). Without a later probe a causal LM reads the next-token KL
//!   (`moves`); an encoder's is not testable.
//! - **TCAV** (significant results): steer along the concept's mean CAV and read the TCAV target
//!   over the target class's examples: `raises` or `lowers` as TCAV found.
//! - **SAE features and neurons** (label-correlated units): steer along the decoder row (a
//!   neuron's unit vector) and read the later probe of the unit's label (`raises` its class).

use super::stats::Claim;
use crate::explain::read::{finding_units, read_units};
use crate::target::TargetSpec;
use crate::ConceptError;
use glassbox_data::{HookPoint, Pool, RunDir};
use glassbox_probes::{best_per_label, ProbeResult, ProbeWeights};

/// Units per dictionary hook tested (the report lists three per hook as findings).
pub const UNITS_PER_HOOK: usize = 3;

/// What the model offers the readouts.
#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    /// A causal LM: next-token readouts are available.
    pub has_unembedding: bool,
    /// A classifier's class names (`class:` targets).
    pub class_labels: Vec<String>,
    /// Activation width of each hook point (a neuron's direction is a unit vector of it).
    pub widths: std::collections::BTreeMap<HookPoint, usize>,
}

/// Which class a probe readout reads.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassSpec {
    /// This class, for every example.
    Named(String),
    /// Each example's own class in the label column (examples without one are left out).
    Truth,
    /// A regression's raw output.
    Raw,
}

/// A downstream readout, before the model resolves it.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadoutSpec {
    /// A probe of the run (`probes/weights.safetensors`).
    Probe {
        /// Its label.
        label: String,
        /// `sequence` or `token`.
        level: String,
        /// Its hook.
        hook: HookPoint,
        /// Its pool (`None` at token level).
        pool: Option<Pool>,
        /// The class read.
        class: ClassSpec,
    },
    /// A causal LM's log-probability of `text` (one token) next.
    Token {
        /// The token's text.
        text: String,
    },
    /// KL of the next-token distribution from the unedited one.
    NextTokenKl,
    /// KL of a classifier's class distribution from the unedited one (image classifiers and
    /// text classifiers, which have no next token to read).
    OutputKl,
    /// A classifier's log-probability of a class.
    OutputClass {
        /// Index into the model's outputs.
        class: usize,
        /// Its name.
        name: String,
    },
}

impl ReadoutSpec {
    /// How tables and the report name it.
    pub fn describe(&self) -> String {
        match self {
            ReadoutSpec::Probe {
                label,
                hook,
                class,
                level,
                ..
            } => match class {
                ClassSpec::Named(c) => format!("log p({label}={c}) of the probe at {hook}"),
                ClassSpec::Truth if level == "token" => {
                    format!("mean log p(each token's true {label}) of the probe at {hook}")
                }
                ClassSpec::Truth => format!("log p(true {label}) of the probe at {hook}"),
                ClassSpec::Raw => format!("prediction of the {label} probe at {hook}"),
            },
            ReadoutSpec::Token { text } => format!("log p(next token {text:?})"),
            ReadoutSpec::NextTokenKl => "KL of the next-token distribution (nats)".into(),
            ReadoutSpec::OutputKl => "KL of the class distribution (nats)".into(),
            ReadoutSpec::OutputClass { name, .. } => format!("log p(class {name})"),
        }
    }

    /// Whether the readout has a sign (steering slopes are signed) or is a divergence.
    pub fn signed(&self) -> bool {
        !matches!(self, ReadoutSpec::NextTokenKl | ReadoutSpec::OutputKl)
    }
}

/// The intervention a test makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Intervention {
    /// Add `α · n · v` for every `α` of the grid (`v` the unit direction, `n` the hook's
    /// typical norm).
    Steer(Vec<f64>),
    /// LEACE erasure of a label, fitted on the probe's rows.
    Erase {
        /// The label erased.
        label: String,
        /// The pool the probe (and the eraser) were fitted on; `None`: token rows (a
        /// token-level label), erased at every position.
        pool: Option<Pool>,
    },
}

/// One planned test.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The finding, as the report names it.
    pub finding: String,
    /// `probe`, `tcav`, `feature` or `neuron`.
    pub kind: &'static str,
    /// What is done, e.g. `steer along class food`, `erase (LEACE)`.
    pub test: String,
    /// Where.
    pub hook: HookPoint,
    /// How.
    pub intervention: Intervention,
    /// What the finding predicts.
    pub claim: Claim,
    /// What is measured, or why nothing can be.
    pub readout: Result<ReadoutSpec, String>,
    /// Only the examples whose `label` is `class` (TCAV's target class).
    pub members: Option<(String, String)>,
}

/// How the report and the tables name a probe finding.
pub fn probe_finding(label: &str, level: &str, hook: HookPoint) -> String {
    format!("probe {label} ({level}) at {hook}")
}

/// How the report and the tables name a TCAV finding.
pub fn tcav_finding(concept: &str, target: &str, hook: HookPoint) -> String {
    format!("tcav {concept} → {target} at {hook}")
}

/// How the report and the tables name a dictionary unit finding (`feature` or `neuron`).
pub fn unit_finding(unit: &str, index: u32, hook: HookPoint, label: &str, class: &str) -> String {
    format!("{unit} {index} at {hook} ({label} = {class})")
}

/// Every test the run's findings call for, in report order: probes, TCAV, dictionary units.
pub fn plan(run: &RunDir, ctx: &PlanContext) -> Result<Vec<Planned>, ConceptError> {
    let manifest = run.require_stage("probe")?;
    let results = glassbox_probes::read_results(run)?;
    let weights = glassbox_probes::read_weights(run)?;
    let mut out = Vec::new();
    for best in best_per_label(&results) {
        out.extend(probe_tests(best, &results, &weights, ctx)?);
    }
    if manifest.stages.contains_key("tcav") {
        let scores = crate::read_scores(run)?;
        let cavs = crate::read_cavs(run)?;
        for row in scores.iter().filter(|r| r.significant) {
            out.push(tcav_test(row, &cavs, &results, &weights, ctx)?);
        }
    }
    if manifest.stages.contains_key("dictionary") {
        out.extend(unit_tests(run, &results, ctx)?);
    }
    Ok(out)
}

fn pool_of(row: &ProbeResult) -> Option<Pool> {
    (row.level == "sequence")
        .then(|| row.pool.parse().ok())
        .flatten()
}

/// The same (level, label, pool)'s probe at the deepest hook after `depth`.
fn later_probe<'a>(
    results: &'a [ProbeResult],
    level: &str,
    label: &str,
    pool: &str,
    depth: f64,
) -> Option<&'a ProbeResult> {
    results
        .iter()
        .filter(|r| r.level == level && r.label == label && r.pool == pool && r.depth > depth)
        .max_by(|a, b| a.depth.total_cmp(&b.depth))
}

/// The readout when no later probe reads the label: the model's own output distribution — a
/// causal LM's next-token KL, a classifier's class KL.
fn fallback(ctx: &PlanContext, why: String) -> (Result<ReadoutSpec, String>, Option<Claim>) {
    if ctx.has_unembedding {
        (Ok(ReadoutSpec::NextTokenKl), Some(Claim::Moves))
    } else if !ctx.class_labels.is_empty() {
        (Ok(ReadoutSpec::OutputKl), Some(Claim::Moves))
    } else {
        (
            Err(format!(
                "{why}, and the model has no output distribution to read instead (neither next tokens nor classes); probe a later hook"
            )),
            None,
        )
    }
}

fn probe_tests(
    best: &ProbeResult,
    results: &[ProbeResult],
    weights: &[ProbeWeights],
    ctx: &PlanContext,
) -> Result<Vec<Planned>, ConceptError> {
    let finding = probe_finding(&best.label, &best.level, best.hook);
    let w = weights
        .iter()
        .find(|w| w.level == best.level && w.label == best.label && w.hook == best.hook)
        .ok_or_else(|| {
            ConceptError::Invalid(format!(
                "probes/weights.safetensors lacks the {} probe of `{}` at `{}`; re-run `glassbox probe --force`",
                best.level, best.label, best.hook
            ))
        })?;
    let later = later_probe(results, &best.level, &best.label, &best.pool, best.depth);
    let readout_for = |class: ClassSpec, claim: Claim| match later {
        Some(r) => (
            Ok(ReadoutSpec::Probe {
                label: r.label.clone(),
                level: r.level.clone(),
                hook: r.hook,
                pool: pool_of(r),
                class,
            }),
            claim,
        ),
        None => {
            let (readout, fallback_claim) =
                fallback(ctx, format!("no later hook probes `{}`", best.label));
            (readout, fallback_claim.unwrap_or(claim))
        }
    };
    let mut out = Vec::new();
    let directions = class_directions(w);
    for (name, direction) in directions {
        let class = if w.classes.is_empty() {
            ClassSpec::Raw
        } else {
            ClassSpec::Named(name.clone())
        };
        let (readout, claim) = readout_for(class, Claim::Raises);
        out.push(Planned {
            finding: finding.clone(),
            kind: "probe",
            test: if w.classes.is_empty() {
                "steer along the probe's weights".into()
            } else {
                format!("steer along class {name}")
            },
            hook: best.hook,
            intervention: Intervention::Steer(direction),
            claim,
            readout,
            members: None,
        });
    }
    if !w.classes.is_empty() {
        // A sequence-level probe's pooled rows, or a token-level probe's token rows.
        let pool = pool_of(best);
        if best.level == "token" || pool.is_some() {
            let (readout, claim) = readout_for(ClassSpec::Truth, Claim::Lowers);
            out.push(Planned {
                finding,
                kind: "probe",
                test: "erase (LEACE)".into(),
                hook: best.hook,
                intervention: Intervention::Erase {
                    label: best.label.clone(),
                    pool,
                },
                claim,
                readout,
                members: None,
            });
        }
    }
    Ok(out)
}

/// Per class, the direction that raises its log-probability: a binary probe's weights (class 1,
/// the one output), or `w_c − mean_c' w_c'`; a regression's weights.
fn class_directions(w: &ProbeWeights) -> Vec<(String, Vec<f64>)> {
    let width = w.width;
    let row = |o: usize| -> Vec<f64> {
        w.weight[o * width..(o + 1) * width]
            .iter()
            .map(|v| *v as f64)
            .collect()
    };
    if w.outputs == 1 {
        let name = w.classes.get(1).cloned().unwrap_or_else(|| w.label.clone());
        return vec![(name, row(0))];
    }
    let mean: Vec<f64> = (0..width)
        .map(|u| {
            (0..w.outputs)
                .map(|o| w.weight[o * width + u] as f64)
                .sum::<f64>()
                / w.outputs as f64
        })
        .collect();
    w.classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let d = row(c).iter().zip(&mean).map(|(a, m)| a - m).collect();
            (name.clone(), d)
        })
        .collect()
}

fn tcav_test(
    row: &crate::ScoreRow,
    cavs: &[crate::CavRow],
    results: &[ProbeResult],
    weights: &[ProbeWeights],
    ctx: &PlanContext,
) -> Result<Planned, ConceptError> {
    let finding = tcav_finding(&row.concept, &row.target, row.hook);
    let claim = if row.score > row.random_mean {
        Claim::Raises
    } else {
        Claim::Lowers
    };
    // The concept's direction: the mean of its unit CAVs against each random set.
    let own: Vec<&crate::CavRow> = cavs
        .iter()
        .filter(|c| c.concept == row.concept && c.hook == row.hook)
        .collect();
    let width = own.first().map_or(0, |c| c.direction.len());
    let mut direction = vec![0.0; width];
    for c in &own {
        let norm = c
            .direction
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
            .max(1e-30);
        for (d, v) in direction.iter_mut().zip(&c.direction) {
            *d += v / norm / own.len() as f64;
        }
    }
    let mut planned = Planned {
        finding,
        kind: "tcav",
        test: format!("steer along the mean CAV of {}", row.concept),
        hook: row.hook,
        intervention: Intervention::Steer(direction),
        claim,
        readout: Err(String::new()),
        members: None,
    };
    if own.is_empty() {
        planned.readout = Err("tcav/cavs.parquet holds no CAV for this concept and hook".into());
        return Ok(planned);
    }
    if let Some(name) = row.target.strip_prefix("class:") {
        planned.readout = match ctx.class_labels.iter().position(|l| l == name) {
            Some(class) => Ok(ReadoutSpec::OutputClass {
                class,
                name: name.to_owned(),
            }),
            None => Err(format!("the model has no class `{name}`")),
        };
        return Ok(planned);
    }
    if row.target.starts_with("text:") {
        planned.readout = Err(
            "a text: target compares an image embedding with a prompt's; steering reads class logits or probes only"
                .into(),
        );
        return Ok(planned);
    }
    let spec = TargetSpec::parse(&row.target)?;
    if let Some(text) = spec.token {
        planned.readout = if ctx.has_unembedding {
            Ok(ReadoutSpec::Token { text })
        } else {
            Err("token: targets need a causal LM".into())
        };
        return Ok(planned);
    }
    let candidates: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| r.label == spec.label && r.level == "sequence" && r.metric == "accuracy")
        .collect();
    let probe = match spec.hook {
        Some(h) => candidates.iter().find(|r| r.hook == h).copied(),
        None => candidates
            .iter()
            .max_by(|a, b| a.depth.total_cmp(&b.depth))
            .copied(),
    };
    planned.readout = match probe {
        None => Err(format!(
            "the run has no sequence-level probe for `{}`",
            spec.label
        )),
        Some(p) if p.depth <= row.hook.depth() => Err(format!(
            "the target's probe at {} does not come after {}",
            p.hook, row.hook
        )),
        Some(p)
            if !weights.iter().any(|w| {
                w.level == "sequence"
                    && w.label == spec.label
                    && w.hook == p.hook
                    && w.classes.contains(&spec.class)
            }) =>
        {
            Err(format!(
                "the probe at {} has no class `{}`",
                p.hook, spec.class
            ))
        }
        Some(p) => Ok(ReadoutSpec::Probe {
            label: spec.label.clone(),
            level: "sequence".into(),
            hook: p.hook,
            pool: pool_of(p),
            class: ClassSpec::Named(spec.class.clone()),
        }),
    };
    planned.members = Some((spec.label, spec.class));
    Ok(planned)
}

fn unit_tests(
    run: &RunDir,
    results: &[ProbeResult],
    ctx: &PlanContext,
) -> Result<Vec<Planned>, ConceptError> {
    let mut out = Vec::new();
    for (hook, dir) in crate::explain::read::dictionary_hooks(run)? {
        for (unit, kind) in [("feature", "features"), ("neuron", "neurons")] {
            if !dir.join(format!("{kind}.parquet")).exists() {
                continue;
            }
            let rows = read_units(&dir, unit)?;
            let found = finding_units(&rows, UNITS_PER_HOOK);
            if found.is_empty() {
                continue;
            }
            let decoder = if unit == "feature" {
                Some(crate::sae::saelens::load(&dir.join("sae"))?.sae)
            } else {
                None
            };
            for r in found {
                let (label, class) = (
                    r.top_label.clone().unwrap_or_default(),
                    r.top_class.clone().unwrap_or_default(),
                );
                let direction: Vec<f64> = match &decoder {
                    Some(sae) => sae
                        .decoder_row(r.unit as usize)
                        .iter()
                        .map(|v| *v as f64)
                        .collect(),
                    None => {
                        let mut e = vec![0.0; ctx.widths.get(&hook).copied().unwrap_or(0)];
                        if let Some(v) = e.get_mut(r.unit as usize) {
                            *v = 1.0;
                        }
                        e
                    }
                };
                let later = results
                    .iter()
                    .filter(|p| {
                        p.label == label && p.metric == "accuracy" && p.depth > hook.depth()
                    })
                    .max_by(|a, b| a.depth.total_cmp(&b.depth));
                let (readout, claim) = match later {
                    Some(p) => (
                        Ok(ReadoutSpec::Probe {
                            label: label.clone(),
                            level: p.level.clone(),
                            hook: p.hook,
                            pool: pool_of(p),
                            class: ClassSpec::Named(class.clone()),
                        }),
                        Claim::Raises,
                    ),
                    None => {
                        let (readout, c) = fallback(ctx, format!("no later hook probes `{label}`"));
                        (readout, c.unwrap_or(Claim::Raises))
                    }
                };
                out.push(Planned {
                    finding: unit_finding(unit, r.unit, hook, &label, &class),
                    kind: if unit == "feature" {
                        "feature"
                    } else {
                        "neuron"
                    },
                    test: if unit == "feature" {
                        "steer along the decoder row".into()
                    } else {
                        "steer along the unit".into()
                    },
                    hook,
                    intervention: Intervention::Steer(direction),
                    claim,
                    readout,
                    members: None,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no later probe, the model's own output distribution is read: next tokens for a
    /// causal LM, classes for a classifier; an encoder without a head has none.
    #[test]
    fn the_fallback_reads_the_models_own_distribution() {
        let lm = PlanContext {
            has_unembedding: true,
            ..Default::default()
        };
        let classifier = PlanContext {
            class_labels: vec!["tabby".into(), "tiger".into()],
            ..Default::default()
        };
        let why = || "no later hook probes `topic`".to_owned();
        assert_eq!(fallback(&lm, why()).0, Ok(ReadoutSpec::NextTokenKl));
        assert_eq!(fallback(&classifier, why()).0, Ok(ReadoutSpec::OutputKl));
        assert!(!ReadoutSpec::OutputKl.signed());
        let (readout, claim) = fallback(&PlanContext::default(), why());
        assert!(readout.unwrap_err().contains("probe a later hook") && claim.is_none());
    }
}
