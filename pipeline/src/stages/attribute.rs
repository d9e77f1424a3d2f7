//! The `attribute` stage: input attributions of the run's examples for each target × method,
//! their faithfulness and robustness, and the model-randomisation sanity check. Writes
//! `attributions/`.

use super::attribute_inputs::{
    default_cam_hook, mask_token, read_inputs, resolve, Inputs, TargetKind,
};
use super::{Completion, Stage, Transaction};
use crate::config::AttributeSection;
use crate::fingerprint::fingerprint;
use anyhow::{anyhow, Result};
use glassbox_data::{Manifest, Modality, Progress, RunDir};
use glassbox_models::randomize::Randomization;
use glassbox_models::{
    hooks, load_model_randomized, resolve as resolve_model, LoadOptions, LoadedModel, ModelSpec,
};
use glassbox_runner::attribution::baseline::{image_baseline, text_baseline};
use glassbox_runner::attribution::evaluate::area;
use glassbox_runner::attribution::oracle::{ImageOracle, Target, TextOracle};
use glassbox_runner::attribution::run::{explain_example, EvalOptions};
use glassbox_runner::attribution::sanity::{cascade_steps, passes, similarity};
use glassbox_runner::attribution::tables::{
    slug, write_curves, write_maps, write_methods, write_sanity, write_summary, CurveRow, MapRows,
    MethodRow, SanityRow, SummaryRow,
};
use glassbox_runner::attribution::{Method, MethodOptions, Subject};
use std::collections::BTreeMap;

/// One example's map: its id, per-position values and (text) its tokens.
type ExampleMap = (u64, Vec<f32>, Option<Vec<String>>);

/// What the stage found, for the terminal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttributeDone {
    /// Examples explained.
    pub examples: usize,
    /// Per method × target: its verdict.
    pub methods: Vec<MethodRow>,
    /// The run's `attributions/` folder.
    pub dir: std::path::PathBuf,
}

/// The methods to run: the configured ones (each checked against the model), or a default set
/// that fits the model.
fn methods_for(settings: &AttributeSection, model: &LoadedModel) -> Result<Vec<Method>> {
    let family = model.model.family();
    let modality = model.modality();
    if !settings.methods.is_empty() {
        for m in &settings.methods {
            m.check_applies(modality, family)?;
        }
        return Ok(settings.methods.clone());
    }
    Ok(match modality {
        Modality::Text => vec![
            Method::Saliency,
            Method::GradientXInput,
            Method::IntegratedGradients,
            Method::Occlusion,
        ],
        Modality::Vision => {
            let mut v = vec![
                Method::Saliency,
                Method::IntegratedGradients,
                Method::Occlusion,
            ];
            if model
                .model
                .hook_points()
                .contains(&glassbox_models::HookPoint::Head)
            {
                v.push(Method::GradCam);
            } else {
                v.push(Method::AttentionRollout);
            }
            v.push(Method::Edges);
            v
        }
    })
}

/// One subject per example of `inputs` for `target` on `model`.
fn subject<'a>(
    model: &'a LoadedModel,
    inputs: &Inputs,
    i: usize,
    target: &TargetKind,
    batch: usize,
) -> Result<Subject<'a>> {
    Ok(match inputs {
        Inputs::Texts(texts) => {
            let TargetKind::Fixed(t) = target else {
                return Err(anyhow!("class:predicted is for image classifiers"));
            };
            Subject::Text(TextOracle::new(
                model,
                texts[i].1.clone(),
                t.clone(),
                batch,
            )?)
        }
        Inputs::Images { images, size } => {
            let t = match target {
                TargetKind::Fixed(t) => t.clone(),
                TargetKind::Predicted => {
                    let mut w = vec![0f32; model.model.labels().len()];
                    w[images[i].2] = 1.0;
                    Target::Outputs { weights: w }
                }
            };
            Subject::Image(ImageOracle::new(
                model,
                images[i].1.clone(),
                *size,
                &t,
                batch,
            )?)
        }
    })
}

/// The baseline input of a subject.
fn baseline_for(
    subject: &Subject<'_>,
    settings: &AttributeSection,
    mask: Option<u32>,
) -> Result<Vec<f32>> {
    Ok(match subject {
        Subject::Text(t) => {
            let d = glassbox_runner::attribution::oracle::Oracle::width(t);
            let tokens = t.tokens().len();
            let row = match (settings.baseline, mask) {
                (glassbox_runner::attribution::Baseline::Mask, Some(id)) => {
                    Some(t.token_embedding(id)?)
                }
                _ => None,
            };
            text_baseline(settings.baseline, tokens, d, row.as_deref())?
        }
        Subject::Image(i) => {
            let x = glassbox_runner::attribution::oracle::Oracle::input(i);
            image_baseline(settings.baseline, x, i.size(), settings.seed)?
        }
    })
}

