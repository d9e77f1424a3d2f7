//! Llama-family decoders (Llama, SmolLM2, Qwen2, Mistral): RMSNorm, rotary positions (with
//! linear or llama3 frequency scaling), grouped-query attention, SwiGLU MLP, tied or separate
//! unembedding — hookable with TransformerLens names.
//!
//! Per block, with `x = blocks.{i}.hook_resid_pre`:
//! `hook_q/k/v` = the projections of `RMS1(x)` (before rotary; key/value heads flattened, so
//! `hook_k`/`hook_v` are `n_kv_heads · d_head` wide), `hook_z` = attention output per query
//! head, `hook_attn_out = hook_z · W_O`, `hook_resid_mid = x + hook_attn_out`,
//! `mlp.hook_post = silu(RMS2(mid) W_gate) ⊙ (RMS2(mid) W_up)`, `hook_mlp_out = hook_post · W_down`,
//! `hook_resid_post = mid + hook_mlp_out`; `ln_final.hook_normalized = RMS_f(x)`.
//! `hidden_states[i]` of `transformers` is `blocks.{i}.hook_resid_pre` (i < n_layers) and its
//! last entry `ln_final.hook_normalized`.
//!
//! `forward` runs the shared fast path (`prenorm`, packed tokens); the candle-ops graph forward
//! here is the differentiable one and serves attention-pattern hooks.

use crate::batch::TokenBatch;
use crate::hooks::{at, HookPoint, Hooks};
use crate::kernels::Heads;
use crate::layers::{Activation, Linear, RmsNorm, Rotary};
use crate::model::{HookedModel, Input};
use crate::packed::Spare;
use crate::prenorm::{self, MlpIn, Norm, Proj, Qkv, Stack};
use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::Tensor;
use glassbox_data::Modality;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// Families served by this implementation, by `model_type`.
pub const MODEL_TYPES: &[&str] = &["llama", "qwen2", "mistral"];

fn default_act() -> String {
    "silu".into()
}
fn default_eps() -> f64 {
    1e-6
}

/// The fields of a Llama-family `config.json` this implementation uses.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub eos_token_id: Option<Value>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// transformers ≥ 5: `{rope_type, rope_theta, …}`.
    #[serde(default)]
    pub rope_parameters: Option<Value>,
    /// transformers 4: `rope_theta` and `rope_scaling`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<Value>,
    /// Mistral, Qwen2: each token attends to itself and at most `sliding_window − 1` tokens
    /// before it (the graph forward's mask, the fast forward's attention window), on the
    /// layers [`LlamaConfig::windows`] names. Llama itself has no window.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2: the window is used only if this is true.
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    /// Qwen2: which layers slide (transformers 5 writes it out) ...
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// ... else the layers from this one on (Qwen2Config's default: 28).
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    /// A GGUF's `rope_freqs` tensor (what llama.cpp's converter writes for Llama-3.1's `llama3`
    /// scaling instead of its parameters): each pair's frequency is divided by its factor.
    #[serde(default)]
    pub rope_freq_factors: Option<Vec<f64>>,
}

