//! One shard of extraction: the forward passes, then each batch's hooks encoded and written
//! to Parquet by the compute pool, several hooks at once (see [`WRITE_GROUP`]).

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
use rayon::prelude::*;
use std::path::PathBuf;

/// Hooks whose rows (one hook's rows of one batch, ~6 MB at 384 wide and 32 × 128 tokens) are
/// held before they are written together, each hook's files by one of the pool's threads.
///
/// Why not a writer thread beside the forward: the forward already keeps every core busy, so a
/// writer thread only took cores from it — MiniLM's end-to-end extraction (7 hooks, two
/// cores) ran as fast with the writer waited for after every hook as overlapped. Written by
/// the pool between batches, the encoding (Parquet levels, the finiteness check, the copy into
/// the page cache) is shared by all cores: end to end ÷ forward alone 0.83 → 0.89, SmolLM2
/// end to end +10% (docs/perf/extraction-and-kernels.md). At most this many hooks' rows wait:
/// a decoder's 31 hooks all held cost SmolLM2 226 MiB of peak RSS.
const WRITE_GROUP: usize = 8;

/// The writers of one hook in one shard.
struct HookWriters {
    tokens: Option<ActivationWriter>,
    pools: Vec<ActivationWriter>,
}

impl HookWriters {
    fn write(&mut self, r: HookRows) -> Result<()> {
        if let Some(t) = self.tokens.as_mut() {
            t.write_owned(r.ids, Some(r.positions), r.rows)?;
        }
        for (p, values) in self.pools.iter_mut().zip(r.pooled) {
            p.write_owned(r.pooled_ids.clone(), None, values)?;
        }
        Ok(())
    }

    /// Every file of the hook, closed, synced and renamed into place.
    fn finish(self) -> Result<()> {
        for w in self.tokens.into_iter().chain(self.pools) {
            w.finish()?;
        }
        Ok(())
    }
}

/// One hook's rows of one batch, ready to write.
pub(super) struct HookRows {
    ids: Vec<u64>,
    positions: Vec<u32>,
    rows: Vec<f32>,
    pooled_ids: Vec<u64>,
    pooled: Vec<Vec<f32>>,
}

/// Rows handed over by the forward and not yet written, by hook.
struct Pending {
    rows: Vec<Option<HookRows>>,
}

impl Pending {
    fn new(hooks: usize) -> Self {
        Self {
            rows: (0..hooks).map(|_| None).collect(),
        }
    }

    fn held(&self) -> usize {
        self.rows.iter().flatten().count()
    }

    /// Holds `rows` of `hook` (first writing what is held if it holds this hook already), and
    /// writes the group once it is full, so that no more than a group waits while the next
    /// group's rows are built.
    fn hold(&mut self, writers: &mut [HookWriters], hook: usize, rows: HookRows) -> Result<()> {
        if self.rows[hook].is_some() {
            self.write(writers)?;
        }
        self.rows[hook] = Some(rows);
        if self.held() == WRITE_GROUP {
            self.write(writers)?;
        }
        Ok(())
    }

    /// Writes every held hook's rows, the hooks in parallel on the pool.
    fn write(&mut self, writers: &mut [HookWriters]) -> Result<()> {
        if self.held() == 0 {
            return Ok(());
        }
        writers
            .par_iter_mut()
            .zip(self.rows.par_iter_mut())
            .with_max_len(1)
            .try_for_each(|(w, rows)| rows.take().map_or(Ok(()), |r| w.write(r)))
    }
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

/// Runs `forward` over `range` in batches of `opts.batch_size`, writing what it hands over
/// between batches; renames the files only when all succeeded (an error leaves only temp
/// files, which readers never see). `forward(examples, send)` returns false when `send`
/// refused (a write failed; that error is returned).
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
    let mut writers = open_writers(target, run, opts, shard)?;
    let mut pending = Pending::new(writers.len());
    for batch_start in range.clone().step_by(opts.batch_size) {
        let batch_end = (batch_start + opts.batch_size).min(range.end);
        let mut failed = None;
        let mut send = |hook: usize, rows: HookRows| match pending.hold(&mut writers, hook, rows) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        };
        let sent = forward(batch_start..batch_end, &mut send)?;
        if let Some(e) = failed {
            return Err(e);
        }
        debug_assert!(sent, "send refused without an error");
        pending.write(&mut writers)?;
    }
    // Closing syncs each file to disk: the files in parallel, so their writes overlap.
    writers
        .into_par_iter()
        .with_max_len(1)
        .try_for_each(HookWriters::finish)
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
    let sent = send_rows(&capture.captured, &opts.hooks, send, |hook, tensor| {
        let width = model.model.hook_width(hook);
        let dims = tensor.dims();
        if dims.len() != 3 || dims[1] != t || dims[2] != width {
            return Err(ModelError::Invalid(format!(
                "hook `{hook}` produced shape {dims:?}, expected [batch, {t}, {width}]"
            )));
        }
        with_f32_slice(tensor, |values| {
            hook_rows(values, width, &batch.lengths, t, first_id, opts)
        })
    })?;
    if !sent {
        return Ok(false);
    }
    progress.advance(batch.lengths.iter().map(|&l| l as u64).sum());
    Ok(true)
}

/// Builds each hook's rows from the captured activations, [`WRITE_GROUP`] hooks at a time in
/// parallel (the copy without padding and the pools), and hands them to `send` in hook order;
/// returns false if `send` refused.
pub(super) fn send_rows(
    captured: &std::collections::BTreeMap<HookPoint, candle_core::Tensor>,
    hooks: &[HookPoint],
    send: &mut dyn FnMut(usize, HookRows) -> bool,
    rows_of: impl Fn(HookPoint, &candle_core::Tensor) -> Result<HookRows> + Sync,
) -> Result<bool> {
    for (g, group) in hooks.chunks(WRITE_GROUP).enumerate() {
        let built: Vec<Result<HookRows>> = group
            .par_iter()
            .with_max_len(1)
            .map(|hook| {
                let tensor = captured.get(hook).ok_or_else(|| {
                    ModelError::Invalid(format!("the model never reached hook `{hook}`"))
                })?;
                rows_of(*hook, tensor)
            })
            .collect();
        for (i, rows) in built.into_iter().enumerate() {
            if !send(g * WRITE_GROUP + i, rows?) {
                return Ok(false);
            }
        }
    }
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
