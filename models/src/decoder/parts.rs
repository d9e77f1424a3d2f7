//! The weights of one decoder block, as the family files assemble them.

use crate::held::Held;
use crate::layers::{Linear, RmsNorm};
use crate::rotary::Rotary;
use crate::weights::Weights;
use crate::Result;

/// Sizes shared by every block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) vocab: usize,
    pub(crate) hidden: usize,
    pub(crate) inner: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) max_positions: usize,
}

impl Dims {
    /// Checks that query heads group evenly over key/value heads.
    pub(crate) fn check(self) -> std::result::Result<Self, String> {
        if self.heads == 0 || self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "num_attention_heads {} must be a positive multiple of num_key_value_heads {}",
                self.heads, self.kv_heads
            ));
        }
        Ok(self)
    }
}

/// A norm on queries or keys.
pub(crate) enum QkNorm {
    /// Over each head's `head_dim` values (Qwen3, Gemma-3), before rotary.
    PerHead(RmsNorm),
    /// Over the whole projection, all heads at once (OLMo-2), before the split into heads.
    Whole(RmsNorm),
}

/// Self-attention of one block.
pub(crate) struct Attention {
    pub(crate) q: Linear<Held>,
    pub(crate) k: Linear<Held>,
    pub(crate) v: Linear<Held>,
    pub(crate) o: Linear<Held>,
    pub(crate) q_norm: Option<QkNorm>,
    pub(crate) k_norm: Option<QkNorm>,
    pub(crate) rotary: Rotary,
    /// Sliding-window layers: a query sees itself and the `window − 1` tokens before it.
    pub(crate) window: Option<usize>,
}

impl Attention {
    /// Separate `q_proj`, `k_proj`, `v_proj`, `o_proj` under `prefix` (biases where present).
    pub(crate) fn separate(
        w: &Weights,
        prefix: &str,
        d: Dims,
        rotary: Rotary,
        window: Option<usize>,
    ) -> Result<Self> {
        let hd = d.head_dim;
        Ok(Attention {
            q: Linear::load_stored(w, &format!("{prefix}.q_proj"), d.hidden, d.heads * hd)?,
            k: Linear::load_stored(w, &format!("{prefix}.k_proj"), d.hidden, d.kv_heads * hd)?,
            v: Linear::load_stored(w, &format!("{prefix}.v_proj"), d.hidden, d.kv_heads * hd)?,
            o: Linear::load_stored(w, &format!("{prefix}.o_proj"), d.heads * hd, d.hidden)?,
            q_norm: None,
            k_norm: None,
            rotary,
            window,
        })
    }
}

impl Attention {
    /// [`Attention::separate`] for a layer of `layer_types`' kind: rotating by
    /// `rotary("sliding_attention" | "full_attention")` and windowed by `window` where it slides
    /// (Gemma-3, OLMo-3: each kind has its own rotary parameters).
    pub(crate) fn of_kind(
        w: &Weights,
        prefix: &str,
        d: Dims,
        (slides, window): (bool, Option<usize>),
        rotary: impl Fn(&str) -> std::result::Result<Rotary, String>,
    ) -> Result<Self> {
        let kind = if slides {
            "sliding_attention"
        } else {
            "full_attention"
        };
        let rotary = rotary(kind).map_err(crate::ModelError::Invalid)?;
        Self::separate(w, prefix, d, rotary, window.filter(|_| slides))
    }

    /// Per-head RMSNorms `q_norm`/`k_norm` under `prefix` (Qwen3; Gemma-3 with `plus_one`).
    pub(crate) fn load_head_norms(
        &mut self,
        w: &Weights,
        prefix: &str,
        head_dim: usize,
        eps: f64,
        plus_one: bool,
    ) -> Result<()> {
        let norm = |name: &str| -> Result<QkNorm> {
            let name = format!("{prefix}.{name}.weight");
            Ok(QkNorm::PerHead(rms_norm(
                w, &name, head_dim, eps, plus_one,
            )?))
        };
        self.q_norm = Some(norm("q_norm")?);
        self.k_norm = Some(norm("k_norm")?);
        Ok(())
    }
}

