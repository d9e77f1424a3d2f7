//! The `extract` stage.

use super::{invalidate_from, remove_path};
use crate::config::{DataSection, ExtractSection, ModelSection};
use crate::fingerprint::fingerprint;
use anyhow::{Context, Result};
use glassbox_data::manifest::DataRecord;
use glassbox_data::store::Codec;
use glassbox_data::{read_dataset, ActDtype, Manifest, ModelRecord, Progress, RunDir};
use glassbox_models::{hooks, load_model, resolve, ExtractOptions, ModelSpec, Pool};
use std::path::Path;

pub struct ExtractRequest<'a> {
    pub model: &'a str,
    pub data: &'a Path,
    pub settings: &'a ExtractSection,
    pub force: bool,
}

pub fn run_extract(run: &RunDir, req: &ExtractRequest<'_>, progress: &dyn Progress) -> Result<()> {
    let started = std::time::Instant::now();
    let s = req.settings;
    let dtype: ActDtype = s.dtype.parse().map_err(anyhow::Error::msg)?;
    let compression: Codec = s.compression.parse().map_err(anyhow::Error::msg)?;
    let pools: Vec<Pool> = s
        .pools
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, _>>()?;
    let spec: ModelSpec = req.model.parse()?;
    let data = read_dataset(req.data)?;
    let resolved = resolve(&spec)?;
    let weights_sha256 = glassbox_data::hash::sha256_file(&resolved.weights)?;

    // The hook list needs the model; loading is cheap next to extraction.
    let model = load_model(resolved, Some(s.max_length))?;
    let selected = hooks::select(&s.hooks, &model.model.hook_points())?;
    let hook_names: Vec<String> = selected.iter().map(ToString::to_string).collect();
    let params = serde_json::json!({
        "model_id": model.resolved.id,
        "revision": model.resolved.revision,
        "weights_sha256": weights_sha256,
        "data_sha256": data.sha256,
        "hooks": hook_names,
        "pools": s.pools,
        "token_level": s.token_level,
        "max_length": s.max_length,
        "batch_size": s.batch_size,
        "dtype": dtype.as_str(),
        "compression": compression.as_str(),
        "shard_size": s.shard_size,
    });
    let fp = fingerprint("extract", &params);

    let manifest = Manifest::load_or_default(run)?;
    match manifest.stage_fingerprint("extract") {
        Some(old) if old == fp && !req.force => {
            progress.note("extract: up to date (same model, data and settings); --force re-runs it");
            return Ok(());
        }
        Some(old) if old != fp => progress.note(
            "extract: model, data or settings changed since this run was extracted; extracting again (later stages will re-run too)",
        ),
        _ => {}
    }

    // Resume only an interrupted extraction with exactly these settings; otherwise start clean.
    let progress_dir = run.progress_dir("extract");
    let state = progress_dir.join("fingerprint");
    let resumable = !req.force
        && std::fs::read_to_string(&state)
            .map(|f| f.trim() == fp)
            .unwrap_or(false);
    let mut manifest = invalidate_from(run, "extract")?;
    if !resumable {
        for path in [
            run.activations_root(),
            run.pooled_root(),
            run.tokens(),
            run.examples(),
            progress_dir.clone(),
        ] {
            remove_path(&path).with_context(|| format!("cannot clear {}", path.display()))?;
        }
        glassbox_data::atomic::write_bytes(&state, fp.as_bytes())?;
    }

    let opts = ExtractOptions {
        hooks: selected,
        pools,
        token_level: s.token_level,
        batch_size: s.batch_size,
        dtype,
        compression,
        shard_size: s.shard_size,
    };
    let summary = glassbox_models::extract(&model, &data, run, &opts, progress)?;

    manifest.model = Some(ModelRecord {
        id: model.resolved.id.clone(),
        revision: model.resolved.revision.clone(),
        source: model.resolved.source.to_owned(),
        family: model.model.family().to_owned(),
        weights_sha256,
    });
    manifest.data = Some(DataRecord {
        path: req.data.display().to_string(),
        sha256: data.sha256.clone(),
        n_examples: summary.n_examples,
        n_tokens: summary.n_tokens,
    });
    let done = super::Completion {
        stage: "extract",
        fingerprint: fp,
        seed: None,
        params,
        started,
    };
    super::complete_stage(run, &mut manifest, done, |config| {
        config.model = Some(ModelSection {
            id: req.model.to_owned(),
        });
        config.data = Some(DataSection {
            path: req.data.to_path_buf(),
        });
        config.extract = Some(s.clone());
    })?;
    remove_path(&progress_dir)?;
    let _ = std::fs::remove_dir(run.root().join("_progress"));
    println!(
        "extract: {} examples, {} tokens, {} hooks → {}",
        summary.n_examples,
        summary.n_tokens,
        opts.hooks.len(),
        run.root().display()
    );
    Ok(())
}
