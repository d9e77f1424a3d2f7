//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`, how most fine-tunes
//! on the Hub ship), merged into their base model's weights at load as PEFT's
//! `merge_and_unload` does (`peft/tuners/lora/layer.py`, `get_delta_weight`):
//! `W += scale · B·A` per adapted module, `scale = lora_alpha / r` (`/ √r` with `use_rslora`),
//! with `rank_pattern`/`alpha_pattern` per module, `fan_in_fan_out` (GPT-2's `Conv1D`
//! layout) transposed, embeddings' `lora_embedding_A/B` as `(B·A)ᵀ`, and whole tensors the
//! adapter saved (`modules_to_save`, resized embeddings' `base_layer`) replacing the base's.
//! A GGUF base's block-quantised matrices that an adapter changes are dequantised to take the
//! update. What a merge cannot reproduce — DoRA's magnitudes, LoRA biases, other PEFT methods —
//! is refused by name.

use crate::weights::Weights;
use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The adapter's config file name.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights file name.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The weights file of adapters saved before PEFT wrote safetensors (a PyTorch pickle).
pub const ADAPTER_WEIGHTS_PICKLE: &str = "adapter_model.bin";

/// The weights beside an adapter's `config`: `adapter_model.safetensors`, else the older
/// `adapter_model.bin`; `None` when neither is there.
pub fn weights_file(config: &Path) -> Option<PathBuf> {
    [ADAPTER_WEIGHTS, ADAPTER_WEIGHTS_PICKLE]
        .into_iter()
        .map(|name| config.with_file_name(name))
        .find(|p| p.is_file())
}
/// PEFT's prefix on every saved key.
const PREFIX: &str = "base_model.model.";

/// An adapter's `adapter_config.json`, read.
#[derive(Debug, Clone)]
pub struct LoraConfig {
    pub path: PathBuf,
    /// `base_model_name_or_path`: a Hub id or a path.
    pub base: String,
    r: f64,
    alpha: f64,
    rslora: bool,
    fan_in_fan_out: bool,
    rank_pattern: HashMap<String, f64>,
    alpha_pattern: HashMap<String, f64>,
}

fn config_error(path: &Path, message: String) -> ModelError {
    ModelError::Config {
        path: path.to_path_buf(),
        message,
    }
}

/// A `{module pattern: number}` table of the config (`rank_pattern`, `alpha_pattern`); patterns
/// are module names or their dotted suffixes, as PEFT matches `(.*\.)?NAME$`.
fn patterns(v: &Value, key: &str, path: &Path) -> Result<HashMap<String, f64>> {
    let Some(table) = v.get(key).and_then(Value::as_object) else {
        return Ok(HashMap::new());
    };
    table
        .iter()
        .map(|(pattern, n)| {
            if pattern.chars().any(|c| "*+?[](){}|^$\\".contains(c)) {
                return Err(config_error(
                    path,
                    format!("`{key}` key `{pattern}` is a regular expression; glassbox matches module names and their dotted suffixes only — list the modules"),
                ));
            }
            let n = n.as_f64().filter(|n| *n > 0.0).ok_or_else(|| {
                config_error(path, format!("`{key}` value for `{pattern}` must be a positive number"))
            })?;
            Ok((pattern.clone(), n))
        })
        .collect()
}

