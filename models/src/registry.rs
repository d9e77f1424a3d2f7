//! The family registry: reads `config.json` and builds the family its `model_type` names, text
//! or vision, behind the one [`HookedModel`] interface. Adding a family touches its own file
//! and one line here (and one in `vision::build` for an image family).

use crate::model::HookedModel;
use crate::tokenizer::TextTokenizer;
use crate::weights::Weights;
use crate::{bert, ModelError, ResolvedModel, Result};
use candle_core::Device;
use glassbox_data::images::Preprocessor;
use glassbox_data::Modality;
use std::path::PathBuf;

/// Every family this build can run: `config.json` `model_type` and what it reads.
pub const FAMILIES: &[(&str, Modality)] = &[
    ("bert", Modality::Text),
    ("roberta", Modality::Text),
    ("xlm-roberta", Modality::Text),
    ("camembert", Modality::Text),
    ("distilbert", Modality::Text),
    ("electra", Modality::Text),
    ("gpt2", Modality::Text),
    ("gpt_neo", Modality::Text),
    ("opt", Modality::Text),
    ("gpt_neox", Modality::Text),
    ("llama", Modality::Text),
    ("qwen2", Modality::Text),
    ("mistral", Modality::Text),
    ("qwen3", Modality::Text),
    ("gemma2", Modality::Text),
    ("gemma3_text", Modality::Text),
    ("gemma3", Modality::Text),
    ("olmo2", Modality::Text),
    ("olmo3", Modality::Text),
    ("phi3", Modality::Text),
    ("efficientnet_lite", Modality::Vision),
    ("resnet", Modality::Vision),
    ("vit", Modality::Vision),
    ("clip", Modality::Vision),
    ("clip_vision_model", Modality::Vision),
];

/// The `model_type` values of [`FAMILIES`], for error messages.
pub fn supported_families() -> String {
    FAMILIES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a family reads, by its name as the manifest records it (`None`: not a family of
/// this build).
pub fn modality_of(family: &str) -> Option<Modality> {
    FAMILIES
        .iter()
        .find(|(name, _)| *name == family)
        .map(|(_, m)| *m)
}

/// How to load a checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Tokens per example after truncation (text families); the model's maximum when `None`
    /// or smaller ([`crate::tokenizer::TextTokenizer::max_length`] says which applied).
    pub max_length: Option<usize>,
    /// Read PyTorch pickle checkpoints (`pytorch_model.bin`): pickle can encode arbitrary
    /// code, and although the reader executes none, reading one is the user's call.
    pub allow_pickle: bool,
    /// The precision weights are held in (`--weights-dtype`).
    pub weights_dtype: WeightsDtype,
    /// The precision of the extraction forward's matrix products (`--compute-dtype`).
    pub compute_dtype: ComputeDtype,
}

pub use crate::precision::{ComputeDtype, BF16_COMPUTE_FAMILIES, REDUCED_PRECISION_FAMILIES};

/// The precision a model's weights are held in; computation is f32 throughout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum WeightsDtype {
    /// As stored where the family converts per layer ([`REDUCED_PRECISION_FAMILIES`]: a bf16
    /// checkpoint takes half the memory of f32), else f32.
    #[default]
    Auto,
    /// Every weight upcast to f32 at load.
    F32,
    /// Held in bf16 (an f32 checkpoint halved); families in [`REDUCED_PRECISION_FAMILIES`].
    Bf16,
    /// Held in f16; families in [`REDUCED_PRECISION_FAMILIES`].
    F16,
}

/// Configs take the CLI's spellings (`bfloat16` as well as `bf16`).
impl TryFrom<String> for WeightsDtype {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for WeightsDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "float16" => Ok(Self::F16),
            other => Err(format!(
                "unknown weights dtype `{other}`; use auto, f32, bf16 or f16"
            )),
        }
    }
}

impl WeightsDtype {
    /// The name configs and manifests use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }
}

/// Families that hold f32 weights for their fast forward under `auto` but run on the shared
/// graph decoder, weights in reduced precision, when `--weights-dtype bf16|f16` asks (an
/// 8B Llama in 16 GB instead of 32).
pub const REDUCED_PRECISION_ON_REQUEST: &[&str] = crate::llama::MODEL_TYPES;