/// Runs the stage; `None` when up to date.
pub fn run_attribute(
    run: &RunDir,
    settings: &AttributeSection,
    force: bool,
    progress: &dyn Progress,
) -> Result<Option<AttributeDone>> {
    let started = std::time::Instant::now();
    settings.validate()?;
    let manifest = run.require_stage("extract")?;
    let model = super::run_model::load_run_model(run)?;
    let methods = methods_for(settings, &model)?;
    let targets: Vec<(String, TargetKind)> = settings
        .targets
        .iter()
        .map(|t| Ok((t.clone(), resolve(run, &model, t)?)))
        .collect::<Result<_>>()?;
    let cam_hook = match &settings.cam_hook {
        Some(name) => Some(
            *hooks::select(std::slice::from_ref(name), &model.model.hook_points())?
                .first()
                .ok_or_else(|| anyhow!("--cam-hook `{name}` matches no hook"))?,
        ),
        None => default_cam_hook(&model),
    };
    let inputs = read_inputs(run, &model, settings.max_examples)?;
    let mask = mask_token(&model);
    let (window, stride) = match inputs {
        Inputs::Texts(_) => (settings.window.unwrap_or(1), settings.stride.unwrap_or(1)),
        Inputs::Images { .. } => (settings.window.unwrap_or(16), settings.stride.unwrap_or(16)),
    };
    let opts = MethodOptions {
        steps: settings.steps,
        rule: settings.rule,
        samples: settings.samples,
        noise: settings.noise,
        seed: settings.seed,
        window,
        stride,
        cam_hook,
    };
    let eval = EvalOptions {
        curve_points: settings.curve_points,
        cell: settings.cell,
        sensitivity_samples: settings.sensitivity_samples,
        sensitivity_radius: settings.sensitivity_radius,
    };
    // Fail on a bad baseline before any work: build the first subject's.
    {
        let first = subject(&model, &inputs, 0, &targets[0].1, settings.batch_size)?;
        baseline_for(&first, settings, mask)?;
    }
    let params = serde_json::json!({
        "extract": manifest.stage_fingerprint("extract"),
        "probe": manifest.stage_fingerprint("probe"),
        "attribute": settings,
        "methods": methods,
    });
    let fp = fingerprint("attribute", &params);
    let current = Manifest::load_or_default(run)?;
    if !force && current.stage_fingerprint("attribute") == Some(fp.as_str()) {
        progress.note("attribute: up to date; --force re-runs it");
        return Ok(None);
    }
    let tx = Transaction::begin(run, "attribute", vec!["attributions".into()], &fp, false)?;
    let dir = tx.run().path("attributions");
    std::fs::create_dir_all(&dir)?;
    let n = inputs.len();
    progress.start("attribute (examples × targets)", (n * targets.len()) as u64);
    let labels = model.model.labels().to_vec();
    let mut summary = Vec::new();
    let mut curves = Vec::new();
    // Original maps kept for the randomisation check: (target, method, example) → map.
    let mut originals: BTreeMap<(usize, Method, usize), Vec<f32>> = BTreeMap::new();
    for (ti, (spec, kind)) in targets.iter().enumerate() {
        let mut maps: BTreeMap<Method, Vec<ExampleMap>> = BTreeMap::new();
        for i in 0..n {
            let s = subject(&model, &inputs, i, kind, settings.batch_size)?;
            let baseline = baseline_for(&s, settings, mask)?;
            let result = explain_example(&s, &methods, &baseline, &opts, &eval)?;
            let (example_id, predicted, tokens) = match (&inputs, &s) {
                (Inputs::Texts(t), Subject::Text(o)) => (t[i].0, None, Some(o.tokens().to_vec())),
                (Inputs::Images { images, .. }, _) => {
                    (images[i].0, labels.get(images[i].2).cloned(), None)
                }
                _ => unreachable!("subjects follow their inputs"),
            };
            for m in &result.methods {
                let name = m.method.as_str().to_owned();
                let auc = |f: fn(&glassbox_runner::attribution::evaluate::Curves) -> &Vec<f64>| {
                    m.curves.as_ref().map(|c| area(&c.fractions, f(c)))
                };
                summary.push(SummaryRow {
                    example_id,
                    method: name.clone(),
                    target: spec.clone(),
                    predicted: predicted.clone(),
                    f_input: result.f_input,
                    f_baseline: result.f_baseline,
                    attribution_sum: m.attribution_sum,
                    completeness_error: m.completeness_error,
                    deletion_morf_auc: auc(|c| &c.deletion_morf),
                    deletion_lerf_auc: auc(|c| &c.deletion_lerf),
                    insertion_morf_auc: auc(|c| &c.insertion_morf),
                    insertion_lerf_auc: auc(|c| &c.insertion_lerf),
                    comprehensiveness: m.comprehensiveness,
                    sufficiency: m.sufficiency,
                    max_sensitivity: m.max_sensitivity,
                });
                if let Some(c) = &m.curves {
                    for (curve, values) in [
                        ("deletion_morf", &c.deletion_morf),
                        ("deletion_lerf", &c.deletion_lerf),
                        ("insertion_morf", &c.insertion_morf),
                        ("insertion_lerf", &c.insertion_lerf),
                    ] {
                        for (fraction, value) in c.fractions.iter().zip(values) {
                            curves.push(CurveRow {
                                example_id,
                                method: name.clone(),
                                target: spec.clone(),
                                curve,
                                fraction: *fraction,
                                value: *value,
                            });
                        }
                    }
                }
                if i < settings.sanity_examples {
                    originals.insert((ti, m.method, i), m.explained.positions.clone());
                }
                maps.entry(m.method).or_default().push((
                    example_id,
                    m.explained.positions.clone(),
                    tokens.clone(),
                ));
            }
            progress.advance(1);
        }
        let image_width = match &inputs {
            Inputs::Images { size, .. } => Some(size.1),
            Inputs::Texts(_) => None,
        };
        for (method, rows) in &maps {
            let folder = dir
                .join(format!("method={}", method.as_str()))
                .join(format!("target={}", slug(spec)));
            let views: Vec<MapRows<'_>> = rows
                .iter()
                .map(|(id, values, tokens)| MapRows {
                    example_id: *id,
                    values,
                    tokens: tokens.as_deref(),
                    image_width,
                })
                .collect();
            write_maps(&folder, &views)?;
        }
    }
    progress.finish();
    let sanity = if settings.sanity {
        sanity_check(
            run, settings, &model, &inputs, &targets, &methods, &opts, &originals, progress,
        )?
    } else {
        Vec::new()
    };
    let verdicts = method_rows(
        &targets,
        &methods,
        &summary,
        &sanity,
        settings.sanity_threshold,
    );
    write_curves(&dir, &curves)?;
    write_sanity(&dir, &sanity)?;
    write_methods(&dir, &verdicts)?;
    if let Inputs::Images { images, size } = &inputs {
        let pre = model.preprocessor()?;
        let folder = dir.join("inputs");
        std::fs::create_dir_all(&folder)?;
        for (id, pixels, _) in images {
            glassbox_data::images::write_model_input_png(
                &folder.join(format!("{id}.png")),
                pixels,
                *size,
                &pre,
            )?;
        }
    }
    write_summary(&dir, &summary)?;
    // The page reads the tables back: last.
    glassbox_reports::attribution::write_attribution_page(run, &dir)?;
    let done = Completion {
        stage: Stage::Attribute,
        fingerprint: fp,
        seed: Some(settings.seed),
        params,
        started,
    };
    tx.commit(
        done,
        |_| {},
        |config| config.attribute = Some(settings.clone()),
    )?;
    Ok(Some(AttributeDone {
        examples: n,
        methods: verdicts,
        dir: run.path("attributions"),
    }))
}

