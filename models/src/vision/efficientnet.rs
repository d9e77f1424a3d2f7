//! EfficientNet-Lite (Tan & Le 2019; the Lite variants for mobile accelerators): MBConv blocks
//! without squeeze-and-excitation, ReLU6 activations, a stem and head that do not scale, and
//! TensorFlow "SAME" padding. Weights use the `efficientnet_pytorch` names (`_conv_stem`,
//! `_blocks.{i}._depthwise_conv`, `_bn{0,1,2}`, `_conv_head`, `_fc`); batch norms are folded
//! into the preceding convolution at load time.
//!
//! Hook points (activations are `[batch, h·w, channels]`, pixels row-major):
//! `hook_stem`; per block `stages.{s}.blocks.{b}.hook_expand` (after the 1×1 expansion and
//! ReLU6; absent when the expansion ratio is 1), `.hook_depthwise` (after the depthwise
//! convolution and ReLU6) and `.hook_out` (after the projection and skip connection);
//! `hook_head` (the 1×1 head convolution and ReLU6), `hook_pooled` (global average, one
//! position) and `logits` (one position).

use super::conv::dense_weight;
use super::depthwise::depthwise_weight;
use super::folded::{fold, Folded};
use crate::batch::ImageBatch;
use crate::hooks::{ConvPart, HookPoint, Hooks};
use crate::kernels::Recycler;
use crate::model::{GradientSeed, HookGradients, HookedModel, Input, PixelGradients};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::{Device, Tensor};
use glassbox_data::grid::CellGrid;
use glassbox_data::Modality;
use std::path::Path;

/// One stage of the base (B0) network: repeats, kernel, first stride, expansion, channels.
struct StageArgs {
    repeats: usize,
    kernel: usize,
    stride: usize,
    expand: usize,
    input: usize,
    output: usize,
}

const BASE: [StageArgs; 7] = [
    StageArgs {
        repeats: 1,
        kernel: 3,
        stride: 1,
        expand: 1,
        input: 32,
        output: 16,
    },
    StageArgs {
        repeats: 2,
        kernel: 3,
        stride: 2,
        expand: 6,
        input: 16,
        output: 24,
    },
    StageArgs {
        repeats: 2,
        kernel: 5,
        stride: 2,
        expand: 6,
        input: 24,
        output: 40,
    },
    StageArgs {
        repeats: 3,
        kernel: 3,
        stride: 2,
        expand: 6,
        input: 40,
        output: 80,
    },
    StageArgs {
        repeats: 3,
        kernel: 5,
        stride: 1,
        expand: 6,
        input: 80,
        output: 112,
    },
    StageArgs {
        repeats: 4,
        kernel: 5,
        stride: 2,
        expand: 6,
        input: 112,
        output: 192,
    },
    StageArgs {
        repeats: 1,
        kernel: 3,
        stride: 1,
        expand: 6,
        input: 192,
        output: 320,
    },
];
pub(super) const STEM: usize = 32;
pub(super) const HEAD: usize = 1280;

#[derive(Debug, Clone)]
pub struct EfficientNetConfig {
    pub width_coefficient: f64,
    pub depth_coefficient: f64,
    pub image_size: usize,
    pub num_classes: usize,
    pub batch_norm_eps: f64,
    pub labels: Vec<String>,
}

impl EfficientNetConfig {
    pub fn from_json(path: &Path, v: serde_json::Value) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let num = |k: &str, default: f64| -> Result<f64> {
            match v.get(k) {
                None => Ok(default),
                Some(x) => x
                    .as_f64()
                    .ok_or_else(|| bad(format!("`{k}` must be a number"))),
            }
        };
        let num_classes = num("num_classes", 1000.0)? as usize;
        let labels = crate::class_head::id2label(path, &v, num_classes)?;
        Ok(Self {
            width_coefficient: num("width_coefficient", 1.0)?,
            depth_coefficient: num("depth_coefficient", 1.0)?,
            image_size: num("image_size", 224.0)? as usize,
            num_classes,
            batch_norm_eps: num("batch_norm_eps", 1e-3)?,
            labels,
        })
    }

    /// Channels scaled by the width coefficient, rounded to a multiple of 8 (never down by
    /// more than 10%), as the reference implementation does.
    fn filters(&self, c: usize) -> usize {
        let scaled = c as f64 * self.width_coefficient;
        let mut r = ((scaled + 4.0) as usize / 8 * 8).max(8);
        if (r as f64) < 0.9 * scaled {
            r += 8;
        }
        r
    }

    /// Lite variants keep the first and last stages at one block.
    fn repeats(&self, stage: usize) -> usize {
        if stage == 0 || stage == BASE.len() - 1 {
            BASE[stage].repeats
        } else {
            (self.depth_coefficient * BASE[stage].repeats as f64).ceil() as usize
        }
    }
}