impl LlamaConfig {
    pub fn from_json(path: &Path, value: Value) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let cfg: LlamaConfig = serde_json::from_value(value)
            .map_err(|e| bad(format!("not a Llama-family config: {e}")))?;
        let kv = cfg.kv_heads();
        if cfg.num_attention_heads == 0 || kv == 0 || !cfg.num_attention_heads.is_multiple_of(kv) {
            return Err(bad(format!(
                "num_attention_heads {} must be a positive multiple of num_key_value_heads {kv}",
                cfg.num_attention_heads
            )));
        }
        Activation::parse(&cfg.hidden_act).map_err(&bad)?;
        cfg.rotary().map_err(&bad)?;
        cfg.windows().map_err(bad)?;
        Ok(cfg)
    }

    /// Each layer's attention window, as `transformers` 5 decides it: Mistral slides on every
    /// layer when `sliding_window` is set; Qwen2 only with `use_sliding_window`, on the layers
    /// `layer_types` calls sliding (else those from `max_window_layers` on); Llama never.
    pub fn windows(&self) -> std::result::Result<Vec<Option<usize>>, String> {
        let layers = self.num_hidden_layers;
        let window = self.sliding_window;
        let sliding = match (self.model_type.as_str(), window) {
            (_, None) | ("llama", _) => vec![false; layers],
            ("qwen2", Some(_)) if self.use_sliding_window != Some(true) => vec![false; layers],
            ("qwen2", Some(_)) => match &self.layer_types {
                Some(types) => crate::decoder::parts::sliding_layers(types, layers)?,
                None => {
                    let from = self.max_window_layers.unwrap_or(28);
                    (0..layers).map(|i| i >= from).collect()
                }
            },
            _ => vec![true; layers],
        };
        // A window of 0 would leave a token nothing to attend to, not even itself.
        if window == Some(0) && sliding.iter().any(|s| *s) {
            return Err("sliding_window = 0 on sliding layers: a token could attend to nothing, not even itself; set a positive window, or null for none".into());
        }
        Ok(sliding.into_iter().map(|s| window.filter(|_| s)).collect())
    }

    /// The one window every layer shares, or `None` when the layers differ (a Qwen2 config
    /// with full and sliding layers), which [`crate::registry`] runs on the shared decoder.
    pub fn uniform_window(&self) -> Option<Option<usize>> {
        let windows = self.windows().ok()?;
        let first = *windows.first()?;
        windows.iter().all(|w| *w == first).then_some(first)
    }

    fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The padding id: `pad_token_id`, else the (first) end-of-sequence id, else 0.
    pub fn pad_id(&self) -> u32 {
        self.pad_token_id
            .or(crate::decoder::config::token_id(&self.eos_token_id))
            .unwrap_or(0)
    }

    /// Rotary embeddings after the configured scaling (transformers 5 `rope_parameters`, or
    /// transformers 4 `rope_theta` + `rope_scaling`).
    fn rotary(&self) -> std::result::Result<Rotary, String> {
        let params = match &self.rope_parameters {
            Some(p) => p.clone(),
            None => {
                let mut p = self
                    .rope_scaling
                    .clone()
                    .unwrap_or(Value::Object(Default::default()));
                if let Value::Object(m) = &mut p {
                    m.insert(
                        "rope_theta".into(),
                        Value::from(self.rope_theta.unwrap_or(10_000.0)),
                    );
                }
                p
            }
        };
        let mut rotary =
            Rotary::from_params(&params, self.head_dim(), self.max_position_embeddings)?;
        if let Some(factors) = &self.rope_freq_factors {
            rotary.divide_frequencies(factors)?;
        }
        Ok(rotary)
    }
}

struct Block {
    input_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A hookable Llama-family decoder.
pub struct Llama {
    cfg: LlamaConfig,
    act: Activation,
    rotary: Rotary,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    /// `[vocab, hidden]`: `lm_head.weight`, or the embedding when tied; `None` for an untied
    /// checkpoint saved without its head (a base model).
    unembed: Option<Tensor>,
    /// The fast forward's buffers, kept between batches.
    spare: Spare,
    /// A sequence classifier's `score` head (`…ForSequenceClassification`).
    score: Option<crate::score_head::ScoreHead>,
}

fn proj(l: &Linear) -> Proj<'_> {
    Proj::linear(l)
}

impl Llama {
    pub fn load(cfg: LlamaConfig, w: &Weights) -> Result<Self> {
        let (d, inner, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.rms_norm_eps);
        let (heads, kv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("layers.{i}");
            blocks.push(Block {
                input_norm: RmsNorm::load(w, &format!("{p}.input_layernorm.weight"), d, eps)?,
                q: Linear::load(w, &format!("{p}.self_attn.q_proj"), d, heads * hd)?,
                k: Linear::load(w, &format!("{p}.self_attn.k_proj"), d, kv * hd)?,
                v: Linear::load(w, &format!("{p}.self_attn.v_proj"), d, kv * hd)?,
                o: Linear::load(w, &format!("{p}.self_attn.o_proj"), heads * hd, d)?,
                post_norm: RmsNorm::load(
                    w,
                    &format!("{p}.post_attention_layernorm.weight"),
                    d,
                    eps,
                )?,
                gate: Linear::load(w, &format!("{p}.mlp.gate_proj"), d, inner)?,
                up: Linear::load(w, &format!("{p}.mlp.up_proj"), d, inner)?,
                down: Linear::load(w, &format!("{p}.mlp.down_proj"), inner, d)?,
            });
        }
        let embed = w.get("embed_tokens.weight", &[cfg.vocab_size, d])?;
        // An untied checkpoint saved without its head (a base model such as `LlamaModel`, as
        // `AutoModel` saves it) has no unembedding: hidden states only, no next-token logits.
        let unembed = if cfg.tie_word_embeddings {
            Some(embed.clone())
        } else {
            w.get_root("lm_head.weight", &[cfg.vocab_size, d])?
        };
        Ok(Self {
            act: Activation::parse(&cfg.hidden_act).map_err(ModelError::Invalid)?,
            rotary: cfg.rotary().map_err(ModelError::Invalid)?,
            norm: RmsNorm::load(w, "norm.weight", d, eps)?,
            embed,
            unembed,
            blocks,
            cfg,
            spare: Spare::default(),
            score: None,
        })
    }

