//! An SAE's latents over a run's stored tokens in the layout of delphi's latent cache
//! (EleutherAI `delphi.latents.LatentCache.save_splits` / `save_config`; read by
//! `delphi.latents.LatentDataset`), so delphi's explainers and scorers run on what glassbox
//! extracted:
//!
//! `<out>/<module>/<first>_<last>.safetensors` per latent range (inclusive), each with
//! `locations` `[n, 3]` (sequence, position, latent − first; u16 when everything fits, else
//! u32), `activations` `[n]` (f16) and `tokens` `[sequences, context]` (i64), and
//! `<out>/<module>/config.json` (delphi's `CacheConfig` fields plus `model_name`).
//!
//! delphi caches fixed-length sequences; glassbox's examples vary in length, so the tokens are
//! laid end to end in example order and cut into windows of `context` tokens (the remainder
//! dropped), as SAELens's cached-activation bridge does. Every stored row is encoded, special
//! tokens included (delphi caches every position).

use crate::sae::stream::{RowSource, Split, StoreRows};
use crate::sae::Sae;
use crate::ConceptError;
use glassbox_data::store::PartStream;
use glassbox_data::{atomic, HookPoint, Progress, RunDir};
use half::f16;
use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How to lay the cache out.
#[derive(Debug, Clone)]
pub struct DelphiOptions {
    /// Tokens per cached sequence (delphi's `cache_ctx_len`).
    pub context: usize,
    /// Latent ranges, one file each (delphi's `n_splits`).
    pub splits: usize,
    /// The Hugging Face model id delphi loads the tokenizer of.
    pub model_name: String,
    /// The folder name of the module (delphi's hookpoint).
    pub module: String,
    /// Recorded as the dataset in `config.json`.
    pub dataset: String,
}

/// What was written for one SAE.
#[derive(Debug, Clone, Serialize)]
pub struct DelphiCache {
    pub hook: HookPoint,
    pub folder: PathBuf,
    pub sequences: usize,
    pub tokens_dropped: usize,
    pub activations: usize,
    pub files: usize,
}

/// One active latent on one token.
#[derive(Clone, Copy)]
struct Entry {
    sequence: u32,
    position: u32,
    latent: u32,
    value: f32,
}

