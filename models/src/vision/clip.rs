//! CLIP (Radford et al. 2021) as Hugging Face's `CLIPModel`: a ViT image tower and a causal
//! transformer text tower projected into one embedding space — or the image tower saved alone
//! (`model_type` `clip_vision_model`: `CLIPVisionModelWithProjection`, with its projection, or
//! `CLIPVisionModel`, whose output is the pooled `[CLS]`), which has no prompts to embed.
//!
//! The image tower is the hookable model: `hook_embed` (`[CLS]` and patch embeddings),
//! `hook_pos_embed`, per block the transformer hooks of the text models (`blocks.0.hook_resid_pre`
//! is after CLIP's pre-LayerNorm, HF's `hidden_states[0]`), `hook_pooled` (the
//! post-LayerNormed `[CLS]`, HF's `pooler_output`) and `hook_embeds` (the normalised image
//! embedding, in the space text embeddings share: where text-defined concepts live). Its output is the *unit-normalised* image
//! embedding, so a text prompt becomes a linear target: the zero-shot logit
//! `exp(logit_scale) · ê · t̂` of prompt embedding `t̂` ([`Clip::text_target`]). The text tower
//! runs without hooks; its embedding is the projected final-norm state at the end-of-text
//! token (the first `eos_token_id`, or the largest id for configs with the legacy id 2).

use super::encoder::{patches, pixel_tensor, Encoder, EncoderShape, LayerNames};
use crate::batch::ImageBatch;
use crate::hooks::{at, Capture, HookPoint, Hooks};
use crate::layers::{Activation, LayerNorm, Linear};
use crate::model::{GradientSeed, HookGradients, HookedModel, Input, PixelGradients};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::{Device, Tensor, D};
use glassbox_data::Modality;
use std::path::Path;

/// One tower's shape from its `*_config` section.
fn tower_shape(path: &Path, v: &serde_json::Value, tower: &str) -> Result<EncoderShape> {
    let bad = |message: String| ModelError::Config {
        path: path.to_path_buf(),
        message: format!("{tower}: {message}"),
    };
    let num = |k: &str, d: u64| v.get(k).and_then(|x| x.as_u64()).unwrap_or(d) as usize;
    let act = Activation::parse(
        v.get("hidden_act")
            .and_then(|a| a.as_str())
            .unwrap_or("quick_gelu"),
    )
    .map_err(bad)?;
    let c = EncoderShape {
        hidden: num("hidden_size", 512),
        layers: num("num_hidden_layers", 12),
        heads: num("num_attention_heads", 8),
        intermediate: num("intermediate_size", 2048),
        eps: v
            .get("layer_norm_eps")
            .and_then(|x| x.as_f64())
            .unwrap_or(1e-5),
        act,
    };
    let heads = ("num_attention_heads", c.heads);
    crate::config_ranges::heads_divide(("hidden_size", c.hidden), heads).map_err(bad)?;
    Ok(c)
}

#[derive(Debug, Clone)]
pub struct ClipConfig {
    pub vision: EncoderShape,
    /// `None` for an image tower saved alone (`clip_vision_model`).
    pub text: Option<TextShape>,
    pub image_size: usize,
    pub patch_size: usize,
    pub projection_dim: usize,
}

/// The text tower's shape, vocabulary, positions and end-of-text token.
#[derive(Debug, Clone)]
pub struct TextShape {
    pub encoder: EncoderShape,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub eos_token_id: u32,
}

fn num(x: &serde_json::Value, k: &str, d: u64) -> usize {
    x.get(k).and_then(|n| n.as_u64()).unwrap_or(d) as usize
}

