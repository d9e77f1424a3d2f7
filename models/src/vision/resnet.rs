//! ResNet (He et al. 2016) as Hugging Face's `ResNetModel` / `ResNetForImageClassification`:
//! a 7×7 stride-2 stem with max pooling, stages of basic (two 3×3) or bottleneck (1×1, 3×3,
//! 1×1) layers with projection shortcuts, ReLU after each residual add, global average
//! pooling and a linear classifier. Batch norms are folded into their convolutions.
//!
//! Hook points (`[batch, h·w, channels]`, pixels row-major): `hook_stem` (after the max pool;
//! HF's `hidden_states[0]`), `stages.{s}.blocks.{b}.hook_out` (after the residual add and
//! ReLU; the last block of stage `s` is `hidden_states[s + 1]`), `hook_pooled` and `logits`.
//! The backward (TCAV, input attributions) is `resnet_backward.rs`, over the tape of the forward's `run`.

use super::conv::{conv_dense, dense_weight, global_mean, max_pool, symmetric_padding, Nhwc};
use super::folded::{fold, visit, Folded};
use crate::batch::ImageBatch;
use crate::hooks::{ConvPart, HookPoint, Hooks};
use crate::kernels::{add_bias, bias_relu, matmul_wt, zeros};
use crate::model::{GradientSeed, HookGradients, HookedModel, Input, PixelGradients};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::{Device, Tensor};
use glassbox_data::grid::CellGrid;
use glassbox_data::Modality;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct ResNetConfig {
    pub num_channels: usize,
    pub embedding_size: usize,
    pub hidden_sizes: Vec<usize>,
    pub depths: Vec<usize>,
    pub bottleneck: bool,
    pub downsample_in_first_stage: bool,
    pub downsample_in_bottleneck: bool,
    pub image_size: usize,
    pub num_classes: usize,
    pub labels: Vec<String>,
}

impl ResNetConfig {
    pub fn from_json(path: &Path, v: serde_json::Value) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let list = |k: &str| -> Result<Vec<usize>> {
            v.get(k)
                .and_then(|x| x.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_u64())
                        .map(|n| n as usize)
                        .collect()
                })
                .ok_or_else(|| bad(format!("`{k}` must be a list of integers")))
        };
        let num = |k: &str, d: u64| v.get(k).and_then(|x| x.as_u64()).unwrap_or(d) as usize;
        let flag = |k: &str| v.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
        if let Some(act) = v.get("hidden_act").and_then(|a| a.as_str()) {
            if act != "relu" {
                return Err(bad(format!(
                    "hidden_act `{act}` is not supported; ResNet here uses relu"
                )));
            }
        }
        let layer_type = v
            .get("layer_type")
            .and_then(|x| x.as_str())
            .unwrap_or("bottleneck");
        let (hidden_sizes, depths) = (list("hidden_sizes")?, list("depths")?);
        if hidden_sizes.len() != depths.len() || depths.is_empty() {
            return Err(bad(
                "`hidden_sizes` and `depths` must be non-empty lists of one length".into(),
            ));
        }
        let num_classes = crate::class_head::config_classes(&v);
        Ok(Self {
            num_channels: num("num_channels", 3),
            embedding_size: num("embedding_size", 64),
            hidden_sizes,
            depths,
            bottleneck: match layer_type {
                "bottleneck" => true,
                "basic" => false,
                other => {
                    return Err(bad(format!(
                        "layer_type `{other}`: use basic or bottleneck"
                    )))
                }
            },
            downsample_in_first_stage: flag("downsample_in_first_stage"),
            downsample_in_bottleneck: flag("downsample_in_bottleneck"),
            image_size: num("image_size", 224),
            num_classes,
            labels: crate::class_head::id2label(path, &v, num_classes)?,
        })
    }
}

/// One convolution of a layer: folded weights in `[out, k, k, in]` rows.
pub(super) struct Conv {
    pub(super) f: Folded,
    pub(super) cin: usize,
    pub(super) cout: usize,
    pub(super) kernel: usize,
    pub(super) stride: usize,
}

