//! Vision models: image batches in, the same hooks and store as text models out.
//!
//! Images arrive preprocessed (`glassbox_data::images`) as one channels-last `[batch, h, w, 3]`
//! f32 buffer. Hooks see `[batch, positions, width]` like text hooks: for convolutional maps a
//! position is a pixel of the feature map, row-major (`position = y · w + x`), for pooled
//! features and logits there is one position.

mod backward_parts;
pub mod clip;
pub mod conv;
pub mod depthwise;
pub mod efficientnet;
mod efficientnet_backward;
mod efficientnet_chunked;
mod efficientnet_forward;
pub mod encoder;
pub mod folded;
pub mod resnet;
mod resnet_backward;
pub mod vit;

pub use backward_parts::position_sums;

use crate::hooks::{HookPoint, Hooks};
use crate::model::{GradientSeed, HookGradients, HookedModel, Input, PixelGradients};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::Tensor;
use serde_json::Value;
use std::path::Path;

/// Hooks that add a zero variable at each wanted point: the gradient with respect to that
/// variable is the gradient with respect to the activation, and the graph stays whole.
/// Also keeps, still in the graph, the activation at `seeded` (a target read off a hook).
struct GradientProbes {
    wanted: Vec<HookPoint>,
    probes: Vec<(HookPoint, candle_core::Var, Tensor)>,
    seeded: Option<HookPoint>,
    kept: Option<Tensor>,
}

impl GradientProbes {
    fn new(wanted: &[HookPoint], seeded: Option<HookPoint>) -> Self {
        Self {
            wanted: wanted.to_vec(),
            probes: Vec::new(),
            seeded,
            kept: None,
        }
    }
}

impl Hooks for GradientProbes {
    fn wants(&self, point: HookPoint) -> bool {
        self.wanted.contains(&point) || self.seeded == Some(point)
    }
    fn needs_graph(&self) -> bool {
        true
    }
    fn visit(&mut self, point: HookPoint, x: Tensor) -> candle_core::Result<Tensor> {
        let y = if self.wanted.contains(&point) {
            let z = candle_core::Var::zeros(x.shape(), x.dtype(), x.device())?;
            let y = (&x + z.as_tensor())?;
            self.probes.push((point, z, x));
            y
        } else {
            x
        };
        if self.seeded == Some(point) {
            self.kept = Some(y.clone());
        }
        Ok(y)
    }
}

