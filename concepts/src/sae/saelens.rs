//! The SAELens on-disk layout: a folder with `cfg.json` and `sae_weights.safetensors` holding
//! `W_enc` (`d_in × d_sae`), `b_enc` (`d_sae`), `W_dec` (`d_sae × d_in`) and `b_dec` (`d_in`).
//! SAEs trained here open in SAELens (`SAE.load_from_disk`), and SAELens's TopK and standard
//! (ReLU) SAEs load here for analysis.

use super::options::Architecture;
use super::{tensors, Sae};
use crate::ConceptError;
use serde_json::{json, Value};
use std::path::Path;

pub const CFG_FILE: &str = "cfg.json";
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";

/// Provenance written into `cfg.json`'s `metadata`.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub model_name: String,
    pub hook_name: String,
    /// Extra keys (training options, metrics) for readers of the config.
    pub extra: serde_json::Map<String, Value>,
}

/// Writes `sae` into `dir` in SAELens layout (built in a sibling temp folder, then renamed
/// into place, so a reader never sees half an SAE).
pub fn save(dir: &Path, sae: &Sae, provenance: &Provenance) -> Result<(), ConceptError> {
    sae.validate("SAE to save")?;
    let io = |e: std::io::Error, p: &Path| ConceptError::Invalid(format!("{}: {e}", p.display()));
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(e, &tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(e, &tmp))?;
    let (d, w) = (sae.d_in, sae.width);
    // SAELens's W_enc is d_in × d_sae: the transpose of the latent-major rows kept here.
    let mut w_enc = vec![0.0f32; d * w];
    for j in 0..w {
        for i in 0..d {
            w_enc[i * w + j] = sae.w_enc[j * d + i];
        }
    }
    tensors::write(
        &tmp.join(WEIGHTS_FILE),
        &[
            ("W_enc", vec![d, w], &w_enc),
            ("b_enc", vec![w], &sae.b_enc),
            ("W_dec", vec![w, d], &sae.w_dec),
            ("b_dec", vec![d], &sae.b_dec),
        ],
        Default::default(),
    )?;
    let mut metadata = serde_json::Map::new();
    metadata.insert("model_name".into(), json!(provenance.model_name));
    metadata.insert("hook_name".into(), json!(provenance.hook_name));
    metadata.insert("glassbox_version".into(), json!(env!("CARGO_PKG_VERSION")));
    metadata.extend(provenance.extra.clone());
    let mut cfg = json!({
        "d_in": d,
        "d_sae": w,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": true,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    });
    match sae.architecture {
        Architecture::TopK { k } => {
            cfg["k"] = json!(k);
            cfg["rescale_acts_by_decoder_norm"] = json!(false);
            cfg["architecture"] = json!("topk");
        }
        Architecture::Relu { .. } => cfg["architecture"] = json!("standard"),
    }
    let text = serde_json::to_string_pretty(&cfg).expect("JSON values serialise");
    std::fs::write(tmp.join(CFG_FILE), text).map_err(|e| io(e, &tmp))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io(e, dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| io(e, dir))?;
    Ok(())
}

/// An SAE loaded from SAELens layout, with the hook and model its config names (if any).
#[derive(Debug, Clone)]
pub struct LoadedSae {
    pub sae: Sae,
    pub hook_name: Option<String>,
    pub model_name: Option<String>,
    /// The training fingerprint glassbox wrote, for SAEs trained here.
    pub fingerprint: Option<String>,
}

/// Loads a TopK or standard SAELens SAE from `dir`.
pub fn load(dir: &Path) -> Result<LoadedSae, ConceptError> {
    let cfg_path = dir.join(CFG_FILE);
    let bad = |m: String| ConceptError::Invalid(format!("{}: {m}", cfg_path.display()));
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| bad(format!("cannot read ({e}); is this an SAELens SAE folder?")))?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let int = |key: &str| {
        cfg.get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("`{key}` is missing or not a whole number")))
    };
    let (d, w) = (int("d_in")?, int("d_sae")?);
    let text_field = |key: &str, default: &str| {
        cfg.get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let architecture = match text_field("architecture", "standard").as_str() {
        "topk" => {
            if cfg.get("rescale_acts_by_decoder_norm").and_then(Value::as_bool) == Some(true) {
                return Err(bad(
                    "rescale_acts_by_decoder_norm = true is not supported (its top-k ranks \
                     pre-activations scaled by decoder norms)"
                        .into(),
                ));
            }
            Architecture::TopK { k: int("k")? }
        }
        "standard" => Architecture::Relu { l1_coefficient: 0.0 },
        other => {
            return Err(bad(format!(
                "architecture `{other}` is not supported; glassbox reads \"topk\" and \"standard\" SAEs"
            )))
        }
    };
    for (key, want) in [
        ("normalize_activations", "none"),
        ("reshape_activations", "none"),
    ] {
        let got = text_field(key, "none");
        if got != want {
            return Err(bad(format!(
                "{key} = \"{got}\" is not supported (only \"none\"): the SAE expects \
                 inputs transformed in a way glassbox does not reproduce"
            )));
        }
    }
    let weights = dir.join(WEIGHTS_FILE);
    let (mut t, _) = tensors::read(&weights)?;
    let mut take = |name: &str, shape: &[usize]| {
        let tensor = t.remove(name).ok_or_else(|| {
            ConceptError::Invalid(format!("{}: tensor `{name}` is missing", weights.display()))
        })?;
        if tensor.shape != shape {
            return Err(ConceptError::Invalid(format!(
                "{}: tensor `{name}` has shape {:?}, expected {shape:?} (d_in {d}, d_sae {w} in cfg.json)",
                weights.display(),
                tensor.shape
            )));
        }
        Ok(tensor.values)
    };
    let w_enc_t = take("W_enc", &[d, w])?;
    let mut b_enc = take("b_enc", &[w])?;
    let w_dec = take("W_dec", &[w, d])?;
    let b_dec = take("b_dec", &[d])?;
    let mut w_enc = vec![0.0f32; d * w];
    for i in 0..d {
        for j in 0..w {
            w_enc[j * d + i] = w_enc_t[i * w + j];
        }
    }
    if cfg.get("apply_b_dec_to_input").and_then(Value::as_bool) == Some(false) {
        // The encoder sees raw x: fold b_dec into b_enc so `W_enc (x − b_dec) + b_enc'`
        // equals SAELens's `W_enc x + b_enc`.
        for j in 0..w {
            b_enc[j] += super::dot(&w_enc[j * d..(j + 1) * d], &b_dec);
        }
    }
    let sae = Sae {
        d_in: d,
        width: w,
        architecture,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
    };
    sae.validate(&weights.display().to_string())?;
    let meta = |key: &str| {
        cfg.get("metadata")
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(LoadedSae {
        sae,
        hook_name: meta("hook_name"),
        model_name: meta("model_name"),
        fingerprint: meta("glassbox_fingerprint"),
    })
}
