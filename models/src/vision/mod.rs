//! Vision models: image batches in, the same hooks and store as text models out.
//!
//! Images arrive preprocessed (`glassbox_data::images`) as one channels-last `[batch, h, w, 3]`
//! f32 buffer. Hooks see `[batch, positions, width]` like text hooks: for convolutional maps a
//! position is a pixel of the feature map, row-major (`position = y · w + x`), for pooled
//! features and logits there is one position.

pub mod clip;
pub mod conv;
pub mod efficientnet;
mod efficientnet_backward;
pub mod encoder;
pub mod folded;
pub mod resnet;
pub mod vit;

use crate::hooks::{HookPoint, Hooks};
use crate::weights::Weights;
use crate::{ModelError, ResolvedModel, Result};
use candle_core::Tensor;
use glassbox_data::images::Preprocessor;
use std::path::{Path, PathBuf};

/// Vision families this build can run, by `config.json` `model_type`.
pub const VISION_FAMILIES: &[&str] = &["efficientnet_lite", "resnet", "vit", "clip"];

/// Preprocessed images, channels-last.
pub struct ImageBatch {
    /// `batch × height × width × 3` values, row-major.
    pub pixels: Vec<f32>,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
}

/// A vision model whose forward pass calls hooks at named points.
pub trait VisionModel: Send + Sync {
    fn family(&self) -> &'static str;
    /// Every hook point, in forward order.
    fn hook_points(&self) -> Vec<HookPoint>;
    /// Channels at a hook point (the last dimension).
    fn hook_width(&self, point: HookPoint) -> usize;
    /// The input size `(height, width)` the weights were trained at.
    fn image_size(&self) -> (usize, usize);
    /// Class names, index = logit.
    fn labels(&self) -> &[String];
    /// Runs the batch through every hook; returns the logits `[batch, classes]`.
    fn forward(&self, batch: &ImageBatch, hooks: &mut dyn Hooks) -> Result<Tensor>;
    /// A hand-written backward, where the family has one: the gradient of
    /// `Σ_b Σ_k seed[b·classes + k] · logit[b, k]` with respect to the activation at each of
    /// `points`, summed over positions (TCAV's `G_i`), with the activations mean-pooled over
    /// positions. `None`: no backward for this family.
    fn hook_gradients(
        &self,
        _batch: &ImageBatch,
        _points: &[HookPoint],
        _seed: &[f32],
    ) -> Option<Result<HookGradients>> {
        None
    }
    /// For image–text models: the output-space direction whose dot product with the model's
    /// output is the zero-shot logit of the prompt `ids` (a TCAV `text:` target).
    fn text_target(&self, _ids: &[u32]) -> Option<Result<Vec<f32>>> {
        None
    }
    /// Unit-normalised text embeddings (`n × width` of [`HookPoint::Embeds`]) of prompts, for
    /// image–text models: text-defined concepts in the space the images are embedded in.
    fn embed_texts(&self, _ids: &[Vec<u32>]) -> Option<Result<Vec<f32>>> {
        None
    }
    /// The end-of-text token a prompt must end with, for image–text models.
    fn eos_token_id(&self) -> Option<u32> {
        None
    }
}

/// What [`VisionModel::hook_gradients`] returns, per hook point: `batch × width` rows.
#[derive(Debug, Default)]
pub struct HookGradients {
    /// Activations averaged over positions (what CAVs are trained on).
    pub pooled: std::collections::BTreeMap<HookPoint, Vec<f32>>,
    /// Gradients summed over positions.
    pub gradient_sums: std::collections::BTreeMap<HookPoint, Vec<f32>>,
    /// The logits `[batch, classes]`.
    pub logits: Vec<f32>,
}

/// A resolved vision model, ready to run.
pub struct LoadedVisionModel {
    pub resolved: ResolvedModel,
    pub model: Box<dyn VisionModel>,
    /// `preprocessor_config.json` beside the config, if the checkpoint has one.
    pub preprocessor: Option<PathBuf>,
    /// The text tokenizer of image–text models (CLIP), when `tokenizer.json` is present.
    pub tokenizer: Option<crate::tokenizer::TextTokenizer>,
}

/// Hooks that add a zero variable at each wanted point: the gradient with respect to that
/// variable is the gradient with respect to the activation, and the graph stays whole.
struct GradientProbes {
    wanted: Vec<HookPoint>,
    probes: Vec<(HookPoint, candle_core::Var, Tensor)>,
}

impl Hooks for GradientProbes {
    fn wants(&self, point: HookPoint) -> bool {
        self.wanted.contains(&point)
    }
    fn needs_graph(&self) -> bool {
        true
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let z = candle_core::Var::zeros(x.shape(), x.dtype(), x.device())?;
        let y = (&x + z.as_tensor())?;
        self.probes.push((point, z, x));
        Ok(y)
    }
}

/// [`VisionModel::hook_gradients`] through candle autograd, for families written in candle ops.
pub(crate) fn autograd_gradients(
    model: &dyn VisionModel,
    batch: &ImageBatch,
    points: &[HookPoint],
    seed: &[f32],
) -> Result<HookGradients> {
    let mut probes = GradientProbes {
        wanted: points.to_vec(),
        probes: Vec::new(),
    };
    let logits = model.forward(batch, &mut probes)?;
    let seed_t = Tensor::from_slice(seed, logits.shape(), logits.device())?;
    let grads = (&logits * &seed_t)?.sum_all()?.backward()?;
    let mut out = HookGradients {
        logits: logits.flatten_all()?.to_vec1()?,
        ..Default::default()
    };
    for (point, z, x) in probes.probes {
        let g = match grads.get(z.as_tensor()) {
            Some(g) => g.clone(),
            None => x.zeros_like()?,
        };
        out.gradient_sums
            .insert(point, g.sum(1)?.flatten_all()?.to_vec1()?);
        out.pooled
            .insert(point, x.mean(1)?.flatten_all()?.to_vec1()?);
    }
    if let Some(p) = points.iter().find(|p| !out.gradient_sums.contains_key(p)) {
        return Err(ModelError::UnknownHook {
            name: p.to_string(),
            hint: format!(" (the {} forward never reached it)", model.family()),
        });
    }
    Ok(out)
}

