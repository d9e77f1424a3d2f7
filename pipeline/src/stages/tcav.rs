//! The `gradients` step and the `tcav` stage.
//!
//! `gradients` runs the run's model differentiably on the target's examples and stores
//! `∂ target / ∂ activation` under `gradients/target=<slug>/hook=<hook>/` (keyed like the token
//! activations). `tcav` reads those gradients back, computes pooled activations of the concept
//! and random sets with the model, trains the CAVs and writes `tcav/cavs.parquet` and
//! `tcav/scores.parquet`.

use super::parted::{Parted, ShardRun};
pub use super::run_model::{load_run_model, run_model_spec};
pub use super::targets::ProbeTarget;
use super::targets::{resolve_target, ResolvedTarget};
use super::tcav_scoring::{score_and_record, PooledSets};
use super::{Completion, Stage, Transaction};
use crate::config::TcavSection;
use crate::fingerprint::fingerprint;
use anyhow::{bail, Result};
use glassbox_concepts::{Convention, ScoreRow};
use glassbox_data::concepts::{
    builtin_corpus, random_corpus, random_sets, read_concept, ConceptSet,
};
use glassbox_data::shards::ShardSpec;
use glassbox_data::store::read_parts;
use glassbox_data::{Progress, RunDir};
use glassbox_models::{hooks, HookPoint, LoadedModel, Pool};
use glassbox_runner::gradient_store::{
    write_gradient_part, write_gradients, GradientJob, DEFAULT_PART_SIZE,
};
use glassbox_runner::gradients::{self, pooled_activations};
use std::collections::BTreeMap;

/// The CAV hooks: the configured patterns, or every `hook_resid_post` before `before`.
fn cav_hooks(
    model: &LoadedModel,
    patterns: &[String],
    before: HookPoint,
) -> Result<Vec<HookPoint>> {
    let points = model.model.hook_points();
    if patterns.is_empty() {
        let chosen: Vec<HookPoint> = points
            .into_iter()
            .filter(|p| matches!(p, HookPoint::ResidPost(_)) && p.depth() < before.depth())
            .collect();
        if chosen.is_empty() {
            bail!("no hook_resid_post comes before the target's hook `{before}`; name hooks with --hooks");
        }
        return Ok(chosen);
    }
    Ok(hooks::select(patterns, &points)?)
}

/// What `glassbox gradients` computes.
pub struct GradientsRequest<'a> {
    /// `probe:<label>=<class>[@<hook>]`.
    pub target: &'a str,
    /// Hook names or globs; empty: every `hook_resid_post` before the target's hook.
    pub hooks: &'a [String],
    pub convention: Convention,
    /// Examples per forward/backward.
    pub batch_size: usize,
    /// Examples per part (the unit of resumption and of `--shard`).
    pub part_size: usize,
}

/// The `gradients` step: computes the target's gradients at its hooks for the examples of its
/// class, part by part (this worker's parts only with `shard`), and once every part is there
/// swaps them into the run (other targets' and hooks' gradients stay); returns the folders
/// written.
pub fn run_gradients_step(
    run: &RunDir,
    req: &GradientsRequest<'_>,
    shard: Option<ShardSpec>,
    progress: &dyn Progress,
) -> Result<ShardRun<Vec<std::path::PathBuf>>> {
    if req.batch_size == 0 {
        bail!("gradients: batch_size = 0; it must be at least 1");
    }
    let manifest = run.require_stage("probe")?;
    let model = load_run_model(run)?;
    let target = ProbeTarget::parse(req.target)?;
    let resolved = resolve_target(run, &model, &target)?;
    let hooks = cav_hooks(&model, req.hooks, resolved.head.hook)?;
    let slug = target.slug(req.convention);
    let outputs: Vec<std::path::PathBuf> = hooks
        .iter()
        .map(|h| RunDir::gradients_target_rel(&slug).join(format!("hook={h}")))
        .collect();
    let params = serde_json::json!({
        "probe": manifest.stage_fingerprint("probe"),
        "target": target.spec,
        "hooks": outputs,
        "convention": req.convention.as_str(),
        "batch_size": req.batch_size,
        "part_size": req.part_size,
    });
    let fp = fingerprint("gradients", &params);
    let job = gradient_job(
        &target,
        &slug,
        &resolved,
        &hooks,
        req.convention,
        req.batch_size,
    );
    let examples = glassbox_data::examples::read_examples(run)?;
    let parted = Parted {
        run,
        stage: "gradients",
        outputs: outputs.clone(),
        fingerprint: fp,
        params,
        items: resolved.examples.len(),
        part_size: req.part_size,
        shard,
        // Not a stage of the manifest: every call computes afresh (or resumes its own attempt).
        force: false,
        progress: (format!("gradients {}", target.spec), 1),
    };
    let outcome = parted.run(progress, |part| {
        Ok(write_gradient_part(
            part.staged,
            &model,
            &job,
            &examples,
            part.index,
            part.items.clone(),
            progress,
        )?)
    })?;
    outcome.settle(shard, |ready| {
        ready.tx.commit_outputs()?;
        Ok(outputs.iter().map(|rel| run.path(rel)).collect())
    })
}

