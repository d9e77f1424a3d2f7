//! The pre-LayerNorm transformer encoder shared by ViT and CLIP's towers (same computation,
//! different parameter names), and the patch embedding's reshaping.

use crate::hooks::{at, HookPoint, Hooks};
use crate::kernels::Heads;
use crate::layers::{attention, Activation, LayerNorm, Linear};
use crate::packed::{Layout, Spare};
use crate::prenorm::{self, MlpIn, Norm, Proj, Qkv, Stack};
use crate::weights::Weights;
use crate::Result;
use candle_core::{DType, Device, Tensor};

/// An encoder's shape.
#[derive(Debug, Clone)]
pub struct EncoderShape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub eps: f64,
    pub(crate) act: Activation,
}

/// Where a checkpoint keeps one layer's parameters, relative to `{layers}.{i}`.
pub(super) struct LayerNames {
    pub layers: String,
    pub ln1: &'static str,
    pub q: &'static str,
    pub k: &'static str,
    pub v: &'static str,
    pub out: &'static str,
    pub ln2: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

impl LayerNames {
    /// HF ViT: `{prefix}encoder.layer.{i}.attention.attention.query`, …
    pub fn vit() -> Self {
        Self {
            layers: "encoder.layer".into(),
            ln1: "layernorm_before",
            q: "attention.attention.query",
            k: "attention.attention.key",
            v: "attention.attention.value",
            out: "attention.output.dense",
            ln2: "layernorm_after",
            up: "intermediate.dense",
            down: "output.dense",
        }
    }

    /// HF CLIP: `{tower}.encoder.layers.{i}.self_attn.q_proj`, …
    pub fn clip(tower: &str) -> Self {
        Self {
            layers: format!("{tower}.encoder.layers"),
            ln1: "layer_norm1",
            q: "self_attn.q_proj",
            k: "self_attn.k_proj",
            v: "self_attn.v_proj",
            out: "self_attn.out_proj",
            ln2: "layer_norm2",
            up: "mlp.fc1",
            down: "mlp.fc2",
        }
    }
}

struct Layer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    up: Linear,
    down: Linear,
}

pub(super) struct Encoder {
    shape: EncoderShape,
    layers: Vec<Layer>,
    /// The fast forward's buffers, kept between batches.
    spare: Spare,
}

