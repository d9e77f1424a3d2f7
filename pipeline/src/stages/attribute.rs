//! The `attribute` stage: input attributions of the run's examples for each target × method,
//! their faithfulness and robustness, and the model-randomisation sanity check. Writes
//! `attributions/`.

use super::attribute_inputs::{
    default_cam_hook, mask_token, read_inputs, refuse_repeats, resolve, subject, Inputs, TargetKind,
};
use super::attribute_part::{attribute_part, AttributeFragment, PartContext};
use super::attribute_verdicts::{method_rows, sanity_check, Originals};
use super::parted::{Parted, ShardRun};
use super::{Completion, Stage};
use crate::config::AttributeSection;
use crate::fingerprint::fingerprint;
use anyhow::{anyhow, Result};
use glassbox_data::shards::ShardSpec;
use glassbox_data::{Manifest, Modality, Progress, RunDir};
use glassbox_models::{hooks, LoadedModel};
use glassbox_runner::attribution::run::EvalOptions;
use glassbox_runner::attribution::tables::{
    write_curves, write_methods, write_sanity, write_summary, MethodRow,
};
use glassbox_runner::attribution::{Method, MethodOptions, Subject};

/// Bootstrap resamples of the examples behind each method's faithfulness interval and the top
/// method's lead (seeded by the stage's `seed`).
const VERDICT_RESAMPLES: usize = 1000;

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
            // CNNs (Grad-CAM's default hook is a feature map) get Grad-CAM, transformers rollout.
            let cnn = matches!(
                default_cam_hook(model),
                Some(glassbox_models::HookPoint::Head | glassbox_models::HookPoint::Conv { .. })
            );
            if cnn {
                v.push(Method::GradCam);
            } else {
                v.push(Method::AttentionRollout);
            }
            v.push(Method::Edges);
            v
        }
    })
}

/// Runs the stage over the whole run; `None` when up to date.
pub fn run_attribute(
    run: &RunDir,
    settings: &AttributeSection,
    force: bool,
    progress: &dyn Progress,
) -> Result<Option<AttributeDone>> {
    Ok(run_attribute_parts(run, settings, force, None, progress)?.whole())
}

/// Runs the stage's examples part by part — this worker's parts only with `shard` — and, once
/// every part is there, the randomisation checks and the verdicts, and commits.
pub fn run_attribute_parts(
    run: &RunDir,
    settings: &AttributeSection,
    force: bool,
    shard: Option<ShardSpec>,
    progress: &dyn Progress,
) -> Result<ShardRun<AttributeDone>> {
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
    refuse_repeats(&targets)?;
    let cam_hook = match &settings.cam_hook {
        Some(name) => Some(
            *hooks::select(std::slice::from_ref(name), &model.model.hook_points())?
                .first()
                .ok_or_else(|| anyhow!("--cam-hook `{name}` matches no hook"))?,
        ),
        // Resolved per target: a probe's Grad-CAM defaults to its own hook.
        None => None,
    };
    let inputs = read_inputs(run, &model, settings.max_examples)?;
    let baselines = super::attribute_baseline::Baselines::load(
        settings,
        mask_token(&model),
        &inputs,
        model.model.hook_width(glassbox_models::HookPoint::Embed),
    )?;
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
        baselines.for_subject(&first, settings)?;
        // And on a Grad-CAM hook a probe target does not depend on.
        if methods.contains(&Method::GradCam) {
            for (spec, target) in &targets {
                if let Subject::Image(i) = subject(&model, &inputs, 0, target, 1)? {
                    i.cam_hook(opts.cam_hook)
                        .map_err(|e| anyhow!("target `{spec}`: {e}"))?;
                }
            }
        }
    }
    let params = serde_json::json!({
        "extract": manifest.stage_fingerprint("extract"),
        "probe": manifest.stage_fingerprint("probe"),
        "attribute": settings,
        "methods": methods,
        "baseline_sha256": baselines.file_sha256()?,
    });
    let fp = fingerprint("attribute", &params);
    let current = Manifest::load_or_default(run)?;
    if !force && current.stage_fingerprint("attribute") == Some(fp.as_str()) {
        crate::fingerprint::note_up_to_date(progress, &current, "attribute", "");
        return Ok(ShardRun::UpToDate);
    }
    let n = inputs.len();
    let parted = Parted {
        run,
        stage: "attribute",
        outputs: vec!["attributions".into()],
        fingerprint: fp.clone(),
        params: params.clone(),
        items: n,
        part_size: settings.part_size,
        shard,
        force,
        progress: (
            "attribute (examples × targets)".into(),
            targets.len() as u64,
        ),
    };
    let cx = PartContext {
        model: &model,
        settings,
        inputs: &inputs,
        targets: &targets,
        methods: &methods,
        opts: &opts,
        eval: &eval,
        baselines: &baselines,
    };
    let outcome = parted.run(progress, |part| attribute_part(&cx, part, progress))?;
    outcome.settle(shard, |ready| {
        let fragments: Vec<AttributeFragment> = ready.fragments()?;
        // Target by target, then example by example: the order one process explains them in.
        let (mut summary, mut curves) = (Vec::new(), Vec::new());
        let mut originals = Originals::new();
        for ti in 0..targets.len() {
            for fragment in &fragments {
                let rows = fragment.targets.get(ti).ok_or_else(|| {
                    anyhow!("attribute: a part's rows lack target {ti}; run the stage with --force")
                })?;
                summary.extend(rows.summary.iter().cloned());
                curves.extend(rows.curves.iter().cloned());
                for (method, i, map) in &rows.originals {
                    originals.insert((ti, *method, *i), map.clone());
                }
            }
        }
        let sanity = if settings.sanity {
            sanity_check(
                run, settings, &model, &inputs, &targets, &methods, &opts, &originals, &baselines,
                progress,
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
            (VERDICT_RESAMPLES, settings.seed),
        );
        let tx = ready.tx;
        let dir = tx.run().path("attributions");
        std::fs::create_dir_all(&dir)?;
        write_curves(&dir, &curves)?;
        write_sanity(&dir, &sanity)?;
        write_methods(&dir, &verdicts)?;
        write_summary(&dir, &summary)?;
        // The page reads the tables back: last.
        glassbox_reports::attribution::write_attribution_page(tx.run(), &dir)?;
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
        Ok(AttributeDone {
            examples: n,
            methods: verdicts,
            dir: run.path("attributions"),
        })
    })
}
