//! The model interface every family implements, and loading by `config.json`'s `model_type`.

use crate::hooks::{HookPoint, Hooks};
use crate::tokenizer::{Encoded, TextTokenizer};
use crate::weights::Weights;
use crate::{bert, ModelError, ResolvedModel, Result};
use candle_core::{Device, Tensor};

/// Model families this build can run, by `config.json` `model_type`.
pub const SUPPORTED_FAMILIES: &[&str] = &["bert", "gpt2", "gpt_neox", "llama", "qwen2", "mistral"];

/// A padded batch of tokenised examples.
pub struct TokenBatch {
    /// `[batch, seq]` u32.
    pub input_ids: Tensor,
    /// `[batch, seq]` u32 segment ids.
    pub type_ids: Tensor,
    /// `[batch, seq]` f32: 1 for real tokens, 0 for padding.
    pub mask: Tensor,
    /// Real (unpadded) length of each example.
    pub lengths: Vec<usize>,
}

impl TokenBatch {
    /// Right-pads encodings to the longest one with `pad_id`.
    pub fn from_encoded(encoded: &[&Encoded], pad_id: u32, device: &Device) -> Result<Self> {
        let b = encoded.len();
        let t = encoded.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if b == 0 || t == 0 {
            return Err(ModelError::Invalid("cannot run an empty batch".into()));
        }
        let mut ids = vec![pad_id; b * t];
        let mut types = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (i, e) in encoded.iter().enumerate() {
            let n = e.ids.len();
            ids[i * t..i * t + n].copy_from_slice(&e.ids);
            types[i * t..i * t + n].copy_from_slice(&e.type_ids);
            mask[i * t..i * t + n].fill(1.0);
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            type_ids: Tensor::from_vec(types, (b, t), device)?,
            mask: Tensor::from_vec(mask, (b, t), device)?,
            lengths: encoded.iter().map(|e| e.ids.len()).collect(),
        })
    }
}

/// Gradients entering blocks `first..=last` (index 0 = block `first`), packed rows
/// (`offsets[b]..offsets[b + 1]` are example `b`'s tokens).
pub struct ResidualGradients {
    pub entering: Vec<Vec<f32>>,
    pub offsets: Vec<usize>,
}

/// `seed(output, offsets)`: `∂f/∂output` for the packed output of the last block.
pub type GradientSeed<'a> = dyn FnMut(&[f32], &[usize]) -> Vec<f32> + 'a;

/// A model whose forward pass calls hooks at TransformerLens-named points.
pub trait HookableModel: Send + Sync {
    /// The family name (`bert`, …).
    fn family(&self) -> &'static str;
    /// Every hook point, in forward order.
    fn hook_points(&self) -> Vec<HookPoint>;
    /// Width of the activation at a hook point (the last dimension).
    fn hook_width(&self, point: HookPoint) -> usize;
    /// Longest sequence the model accepts.
    fn max_positions(&self) -> usize;
    /// Vocabulary size of the embedding matrix.
    fn vocab_size(&self) -> usize;
    /// Runs the batch, calling `hooks` at every point; returns the final hidden state.
    fn forward(&self, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor>;
    /// The same forward in candle ops that support autograd (slower); same hooks and values.
    fn forward_differentiable(&self, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor>;
    /// The differentiable forward from block `block` on, given the residual stream entering it
    /// (`blocks.{block}.hook_resid_pre`, whose hook is called first); for gradients at deep
    /// hooks without running the early blocks differentiably.
    fn forward_differentiable_from(
        &self,
        batch: &TokenBatch,
        block: usize,
        resid_pre: Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor>;
    /// A hand-written backward through blocks `first..=last`, where the family has one:
    /// `seed(output, offsets)` receives the packed output of block `last` and returns
    /// `∂f/∂output`; the result holds the gradient entering each block. `None`: use autograd.
    fn residual_gradients(
        &self,
        _batch: &TokenBatch,
        _first: usize,
        _last: usize,
        _seed: &mut GradientSeed<'_>,
    ) -> Option<Result<ResidualGradients>> {
        None
    }
    /// The unembedding matrix `[vocab, hidden]` (rows are tokens' output directions), for
    /// families that have one (causal LMs).
    fn unembedding(&self) -> Option<&Tensor> {
        None
    }
    /// Logits `[b, t, vocab]` from the final normalised hidden state; `None` for encoders.
    fn unembed(&self, normalized: &Tensor) -> Option<Result<Tensor>> {
        self.unembedding()
            .map(|u| crate::layers::unembed(normalized, u))
    }
}

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