impl Encoder {
    pub fn load(w: &Weights, names: &LayerNames, shape: EncoderShape) -> Result<Self> {
        let (h, m) = (shape.hidden, shape.intermediate);
        let layers = (0..shape.layers)
            .map(|i| {
                let p = |n: &str| format!("{}.{i}.{n}", names.layers);
                Ok(Layer {
                    ln1: LayerNorm::load(w, &p(names.ln1), h, shape.eps)?,
                    q: Linear::load(w, &p(names.q), h, h)?,
                    k: Linear::load(w, &p(names.k), h, h)?,
                    v: Linear::load(w, &p(names.v), h, h)?,
                    out: Linear::load(w, &p(names.out), h, h)?,
                    ln2: LayerNorm::load(w, &p(names.ln2), h, shape.eps)?,
                    up: Linear::load(w, &p(names.up), h, m)?,
                    down: Linear::load(w, &p(names.down), m, h)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            shape,
            layers,
            spare: Spare::default(),
        })
    }

    /// The weights as the shared fast forward reads them.
    fn stack(&self, causal: bool) -> Stack<'_> {
        let dim = self.shape.hidden / self.shape.heads;
        let scale = 1.0 / (dim as f32).sqrt();
        Stack {
            blocks: self
                .layers
                .iter()
                .map(|l| prenorm::Block {
                    norm1: Norm::Layer(&l.ln1),
                    qkv: Qkv::Separate([
                        Proj::linear(&l.q),
                        Proj::linear(&l.k),
                        Proj::linear(&l.v),
                    ]),
                    out: Proj::linear(&l.out),
                    norm2: Norm::Layer(&l.ln2),
                    mlp_in: MlpIn::Plain(Proj::linear(&l.up)),
                    down: Proj::linear(&l.down),
                    parallel: false,
                    scale,
                    window: None,
                })
                .collect(),
            heads: Heads {
                heads: self.shape.heads,
                kv_heads: self.shape.heads,
                dim,
                causal,
                scale,
                softcap: None,
                window: None,
            },
            act: self.shape.act.kernel(),
            inner: self.shape.intermediate,
            rotary: None,
        }
    }

    fn heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let hd = self.shape.hidden / self.shape.heads;
        x.reshape((b, t, self.shape.heads, hd))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Pre-LayerNorm blocks with the transformer hooks over `[b, t, hidden]` (every sequence
    /// `t` long), bidirectional or `causal`: the fast forward unless the hooks need the graph.
    pub fn forward(&self, x: Tensor, causal: bool, hooks: &mut dyn Hooks) -> Result<Tensor> {
        if !prenorm::usable(x.device(), self.layers.len(), hooks) {
            return self.graph_forward(x, causal, hooks);
        }
        let (b, t, h) = x.dims3()?;
        let layout = Layout::new(&vec![t; b], t);
        let mut packed: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let mut pool = self.spare.take_all();
        prenorm::run_stack(
            &self.stack(causal),
            &layout,
            &mut packed,
            hooks,
            &mut pool,
            0,
            &mut prenorm::Kv::Own,
        )?;
        self.spare.keep(pool);
        Ok(Tensor::from_vec(packed, (b, t, h), &Device::Cpu)?)
    }

    /// The same in candle ops (differentiable; materialises the attention pattern).
    fn graph_forward(&self, mut x: Tensor, causal: bool, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let t = x.dim(1)?;
        let mask = if causal {
            let future: Vec<f32> = (0..t * t)
                .map(|k| {
                    if k % t > k / t {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            Tensor::from_vec(future, (1, 1, t, t), x.device())?
        } else {
            Tensor::zeros((1, 1, 1, t), DType::F32, x.device())?
        };
        let scale = 1.0 / ((self.shape.hidden / self.shape.heads) as f64).sqrt();
        for (i, l) in self.layers.iter().enumerate() {
            x = at(hooks, HookPoint::ResidPre(i), x)?;
            let n = l.ln1.forward(&x)?;
            let q = at(hooks, HookPoint::AttnQ(i), l.q.forward(&n)?)?;
            let k = at(hooks, HookPoint::AttnK(i), l.k.forward(&n)?)?;
            let v = at(hooks, HookPoint::AttnV(i), l.v.forward(&n)?)?;
            let (q, k, v) = (self.heads(&q)?, self.heads(&k)?, self.heads(&v)?);
            let z = attention(&q, &k, &v, &mask, scale, hooks, i)?;
            let z = at(hooks, HookPoint::AttnZ(i), z)?;
            let a = at(hooks, HookPoint::AttnOut(i), l.out.forward(&z)?)?;
            x = at(hooks, HookPoint::ResidMid(i), (x + a)?)?;
            let n = l.ln2.forward(&x)?;
            let up = self.shape.act.apply(&l.up.forward(&n)?)?;
            let hidden = at(hooks, HookPoint::MlpPost(i), up)?;
            let m = at(hooks, HookPoint::MlpOut(i), l.down.forward(&hidden)?)?;
            x = at(hooks, HookPoint::ResidPost(i), (x + m)?)?;
            if hooks.satisfied() {
                break;
            }
        }
        Ok(x)
    }
}

/// Channels-last pixels `[b, g·p, g·p, c]` (a tensor, so that pixel gradients flow through)
/// → patches `[b, g², c·p·p]`, each flattened in the `(channel, y, x)` order of a PyTorch patch
/// convolution's weight.
pub(super) fn patches(pixels: &Tensor, g: usize, p: usize, c: usize) -> Result<Tensor> {
    let b = pixels.dim(0)?;
    let t = pixels.reshape((b, g, p, g, p, c))?;
    Ok(t.permute((0, 1, 3, 5, 2, 4))?
        .contiguous()?
        .reshape((b, g * g, c * p * p))?)
}

/// An image batch's pixels as a `[b, h, w, c]` tensor.
pub(super) fn pixel_tensor(batch: &crate::batch::ImageBatch, c: usize) -> Result<Tensor> {
    let expected = batch.batch * batch.height * batch.width * c;
    if batch.pixels.len() != expected {
        return Err(crate::ModelError::Invalid(format!(
            "image batch holds {} values, expected {}×{}×{}×{c}",
            batch.pixels.len(),
            batch.batch,
            batch.height,
            batch.width
        )));
    }
    Ok(Tensor::from_slice(
        &batch.pixels,
        (batch.batch, batch.height, batch.width, c),
        &Device::Cpu,
    )?)
}
