//! Pretrained SAE suites as they ship, recognised by their folder layout and read into one
//! [`Sae`](super::Sae): SAELens (`cfg.json` + `sae_weights.safetensors`), Gemma Scope
//! (`params.npz`), Gemma Scope 2 (`params.safetensors`, lower-case keys), Llama Scope
//! (`hyperparams.json` + `checkpoints/final.safetensors`), EleutherAI sparsify
//! (`cfg.json` and `sae.safetensors`), dictionary_learning (`ae.pt` + `config.json`), Goodfire
//! (`…-SAE-l<l>.pth`) and Qwen-Scope (`layer<n>.sae.pt`) — the last three pickles, read on
//! request only. Each reader follows the suite's own encoder (centring or not, input
//! scaling, thresholds) so codes match the suite's; hook names in HF module-path form are
//! mapped to glassbox's TransformerLens names.

mod dictionary_learning;
mod gemma_scope;
pub mod inspect;
mod llama_scope;
pub mod npz;
pub(crate) mod pickled_suites;
pub(crate) mod sparsify;

pub use super::saelens::LoadedSae;
use crate::ConceptError;
use std::path::Path;

/// An on-disk SAE format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    SaeLens,
    GemmaScope,
    GemmaScope2,
    LlamaScope,
    Sparsify,
    DictionaryLearning,
    Goodfire,
    QwenScope,
}

impl Format {
    /// The name errors and tables use.
    pub fn name(self) -> &'static str {
        match self {
            Format::SaeLens => "saelens",
            Format::GemmaScope => "gemma_scope",
            Format::GemmaScope2 => "gemma_scope_2",
            Format::LlamaScope => "llama_scope",
            Format::Sparsify => "sparsify",
            Format::DictionaryLearning => "dictionary_learning",
            Format::Goodfire => "goodfire",
            Format::QwenScope => "qwen_scope",
        }
    }
}

/// What each format's folder holds, for the error when none matches.
const LAYOUTS: &str = "SAELens: cfg.json + sae_weights.safetensors; Gemma Scope: params.npz; \
     Gemma Scope 2: params.safetensors; Llama Scope: hyperparams.json + \
     checkpoints/final.safetensors; sparsify: cfg.json + sae.safetensors; dictionary_learning: \
     ae.pt + config.json; Goodfire: <model>-SAE-l<layer>.pth; Qwen-Scope: layer<n>.sae.pt in the \
     folder of its repo (SAE-Res-<model>-W<N>K-L0_<k>)";

/// The format of the SAE folder `dir`, by the files it holds.
pub fn detect(dir: &Path) -> Result<Format, ConceptError> {
    if dir.is_file() {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        return pickled_suites::detect_file(name).ok_or_else(|| {
            ConceptError::Invalid(format!(
                "{}: a file whose name says no SAE suite; an SAE is a folder ({LAYOUTS})",
                dir.display()
            ))
        });
    }
    if !dir.is_dir() {
        return Err(ConceptError::Invalid(format!(
            "{}: does not exist; an SAE is a folder ({LAYOUTS})",
            dir.display()
        )));
    }
    if let Some(format) = folder_layout(dir) {
        return Ok(format);
    }
    if let [first, ..] = pickled_suites::suite_files(dir).as_slice() {
        return Err(ConceptError::Invalid(format!(
            "{}: holds several per-layer SAE files (e.g. {}); load one of them by its file path",
            dir.display(),
            first.0.display()
        )));
    }
    let below = sae_folders_below(dir, 3);
    let hint = match below.as_slice() {
        [] => String::new(),
        found => format!(
            "; SAE folders below it (pass one of them): {}{}",
            found
                .iter()
                .take(MAX_LISTED)
                .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if found.len() > MAX_LISTED {
                format!(" and {} more", found.len() - MAX_LISTED)
            } else {
                String::new()
            }
        ),
    };
    Err(ConceptError::Invalid(format!(
        "{}: no SAE format recognised; expected one of — {LAYOUTS}{hint}",
        dir.display()
    )))
}

/// SAE folders listed in a "none recognised here" error.
const MAX_LISTED: usize = 5;

/// The suite whose files `dir` holds, when exactly one SAE is there (a folder with several
/// pickled per-layer files is not one SAE).
fn folder_layout(dir: &Path) -> Option<Format> {
    let has = |f: &str| dir.join(f).is_file();
    Some(if has("cfg.json") && has("sae_weights.safetensors") {
        Format::SaeLens
    } else if has("params.npz") {
        Format::GemmaScope
    } else if has("params.safetensors") {
        Format::GemmaScope2
    } else if has("hyperparams.json") && has("checkpoints/final.safetensors") {
        Format::LlamaScope
    } else if has("cfg.json") && has("sae.safetensors") {
        Format::Sparsify
    } else if has("ae.pt") {
        Format::DictionaryLearning
    } else if let [(_, format)] = pickled_suites::suite_files(dir).as_slice() {
        *format
    } else {
        return None;
    })
}

/// Folders up to `depth` levels below `dir` that hold an SAE (a suite's repository checked
/// out whole: Gemma Scope's `layer_3/width_16k/average_l0_71/`, sparsify's `layers.5/`), in
/// name order.
fn sae_folders_below(dir: &Path, depth: usize) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if depth == 0 {
        return found;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    let mut subdirs: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    for sub in subdirs {
        if folder_layout(&sub).is_some() {
            found.push(sub);
        } else {
            found.extend(sae_folders_below(&sub, depth - 1));
        }
    }
    found
}

