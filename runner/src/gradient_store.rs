//! Target gradients into the store: `gradients/target=<slug>/hook=<hook>/part-NNNNN.parquet`
//! (one part per [`DEFAULT_PART_SIZE`] examples of the target), one row per (example, token)
//! like the token activations, holding `∂ target / ∂ activation`.

use crate::gradients::{target_gradients, Convention, LinearHead};
use glassbox_data::examples::{read_examples, Examples};
use glassbox_data::store::{ActDtype, ActivationWriter, Codec, ShardMeta, StoreKind};
use glassbox_data::{DataError, HookPoint, Progress, RunDir};
use glassbox_models::tokenizer::Encoded;
use glassbox_models::{LoadedModel, Result, TokenBatch};
use std::collections::BTreeMap;

/// One target's gradients to store.
pub struct GradientJob<'a> {
    /// The target as the user wrote it (for the progress bar).
    pub name: &'a str,
    /// The folder-safe target name: `gradients/target=<slug>/`.
    pub slug: &'a str,
    /// The scalar differentiated: a linear head on a pooled hook activation and its class.
    pub head: &'a LinearHead,
    /// Logit or loss.
    pub convention: Convention,
    /// Rows of `examples.parquet` to run (the target class's examples).
    pub examples: &'a [usize],
    /// Hooks to store gradients at.
    pub hooks: &'a [HookPoint],
    /// Examples per forward/backward.
    pub batch_size: usize,
}

/// Examples per part of a target's gradients (the unit of resumption and of `--shard`).
pub const DEFAULT_PART_SIZE: usize = 256;

/// Runs the model differentiably over the job's examples, `part_size` at a time, and writes
/// the gradients at every hook (`part-NNNNN.parquet` per part), replacing any earlier ones of
/// this target at those hooks (inside the caller's staging: the stage's transaction makes the
/// swap atomic).
pub fn write_gradients(
    run: &RunDir,
    model: &LoadedModel,
    job: &GradientJob<'_>,
    part_size: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let examples = read_examples(run)?;
    for &hook in job.hooks {
        let dir = run.gradients_dir(job.slug, hook);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(DataError::io(&dir))?;
        }
    }
    progress.start(
        &format!("gradients {}", job.name),
        job.examples.len() as u64,
    );
    let size = part_size.max(1);
    for (k, start) in (0..job.examples.len()).step_by(size).enumerate() {
        let end = (start + size).min(job.examples.len());
        write_gradient_part(run, model, job, &examples, k, start..end, progress)?;
    }
    progress.finish();
    Ok(())
}

/// Writes part `part` of a job, its examples `range` (positions in `job.examples`), at every
/// hook: `gradients/target=<slug>/hook=<hook>/part-NNNNN.parquet`. Batches never span parts,
/// so a part's values do not depend on which process writes it or which parts it writes.
/// Advances `progress` by the part's examples.
pub fn write_gradient_part(
    run: &RunDir,
    model: &LoadedModel,
    job: &GradientJob<'_>,
    examples: &Examples,
    part: usize,
    range: std::ops::Range<usize>,
    progress: &dyn Progress,
) -> Result<()> {
    let mut writers = BTreeMap::new();
    for &hook in job.hooks {
        let dir = run.gradients_dir(job.slug, hook);
        std::fs::create_dir_all(&dir).map_err(DataError::io(&dir))?;
        let meta = ShardMeta {
            model_id: model.resolved.id.clone(),
            revision: model.resolved.revision.clone(),
            hook,
            kind: StoreKind::Activation,
            pool: None,
            width: model.model.hook_width(hook),
            dtype: ActDtype::F32,
            compression: Codec::None,
        };
        let path = dir.join(glassbox_data::run::part_name(part));
        writers.insert(hook, ActivationWriter::create(&path, meta)?);
    }
    for chunk in job.examples[range].chunks(job.batch_size.max(1)) {
        let texts: Vec<&str> = chunk.iter().map(|&i| examples.texts[i].as_str()).collect();
        let encoded = model.tokenizer()?.encode(&texts)?;
        let refs: Vec<&Encoded> = encoded.iter().collect();
        let batch = TokenBatch::from_encoded(&refs, model.pad_id, &model.device)?;
        let out = target_gradients(model, &batch, job.hooks, job.head, job.convention)?;
        for (hook, g) in &out.gradients {
            let (_, t, w) = g.dims3()?;
            let values = g.flatten_all()?.to_vec1::<f32>()?;
            let (mut ids, mut positions, mut rows) = (Vec::new(), Vec::new(), Vec::new());
            for (b, &n) in batch.lengths.iter().enumerate() {
                for p in 0..n {
                    ids.push(examples.example_ids[chunk[b]]);
                    positions.push(p as u32);
                    rows.extend_from_slice(&values[(b * t + p) * w..(b * t + p + 1) * w]);
                }
            }
            writers
                .get_mut(hook)
                .expect("a writer per hook")
                .write_owned(ids, Some(positions), rows)?;
        }
        progress.advance(chunk.len() as u64);
    }
    for (_, w) in writers {
        w.finish()?;
    }
    Ok(())
}
