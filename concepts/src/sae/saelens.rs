//! The SAELens on-disk layout: a folder with `cfg.json` and `sae_weights.safetensors` holding
//! `W_enc` (`d_in × d_sae`), `b_enc` (`d_sae`), `W_dec` (`d_sae × d_in`) and `b_dec` (`d_in`).
//! SAEs trained here open in SAELens (`SAE.load_from_disk`), and SAELens's SAEs of every
//! inference architecture load here for analysis.

use super::options::Architecture;
use super::{tensors, Gate, InputNorm, Sae};
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
    let mut named: Vec<(&str, Vec<usize>, &[f32])> = vec![
        ("W_enc", vec![d, w], &w_enc),
        ("W_dec", vec![w, d], &sae.w_dec),
        ("b_dec", vec![d], &sae.b_dec),
    ];
    match &sae.gate {
        // SAELens's gated SAE calls the gate's bias b_gate and has no b_enc.
        Some(g) => named.extend([
            ("b_gate", vec![w], sae.b_enc.as_slice()),
            ("r_mag", vec![w], g.r_mag.as_slice()),
            ("b_mag", vec![w], g.b_mag.as_slice()),
        ]),
        None => named.push(("b_enc", vec![w], &sae.b_enc)),
    }
    if sae.architecture == Architecture::JumpRelu {
        named.push(("threshold", vec![w], &sae.threshold));
    }
    tensors::write(&tmp.join(WEIGHTS_FILE), &named, Default::default())?;
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
        "normalize_activations": sae.input_norm.name(),
        "reshape_activations": "none",
        "metadata": metadata,
    });
    match sae.architecture {
        // A BatchTopK SAE still in training runs per token as TopK (`Sae::selection`); a
        // finished one is a JumpReLU and saved as one.
        Architecture::TopK { k } | Architecture::BatchTopK { k } => {
            cfg["k"] = json!(k);
            cfg["rescale_acts_by_decoder_norm"] = json!(false);
            cfg["architecture"] = json!("topk");
        }
        Architecture::Relu { .. } => cfg["architecture"] = json!("standard"),
        Architecture::JumpRelu => cfg["architecture"] = json!("jumprelu"),
        Architecture::Gated => cfg["architecture"] = json!("gated"),
    }
    let text = serde_json::to_string_pretty(&cfg).expect("JSON values serialise");
    std::fs::write(tmp.join(CFG_FILE), text).map_err(|e| io(e, &tmp))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io(e, dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| io(e, dir))?;
    Ok(())
}

/// An SAE loaded from a folder, with what its files say about where it belongs.
#[derive(Debug, Clone)]
pub struct LoadedSae {
    pub sae: Sae,
    pub hook_name: Option<String>,
    pub model_name: Option<String>,
    /// The training fingerprint glassbox wrote, for SAEs trained here.
    pub fingerprint: Option<String>,
    /// The on-disk format it was read from (`saelens`, `gemma_scope`, …).
    pub format: &'static str,
}

