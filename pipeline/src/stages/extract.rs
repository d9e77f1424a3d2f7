//! The `extract` stage.

use super::{Completion, Stage, Transaction};
use crate::config::{DataSection, ExtractSection, ModelSection};
use crate::fingerprint::fingerprint;
use anyhow::{bail, Result};
use glassbox_data::manifest::DataRecord;
use glassbox_data::{Manifest, ModelRecord, Progress, RunDir};
use glassbox_models::{hooks, load_model, resolve, LoadOptions, ModelSpec};
use glassbox_runner::{Examples, ExtractOptions};
use std::path::Path;

pub struct ExtractRequest<'a> {
    pub model: &'a str,
    pub data: &'a Path,
    pub settings: &'a ExtractSection,
    pub force: bool,
}

/// What an extraction wrote.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// Examples in the run.
    pub n_examples: u64,
    /// Tokens (text) or images (vision) run through the model.
    pub n_units: u64,
    /// `tokens` or `images`.
    pub unit: &'static str,
    /// Hooks stored.
    pub hooks: usize,
    /// The run directory.
    pub run: std::path::PathBuf,
}

/// Runs the stage; returns what it wrote, or `None` when the run was up to date.
pub fn run_extract(
    run: &RunDir,
    req: &ExtractRequest<'_>,
    progress: &dyn Progress,
) -> Result<Option<Extracted>> {
    let started = std::time::Instant::now();
    let prepared = prepare(req, None, progress)?;
    let fp = prepared.fingerprint.clone();
    if !check_existing(run, &prepared, req.force, progress)? {
        return Ok(None);
    }

    // An interrupted extraction with exactly these settings resumes from its last shard (on
    // object storage, also one interrupted on another machine).
    if !req.force {
        crate::run_location::pull_resumable_staging(run, "extract", &fp)?;
    }
    let tx = Transaction::begin(run, "extract", outputs(), &fp, !req.force)?;
    if tx.resumed() {
        progress.note("extract: resuming the interrupted extraction with these settings");
    }
    let summary = prepared.extract_into(&tx, progress)?;
    commit(run, tx, &prepared, req, &summary, started)
}

/// The stage's outputs in the run.
pub(super) fn outputs() -> Vec<std::path::PathBuf> {
    [
        "examples.parquet",
        "tokens.parquet",
        "activations",
        "pooled",
    ]
    .map(std::path::PathBuf::from)
    .to_vec()
}

/// An extraction resolved: the model loaded, the data read, the hooks selected, and the
/// fingerprint of it all.
pub(super) struct Prepared {
    pub model: glassbox_models::LoadedModel,
    pub examples: Examples,
    pub params: serde_json::Value,
    pub fingerprint: String,
    pub opts: ExtractOptions,
    weights_sha256: String,
}

impl Prepared {
    /// Runs the extraction (a worker's parts only, with `--shard`) into `tx`'s staging.
    pub(super) fn extract_into(
        &self,
        tx: &Transaction,
        progress: &dyn Progress,
    ) -> Result<glassbox_runner::ExtractSummary> {
        crate::run_location::with_staging_uploads(tx.run(), "extract", || {
            Ok(glassbox_runner::extract(
                &self.model,
                &self.examples,
                tx.run(),
                &self.opts,
                progress,
            )?)
        })
    }
}

