//! The `dissect` stage: Network Dissection of an image run's units against segmentation masks
//! (see `glassbox_concepts::dissect`). Reads the run's per-cell activations, its model (for the
//! preprocessing and each hook's receptive fields; no forward pass) and the masks; writes
//! `dissection/`.

use super::run_model::{load_run_model, run_modality};
use super::{Completion, Stage, Transaction};
use crate::config::DissectSection;
use crate::fingerprint::fingerprint;
use anyhow::{anyhow, bail, Context, Result};
use glassbox_concepts::dissect::{dissect_hook, write_dissection, HookDissection};
use glassbox_data::examples::read_examples;
use glassbox_data::grid::CellGrid;
use glassbox_data::images::read_image_dataset;
use glassbox_data::masks::read_masks;
use glassbox_data::{hook_point, HookPoint, Modality, Progress, RunDir};
use std::path::PathBuf;

/// One hook's outcome, for the terminal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HookOutcome {
    pub hook: String,
    pub units: usize,
    pub labelled: usize,
    /// Labelled units per concept, most first.
    pub concepts: Vec<(String, usize)>,
}

/// What the stage found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DissectDone {
    pub hooks: Vec<HookOutcome>,
    pub concepts: Vec<String>,
    pub images: usize,
    /// The run's `dissection/` folder.
    pub dir: PathBuf,
}

fn outcome(d: &HookDissection) -> HookOutcome {
    let mut by_concept: std::collections::BTreeMap<&str, usize> = Default::default();
    for u in d.units.iter().filter(|u| u.labelled) {
        *by_concept.entry(&u.concept).or_default() += 1;
    }
    let mut concepts: Vec<(String, usize)> = by_concept
        .into_iter()
        .map(|(c, n)| (c.to_owned(), n))
        .collect();
    concepts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    HookOutcome {
        hook: d.hook.to_string(),
        units: d.units.len(),
        labelled: d.units.iter().filter(|u| u.labelled).count(),
        concepts,
    }
}

