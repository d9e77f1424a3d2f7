//! Image sets through the model: batches of concept images (files) or seeded random smooth
//! colour fields, preprocessed like the run's photos, and their mean-over-positions activations
//! at the CAV hooks — the vision half of TCAV's concept-set activations (the text half is
//! `gradients::pooled_activations`).

use glassbox_data::images::{load_rgb, Preprocessor};
use glassbox_data::rng::SeededRng;
use glassbox_data::textures::{render, Texture};
use glassbox_data::HookPoint;
use glassbox_models::{Capture, ImageBatch, LoadedModel, ModelError, Result};
use std::collections::BTreeMap;

/// Mean-over-positions activations of `images` at `hooks`, `n × width` per hook.
pub fn pooled_images(
    model: &LoadedModel,
    batches: impl Iterator<Item = Result<ImageBatch>>,
    hooks: &[HookPoint],
) -> Result<BTreeMap<HookPoint, Vec<f32>>> {
    let mut out: BTreeMap<HookPoint, Vec<f32>> = BTreeMap::new();
    for batch in batches {
        let batch = batch?;
        let mut capture = Capture::only(hooks.iter().copied());
        model.model.forward((&batch).into(), &mut capture)?;
        for hook in hooks {
            let t = &capture.captured[hook];
            let pooled: Vec<f32> = t.mean(1)?.flatten_all()?.to_vec1()?;
            out.entry(*hook).or_default().extend(pooled);
        }
    }
    Ok(out)
}

/// Batches of `batch_size` image files, preprocessed; every file of a set must come out the
/// same size.
pub fn file_batches<'a>(
    files: &'a [std::path::PathBuf],
    pre: &'a Preprocessor,
    batch_size: usize,
) -> impl Iterator<Item = Result<ImageBatch>> + 'a {
    files.chunks(batch_size.max(1)).map(move |chunk| {
        let mut pixels = Vec::new();
        let mut size = (0, 0);
        for f in chunk {
            let (v, h, w) = pre.apply(&load_rgb(f)?, f)?;
            if size != (0, 0) && size != (h, w) {
                return Err(ModelError::Invalid(format!(
                    "{}: preprocesses to another size than the rest of its set; set a crop in preprocessor_config.json",
                    f.display()
                )));
            }
            size = (h, w);
            pixels.extend(v);
        }
        Ok(ImageBatch { pixels, batch: chunk.len(), height: size.0 as usize, width: size.1 as usize })
    })
}

/// Random smooth colour fields (seeded), preprocessed like photos.
pub fn random_batches<'a>(
    pre: &'a Preprocessor,
    n: usize,
    size: u32,
    seed: u64,
    batch_size: usize,
) -> impl Iterator<Item = Result<ImageBatch>> + 'a {
    let starts: Vec<usize> = (0..n).step_by(batch_size.max(1)).collect();
    starts.into_iter().map(move |start| {
        let end = (start + batch_size).min(n);
        let mut pixels = Vec::new();
        let mut hw = (0, 0);
        for i in start..end {
            let mut rng = SeededRng::new(
                seed ^ 0x005e_ed0f_4a4d ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let img = render(Texture::Random, size, &mut rng);
            let (v, h, w) = pre.apply(&img, std::path::Path::new("<random image>"))?;
            hw = (h as usize, w as usize);
            pixels.extend(v);
        }
        Ok(ImageBatch {
            pixels,
            batch: end - start,
            height: hw.0,
            width: hw.1,
        })
    })
}
