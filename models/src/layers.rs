//! Pieces shared by the model families: LayerNorm and the MLP activations, in candle ops that
//! support autograd.

use crate::held::Held;
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
            // transformers' ACT2CLS: `gelu_python` is the erf form written out; `gelu_fast`
            // and `gelu_accurate` are the tanh approximation with the constants inlined.
            "gelu" | "gelu_python" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_accurate" => {
                Ok(Activation::GeluTanh)
            }
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            "quick_gelu" => Ok(Activation::QuickGelu),
            other => Err(format!(
                "hidden_act `{other}` is not supported; use gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, gelu_accurate, gelu_python, relu, silu, swish or quick_gelu"
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

/// `y = x · Wᵀ (+ b)` with `W` stored `[out, in]`: an f32 tensor (`Linear`, what the f32 fast
/// forwards read in place) or a matrix as the checkpoint holds it (`Linear<Held>`: bf16/f16, or
/// GGUF blocks, converted per use).
pub(crate) struct Linear<W = Tensor> {
    pub(crate) weight: W,
    pub(crate) bias: Option<Tensor>,
}

/// A weight matrix a [`Linear`] can multiply by.
pub(crate) trait MatrixWeight {
    /// `(out, in)`.
    fn out_in(&self) -> Result<(usize, usize)>;
    /// The values as a tensor of `dtype` (the tensor itself when it already is one).
    fn as_dtype(&self, dtype: candle_core::DType) -> Result<Tensor>;
}

impl MatrixWeight for Tensor {
    fn out_in(&self) -> Result<(usize, usize)> {
        Ok(self.dims2()?)
    }
    fn as_dtype(&self, dtype: candle_core::DType) -> Result<Tensor> {
        Ok(if self.dtype() == dtype {
            self.clone()
        } else {
            self.to_dtype(dtype)?
        })
    }
}

impl MatrixWeight for Held {
    fn out_in(&self) -> Result<(usize, usize)> {
        self.dims2()
    }
    fn as_dtype(&self, dtype: candle_core::DType) -> Result<Tensor> {
        self.to_dtype(dtype)
    }
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
}

impl Linear<Held> {
    /// [`Linear::load`] with the weight as held (bf16/f16 for reduced-precision checkpoints,
    /// GGUF blocks for quantised ones), the bias in f32.
    pub(crate) fn load_stored(
        w: &Weights,
        name: &str,
        input: usize,
        output: usize,
    ) -> Result<Self> {
        let bias = format!("{name}.bias");
        Ok(Self {
            weight: w.get_held(&format!("{name}.weight"), &[output, input])?,
            bias: if w.has(&bias) {
                Some(w.get(&bias, &[output])?)
            } else {
                None
            },
        })
    }
}

impl<W: MatrixWeight> Linear<W> {
    /// `x · Wᵀ (+ b)`; a reduced-precision or quantised weight is converted to `x`'s dtype for
    /// this call only (exact for bf16/f16 → f32; the dequantised values of a GGUF matrix), so a
    /// model holds the checkpoint's bytes and computes in f32.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let weight = self.weight.as_dtype(x.dtype())?;
        // No weight gradient: a differentiable forward only ever needs the input's.
        let y = crate::kernels::input_grad_linear::linear_no_weight_grad(
            &x.reshape((b * t, d))?,
            &weight,
        )?;
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        Ok(y.reshape((b, t, self.weight.out_in()?.0))?)
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

pub(crate) use crate::rotary::Rotary;

/// The additive attention mask of a causal decoder over a right-padded batch: `0` where query
/// `q` may attend key `k` (k ≤ q and k a real token), the most negative f32 elsewhere, as
/// `[b, 1, t, t]`.
pub(crate) fn causal_mask(batch: &crate::batch::TokenBatch) -> Result<Tensor> {
    windowed_causal_mask(batch, None)
}

/// [`causal_mask`], and with a sliding `window` also `q − k < window` (a query sees itself and
/// the `window − 1` tokens before it, as `transformers`' sliding-window masks do).
pub(crate) fn windowed_causal_mask(
    batch: &crate::batch::TokenBatch,
    window: Option<usize>,
) -> Result<Tensor> {
    let (b, t) = batch.input_ids.dims2()?;
    let seen = |q: usize, k: usize| k <= q && window.is_none_or(|w| q - k < w);
    let causal: Vec<f32> = (0..t * t)
        .map(|i| if seen(i / t, i % t) { 0.0 } else { f32::MIN })
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

/// The hook points of a causal decoder without learned positions: `hook_embed`, every block's
/// points, `ln_final.hook_normalized`, `logits`.
pub(crate) fn decoder_hook_points(layers: usize) -> Vec<crate::hooks::HookPoint> {
    use crate::hooks::HookPoint;
    let mut v = vec![HookPoint::Embed];
    for i in 0..layers {
        v.extend(HookPoint::decoder_block(i));
    }
    v.extend([HookPoint::LnFinal, HookPoint::Logits]);
    v
}

/// Grouped-query attention's keys or values `[b, kv, t, d]` repeated for `heads` query heads:
/// key/value head j serves query heads j·r .. (j+1)·r, r = heads / kv.
pub(crate) fn repeat_kv(m: Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, kv, t, d) = m.dims4()?;
    let r = heads / kv;
    if r == 1 {
        return Ok(m);
    }
    m.unsqueeze(2)?
        .broadcast_as((b, kv, r, t, d))?
        .reshape((b, heads, t, d))
}

pub(crate) use crate::held::embed_rows as embed;

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

/// Why a decoder checkpoint gives no next-token logits when it was saved without its output head.
pub(crate) const NO_LM_HEAD: &str = "has no language-model head: its config unties the head (tie_word_embeddings: false) and the weights hold none, as `AutoModel` saves a base model such as `LlamaModel`; it gives hidden states, not next-token logits — use the causal-LM checkpoint (…ForCausalLM), or set tie_word_embeddings: true in config.json if its head is the embedding";

/// Past the last block of a decoder: `ln_final.hook_normalized`, then `logits` when a hook wants
/// them. Returns the (possibly replaced) normalised stream.
pub(crate) fn final_hooks(
    hooks: &mut dyn crate::hooks::Hooks,
    normalized: Tensor,
    unembedding: Option<&Tensor>,
) -> Result<Tensor> {
    use crate::hooks::{at, HookPoint};
    let normalized = at(hooks, HookPoint::LnFinal, normalized)?;
    if hooks.wants(HookPoint::Logits) {
        let unembedding = unembedding
            .ok_or_else(|| crate::ModelError::Invalid(format!("this checkpoint {NO_LM_HEAD}")))?;
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

#[cfg(test)]
mod tests {
    use super::Activation;

    #[test]
    fn transformers_activation_aliases_name_the_same_functions() {
        for name in ["gelu", "gelu_python"] {
            assert_eq!(Activation::parse(name), Ok(Activation::GeluErf), "{name}");
        }
        for name in [
            "gelu_new",
            "gelu_pytorch_tanh",
            "gelu_fast",
            "gelu_accurate",
        ] {
            assert_eq!(Activation::parse(name), Ok(Activation::GeluTanh), "{name}");
        }
        assert_eq!(Activation::parse("swish"), Ok(Activation::Silu));
        let e = Activation::parse("mish").unwrap_err();
        assert!(e.contains("mish") && e.contains("gelu_fast"), "{e}");
    }
}