    /// The weights as the shared fast decoder forward reads them.
    fn fast(&self) -> prenorm::Decoder<'_> {
        let hd = self.cfg.head_dim();
        prenorm::Decoder {
            embed: &self.embed,
            positions: None,
            stack: Stack {
                blocks: self
                    .blocks
                    .iter()
                    .map(|b| prenorm::Block {
                        norm1: Norm::Rms(&b.input_norm),
                        qkv: Qkv::Separate([proj(&b.q), proj(&b.k), proj(&b.v)]),
                        out: proj(&b.o),
                        norm2: Norm::Rms(&b.post_norm),
                        mlp_in: MlpIn::Gated {
                            gate: proj(&b.gate),
                            up: proj(&b.up),
                        },
                        down: proj(&b.down),
                        parallel: false,
                        scale: 1.0 / (hd as f32).sqrt(),
                        window: None,
                    })
                    .collect(),
                heads: Heads {
                    heads: self.cfg.num_attention_heads,
                    kv_heads: self.cfg.kv_heads(),
                    dim: hd,
                    causal: true,
                    scale: 1.0 / (hd as f32).sqrt(),
                    softcap: None,
                    window: self.window(),
                },
                act: self.act.kernel(),
                inner: self.cfg.intermediate_size,
                rotary: Some(&self.rotary),
            },
            final_norm: Norm::Rms(&self.norm),
            unembed: self.unembed.as_ref(),
        }
    }

    fn graph_forward(&self, batch: &TokenBatch, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let x = at(
            hooks,
            HookPoint::Embed,
            crate::layers::embed(&self.embed, batch)?,
        )?;
        self.run_from(batch, 0, x, hooks)
    }

    /// The sliding window all layers share (loading routes configs whose layers differ to
    /// [`load_reduced`]).
    fn window(&self) -> Option<usize> {
        self.cfg.uniform_window().flatten()
    }

    fn check_length(&self, batch: &TokenBatch) -> Result<()> {
        crate::layers::check_positions(
            batch,
            self.cfg.max_position_embeddings,
            "max_position_embeddings",
        )
    }

    fn block(&self, i: usize, x: Tensor, mask: &Tensor, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let blk = &self.blocks[i];
        let (b, t, d) = x.dims3()?;
        let (heads, kv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let x = at(hooks, HookPoint::ResidPre(i), x)?;
        let h = blk.input_norm.forward(&x)?;
        let q = at(hooks, HookPoint::AttnQ(i), blk.q.forward(&h)?)?;
        let k = at(hooks, HookPoint::AttnK(i), blk.k.forward(&h)?)?;
        let v = at(hooks, HookPoint::AttnV(i), blk.v.forward(&h)?)?;
        let split = |m: &Tensor, n: usize| -> candle_core::Result<Tensor> {
            m.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = self.rotary.apply(&split(&q, heads)?)?;
        let k = self.rotary.apply(&split(&k, kv)?)?;
        let v = split(&v, kv)?;
        let k = crate::layers::repeat_kv(k, heads)?;
        let v = crate::layers::repeat_kv(v, heads)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let z = crate::layers::attention(&q, &k, &v, mask, scale, hooks, i)?;
        let z = at(hooks, HookPoint::AttnZ(i), z)?;
        let attn_out = at(hooks, HookPoint::AttnOut(i), blk.o.forward(&z)?)?;
        let mid = at(hooks, HookPoint::ResidMid(i), x.add(&attn_out)?)?;
        let h2 = blk.post_norm.forward(&mid)?;
        let neurons = self
            .act
            .apply(&blk.gate.forward(&h2)?)?
            .mul(&blk.up.forward(&h2)?)?;
        let neurons = at(hooks, HookPoint::MlpPost(i), neurons)?;
        let mlp_out = at(hooks, HookPoint::MlpOut(i), blk.down.forward(&neurons)?)?;
        debug_assert_eq!(mlp_out.dim(2)?, d);
        Ok(at(hooks, HookPoint::ResidPost(i), mid.add(&mlp_out)?)?)
    }

    fn run_from(
        &self,
        batch: &TokenBatch,
        first: usize,
        mut x: Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        self.check_length(batch)?;
        let mask = crate::layers::windowed_causal_mask(batch, self.window())?;
        for i in first..self.blocks.len() {
            x = self.block(i, x, &mask, hooks)?;
            if hooks.satisfied() {
                return Ok(x);
            }
        }
        crate::layers::final_hooks(hooks, self.norm.forward(&x)?, self.unembed.as_ref())
    }
}

impl prenorm::FastDecoder for Llama {
    fn parts(&self) -> (prenorm::Decoder<'_>, &Spare) {
        (self.fast(), &self.spare)
    }
    fn fits(&self, batch: &TokenBatch) -> Result<()> {
        self.check_length(batch)
    }
}

impl HookedModel for Llama {
    crate::score_head::score_head_methods!();

    fn family(&self) -> &'static str {
        "llama"
    }
    fn modality(&self) -> Modality {
        Modality::Text
    }
    fn hook_points(&self) -> Vec<HookPoint> {
        let points = crate::layers::decoder_hook_points(self.cfg.num_hidden_layers);
        crate::score_head::hooks_of(points, self.unembedding().is_some())
    }
    fn hook_width(&self, point: HookPoint) -> usize {
        let hd = self.cfg.head_dim();
        match point {
            HookPoint::MlpPost(_) => self.cfg.intermediate_size,
            HookPoint::AttnQ(_) | HookPoint::AttnZ(_) => self.cfg.num_attention_heads * hd,
            HookPoint::AttnK(_) | HookPoint::AttnV(_) => self.cfg.kv_heads() * hd,
            HookPoint::AttnPattern(_) => {
                self.cfg.num_attention_heads * self.cfg.max_position_embeddings
            }
            HookPoint::Logits => self.cfg.vocab_size,
            _ => self.cfg.hidden_size,
        }
    }
    fn max_positions(&self) -> Option<usize> {
        Some(self.cfg.max_position_embeddings)
    }
    fn attention_heads(&self) -> Option<usize> {
        Some(self.cfg.num_attention_heads)
    }
    fn vocab_size(&self) -> Option<usize> {
        Some(self.cfg.vocab_size)
    }
    fn forward(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let batch = input.tokens(self.family())?;
        if !prenorm::usable(self.embed.device(), self.blocks.len(), hooks) {
            return self.graph_forward(batch, hooks);
        }
        self.check_length(batch)?;
        prenorm::forward(&self.fast(), batch, hooks, &self.spare)
    }
    prenorm::fast_decoder_methods!();
    fn forward_differentiable(&self, input: Input<'_>, hooks: &mut dyn Hooks) -> Result<Tensor> {
        let batch = input.tokens(self.family())?;
        self.graph_forward(batch, hooks)
    }
    fn forward_differentiable_from(
        &self,
        batch: &TokenBatch,
        block: usize,
        resid_pre: Tensor,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        self.run_from(batch, block, resid_pre, hooks)
    }
    fn final_norm(&self, residual: &Tensor) -> Option<Result<Tensor>> {
        Some(self.norm.forward(residual).map_err(Into::into))
    }
    fn final_norm_parts(&self) -> Option<crate::model::FinalNorm<'_>> {
        Some(crate::model::FinalNorm::Rms {
            weight: &self.norm.weight,
            eps: self.norm.eps,
        })
    }
    fn unembedding(&self) -> Option<&Tensor> {
        // A sequence classifier has no language-model head (its `score` head is the output).
        self.unembed.as_ref().filter(|_| self.score.is_none())
    }
}

