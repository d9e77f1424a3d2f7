//! The Vision Transformer (Dosovitskiy et al. 2021) as Hugging Face's `ViTModel` /
//! `ViTForImageClassification`: non-overlapping patches linearly embedded, a `[CLS]` token
//! prepended, learned position embeddings added, pre-LayerNorm transformer blocks with GELU
//! MLPs, a final LayerNorm, and a linear classifier on the `[CLS]` token.
//!
//! Hooks use the transformer names of the text models, positions being the `[CLS]` token
//! (position 0) then the patches row-major (`1 + y · grid_w + x`): `hook_embed` (`[CLS]` and
//! patch embeddings, before positions), `hook_pos_embed`, per block `hook_resid_pre` (HF's
//! `hidden_states[i]`), `attn.hook_q/k/v/z`, `hook_attn_out`, `hook_resid_mid`,
//! `mlp.hook_post`, `hook_mlp_out`, `hook_resid_post`; `ln_final.hook_normalized` (HF's
//! `last_hidden_state`), `hook_pooled` (the classifier's input: the normalised `[CLS]`, one
//! position) and `logits`. Runs in candle ops, so autograd works through it.

use super::encoder::{patches, pixel_tensor, Encoder, EncoderShape, LayerNames};
use crate::batch::ImageBatch;
use crate::hooks::{at, HookPoint, Hooks};
use crate::layers::{Activation, LayerNorm, Linear};
use crate::model::{GradientSeed, HookGradients, HookedModel, Input, PixelGradients};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::Tensor;
use glassbox_data::Modality;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct VitConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub eps: f64,
    act: Activation,
    pub num_classes: usize,
    pub labels: Vec<String>,
}

impl VitConfig {
    pub fn from_json(path: &Path, v: serde_json::Value) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let num = |k: &str, d: u64| v.get(k).and_then(|x| x.as_u64()).unwrap_or(d) as usize;
        let act = Activation::parse(
            v.get("hidden_act")
                .and_then(|a| a.as_str())
                .unwrap_or("gelu"),
        )
        .map_err(bad)?;
        let num_classes = crate::class_head::config_classes(&v);
        let cfg = Self {
            hidden: num("hidden_size", 768),
            layers: num("num_hidden_layers", 12),
            heads: num("num_attention_heads", 12),
            intermediate: num("intermediate_size", 3072),
            image_size: num("image_size", 224),
            patch_size: num("patch_size", 16),
            num_channels: num("num_channels", 3),
            eps: v
                .get("layer_norm_eps")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-12),
            act,
            num_classes,
            labels: crate::class_head::id2label(path, &v, num_classes)?,
        };
        if cfg.heads == 0 || !cfg.hidden.is_multiple_of(cfg.heads) || cfg.patch_size == 0 {
            return Err(bad(format!(
                "hidden_size {} must be a multiple of num_attention_heads {} (and patch_size > 0)",
                cfg.hidden, cfg.heads
            )));
        }
        Ok(cfg)
    }
}

pub struct Vit {
    cfg: VitConfig,
    patch: Linear,
    cls: Tensor,
    positions: Tensor,
    encoder: Encoder,
    ln_final: LayerNorm,
    classifier: Option<Linear>,
}

impl Vit {
    pub fn load(mut cfg: VitConfig, w: &Weights) -> Result<Self> {
        let classes = (&mut cfg.num_classes, &mut cfg.labels);
        crate::class_head::classes_from_weight(w, "classifier.weight", classes);
        let (h, p, c) = (cfg.hidden, cfg.patch_size, cfg.num_channels);
        let grid = cfg.image_size / p;
        let e = "embeddings";
        // The patch convolution as a linear map over (channel, ky, kx)-flattened patches.
        let patch = Linear {
            weight: w
                .get(
                    &format!("{e}.patch_embeddings.projection.weight"),
                    &[h, c, p, p],
                )?
                .reshape((h, c * p * p))?,
            bias: Some(w.get(&format!("{e}.patch_embeddings.projection.bias"), &[h])?),
        };
        let cls = w.get(&format!("{e}.cls_token"), &[1, 1, h])?;
        let positions = w.get(
            &format!("{e}.position_embeddings"),
            &[1, grid * grid + 1, h],
        )?;
        let shape = EncoderShape {
            hidden: h,
            layers: cfg.layers,
            heads: cfg.heads,
            intermediate: cfg.intermediate,
            eps: cfg.eps,
            act: cfg.act,
        };
        let encoder = Encoder::load(w, &LayerNames::vit(), shape)?;
        let ln_final = LayerNorm::load(w, "layernorm", h, cfg.eps)?;
        let classifier = match (
            w.get_root("classifier.weight", &[cfg.num_classes, h])?,
            w.get_root("classifier.bias", &[cfg.num_classes])?,
        ) {
            (Some(weight), bias) if cfg.num_classes > 0 => Some(Linear { weight, bias }),
            _ => None,
        };
        Ok(Self {
            cfg,
            patch,
            cls,
            positions,
            encoder,
            ln_final,
            classifier,
        })
    }
}

