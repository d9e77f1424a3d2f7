//! The `extract` stage.

use super::{invalidate_from, remove_path};
use crate::config::{DataSection, ExtractSection, ModelSection};
use crate::fingerprint::fingerprint;
use anyhow::{Context, Result};
use glassbox_data::images::{read_image_dataset, ImageDataset, Preprocessor};
use glassbox_data::manifest::DataRecord;
use glassbox_data::store::Codec;
use glassbox_data::TextDataset;
use glassbox_data::{read_dataset, ActDtype, Manifest, ModelRecord, Progress, RunDir};
use glassbox_models::vision::{is_vision, load_vision_model, preprocessor_for};
use glassbox_models::{
    hooks, load_model, resolve, ExtractOptions, HookPoint, LoadedModel, LoadedVisionModel,
    ModelSpec, Pool,
};
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
    let resolved = resolve(&spec)?;
    let weights_sha256 = glassbox_data::hash::sha256_file(&resolved.weights)?;

    // The hook list needs the model; loading is cheap next to extraction.
    let job = if is_vision(&resolved.config) {
        let model = load_vision_model(resolved, s.allow_pickle)?;
        let pre = preprocessor_for(&model)?;
        let data = read_image_dataset(req.data)?;
        Job::Vision(model, data, pre)
    } else {
        let data = read_dataset(req.data)?;
        Job::Text(load_model(resolved, Some(s.max_length))?, data)
    };
    let (id, revision, family) = job.identity();
    let selected = hooks::select(&s.hooks, &job.hook_points())?;
    let hook_names: Vec<String> = selected.iter().map(ToString::to_string).collect();
    let params = serde_json::json!({
        "model_id": id,
        "revision": revision,
        "weights_sha256": weights_sha256,
        "data_sha256": job.data().sha256,
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
    let summary = match &job {
        Job::Text(model, data) => glassbox_models::extract(model, data, run, &opts, progress)?,
        Job::Vision(model, data, pre) => {
            glassbox_models::extract::extract_images(model, data, pre, run, &opts, progress)?
        }
    };

    manifest.model = Some(ModelRecord {
        id: id.to_owned(),
        revision: revision.to_owned(),
        source: job.source().to_owned(),
        family: family.to_owned(),
        weights_sha256,
    });
    manifest.data = Some(DataRecord {
        path: req.data.display().to_string(),
        sha256: job.data().sha256.clone(),
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
    let unit = match job {
        Job::Text(..) => "tokens",
        Job::Vision(..) => "images",
    };
    println!(
        "extract: {} examples, {} {unit}, {} hooks → {}",
        summary.n_examples,
        summary.n_tokens,
        opts.hooks.len(),
        run.root().display()
    );
    Ok(())
}

/// What to extract: a text model with its data set, or a vision model with images and their
/// preprocessing. (One per stage run: the variants' size difference does not matter.)
#[allow(clippy::large_enum_variant)]
enum Job {
    Text(LoadedModel, TextDataset),
    Vision(LoadedVisionModel, ImageDataset, Preprocessor),
}

impl Job {
    fn identity(&self) -> (&str, &str, &'static str) {
        match self {
            Job::Text(m, _) => (&m.resolved.id, &m.resolved.revision, m.model.family()),
            Job::Vision(m, ..) => (&m.resolved.id, &m.resolved.revision, m.model.family()),
        }
    }

    fn source(&self) -> &'static str {
        match self {
            Job::Text(m, _) => m.resolved.source,
            Job::Vision(m, ..) => m.resolved.source,
        }
    }

    fn hook_points(&self) -> Vec<HookPoint> {
        match self {
            Job::Text(m, _) => m.model.hook_points(),
            Job::Vision(m, ..) => m.model.hook_points(),
        }
    }

    fn data(&self) -> &TextDataset {
        match self {
            Job::Text(_, d) => d,
            Job::Vision(_, d, _) => &d.data,
        }
    }
}
