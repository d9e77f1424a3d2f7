//! The `tcav` stage for vision runs: texture (or any image-folder) concepts against class
//! logits, with the model's hand-written backward.
//!
//! - Concepts: folders of images (e.g. `glassbox textures` output, `textures/stripes`).
//! - Random counterparts: `random_corpus` (a folder of images) or, by default, seeded random
//!   smooth colour fields drawn at the model's input size (`glassbox_data::textures::Texture::Random`).
//! - Targets: `class:<ImageNet label>` (as in the model's `id2label`, e.g. `class:zebra`),
//!   evaluated on every image of the run's data set; `text:<prompt>` (CLIP); and
//!   `probe:<label>=<class>[@<hook>]`, a probe of the run on a hook, evaluated on the images of
//!   its class, its gradients from a backward that starts at the probe's hook.
//! - Spatial pooling: CAVs are trained on activations averaged over a hook's positions
//!   (feature-map cells); a target image's sensitivity uses its gradient summed over
//!   positions — the directional derivative of the target when every cell moves along the
//!   CAV, the same convention as tokens in text runs.

use super::targets::{resolve_target, ProbeTarget};
use super::tcav_scoring::{score_and_record, PooledSets};
use super::{Completion, Stage, Transaction};
use crate::config::TcavSection;
use crate::fingerprint::fingerprint;
use anyhow::{anyhow, bail, Context, Result};
use glassbox_concepts::{Convention, ScoreRow};
use glassbox_data::concepts::{
    builtin_corpus, random_corpus, random_sets, read_concept, ConceptSet,
};
use glassbox_data::images::{read_image_dataset, read_image_set, ImageSet, IMAGE_EXTENSIONS};
use glassbox_data::images::{ImageDataset, Preprocessor};
use glassbox_data::rng::SeededRng;
use glassbox_data::{Progress, RunDir};
use glassbox_models::vision::position_sums;
use glassbox_models::{hooks, Capture, HookPoint, ImageBatch, LoadedModel};
use glassbox_runner::extract::{image_batch, image_batch_of};
use glassbox_runner::gradients::{self, LinearHead};
use glassbox_runner::image_sets::{file_batches, pooled_images, random_batches};
use std::collections::BTreeMap;

/// What a vision TCAV target differentiates.
enum Target {
    /// A seed row over the model's outputs, and its class for `class:` targets; over every image.
    Outputs { row: Vec<f32>, class: Option<usize> },
    /// A probe of the run on a hook, over the images of its class.
    Probe {
        head: LinearHead,
        images: Vec<usize>,
    },
}

/// A target as the backward's seed row over the model's output: `class:<label>` is a one-hot
/// logit (its class index kept for the loss convention); `text:<prompt>` (image–text models)
/// is the prompt's zero-shot logit direction; `probe:` a probe of the run.
fn parse_target(run: &RunDir, spec: &str, model: &LoadedModel) -> Result<Target> {
    let labels = model.model.labels();
    if let Some(prompt) = spec.strip_prefix("text:") {
        let row = text_prompt_row(model, spec, prompt)?;
        return Ok(Target::Outputs { row, class: None });
    }
    if spec.starts_with("probe:") {
        let resolved = resolve_target(run, model, &ProbeTarget::parse(spec)?)?;
        if resolved.examples.is_empty() {
            bail!("vision TCAV target `{spec}`: no image of the run has that class");
        }
        return Ok(Target::Probe {
            head: resolved.head,
            images: resolved.examples,
        });
    }
    let name = spec.strip_prefix("class:").ok_or_else(|| {
        anyhow!("vision TCAV target `{spec}`: use class:<label> (e.g. class:zebra), probe:<label>=<class>[@<hook>] or, for CLIP, text:<prompt>")
    })?;
    let class = super::class_names::class_index(labels, name)
        .map_err(|e| anyhow!("vision TCAV target `{spec}`: {e}"))?;
    let mut row = vec![0f32; labels.len()];
    row[class] = 1.0;
    Ok(Target::Outputs {
        row,
        class: Some(class),
    })
}