impl LoraConfig {
    /// Reads `adapter_config.json` at `path`, refusing what a weight merge cannot reproduce.
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |m: String| config_error(path, m);
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let kind = v.get("peft_type").and_then(Value::as_str).unwrap_or("?");
        if kind != "LORA" {
            return Err(bad(format!(
                "`peft_type` is `{kind}`; glassbox merges LoRA adapters only — merge this one into its base with PEFT (`merge_and_unload`) and save the result"
            )));
        }
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        for (key, what) in [
            ("use_dora", "DoRA's per-column magnitudes"),
            ("lora_bias", "LoRA biases"),
            ("use_qalora", "QA-LoRA's pooled inputs"),
        ] {
            if flag(key) {
                return Err(bad(format!(
                    "`{key}` is set: glassbox's merge does not reproduce {what}; merge with PEFT (`merge_and_unload`) and load the saved model"
                )));
            }
        }
        match v.get("bias").and_then(Value::as_str).unwrap_or("none") {
            "none" => {}
            other => {
                return Err(bad(format!(
                    "`bias` is `{other}`: the adapter trains biases, which glassbox's merge does not read; merge with PEFT (`merge_and_unload`)"
                )))
            }
        }
        for key in [
            "layer_replication",
            "target_parameters",
            "trainable_token_indices",
        ] {
            if v.get(key).is_some_and(|x| !x.is_null()) {
                return Err(bad(format!(
                    "`{key}` is set, which glassbox's merge does not handle; merge with PEFT (`merge_and_unload`)"
                )));
            }
        }
        let number = |k: &str| v.get(k).and_then(Value::as_f64).filter(|n| *n > 0.0);
        let r = number("r").ok_or_else(|| bad("`r` must be a positive number".into()))?;
        let base = v
            .get("base_model_name_or_path")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                bad("no `base_model_name_or_path`: glassbox cannot tell which model the adapter adapts".into())
            })?
            .to_owned();
        Ok(Self {
            path: path.to_path_buf(),
            base,
            r,
            alpha: number("lora_alpha").unwrap_or(8.0),
            rslora: flag("use_rslora"),
            fan_in_fan_out: flag("fan_in_fan_out"),
            rank_pattern: patterns(&v, "rank_pattern", path)?,
            alpha_pattern: patterns(&v, "alpha_pattern", path)?,
        })
    }

    /// `scale` of module `module` (its name without `.weight`).
    fn scale(&self, module: &str) -> f64 {
        let find = |table: &HashMap<String, f64>| {
            table
                .iter()
                .filter(|(p, _)| module == p.as_str() || module.ends_with(&format!(".{p}")))
                .max_by_key(|(p, _)| p.len())
                .map(|(_, n)| *n)
        };
        let r = find(&self.rank_pattern).unwrap_or(self.r);
        let alpha = find(&self.alpha_pattern).unwrap_or(self.alpha);
        if self.rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        }
    }
}

/// How one adapter tensor changes the base.
enum Part {
    A,
    B,
    EmbeddingA,
    EmbeddingB,
    Whole,
}

/// `(module, part)` of an adapter key without PEFT's prefix.
fn split_key(key: &str) -> (String, Part) {
    for (suffix, part) in [
        (".lora_A.weight", Part::A),
        (".lora_B.weight", Part::B),
        (".lora_embedding_A", Part::EmbeddingA),
        (".lora_embedding_B", Part::EmbeddingB),
    ] {
        if let Some(module) = key.strip_suffix(suffix) {
            return (module.to_owned(), part);
        }
    }
    // `modules_to_save` copies and a resized embedding's `base_layer` replace the base tensor.
    let whole = key
        .replace(".base_layer.", ".")
        .replace(".modules_to_save.", ".");
    (whole, Part::Whole)
}

/// The checkpoint's name for module `module` of an adapter saved under `transformers` 5, whose
/// in-memory ViT modules are renamed from the names checkpoints keep
/// (`conversion_mapping.py`'s `ViTModel` rules, undone): `vit.layers.N.attention.q_proj` is
/// `vit.encoder.layer.N.attention.attention.query`, `mlp.fc1` the `intermediate.dense`, ….
/// `None` where no rename applies.
fn checkpoint_name(module: &str) -> Option<String> {
    let (head, rest) = module.split_once("layers.")?;
    let (layer, part) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let part = match part {
        "attention.q_proj" => "attention.attention.query",
        "attention.k_proj" => "attention.attention.key",
        "attention.v_proj" => "attention.attention.value",
        "attention.o_proj" => "attention.output.dense",
        "mlp.fc1" => "intermediate.dense",
        "mlp.fc2" => "output.dense",
        other => other,
    };
    Some(format!("{head}encoder.layer.{layer}.{part}"))
}

/// `module` as the base checkpoint names it: as the adapter spells it, else renamed back by
/// [`checkpoint_name`]; `suffix` is the tensor's (`.weight`, or `""` for a whole key).
fn in_base(weights: &Weights, module: &str, suffix: &str) -> Option<String> {
    if weights.contains(&format!("{module}{suffix}")) {
        return Some(module.to_owned());
    }
    checkpoint_name(module).filter(|m| weights.contains(&format!("{m}{suffix}")))
}