/// A Llama-family checkpoint on the shared decoder with its matrices held as loaded
/// (bf16/f16 under `--weights-dtype bf16|f16`), converted per layer: half the memory of the
/// fast forward's f32 weights. Same hooks and numbers. Also what runs a config whose layers
/// have different windows (Qwen2 with `use_sliding_window` from `max_window_layers` on).
pub fn load_reduced(cfg: LlamaConfig, w: &Weights) -> Result<Box<dyn HookedModel>> {
    use crate::decoder::parts::pre_norm_layer;
    use crate::decoder::{Attention, Decoder, Dims, Mlp};
    let d = Dims {
        vocab: cfg.vocab_size,
        hidden: cfg.hidden_size,
        inner: cfg.intermediate_size,
        heads: cfg.num_attention_heads,
        kv_heads: cfg.kv_heads(),
        head_dim: cfg.head_dim(),
        max_positions: cfg.max_position_embeddings,
    };
    let rotary = cfg.rotary().map_err(ModelError::Invalid)?;
    let windows = cfg.windows().map_err(ModelError::Invalid)?;
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for (i, window) in windows.into_iter().enumerate() {
        let p = format!("layers.{i}");
        let attn = Attention::separate(w, &format!("{p}.self_attn"), d, rotary.clone(), window)?;
        let mlp = Mlp::separate(w, &format!("{p}.mlp"), d)?;
        layers.push(pre_norm_layer(w, &p, d, cfg.rms_norm_eps, attn, mlp)?);
    }
    let (embed, unembed) = crate::decoder::tables(w, d, !cfg.tie_word_embeddings)?;
    Ok(Box::new(Decoder {
        family: "llama",
        dims: d,
        act: Activation::parse(&cfg.hidden_act).map_err(ModelError::Invalid)?,
        embed,
        embed_scale: None,
        layers,
        norm: RmsNorm::load(w, "norm.weight", d.hidden, cfg.rms_norm_eps)?,
        unembed,
        unembed_f32: Default::default(),
        attn_scale: (d.head_dim as f64).powf(-0.5),
        attn_softcap: None,
        final_softcap: None,
        compute: Default::default(),
        spare: Default::default(),
        score: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: Value) -> LlamaConfig {
        let mut c = json!({"vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 4, "num_attention_heads": 2, "max_position_embeddings": 64,
            "sliding_window": 4});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        LlamaConfig::from_json(Path::new("config.json"), c).unwrap()
    }

    /// transformers 5's rules: Llama has no window; Mistral slides everywhere; Qwen2 only with
    /// `use_sliding_window`, on `layer_types`' sliding layers, else from `max_window_layers` on.
    #[test]
    fn windows_follow_each_model_type() {
        let w = |extra: Value| config(extra).windows().unwrap();
        let (none, all) = (vec![None; 4], vec![Some(4); 4]);
        assert_eq!(w(json!({"model_type": "llama"})), none);
        assert_eq!(w(json!({"model_type": "mistral"})), all);
        assert_eq!(w(json!({"model_type": "qwen2"})), none);
        assert_eq!(
            w(json!({"model_type": "qwen2", "use_sliding_window": true, "max_window_layers": 2})),
            [None, None, Some(4), Some(4)]
        );
        let types = [
            "sliding_attention",
            "full_attention",
            "sliding_attention",
            "full_attention",
        ];
        let mixed = config(json!({"model_type": "qwen2", "use_sliding_window": true,
            "layer_types": types}));
        assert_eq!(mixed.windows().unwrap(), [Some(4), None, Some(4), None]);
        assert_eq!(mixed.uniform_window(), None);
        assert_eq!(
            config(json!({"model_type": "mistral"})).uniform_window(),
            Some(Some(4))
        );
        // A zero window is refused where a layer would slide, ignored where none does.
        let zero = |extra: Value| {
            let mut c = config(extra);
            c.sliding_window = Some(0);
            c.windows()
        };
        let e = zero(json!({"model_type": "mistral"})).unwrap_err();
        assert!(e.contains("sliding_window = 0"), "{e}");
        assert_eq!(zero(json!({"model_type": "qwen2"})).unwrap(), none);
        assert_eq!(zero(json!({"model_type": "llama"})).unwrap(), none);
    }
}