/// The zero-shot logit direction of `prompt` over an image–text model's outputs (target `spec`
/// of TCAV or attribute).
pub(crate) fn text_prompt_row(model: &LoadedModel, spec: &str, prompt: &str) -> Result<Vec<f32>> {
    if model.model.family() == "clip" && model.model.eos_token_id().is_none() {
        bail!(
            "target `{spec}`: text prompts need CLIP's text tower; this checkpoint is its image tower alone (clip_vision_model) — use the full CLIPModel checkpoint"
        );
    }
    if model.tokenizer.is_none() || model.model.eos_token_id().is_none() {
        bail!(
            "target `{spec}`: text prompts need an image–text model with a tokenizer.json (CLIP); this is {}",
            model.model.family()
        );
    }
    let ids = prompt_ids(model, &[prompt.to_owned()])?.remove(0);
    model
        .model
        .text_target(&ids)
        .ok_or_else(|| anyhow!("target `{spec}`: this model has no text tower"))?
        .map_err(Into::into)
}

/// A concept set: images, or (image–text models) prompts.
enum Concept {
    Images(ImageSet),
    Texts(ConceptSet),
}

impl Concept {
    fn name(&self) -> &str {
        match self {
            Concept::Images(s) => &s.name,
            Concept::Texts(s) => &s.name,
        }
    }
    fn sha256(&self) -> &str {
        match self {
            Concept::Images(s) => &s.sha256,
            Concept::Texts(s) => &s.sha256,
        }
    }
    fn len(&self) -> usize {
        match self {
            Concept::Images(s) => s.files.len(),
            Concept::Texts(s) => s.texts.len(),
        }
    }
}

/// A folder of images is an image concept; a prompt file (JSONL/CSV/Parquet with `text`) or a
/// folder of `.txt` files is a prompt concept.
fn read_concept_set(path: &std::path::Path, min_size: usize) -> Result<Concept> {
    let has = |exts: &[&str]| {
        std::fs::read_dir(path).is_ok_and(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                e.path().extension().is_some_and(|x| {
                    exts.contains(&x.to_string_lossy().to_ascii_lowercase().as_str())
                })
            })
        })
    };
    if path.is_file() || (path.is_dir() && has(&["txt"]) && !has(IMAGE_EXTENSIONS)) {
        Ok(Concept::Texts(read_concept(path, min_size)?))
    } else {
        Ok(Concept::Images(read_image_set(path, min_size)?))
    }
}

