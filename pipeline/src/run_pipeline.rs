//! `glassbox pipeline`: the configured stages in order (extract → probe → \[tcav\] →
//! \[dictionary\] → \[patch\] → \[causal\] → \[attribute\] → \[dissect\] → report), each skipped when up to date.

use crate::args::PipelineArgs;
use crate::config::PipelineConfig;
use crate::progress::Bars;
use crate::render;
use crate::stages::{dictionary, extract, probe, report, tcav};
use anyhow::{Context, Result};
use glassbox_data::{Progress, RunDir};
use std::path::{Path, PathBuf};

/// Runs the pipeline of `a.config`, with `--model`/`--run` overrides.
pub fn run_pipeline(a: PipelineArgs, bars: &Bars) -> Result<()> {
    let mut config = PipelineConfig::load(&a.config)?;
    if let Some(model) = a.model {
        if a.run.is_none() {
            config.run = PathBuf::from("runs").join(slug(&model));
        }
        config.model.id = model;
    }
    if let Some(run) = a.run {
        config.run = run;
    }
    let run = crate::run_location::open_run(&config.run)?;
    eprintln!(
        "pipeline: {} on {} → {}",
        config.model.id,
        config.data.path.display(),
        crate::run_location::run_name(&run)
    );
    // Every section's settings are checked before the first stage runs, so a typo in [tcav]
    // does not surface after a long extraction.
    config.extract.validate().context("[extract]")?;
    if !(config.probe.labels.is_empty() && config.probe.token_labels.is_empty()) {
        config.probe.validate().context("[probe]")?;
    }
    if let Some(tcav) = &config.tcav {
        tcav.validate().context("[tcav]")?;
    }
    if let Some(patch) = &config.patch {
        patch.validate().context("[patch]")?;
    }
    if let Some(causal) = &config.causal {
        causal.validate().context("[causal]")?;
    }
    if let Some(attribute) = &config.attribute {
        attribute.validate().context("[attribute]")?;
    }
    if let Some(dissect) = &config.dissect {
        dissect.validate().context("[dissect]")?;
    }
    check_inputs_exist(&config)?;
    check_probe_targets(&config)?;
    check_hooks_extracted(&config)?;
    crate::stages::with_run_lock(&run, || run_stages(&run, &config, a.force, bars))
}

/// Every input file the sections name exists: a missing pairs file or concept set is found
/// before the extraction, not by its stage after it.
fn check_inputs_exist(config: &PipelineConfig) -> Result<()> {
    let mut inputs: Vec<(&str, &Path)> = vec![("[data] path", config.data.path.as_path())];
    if let Some(patch) = &config.patch {
        inputs.push(("[patch] pairs", &patch.pairs));
    }
    if let Some(tcav) = &config.tcav {
        inputs.extend(
            tcav.concepts
                .iter()
                .map(|c| ("[tcav] concepts", c.as_path())),
        );
        inputs.extend(
            tcav.random_corpus
                .iter()
                .map(|c| ("[tcav] random_corpus", c.as_path())),
        );
    }
    if let Some(attribute) = &config.attribute {
        inputs.extend(
            attribute
                .baseline_file
                .iter()
                .map(|f| ("[attribute] baseline_file", f.as_path())),
        );
    }
    if let Some(dissect) = &config.dissect {
        inputs.extend(
            dissect
                .masks
                .iter()
                .map(|f| ("[dissect] masks", f.as_path())),
        );
    }
    for (key, path) in inputs {
        // An object-store URL is the stage's to resolve.
        if path.to_string_lossy().contains("://") || path.exists() {
            continue;
        }
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        anyhow::bail!(
            "{key}: {} does not exist (relative paths are relative to the working directory, {cwd}); fix the path in the config",
            path.display()
        );
    }
    Ok(())
}