/// What the runner needs to store one resolved target's gradients.
fn gradient_job<'a>(
    target: &'a ProbeTarget,
    slug: &'a str,
    resolved: &'a ResolvedTarget,
    hooks: &'a [HookPoint],
    convention: Convention,
    batch_size: usize,
) -> GradientJob<'a> {
    GradientJob {
        name: &target.spec,
        slug,
        head: &resolved.head,
        convention: match convention {
            Convention::Logit => gradients::Convention::Logit,
            Convention::Loss => gradients::Convention::Loss,
        },
        examples: &resolved.examples,
        hooks,
        batch_size,
    }
}

/// Fails, naming the hook and the command to run, when a target's gradients are not stored.
fn gradients_present(
    run: &RunDir,
    target: &ProbeTarget,
    convention: Convention,
    hook: HookPoint,
) -> Result<()> {
    let dir = run.gradients_dir(&target.slug(convention), hook);
    if !dir.exists() {
        if let Some(plan) = glassbox_data::shards::ShardPlan::load(run.root(), "gradients")? {
            let missing: Vec<String> = plan
                .incomplete(run.root())
                .iter()
                .map(|s| format!("{}/{} ({})", s.index, s.count, s.state()))
                .collect();
            if !missing.is_empty() {
                bail!(
                    "hook `{hook}` has no gradients for target `{}` yet: a sharded `glassbox gradients` is incomplete, shards {} not finished; run each with the same settings (`glassbox inspect` shows every shard)",
                    target.spec,
                    missing.join(", ")
                );
            }
        }
        bail!(
            "hook `{hook}` has no gradients for target `{}` ({} convention; {} is missing); run `glassbox gradients --run {} --target '{}' --hooks {hook}{}` first",
            target.spec,
            convention.as_str(),
            dir.display(),
            run.root().display(),
            target.spec,
            if convention == Convention::Loss { " --convention loss" } else { "" }
        );
    }
    Ok(())
}

/// Summed gradients per example (`Σ_t ∂f/∂h_t`), in example order, read back from the store.
fn gradient_sums(run: &RunDir, slug: &str, hook: HookPoint) -> Result<(Vec<f32>, usize)> {
    let dir = run.gradients_dir(slug, hook);
    let mut sums: BTreeMap<u64, Vec<f32>> = BTreeMap::new();
    let mut width = 0;
    read_parts(&dir, |batch| {
        width = batch.width;
        for (i, id) in batch.example_ids.iter().enumerate() {
            let row = &batch.values[i * width..(i + 1) * width];
            let sum = sums.entry(*id).or_insert_with(|| vec![0.0; width]);
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        Ok(())
    })?;
    Ok((sums.into_values().flatten().collect(), width))
}

/// Runs TCAV over the stored gradients; returns the score rows.
/// Where the text TCAV stage's target gradients come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gradients {
    /// Stored earlier by `glassbox gradients` (the CLI's `tcav`).
    Stored,
    /// Computed by the stage (the pipeline).
    Compute,
}

