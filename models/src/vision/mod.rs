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
mod efficientnet_forward;
pub mod encoder;
pub mod folded;
pub mod resnet;
mod resnet_backward;
pub mod vit;

use crate::hooks::{HookPoint, Hooks};
use crate::model::{HookGradients, HookedModel, Input};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::Tensor;
use serde_json::Value;
use std::path::Path;

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

/// [`HookedModel::hook_gradients`] through candle autograd, for families written in candle ops.
pub(crate) fn autograd_gradients(
    model: &dyn HookedModel,
    input: Input<'_>,
    points: &[HookPoint],
    seed: &[f32],
) -> Result<HookGradients> {
    let mut probes = GradientProbes {
        wanted: points.to_vec(),
        probes: Vec::new(),
    };
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
) -> Result<crate::model::PixelGradients> {
    let pixels = candle_core::Var::from_tensor(&encoder::pixel_tensor(batch, channels)?)?;
    let mut probes = GradientProbes {
        wanted: points.to_vec(),
        probes: Vec::new(),
    };
    let outputs = forward(pixels.as_tensor(), &mut probes)?;
    if seed.len() != outputs.elem_count() {
        return Err(ModelError::Invalid(format!(
            "gradient seed has {} values, the outputs {:?}",
            seed.len(),
            outputs.dims()
        )));
    }
    let seed_t = Tensor::from_slice(seed, outputs.shape(), outputs.device())?;
    let grads = (&outputs * &seed_t)?.sum_all()?.backward()?;
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
    Ok(crate::model::PixelGradients {
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