pub(super) struct Block {
    pub(super) stage: usize,
    pub(super) index_in_stage: usize,
    pub(super) input: usize,
    pub(super) expanded: usize,
    pub(super) output: usize,
    pub(super) kernel: usize,
    pub(super) stride: usize,
    pub(super) expand: Option<Folded>,
    pub(super) depthwise: Folded,
    pub(super) project: Folded,
}

impl Block {
    pub(super) fn skip(&self) -> bool {
        self.stride == 1 && self.input == self.output
    }
}

pub struct EfficientNet {
    pub(super) cfg: EfficientNetConfig,
    pub(super) stem: Folded,
    pub(super) blocks: Vec<Block>,
    pub(super) head: Folded,
    pub(super) fc: Folded,
    pub(super) head_in: usize,
    /// Activation and gradient buffers between batches (`efficientnet_forward.rs`).
    pub(super) spare: Recycler,
}

impl EfficientNet {
    pub fn load(cfg: EfficientNetConfig, w: &Weights) -> Result<Self> {
        let eps = cfg.batch_norm_eps;
        let stem_c = STEM;
        let stem_w = w.get("_conv_stem.weight", &[stem_c, 3, 3, 3])?;
        let mut stem = fold(w, stem_w, "_bn0", stem_c, eps)?;
        stem.weight = dense_weight(&stem.weight, stem_c, 3, 3);
        let mut blocks = Vec::new();
        for (s, args) in BASE.iter().enumerate() {
            let (input, output) = (
                if s == 0 {
                    stem_c
                } else {
                    cfg.filters(args.input)
                },
                cfg.filters(args.output),
            );
            for b in 0..cfg.repeats(s) {
                let i = blocks.len();
                let p = format!("_blocks.{i}");
                let input = if b == 0 { input } else { output };
                let expanded = input * args.expand;
                let expand = if args.expand != 1 {
                    let conv = w.get(
                        &format!("{p}._expand_conv.weight"),
                        &[expanded, input, 1, 1],
                    )?;
                    Some(fold(w, conv, &format!("{p}._bn0"), expanded, eps)?)
                } else {
                    None
                };
                let k = args.kernel;
                let dw = w.get(&format!("{p}._depthwise_conv.weight"), &[expanded, 1, k, k])?;
                let mut depthwise = fold(w, dw, &format!("{p}._bn1"), expanded, eps)?;
                depthwise.weight = depthwise_weight(&depthwise.weight, expanded, k);
                let proj = w.get(
                    &format!("{p}._project_conv.weight"),
                    &[output, expanded, 1, 1],
                )?;
                let project = fold(w, proj, &format!("{p}._bn2"), output, eps)?;
                blocks.push(Block {
                    stage: s,
                    index_in_stage: b,
                    input,
                    expanded,
                    output,
                    kernel: k,
                    stride: if b == 0 { args.stride } else { 1 },
                    expand,
                    depthwise,
                    project,
                });
            }
        }
        let head_in = blocks.last().map(|b| b.output).unwrap_or(stem_c);
        let head_w = w.get("_conv_head.weight", &[HEAD, head_in, 1, 1])?;
        let head = fold(w, head_w, "_bn1", HEAD, eps)?;
        let fc = Folded {
            weight: w
                .get("_fc.weight", &[cfg.num_classes, HEAD])?
                .flatten_all()?
                .to_vec1()?,
            bias: w.get("_fc.bias", &[cfg.num_classes])?.to_vec1()?,
        };
        Ok(Self {
            cfg,
            stem,
            blocks,
            head,
            fc,
            head_in,
            spare: Recycler::default(),
        })
    }

