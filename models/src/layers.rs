//! Pieces shared by the model families: LayerNorm and the MLP activations, in candle ops that
//! support autograd.

use crate::weights::Weights;
use crate::Result;
use candle_core::Tensor;

/// The activation function named by a config (`hidden_act`, `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
    Silu,
    /// `x · σ(1.702 x)` (CLIP).
    QuickGelu,
}

impl Activation {
    pub(crate) fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            "quick_gelu" => Ok(Activation::QuickGelu),
            other => Err(format!(
                "hidden_act `{other}` is not supported; use gelu, gelu_new, gelu_pytorch_tanh, relu, silu or quick_gelu"
            )),
        }
    }
    /// The same function for the fused CPU kernels.
    pub(crate) fn kernel(self) -> crate::kernels::Act {
        use crate::kernels::Act;
        match self {
            Activation::GeluErf => Act::GeluErf,
            Activation::GeluTanh => Act::GeluTanh,
            Activation::Relu => Act::Relu,
            Activation::Silu => Act::Silu,
            Activation::QuickGelu => Act::QuickGelu,
        }
    }
    pub(crate) fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
            Activation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
        }
    }
}

/// `y = x · Wᵀ (+ b)` with `W` stored `[out, in]`.
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn load(w: &Weights, name: &str, input: usize, output: usize) -> Result<Self> {
        let bias = format!("{name}.bias");
        Ok(Self {
            weight: w.get(&format!("{name}.weight"), &[output, input])?,
            bias: if w.has(&bias) {
                Some(w.get(&bias, &[output])?)
            } else {
                None
            },
        })
    }
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let y = x.reshape((b * t, d))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        y.reshape((b, t, self.weight.dim(0)?))
    }
}

/// LayerNorm with f64 statistics, from primitive ops so autograd flows through.
pub(crate) struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) eps: f32,
}

impl LayerNorm {
    pub(crate) fn load(w: &Weights, prefix: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.get_any(
                &[&format!("{prefix}.weight"), &format!("{prefix}.gamma")],
                &[size],
            )?,
            bias: w.get_any(
                &[&format!("{prefix}.bias"), &format!("{prefix}.beta")],
                &[size],
            )?,
            eps: eps as f32,
        })
    }
    /// Statistics in f64 (like the fast kernel), from primitive ops so autograd flows through.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        use candle_core::{DType, D};
        let x64 = x.to_dtype(DType::F64)?;
        let centred = x64.broadcast_sub(&x64.mean_keepdim(D::Minus1)?)?;
        let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(variance + self.eps as f64)?.sqrt()?)?
            .to_dtype(x.dtype())?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// RMSNorm (`x / √(mean(x²) + ε) · w`), statistics in f64, from primitive ops.
pub(crate) struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
}

impl RmsNorm {
    pub(crate) fn load(w: &Weights, name: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.get(name, &[size])?,
            eps,
        })
    }
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        use candle_core::{DType, D};
        let x64 = x.to_dtype(DType::F64)?;
        let rms = (x64.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        x64.broadcast_div(&rms)?
            .to_dtype(x.dtype())?
            .broadcast_mul(&self.weight)
    }
}

/// Rotary position embeddings in the `rotate_half` convention of `transformers` (pairs
/// `(i, i + d/2)`), for the first `dim` dimensions of each head.
pub(crate) struct Rotary {
    /// One inverse frequency per pair, after any scaling.
    pub(crate) inv_freq: Vec<f64>,
}

