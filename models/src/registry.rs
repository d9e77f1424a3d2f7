//! The family registry: reads `config.json` and builds the family its `model_type` names.
//! Adding a family touches its own file and one line here.

use crate::loader::HookableModel;
use crate::tokenizer::TextTokenizer;
use crate::weights::Weights;
use crate::{bert, ModelError, ResolvedModel, Result};
use candle_core::Device;

/// Model families this build can run, by `config.json` `model_type`.
pub const SUPPORTED_FAMILIES: &[&str] = &["bert", "gpt2", "gpt_neox", "llama", "qwen2", "mistral"];

/// A resolved model with its tokenizer, ready to run.
pub struct LoadedModel {
    pub resolved: ResolvedModel,
    pub model: Box<dyn HookableModel>,
    pub tokenizer: TextTokenizer,
    pub pad_id: u32,
    pub device: Device,
}

/// Reads `config.json`, builds the family named by `model_type`, loads weights and tokenizer.
/// `max_length` (tokens per example after truncation) defaults to the model's maximum. A
/// PyTorch pickle checkpoint (`pytorch_model.bin`) is read only with `allow_pickle`.
pub fn load_model(
    resolved: ResolvedModel,
    max_length: Option<usize>,
    allow_pickle: bool,
) -> Result<LoadedModel> {
    let device = Device::Cpu;
    let gguf = resolved.weights.extension().is_some_and(|e| e == "gguf");
    // A GGUF file carries config, weights and tokenizer in one.
    let (config, mut gguf_parts) = if gguf {
        let model = crate::gguf::read(&resolved.weights)?;
        (model.config.clone(), Some(model))
    } else {
        (read_config(&resolved.config)?, None)
    };
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ModelError::Config {
            path: resolved.config.clone(),
            message: "no `model_type` field; cannot tell which architecture this is".into(),
        })?
        .to_owned();
    let load_weights = |parts: &mut Option<crate::gguf::GgufModel>| -> Result<Weights> {
        match parts {
            Some(p) => Ok(Weights::from_tensors(
                &resolved.weights,
                std::mem::take(&mut p.tensors),
            )),
            None => Weights::load_any(&resolved.weights, &device, allow_pickle),
        }
    };
    let (model, pad_id): (Box<dyn HookableModel>, u32) = match model_type.as_str() {
        "bert" => {
            let cfg = bert::BertConfig::from_json(&resolved.config, config)?;
            let pad = cfg.pad_token_id;
            let mut weights = Weights::load_any(&resolved.weights, &device, allow_pickle)?;
            weights.detect_prefix(
                &["", "bert.", "model."],
                "embeddings.word_embeddings.weight",
            );
            (Box::new(bert::Bert::load(cfg, &weights)?), pad)
        }
        "gpt2" => {
            let cfg = crate::gpt2::Gpt2Config::from_json(&resolved.config, config)?;
            // GPT-2 has no padding token: pad with end-of-text (the mask hides it).
            let pad = cfg.eos_token_id.unwrap_or(0);
            let mut weights = Weights::load_any(&resolved.weights, &device, allow_pickle)?;
            weights.detect_prefix(&["", "transformer."], "wte.weight");
            (Box::new(crate::gpt2::Gpt2::load(cfg, &weights)?), pad)
        }
        "gpt_neox" => {
            let cfg = crate::neox::NeoxConfig::from_json(&resolved.config, config)?;
            let pad = cfg.eos_token_id.unwrap_or(0);
            let mut weights = Weights::load_any(&resolved.weights, &device, allow_pickle)?;
            weights.detect_prefix(&["", "gpt_neox."], "embed_in.weight");
            (Box::new(crate::neox::Neox::load(cfg, &weights)?), pad)
        }
        t if crate::llama::MODEL_TYPES.contains(&t) => {
            let cfg = crate::llama::LlamaConfig::from_json(&resolved.config, config)?;
            let pad = cfg.pad_id();
            let mut weights = load_weights(&mut gguf_parts)?;
            weights.detect_prefix(&["", "model."], "embed_tokens.weight");
            (Box::new(crate::llama::Llama::load(cfg, &weights)?), pad)
        }
        other => {
            return Err(ModelError::UnsupportedArchitecture {
                path: resolved.config.clone(),
                found: other.to_owned(),
                supported: SUPPORTED_FAMILIES.join(", "),
            })
        }
    };
    let max_length = max_length.unwrap_or(model.max_positions());
    if max_length > model.max_positions() {
        return Err(ModelError::Invalid(format!(
            "max length {max_length} exceeds this model's {} positions",
            model.max_positions()
        )));
    }
    let tokenizer = match gguf_parts {
        Some(parts) => {
            TextTokenizer::from_tokenizer(parts.tokenizer, &resolved.weights, max_length)?
        }
        None => TextTokenizer::load(&resolved.tokenizer, max_length)?,
    };
    if tokenizer.vocab_size() > model.vocab_size() {
        return Err(ModelError::Tokenizer {
            path: resolved.tokenizer.clone(),
            message: format!(
                "vocabulary has {} tokens but the model's embedding has {} rows; the tokenizer does not belong to this model",
                tokenizer.vocab_size(),
                model.vocab_size()
            ),
        });
    }
    Ok(LoadedModel {
        resolved,
        model,
        tokenizer,
        pad_id,
        device,
    })
}

fn read_config(path: &std::path::Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: format!("cannot read: {e}"),
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: format!("not valid JSON ({e}); the file is corrupt — delete it from the cache and fetch the model again"),
    })?;
    if !value.is_object() {
        return Err(ModelError::Config {
            path: path.to_path_buf(),
            message: "expected a JSON object".into(),
        });
    }
    Ok(value)
}
