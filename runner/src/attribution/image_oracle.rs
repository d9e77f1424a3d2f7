//! The [`Oracle`] of image models: an image's pixels, scored by a combination of the model's
//! outputs or by a probe read off one of its hooks (then the backward starts at that hook,
//! [`glassbox_models::HookedModel::pixel_gradients_from_hook`]); Grad-CAM's hook for the target.

use super::oracle::{chunked, Oracle, Target};
use crate::gradients::{first_after, head_seed, Convention, LinearHead};
use candle_core::Tensor;
use glassbox_models::{Capture, HookPoint, ImageBatch, LoadedModel, ModelError, Result};

/// One preprocessed image of a vision model and the output combination or probe it explains.
pub struct ImageOracle<'a> {
    model: &'a LoadedModel,
    pixels: Vec<f32>,
    height: usize,
    width: usize,
    target: ImageTarget,
    batch: usize,
}

/// What an image attribution explains.
enum ImageTarget {
    /// `Σ_k weights[k] · output[k]`.
    Outputs(Vec<f32>),
    /// A linear probe on a hook's pooled activation (its class logit).
    Probe(LinearHead),
}

impl<'a> ImageOracle<'a> {
    /// The image `pixels` (`height × width × 3`) scored by `target` (the model's outputs, or a
    /// probe on a hook).
    pub fn new(
        model: &'a LoadedModel,
        pixels: Vec<f32>,
        (height, width): (usize, usize),
        target: &Target,
        batch: usize,
    ) -> Result<Self> {
        let target = match target {
            Target::Outputs { weights } => ImageTarget::Outputs(weights.clone()),
            Target::Probe(head) if head.pooler.is_none() => ImageTarget::Probe(head.clone()),
            _ => {
                return Err(ModelError::Invalid(
                    "image attributions explain the model's outputs (class: or logit_diff: targets) or a probe (probe: targets)"
                        .into(),
                ))
            }
        };
        Ok(Self {
            model,
            pixels,
            height,
            width,
            target,
            batch,
        })
    }

    /// The model's raw outputs for one input (e.g. to find the predicted class).
    pub fn logits(&self, input: &[f32]) -> Result<Vec<f32>> {
        let images = self.images(&[input.to_vec()]);
        let out = self
            .model
            .model
            .forward((&images).into(), &mut Capture::new([]))?;
        Ok(out.flatten_all()?.to_vec1()?)
    }

    /// Grad-CAM's hook for this target: `requested` (`--cam-hook`) or the model's default
    /// ([`default_cam_hook`]). A probe's target depends only on hooks up to the probe's own, so
    /// there the default is the probe's hook when it is a spatial map, and a hook after it is
    /// refused (its gradient would be zero).
    pub fn cam_hook(&self, requested: Option<HookPoint>) -> Result<HookPoint> {
        let model = &self.model.model;
        let ImageTarget::Probe(head) = &self.target else {
            return requested
                .or_else(|| default_cam_hook(self.model))
                .ok_or_else(|| {
                    ModelError::Invalid("Grad-CAM needs a hook (none resolved)".into())
                });
        };
        let spatial = model
            .hook_grid(head.hook, (self.height, self.width))
            .is_some();
        let hook = match requested {
            Some(h) => h,
            None if spatial => head.hook,
            None => default_cam_hook(self.model).ok_or_else(|| {
                ModelError::Invalid("Grad-CAM needs a hook (none resolved)".into())
            })?,
        };
        match first_after(self.model, &[hook], head.hook) {
            Some(_) => Err(ModelError::Invalid(format!(
                "Grad-CAM's hook `{hook}` comes after the probe's hook `{}`, so the target does not depend on it; pass --cam-hook with a feature map at or before `{}`",
                head.hook, head.hook
            ))),
            None => Ok(hook),
        }
    }

    /// Width of the activation at `point`.
    pub fn hook_width(&self, point: HookPoint) -> usize {
        self.model.model.hook_width(point)
    }

    /// Rows and columns of the image.
    pub fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    fn images(&self, chunk: &[Vec<f32>]) -> ImageBatch {
        ImageBatch {
            pixels: chunk.iter().flatten().copied().collect(),
            batch: chunk.len(),
            height: self.height,
            width: self.width,
        }
    }

    fn score(&self, outputs: &[f32], n: usize) -> Result<Vec<f64>> {
        let ImageTarget::Outputs(weights) = &self.target else {
            unreachable!("probe targets are scored at their hook");
        };
        let k = weights.len();
        if outputs.len() != n * k {
            return Err(ModelError::Invalid(format!(
                "the model gave {} outputs for {n} images; the target weighs {k} per image",
                outputs.len()
            )));
        }
        Ok(outputs
            .chunks_exact(k)
            .map(|o| {
                o.iter()
                    .zip(weights)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum()
            })
            .collect())
    }

    /// The activation and gradient at `point` (each `[positions, width]`) and `f`, at `input`.
    pub fn hook_gradient(&self, input: &[f32], point: HookPoint) -> Result<(Vec<f32>, Vec<f32>)> {
        let images = self.images(&[input.to_vec()]);
        let (_, mut g) = self.pixel_gradients(&images, &[point])?;
        g.hooks
            .remove(&point)
            .ok_or_else(|| ModelError::UnknownHook {
                name: point.to_string(),
                hint: " (the forward never reached it)".into(),
            })
    }

