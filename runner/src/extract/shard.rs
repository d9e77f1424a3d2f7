//! One shard of extraction: the forward passes on this thread, Parquet encoding and writing on
//! a writer thread fed through a bounded queue, so compute and I/O overlap while at most one
//! batch's hooks wait in memory (see [`queue_len`]).

use super::ExtractOptions;
use glassbox_data::run::part_name;
use glassbox_data::store::{ActivationWriter, ShardMeta};
use glassbox_data::Pool;
use glassbox_data::{atomic, DataError, Progress, RunDir, StoreKind, TextDataset};
use glassbox_models::tokenizer::Encoded;
use glassbox_models::LoadedModel;
use glassbox_models::TokenBatch;
use glassbox_models::{Capture, HookPoint};
use glassbox_models::{ModelError, Result};
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;

/// Units (one hook's rows of one batch, ~6 MB at 384 wide and 32 × 128 tokens) that may wait
/// for the writer thread while it writes another: a whole batch's hooks up to [`MAX_QUEUE`], so
/// the forward thread hands a batch over and starts the next instead of waiting for the writer.
/// With room for two units, MiniLM's seven hooks kept one core idle while the writer drained
/// them (end-to-end extraction 3–5% slower, `glassbox-bench --serve`, four alternating runs).
fn queue_len(hooks: usize) -> usize {
    hooks.clamp(2, MAX_QUEUE)
}

/// The most units waiting: a decoder's 31 hooks all queued cost SmolLM2 226 MiB of peak RSS.
const MAX_QUEUE: usize = 8;

/// The writers of one hook in one shard.
struct HookWriters {
    tokens: Option<ActivationWriter>,
    pools: Vec<ActivationWriter>,
}

/// One hook's rows of one batch, ready to write.
pub(super) struct HookRows {
    ids: Vec<u64>,
    positions: Vec<u32>,
    rows: Vec<f32>,
    pooled_ids: Vec<u64>,
    pooled: Vec<Vec<f32>>,
}

enum Message {
    /// One hook's rows of one batch (the writer's unit, so little waits in the queue).
    Rows(usize, HookRows),
    /// All batches sent: finish (rename) the files. Without it, the writer abandons them.
    Finish,
}

/// The files shard `shard` writes for a hook.
fn shard_files(run: &RunDir, opts: &ExtractOptions, hook: HookPoint, shard: usize) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if opts.token_level {
        files.push(run.activations_dir(hook).join(part_name(shard)));
    }
    for pool in &opts.pools {
        files.push(run.pooled_dir(hook, *pool).join(part_name(shard)));
    }
    files
}

/// What the store records about the model that produced a shard.
pub(super) struct StoreTarget<'a> {
    pub id: &'a str,
    pub revision: &'a str,
    pub width: &'a dyn Fn(HookPoint) -> usize,
}

fn open_writers(
    target: &StoreTarget<'_>,
    run: &RunDir,
    opts: &ExtractOptions,
    shard: usize,
) -> Result<Vec<HookWriters>> {
    let meta = |hook: &HookPoint, kind: StoreKind, pool: Option<Pool>| ShardMeta {
        model_id: target.id.to_owned(),
        revision: target.revision.to_owned(),
        hook: *hook,
        kind,
        pool,
        width: (target.width)(*hook),
        dtype: opts.dtype,
        compression: opts.compression,
    };
    let mut writers = Vec::with_capacity(opts.hooks.len());
    for hook in &opts.hooks {
        // A shard without a marker may have left some renamed files behind: start it afresh.
        for file in shard_files(run, opts, *hook, shard) {
            for stale in [atomic::temp_path(&file), file] {
                if stale.exists() {
                    std::fs::remove_file(&stale).map_err(|e| DataError::Io {
                        path: stale.clone(),
                        source: e,
                    })?;
                }
            }
        }
        let tokens = if opts.token_level {
            let path = run.activations_dir(*hook).join(part_name(shard));
            Some(ActivationWriter::create(
                &path,
                meta(hook, StoreKind::Activation, None),
            )?)
        } else {
            None
        };
        let mut pools = Vec::new();
        for &pool in &opts.pools {
            let path = run.pooled_dir(*hook, pool).join(part_name(shard));
            pools.push(ActivationWriter::create(
                &path,
                meta(hook, StoreKind::Pooled, Some(pool)),
            )?);
        }
        writers.push(HookWriters { tokens, pools });
    }
    Ok(writers)
}

/// Runs the text examples in `range` and writes shard `shard` for every hook.
pub(super) fn run_shard(
    model: &LoadedModel,
    data: &TextDataset,
    run: &RunDir,
    opts: &ExtractOptions,
    shard: usize,
    range: std::ops::Range<usize>,
    progress: &dyn Progress,
) -> Result<()> {
    let width = |h: HookPoint| model.model.hook_width(h);
    let target = StoreTarget {
        id: &model.resolved.id,
        revision: &model.resolved.revision,
        width: &width,
    };
    write_shard(&target, run, opts, shard, range, |examples, send| {
        forward_batch(model, data, opts, examples, progress, send)
    })
}