impl ClipConfig {
    /// A `CLIPModel` config: `vision_config`, `text_config`, `projection_dim`.
    pub fn from_json(path: &Path, v: serde_json::Value) -> Result<Self> {
        let section = |k: &str| v.get(k).cloned().unwrap_or(serde_json::json!({}));
        let (vc, tc) = (section("vision_config"), section("text_config"));
        Ok(Self {
            vision: tower_shape(path, &vc, "vision_config")?,
            text: Some(TextShape {
                encoder: tower_shape(path, &tc, "text_config")?,
                vocab_size: num(&tc, "vocab_size", 49408),
                max_positions: num(&tc, "max_position_embeddings", 77),
                eos_token_id: num(&tc, "eos_token_id", 2) as u32,
            }),
            image_size: num(&vc, "image_size", 224),
            patch_size: num(&vc, "patch_size", 32),
            projection_dim: num(&v, "projection_dim", 512),
        })
    }

    /// A `clip_vision_model` config: the image tower's fields at the top level (and its
    /// `projection_dim`, read where the checkpoint has a projection).
    pub fn vision_only(path: &Path, v: serde_json::Value) -> Result<Self> {
        Ok(Self {
            vision: tower_shape(path, &v, "config")?,
            text: None,
            image_size: num(&v, "image_size", 224),
            patch_size: num(&v, "patch_size", 32),
            projection_dim: num(&v, "projection_dim", 512),
        })
    }
}

pub struct Clip {
    cfg: ClipConfig,
    patch: Linear,
    class_embedding: Tensor,
    vision_positions: Tensor,
    pre_ln: LayerNorm,
    vision: Encoder,
    post_ln: LayerNorm,
    /// `None` for an image tower saved without it (`CLIPVisionModel`).
    visual_projection: Option<Tensor>,
    /// `None` for an image tower saved alone.
    text: Option<TextTower>,
}

/// The text tower and what reads it out: embeddings, encoder, final norm, projection, scale.
struct TextTower {
    shape: TextShape,
    token_embedding: Tensor,
    positions: Tensor,
    encoder: Encoder,
    final_ln: LayerNorm,
    projection: Tensor,
    logit_scale: f32,
}

impl TextTower {
    fn load(shape: TextShape, projection_dim: usize, w: &Weights) -> Result<Self> {
        let th = shape.encoder.hidden;
        Ok(Self {
            token_embedding: w.get(
                "text_model.embeddings.token_embedding.weight",
                &[shape.vocab_size, th],
            )?,
            positions: w.get(
                "text_model.embeddings.position_embedding.weight",
                &[shape.max_positions, th],
            )?,
            encoder: Encoder::load(w, &LayerNames::clip("text_model"), shape.encoder.clone())?,
            final_ln: LayerNorm::load(w, "text_model.final_layer_norm", th, shape.encoder.eps)?,
            projection: w.get("text_projection.weight", &[projection_dim, th])?,
            logit_scale: w.get("logit_scale", &[])?.to_scalar::<f32>()?,
            shape,
        })
    }
}

impl Clip {
    pub fn load(cfg: ClipConfig, w: &Weights) -> Result<Self> {
        let (h, p) = (cfg.vision.hidden, cfg.patch_size);
        let grid = cfg.image_size / p;
        let e = "vision_model.embeddings";
        let patch = Linear {
            weight: w
                .get(&format!("{e}.patch_embedding.weight"), &[h, 3, p, p])?
                .reshape((h, 3 * p * p))?,
            bias: None,
        };
        // A full CLIP has its projection; an image tower alone may (…WithProjection).
        let visual_projection = match cfg.text {
            Some(_) => Some(w.get("visual_projection.weight", &[cfg.projection_dim, h])?),
            None if w.has("visual_projection.weight") => {
                Some(w.get("visual_projection.weight", &[cfg.projection_dim, h])?)
            }
            None => None,
        };
        let text = match &cfg.text {
            Some(shape) => Some(TextTower::load(shape.clone(), cfg.projection_dim, w)?),
            None => None,
        };
        Ok(Self {
            patch,
            class_embedding: w.get(&format!("{e}.class_embedding"), &[h])?,
            vision_positions: w.get(
                &format!("{e}.position_embedding.weight"),
                &[grid * grid + 1, h],
            )?,
            pre_ln: LayerNorm::load(w, "vision_model.pre_layrnorm", h, cfg.vision.eps)?,
            vision: Encoder::load(w, &LayerNames::clip("vision_model"), cfg.vision.clone())?,
            post_ln: LayerNorm::load(w, "vision_model.post_layernorm", h, cfg.vision.eps)?,
            visual_projection,
            text,
            cfg,
        })
    }