/// How a checkpoint's floats are held for `model_type` under `dtype`; an error for a
/// reduced-precision request on a family that computes from f32 weights.
fn keep_for(model_type: &str, dtype: WeightsDtype) -> Result<crate::weights::Keep> {
    use crate::weights::Keep;
    let reduced = REDUCED_PRECISION_FAMILIES.contains(&model_type);
    let on_request = reduced || REDUCED_PRECISION_ON_REQUEST.contains(&model_type);
    Ok(match dtype {
        WeightsDtype::Auto if reduced => Keep::Stored,
        WeightsDtype::Auto | WeightsDtype::F32 => Keep::F32,
        WeightsDtype::Bf16 | WeightsDtype::F16 if !on_request => {
            return Err(ModelError::Invalid(format!(
                "--weights-dtype {}: the {model_type} family computes from f32 weights; reduced-precision weights are supported for {}, {}",
                dtype.as_str(),
                REDUCED_PRECISION_FAMILIES.join(", "),
                REDUCED_PRECISION_ON_REQUEST.join(", ")
            )))
        }
        WeightsDtype::Bf16 => Keep::As(candle_core::DType::BF16),
        WeightsDtype::F16 => Keep::As(candle_core::DType::F16),
    })
}

/// How a GGUF checkpoint's tensors are held under `dtype`: `auto` keeps block-quantised
/// matrices as blocks (dequantised one matrix at a time as forwards use them); `f32`, `bf16`
/// and `f16` dequantise every tensor at load to that dtype.
fn gguf_holding(dtype: WeightsDtype) -> crate::gguf::Holding {
    use crate::gguf::Holding;
    match dtype {
        WeightsDtype::Auto => Holding::Blocks,
        WeightsDtype::F32 => Holding::Dense(candle_core::DType::F32),
        WeightsDtype::Bf16 => Holding::Dense(candle_core::DType::BF16),
        WeightsDtype::F16 => Holding::Dense(candle_core::DType::F16),
    }
}

/// A GGUF's tokenizer: the `tokenizer.json` beside the file if there is one (as `transformers`
/// takes a `tokenizer.json` in the GGUF's folder over the metadata), else rebuilt from the
/// metadata as `transformers` does; else why neither is available.
fn gguf_tokenizer(
    rebuilt: std::result::Result<tokenizers::Tokenizer, String>,
    gguf: &std::path::Path,
    max_length: usize,
) -> Result<TextTokenizer> {
    let beside = gguf.with_file_name("tokenizer.json");
    if beside.is_file() {
        return TextTokenizer::load(&beside, max_length);
    }
    match rebuilt {
        Ok(t) => TextTokenizer::from_tokenizer(t, gguf, max_length),
        Err(message) => Err(ModelError::Tokenizer {
            path: gguf.to_path_buf(),
            message: format!(
                "{message} — put the model's tokenizer.json beside the .gguf file to use it instead"
            ),
        }),
    }
}

/// A resolved model with what it needs to read its inputs, ready to run.
pub struct LoadedModel {
    /// Where the checkpoint came from.
    pub resolved: ResolvedModel,
    /// The family, behind the one interface.
    pub model: Box<dyn HookedModel>,
    /// The text tokenizer: always for text families; for image–text models (CLIP) when
    /// `tokenizer.json` is present.
    pub tokenizer: Option<TextTokenizer>,
    /// The padding token of text batches.
    pub pad_id: u32,
    /// `preprocessor_config.json` beside the config, if the checkpoint has one.
    pub preprocessor: Option<PathBuf>,
    /// Where tensors live.
    pub device: Device,
    /// What the loader left unread, for the user (a task head glassbox does not run).
    pub notes: Vec<String>,
}

impl LoadedModel {
    /// Whether the model reads tokens or images.
    pub fn modality(&self) -> Modality {
        self.model.modality()
    }