/// Loads an SAELens SAE from `dir`: every inference architecture SAELens saves (`standard`,
/// `topk`, `jumprelu` — which BatchTopK and Matryoshka SAEs become when saved for inference —
/// and `gated`), SAELens 5 configs (`activation_fn_str = "topk"`, top-level `hook_name`) and
/// `batchtopk` training checkpoints (their `topk_threshold` becomes a JumpReLU threshold, as
/// SAELens does when it saves them for inference).
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
    // SAELens 5 spelled TopK as a standard SAE with a top-k activation.
    let activation = cfg
        .get("activation_fn_str")
        .or_else(|| cfg.get("activation_fn"))
        .and_then(Value::as_str)
        .unwrap_or("relu");
    let legacy_k = cfg
        .get("activation_fn_kwargs")
        .and_then(|k| k.get("k"))
        .and_then(Value::as_u64)
        .map(|k| k as usize);
    let mut name = text_field("architecture", "standard");
    if name == "standard" && activation == "topk" {
        name = "topk".into();
    }
    let k = || legacy_k.map(Ok).unwrap_or_else(|| int("k"));
    // SAELens's TopK family can rank pre-activations scaled by the decoder rows' norms.
    let rescaled = matches!(name.as_str(), "topk" | "batchtopk" | "matryoshka_batchtopk")
        && cfg
            .get("rescale_acts_by_decoder_norm")
            .and_then(Value::as_bool)
            == Some(true);
    let got = text_field("reshape_activations", "none");
    if got != "none" {
        return Err(bad(format!(
            "reshape_activations = \"{got}\" is not supported (only \"none\"): the SAE expects \
             inputs transformed in a way glassbox does not reproduce"
        )));
    }
    let norm_name = text_field("normalize_activations", "none");
    let input_norm = InputNorm::from_saelens(&norm_name).ok_or_else(|| {
        bad(format!(
            "normalize_activations = \"{norm_name}\" is not supported (none, \
             expected_average_only_in, constant_norm_rescale and layer_norm are): a saved \
             covariance_whitening SAE is folded by SAELens and says \"none\"; this one's mean and \
             whitening matrix are not in the folder"
        ))
    })?;
    let weights = dir.join(WEIGHTS_FILE);
    let (mut t, _) = tensors::read(&weights)?;
    let mut take = |name: &str, shape: &[usize]| take_tensor(&mut t, &weights, name, shape, (d, w));
    let mut w_enc_t = take("W_enc", &[d, w])?;
    let mut w_dec = take("W_dec", &[w, d])?;
    let b_dec = take("b_dec", &[d])?;
    let (architecture, mut b_enc, threshold, gate) = match name.as_str() {
        "standard" => (
            Architecture::Relu { l1_coefficient: 0.0 },
            take("b_enc", &[w])?,
            Vec::new(),
            None,
        ),
        "topk" => (Architecture::TopK { k: k()? }, take("b_enc", &[w])?, Vec::new(), None),
        "jumprelu" => {
            let b_enc = take("b_enc", &[w])?;
            let threshold = match take("threshold", &[w]) {
                Ok(t) => t,
                // SAELens before 6 stored log thresholds.
                Err(_) => take("log_threshold", &[w])?.iter().map(|v| v.exp()).collect(),
            };
            (Architecture::JumpRelu, b_enc, threshold, None)
        }
        "batchtopk" | "matryoshka_batchtopk" => {
            let b_enc = take("b_enc", &[w])?;
            match take("threshold", &[w]) {
                Ok(threshold) => (Architecture::JumpRelu, b_enc, threshold, None),
                Err(_) => match take("topk_threshold", &[]) {
                    Ok(t) => (Architecture::JumpRelu, b_enc, vec![t[0]; w], None),
                    Err(_) => (Architecture::TopK { k: k()? }, b_enc, Vec::new(), None),
                },
            }
        }
        "gated" => {
            let b_gate = take("b_gate", &[w])?;
            let gate = Gate {
                r_mag: take("r_mag", &[w])?,
                b_mag: take("b_mag", &[w])?,
            };
            (Architecture::Gated, b_gate, Vec::new(), Some(gate))
        }
        other => {
            return Err(bad(format!(
                "architecture `{other}` is not supported; glassbox reads SAELens's standard, topk, jumprelu, gated, batchtopk and matryoshka_batchtopk SAEs"
            )))
        }
    };
    if rescaled {
        fold_decoder_norms(&mut w_enc_t, &mut b_enc, &mut w_dec, (d, w));
    }
    let mut sae = Sae {
        input_norm: Default::default(),
        d_in: d,
        width: w,
        architecture,
        w_enc: transpose(&w_enc_t, d, w),
        b_enc,
        w_dec,
        b_dec,
        threshold,
        gate,
    };
    sae.input_norm = input_norm;
    if cfg.get("apply_b_dec_to_input").and_then(Value::as_bool) == Some(false) {
        fold_uncentred_input(&mut sae);
    }
    sae.validate(&weights.display().to_string())?;
    let meta = |key: &str| {
        cfg.get("metadata")
            .and_then(|m| m.get(key))
            .or_else(|| cfg.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(LoadedSae {
        sae,
        hook_name: meta("hook_name"),
        model_name: meta("model_name"),
        fingerprint: meta("glassbox_fingerprint"),
        format: "saelens",
    })
}

/// Folds `rescale_acts_by_decoder_norm` into the weights, as SAELens's `fold_W_dec_norm` does:
/// encoder column and bias of latent i × ‖W_dec[i]‖, decoder row i ÷ it (norms clamped at 1e-8
/// as SAELens clamps them). Pre-activations become the rescaled ones SAELens ranks and
/// returns, and decoding them through the unit rows gives SAELens's reconstruction — for
/// whatever activation follows (TopK, or BatchTopK's threshold).
fn fold_decoder_norms(
    w_enc_t: &mut [f32],
    b_enc: &mut [f32],
    w_dec: &mut [f32],
    (d, w): (usize, usize),
) {
    for (i, row) in w_dec.chunks_exact_mut(d).enumerate() {
        let norm = row
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-8) as f32;
        row.iter_mut().for_each(|v| *v /= norm);
        b_enc[i] *= norm;
        // `W_enc` is stored `[d, w]`: latent i is column i.
        w_enc_t
            .iter_mut()
            .skip(i)
            .step_by(w)
            .for_each(|v| *v *= norm);
    }
}

/// Tensor `name` of `shape` from the read file, or an error naming the file, the tensor and
/// the config's sizes.
pub(crate) fn take_tensor(
    t: &mut std::collections::HashMap<String, tensors::Loaded>,
    file: &Path,
    name: &str,
    shape: &[usize],
    (d, w): (usize, usize),
) -> Result<Vec<f32>, ConceptError> {
    let tensor = t.remove(name).ok_or_else(|| {
        ConceptError::Invalid(format!("{}: tensor `{name}` is missing", file.display()))
    })?;
    // A scalar may be stored as shape [] or [1].
    let scalar = shape.is_empty() && tensor.values.len() == 1;
    if tensor.shape != shape && !scalar {
        return Err(ConceptError::Invalid(format!(
            "{}: tensor `{name}` has shape {:?}, expected {shape:?} (d_in {d}, d_sae {w} in the config)",
            file.display(),
            tensor.shape
        )));
    }
    Ok(tensor.values)
}

/// `rows × cols` row-major → `cols × rows` row-major.
pub(crate) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = m[i * cols + j];
        }
    }
    out
}

/// For SAEs whose encoder reads raw `x` (`apply_b_dec_to_input = false`, Gemma Scope): folds
/// `W_enc b_dec` into the encoder (and gated magnitude) biases, so the centred form
/// `W_enc (x − b_dec) + b_enc'` used here equals the file's `W_enc x + b_enc`.
pub(crate) fn fold_uncentred_input(sae: &mut Sae) {
    let d = sae.d_in;
    for j in 0..sae.width {
        let shift = super::dot(&sae.w_enc[j * d..(j + 1) * d], &sae.b_dec);
        sae.b_enc[j] += shift;
        if let Some(g) = &mut sae.gate {
            g.b_mag[j] += g.r_mag[j].exp() * shift;
        }
    }
}