/// The hooks `[dictionary]` and `[tcav]` name, each with the key that names it: dictionary
/// `hooks`, `neurons` and the hooks of `<hook>=<folder>` loads (a bare folder's hook is in its
/// cfg.json), and TCAV's hook names (its patterns are matched by the stage).
fn named_hooks(config: &PipelineConfig) -> Vec<(&'static str, String)> {
    let mut named = Vec::new();
    if let Some(d) = &config.dictionary {
        named.extend(
            d.hooks
                .iter()
                .map(|h| ("[dictionary] hooks", h.to_string())),
        );
        named.extend(
            d.neurons
                .iter()
                .map(|h| ("[dictionary] neurons", h.to_string())),
        );
        named.extend(d.load.iter().filter_map(|spec| {
            let (hook, _) = spec.split_once('=')?;
            let hook = hook.parse::<glassbox_data::HookPoint>().ok()?;
            Some(("[dictionary] load", hook.to_string()))
        }));
    }
    let tcav_hooks = config.tcav.iter().flat_map(|t| &t.hooks);
    named.extend(
        tcav_hooks
            .filter(|h| !h.contains(['*', '?']))
            .map(|h| ("[tcav] hooks", h.trim().to_owned())),
    );
    named
}

/// Hooks that `[dictionary]` and `[tcav]` read from the store must be among those `[extract]`
/// stores (a name, or a match of one of its patterns), with token rows for the dictionary.
/// Patterns in those sections are matched against the model's hooks by their stages, so only
/// names are checked here.
fn check_hooks_extracted(config: &PipelineConfig) -> Result<()> {
    let stored = |name: &str| {
        config
            .extract
            .hooks
            .iter()
            .flat_map(|h| h.split(','))
            .any(|pattern| glassbox_data::hook_point::glob_match(pattern.trim(), name))
    };
    if let Some((key, hook)) = named_hooks(config).into_iter().find(|(_, h)| !stored(h)) {
        anyhow::bail!(
            "{key}: `{hook}` is not among the hooks [extract] stores ({}); add it to [extract] hooks",
            config.extract.hooks.join(", ")
        );
    }
    if let Some(d) = &config.dictionary {
        if !config.extract.token_level && (!d.hooks.is_empty() || !d.neurons.is_empty()) {
            anyhow::bail!(
                "[dictionary] trains and explains on token rows, but [extract] sets token_level = false; set it to true"
            );
        }
    }
    Ok(())
}

/// After extraction, the hooks `[tcav]` and `[dictionary]` name must be among those the run
/// stores. They match `[extract]`'s patterns (checked up front), but a glob such as
/// `blocks.*.hook_resid_post` stores only the blocks the model has: a config written for one
/// model (pipelines/default.toml names MiniLM's blocks 1 and 3) run on a shallower one fails
/// here, before the probes, rather than in the TCAV stage after them.
fn check_named_hooks_stored(run: &RunDir, config: &PipelineConfig) -> Result<()> {
    let mut stored = run.stored_hooks(false)?;
    stored.extend(run.stored_hooks(true)?);
    let names: std::collections::BTreeSet<String> =
        stored.iter().map(ToString::to_string).collect();
    if let Some((key, hook)) = named_hooks(config)
        .into_iter()
        .find(|(_, h)| !names.contains(h))
    {
        anyhow::bail!(
            "{key}: `{hook}` is not among the hooks this run stores{}; the config names hooks of a deeper model (pipelines/default.toml's are all-MiniLM-L6-v2's, 6 blocks) — copy the config and name this model's hooks (`glassbox hooks MODEL` lists them)",
            glassbox_data::hook_point::block_range(&stored)
        );
    }
    Ok(())
}

