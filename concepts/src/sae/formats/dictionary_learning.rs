//! dictionary_learning (github.com/saprmarks/dictionary_learning; the SAEs of Marks et al.'s
//! "Sparse Feature Circuits" and SAEBench's suites): `ae.pt`, a `torch.save`d state dict, beside
//! `config.json` (`{"trainer": {"dict_class", "activation_dim", "dict_size", "k", "layer",
//! "lm_name", "submodule_name", …}}`). A pickle, so read only on request (`allow_pickle`),
//! through the allow-listed unpickler in `glassbox_data::torch_pickle`, which interprets
//! tensor rebuilds and nothing else.
//!
//! Each class's encoder, as its `encode` computes it (`dictionary.py`, `trainers/*.py`):
//! - `AutoEncoder`: `ReLU(encoder(x − bias))`, decode `decoder(f) + bias` (nn.Linear layouts);
//! - `GatedAutoEncoder`: gate `encoder(x − decoder_bias) + gate_bias > 0`, magnitude
//!   `ReLU(e^{r_mag} encoder(x − decoder_bias) + mag_bias)`;
//! - `JumpReluAutoEncoder`: `W_enc [d, m]` on the *uncentred* input
//!   (`apply_b_dec_to_input = False`), `pre · [pre > threshold]`;
//! - `AutoEncoderTopK`: TopK of `ReLU(encoder(x − b_dec))` (its `encode` default);
//! - `BatchTopKSAE`, `MatryoshkaBatchTopKSAE` (`W_enc [d, m]`): at inference one threshold on
//!   `ReLU(· (x − b_dec) + b_enc)` (their `encode` default `use_threshold = True`), so JumpReLU.

use super::super::saelens::{fold_uncentred_input, take_tensor, transpose, LoadedSae};
use super::super::{Architecture, Gate, Sae};
use crate::ConceptError;
use serde_json::Value;
use std::path::Path;