    /// The text tower, or why there is none.
    fn text(&self) -> Result<&TextTower> {
        self.text.as_ref().ok_or_else(|| {
            ModelError::Invalid(
                "this CLIP checkpoint is its image tower alone (clip_vision_model): it has no text tower to embed prompts; use the full CLIPModel checkpoint".into(),
            )
        })
    }

    /// Unit-normalised text embeddings `[b, projection_dim]` of token-id sequences (each must
    /// hold its end-of-text token; longer than the positions, they are truncated keeping it).
    pub fn embed_text(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        self.text()?.embed(ids)
    }

    /// The zero-shot logit of a prompt as a linear function of the image tower's output:
    /// `exp(logit_scale) · t̂`.
    pub fn text_target(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let text = self.text()?;
        let t = text.embed(&[ids.to_vec()])?;
        Ok((t * text.logit_scale.exp() as f64)?
            .flatten_all()?
            .to_vec1()?)
    }

    /// The text tower's end-of-text token; `None` without one.
    pub fn eos_token_id(&self) -> Option<u32> {
        Some(self.text.as_ref()?.shape.eos_token_id)
    }
}

impl TextTower {
    fn embed(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let shape = &self.shape;
        let mut rows = Vec::with_capacity(ids.len());
        for seq in ids {
            if seq.is_empty() {
                return Err(ModelError::Invalid("a CLIP prompt has no tokens".into()));
            }
            // Longer prompts are truncated keeping their last (end-of-text) token, as CLIP's
            // tokenizer does.
            let max = shape.max_positions;
            let truncated: Vec<u32>;
            let seq = if seq.len() > max {
                truncated = seq[..max - 1].iter().chain(seq.last()).copied().collect();
                &truncated
            } else {
                seq
            };
            let t = seq.len();
            if let Some(&bad) = seq.iter().find(|&&i| i as usize >= shape.vocab_size) {
                return Err(ModelError::Invalid(format!(
                    "token id {bad} is outside CLIP's vocabulary"
                )));
            }
            let eos = if shape.eos_token_id == 2 {
                (0..t)
                    .max_by_key(|&i| (seq[i], std::cmp::Reverse(i)))
                    .unwrap_or(0)
            } else {
                seq.iter()
                    .position(|&i| i == shape.eos_token_id)
                    .ok_or_else(|| {
                        ModelError::Invalid(format!(
                            "a CLIP prompt needs its end-of-text token {}",
                            shape.eos_token_id
                        ))
                    })?
            };
            let ids_t = Tensor::from_slice(seq, t, &Device::Cpu)?;
            let x = self.token_embedding.index_select(&ids_t, 0)?;
            let x = (x + self.positions.narrow(0, 0, t)?)?.unsqueeze(0)?;
            let x = self.encoder.forward(x, true, &mut Capture::default())?;
            let pooled = self.final_ln.forward(&x)?.narrow(1, eos, 1)?.squeeze(1)?;
            rows.push(pooled.matmul(&self.projection.t()?)?);
        }
        let e = Tensor::cat(&rows, 0)?;
        Ok(e.broadcast_div(&e.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?)
    }
}

impl HookedModel for Clip {
    fn family(&self) -> &'static str {
        "clip"
    }
    fn modality(&self) -> Modality {
        Modality::Vision
    }

    fn image_size(&self) -> Option<(usize, usize)> {
        Some((self.cfg.image_size, self.cfg.image_size))
    }

    /// CLIP has no classes: targets are text prompts.
    fn labels(&self) -> &[String] {
        &[]
    }