impl HookedModel for Vit {
    fn family(&self) -> &'static str {
        "vit"
    }
    fn modality(&self) -> Modality {
        Modality::Vision
    }

    fn image_size(&self) -> Option<(usize, usize)> {
        Some((self.cfg.image_size, self.cfg.image_size))
    }

    fn labels(&self) -> &[String] {
        &self.cfg.labels
    }

    fn hook_points(&self) -> Vec<HookPoint> {
        let mut v = vec![HookPoint::Embed, HookPoint::PosEmbed];
        for i in 0..self.cfg.layers {
            v.extend(HookPoint::block(i));
        }
        v.extend([HookPoint::LnFinal, HookPoint::Pooled]);
        if self.classifier.is_some() {
            v.push(HookPoint::Logits);
        }
        v
    }

    /// Every token hook holds `[CLS]` then the patches, row-major.
    fn hook_grid(
        &self,
        point: HookPoint,
        _image: (usize, usize),
    ) -> Option<glassbox_data::grid::CellGrid> {
        super::patch_grid(
            point,
            &[HookPoint::Pooled, HookPoint::Logits],
            self.cfg.image_size,
            self.cfg.patch_size,
        )
    }

    fn hook_width(&self, point: HookPoint) -> usize {
        match point {
            HookPoint::MlpPost(_) => self.cfg.intermediate,
            HookPoint::Logits => self.cfg.num_classes,
            HookPoint::AttnPattern(_) => 0,
            _ => self.cfg.hidden,
        }
    }

    fn hook_gradients(
        &self,
        input: Input<'_>,
        points: &[HookPoint],
        seed: &[f32],
    ) -> Option<Result<HookGradients>> {
        Some(super::autograd_gradients(self, input, points, seed))
    }

    fn pixel_gradients(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        seed: &[f32],
    ) -> Option<Result<PixelGradients>> {
        Some(super::autograd_pixel_gradients(
            batch,
            self.cfg.num_channels,
            points,
            seed,
            |pixels, hooks| self.forward_pixels(batch, pixels, hooks),
        ))
    }

    fn pixel_gradients_from_hook(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        point: HookPoint,
        seed: &mut GradientSeed<'_>,
    ) -> Option<Result<PixelGradients>> {
        Some(super::autograd_pixel_gradients_from_hook(
            batch,
            self.cfg.num_channels,
            points,
            (point, seed),
            |pixels, hooks| self.forward_pixels(batch, pixels, hooks),
        ))
    }

    /// Returns the logits, or the pooled `[CLS]` features without a classifier.
    fn forward(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let batch = input.images(self.family())?;
        let pixels = pixel_tensor(batch, self.cfg.num_channels)?;
        self.forward_pixels(batch, &pixels, hooks)
    }
}

impl Vit {
    /// The forward over `pixels` (`[b, h, w, c]`, the batch's values or a variable for pixel
    /// gradients); `batch` supplies the sizes.
    fn forward_pixels(
        &self,
        batch: &ImageBatch,
        pixels: &Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        let (p, c, size) = (
            self.cfg.patch_size,
            self.cfg.num_channels,
            self.cfg.image_size,
        );
        if batch.height != size || batch.width != size {
            return Err(ModelError::Invalid(format!(
                "ViT takes {size}×{size} images (its position embeddings are fixed); got {}×{} — set the preprocessor's crop or size to {size}",
                batch.width, batch.height
            )));
        }
        let (b, g) = (batch.batch, size / p);
        let embedded = self.patch.forward(&patches(pixels, g, p, c)?)?;
        let cls = self.cls.broadcast_as((b, 1, self.cfg.hidden))?;
        let x = Tensor::cat(&[&cls, &embedded], 1)?;
        let x = at(hooks, HookPoint::Embed, x)?;
        let pos = at(
            hooks,
            HookPoint::PosEmbed,
            self.positions.broadcast_as(x.shape())?.contiguous()?,
        )?;
        let x = self.encoder.forward((x + pos)?, false, hooks)?;
        if hooks.satisfied() {
            return Ok(x);
        }
        let normed = at(hooks, HookPoint::LnFinal, self.ln_final.forward(&x)?)?;
        let pooled = at(
            hooks,
            HookPoint::Pooled,
            normed.narrow(1, 0, 1)?.contiguous()?,
        )?;
        let Some(classifier) = &self.classifier else {
            return Ok(pooled.squeeze(1)?);
        };
        let logits = at(hooks, HookPoint::Logits, classifier.forward(&pooled)?)?;
        Ok(logits.squeeze(1)?)
    }
}