    /// The text tokenizer, or an error for models that read no text.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            ModelError::Invalid(format!(
                "the {} model has no text tokenizer",
                self.model.family()
            ))
        })
    }

    /// The image preprocessing: the checkpoint's `preprocessor_config.json` (read as the
    /// processor class `transformers` picks for the family where the file names none), or the
    /// family's documented default when it has none, or an error saying what to add.
    pub fn preprocessor(&self) -> Result<Preprocessor> {
        if let Some(path) = &self.preprocessor {
            return Ok(Preprocessor::from_json_file_for(
                path,
                Some(self.model.family()),
            )?);
        }
        if self.model.image_size().is_none() {
            return Err(ModelError::Invalid(format!(
                "the {} family does not read images",
                self.model.family()
            )));
        }
        self.model.default_preprocessor().ok_or_else(|| ModelError::Config {
            path: self.resolved.config.with_file_name("preprocessor_config.json"),
            message: format!(
                "missing, and the {} family has no default preprocessing; add the checkpoint's preprocessor_config.json",
                self.model.family()
            ),
        })
    }
}

/// Reads `config.json` (or a GGUF file's metadata), builds the family named by `model_type`,
/// loads weights and, for text families, the tokenizer.
pub fn load_model(resolved: ResolvedModel, options: LoadOptions) -> Result<LoadedModel> {
    load_model_with(resolved, options, |_| Ok(()))
}

/// [`load_model`] with layer groups of the checkpoint destroyed first (the sanity checks of
/// attributions; see [`crate::randomize`]). Returns the model and what was changed.
pub fn load_model_randomized(
    resolved: ResolvedModel,
    options: LoadOptions,
    which: &crate::randomize::Randomization,
    seed: u64,
) -> Result<(LoadedModel, crate::randomize::Randomized)> {
    let mut done = crate::randomize::Randomized::default();
    let model = load_model_with(resolved, options, |w| {
        done = crate::randomize::randomize(w, which, seed)?;
        Ok(())
    })?;
    Ok((model, done))
}

