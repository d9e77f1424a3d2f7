//! Command-line dispatch: turns the parsed arguments (`args`) into stage settings and runs the
//! stage under the run's lock. Results go to stdout; progress and notes to stderr.

pub use crate::args::Cli;
use crate::args::{CavArg, Command, LevelArg};
use crate::config::{ExtractSection, ProbeSection, TcavSection};
use crate::progress::Bars;
use crate::render;
use crate::run_location::open_run;
use crate::run_pipeline::run_pipeline;
use crate::stages::{dictionary, extract, extract_shard, probe, report, tcav, with_run_lock};
use anyhow::Result;

pub fn run(cli: Cli) -> Result<()> {
    let bars = Bars::new(cli.quiet);
    match cli.command {
        Command::Extract(a) => {
            let settings = ExtractSection {
                hooks: a.hooks,
                batch_size: a.batch_size,
                max_length: a.max_length,
                dtype: a.dtype,
                compression: a.compression,
                pools: a.pools,
                token_level: !a.no_token_level,
                shard_size: a.shard_size,
                allow_pickle: a.allow_pickle,
                weights_dtype: a.weights_dtype,
                compute_dtype: a.compute_dtype,
            };
            let req = extract::ExtractRequest {
                model: &a.model,
                data: &a.data,
                settings: &settings,
                force: a.force,
            };
            let run = open_run(&a.run)?;
            match a.shard {
                Some(shard) => {
                    let outcome = extract_shard::run_extract_shard(&run, &req, shard, &bars)?;
                    render::extract_shard(&outcome, &run)?;
                }
                None => {
                    let done = with_run_lock(&run, || extract::run_extract(&run, &req, &bars))?;
                    render::extracted(done.as_ref())?;
                }
            }
        }
        Command::Probe(a) => {
            let (labels, mut token_labels) = match a.level {
                LevelArg::Sequence => (a.label, Vec::new()),
                LevelArg::Token => (Vec::new(), a.label),
            };
            token_labels.extend(a.token_label);
            let settings = ProbeSection {
                labels,
                token_labels,
                validation_fraction: a.validation_fraction,
                l2_grid: a.l2,
                max_per_class: a.max_per_class,
                mdl: a.mdl,
                neurons: !a.no_neurons,
                bootstrap: a.bootstrap,
                pool: a.pool,
                seed: a.seed,
                test_fraction: a.test_fraction,
                split_by: a.split_by,
                ..ProbeSection::default()
            };
            let run = open_run(&a.run)?;
            let results =
                with_run_lock(&run, || probe::run_probe(&run, &settings, a.force, &bars))?;
            render::probes(results.as_deref(), a.json)?;
        }
        Command::Gradients(a) => {
            let run = open_run(&a.run)?;
            let req = tcav::GradientsRequest {
                target: &a.target,
                hooks: &a.hooks,
                convention: a.convention.into(),
                batch_size: a.batch_size,
                part_size: a.part_size,
            };
            let step = || tcav::run_gradients_step(&run, &req, a.shard, &bars);
            let outcome = match a.shard {
                Some(_) => step()?,
                None => with_run_lock(&run, step)?,
            };
            render::shard_run("gradients", &outcome, &run, |written| {
                for dir in written {
                    crate::outln!("{}", dir.display())?;
                }
                Ok(())
            })?;
        }
        Command::Tcav(a) => {
            let settings = TcavSection {
                concepts: a.concepts,
                targets: a.target,
                hooks: a.hooks,
                random_runs: a.random_runs,
                random_set_size: a.random_set_size,
                random_corpus: a.random_corpus,
                min_concept_size: a.min_concept_size,
                cav: match a.cav {
                    CavArg::Logistic => glassbox_concepts::CavMethod::Logistic,
                    CavArg::Hinge => glassbox_concepts::CavMethod::Hinge,
                },
                convention: a.convention.into(),
                alpha: a.alpha,
                min_cav_accuracy: a.min_cav_accuracy,
                seed: a.seed,
                ..TcavSection::default()
            };
            let run = open_run(&a.run)?;
            let scores = with_run_lock(&run, || {
                tcav::run_tcav_stage(&run, &settings, tcav::Gradients::Stored, a.force, &bars)
            })?;
            render::tcav(scores.as_deref(), a.json)?;
        }
        Command::Dictionary(a) => {
            let run = open_run(&a.run)?;
            let (force, json, pause_after) = (a.force, a.json, a.pause_after);
            let settings = a.settings()?;
            let done = with_run_lock(&run, || {
                dictionary::run_dictionary_stage(&run, &settings, force, pause_after, &bars)
            })?;
            render::dictionary(&done, json)?;
        }
        Command::Patch(a) => {
            let run = open_run(&a.run)?;
            let settings = a.settings();
            let model = match &a.model {
                Some(m) => m.clone(),
                None => crate::stages::run_model::run_model_spec(&run).map_err(|e| {
                    anyhow::anyhow!("{e}; pass --model ORG/NAME (a causal LM) to patch with")
                })?,
            };
            let stage = || {
                crate::stages::patch::run_patch_parts(
                    &run, &model, &settings, a.force, a.shard, &bars,
                )
            };
            let outcome = match a.shard {
                Some(_) => stage()?,
                None => with_run_lock(&run, stage)?,
            };
            if matches!(outcome, crate::stages::parted::ShardRun::UpToDate) {
                render::patch(None, a.json)?;
            }
            render::shard_run("patch", &outcome, &run, |done| {
                render::patch(Some(done), a.json)
            })?;
        }
        Command::Causal(a) => {
            let run = open_run(&a.run)?;
            let settings = a.settings();
            let done = with_run_lock(&run, || {
                crate::stages::causal::run_causal(&run, &settings, a.force, &bars)
            })?;
            render::causal(done.as_ref(), a.json)?;
        }
        Command::Dissect(a) => {
            let run = open_run(&a.run)?;
            let settings = a.settings();
            let done = with_run_lock(&run, || {
                crate::stages::dissect::run_dissect(&run, &settings, a.force, &bars)
            })?;
            render::dissect(done.as_ref(), a.json)?;
        }
        Command::Attribute(a) => {
            let run = open_run(&a.run)?;
            let settings = a.settings()?;
            let stage = || {
                crate::stages::attribute::run_attribute_parts(
                    &run, &settings, a.force, a.shard, &bars,
                )
            };
            let outcome = match a.shard {
                Some(_) => stage()?,
                None => with_run_lock(&run, stage)?,
            };
            if matches!(outcome, crate::stages::parted::ShardRun::UpToDate) {
                render::attribute(None, a.json)?;
            }
            render::shard_run("attribute", &outcome, &run, |done| {
                render::attribute(Some(done), a.json)
            })?;
        }
        Command::Report(a) => {
            let run = open_run(&a.run)?;
            let done = with_run_lock(&run, || report::run_report(&run, a.force, &bars))?;
            render::report(&done)?;
        }
        Command::Pipeline(a) => run_pipeline(a, &bars)?,
        Command::Export(crate::args_export::ExportCommand::Neuronpedia(a)) => {
            let run = open_run(&a.target.run)?;
            let hooks = export_hooks(&run, &a.target.hooks, &a.target.out)?;
            let opts = glassbox_reports::neuronpedia::ExportOptions {
                model_id: a.model_id,
                source_set: a.source_set,
                release: a.release,
                creator_id: a
                    .creator_id
                    .or_else(|| std::env::var("NEURONPEDIA_CREATOR_ID").ok())
                    .unwrap_or_else(|| "glassbox".into()),
                creator_name: a.creator_name,
                url: a.url,
            };
            let written = glassbox_reports::neuronpedia::export_neuronpedia(
                &run,
                &hooks,
                &opts,
                &a.target.out,
            )?;
            if a.json {
                crate::outln!("{}", serde_json::to_string_pretty(&written)?)?;
            } else {
                for w in &written {
                    crate::outln!(
                        "{}: {} features, {} activations, {} explanations → {}",
                        w.hook,
                        w.features,
                        w.activations,
                        w.explanations,
                        w.folder.display()
                    )?;
                }
            }
        }
        Command::Export(crate::args_export::ExportCommand::Delphi(a)) => {
            let run = open_run(&a.target.run)?;
            let hooks = export_hooks(&run, &a.target.hooks, &a.target.out)?;
            let written = crate::export_delphi::export(&run, &hooks, &a, &bars)?;
            if a.json {
                crate::outln!("{}", serde_json::to_string_pretty(&written)?)?;
            } else {
                for w in &written {
                    crate::outln!(
                        "{}: {} sequences of {} tokens ({} dropped), {} activations in {} files → {}",
                        w.hook,
                        w.sequences,
                        a.context_size,
                        w.tokens_dropped,
                        w.activations,
                        w.files,
                        w.folder.display()
                    )?;
                }
            }
        }
        Command::Sae(crate::args::SaeCommand::Inspect(a)) => {
            let found = glassbox_concepts::sae::formats::inspect::inspect(&a.folder)?;
            // The headers describe what the folder claims; --check loads it as a stage would.
            let check = a
                .check
                .then(|| glassbox_concepts::sae::formats::load_with(&a.folder, a.allow_pickle));
            if a.json {
                let mut value = serde_json::to_value(&found)?;
                if let Some(check) = &check {
                    value["check"] = match check {
                        Ok(_) => serde_json::json!({"loads": true}),
                        Err(e) => serde_json::json!({"loads": false, "error": e.to_string()}),
                    };
                }
                crate::outln!("{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                crate::outln!("{}", found.render().trim_end())?;
                if let Some(Ok(loaded)) = &check {
                    crate::outln!(
                        "check         loads: d_in {}, width {}, every value finite",
                        loaded.sae.d_in,
                        loaded.sae.width
                    )?;
                }
            }
            if let Some(Err(e)) = check {
                return Err(e.into());
            }
        }
        Command::Hooks(a) => {
            let spec: glassbox_models::ModelSpec = a.model.parse()?;
            let resolved = glassbox_models::resolve(&spec)?;
            let options = glassbox_models::LoadOptions {
                max_length: None,
                allow_pickle: a.allow_pickle,
                weights_dtype: a.weights_dtype,
                compute_dtype: Default::default(),
            };
            let model = glassbox_models::load_model(resolved, options)?;
            for note in &model.notes {
                eprintln!("{note}");
            }
            for point in model.model.hook_points() {
                crate::outln!("{point}")?;
            }
        }
        Command::Inspect(a) => crate::inspect::inspect(&open_run(a.run())?, a.json)?,
        Command::Textures(a) => {
            use glassbox_data::textures::{write_texture_set, Texture};
            let mut names = a.kinds.clone();
            if names.is_empty() {
                names = Texture::CONCEPTS
                    .iter()
                    .map(|t| t.name().to_owned())
                    .collect();
                if !a.masks {
                    names.push(Texture::Random.name().to_owned());
                }
            }
            let kinds = names
                .iter()
                .map(|k| {
                    Texture::parse(k.trim()).ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown texture `{k}`; use stripes, dots, checkerboard, zigzag or random"
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if a.masks {
                glassbox_data::masked_textures::write_masked_set(
                    &a.out,
                    &kinds,
                    a.per_class,
                    a.size,
                    a.seed,
                )?;
            } else {
                write_texture_set(&a.out, &kinds, a.per_class, a.size, a.seed)?;
            }
            crate::outln!(
                "textures: {} × {} {} of {} px (seed {}) → {}",
                kinds.len(),
                a.per_class,
                if a.masks {
                    "masked composites"
                } else {
                    "images"
                },
                a.size,
                a.seed,
                if a.masks {
                    a.out.join("dataset.jsonl")
                } else {
                    a.out.clone()
                }
                .display()
            )?;
        }
    }
    Ok(())
}

/// `--hook` of an export: globs over the run's dictionary hooks, or exact names (so the export
/// can say which SAEs exist when one is missing); empty: every SAE.
fn export_hooks(
    run: &glassbox_data::RunDir,
    patterns: &[String],
    out: &std::path::Path,
) -> Result<Vec<glassbox_data::HookPoint>> {
    glassbox_data::atomic::require_folder(out)?;
    // An export is a copy for another tool; written inside the run it would sit among the
    // stages' outputs (and in the store's listings) as if a stage had written it.
    if glassbox_data::atomic::is_within(out, run.root()) {
        anyhow::bail!(
            "--out {}: inside the run directory {}; name a folder outside it (an export leaves the run unchanged)",
            out.display(),
            run.root().display()
        );
    }
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let trained: Vec<glassbox_data::HookPoint> =
        glassbox_concepts::explain::read::dictionary_hooks(run)?
            .into_iter()
            .map(|(h, _)| h)
            .collect();
    if let Ok(hooks) = glassbox_models::hooks::select(patterns, &trained) {
        return Ok(hooks);
    }
    // A name (not a pattern) goes on to the reader, which says which SAEs the run has and how
    // to train the missing one; a pattern that matches none is answered here.
    let is_pattern = |p: &String| p.contains(['*', '?', '[']);
    if let Some(p) = patterns.iter().find(|p| is_pattern(p)) {
        let have: Vec<String> = trained.iter().map(|h| h.to_string()).collect();
        anyhow::bail!(
            "--hook {p}: matches no SAE of {} (SAEs: {}); leave --hook out to export every SAE",
            run.name(),
            if have.is_empty() {
                "none".to_owned()
            } else {
                have.join(", ")
            }
        );
    }
    Ok(patterns
        .iter()
        .map(|h| h.parse::<glassbox_data::HookPoint>())
        .collect::<Result<Vec<_>, _>>()?)
}