    /// The grid of each hook point: the stem's 3×3/2, then per block the depthwise convolution
    /// (the only one with a kernel: expansion, projection and head are 1×1), all TF "SAME".
    fn grids(&self, (height, width): (usize, usize)) -> Vec<(HookPoint, CellGrid)> {
        let mut g = CellGrid::input(height, width).conv_same(3, 2);
        let mut v = vec![(HookPoint::Stem, g)];
        for b in &self.blocks {
            if b.expand.is_some() {
                v.push((Self::block_point(b, ConvPart::Expand), g));
            }
            g = g.conv_same(b.kernel, b.stride);
            v.push((Self::block_point(b, ConvPart::Depthwise), g));
            v.push((Self::block_point(b, ConvPart::Out), g));
        }
        v.push((HookPoint::Head, g));
        v
    }

    pub(super) fn block_point(b: &Block, part: ConvPart) -> HookPoint {
        HookPoint::Conv {
            stage: b.stage as u16,
            block: b.index_in_stage as u16,
            part,
        }
    }
}

impl HookedModel for EfficientNet {
    fn family(&self) -> &'static str {
        "efficientnet_lite"
    }
    fn modality(&self) -> Modality {
        Modality::Vision
    }

    fn image_size(&self) -> Option<(usize, usize)> {
        Some((self.cfg.image_size, self.cfg.image_size))
    }

    /// The EfficientNet-Lite checkpoints' convention: (x - 127) / 128 on 0-255 pixels, short
    /// side to 256/224 of the crop, centre crop.
    fn default_preprocessor(&self) -> Option<glassbox_data::images::Preprocessor> {
        let (h, w) = self.image_size()?;
        Some(glassbox_data::images::Preprocessor {
            shortest_edge: Some((h.max(w) as u32 * 8).div_ceil(7)),
            resize_to: None,
            crop: Some((h as u32, w as u32)),
            second_crop: None,
            rescale_factor: 1.0 / 255.0,
            mean: [127.0 / 255.0; 3],
            std: [128.0 / 255.0; 3],
            filter: glassbox_data::images::FilterType::Triangle, // bilinear
        })
    }
    fn labels(&self) -> &[String] {
        &self.cfg.labels
    }

    fn hook_points(&self) -> Vec<HookPoint> {
        let mut v = vec![HookPoint::Stem];
        for b in &self.blocks {
            if b.expand.is_some() {
                v.push(Self::block_point(b, ConvPart::Expand));
            }
            v.push(Self::block_point(b, ConvPart::Depthwise));
            v.push(Self::block_point(b, ConvPart::Out));
        }
        v.extend([HookPoint::Head, HookPoint::Pooled, HookPoint::Logits]);
        v
    }

    fn hook_grid(&self, point: HookPoint, image: (usize, usize)) -> Option<CellGrid> {
        self.grids(image)
            .into_iter()
            .find_map(|(p, g)| (p == point).then_some(g))
    }

    fn hook_width(&self, point: HookPoint) -> usize {
        match point {
            HookPoint::Stem => STEM,
            HookPoint::Conv { stage, block, part } => {
                let b = self
                    .blocks
                    .iter()
                    .find(|b| b.stage == stage as usize && b.index_in_stage == block as usize);
                match (b, part) {
                    (Some(b), ConvPart::Expand | ConvPart::Depthwise) => b.expanded,
                    (Some(b), ConvPart::Out) => b.output,
                    (None, _) => 0,
                }
            }
            HookPoint::Head | HookPoint::Pooled => HEAD,
            HookPoint::Logits => self.cfg.num_classes,
            _ => 0,
        }
    }

    fn hook_gradients(
        &self,
        input: Input<'_>,
        points: &[HookPoint],
        seed: &[f32],
    ) -> Option<Result<HookGradients>> {
        Some(
            input
                .images(self.family())
                .and_then(|batch| self.gradients(batch, points, seed)),
        )
    }

    fn pixel_gradients(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        seed: &[f32],
    ) -> Option<Result<PixelGradients>> {
        Some(self.pixel_backward(batch, points, seed, None))
    }

    fn pixel_gradients_from_hook(
        &self,
        batch: &ImageBatch,
        points: &[HookPoint],
        point: HookPoint,
        seed: &mut GradientSeed<'_>,
    ) -> Option<Result<PixelGradients>> {
        Some(self.pixel_backward_from_hook(batch, points, point, seed))
    }

    fn forward(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let batch = input.images(self.family())?;
        let logits = self.run(batch, hooks, None, None)?;
        // No logits when satisfied hooks stopped the forward.
        let classes = logits.len() / batch.batch.max(1);
        Ok(Tensor::from_vec(
            logits,
            (batch.batch, classes),
            &Device::Cpu,
        )?)
    }
}
