//! glassbox-models: hub access, weights, tokenizers and hookable model implementations (one
//! family per file) behind one interface, [`HookedModel`], for text and vision. A pure library:
//! load a checkpoint, run a forward with hooks that capture or replace, run a backward. Running
//! models over a run directory is `glassbox-runner`'s.

pub mod batch;
pub mod bert;
mod borrowed;
pub mod class_head;
mod config_ranges;
mod decoder;
pub mod error;
pub mod gemma2;
pub mod gemma3;
pub mod gguf;
mod gguf_attention;
mod gguf_split;
mod gguf_tokenizer;
pub mod gpt2;
mod gpt2_layout;
pub mod gpt_neo;
pub mod held;
pub mod hooks;
pub mod hub;
mod huge_pages;
pub mod kernels;
mod layers;
pub mod llama;
pub mod lora;
pub mod model;
pub mod neox;
pub mod olmo2;
pub mod olmo3;
pub mod opt;
mod packed;
pub mod phi3;
pub mod precision;
pub mod prefix;
mod prenorm;
pub mod quantized;
pub mod qwen3;
pub mod randomize;
pub mod registry;
mod rotary;
pub mod safetensors_file;
pub mod score_head;
pub mod slow_tokenizers;
pub mod tokenizer;
pub mod torch_legacy;
pub mod vision;
pub mod weights;

pub use batch::{ImageBatch, TokenBatch};
pub use class_head::ClassHeadParts;
pub use error::ModelError;
pub use glassbox_data::pool::{self, Pool};
pub use glassbox_data::Modality;
pub use hooks::{Capture, ConvPart, HookError, HookPoint, Hooks};
pub use hub::{resolve, ModelSpec, ResolvedModel};
pub use model::{
    why_no_next_token, AttentionOutput, FinalNorm, HookedModel, Input, PixelGradients,
};
pub use prefix::{PrefixCache, Suffixes};
pub use registry::{
    load_model, load_model_randomized, ComputeDtype, LoadOptions, LoadedModel, WeightsDtype,
    FAMILIES, REDUCED_PRECISION_FAMILIES,
};

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// The SHA-256 a run records for a checkpoint: of the weights file, or for shards listed by a
/// `*.safetensors.index.json`, of the index and each shard's hash in turn.
pub fn weights_sha256(path: &std::path::Path) -> Result<String> {
    if !safetensors_file::is_index(path) {
        return hash(path);
    }
    // The shards in parallel (in their listed order): one at a time, hashing a 5 GB checkpoint
    // kept one core busy for seconds at every load.
    use rayon::prelude::*;
    let shards: Vec<std::path::PathBuf> = safetensors_file::shards(path)?
        .into_iter()
        .map(|(shard, _)| shard)
        .collect();
    let mut parts = vec![hash(path)?];
    parts.extend(
        shards
            .par_iter()
            .map(|shard| hash(shard))
            .collect::<Result<Vec<_>>>()?,
    );
    Ok(glassbox_data::hash::sha256_bytes(
        parts.join("\n").as_bytes(),
    ))
}

/// One file's sha256, failures named as a weights error on that file.
fn hash(path: &std::path::Path) -> Result<String> {
    glassbox_data::hash::sha256_file(path).map_err(|e| ModelError::Weights {
        path: path.to_path_buf(),
        message: format!("cannot hash: {e}"),
    })
}

/// The hash that pins a resolved model: its weights' ([`weights_sha256`]), joined with the other
/// parts of a split GGUF and a LoRA adapter's config and weights where there are any (a plain
/// checkpoint's hash is its weights' alone).
pub fn model_sha256(resolved: &ResolvedModel) -> Result<String> {
    let mut parts = vec![weights_sha256(&resolved.weights)?];
    if let Some((prefix, 1, count)) = gguf_split::split_name(&resolved.weights) {
        for k in 2..=count {
            parts.push(hash(
                &resolved
                    .weights
                    .with_file_name(gguf_split::part_name(&prefix, k, count)),
            )?);
        }
    }
    if let Some(adapter) = &resolved.adapter {
        parts.push(hash(adapter)?);
        if let Some(weights) = lora::weights_file(adapter) {
            parts.push(hash(&weights)?);
        }
    }
    Ok(match parts.len() {
        1 => parts.remove(0),
        _ => glassbox_data::hash::sha256_bytes(parts.join("\n").as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use glassbox_data::hash::{sha256_bytes, sha256_file};

    /// A sharded checkpoint's hash is the index's hash and each shard's, in the index's file
    /// order, joined and hashed — however many threads hash the shards.
    #[test]
    fn sharded_weights_hash_in_listed_order() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("model.safetensors.index.json");
        let names = [
            "model-00001-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors",
        ];
        let map: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("\"t{i}\": \"{n}\""))
            .collect();
        std::fs::write(
            &index,
            format!("{{\"weight_map\": {{{}}}}}", map.join(", ")),
        )
        .unwrap();
        for (i, n) in names.iter().enumerate() {
            std::fs::write(dir.path().join(n), vec![i as u8 + 7; 100_000 * (i + 1)]).unwrap();
        }
        let mut parts = vec![sha256_file(&index).unwrap()];
        parts.extend(
            names
                .iter()
                .map(|n| sha256_file(&dir.path().join(n)).unwrap()),
        );
        let want = sha256_bytes(parts.join("\n").as_bytes());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        assert_eq!(
            pool.install(|| super::weights_sha256(&index)).unwrap(),
            want
        );
        assert_eq!(super::weights_sha256(&index).unwrap(), want);
    }
}