impl Conv {
    fn load(
        w: &Weights,
        prefix: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Self> {
        let conv = w.get(
            &format!("{prefix}.convolution.weight"),
            &[cout, cin, kernel, kernel],
        )?;
        let mut f = fold(w, conv, &format!("{prefix}.normalization"), cout, 1e-5)?;
        f.weight = dense_weight(&f.weight, cout, cin, kernel);
        Ok(Self {
            f,
            cin,
            cout,
            kernel,
            stride,
        })
    }

    /// Convolution + bias, ReLU if `relu`.
    fn run(&self, x: &[f32], shape: Nhwc, relu: bool) -> (Vec<f32>, Nhwc) {
        let pad = self.kernel / 2;
        let (mut y, s) = if self.kernel == 1 && self.stride == 1 {
            let mut y = zeros(shape.batch * shape.pixels() * self.cout);
            matmul_wt(x, self.cin, &self.f.weight, self.cout, &mut y);
            (
                y,
                Nhwc {
                    channels: self.cout,
                    ..shape
                },
            )
        } else {
            let p = (
                symmetric_padding(shape.height, self.kernel, self.stride, pad),
                symmetric_padding(shape.width, self.kernel, self.stride, pad),
            );
            conv_dense(
                &crate::kernels::Recycler::default(),
                x,
                shape,
                &self.f.weight,
                self.cout,
                self.kernel,
                self.stride,
                p,
            )
        };
        if relu {
            bias_relu(&mut y, &self.f.bias);
        } else {
            add_bias(&mut y, &self.f.bias);
        }
        (y, s)
    }
}

pub(super) struct Layer {
    stage: usize,
    index: usize,
    pub(super) convs: Vec<Conv>,
    pub(super) shortcut: Option<Conv>,
}

pub struct ResNet {
    pub(super) cfg: ResNetConfig,
    pub(super) stem: Conv,
    pub(super) layers: Vec<Layer>,
    pub(super) classifier: Option<Folded>,
}

impl ResNet {
    pub fn load(mut cfg: ResNetConfig, w: &Weights) -> Result<Self> {
        let classes = (&mut cfg.num_classes, &mut cfg.labels);
        crate::class_head::classes_from_weight(w, "classifier.1.weight", classes);
        let stem = Conv::load(
            w,
            "embedder.embedder",
            cfg.num_channels,
            cfg.embedding_size,
            7,
            2,
        )?;
        let mut layers = Vec::new();
        let mut cin = cfg.embedding_size;
        for (s, (&cout, &depth)) in cfg.hidden_sizes.iter().zip(&cfg.depths).enumerate() {
            let first_stride = if s == 0 && !cfg.downsample_in_first_stage {
                1
            } else {
                2
            };
            for l in 0..depth {
                let p = format!("encoder.stages.{s}.layers.{l}");
                let (input, stride) = if l == 0 {
                    (cin, first_stride)
                } else {
                    (cout, 1)
                };
                let shortcut = if input != cout || stride != 1 {
                    Some(Conv::load(
                        w,
                        &format!("{p}.shortcut"),
                        input,
                        cout,
                        1,
                        stride,
                    )?)
                } else {
                    None
                };
                let convs = if cfg.bottleneck {
                    let mid = cout / 4;
                    let (s1, s3) = if cfg.downsample_in_bottleneck {
                        (stride, 1)
                    } else {
                        (1, stride)
                    };
                    vec![
                        Conv::load(w, &format!("{p}.layer.0"), input, mid, 1, s1)?,
                        Conv::load(w, &format!("{p}.layer.1"), mid, mid, 3, s3)?,
                        Conv::load(w, &format!("{p}.layer.2"), mid, cout, 1, 1)?,
                    ]
                } else {
                    vec![
                        Conv::load(w, &format!("{p}.layer.0"), input, cout, 3, stride)?,
                        Conv::load(w, &format!("{p}.layer.1"), cout, cout, 3, 1)?,
                    ]
                };
                layers.push(Layer {
                    stage: s,
                    index: l,
                    convs,
                    shortcut,
                });
            }
            cin = cout;
        }
        let width = *cfg.hidden_sizes.last().expect("non-empty");
        let classifier = match (
            w.get_root("classifier.1.weight", &[cfg.num_classes, width])?,
            w.get_root("classifier.1.bias", &[cfg.num_classes])?,
        ) {
            (Some(weight), Some(bias)) if cfg.num_classes > 0 => Some(Folded {
                weight: weight.flatten_all()?.to_vec1()?,
                bias: bias.to_vec1()?,
            }),
            _ => None,
        };
        Ok(Self {
            cfg,
            stem,
            layers,
            classifier,
        })
    }