/// Merges the adapter at `weights_path` into `weights` (names as the base checkpoint stores
/// them), in f32, each changed tensor stored back in its own dtype; a pickled adapter
/// (`adapter_model.bin`) is read only when `allow_pickle`. Returns how many base tensors
/// changed.
pub fn merge(
    config: &LoraConfig,
    weights_path: &Path,
    allow_pickle: bool,
    weights: &mut Weights,
) -> Result<usize> {
    let bad = |message: String| ModelError::Weights {
        path: weights_path.to_path_buf(),
        message,
    };
    let adapter = if crate::torch_legacy::is_torch_checkpoint(weights_path) {
        if !allow_pickle {
            return Err(bad("is a PyTorch pickle (an adapter saved before PEFT wrote safetensors); pickle files can carry code, so reading them is opt-in: pass --allow-pickle (glassbox interprets tensors only and runs nothing)".into()));
        }
        crate::torch_legacy::load(weights_path)?
    } else {
        candle_core::safetensors::load(weights_path, &Device::Cpu)
            .map_err(|e| bad(format!("cannot read the adapter: {e}")))?
    };
    let mut pairs: HashMap<String, [Option<Tensor>; 2]> = HashMap::new();
    let mut embedding: HashMap<String, bool> = HashMap::new();
    let mut changed = 0;
    let mut keys: Vec<&String> = adapter.keys().collect();
    keys.sort();
    for key in keys {
        let t = &adapter[key];
        let inner = key.strip_prefix(PREFIX).unwrap_or(key);
        let (module, part) = split_key(inner);
        let f32 = || t.to_dtype(DType::F32).map_err(|e| bad(e.to_string()));
        match part {
            Part::A | Part::EmbeddingA => {
                embedding.insert(module.clone(), matches!(part, Part::EmbeddingA));
                pairs.entry(module).or_default()[0] = Some(f32()?);
            }
            Part::B | Part::EmbeddingB => {
                pairs.entry(module).or_default()[1] = Some(f32()?);
            }
            Part::Whole => {
                let module = in_base(weights, &module, "").unwrap_or(module);
                let Some(base) = weights.dense(&module).transpose()? else {
                    return Err(bad(format!(
                        "the adapter saves `{key}` whole, but the base checkpoint has no `{module}` to replace — a head trained on top of the base (a classifier fine-tuned from a language model, or a separate head on a tied one), which the base's config does not describe; merge with PEFT (`merge_and_unload`) and load the saved model"
                    )));
                };
                if base.dims() != t.dims() {
                    return Err(bad(format!(
                        "the adapter's `{key}` has shape {:?} but the base's `{module}` has {:?}",
                        t.dims(),
                        base.dims()
                    )));
                }
                let stored = t.to_dtype(base.dtype()).map_err(|e| bad(e.to_string()))?;
                weights.replace(&module, stored);
                changed += 1;
            }
        }
    }
    let mut modules: Vec<_> = pairs.into_iter().collect();
    modules.sort_by(|a, b| a.0.cmp(&b.0));
    for (module, [a, b]) in modules {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(bad(format!(
                "module `{module}` has only one of its LoRA factors (A and B)"
            )));
        };
        // Patterns and the embedding flag go by the adapter's module name; the tensor by the
        // checkpoint's.
        let stored = in_base(weights, &module, ".weight").unwrap_or_else(|| module.clone());
        let name = format!("{stored}.weight");
        // A GGUF base's block-quantised matrix is dequantised to take the update (as PEFT
        // merges into a quantised base), and held dense from then on.
        let Some(base) = weights.dense(&name).transpose()? else {
            return Err(bad(format!(
                "the adapter changes `{name}`, which the base checkpoint does not have: is `base_model_name_or_path` the model it was trained on?"
            )));
        };
        let delta = b.matmul(&a).map_err(|e| {
            bad(format!(
                "module `{module}`: LoRA factors B {:?} and A {:?} do not multiply: {e}",
                b.dims(),
                a.dims()
            ))
        })?;
        // Linear layers hold `[out, in]` = B·A; an embedding `[vocab, dim]` = (B·A)ᵀ, and so does
        // a `Conv1D` (`fan_in_fan_out`).
        let transposed = embedding[&module] || config.fan_in_fan_out;
        let delta = if transposed {
            delta.t().map_err(|e| bad(e.to_string()))?
        } else {
            delta
        };
        if delta.dims() != base.dims() {
            return Err(bad(format!(
                "module `{module}`: the LoRA update has shape {:?} but `{name}` has {:?}",
                delta.dims(),
                base.dims()
            )));
        }
        let merged = base
            .to_dtype(DType::F32)
            .and_then(|w| w + (delta * config.scale(&module))?)
            .and_then(|w| w.to_dtype(base.dtype()))
            .map_err(|e| bad(format!("merging `{name}`: {e}")))?;
        weights.replace(&name, merged);
        changed += 1;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<LoraConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADAPTER_CONFIG);
        std::fs::write(&path, json.to_string()).unwrap();
        LoraConfig::read(&path)
    }

    #[test]
    fn transformers_5_vit_module_names_map_back_to_the_checkpoint() {
        let pairs = [
            (
                "vit.layers.3.attention.q_proj",
                "vit.encoder.layer.3.attention.attention.query",
            ),
            (
                "vit.layers.0.attention.o_proj",
                "vit.encoder.layer.0.attention.output.dense",
            ),
            (
                "vit.layers.1.mlp.fc1",
                "vit.encoder.layer.1.intermediate.dense",
            ),
            ("vit.layers.1.mlp.fc2", "vit.encoder.layer.1.output.dense"),
            (
                "vit.layers.2.layernorm_before",
                "vit.encoder.layer.2.layernorm_before",
            ),
        ];
        for (memory, disk) in pairs {
            assert_eq!(checkpoint_name(memory).as_deref(), Some(disk));
        }
        assert_eq!(checkpoint_name("classifier"), None);
    }

    #[test]
    fn scales_follow_alpha_rank_rslora_and_patterns() {
        let c = config(
            serde_json::json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
            "base_model_name_or_path": "org/base",
            "rank_pattern": {"q_proj": 2, "model.layers.1.mlp.down_proj": 16},
            "alpha_pattern": {"layers.0.self_attn.q_proj": 4}}),
        )
        .unwrap();
        assert_eq!(c.scale("model.layers.3.self_attn.v_proj"), 2.0);
        assert_eq!(c.scale("model.layers.3.self_attn.q_proj"), 4.0);
        assert_eq!(c.scale("model.layers.0.self_attn.q_proj"), 2.0);
        assert_eq!(c.scale("model.layers.1.mlp.down_proj"), 0.5);
        // `down_proj` of another layer: no pattern applies.
        assert_eq!(c.scale("model.layers.2.mlp.down_proj"), 2.0);
        let rs = config(
            serde_json::json!({"peft_type": "LORA", "r": 16, "lora_alpha": 8,
            "use_rslora": true, "base_model_name_or_path": "org/base"}),
        )
        .unwrap();
        assert_eq!(rs.scale("x"), 2.0);
    }

    #[test]
    fn what_a_merge_cannot_reproduce_is_named() {
        let base = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                "base_model_name_or_path": "org/base"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            config(v).expect_err("refused").to_string()
        };
        for (extra, needle) in [
            (serde_json::json!({"peft_type": "IA3"}), "IA3"),
            (serde_json::json!({"use_dora": true}), "use_dora"),
            (serde_json::json!({"bias": "all"}), "`bias`"),
            (serde_json::json!({"lora_bias": true}), "lora_bias"),
            (
                serde_json::json!({"rank_pattern": {".*q_proj": 8}}),
                "regular expression",
            ),
            (
                serde_json::json!({"base_model_name_or_path": null}),
                "base_model_name_or_path",
            ),
            (
                serde_json::json!({"layer_replication": [[0, 2]]}),
                "layer_replication",
            ),
        ] {
            let e = base(extra);
            assert!(e.contains(needle) && e.contains(ADAPTER_CONFIG), "{e}");
        }
    }
}
