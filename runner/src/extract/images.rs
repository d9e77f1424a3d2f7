//! Extraction for vision models: images → preprocessing → model → hooked activations → store.
//!
//! The store layout is the text one: `activations/{hook}/part-k.parquet` with one row per
//! (`example_id`, `position`), where a position is a feature-map cell (`y · w + x`, row-major,
//! at that hook's resolution), and `pooled/{hook}/{pool}/` with one row per image. Images
//! have no tokens: `tokens.parquet` is not written and `examples.parquet` records
//! `n_tokens = 1` per image.

use super::shard::{hook_rows, send_rows, with_f32_slice, write_shard, StoreTarget};
use super::{run_shards, validate_hooks, writes_tables, ExtractOptions, ExtractSummary};
use glassbox_data::examples::write_examples;
use glassbox_data::images::{load_rgb, ImageDataset, Preprocessor};
use glassbox_data::{Progress, RunDir};
use glassbox_models::{Capture, HookPoint};
use glassbox_models::{ImageBatch, LoadedModel};
use glassbox_models::{ModelError, Result};
use rayon::prelude::*;

/// Extracts every hook in `opts` for every image of `data`.
pub fn extract_images(
    model: &LoadedModel,
    data: &ImageDataset,
    pre: &Preprocessor,
    run: &RunDir,
    opts: &ExtractOptions,
    progress: &dyn Progress,
) -> Result<ExtractSummary> {
    validate_hooks(opts, &model.model.hook_points(), model.model.family())?;
    let n = data.len();
    if writes_tables(opts) {
        write_examples(run, &data.data, &vec![1; n])?;
    }
    let width = |h: HookPoint| model.model.hook_width(h);
    let target = StoreTarget {
        id: &model.resolved.id,
        revision: &model.resolved.revision,
        width: &width,
    };
    let (shards, resumed, owned) = run_shards(
        run,
        opts,
        &vec![1; n],
        "images",
        progress,
        |shard, range| {
            write_shard(&target, run, opts, shard, range, |examples, send| {
                forward_images(model, data, pre, opts, examples, progress, send)
            })
        },
    )?;
    Ok(ExtractSummary {
        n_examples: n as u64,
        n_tokens: n as u64,
        shards,
        shards_resumed: resumed,
        shards_owned: owned,
    })
}

/// Decodes and preprocesses the images of `examples` (in parallel) into one batch.
pub fn image_batch(
    data: &ImageDataset,
    pre: &Preprocessor,
    examples: std::ops::Range<usize>,
) -> Result<ImageBatch> {
    image_batch_of(data, pre, &examples.collect::<Vec<_>>())
}

/// Decodes and preprocesses the images `indices` (in parallel, in that order) into one batch.
pub fn image_batch_of(
    data: &ImageDataset,
    pre: &Preprocessor,
    indices: &[usize],
) -> Result<ImageBatch> {
    let images: Vec<(Vec<f32>, u32, u32)> = indices
        .par_iter()
        .map(|&i| {
            let path = data.path(i);
            let img = load_rgb(&path)?;
            Ok(pre.apply(&img, &path)?)
        })
        .collect::<Result<_>>()?;
    let (h, w) = (images[0].1, images[0].2);
    if let Some(i) = images.iter().position(|im| (im.1, im.2) != (h, w)) {
        return Err(ModelError::Invalid(format!(
            "{}: preprocessed to {}×{}, but the batch's first image is {w}×{h}; set a crop (or a fixed resize) in preprocessor_config.json so every image has one size",
            data.path(indices[i]).display(),
            images[i].2,
            images[i].1
        )));
    }
    let batch = images.len();
    let mut pixels = Vec::with_capacity(batch * (h * w * 3) as usize);
    images.into_iter().for_each(|im| pixels.extend(im.0));
    Ok(ImageBatch {
        pixels,
        batch,
        height: h as usize,
        width: w as usize,
    })
}

fn forward_images(
    model: &LoadedModel,
    data: &ImageDataset,
    pre: &Preprocessor,
    opts: &ExtractOptions,
    examples: std::ops::Range<usize>,
    progress: &dyn Progress,
    send: &mut dyn FnMut(usize, super::shard::HookRows) -> bool,
) -> Result<bool> {
    let batch = image_batch(data, pre, examples.clone())?;
    // Only the hooks are read: the forward stops after the last one.
    let mut capture = Capture::only(opts.hooks.iter().copied());
    model.model.forward((&batch).into(), &mut capture)?;
    let sent = send_rows(&capture.captured, &opts.hooks, send, |hook, tensor| {
        let (b, positions, width) = tensor.dims3()?;
        if b != batch.batch || width != model.model.hook_width(hook) {
            return Err(ModelError::Invalid(format!(
                "hook `{hook}` produced shape {:?}, expected [{}, positions, {}]",
                tensor.dims(),
                batch.batch,
                model.model.hook_width(hook)
            )));
        }
        let lengths = vec![positions; b];
        with_f32_slice(tensor, |values| {
            hook_rows(
                values,
                width,
                &lengths,
                positions,
                examples.start as u64,
                opts,
            )
        })
    })?;
    if !sent {
        return Ok(false);
    }
    progress.advance(batch.batch as u64);
    Ok(true)
}