    pub(super) fn point(l: &Layer) -> HookPoint {
        HookPoint::Conv {
            stage: l.stage as u16,
            block: l.index as u16,
            part: ConvPart::Out,
        }
    }

    /// The grid after the stem (its 7×7/2 convolution and the 3×3/2 max-pool) and after each
    /// layer in order. A layer's receptive field is its main path's: the shortcut (1×1) reads a
    /// subset of it.
    fn grids(&self, (height, width): (usize, usize)) -> (CellGrid, Vec<CellGrid>) {
        let stem = CellGrid::input(height, width)
            .conv(self.stem.kernel, self.stem.stride, self.stem.kernel / 2)
            .conv(3, 2, 1);
        let mut g = stem;
        let layers = self
            .layers
            .iter()
            .map(|l| {
                for c in &l.convs {
                    g = g.conv(c.kernel, c.stride, c.kernel / 2);
                }
                g
            })
            .collect();
        (stem, layers)
    }

    pub(super) fn width(&self) -> usize {
        *self.cfg.hidden_sizes.last().expect("non-empty")
    }
}

impl HookedModel for ResNet {
    fn family(&self) -> &'static str {
        "resnet"
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
        let mut v = vec![HookPoint::Stem];
        v.extend(self.layers.iter().map(Self::point));
        v.push(HookPoint::Pooled);
        if self.classifier.is_some() {
            v.push(HookPoint::Logits);
        }
        v
    }

    fn hook_grid(&self, point: HookPoint, image: (usize, usize)) -> Option<CellGrid> {
        let (stem, layers) = self.grids(image);
        match point {
            HookPoint::Stem => Some(stem),
            HookPoint::Conv { .. } => self
                .layers
                .iter()
                .position(|l| Self::point(l) == point)
                .map(|i| layers[i]),
            _ => None,
        }
    }

    fn hook_width(&self, point: HookPoint) -> usize {
        match point {
            HookPoint::Stem => self.cfg.embedding_size,
            HookPoint::Conv { stage, .. } => self
                .cfg
                .hidden_sizes
                .get(stage as usize)
                .copied()
                .unwrap_or(0),
            HookPoint::Pooled => self.width(),
            HookPoint::Logits => self.cfg.num_classes,
            _ => 0,
        }
    }