/// Whether `config.json` names a vision family.
pub fn is_vision(config: &Path) -> bool {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("model_type")?.as_str().map(str::to_owned))
        .is_some_and(|t| VISION_FAMILIES.contains(&t.as_str()))
}

/// Loads a vision model. PyTorch pickle checkpoints need `allow_pickle`: pickle can encode
/// arbitrary code, and although the reader executes none, reading one is the user's call.
pub fn load_vision_model(resolved: ResolvedModel, allow_pickle: bool) -> Result<LoadedVisionModel> {
    let text = std::fs::read_to_string(&resolved.config).map_err(|e| ModelError::Config {
        path: resolved.config.clone(),
        message: format!("cannot read: {e}"),
    })?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: resolved.config.clone(),
            message: format!("not valid JSON ({e})"),
        })?;
    let weights = Weights::load_any(&resolved.weights, &candle_core::Device::Cpu, allow_pickle)?;
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let model: Box<dyn VisionModel> = match model_type {
        "efficientnet_lite" => {
            let cfg =
                efficientnet::EfficientNetConfig::from_json(&resolved.config, config.clone())?;
            Box::new(efficientnet::EfficientNet::load(cfg, &weights)?)
        }
        "resnet" => {
            let cfg = resnet::ResNetConfig::from_json(&resolved.config, config.clone())?;
            let mut weights = weights;
            weights.detect_prefix(&["", "resnet."], "embedder.embedder.convolution.weight");
            Box::new(resnet::ResNet::load(cfg, &weights)?)
        }
        "vit" => {
            let cfg = vit::VitConfig::from_json(&resolved.config, config.clone())?;
            let mut weights = weights;
            weights.detect_prefix(&["", "vit."], "embeddings.cls_token");
            Box::new(vit::Vit::load(cfg, &weights)?)
        }
        "clip" => {
            let cfg = clip::ClipConfig::from_json(&resolved.config, config.clone())?;
            Box::new(clip::Clip::load(cfg, &weights)?)
        }
        other => {
            return Err(ModelError::UnsupportedArchitecture {
                path: resolved.config.clone(),
                found: other.to_owned(),
                supported: VISION_FAMILIES.join(", "),
            })
        }
    };
    let preprocessor = resolved.config.with_file_name("preprocessor_config.json");
    let tokenizer = if model.eos_token_id().is_some() && resolved.tokenizer.is_file() {
        Some(crate::tokenizer::TextTokenizer::load(
            &resolved.tokenizer,
            77,
        )?)
    } else {
        None
    };
    Ok(LoadedVisionModel {
        tokenizer,
        preprocessor: preprocessor.is_file().then_some(preprocessor),
        resolved,
        model,
    })
}

/// The preprocessing for a model: its `preprocessor_config.json`, or the family's documented
/// default when the checkpoint has none, or an error saying what to add.
pub fn preprocessor_for(model: &LoadedVisionModel) -> Result<Preprocessor> {
    if let Some(path) = &model.preprocessor {
        return Ok(Preprocessor::from_json_file(path)?);
    }
    let (h, w) = model.model.image_size();
    match model.model.family() {
        // The EfficientNet-Lite checkpoints' convention: (x - 127) / 128 on 0-255 pixels,
        // short side to 256/224 of the crop, centre crop.
        "efficientnet_lite" => Ok(Preprocessor {
            shortest_edge: Some((h.max(w) as u32 * 8).div_ceil(7)),
            resize_to: None,
            crop: Some((h as u32, w as u32)),
            rescale_factor: 1.0 / 255.0,
            mean: [127.0 / 255.0; 3],
            std: [128.0 / 255.0; 3],
            filter: glassbox_data::images::FilterType::Triangle, // bilinear
        }),
        family => Err(ModelError::Config {
            path: model.resolved.config.with_file_name("preprocessor_config.json"),
            message: format!(
                "missing, and the {family} family has no default preprocessing; add the checkpoint's preprocessor_config.json"
            ),
        }),
    }
}

/// Class names from `id2label` (`{"0": "tench", …}`), or `class_{i}` when absent.
pub(crate) fn id2label(path: &Path, v: &serde_json::Value, n: usize) -> Result<Vec<String>> {
    let mut labels: Vec<String> = (0..n).map(|i| format!("class_{i}")).collect();
    if let Some(map) = v.get("id2label").and_then(|m| m.as_object()) {
        for (k, name) in map {
            let i: usize = k.parse().map_err(|_| ModelError::Config {
                path: path.to_path_buf(),
                message: format!("id2label key `{k}` is not a class index"),
            })?;
            let slot = labels.get_mut(i).ok_or_else(|| ModelError::Config {
                path: path.to_path_buf(),
                message: format!("id2label has class {i} but the model has {n} classes"),
            })?;
            *slot = name.as_str().unwrap_or_default().to_owned();
        }
    }
    Ok(labels)
}