/// Runs `forward` over `range` in batches of `opts.batch_size` on this thread while a writer
/// thread encodes and writes what it hands over; renames the files only when all succeeded.
/// `forward(examples, send)` returns false when `send` refused (the writer is gone).
pub(super) fn write_shard(
    target: &StoreTarget<'_>,
    run: &RunDir,
    opts: &ExtractOptions,
    shard: usize,
    range: std::ops::Range<usize>,
    mut forward: impl FnMut(
        std::ops::Range<usize>,
        &mut dyn FnMut(usize, HookRows) -> bool,
    ) -> Result<bool>,
) -> Result<()> {
    let writers = open_writers(target, run, opts, shard)?;
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Message>(queue_len(opts.hooks.len()));
        let writer = scope.spawn(move || -> Result<()> {
            let mut writers = writers;
            for message in rx {
                match message {
                    Message::Rows(hook, r) => {
                        let w = &mut writers[hook];
                        if let Some(t) = w.tokens.as_mut() {
                            t.write_owned(r.ids, Some(r.positions), r.rows)?;
                        }
                        for (p, values) in w.pools.iter_mut().zip(r.pooled) {
                            p.write_owned(r.pooled_ids.clone(), None, values)?;
                        }
                    }
                    Message::Finish => {
                        for w in writers {
                            if let Some(t) = w.tokens {
                                t.finish()?;
                            }
                            for p in w.pools {
                                p.finish()?;
                            }
                        }
                        return Ok(());
                    }
                }
            }
            // The producer stopped early (an error): leave the temp files unrenamed.
            Ok(())
        });
        let produced = (|| -> Result<()> {
            for batch_start in range.clone().step_by(opts.batch_size) {
                let batch_end = (batch_start + opts.batch_size).min(range.end);
                let mut send =
                    |hook: usize, rows: HookRows| tx.send(Message::Rows(hook, rows)).is_ok();
                let sent = forward(batch_start..batch_end, &mut send)?;
                if !sent {
                    return Ok(()); // the writer failed; its error is reported below
                }
            }
            let _ = tx.send(Message::Finish);
            Ok(())
        })();
        drop(tx);
        let written = writer.join().unwrap_or_else(|_| {
            Err(ModelError::Invalid(
                "the Parquet writer thread panicked".into(),
            ))
        });
        produced.and(written)
    })
}

/// Runs one batch and hands each hook's rows (padding dropped, pools applied) to `send` as
/// soon as they are ready; returns false if `send` refused (the writer is gone).
fn forward_batch(
    model: &LoadedModel,
    data: &TextDataset,
    opts: &ExtractOptions,
    examples: std::ops::Range<usize>,
    progress: &dyn Progress,
    send: &mut dyn FnMut(usize, HookRows) -> bool,
) -> Result<bool> {
    let texts: Vec<&str> = data.texts[examples.clone()]
        .iter()
        .map(String::as_str)
        .collect();
    let encoded = model.tokenizer()?.encode(&texts)?;
    let refs: Vec<&Encoded> = encoded.iter().collect();
    let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device)?;
    // Only the hooks are read: the forward stops after the last one.
    let mut capture = Capture::only(opts.hooks.iter().copied());
    model.model.forward((&batch).into(), &mut capture)?;
    let (_, t) = batch.input_ids.dims2()?;
    let first_id = examples.start as u64;
    for (k, hook) in opts.hooks.iter().enumerate() {
        let tensor = capture
            .captured
            .get(hook)
            .ok_or_else(|| ModelError::Invalid(format!("the model never reached hook `{hook}`")))?;
        let width = model.model.hook_width(*hook);
        let dims = tensor.dims();
        if dims.len() != 3 || dims[1] != t || dims[2] != width {
            return Err(ModelError::Invalid(format!(
                "hook `{hook}` produced shape {dims:?}, expected [batch, {t}, {width}]"
            )));
        }
        let rows = with_f32_slice(tensor, |values| {
            hook_rows(values, width, &batch.lengths, t, first_id, opts)
        })?;
        if !send(k, rows) {
            return Ok(false);
        }
    }
    progress.advance(batch.lengths.iter().map(|&l| l as u64).sum());
    Ok(true)
}

/// Calls `f` with the tensor's values as a contiguous f32 slice, borrowing the CPU storage
/// when possible (no copy) and copying otherwise.
pub(super) fn with_f32_slice<R>(t: &candle_core::Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            if let Ok(all) = cpu.as_slice::<f32>() {
                return Ok(f(&all[start..end]));
            }
        }
    }
    let copy: Vec<f32> = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    Ok(f(&copy))
}

/// One hook's rows of a padded `[batch, t, width]` activation: token rows without padding,
/// and each pool over the example's real tokens.
pub(super) fn hook_rows(
    values: &[f32],
    width: usize,
    lengths: &[usize],
    t: usize,
    first_id: u64,
    opts: &ExtractOptions,
) -> HookRows {
    let n_tokens: usize = lengths.iter().sum();
    let token_level = opts.token_level;
    let mut r = HookRows {
        ids: Vec::with_capacity(if token_level { n_tokens } else { 0 }),
        positions: Vec::with_capacity(if token_level { n_tokens } else { 0 }),
        rows: Vec::with_capacity(if token_level { n_tokens * width } else { 0 }),
        pooled_ids: Vec::with_capacity(lengths.len()),
        pooled: vec![Vec::with_capacity(lengths.len() * width); opts.pools.len()],
    };
    let mut out = vec![0f32; width];
    for (i, &len) in lengths.iter().enumerate() {
        let id = first_id + i as u64;
        let example = &values[i * t * width..(i * t + len) * width];
        if token_level {
            r.ids.extend(std::iter::repeat_n(id, len));
            r.positions.extend(0..len as u32);
            r.rows.extend_from_slice(example);
        }
        for (pool, pooled) in opts.pools.iter().zip(r.pooled.iter_mut()) {
            pool.apply(example, width, &mut out);
            pooled.extend_from_slice(&out);
        }
        r.pooled_ids.push(id);
    }
    r
}