/// [`HookedModel::hook_gradients`] through candle autograd, for families written in candle ops.
pub(crate) fn autograd_gradients(
    model: &dyn HookedModel,
    input: Input<'_>,
    points: &[HookPoint],
    seed: &[f32],
) -> Result<HookGradients> {
    let mut probes = GradientProbes::new(points, None);
    let logits = model.forward(input, &mut probes)?;
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

/// [`HookedModel::pixel_gradients`] through candle autograd: the pixels enter `forward` as a
/// variable, so one backward of `Σ seed ⊙ output` gives their gradient and every wanted hook's.
pub(crate) fn autograd_pixel_gradients(
    batch: &crate::batch::ImageBatch,
    channels: usize,
    points: &[HookPoint],
    seed: &[f32],
    forward: impl FnOnce(&Tensor, &mut dyn Hooks) -> Result<Tensor>,
) -> Result<PixelGradients> {
    autograd_pixels(batch, channels, points, Objective::Outputs(seed), forward)
}

/// [`HookedModel::pixel_gradients_from_hook`] through candle autograd: the activation at the
/// seeded hook is read off the graph, and one backward of `Σ seed(activation) ⊙ activation`
/// gives the pixels' and the wanted hooks' gradients.
pub(crate) fn autograd_pixel_gradients_from_hook(
    batch: &crate::batch::ImageBatch,
    channels: usize,
    points: &[HookPoint],
    (point, seed): (HookPoint, &mut GradientSeed<'_>),
    forward: impl FnOnce(&Tensor, &mut dyn Hooks) -> Result<Tensor>,
) -> Result<PixelGradients> {
    autograd_pixels(
        batch,
        channels,
        points,
        Objective::Hook(point, seed),
        forward,
    )
}

/// What an autograd backward differentiates.
enum Objective<'a, 's> {
    /// `Σ seed ⊙ output`.
    Outputs(&'a [f32]),
    /// `Σ seed(activation) ⊙ activation` at a hook.
    Hook(HookPoint, &'a mut GradientSeed<'s>),
}

fn autograd_pixels(
    batch: &crate::batch::ImageBatch,
    channels: usize,
    points: &[HookPoint],
    objective: Objective<'_, '_>,
    forward: impl FnOnce(&Tensor, &mut dyn Hooks) -> Result<Tensor>,
) -> Result<PixelGradients> {
    let pixels = candle_core::Var::from_tensor(&encoder::pixel_tensor(batch, channels)?)?;
    let seeded = match &objective {
        Objective::Hook(p, _) => Some(*p),
        Objective::Outputs(_) => None,
    };
    let mut probes = GradientProbes::new(points, seeded);
    let outputs = forward(pixels.as_tensor(), &mut probes)?;
    let f = match objective {
        Objective::Outputs(seed) => {
            if seed.len() != outputs.elem_count() {
                return Err(ModelError::Invalid(format!(
                    "gradient seed has {} values, the outputs {:?}",
                    seed.len(),
                    outputs.dims()
                )));
            }
            (&outputs * Tensor::from_slice(seed, outputs.shape(), outputs.device())?)?
        }
        Objective::Hook(point, seed) => {
            let h = probes.kept.take().ok_or_else(|| ModelError::UnknownHook {
                name: point.to_string(),
                hint: " (the forward never reached it)".into(),
            })?;
            let values: Vec<f32> = h.flatten_all()?.to_vec1()?;
            let width = h.dims().last().copied().unwrap_or(1);
            let d = backward_parts::hook_seed(&values, batch.batch, width, seed)?;
            (&h * Tensor::from_vec(d, h.shape(), h.device())?)?
        }
    };
    let grads = f.sum_all()?.backward()?;
    let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1()?) };
    let pixel_grad = match grads.get(pixels.as_tensor()) {
        Some(g) => flat(g)?,
        None => vec![0.0; batch.pixels.len()],
    };
    let mut hooks = std::collections::BTreeMap::new();
    for (point, z, x) in probes.probes {
        let g = match grads.get(z.as_tensor()) {
            Some(g) => flat(g)?,
            None => vec![0.0; x.elem_count()],
        };
        hooks.insert(point, (flat(&x)?, g));
    }
    if let Some(p) = points.iter().find(|p| !hooks.contains_key(p)) {
        return Err(ModelError::UnknownHook {
            name: p.to_string(),
            hint: " (the forward never reached it)".into(),
        });
    }
    Ok(PixelGradients {
        outputs: flat(&outputs)?,
        pixels: pixel_grad,
        hooks,
    })
}

/// Builds the vision family `model_type` names (the registry's vision half); `None` when it
/// names none.
pub(crate) fn build(
    model_type: &str,
    config_path: &Path,
    config: Value,
    weights: Weights,
) -> Result<Option<Box<dyn HookedModel>>> {
    let mut weights = weights;
    Ok(Some(match model_type {
        "efficientnet_lite" => {
            let cfg = efficientnet::EfficientNetConfig::from_json(config_path, config)?;
            Box::new(efficientnet::EfficientNet::load(cfg, &weights)?)
        }
        "resnet" => {
            let cfg = resnet::ResNetConfig::from_json(config_path, config)?;
            weights.detect_prefix(&["", "resnet."], "embedder.embedder.convolution.weight");
            Box::new(resnet::ResNet::load(cfg, &weights)?)
        }
        "vit" => {
            let cfg = vit::VitConfig::from_json(config_path, config)?;
            weights.detect_prefix(&["", "vit."], "embeddings.cls_token");
            Box::new(vit::Vit::load(cfg, &weights)?)
        }
        "clip" => {
            let cfg = clip::ClipConfig::from_json(config_path, config)?;
            Box::new(clip::Clip::load(cfg, &weights)?)
        }
        "clip_vision_model" => {
            let cfg = clip::ClipConfig::vision_only(config_path, config)?;
            // `CLIPVisionModel` saves its tower without the `vision_model.` prefix that
            // `CLIPModel` and `CLIPVisionModelWithProjection` give it.
            if weights.has("embeddings.class_embedding") {
                weights = weights.renamed(|name| format!("vision_model.{name}"));
            }
            Box::new(clip::Clip::load(cfg, &weights)?)
        }
        _ => return Ok(None),
    }))
}

/// The grid of a ViT-style tower's hooks: `[CLS]` then the patches, row-major, at every hook but
/// the `single` ones (pooled features, embeddings, logits: one position).
pub(crate) fn patch_grid(
    point: HookPoint,
    single: &[HookPoint],
    image_size: usize,
    patch_size: usize,
) -> Option<glassbox_data::grid::CellGrid> {
    (!single.contains(&point))
        .then(|| glassbox_data::grid::CellGrid::patches(image_size, image_size, patch_size))
}