/// Token ids of prompts, each ending with the end-of-text token.
fn prompt_ids(model: &LoadedModel, texts: &[String]) -> Result<Vec<Vec<u32>>> {
    let (Some(tok), Some(eos)) = (&model.tokenizer, model.model.eos_token_id()) else {
        bail!("prompts need an image–text model with a tokenizer.json (CLIP)");
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    Ok(tok
        .encode(&refs)?
        .into_iter()
        .map(|e| {
            let mut ids = e.ids;
            if ids.last() != Some(&eos) {
                ids.push(eos);
            }
            ids
        })
        .collect())
}

/// Prompts embedded where images are (`hook_embeds`), as one set's activations.
fn embedded_prompts(
    model: &LoadedModel,
    texts: &[String],
) -> Result<BTreeMap<HookPoint, Vec<f32>>> {
    let ids = prompt_ids(model, texts)?;
    let rows = model
        .model
        .embed_texts(&ids)
        .ok_or_else(|| anyhow!("the {} family has no text tower", model.model.family()))??;
    Ok(BTreeMap::from([(HookPoint::Embeds, rows)]))
}

pub fn run_tcav_vision(
    run: &RunDir,
    settings: &TcavSection,
    force: bool,
    progress: &dyn Progress,
) -> Result<Option<Vec<ScoreRow>>> {
    let started = std::time::Instant::now();
    let manifest = run.require_stage("extract")?;
    if settings.targets.is_empty() {
        bail!("no TCAV targets; pass --target class:<label> (e.g. class:zebra)");
    }
    if settings.concepts.is_empty() {
        bail!("no concept sets; pass --concepts FOLDER[,...] (folders of images, e.g. from `glassbox textures`)");
    }
    let concepts: Vec<Concept> = settings
        .concepts
        .iter()
        .map(|p| read_concept_set(p, settings.min_concept_size))
        .collect::<Result<_>>()?;
    let text_mode = concepts.iter().any(|c| matches!(c, Concept::Texts(_)));
    if text_mode && concepts.iter().any(|c| matches!(c, Concept::Images(_))) {
        bail!("concepts mix prompt files and image folders; their random counterparts differ (random prompts vs random images), so run them as separate TCAV stages");
    }
    let (image_corpus, text_corpus) = match (&settings.random_corpus, text_mode) {
        (Some(path), false) => (Some(read_image_set(path, 1)?), None),
        (Some(path), true) => (None, Some(read_concept(path, 1)?)),
        (None, false) => (None, None),
        (None, true) => (None, Some(builtin_corpus())),
    };
    let data_path = manifest
        .data
        .as_ref()
        .map(|d| d.locate())
        .ok_or_else(|| anyhow!("{}: the manifest records no data set", run.root().display()))?;
    let reads_probes = settings.targets.iter().any(|t| t.starts_with("probe:"));
    let params = serde_json::json!({
        "extract": manifest.stage_fingerprint("extract"),
        "probe": if reads_probes { manifest.stage_fingerprint("probe") } else { None },
        "tcav": settings,
        "concepts": concepts.iter().map(Concept::sha256).collect::<Vec<_>>(),
        "corpus": image_corpus.as_ref().map(|c| &c.sha256).or(text_corpus.as_ref().map(|c| &c.sha256)),
    });
    let fp = fingerprint("tcav", &params);
    if !force && manifest.stage_fingerprint("tcav") == Some(fp.as_str()) {
        crate::fingerprint::note_up_to_date(progress, &manifest, "tcav", "");
        return Ok(None);
    }
    let size = if settings.random_set_size > 0 {
        settings.random_set_size
    } else {
        concepts.iter().map(Concept::len).min().unwrap_or(1)
    };
    let n_random = settings.random_runs + 1;
    // Random prompts are drawn (cheaply) first, so a corpus too small for them stops the stage
    // before it loads the model or voids old results.
    let random_prompts = match &text_corpus {
        Some(corpus) => {
            let texts: Vec<&ConceptSet> = concepts
                .iter()
                .filter_map(|c| match c {
                    Concept::Texts(set) => Some(set),
                    Concept::Images(_) => None,
                })
                .collect();
            let corpus = random_corpus(corpus, &texts, progress);
            random_sets(&corpus, n_random, size, settings.seed)?
        }
        None => Vec::new(),
    };
    let model = super::run_model::load_run_model(run)?;
    let pre = model.preprocessor()?;
    let data = read_image_dataset(&data_path)
        .with_context(|| format!("the run's images at {}", data_path.display()))?;
    let targets: Vec<(String, Target)> = settings
        .targets
        .iter()
        .map(|t| Ok((t.clone(), parse_target(run, t, &model)?)))
        .collect::<Result<_>>()?;
    let available = model.model.hook_points();
    if text_mode && (model.tokenizer.is_none() || model.model.eos_token_id().is_none()) {
        bail!(
            "prompt-defined concepts need an image–text model with a tokenizer.json (CLIP); this is {}",
            model.model.family()
        );
    }
    // Default: the joint embedding (prompt concepts), each stage's first block (CNNs), or every
    // block's output (transformers).
    let default_hooks = if text_mode {
        vec![HookPoint::Embeds.to_string()]
    } else if available
        .iter()
        .any(|p| matches!(p, HookPoint::Conv { .. }))
    {
        vec!["stages.*.blocks.0.hook_out".to_owned()]
    } else {
        vec!["blocks.*.hook_resid_post".to_owned()]
    };
    let patterns = if settings.hooks.is_empty() {
        &default_hooks[..]
    } else {
        &settings.hooks[..]
    };
    let cav_hooks = hooks::select(patterns, &available)?;
    if text_mode {
        if let Some(h) = cav_hooks.iter().find(|h| **h != HookPoint::Embeds) {
            bail!("`{h}`: prompt-defined concepts live in the space images and text share, so their CAVs exist only at `hook_embeds`");
        }
    }
    for (spec, target) in &targets {
        if let Target::Probe { head, .. } = target {
            check_probe_hooks(&model, &cav_hooks, head, spec)?;
        }
    }
    let tx = Transaction::begin(run, "tcav", vec!["tcav".into()], &fp, false)?;
    let bs = settings.batch_size.max(1);

    // Target gradients, summed over positions, per (target, hook).
    let n = data.len();
    progress.start("tcav: target gradients", (n * targets.len()) as u64);
    let mut sums: Vec<(String, HookPoint, Vec<f32>)> = Vec::new();
    for (spec, target) in &targets {
        let per_hook = match target {
            Target::Outputs { row, class } => {
                let mut per_hook: BTreeMap<HookPoint, Vec<f32>> = BTreeMap::new();
                for start in (0..n).step_by(bs) {
                    let range = start..(start + bs).min(n);
                    let batch = image_batch(&data, &pre, range.clone())?;
                    let seed = seed_for(&model, &batch, row, *class, settings.convention)?;
                    let g = model
                        .model
                        .hook_gradients((&batch).into(), &cav_hooks, &seed)
                        .ok_or_else(|| {
                            anyhow!(
                                "the {} family has no backward; TCAV needs one",
                                model.model.family()
                            )
                        })??;
                    for (hook, s) in g.gradient_sums {
                        per_hook.entry(hook).or_default().extend(s);
                    }
                    progress.advance(range.len() as u64);
                }
                per_hook
            }
            Target::Probe { head, images } => {
                let per_hook =
                    probe_gradient_sums(&model, &data, &pre, &cav_hooks, head, images, settings)?;
                progress.advance(n as u64);
                per_hook
            }
        };
        for (hook, s) in per_hook {
            sums.push((spec.clone(), hook, s));
        }
    }
    progress.finish();

    progress.start(
        "tcav: concept activations",
        (concepts.len() + n_random) as u64,
    );
    let mut pooled: Vec<BTreeMap<HookPoint, Vec<f32>>> = Vec::new();
    for c in &concepts {
        pooled.push(match c {
            Concept::Images(set) => {
                pooled_images(&model, file_batches(&set.files, &pre, bs), &cav_hooks)?
            }
            Concept::Texts(set) => embedded_prompts(&model, &set.texts)?,
        });
        progress.advance(1);
    }
    for set in &random_prompts {
        pooled.push(embedded_prompts(&model, &set.texts)?);
        progress.advance(1);
    }
    let (height, width) = model
        .model
        .image_size()
        .ok_or_else(|| anyhow!("the {} family does not read images", model.model.family()))?;
    let side = height.max(width) as u32;
    for r in (0..n_random).filter(|_| !text_mode) {
        let set_seed = settings.seed.wrapping_add(r as u64 * 1_000_003);
        let acts = match &image_corpus {
            Some(c) => {
                // A seeded sample of `size` files for each random set.
                let mut rng = SeededRng::new(set_seed);
                let files: Vec<_> = (0..size)
                    .map(|_| c.files[rng.below(c.files.len())].clone())
                    .collect();
                pooled_images(&model, file_batches(&files, &pre, bs), &cav_hooks)?
            }
            None => pooled_images(
                &model,
                random_batches(&pre, size, side, set_seed, bs),
                &cav_hooks,
            )?,
        };
        pooled.push(acts);
        progress.advance(1);
    }
    progress.finish();

    let width = |h: HookPoint| model.model.hook_width(h);
    let names: Vec<&str> = concepts.iter().map(Concept::name).collect();
    let pooled = PooledSets {
        concepts: &names,
        sets: &pooled,
        randoms: n_random,
        width: &width,
    };
    let done = Completion {
        stage: Stage::Tcav,
        fingerprint: fp,
        seed: Some(settings.seed),
        params,
        started,
    };
    score_and_record(tx, settings, &cav_hooks, &pooled, &sums, done).map(Some)
}

/// Refuses CAV hooks after a probe target's hook: the target does not depend on them.
fn check_probe_hooks(
    model: &LoadedModel,
    cav_hooks: &[HookPoint],
    head: &LinearHead,
    spec: &str,
) -> Result<()> {
    match gradients::first_after(model, cav_hooks, head.hook) {
        Some(h) => bail!(
            "target `{spec}`: CAV hook `{h}` comes after the probe's hook `{}`, so the target does not depend on it; choose hooks at or before it (--hooks)",
            head.hook
        ),
        None => Ok(()),
    }
}

/// A probe target's gradients at the CAV hooks, summed over positions, for each of `images`
/// (the probe's class): each batch's backward starts at the probe's hook
/// ([`check_probe_hooks`] has seen that every CAV hook comes at or before it).
fn probe_gradient_sums(
    model: &LoadedModel,
    data: &ImageDataset,
    pre: &Preprocessor,
    cav_hooks: &[HookPoint],
    head: &LinearHead,
    images: &[usize],
    settings: &TcavSection,
) -> Result<BTreeMap<HookPoint, Vec<f32>>> {
    let convention = match settings.convention {
        Convention::Logit => gradients::Convention::Logit,
        Convention::Loss => gradients::Convention::Loss,
    };
    let mut per_hook: BTreeMap<HookPoint, Vec<f32>> = BTreeMap::new();
    for chunk in images.chunks(settings.batch_size.max(1)) {
        let batch = image_batch_of(data, pre, chunk)?;
        let mut seed =
            |a: &[f32], offsets: &[usize]| gradients::head_seed(head, convention, a, offsets).1;
        let g = model
            .model
            .pixel_gradients_from_hook(&batch, cav_hooks, head.hook, &mut seed)
            .ok_or_else(|| {
                anyhow!(
                    "the {} family has no backward; TCAV needs one",
                    model.model.family()
                )
            })??;
        for (hook, (_, grad)) in g.hooks {
            let sums = position_sums(&grad, batch.batch, model.model.hook_width(hook));
            per_hook.entry(hook).or_default().extend(sums);
        }
    }
    Ok(per_hook)
}

/// The backward's seed for a batch: the target's row for every image (logit convention), or
/// the cross-entropy gradient `softmax − onehot` of a class (loss convention, which needs the
/// logits first).
fn seed_for(
    model: &LoadedModel,
    batch: &ImageBatch,
    row: &[f32],
    class: Option<usize>,
    convention: Convention,
) -> Result<Vec<f32>> {
    let width = row.len();
    match convention {
        Convention::Logit => Ok(row.repeat(batch.batch)),
        Convention::Loss => {
            let class = class.ok_or_else(|| {
                anyhow!("the loss convention needs class: targets (a cross-entropy over classes); use convention = \"logit\" for text: targets")
            })?;
            let logits: Vec<f32> = model
                .model
                .forward(batch.into(), &mut Capture::default())?
                .flatten_all()?
                .to_vec1()?;
            let mut seed = vec![0f32; batch.batch * width];
            for (b, l) in logits.chunks_exact(width).enumerate() {
                let max = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let z: f64 = l.iter().map(|v| ((v - max) as f64).exp()).sum();
                for (k, v) in l.iter().enumerate() {
                    seed[b * width + k] = (((v - max) as f64).exp() / z) as f32;
                }
                seed[b * width + class] -= 1.0;
            }
            Ok(seed)
        }
    }
}