/// Resolves the model and the data and selects the hooks; `worker` is the shard this process
/// runs (it is not part of the fingerprint: the merged run is the single-process run).
pub(super) fn prepare(
    req: &ExtractRequest<'_>,
    worker: Option<glassbox_data::shards::ShardSpec>,
    progress: &dyn Progress,
) -> Result<Prepared> {
    let s = req.settings;
    s.validate()?;
    let (dtype, compression, pools) = (s.dtype, s.compression, s.pools.clone());
    let spec: ModelSpec = req.model.parse()?;
    let resolved = resolve(&spec)?;
    let weights_sha256 = glassbox_models::model_sha256(&resolved)?;

    // The hook list needs the model; loading is cheap next to extraction.
    let options = LoadOptions {
        max_length: Some(s.max_length),
        allow_pickle: s.allow_pickle,
        weights_dtype: s.weights_dtype,
        compute_dtype: s.compute_dtype,
    };
    let model = load_model(resolved, options)?;
    for note in &model.notes {
        progress.note(&format!("extract: {note}"));
    }
    // Texts are cut at the model's own maximum where the setting asks for more.
    let max_length = match model.modality() {
        glassbox_data::Modality::Text => model.tokenizer()?.max_length(),
        glassbox_data::Modality::Vision => s.max_length,
    };
    if max_length < s.max_length {
        progress.note(&format!(
            "extract: max_length {} is more than this model's {max_length} positions; texts are cut at {max_length} tokens",
            s.max_length
        ));
    }
    let examples = Examples::read(&model, req.data)?;
    if let Some(empty) = examples.empty_classes() {
        progress.note(&format!(
            "extract: class folder(s) with no image under them, so no examples of that class: {}",
            empty.join(", ")
        ));
    }
    if let Some(skipped) = examples.skipped_files() {
        progress.note(&format!(
            "extract: left out {} file(s) of the class folders that are not images ({}): {}{}",
            skipped.len(),
            glassbox_data::images::IMAGE_EXTENSIONS.join(", "),
            skipped
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if skipped.len() > 5 { ", …" } else { "" }
        ));
    }
    let selected = storable_selection(&s.hooks, &model.model.hook_points(), progress)?;
    let mut params = serde_json::json!({
        "model_id": model.resolved.id,
        "revision": model.resolved.revision,
        "weights_sha256": weights_sha256,
        "data_sha256": examples.table().sha256,
        "hooks": selected,
        "pools": s.pools,
        "token_level": s.token_level,
        "max_length": max_length,
        "batch_size": s.batch_size,
        "dtype": dtype.as_str(),
        "compression": compression.as_str(),
        "shard_size": s.shard_size,
    });
    // Recorded only when it differs from the default, so runs made before the setting
    // existed keep their fingerprints.
    if s.compute_dtype != glassbox_models::ComputeDtype::F32 {
        params["compute_dtype"] = s.compute_dtype.as_str().into();
    }
    let fingerprint = fingerprint("extract", &params);
    let opts = ExtractOptions {
        hooks: selected,
        pools,
        token_level: s.token_level,
        batch_size: s.batch_size,
        dtype,
        compression,
        shard_size: s.shard_size,
        worker,
    };
    Ok(Prepared {
        model,
        examples,
        params,
        fingerprint,
        opts,
        weights_sha256,
    })
}

/// Compares the extraction with the run's completed one: `false` when it is up to date; an
/// error when it would replace a different model, data or hook set without `--force`.
pub(super) fn check_existing(
    run: &RunDir,
    prepared: &Prepared,
    force: bool,
    progress: &dyn Progress,
) -> Result<bool> {
    let fp = &prepared.fingerprint;
    let manifest = existing_manifest(run, force)?;
    match manifest.stage_fingerprint("extract") {
        Some(old) if old == fp && !force && !Transaction::pending(run, "extract", fp) => {
            crate::fingerprint::note_up_to_date(
                progress,
                &manifest,
                "extract",
                " (same model, data and settings)",
            );
            return Ok(false);
        }
        Some(old) if old != fp => {
            let earlier = &manifest.stages["extract"].params;
            let changed = identity_changes(earlier, &prepared.params);
            if !changed.is_empty() && !force {
                bail!(
                    "{}: this run was extracted with a different {}; refusing to replace it. \
                     Pass --force to re-extract into this run (its probe, tcav, dictionary and \
                     report results are dropped), or choose a new --run",
                    run.root().display(),
                    changed.join(", ")
                );
            }
            progress.note(
                "extract: settings changed since this run was extracted; extracting again (later stages will re-run too)",
            );
        }
        _ => {}
    }
    Ok(true)
}

/// Swaps a finished extraction into the run and records it.
pub(super) fn commit(
    run: &RunDir,
    tx: Transaction,
    prepared: &Prepared,
    req: &ExtractRequest<'_>,
    summary: &glassbox_runner::ExtractSummary,
    started: std::time::Instant,
) -> Result<Option<Extracted>> {
    let model = &prepared.model;
    let modality = model.modality();
    let model_record = ModelRecord {
        id: model.resolved.id.clone(),
        revision: model.resolved.revision.clone(),
        source: model.resolved.source.to_owned(),
        family: model.model.family().to_owned(),
        modality: Some(modality),
        weights_sha256: prepared.weights_sha256.clone(),
        preprocessor: (modality == glassbox_data::Modality::Vision)
            .then(|| model.preprocessor())
            .transpose()?,
    };
    let data_record = DataRecord {
        path: req.data.display().to_string(),
        sha256: prepared.examples.table().sha256.clone(),
        n_examples: summary.n_examples,
        n_tokens: summary.n_tokens,
        absolute: std::path::absolute(req.data)
            .ok()
            .map(|p| p.display().to_string()),
    };
    let done = Completion {
        stage: Stage::Extract,
        fingerprint: prepared.fingerprint.clone(),
        seed: None,
        params: prepared.params.clone(),
        started,
    };
    let s = req.settings;
    tx.commit(
        done,
        |manifest| {
            manifest.model = Some(model_record);
            manifest.data = Some(data_record);
        },
        |config| {
            // A new extraction starts the run's settings afresh: the later stages' sections
            // described the old activations.
            *config = crate::config::RunConfig {
                model: Some(ModelSection {
                    id: req.model.to_owned(),
                }),
                data: Some(DataSection {
                    path: req.data.to_path_buf(),
                }),
                extract: Some(s.clone()),
                ..Default::default()
            };
        },
    )?;
    Ok(Some(Extracted {
        n_examples: summary.n_examples,
        n_units: summary.n_tokens,
        unit: prepared.examples.unit(),
        hooks: prepared.opts.hooks.len(),
        run: run.root().to_path_buf(),
    }))
}