/// The gated MLP: `down(act(gate(x)) ⊙ up(x))`.
pub(crate) struct Mlp {
    pub(crate) gate: Linear<Held>,
    pub(crate) up: Linear<Held>,
    pub(crate) down: Linear<Held>,
}

impl Mlp {
    /// Separate `gate_proj`, `up_proj`, `down_proj` under `prefix`.
    pub(crate) fn separate(w: &Weights, prefix: &str, d: Dims) -> Result<Self> {
        Ok(Mlp {
            gate: Linear::load_stored(w, &format!("{prefix}.gate_proj"), d.hidden, d.inner)?,
            up: Linear::load_stored(w, &format!("{prefix}.up_proj"), d.hidden, d.inner)?,
            down: Linear::load_stored(w, &format!("{prefix}.down_proj"), d.inner, d.hidden)?,
        })
    }
}

/// One block: optional norms around attention and MLP (pre-norm, post-norm or both).
pub(crate) struct Layer {
    pub(crate) attn_norm: Option<RmsNorm>,
    pub(crate) attn: Attention,
    pub(crate) attn_post_norm: Option<RmsNorm>,
    pub(crate) mlp_norm: Option<RmsNorm>,
    pub(crate) mlp: Mlp,
    pub(crate) mlp_post_norm: Option<RmsNorm>,
}

impl Layer {
    /// The block's seven projections, attention's then the MLP's.
    pub(crate) fn projections(&self) -> [&Linear<Held>; 7] {
        let (a, m) = (&self.attn, &self.mlp);
        [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
    }
}

/// An RMSNorm weight named `name` of `size`; with `plus_one` (Gemma's `x̂ · (1 + w)`), one is
/// added at load so the forward is the plain `x̂ · w`.
pub(crate) fn rms_norm(
    w: &Weights,
    name: &str,
    size: usize,
    eps: f64,
    plus_one: bool,
) -> Result<RmsNorm> {
    let mut norm = RmsNorm::load(w, name, size, eps)?;
    if plus_one {
        norm.weight = (norm.weight + 1.0)?;
    }
    Ok(norm)
}

/// Rows `[first, first + count)` of a fused `[out, in]` projection (as held: a tensor or GGUF
/// blocks), as its own layer.
pub(crate) fn rows_of(fused: &Held, first: usize, count: usize) -> Result<Linear<Held>> {
    Ok(Linear {
        weight: fused.rows(first, count)?,
        bias: None,
    })
}

/// The per-layer attention kind from `layer_types` (`sliding_attention` / `full_attention`),
/// checked against the layer count, naming the config in errors.
pub(crate) fn sliding_layers(
    layer_types: &[String],
    layers: usize,
) -> std::result::Result<Vec<bool>, String> {
    if layer_types.len() != layers {
        return Err(format!(
            "layer_types lists {} layers but num_hidden_layers is {layers}",
            layer_types.len()
        ));
    }
    layer_types
        .iter()
        .map(|t| match t.as_str() {
            "sliding_attention" => Ok(true),
            "full_attention" => Ok(false),
            other => Err(format!(
                "layer_types entry `{other}` is not supported; expected sliding_attention or full_attention"
            )),
        })
        .collect()
}

/// A Llama-style pre-norm block: `input_layernorm` before attention and
/// `post_attention_layernorm` before the MLP, no norms after.
pub(crate) fn pre_norm_layer(
    w: &Weights,
    p: &str,
    d: Dims,
    eps: f64,
    attn: Attention,
    mlp: Mlp,
) -> Result<Layer> {
    let norm = |name: &str| rms_norm(w, &format!("{p}.{name}.weight"), d.hidden, eps, false);
    Ok(Layer {
        attn_norm: Some(norm("input_layernorm")?),
        attn,
        attn_post_norm: None,
        mlp_norm: Some(norm("post_attention_layernorm")?),
        mlp,
        mlp_post_norm: None,
    })
}