/// `probe:` targets of `[tcav]` and `[attribute]` read probes this pipeline trains: their labels
/// must be among `[probe]`'s sequence-level labels. Checked before the first stage, not found
/// by the TCAV stage after a long extraction.
fn check_probe_targets(config: &PipelineConfig) -> Result<()> {
    let tcav = config
        .tcav
        .iter()
        .flat_map(|t| &t.targets)
        .map(|t| ("tcav", t));
    let attribute = config
        .attribute
        .iter()
        .flat_map(|a| &a.targets)
        .map(|t| ("attribute", t));
    for (section, target) in tcav.chain(attribute) {
        if !target.trim_start().starts_with("probe:") {
            continue;
        }
        let spec = glassbox_concepts::target::TargetSpec::parse(target.trim())
            .with_context(|| format!("[{section}]"))?;
        let label = &spec.label;
        if config.probe.token_labels.contains(label) {
            anyhow::bail!(
                "[{section}] target `{target}`: `{label}` is probed at token level ([probe] token_labels); a probe: target reads a sequence-level probe — add a sequence label to [probe] labels and name it"
            );
        }
        if !config.probe.labels.contains(label) {
            anyhow::bail!(
                "[{section}] target `{target}`: label `{label}` is not probed by this pipeline ([probe] labels: {}); add it to [probe] labels",
                if config.probe.labels.is_empty() {
                    "none".to_owned()
                } else {
                    config.probe.labels.join(", ")
                }
            );
        }
    }
    Ok(())
}

/// The configured stages in order; the caller holds the run's lock.
fn run_stages(run: &RunDir, config: &PipelineConfig, force: bool, bars: &Bars) -> Result<()> {
    let req = extract::ExtractRequest {
        model: &config.model.id,
        data: &config.data.path,
        settings: &config.extract,
        force,
    };
    let extracted = extract::run_extract(run, &req, bars).context("extract stage failed")?;
    render::extracted(extracted.as_ref())?;
    check_named_hooks_stored(run, config)?;
    let probing = !(config.probe.labels.is_empty() && config.probe.token_labels.is_empty());
    if probing {
        let results =
            probe::run_probe(run, &config.probe, force, bars).context("probe stage failed")?;
        render::probes(results.as_deref(), false)?;
        if let Some(settings) = &config.tcav {
            let scores = tcav::run_tcav_stage(run, settings, tcav::Gradients::Compute, force, bars)
                .context("tcav stage failed")?;
            render::tcav(scores.as_deref(), false)?;
        }
        if let Some(settings) = &config.dictionary {
            let done = dictionary::run_dictionary_stage(run, settings, force, None, bars)
                .context("dictionary stage failed")?;
            render::dictionary(&done, false)?;
        }
    }
    // Patching reads the model and its pairs, not the probes: it runs either way.
    if let Some(settings) = &config.patch {
        let done = crate::stages::patch::run_patch(run, &config.model.id, settings, force, bars)
            .context("patch stage failed")?;
        render::patch(done.as_ref(), false)?;
    }
    if let (true, Some(settings)) = (probing, &config.causal) {
        let done = crate::stages::causal::run_causal(run, settings, force, bars)
            .context("causal stage failed")?;
        render::causal(done.as_ref(), false)?;
    }
    // Attributions read the model and the examples (and the probes for probe: targets).
    if let Some(settings) = &config.attribute {
        let done = crate::stages::attribute::run_attribute(run, settings, force, bars)
            .context("attribute stage failed")?;
        render::attribute(done.as_ref(), false)?;
    }
    // Dissection reads the activations and the data set's masks.
    if let Some(settings) = &config.dissect {
        let done = crate::stages::dissect::run_dissect(run, settings, force, bars)
            .context("dissect stage failed")?;
        render::dissect(done.as_ref(), false)?;
    }
    if !probing {
        bars.note(
            "probe: no labels configured; skipping probe, tcav, dictionary, causal and report",
        );
        return Ok(());
    }
    let report = report::run_report(run, force, bars).context("report stage failed")?;
    render::report(&report)?;
    Ok(())
}

/// A folder-safe name for a model id: `org/name@rev` → `org--name@rev`.
fn slug(model: &str) -> String {
    model
        .trim_start_matches("./")
        .split('/')
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("--")
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert_eq!(super::slug("org/name@v1"), "org--name@v1");
        assert_eq!(super::slug("./models/my model"), "models--my-model");
    }
}