/// The run's manifest. An unreadable one blocks everything but `--force`, which replaces the
/// whole run.
/// The hooks `patterns` select. A glob (`blocks.0.attn.*`, `*`) also matches the attention
/// patterns, whose width is each batch's sequence length and which the store cannot hold: they
/// are left out with a note. Named one by one they stay in, so extraction refuses them saying
/// why.
fn storable_selection(
    patterns: &[String],
    available: &[glassbox_models::HookPoint],
    progress: &dyn Progress,
) -> Result<Vec<glassbox_models::HookPoint>> {
    let selected = hooks::select(patterns, available)?;
    let named: Vec<&str> = patterns
        .iter()
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .filter(|p| !p.contains(['*', '?']))
        .collect();
    let (kept, left_out): (Vec<_>, Vec<_>) = selected
        .into_iter()
        .partition(|h| h.storable() || named.contains(&h.to_string().as_str()));
    if kept.is_empty() {
        bail!(
            "extract: the hooks {} match only attention patterns ({}), whose width is each batch's sequence length, so they cannot be stored; capture them through the library (glassbox_models::Capture), or choose other hooks",
            patterns.join(","),
            glassbox_data::hook_point::join(&left_out)
        );
    }
    if !left_out.is_empty() {
        progress.note(&format!(
            "extract: left out {} attention-pattern hook(s) the globs matched ({}): their width is each batch's sequence length, so the store cannot hold them",
            left_out.len(),
            glassbox_data::hook_point::join(&left_out)
        ));
    }
    Ok(kept)
}

fn existing_manifest(run: &RunDir, force: bool) -> Result<Manifest> {
    match Manifest::load_or_default(run) {
        Ok(m) => Ok(m),
        Err(_) if force => Ok(Manifest::empty()),
        Err(e) => bail!(
            "{e}; the run's manifest is damaged. Pass --force to extract into this run afresh, \
             or choose a new --run"
        ),
    }
}

/// What makes an extraction a different one: the model, its weights, the data and the hooks
/// (other settings such as dtype or pools re-extract the same thing differently stored).
fn identity_changes(earlier: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    let text = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("none")
            .to_owned()
    };
    let mut changes = Vec::new();
    let model_changed = text(earlier, "model_id") != text(now, "model_id");
    for (key, what) in [
        ("model_id", "model"),
        ("revision", "model revision"),
        ("weights_sha256", "weights file (sha256)"),
        ("data_sha256", "data file (sha256)"),
    ] {
        // A new model has a new revision and weights: saying so adds nothing.
        if model_changed && key != "model_id" && key != "data_sha256" {
            continue;
        }
        let (was, now) = (text(earlier, key), text(now, key));
        if was != now {
            changes.push(format!("{what} (was {was}, now {now})"));
        }
    }
    let hooks = |v: &serde_json::Value| -> std::collections::BTreeSet<String> {
        v.get("hooks")
            .and_then(|h| h.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (was, now) = (hooks(earlier), hooks(now));
    if was != now {
        let list = |set: Vec<&String>| {
            let shown: Vec<&str> = set.iter().take(4).map(|s| s.as_str()).collect();
            let more = set.len().saturating_sub(shown.len());
            format!(
                "{}{}",
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )
        };
        let added: Vec<&String> = now.difference(&was).collect();
        let removed: Vec<&String> = was.difference(&now).collect();
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("adds {}", list(added)));
        }
        if !removed.is_empty() {
            parts.push(format!("drops {}", list(removed)));
        }
        changes.push(format!("hook set ({})", parts.join("; ")));
    }
    changes
}