/// Writes `sae`'s latents on `hook`'s stored rows under `out/<module>/`.
pub fn write_delphi_cache(
    run: &RunDir,
    hook: HookPoint,
    sae: &Sae,
    options: &DelphiOptions,
    out: &Path,
    progress: &dyn Progress,
) -> Result<DelphiCache, ConceptError> {
    if options.context == 0 || options.splits == 0 || options.splits > sae.width {
        return Err(ConceptError::Invalid(format!(
            "delphi cache: context {} and splits {} must be ≥ 1, splits at most the SAE's {} latents",
            options.context, options.splits, sae.width
        )));
    }
    // Global token order: examples by id, positions ascending.
    let mut ids = glassbox_data::tokens::read_token_ids(run)?;
    ids.sort_unstable_by_key(|&(e, p, _)| (e, p));
    let sequences = ids.len() / options.context;
    if sequences == 0 {
        return Err(ConceptError::Invalid(format!(
            "{}: {} stored tokens, fewer than one sequence of {}; pass a smaller --context-size",
            run.tokens().display(),
            ids.len(),
            options.context
        )));
    }
    if sequences > u32::MAX as usize {
        return Err(ConceptError::Invalid(format!(
            "delphi cache: {sequences} sequences is more than a u32 location holds; pass a larger --context-size"
        )));
    }
    let kept = sequences * options.context;
    let index: HashMap<(u64, u32), usize> = ids[..kept]
        .iter()
        .enumerate()
        .map(|(i, &(e, p, _))| ((e, p), i))
        .collect();
    let tokens: Vec<i64> = ids[..kept].iter().map(|&(_, _, t)| t as i64).collect();

    let dir = run.activations_dir(hook);
    let mut rows = StoreRows::open(PartStream::open(&dir)?, hook, Split::All, 0.0, 0, None)?;
    if rows.width() != sae.d_in {
        return Err(ConceptError::Invalid(format!(
            "hook `{hook}` has width {} but its SAE's d_in is {}",
            rows.width(),
            sae.d_in
        )));
    }
    let mut entries = Vec::new();
    let (mut chunk, mut chunk_ids) = (Vec::new(), Vec::new());
    let mut seen = vec![false; kept];
    progress.start("delphi cache: encoding the stored rows", kept as u64);
    while rows.next_rows(&mut chunk, &mut chunk_ids)? {
        if !chunk_ids.is_empty() {
            let codes = sae.encode(&chunk)?;
            for (r, id) in chunk_ids.iter().enumerate() {
                let Some(&at) = index.get(id) else { continue };
                seen[at] = true;
                let (sequence, position) = (at / options.context, at % options.context);
                entries.extend(
                    codes
                        .row(r)
                        .filter(|&(_, v)| v > 0.0)
                        .map(|(latent, value)| Entry {
                            sequence: sequence as u32,
                            position: position as u32,
                            latent: latent as u32,
                            value,
                        }),
                );
            }
            progress.advance(chunk_ids.len() as u64);
        }
        chunk.clear();
        chunk_ids.clear();
    }
    progress.finish();
    if let Some(missing) = seen.iter().position(|s| !s) {
        let (e, p, _) = ids[missing];
        return Err(ConceptError::Invalid(format!(
            "{}: token (example {e}, position {p}) of tokens.parquet has no row at hook `{hook}`; re-extract the hook with token_level = true",
            dir.display()
        )));
    }
    // delphi's order: by sequence, position, then latent (its `nonzero()` order).
    entries.sort_unstable_by_key(|e| (e.sequence, e.position, e.latent));
    // The cache holds activations as f16, where from 65,520 on rounding gives an infinity.
    if let Some(e) = entries.iter().find(|e| !f16::from_f32(e.value).is_finite()) {
        return Err(ConceptError::Invalid(format!(
            "latent {} at sequence {}, position {} of hook `{hook}` has activation {}, beyond the f16 range (±65504) of delphi's cache; rescale the SAE's encoder or leave this hook out",
            e.latent, e.sequence, e.position, e.value
        )));
    }

    // Written beside the final folder and renamed into place: a failed export leaves no
    // folder that looks complete.
    let folder = out.join(&options.module);
    let staging = out.join(format!(".{}.partial", options.module));
    let io = |p: &Path, e: std::io::Error| ConceptError::Invalid(format!("{}: {e}", p.display()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
    let tokens_bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    let mut files = 0;
    for (first, last) in split_bounds(sae.width, options.splits) {
        let part: Vec<&Entry> = entries
            .iter()
            .filter(|e| (first..=last).contains(&(e.latent as usize)))
            .collect();
        let wide = part
            .iter()
            .any(|e| e.sequence >= 1 << 16 || e.latent as usize - first >= 1 << 16);
        let mut locations = Vec::with_capacity(part.len() * 3 * if wide { 4 } else { 2 });
        for e in &part {
            for v in [e.sequence, e.position, e.latent - first as u32] {
                if wide {
                    locations.extend_from_slice(&v.to_le_bytes());
                } else {
                    locations.extend_from_slice(&(v as u16).to_le_bytes());
                }
            }
        }
        let activations: Vec<u8> = part
            .iter()
            .flat_map(|e| f16::from_f32(e.value).to_le_bytes())
            .collect();
        let path = staging.join(format!("{first}_{last}.safetensors"));
        let bad = |e: safetensors::SafeTensorError| {
            ConceptError::Invalid(format!("{}: {e}", path.display()))
        };
        let views = vec![
            (
                "locations".to_owned(),
                TensorView::new(
                    if wide { Dtype::U32 } else { Dtype::U16 },
                    vec![part.len(), 3],
                    &locations,
                )
                .map_err(bad)?,
            ),
            (
                "activations".to_owned(),
                TensorView::new(Dtype::F16, vec![part.len()], &activations).map_err(bad)?,
            ),
            (
                "tokens".to_owned(),
                TensorView::new(Dtype::I64, vec![sequences, options.context], &tokens_bytes)
                    .map_err(bad)?,
            ),
        ];
        let bytes = safetensors::tensor::serialize(views, None).map_err(bad)?;
        atomic::write_bytes(&path, &bytes)?;
        files += 1;
    }
    let config = serde_json::json!({
        "dataset_repo": options.dataset,
        "dataset_split": "",
        "dataset_name": "",
        "dataset_column": "text",
        "batch_size": 1,
        "cache_ctx_len": options.context,
        "n_tokens": kept,
        "n_splits": options.splits,
        "model_name": options.model_name,
    });
    let text = serde_json::to_string_pretty(&config).expect("JSON values serialise");
    atomic::write_bytes(&staging.join("config.json"), text.as_bytes())?;
    if folder.exists() {
        std::fs::remove_dir_all(&folder).map_err(|e| io(&folder, e))?;
    }
    std::fs::rename(&staging, &folder).map_err(|e| io(&folder, e))?;
    Ok(DelphiCache {
        hook,
        folder,
        sequences,
        tokens_dropped: ids.len() - kept,
        activations: entries.len(),
        files,
    })
}

/// delphi's latent ranges: `linspace(0, width, splits + 1)` truncated, each range ending one
/// before the next begins (inclusive ends).
pub fn split_bounds(width: usize, splits: usize) -> Vec<(usize, usize)> {
    let edge = |i: usize| (i as f64 * width as f64 / splits as f64) as usize;
    (0..splits).map(|i| (edge(i), edge(i + 1) - 1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_cover_every_latent_once() {
        assert_eq!(
            split_bounds(768, 5),
            vec![(0, 152), (153, 306), (307, 459), (460, 613), (614, 767)]
        );
        assert_eq!(split_bounds(4, 4), vec![(0, 0), (1, 1), (2, 2), (3, 3)]);
    }
}