/// The hooks to dissect: stored per-cell hooks with a grid of at least two cells, chosen by the
/// patterns (all of them when there are none). A named hook without a map is an error.
fn choose_hooks(
    stored: &[HookPoint],
    patterns: &[String],
    grid_of: impl Fn(HookPoint) -> Option<CellGrid>,
) -> Result<Vec<(HookPoint, CellGrid)>> {
    let spatial = |h: &HookPoint| grid_of(*h).is_some_and(|g| g.cells() >= 2);
    let chosen = if patterns.is_empty() {
        stored.iter().copied().filter(spatial).collect::<Vec<_>>()
    } else {
        let chosen = hook_point::select(patterns, stored).with_context(|| {
            format!(
                "dissect: the run stores per-cell activations at {}",
                stored
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        if let Some(h) = chosen.iter().find(|h| !spatial(h)) {
            bail!(
                "dissect: hook `{h}` has a single position per image (pooled features, logits): there is no map to dissect; choose a feature-map or patch-token hook"
            );
        }
        chosen
    };
    if chosen.is_empty() {
        bail!(
            "dissect: none of the run's stored hooks ({}) has a spatial map; extract a feature-map or patch-token hook",
            stored.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(chosen
        .into_iter()
        .map(|h| (h, grid_of(h).expect("filtered on the grid")))
        .collect())
}

/// The images of the units the report shows, as the model saw them, and the masks of their
/// concepts at that size: the report draws the unit's map and the mask over them.
fn write_shown_images(
    dir: &std::path::Path,
    done: &[HookDissection],
    dataset: &glassbox_data::images::ImageDataset,
    pre: &glassbox_data::images::Preprocessor,
    masks: &glassbox_data::masks::MaskSet,
) -> Result<()> {
    use glassbox_concepts::dissect::{input_png, mask_png, shown_units, SHOWN_PER_HOOK};
    let mut wanted: std::collections::BTreeSet<(u64, String)> = Default::default();
    for d in done {
        for u in shown_units(d, SHOWN_PER_HOOK) {
            for e in d.examples.iter().filter(|e| e.unit == u.unit) {
                wanted.insert((e.example_id, u.concept.clone()));
            }
        }
    }
    for (id, concept) in &wanted {
        let i = *id as usize;
        let input = input_png(dir, *id);
        if !input.exists() {
            let source = dataset.path(i);
            let img = glassbox_data::images::load_rgb(&source)?;
            let seen = pre.resize_and_crop(&img, pre.filter, &source)?;
            save_png(&input, |b| seen.write_to(b, image::ImageFormat::Png))?;
        }
        let c = masks
            .concepts
            .iter()
            .position(|x| x == concept)
            .expect("a mask concept");
        let mut gray = image::GrayImage::new(masks.width as u32, masks.height as u32);
        if let Some(m) = &masks.masks[i][c] {
            for (x, y, p) in gray.enumerate_pixels_mut() {
                p.0[0] = if m.get(y as usize, x as usize) {
                    255
                } else {
                    0
                };
            }
        }
        save_png(&mask_png(dir, *id, concept), |b| {
            gray.write_to(b, image::ImageFormat::Png)
        })?;
    }
    Ok(())
}

fn save_png(
    path: &std::path::Path,
    encode: impl FnOnce(&mut std::io::Cursor<&mut Vec<u8>>) -> image::ImageResult<()>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = Vec::new();
    encode(&mut std::io::Cursor::new(&mut bytes))
        .with_context(|| format!("cannot encode {}", path.display()))?;
    glassbox_data::atomic::write_bytes(path, &bytes)?;
    Ok(())
}

/// Runs the stage; `None` when up to date.
pub fn run_dissect(
    run: &RunDir,
    settings: &DissectSection,
    force: bool,
    progress: &dyn Progress,
) -> Result<Option<DissectDone>> {
    let started = std::time::Instant::now();
    settings.validate()?;
    let manifest = run.require_stage("extract")?;
    if run_modality(run) != Modality::Vision {
        bail!(
            "{}: dissection labels units by the image regions they fire on; this run is of a text model — use `dictionary` (unit explanations) instead",
            run.root().display()
        );
    }
    let data = manifest
        .data
        .as_ref()
        .ok_or_else(|| anyhow!("{}: the manifest records no data set", run.root().display()))?;
    let stored = run.stored_hooks(false)?;
    if stored.is_empty() {
        bail!(
            "{}: the run stores no per-cell activations (only pooled ones); dissection needs each cell's values — re-extract with `token_level = true` (drop --no-token-level)",
            run.root().display()
        );
    }
    let model = load_run_model(run)?;
    let pre = model.preprocessor()?;
    let masks_file = settings.masks.clone().unwrap_or_else(|| data.locate());
    let dataset = read_image_dataset(&masks_file)?;
    let examples = read_examples(run)?;
    if dataset.len() != examples.example_ids.len() {
        bail!(
            "{}: {} images, but the run has {} examples; the masks' manifest must list the run's images in order",
            masks_file.display(),
            dataset.len(),
            examples.example_ids.len()
        );
    }
    if settings.masks.is_some() {
        if let Some(i) = (0..dataset.len()).find(|&i| dataset.data.texts[i] != examples.texts[i]) {
            bail!(
                "{}: row {} is image `{}`, but the run's example {i} is `{}`; list the run's images in its order",
                masks_file.display(),
                i + 1,
                dataset.data.texts[i],
                examples.texts[i]
            );
        }
    } else if dataset.data.sha256 != data.sha256 {
        bail!(
            "{}: the data set changed since extraction (its SHA-256 differs from the manifest's); re-extract, or pass --masks with the images in the run's order",
            masks_file.display()
        );
    }
    let masks = read_masks(&dataset, &pre)?;
    // The model saw what the masks now are: the preprocessed size.
    let input = (masks.height, masks.width);
    let hooks = choose_hooks(&stored, &settings.hooks, |h| {
        model.model.hook_grid(h, input)
    })?;
    let params = serde_json::json!({
        "extract": manifest.stage_fingerprint("extract"),
        "masks": masks.sha256,
        "hooks": hooks.iter().map(|(h, _)| h.to_string()).collect::<Vec<_>>(),
        "dissect": settings,
    });
    let fp = fingerprint("dissect", &params);
    if !force && manifest.stage_fingerprint("dissect") == Some(fp.as_str()) {
        crate::fingerprint::note_up_to_date(progress, &manifest, "dissect", "");
        return Ok(None);
    }
    let tx = Transaction::begin(run, "dissect", vec!["dissection".into()], &fp, false)?;
    let mut done = Vec::new();
    for (hook, grid) in &hooks {
        let dir = run.activations_dir(*hook);
        let d = dissect_hook(&dir, *hook, grid, &masks, settings, progress)
            .with_context(|| format!("dissect: hook `{hook}`"))?;
        done.push(d);
    }
    write_dissection(tx.run(), &done)?;
    write_shown_images(&tx.run().dissection_dir(), &done, &dataset, &pre, &masks)?;
    let result = DissectDone {
        hooks: done.iter().map(outcome).collect(),
        concepts: masks.concepts.clone(),
        images: dataset.len(),
        dir: run.dissection_dir(),
    };
    tx.commit(
        Completion {
            stage: Stage::Dissect,
            fingerprint: fp,
            seed: Some(settings.seed),
            params,
            started,
        },
        |_| {},
        |config| config.dissect = Some(settings.clone()),
    )?;
    Ok(Some(result))
}