/// Runs the stage; returns the new scores, or `None` when the run was up to date.
pub fn run_tcav_stage(
    run: &RunDir,
    settings: &TcavSection,
    gradients: Gradients,
    force: bool,
    progress: &dyn Progress,
) -> Result<Option<Vec<ScoreRow>>> {
    settings.validate()?;
    if super::run_model::run_modality(run) == glassbox_data::Modality::Vision {
        return super::tcav_vision::run_tcav_vision(run, settings, force, progress);
    }
    let compute = gradients == Gradients::Compute;
    let started = std::time::Instant::now();
    let manifest = run.require_stage("probe")?;
    let concepts: Vec<ConceptSet> = settings
        .concepts
        .iter()
        .map(|p| read_concept(p, settings.min_concept_size))
        .collect::<Result<_, _>>()?;
    let corpus = match &settings.random_corpus {
        Some(path) => read_concept(path, 1)?,
        None => builtin_corpus(),
    };
    let params = serde_json::json!({
        "probe": manifest.stage_fingerprint("probe"),
        "tcav": settings,
        "concepts": concepts.iter().map(|c| &c.sha256).collect::<Vec<_>>(),
        "corpus": corpus.sha256,
    });
    let fp = fingerprint("tcav", &params);
    if !force && manifest.stage_fingerprint("tcav") == Some(fp.as_str()) {
        crate::fingerprint::note_up_to_date(progress, &manifest, "tcav", "");
        return Ok(None);
    }
    // Random sets are drawn (cheaply) first, so a corpus too small for them stops the stage
    // before it loads the model, voids old results or computes gradients.
    let size = if settings.random_set_size > 0 {
        settings.random_set_size
    } else {
        concepts.iter().map(|c| c.texts.len()).min().unwrap_or(1)
    };
    let corpus = random_corpus(&corpus, &concepts.iter().collect::<Vec<_>>(), progress);
    let randoms = random_sets(&corpus, settings.random_runs + 1, size, settings.seed)?;
    // Everything that can be checked is checked before the stage's old results are voided.
    let model = load_run_model(run)?;
    let targets: Vec<ProbeTarget> = settings
        .targets
        .iter()
        .map(|t| ProbeTarget::parse(t).map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    let resolved_targets: Vec<ResolvedTarget> = targets
        .iter()
        .map(|t| resolve_target(run, &model, t))
        .collect::<Result<_>>()?;
    // The same head twice would be tested twice and counted twice by the correction.
    let same = |a: &ResolvedTarget, b: &ResolvedTarget| a.head.same_score(&b.head);
    if let Some((i, j)) = glassbox_data::limits::first_repeat_by(&resolved_targets, same) {
        bail!(
            "tcav: targets `{}` and `{}` name the same probe head; list it once",
            targets[i].spec,
            targets[j].spec
        );
    }
    let mut target_hooks: Vec<(ProbeTarget, Vec<HookPoint>)> = Vec::new();
    for (target, resolved) in targets.iter().zip(&resolved_targets) {
        let hooks = cav_hooks(&model, &settings.hooks, resolved.head.hook)?;
        if !compute {
            for hook in &hooks {
                gradients_present(run, target, settings.convention, *hook)?;
            }
        }
        target_hooks.push((target.clone(), hooks));
    }
    let mut outputs = vec![std::path::PathBuf::from("tcav")];
    if compute {
        outputs.extend(
            targets
                .iter()
                .map(|t| RunDir::gradients_target_rel(&t.slug(settings.convention))),
        );
    }
    let tx = Transaction::begin(run, "tcav", outputs, &fp, false)?;
    if compute {
        for ((target, hooks), resolved) in target_hooks.iter().zip(&resolved_targets) {
            let slug = target.slug(settings.convention);
            let job = gradient_job(
                target,
                &slug,
                resolved,
                hooks,
                settings.convention,
                settings.batch_size,
            );
            write_gradients(tx.run(), &model, &job, DEFAULT_PART_SIZE, progress)?;
        }
    }
    let mut all_hooks: Vec<HookPoint> = target_hooks.iter().flat_map(|(_, h)| h.clone()).collect();
    all_hooks.sort();
    all_hooks.dedup();

    progress.start(
        "tcav: concept activations",
        (concepts.len() + randoms.len()) as u64,
    );
    let mut pooled: Vec<BTreeMap<HookPoint, Vec<f32>>> = Vec::new();
    for set in concepts.iter().chain(&randoms) {
        pooled.push(pooled_activations(
            &model,
            &set.texts,
            &all_hooks,
            Pool::Mean,
            32,
        )?);
        progress.advance(1);
    }
    progress.finish();

    let mut sums: Vec<(String, HookPoint, Vec<f32>)> = Vec::new();
    for (target, hooks) in &target_hooks {
        let slug = target.slug(settings.convention);
        for hook in hooks {
            let (s, _) = gradient_sums(tx.run(), &slug, *hook)?;
            sums.push((target.spec.clone(), *hook, s));
        }
    }
    let width = |h: HookPoint| model.model.hook_width(h);
    let names: Vec<&str> = concepts.iter().map(|c| c.name.as_str()).collect();
    let pooled = PooledSets {
        concepts: &names,
        sets: &pooled,
        randoms: randoms.len(),
        width: &width,
    };
    let done = Completion {
        stage: Stage::Tcav,
        fingerprint: fp,
        seed: Some(settings.seed),
        params,
        started,
    };
    score_and_record(tx, settings, &all_hooks, &pooled, &sums, done).map(Some)
}