fn load_model_with(
    resolved: ResolvedModel,
    options: LoadOptions,
    edit: impl FnOnce(&mut Weights) -> Result<()>,
) -> Result<LoadedModel> {
    let device = Device::Cpu;
    let gguf = resolved.weights.extension().is_some_and(|e| e == "gguf");
    // A GGUF file carries config, weights and tokenizer in one.
    let (config, mut gguf_parts) = if gguf {
        let model = crate::gguf::read(&resolved.weights, gguf_holding(options.weights_dtype))?;
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
    crate::config_ranges::check(&config).map_err(|message| ModelError::Config {
        path: resolved.config.clone(),
        message,
    })?;
    let unsupported = || ModelError::UnsupportedArchitecture {
        path: resolved.config.clone(),
        found: model_type.clone(),
        supported: supported_families(),
    };
    let mut weights = match gguf_parts.as_mut() {
        Some(p) => Weights::with_quantized(
            &resolved.weights,
            std::mem::take(&mut p.tensors),
            std::mem::take(&mut p.quantized),
        ),
        None => Weights::load_any(
            &resolved.weights,
            &device,
            options.allow_pickle,
            keep_for(&model_type, options.weights_dtype)?,
        )?,
    };
    let mut notes = Vec::new();
    if let Some(adapter) = &resolved.adapter {
        let lora = crate::lora::LoraConfig::read(adapter)?;
        let merged = crate::lora::merge(
            &lora,
            &crate::lora::weights_file(adapter).unwrap_or_default(),
            options.allow_pickle,
            &mut weights,
        )?;
        notes.push(format!(
            "LoRA adapter merged into {}: {merged} weights changed",
            lora.base
        ));
    }
    edit(&mut weights)?;
    match modality_of(&model_type).ok_or_else(unsupported)? {
        Modality::Vision => {
            let mut model = crate::vision::build(&model_type, &resolved.config, config, weights)?
                .ok_or_else(unsupported)?;
            model.set_compute_dtype(options.compute_dtype)?;
            let preprocessor = resolved.config.with_file_name("preprocessor_config.json");
            // CLIP's text tower reads prompts of at most 77 tokens.
            let tokenizer = if model.eos_token_id().is_some() && resolved.tokenizer.is_file() {
                Some(TextTokenizer::load(&resolved.tokenizer, 77)?)
            } else {
                None
            };
            Ok(LoadedModel {
                tokenizer,
                preprocessor: preprocessor.is_file().then_some(preprocessor),
                resolved,
                model,
                pad_id: 0,
                device,
                notes,
            })
        }
        Modality::Text => {
            // GGUF under `auto` holds its matrices as stored (blocks, f16/bf16): the shared
            // decoder converts them one matrix at a time.
            let reduced = matches!(
                options.weights_dtype,
                WeightsDtype::Bf16 | WeightsDtype::F16
            ) || (gguf && options.weights_dtype == WeightsDtype::Auto);
            // A decoder sequence classifier's `score` head, read before the family takes the
            // weights.
            let score = crate::score_head::ScoreHead::load(&resolved.config, &config, &weights)?;
            let unread_head = crate::class_head::unread_task_head(&config, &weights);
            let per_token_head = unread_head.is_some();
            let (mut model, pad_id) = build_text(&model_type, &resolved, config, weights, reduced)?;
            if per_token_head {
                model.drop_lm_head();
            }
            if let Some(head) = score {
                if !model.attach_score_head(head) {
                    return Err(ModelError::Config {
                        path: resolved.config.clone(),
                        message: format!(
                            "the checkpoint has a `score.weight` sequence-classification head, which the {} family does not read",
                            model.family()
                        ),
                    });
                }
            }
            model.set_compute_dtype(options.compute_dtype)?;
            // A longer request is cut to what the model can position (as `transformers`
            // tokenizers cut at `model_max_length`); the tokenizer reports the length used.
            let max_positions = model.max_positions().unwrap_or(usize::MAX);
            let max_length = options
                .max_length
                .map_or(max_positions, |m| m.min(max_positions));
            let tokenizer = match gguf_parts {
                Some(parts) => gguf_tokenizer(parts.tokenizer, &resolved.weights, max_length)?,
                None => TextTokenizer::load(&resolved.tokenizer, max_length)?,
            };
            let rows = model.vocab_size().unwrap_or(usize::MAX);
            if tokenizer.vocab_size() > rows {
                return Err(ModelError::Tokenizer {
                    path: resolved.tokenizer.clone(),
                    message: format!(
                        "vocabulary has {} tokens but the model's embedding has {rows} rows; the tokenizer does not belong to this model",
                        tokenizer.vocab_size(),
                    ),
                });
            }
            notes.extend(unread_head.map(|head| {
                format!(
                    "the checkpoint is {head}: glassbox does not run that head (its outputs are per token) and reads the {} model under it — hidden states at every hook, no classes",
                    model.family()
                )
            }));
            Ok(LoadedModel {
                resolved,
                model,
                tokenizer: Some(tokenizer),
                pad_id,
                preprocessor: None,
                device,
                notes,
            })
        }
    }
}

/// Builds a text family and its padding token.
fn build_text(
    model_type: &str,
    resolved: &ResolvedModel,
    config: serde_json::Value,
    mut weights: Weights,
    reduced_precision: bool,
) -> Result<(Box<dyn HookedModel>, u32)> {
    let path = &resolved.config;
    Ok(match model_type {
        t if bert::Variant::of(t).is_some() => {
            let variant = bert::Variant::of(t).unwrap_or_default();
            let cfg = bert::BertConfig::from_json_as(path, config.clone(), variant)?;
            let pad = cfg.pad_token_id;
            weights.detect_prefix(variant.prefixes(), "embeddings.word_embeddings.weight");
            (Box::new(bert::Bert::load(cfg, &config, &weights)?), pad)
        }
        "gpt2" => {
            let cfg = crate::gpt2::Gpt2Config::from_json(path, config)?;
            // GPT-2 has no padding token: pad with end-of-text (the mask hides it).
            let pad = crate::decoder::config::token_id(&cfg.eos_token_id).unwrap_or(0);
            weights.detect_prefix(&["", "transformer."], "wte.weight");
            (Box::new(crate::gpt2::Gpt2::load(cfg, &weights)?), pad)
        }
        "gpt_neo" => {
            let cfg = crate::gpt_neo::GptNeoConfig::from_json(path, config)?;
            // GPT-Neo has no padding token: pad with end-of-text (the mask hides it).
            let pad = crate::decoder::config::token_id(&cfg.eos_token_id).unwrap_or(0);
            weights.detect_prefix(&["", "transformer."], "wte.weight");
            (Box::new(crate::gpt_neo::load(cfg, &weights)?), pad)
        }
        "opt" => {
            let cfg = crate::opt::OptConfig::from_json(path, config)?;
            let pad = cfg.pad_id();
            weights.detect_prefix(&["", "model.decoder.", "decoder."], "embed_tokens.weight");
            (Box::new(crate::opt::load(cfg, &weights)?), pad)
        }
        "gpt_neox" => {
            let cfg = crate::neox::NeoxConfig::from_json(path, config)?;
            let pad = crate::decoder::config::token_id(&cfg.eos_token_id).unwrap_or(0);
            weights.detect_prefix(&["", "gpt_neox."], "embed_in.weight");
            (Box::new(crate::neox::Neox::load(cfg, &weights)?), pad)
        }
        t if crate::llama::MODEL_TYPES.contains(&t) => {
            let cfg = crate::llama::LlamaConfig::from_json(path, config)?;
            let pad = cfg.pad_id();
            // `transformer.`: Llama's own `LlamaForQuestionAnswering`.
            weights.detect_prefix(&["", "model.", "transformer."], "embed_tokens.weight");
            // Layers with different windows (a Qwen2 config with full and sliding layers) run
            // on the shared decoder, which takes a window per layer.
            if reduced_precision || cfg.uniform_window().is_none() {
                (crate::llama::load_reduced(cfg, &weights)?, pad)
            } else {
                (Box::new(crate::llama::Llama::load(cfg, &weights)?), pad)
            }
        }
        "qwen3" => {
            let cfg = crate::qwen3::Qwen3Config::from_json(path, config)?;
            weights.detect_prefix(&["", "model."], "embed_tokens.weight");
            (
                crate::qwen3::load(cfg.clone(), &weights)?,
                cfg.base.pad_id(),
            )
        }
        "gemma2" => {
            let cfg = crate::gemma2::Gemma2Config::from_json(path, config)?;
            weights.detect_prefix(&["", "model."], "embed_tokens.weight");
            (
                crate::gemma2::load(cfg.clone(), &weights)?,
                cfg.base.pad_id(),
            )
        }
        "gemma3_text" | "gemma3" => {
            let cfg = crate::gemma3::Gemma3Config::from_json(path, config)?;
            weights.detect_prefix(
                &[
                    "",
                    "model.",
                    "model.language_model.",
                    "language_model.model.",
                ],
                "embed_tokens.weight",
            );
            (
                crate::gemma3::load(cfg.clone(), &weights)?,
                cfg.base.pad_id(),
            )
        }
        "olmo2" => {
            let cfg = crate::olmo2::Olmo2Config::from_json(path, config)?;
            weights.detect_prefix(&["", "model."], "embed_tokens.weight");
            (
                crate::olmo2::load(cfg.clone(), &weights)?,
                cfg.base.pad_id(),
            )
        }
        "olmo3" => {
            let cfg = crate::olmo3::Olmo3Config::from_json(path, config)?;
            weights.detect_prefix(&["", "model."], "embed_tokens.weight");
            (
                crate::olmo3::load(cfg.clone(), &weights)?,
                cfg.base.pad_id(),
            )
        }
        "phi3" => {
            let cfg = crate::phi3::Phi3Config::from_json(path, config)?;
            weights.detect_prefix(&["", "model."], "embed_tokens.weight");
            (crate::phi3::load(cfg.clone(), &weights)?, cfg.base.pad_id())
        }
        other => {
            return Err(ModelError::UnsupportedArchitecture {
                path: path.clone(),
                found: other.to_owned(),
                supported: supported_families(),
            })
        }
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