/// The cascading model-parameter randomisation: at each step the model is reloaded with layer
/// groups destroyed from the output down, the first `sanity_examples` examples re-explained,
/// and each map compared with the trained model's.
#[allow(clippy::too_many_arguments)]
fn sanity_check(
    run: &RunDir,
    settings: &AttributeSection,
    model: &LoadedModel,
    inputs: &Inputs,
    targets: &[(String, TargetKind)],
    methods: &[Method],
    opts: &MethodOptions,
    originals: &BTreeMap<(usize, Method, usize), Vec<f32>>,
    progress: &dyn Progress,
) -> Result<Vec<SanityRow>> {
    let spec: ModelSpec = super::run_model::run_model_spec(run)?.parse()?;
    let extract = crate::config::RunConfig::load(run).extract;
    let options = LoadOptions {
        max_length: None,
        allow_pickle: extract.as_ref().is_some_and(|e| e.allow_pickle),
        weights_dtype: extract.map(|e| e.weights_dtype).unwrap_or_default(),
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
        mask: mask_token(model),
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
    originals: &'a BTreeMap<(usize, Method, usize), Vec<f32>>,
    mask: Option<u32>,
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
            let baseline = baseline_for(&s, self.settings, self.mask)?;
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

/// Per method × target: means over examples, the sanity verdict, and the rank (by faithfulness
/// among methods that passed; failed and unchecked methods after them).
fn method_rows(
    targets: &[(String, TargetKind)],
    methods: &[Method],
    summary: &[SummaryRow],
    sanity: &[SanityRow],
    threshold: f64,
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
                MethodRow {
                    method: name.to_owned(),
                    target: target.clone(),
                    examples: mine.len() as u64,
                    faithfulness: mean(mine.iter().map(|r| r.faithfulness())),
                    comprehensiveness: mean(mine.iter().map(|r| r.comprehensiveness)),
                    sufficiency: mean(mine.iter().map(|r| r.sufficiency)),
                    max_sensitivity: mean(mine.iter().map(|r| r.max_sensitivity)),
                    completeness_error: mean(mine.iter().map(|r| r.completeness_error)),
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
        out.extend(rows);
    }
    out
}