    /// Returns the logits, or the pooled features for a checkpoint without a classifier.
    fn forward(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let batch = input.images(self.family())?;
        let outputs = self.run(batch, hooks, None, None)?;
        // Empty when satisfied hooks stopped the forward.
        let width = outputs.len() / batch.batch.max(1);
        Ok(Tensor::from_vec(
            outputs,
            (batch.batch, width),
            &Device::Cpu,
        )?)
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
}

/// What the backward reads from one forward: each ReLU's output (its mask), the max pool's
/// input (its argmax), and the hooked activations.
#[derive(Default)]
pub(super) struct Tape {
    /// The stem convolution's output after its ReLU: the max pool's input.
    pub(super) stem_conv: (Vec<f32>, Nhwc),
    /// After the max pool (`hook_stem`).
    pub(super) stem: (Vec<f32>, Nhwc),
    pub(super) layers: Vec<LayerTape>,
    /// The spatial mean (`hook_pooled`), `[batch, width]`.
    pub(super) pooled: Vec<f32>,
}

/// One residual layer on the tape.
pub(super) struct LayerTape {
    /// The layer's input shape.
    pub(super) input: Nhwc,
    /// Each convolution of the main path but the last: its output after the ReLU.
    pub(super) inner: Vec<(Vec<f32>, Nhwc)>,
    /// After the residual add and ReLU (`stages.{s}.blocks.{b}.hook_out`).
    pub(super) out: (Vec<f32>, Nhwc),
}

impl ResNet {
    /// The forward over `batch`, hooks visited in order; with a `tape`, every activation the
    /// backward reads is kept on it (moved, not copied). Returns the logits, or the pooled
    /// features for a checkpoint without a classifier. With `last_layer`, the forward stops
    /// after that layer (its output on the tape) and returns nothing: a backward seeded at a
    /// hook inside the network needs nothing after it.
    pub(super) fn run(
        &self,
        batch: &ImageBatch,
        hooks: &mut dyn Hooks,
        mut tape: Option<&mut Tape>,
        last_layer: Option<usize>,
    ) -> Result<Vec<f32>> {
        let shape = Nhwc::of_batch(batch, self.cfg.num_channels)?;
        let (stem_conv, s) = self.stem.run(&batch.pixels, shape, true);
        let (mut x, mut shape) = max_pool(&stem_conv, s, 3, 2, 1);
        if let Some(t) = tape.as_deref_mut() {
            t.stem_conv = (stem_conv, s);
        }
        visit(hooks, HookPoint::Stem, &mut x, shape)?;
        // With a tape, each layer's input (the stem's output, then each layer's) goes onto it
        // once that layer has read it: moved, not copied.
        for (index, layer) in self.layers.iter().enumerate() {
            let input = shape;
            let mut inner = Vec::new();
            let (mut h, mut hs) = (Vec::new(), shape);
            for (i, conv) in layer.convs.iter().enumerate() {
                let last = i + 1 == layer.convs.len();
                let (next, next_shape) = match i {
                    0 => conv.run(&x, shape, !last),
                    _ => conv.run(&h, hs, !last),
                };
                if i > 0 && tape.is_some() {
                    inner.push((std::mem::take(&mut h), hs));
                }
                (h, hs) = (next, next_shape);
            }
            let add_relu = |h: &mut [f32], r: &[f32]| {
                h.iter_mut()
                    .zip(r)
                    .for_each(|(v, r)| *v = (*v + r).max(0.0))
            };
            match &layer.shortcut {
                Some(sc) => add_relu(&mut h, &sc.run(&x, shape, false).0),
                None => add_relu(&mut h, &x),
            }
            let read = std::mem::replace(&mut x, h);
            if let Some(t) = tape.as_deref_mut() {
                match t.layers.last_mut() {
                    Some(previous) => previous.out.0 = read,
                    None => t.stem = (read, shape),
                }
            }
            shape = hs;
            visit(hooks, Self::point(layer), &mut x, shape)?;
            if let Some(t) = tape.as_deref_mut() {
                // Its output is put in place once the next layer (or the pool) has read it.
                t.layers.push(LayerTape {
                    input,
                    inner,
                    out: (Vec::new(), shape),
                });
            }
            if last_layer == Some(index) || hooks.satisfied() {
                if let Some(l) = tape.as_deref_mut().and_then(|t| t.layers.last_mut()) {
                    l.out.0 = std::mem::take(&mut x);
                }
                return Ok(Vec::new());
            }
        }
        let mut pooled = global_mean(&x, shape);
        if let Some(t) = tape.as_deref_mut() {
            match t.layers.last_mut() {
                Some(last) => last.out.0 = std::mem::take(&mut x),
                None => t.stem = (std::mem::take(&mut x), shape),
            }
        }
        let pooled_shape = Nhwc {
            height: 1,
            width: 1,
            ..shape
        };
        visit(hooks, HookPoint::Pooled, &mut pooled, pooled_shape)?;
        if let Some(t) = tape {
            t.pooled = pooled.clone();
        }
        let Some(fc) = &self.classifier else {
            return Ok(pooled);
        };
        let classes = self.cfg.num_classes;
        let mut logits = vec![0f32; shape.batch * classes];
        matmul_wt(&pooled, self.width(), &fc.weight, classes, &mut logits);
        add_bias(&mut logits, &fc.bias);
        visit(
            hooks,
            HookPoint::Logits,
            &mut logits,
            Nhwc {
                channels: classes,
                ..pooled_shape
            },
        )?;
        Ok(logits)
    }
}