pub(super) fn load(dir: &Path, allow_pickle: bool) -> Result<LoadedSae, ConceptError> {
    let file = dir.join("ae.pt");
    let cfg_path = dir.join("config.json");
    let bad = |m: String| ConceptError::Invalid(format!("{}: {m}", cfg_path.display()));
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
        bad(format!(
            "cannot read ({e}); dictionary_learning saves it beside ae.pt"
        ))
    })?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let trainer = cfg
        .get("trainer")
        .ok_or_else(|| bad("no `trainer` section".into()))?;
    let int = |k: &str| trainer.get(k).and_then(Value::as_u64).map(|v| v as usize);
    let text_field = |k: &str| trainer.get(k).and_then(Value::as_str);
    let class = text_field("dict_class").ok_or_else(|| bad("`dict_class` is missing".into()))?;
    let d = int("activation_dim").ok_or_else(|| bad("`activation_dim` is missing".into()))?;
    let m = int("dict_size").ok_or_else(|| bad("`dict_size` is missing".into()))?;

    let mut t = super::read_pickle(&file, allow_pickle, "dictionary_learning")?;
    let mut take = |name: &str, shape: &[usize]| take_tensor(&mut t, &file, name, shape, (d, m));
    let k = |stored: Vec<f32>| stored.first().map(|&k| k as usize).or(int("k"));
    let mut sae = match class {
        "AutoEncoder" => Sae {
            input_norm: Default::default(),
            architecture: Architecture::Relu {
                l1_coefficient: 0.0,
            },
            w_enc: take("encoder.weight", &[m, d])?,
            b_enc: take("encoder.bias", &[m])?,
            w_dec: transpose(&take("decoder.weight", &[d, m])?, d, m),
            b_dec: take("bias", &[d])?,
            ..super::unfilled(d, m)
        },
        "GatedAutoEncoder" => Sae {
            input_norm: Default::default(),
            architecture: Architecture::Gated,
            w_enc: take("encoder.weight", &[m, d])?,
            b_enc: take("gate_bias", &[m])?,
            w_dec: transpose(&take("decoder.weight", &[d, m])?, d, m),
            b_dec: take("decoder_bias", &[d])?,
            gate: Some(Gate {
                r_mag: take("r_mag", &[m])?,
                b_mag: take("mag_bias", &[m])?,
            }),
            ..super::unfilled(d, m)
        },
        "JumpReluAutoEncoder" => {
            let mut sae = Sae {
                input_norm: Default::default(),
                architecture: Architecture::JumpRelu,
                w_enc: transpose(&take("W_enc", &[d, m])?, d, m),
                b_enc: take("b_enc", &[m])?,
                w_dec: take("W_dec", &[m, d])?,
                b_dec: take("b_dec", &[d])?,
                threshold: take("threshold", &[m])?,
                ..super::unfilled(d, m)
            };
            fold_uncentred_input(&mut sae);
            sae
        }
        "AutoEncoderTopK" => Sae {
            input_norm: Default::default(),
            architecture: Architecture::TopK {
                k: k(take("k", &[])?).ok_or_else(|| bad("no `k`".into()))?,
            },
            w_enc: take("encoder.weight", &[m, d])?,
            b_enc: take("encoder.bias", &[m])?,
            w_dec: transpose(&take("decoder.weight", &[d, m])?, d, m),
            b_dec: take("b_dec", &[d])?,
            ..super::unfilled(d, m)
        },
        "BatchTopKSAE" | "MatryoshkaBatchTopKSAE" => {
            let threshold = take("threshold", &[])?[0];
            if threshold < 0.0 {
                return Err(bad(format!(
                    "{class} with threshold {threshold}: training never set its inference \
                     threshold, so its codes depend on the batch; glassbox reads finished SAEs"
                )));
            }
            let (w_enc, b_enc, w_dec) = if class == "BatchTopKSAE" {
                (
                    take("encoder.weight", &[m, d])?,
                    take("encoder.bias", &[m])?,
                    transpose(&take("decoder.weight", &[d, m])?, d, m),
                )
            } else {
                (
                    transpose(&take("W_enc", &[d, m])?, d, m),
                    take("b_enc", &[m])?,
                    take("W_dec", &[m, d])?,
                )
            };
            Sae {
                input_norm: Default::default(),
                architecture: Architecture::JumpRelu,
                w_enc,
                b_enc,
                w_dec,
                b_dec: take("b_dec", &[d])?,
                threshold: vec![threshold; m],
                ..super::unfilled(d, m)
            }
        }
        other => {
            return Err(bad(format!(
                "dict_class `{other}` is not supported (AutoEncoder, GatedAutoEncoder, \
                 JumpReluAutoEncoder, AutoEncoderTopK, BatchTopKSAE, MatryoshkaBatchTopKSAE)"
            )))
        }
    };
    sae.d_in = d;
    sae.width = m;
    sae.validate(&file.display().to_string())?;
    Ok(LoadedSae {
        sae,
        hook_name: hook_name(text_field("submodule_name"), int("layer")),
        model_name: text_field("lm_name").map(str::to_owned),
        fingerprint: None,
        format: "dictionary_learning",
    })
}

/// dictionary_learning names submodules `resid_post_layer_3`, `mlp_out_layer_3`,
/// `attn_out_layer_3`; the hook is `blocks.3.hook_resid_post` and so on.
fn hook_name(submodule: Option<&str>, layer: Option<usize>) -> Option<String> {
    let (kind, number) = submodule?.rsplit_once("_layer_")?;
    let layer = number.parse::<usize>().ok().or(layer)?;
    matches!(kind, "resid_post" | "resid_pre" | "mlp_out" | "attn_out")
        .then(|| format!("blocks.{layer}.hook_{kind}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn submodule_names_map_to_hooks() {
        assert_eq!(
            super::hook_name(Some("resid_post_layer_3"), Some(3)).as_deref(),
            Some("blocks.3.hook_resid_post")
        );
        assert_eq!(
            super::hook_name(Some("mlp_out_layer_10"), None).as_deref(),
            Some("blocks.10.hook_mlp_out")
        );
        assert_eq!(super::hook_name(Some("embed"), Some(0)), None);
    }
}