    /// The attention patterns of every layer at `input` (ViT, CLIP), for attention rollout.
    pub fn patterns(&self, input: &[f32]) -> Result<Vec<Tensor>> {
        let layers: Vec<HookPoint> = self
            .model
            .model
            .hook_points()
            .iter()
            .filter_map(|p| match p {
                HookPoint::ResidPre(i) => Some(HookPoint::AttnPattern(*i)),
                _ => None,
            })
            .collect();
        if layers.is_empty() {
            return Err(ModelError::Invalid(format!(
                "attention rollout needs attention layers; the {} family has none (use grad_cam for CNNs)",
                self.model.model.family()
            )));
        }
        let images = self.images(&[input.to_vec()]);
        let mut capture = Capture::only(layers.iter().copied());
        self.model.model.forward((&images).into(), &mut capture)?;
        layers
            .iter()
            .map(|p| Ok(capture.get(*p, self.model.model.family())?.clone()))
            .collect()
    }

    /// The target's value per image and the pixels' and `points`' gradients.
    fn pixel_gradients(
        &self,
        images: &ImageBatch,
        points: &[HookPoint],
    ) -> Result<(Vec<f64>, glassbox_models::PixelGradients)> {
        let model = &self.model.model;
        let gradients = match &self.target {
            ImageTarget::Outputs(weights) => {
                let seed: Vec<f32> = (0..images.batch)
                    .flat_map(|_| weights.iter().copied())
                    .collect();
                model.pixel_gradients(images, points, &seed).map(|g| {
                    let g = g?;
                    Ok((self.score(&g.outputs, images.batch)?, g))
                })
            }
            ImageTarget::Probe(head) => {
                let mut values = Vec::new();
                let mut seed = |activation: &[f32], offsets: &[usize]| {
                    let (v, d) = head_seed(head, Convention::Logit, activation, offsets);
                    values = v;
                    d
                };
                let g = model.pixel_gradients_from_hook(images, points, head.hook, &mut seed);
                g.map(|g| {
                    let g = g?;
                    Ok((values.iter().map(|v| f64::from(*v)).collect(), g))
                })
            }
        };
        gradients.unwrap_or_else(|| {
                Err(ModelError::Invalid(format!(
                    "the {} family has no backward to its pixels; use occlusion (it needs only forwards)",
                    self.model.model.family()
                )))
            })
    }
}

impl Oracle for ImageOracle<'_> {
    fn input(&self) -> &[f32] {
        &self.pixels
    }
    fn batch(&self) -> usize {
        self.batch
    }
    fn width(&self) -> usize {
        3
    }
    fn values(&self, inputs: &[Vec<f32>]) -> Result<Vec<f64>> {
        chunked(inputs, self.batch, |chunk| {
            let images = self.images(chunk);
            let head = match &self.target {
                ImageTarget::Probe(head) => head,
                ImageTarget::Outputs(_) => {
                    let out = self
                        .model
                        .model
                        .forward((&images).into(), &mut Capture::new([]))?;
                    return self.score(&out.flatten_all()?.to_vec1::<f32>()?, chunk.len());
                }
            };
            let mut capture = Capture::only([head.hook]);
            self.model.model.forward((&images).into(), &mut capture)?;
            let h = capture.get(head.hook, self.model.model.family())?;
            let values: Vec<f32> = h.flatten_all()?.to_vec1()?;
            let width = head.weight.len() / head.bias.len().max(1);
            if h.dims().last() != Some(&width) {
                return Err(ModelError::Invalid(format!(
                    "the probe at `{}` reads {width} features; the hook gives {:?}",
                    head.hook,
                    h.dims()
                )));
            }
            let per = values.len() / (width * chunk.len()).max(1);
            let offsets: Vec<usize> = (0..=chunk.len()).map(|b| b * per).collect();
            let (v, _) = head_seed(head, Convention::Logit, &values, &offsets);
            Ok(v.into_iter().map(f64::from).collect())
        })
    }
    fn gradients(&self, inputs: &[Vec<f32>]) -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
        let pairs = chunked(inputs, self.batch, |chunk| {
            let images = self.images(chunk);
            let (f, g) = self.pixel_gradients(&images, &[])?;
            let n = self.pixels.len();
            Ok(f.into_iter()
                .zip(g.pixels.chunks_exact(n).map(<[f32]>::to_vec))
                .collect())
        })?;
        Ok(pairs.into_iter().unzip())
    }
}

/// Grad-CAM's default hook: a CNN's last feature map (EfficientNet's head, ResNet's last
/// block), or the last block's input for a ViT (the classifier reads `[CLS]` after the last
/// block, so patch tokens get no gradient at its output).
pub fn default_cam_hook(model: &LoadedModel) -> Option<HookPoint> {
    let points = model.model.hook_points();
    if points.contains(&HookPoint::Head) {
        return Some(HookPoint::Head);
    }
    if let Some(last) = points
        .iter()
        .rev()
        .find(|p| matches!(p, HookPoint::Conv { .. }))
    {
        return Some(*last);
    }
    points
        .iter()
        .filter_map(|p| match p {
            HookPoint::ResidPre(i) => Some(*i),
            _ => None,
        })
        .max()
        .map(HookPoint::ResidPre)
}