/// Loads the SAE in `dir`, whatever its suite; pickled formats are refused.
pub fn load(dir: &Path) -> Result<LoadedSae, ConceptError> {
    load_with(dir, false)
}

/// [`load`], reading pickled formats (dictionary_learning's `ae.pt`, Goodfire, Qwen-Scope)
/// when `allow_pickle`:
/// through an unpickler that interprets tensor rebuilds only and runs nothing.
pub fn load_with(dir: &Path, allow_pickle: bool) -> Result<LoadedSae, ConceptError> {
    let format = detect(dir)?;
    let loaded = match format {
        Format::DictionaryLearning => dictionary_learning::load(dir, allow_pickle),
        Format::SaeLens => super::saelens::load(dir),
        Format::GemmaScope => gemma_scope::load_npz(dir),
        Format::GemmaScope2 => gemma_scope::load_safetensors(dir),
        Format::LlamaScope => llama_scope::load(dir),
        Format::Sparsify => sparsify::load(dir),
        Format::Goodfire => pickled_suites::load_goodfire(dir, allow_pickle),
        Format::QwenScope => pickled_suites::load_qwen_scope(dir, allow_pickle),
    };
    loaded.map_err(|e| ConceptError::Invalid(format!("{e} (read as {})", format.name())))
}

/// The tensors of a pickled state dict, as f32, read only when `allow_pickle` (else the error
/// says how to allow it) by the allow-listed unpickler, which interprets tensor rebuilds and
/// runs nothing.
pub(crate) fn read_pickle(
    file: &Path,
    allow_pickle: bool,
    suite: &str,
) -> Result<std::collections::HashMap<String, super::tensors::Loaded>, ConceptError> {
    if !allow_pickle {
        return Err(ConceptError::Invalid(format!(
            "{}: a {suite} SAE is a PyTorch pickle; pass --allow-pickle (or `allow_pickle = true` \
             in [dictionary]) to read it — only tensor data is interpreted, nothing in it is run",
            file.display()
        )));
    }
    Ok(glassbox_data::torch_pickle::load(file)
        .map_err(|e| ConceptError::Invalid(e.to_string()))?
        .into_iter()
        .map(|(name, t)| {
            let values = t.to_f32();
            (
                name,
                super::tensors::Loaded {
                    shape: t.shape,
                    values,
                },
            )
        })
        .collect())
}

/// An SAE of `d` inputs and `m` latents whose weights and architecture a reader fills in.
pub(super) fn unfilled(d: usize, m: usize) -> super::Sae {
    super::Sae {
        input_norm: Default::default(),
        d_in: d,
        width: m,
        architecture: super::Architecture::JumpRelu,
        w_enc: Vec::new(),
        b_enc: Vec::new(),
        w_dec: Vec::new(),
        b_dec: Vec::new(),
        threshold: Vec::new(),
        gate: None,
    }
}

/// A TransformerLens hook name for an HF module path as suites record them
/// (`model.layers.12.output`, `layers.12`, `layers.12.mlp`, `embed_tokens`, …); names already
/// in TransformerLens form pass through.
pub fn hook_from_module_path(path: &str) -> Option<String> {
    if path.starts_with("blocks.") || path.starts_with("hook_") {
        return Some(path.to_owned());
    }
    let p = path
        .trim_start_matches("model.")
        .trim_start_matches("language_model.")
        .trim_start_matches("model.");
    if p.starts_with("embed_tokens") {
        return Some("hook_embed".into());
    }
    let rest = p
        .strip_prefix("layers.")
        .or_else(|| p.strip_prefix("layers_"))?;
    let (layer, tail) = match rest.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&rest[..i], rest[i..].trim_start_matches('.')),
        None => (rest, ""),
    };
    let layer: usize = layer.parse().ok()?;
    let hook = match tail {
        "" | "output" => "hook_resid_post",
        "mlp" | "mlp.output" | "post_feedforward_layernorm.output" => "hook_mlp_out",
        "self_attn" | "self_attn.output" => "hook_attn_out",
        "self_attn.o_proj.input" => "attn.hook_z",
        "mlp.input" | "pre_feedforward_layernorm.output" | "post_attention_layernorm.output" => {
            "hook_resid_mid"
        }
        _ => return None,
    };
    Some(format!("blocks.{layer}.{hook}"))
}

/// The number after `key` in `text` (`layer_12` → 12).
pub(crate) fn number_after(text: &str, key: &str) -> Option<usize> {
    let at = text.rfind(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_map_to_transformerlens_hooks() {
        for (path, hook) in [
            ("model.layers.12.output", "blocks.12.hook_resid_post"),
            ("layers.3", "blocks.3.hook_resid_post"),
            ("layers.3.mlp", "blocks.3.hook_mlp_out"),
            (
                "model.layers.7.self_attn.o_proj.input",
                "blocks.7.attn.hook_z",
            ),
            (
                "model.layers.2.post_feedforward_layernorm.output",
                "blocks.2.hook_mlp_out",
            ),
            ("embed_tokens", "hook_embed"),
            ("blocks.4.hook_resid_pre", "blocks.4.hook_resid_pre"),
        ] {
            assert_eq!(hook_from_module_path(path).as_deref(), Some(hook), "{path}");
        }
        assert_eq!(hook_from_module_path("lm_head"), None);
        assert_eq!(number_after("a/layer_20/width_16k", "layer_"), Some(20));
    }
}