impl Rotary {
    /// Frequencies from a `rope_parameters`-style object (`rope_theta`, `rope_type` default,
    /// linear or llama3 with their fields, `partial_rotary_factor`) for heads of `head_dim`.
    pub(crate) fn from_params(
        params: &serde_json::Value,
        head_dim: usize,
    ) -> std::result::Result<Self, String> {
        use serde_json::Value;
        let num = |k: &str| params.get(k).and_then(Value::as_f64);
        let theta = num("rope_theta").unwrap_or(10_000.0);
        let partial = num("partial_rotary_factor").unwrap_or(1.0);
        let dim = (head_dim as f64 * partial) as usize;
        let mut inv: Vec<f64> = (0..dim / 2)
            .map(|i| {
                // transformers computes the exponent in f32.
                let e = ((2 * i) as f32 / dim as f32) as f64;
                1.0 / theta.powf(e)
            })
            .collect();
        let kind = params
            .get("rope_type")
            .or_else(|| params.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        match kind {
            "default" => {}
            "linear" => {
                let factor = num("factor").ok_or("rope `linear` scaling needs `factor`")?;
                inv.iter_mut().for_each(|f| *f /= factor);
            }
            "llama3" => {
                let need = |k: &str| num(k).ok_or(format!("rope `llama3` scaling needs `{k}`"));
                let (factor, low, high, old) = (
                    need("factor")?,
                    need("low_freq_factor")?,
                    need("high_freq_factor")?,
                    need("original_max_position_embeddings")?,
                );
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                for f in inv.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (old / wavelen - low) / (high - low);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
            other => {
                return Err(format!(
                    "rope type `{other}` is not supported; supported: default, linear, llama3"
                ))
            }
        }
        Ok(Rotary { inv_freq: inv })
    }

    /// `x` is `[b, heads, t, head_dim]`; positions are `0..t`.
    /// Cosine and sine of each position's angle per pair, `[seq, half]` each (position-major),
    /// the angles in f32 as `transformers` computes them; the fast forward's tables too.
    pub(crate) fn tables(&self, seq: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let (mut cos, mut sin) = (
            Vec::with_capacity(seq * half),
            Vec::with_capacity(seq * half),
        );
        for p in 0..seq {
            for f in &self.inv_freq {
                let angle = (p as f32) * (*f as f32);
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        (cos, sin)
    }

    pub(crate) fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        use candle_core::D;
        let (_, _, t, head_dim) = x.dims4()?;
        let half = self.inv_freq.len();
        let dim = 2 * half;
        // `rotate_half` pairs i with i + half, so both halves of a head take the same angles.
        let (cos, sin) = self.tables(t);
        let cos = Tensor::from_vec(cos, (1, 1, t, half), x.device())?;
        let sin = Tensor::from_vec(sin, (1, 1, t, half), x.device())?;
        let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?;
        let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?;
        let rot = x.narrow(D::Minus1, 0, dim)?;
        let x1 = rot.narrow(D::Minus1, 0, half)?;
        let x2 = rot.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        let out = (rot.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?;
        if dim == head_dim {
            Ok(out)
        } else {
            Tensor::cat(
                &[&out, &x.narrow(D::Minus1, dim, head_dim - dim)?],
                D::Minus1,
            )
        }
    }
}

/// The additive attention mask of a causal decoder over a right-padded batch: `0` where query
/// `q` may attend key `k` (k ≤ q and k a real token), the most negative f32 elsewhere, as
/// `[b, 1, t, t]`.
pub(crate) fn causal_mask(batch: &crate::batch::TokenBatch) -> Result<Tensor> {
    let (b, t) = batch.input_ids.dims2()?;
    let causal: Vec<f32> = (0..t * t)
        .map(|i| if i % t <= i / t { 0.0 } else { f32::MIN })
        .collect();
    let causal = Tensor::from_vec(causal, (1, 1, t, t), batch.input_ids.device())?;
    let min = f32::MIN as f64;
    let padding = batch.mask.affine(-min, min)?.reshape((b, 1, 1, t))?;
    // MIN + MIN overflows to −∞; clamping keeps the most negative finite value.
    Ok(causal.broadcast_add(&padding)?.clamp(f32::MIN, 0.0)?)
}

/// Offers attention probabilities `[b, heads, t, t]` at `blocks.{i}.attn.hook_pattern` (as
/// `[b, t, heads · t]`) and continues with whatever the hook returns.
pub(crate) fn pattern_hook(
    hooks: &mut dyn crate::hooks::Hooks,
    i: usize,
    probs: Tensor,
) -> candle_core::Result<Tensor> {
    let point = crate::hooks::HookPoint::AttnPattern(i);
    if !hooks.wants(point) {
        return Ok(probs);
    }
    let (b, h, t, k) = probs.dims4()?;
    let flat = probs
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, t, h * k))?;
    let back = hooks.visit(point, flat)?;
    back.reshape((b, t, h, k))?.transpose(1, 2)?.contiguous()
}

/// Scaled dot-product attention over heads `[b, heads, t, d_head]` with an additive mask,
/// offering the probabilities at `blocks.{i}.attn.hook_pattern`; returns `z` as
/// `[b, t, heads · d_head]` (heads flattened, before the output projection).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
    hooks: &mut dyn crate::hooks::Hooks,
    i: usize,
) -> candle_core::Result<Tensor> {
    let (b, heads, t, hd) = q.dims4()?;
    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
    let probs = candle_nn::ops::softmax(&scores, candle_core::D::Minus1)?;
    let probs = pattern_hook(hooks, i, probs)?;
    probs
        .matmul(v)?
        .transpose(1, 2)?
        .reshape((b, t, heads * hd))
}

/// Rows of `table` (`[vocab, hidden]`) for the batch's token ids, as `[b, t, hidden]`.
pub(crate) fn embed(
    table: &Tensor,
    batch: &crate::batch::TokenBatch,
) -> candle_core::Result<Tensor> {
    let (b, t) = batch.input_ids.dims2()?;
    table
        .index_select(&batch.input_ids.flatten_all()?, 0)?
        .reshape((b, t, table.dim(1)?))
}

/// Logits `[b, t, vocab]`: `normalized` (`[b, t, hidden]`) times the unembedding
/// (`[vocab, hidden]`) transposed.
pub(crate) fn unembed(normalized: &Tensor, unembedding: &Tensor) -> Result<Tensor> {
    let (b, t, d) = normalized.dims3()?;
    let vocab = unembedding.dim(0)?;
    // Outside autograd, the kernels' multiply reads the `[vocab, hidden]` weight in place:
    // candle's matmul of the transposed view measured 0.8 GFLOP/s on one row (a logit lens
    // read per layer), the weight being repacked on every call.
    if normalized.device().is_cpu() && !normalized.track_op() {
        // Not f32 or not contiguous: candle's multiply below.
        if let Ok(weight) = crate::borrowed::Borrowed::of(unembedding) {
            let x: Vec<f32> = normalized
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()?;
            let mut out = vec![0f32; b * t * vocab];
            crate::kernels::matmul_wt(&x, d, weight.slice()?, vocab, &mut out);
            return Ok(Tensor::from_vec(out, (b, t, vocab), normalized.device())?);
        }
    }
    Ok(normalized
        .reshape((b * t, d))?
        .matmul(&unembedding.t()?)?
        .reshape((b, t, unembedding.dim(0)?))?)
}

/// Past the last block of a decoder: `ln_final.hook_normalized`, then `logits` when a hook wants
/// them. Returns the (possibly replaced) normalised stream.
pub(crate) fn final_hooks(
    hooks: &mut dyn crate::hooks::Hooks,
    normalized: Tensor,
    unembedding: &Tensor,
) -> Result<Tensor> {
    use crate::hooks::{at, HookPoint};
    let normalized = at(hooks, HookPoint::LnFinal, normalized)?;
    if hooks.wants(HookPoint::Logits) {
        at(hooks, HookPoint::Logits, unembed(&normalized, unembedding)?)?;
    }
    Ok(normalized)
}

/// Refuses batches longer than the model's `limit` positions (`what` names the config field).
pub(crate) fn check_positions(
    batch: &crate::batch::TokenBatch,
    limit: usize,
    what: &str,
) -> Result<()> {
    let (_, t) = batch.input_ids.dims2()?;
    if t > limit {
        return Err(crate::ModelError::Invalid(format!(
            "sequence of {t} tokens exceeds {what} {limit}"
        )));
    }
    Ok(())
}