    fn hook_points(&self) -> Vec<HookPoint> {
        let mut v = vec![HookPoint::Embed, HookPoint::PosEmbed];
        for i in 0..self.cfg.vision.layers {
            v.extend(HookPoint::block(i));
        }
        v.push(HookPoint::Pooled);
        if self.visual_projection.is_some() {
            v.push(HookPoint::Embeds);
        }
        v
    }

    /// The image tower's token hooks hold `[CLS]` then the patches, row-major.
    fn hook_grid(
        &self,
        point: HookPoint,
        _image: (usize, usize),
    ) -> Option<glassbox_data::grid::CellGrid> {
        super::patch_grid(
            point,
            &[HookPoint::Pooled, HookPoint::Embeds],
            self.cfg.image_size,
            self.cfg.patch_size,
        )
    }

    fn hook_width(&self, point: HookPoint) -> usize {
        match point {
            HookPoint::MlpPost(_) => self.cfg.vision.intermediate,
            HookPoint::Embeds => self.cfg.projection_dim,
            HookPoint::AttnPattern(_) => 0,
            _ => self.cfg.vision.hidden,
        }
    }

    fn text_target(&self, ids: &[u32]) -> Option<Result<Vec<f32>>> {
        self.text.as_ref()?;
        Some(Clip::text_target(self, ids))
    }

    fn eos_token_id(&self) -> Option<u32> {
        Clip::eos_token_id(self)
    }

    fn embed_texts(&self, ids: &[Vec<u32>]) -> Option<Result<Vec<f32>>> {
        self.text.as_ref()?;
        Some((|| Ok(self.embed_text(ids)?.flatten_all()?.to_vec1()?))())
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
            3,
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
            3,
            points,
            (point, seed),
            |pixels, hooks| self.forward_pixels(batch, pixels, hooks),
        ))
    }

    /// The unit-normalised image embeddings `[batch, projection_dim]` (an image tower without
    /// its projection: the pooled `[CLS]`, `[batch, hidden]`).
    fn forward(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let batch = input.images(self.family())?;
        let pixels = pixel_tensor(batch, 3)?;
        self.forward_pixels(batch, &pixels, hooks)
    }
}

impl Clip {
    /// The image tower over `pixels` (`[b, h, w, 3]`, the batch's values or a variable for
    /// pixel gradients); `batch` supplies the sizes.
    fn forward_pixels(
        &self,
        batch: &ImageBatch,
        pixels: &Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        let (p, size, h) = (
            self.cfg.patch_size,
            self.cfg.image_size,
            self.cfg.vision.hidden,
        );
        if batch.height != size || batch.width != size {
            return Err(ModelError::Invalid(format!(
                "CLIP takes {size}×{size} images; got {}×{} — set the preprocessor's crop to {size}",
                batch.width, batch.height
            )));
        }
        let (b, g) = (batch.batch, size / p);
        let embedded = self.patch.forward(&patches(pixels, g, p, 3)?)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, h))?
            .broadcast_as((b, 1, h))?;
        let x = at(hooks, HookPoint::Embed, Tensor::cat(&[&cls, &embedded], 1)?)?;
        let pos = self
            .vision_positions
            .unsqueeze(0)?
            .broadcast_as(x.shape())?
            .contiguous()?;
        let pos = at(hooks, HookPoint::PosEmbed, pos)?;
        let x = self.pre_ln.forward(&(x + pos)?)?;
        let x = self.vision.forward(x, false, hooks)?;
        if hooks.satisfied() {
            return Ok(x);
        }
        let pooled = self.post_ln.forward(&x.narrow(1, 0, 1)?.contiguous()?)?;
        let pooled = at(hooks, HookPoint::Pooled, pooled)?.squeeze(1)?;
        let Some(projection) = &self.visual_projection else {
            return Ok(pooled);
        };
        let e = pooled.matmul(&projection.t()?)?;
        let e = e.broadcast_div(&e.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?;
        Ok(at(hooks, HookPoint::Embeds, e.unsqueeze(1)?)?.squeeze(1)?)
    }
}
