//! Transcoders on disk, in the layouts the tools that use them open:
//!
//! - SAELens (`saelens/`): `cfg.json` with `architecture` `transcoder`, `skip_transcoder`,
//!   `jumprelu_transcoder` or `jumprelu_skip_transcoder`, `d_out`, `apply_b_dec_to_input =
//!   false`, `metadata.hook_name` (input) and `hook_name_out`; `sae_weights.safetensors` with
//!   `W_enc` `[d, m]`, `b_enc`, `W_dec` `[m, d]`, `b_dec`, `threshold`, `W_skip` `[d_out, d]`
//!   (SAELens `saes/transcoder.py`). SAELens has no TopK transcoder: written for ReLU and
//!   JumpReLU (which a trained BatchTopK becomes) only.
//! - sparsify (`sparsify/`, `SparseCoder.load_from_disk`): `cfg.json` with `transcode = true`,
//!   `skip_connection`, `k`, `num_latents`, `d_in`; `sae.safetensors` with `encoder.weight`
//!   `[m, d]`, `encoder.bias`, `W_dec` `[m, d]`, `b_dec`, `W_skip`. TopK only, as sparsify.
//! - circuit-tracer (`circuit_tracer/layer_<L>.safetensors`, `load_transcoder`): `W_enc` `[m,
//!   d]`, `W_dec` `[m, d]`, `b_enc`, `b_dec`, `activation_function.threshold` (JumpReLU),
//!   `W_skip`; and `config.yaml` naming the hooks the way `load_transcoder_set` wants them. Its
//!   activation for a TopK transcoder is circuit-tracer's `TopK(k)` followed by ReLU (theirs
//!   keeps negative values among the k largest; glassbox's, like sparsify's, does not).
//!
//! Reading takes the SAELens and sparsify layouts (glassbox's own output and the suites').

use super::saelens::{take_tensor, transpose};
use super::tensors;
use super::{Architecture, Sae, Transcoder};
use crate::ConceptError;
use glassbox_data::HookPoint;
use serde_json::{json, Value};
use std::path::Path;

/// Where a transcoder came from and what it maps.
#[derive(Debug, Clone)]
pub struct TranscoderProvenance {
    pub model_name: String,
    pub input: HookPoint,
    pub output: HookPoint,
    /// Extra `metadata` entries (glassbox's training fingerprint and options).
    pub extra: serde_json::Map<String, Value>,
}

/// A transcoder read from disk.
#[derive(Debug, Clone)]
pub struct LoadedTranscoder {
    pub transcoder: Transcoder,
    /// Hook names as the files give them (SAELens's `hook_name`/`hook_name_out`), if any.
    pub input_hook: Option<String>,
    pub output_hook: Option<String>,
    pub model_name: Option<String>,
    pub fingerprint: Option<String>,
    pub format: &'static str,
}

/// Writes every layout that can hold `t` under `dir` (each staged and renamed); returns their
/// folder names.
pub fn save(
    dir: &Path,
    t: &Transcoder,
    p: &TranscoderProvenance,
) -> Result<Vec<&'static str>, ConceptError> {
    t.validate("transcoder to save")?;
    let mut written = Vec::new();
    match t.sae.architecture {
        Architecture::TopK { .. } | Architecture::BatchTopK { .. } => {
            staged(&dir.join("sparsify"), |tmp| save_sparsify(tmp, t, p))?;
            written.push("sparsify");
        }
        Architecture::Relu { .. } | Architecture::JumpRelu => {
            staged(&dir.join("saelens"), |tmp| save_saelens(tmp, t, p))?;
            written.push("saelens");
        }
        Architecture::Gated => unreachable!("validate refuses gated transcoders"),
    }
    staged(&dir.join("circuit_tracer"), |tmp| {
        save_circuit_tracer(tmp, t, p)
    })?;
    written.push("circuit_tracer");
    Ok(written)
}

/// Writes a folder through `<folder>.tmp`, so a failure leaves the previous one whole.
fn staged(
    folder: &Path,
    write: impl FnOnce(&Path) -> Result<(), ConceptError>,
) -> Result<(), ConceptError> {
    let io = |e: std::io::Error, p: &Path| ConceptError::Invalid(format!("{}: {e}", p.display()));
    let tmp = folder.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(e, &tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(e, &tmp))?;
    write(&tmp)?;
    if folder.exists() {
        std::fs::remove_dir_all(folder).map_err(|e| io(e, folder))?;
    }
    std::fs::rename(&tmp, folder).map_err(|e| io(e, folder))
}

fn write_json(path: &Path, value: &Value) -> Result<(), ConceptError> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    glassbox_data::atomic::write_bytes(path, text.as_bytes()).map_err(ConceptError::from)
}

fn save_saelens(tmp: &Path, t: &Transcoder, p: &TranscoderProvenance) -> Result<(), ConceptError> {
    let (d, m) = (t.sae.d_in, t.sae.width);
    let w_enc = transpose(&t.sae.w_enc, m, d);
    let b_enc = t.input_bias();
    let mut named: Vec<(&str, Vec<usize>, &[f32])> = vec![
        ("W_enc", vec![d, m], &w_enc),
        ("b_enc", vec![m], &b_enc),
        ("W_dec", vec![m, d], &t.sae.w_dec),
        ("b_dec", vec![d], &t.sae.b_dec),
    ];
    let jump = t.sae.architecture == Architecture::JumpRelu;
    if jump {
        named.push(("threshold", vec![m], &t.sae.threshold));
    }
    if let Some(w) = &t.w_skip {
        named.push(("W_skip", vec![d, d], w));
    }
    tensors::write(
        &tmp.join("sae_weights.safetensors"),
        &named,
        Default::default(),
    )?;
    let architecture = match (jump, t.w_skip.is_some()) {
        (false, false) => "transcoder",
        (false, true) => "skip_transcoder",
        (true, false) => "jumprelu_transcoder",
        (true, true) => "jumprelu_skip_transcoder",
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert("model_name".into(), json!(p.model_name));
    metadata.insert("hook_name".into(), json!(p.input.to_string()));
    metadata.insert("hook_name_out".into(), json!(p.output.to_string()));
    metadata.insert("glassbox_version".into(), json!(env!("CARGO_PKG_VERSION")));
    metadata.extend(p.extra.clone());
    let cfg = json!({
        "architecture": architecture,
        "d_in": d,
        "d_sae": m,
        "d_out": d,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": false,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    });
    write_json(&tmp.join("cfg.json"), &cfg)
}

fn save_sparsify(tmp: &Path, t: &Transcoder, p: &TranscoderProvenance) -> Result<(), ConceptError> {
    let (d, m) = (t.sae.d_in, t.sae.width);
    let k = match t.sae.architecture {
        Architecture::TopK { k } | Architecture::BatchTopK { k } => k,
        _ => unreachable!("sparsify layout is for TopK transcoders"),
    };
    let b_enc = t.input_bias();
    let mut named: Vec<(&str, Vec<usize>, &[f32])> = vec![
        ("encoder.weight", vec![m, d], &t.sae.w_enc),
        ("encoder.bias", vec![m], &b_enc),
        ("W_dec", vec![m, d], &t.sae.w_dec),
        ("b_dec", vec![d], &t.sae.b_dec),
    ];
    if let Some(w) = &t.w_skip {
        named.push(("W_skip", vec![d, d], w));
    }
    tensors::write(&tmp.join("sae.safetensors"), &named, Default::default())?;
    // sparsify drops fields it does not know, so glassbox's provenance travels in the same file.
    let mut cfg = json!({
        "activation": "topk",
        "expansion_factor": (m / d).max(1),
        "normalize_decoder": true,
        "num_latents": m,
        "k": k,
        "multi_topk": false,
        "skip_connection": t.w_skip.is_some(),
        "transcode": true,
        "d_in": d,
        "model_name": p.model_name,
        "hook_name": p.input.to_string(),
        "hook_name_out": p.output.to_string(),
    });
    for (key, value) in &p.extra {
        cfg[key] = value.clone();
    }
    write_json(&tmp.join("cfg.json"), &cfg)
}

fn save_circuit_tracer(
    tmp: &Path,
    t: &Transcoder,
    p: &TranscoderProvenance,
) -> Result<(), ConceptError> {
    let (d, m) = (t.sae.d_in, t.sae.width);
    let layer = p.output.layer().ok_or_else(|| {
        ConceptError::Invalid(format!(
            "transcoder output `{}` is not in a numbered block; circuit-tracer files are per layer",
            p.output
        ))
    })?;
    let b_enc = t.input_bias();
    let mut named: Vec<(&str, Vec<usize>, &[f32])> = vec![
        ("W_enc", vec![m, d], &t.sae.w_enc),
        ("b_enc", vec![m], &b_enc),
        ("W_dec", vec![m, d], &t.sae.w_dec),
        ("b_dec", vec![d], &t.sae.b_dec),
    ];
    if t.sae.architecture == Architecture::JumpRelu {
        named.push(("activation_function.threshold", vec![m], &t.sae.threshold));
    }
    if let Some(w) = &t.w_skip {
        named.push(("W_skip", vec![d, d], w));
    }
    let file = format!("layer_{layer}.safetensors");
    tensors::write(&tmp.join(&file), &named, Default::default())?;
    // circuit-tracer names hooks inside a block (TransformerLens names without `blocks.L.`).
    let local = |h: HookPoint| {
        let name = h.to_string();
        name.split_once(&format!("blocks.{layer}."))
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or(name)
    };
    let activation = match t.sae.architecture {
        // circuit-tracer's own TopK keeps negative values among the k largest; glassbox's
        // zeroes them, so the activation is its TopK followed by ReLU.
        Architecture::TopK { k } | Architecture::BatchTopK { k } => {
            format!("topk_relu  # k = {k}: TopK(k) then ReLU")
        }
        Architecture::JumpRelu => "jumprelu".into(),
        _ => "relu".into(),
    };
    let yaml = format!(
        "# Written by glassbox {}: circuit-tracer's load_transcoder_set reads this folder.\n\
         model_name: \"{}\"\nfeature_input_hook: \"{}\"\nfeature_output_hook: \"{}\"\n\
         activation: {activation}\ntranscoders:\n  - id: \"layer_{layer}\"\n    layer: {layer}\n\
         \x20   filepath: \"{file}\"\n",
        env!("CARGO_PKG_VERSION"),
        p.model_name.replace('"', "'"),
        local(p.input),
        local(p.output),
    );
    glassbox_data::atomic::write_bytes(&tmp.join("config.yaml"), yaml.as_bytes())
        .map_err(ConceptError::from)
}

/// Reads a transcoder saved by SAELens (its four transcoder architectures) or sparsify
/// (`transcode = true`, with or without `W_skip`) from `dir`.
pub fn load(dir: &Path) -> Result<LoadedTranscoder, ConceptError> {
    let cfg_path = dir.join("cfg.json");
    let bad = |m: String| ConceptError::Invalid(format!("{}: {m}", cfg_path.display()));
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
        bad(format!(
            "cannot read ({e}); a transcoder folder holds SAELens's or sparsify's cfg.json"
        ))
    })?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let int = |k: &str| cfg.get(k).and_then(Value::as_u64).map(|v| v as usize);
    let text_of = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let meta = cfg.get("metadata").unwrap_or(&cfg);
    let architecture = cfg.get("architecture").and_then(Value::as_str);
    let (d, m, format) = if let Some(a) = architecture {
        if !a.ends_with("transcoder") {
            return Err(bad(format!(
                "architecture `{a}` is an SAE, not a transcoder; load it with --load-sae"
            )));
        }
        let d = int("d_in").ok_or_else(|| bad("`d_in` is missing".into()))?;
        let m = int("d_sae").ok_or_else(|| bad("`d_sae` is missing".into()))?;
        if int("d_out").is_some_and(|o| o != d) {
            return Err(bad(format!(
                "d_out {} differs from d_in {d}; glassbox's transcoders map between hooks of one width",
                int("d_out").unwrap_or(0)
            )));
        }
        (d, m, "saelens")
    } else if cfg.get("transcode").and_then(Value::as_bool) == Some(true) {
        let d = int("d_in").ok_or_else(|| bad("`d_in` is missing".into()))?;
        let m = int("num_latents")
            .filter(|&n| n > 0)
            .unwrap_or(d * int("expansion_factor").unwrap_or(32));
        (d, m, "sparsify")
    } else {
        return Err(bad(
            "neither an SAELens transcoder (`architecture` … `transcoder`) nor a sparsify one \
             (`transcode: true`)"
                .into(),
        ));
    };
    let (mut sae, w_skip) = if format == "saelens" {
        read_saelens(dir, architecture.unwrap_or_default(), d, m)?
    } else {
        let k = int("k").ok_or_else(|| bad("`k` is missing".into()))?;
        super::formats::sparsify::read_weights(&dir.join("sae.safetensors"), k, d, m)?
    };
    sae.input_norm = Default::default();
    let transcoder = Transcoder::from_uncentred(sae, w_skip);
    transcoder.validate(&dir.display().to_string())?;
    Ok(LoadedTranscoder {
        transcoder,
        input_hook: text_of(meta.get("hook_name")),
        output_hook: text_of(meta.get("hook_name_out")),
        model_name: text_of(meta.get("model_name")),
        fingerprint: text_of(meta.get("glassbox_fingerprint")),
        format,
    })
}

fn read_saelens(
    dir: &Path,
    architecture: &str,
    d: usize,
    m: usize,
) -> Result<(Sae, Option<Vec<f32>>), ConceptError> {
    let file = dir.join("sae_weights.safetensors");
    let (mut t, _) = tensors::read(&file)?;
    let skip = architecture.contains("skip");
    let jump = architecture.starts_with("jumprelu");
    let mut take = |name: &str, shape: &[usize]| take_tensor(&mut t, &file, name, shape, (d, m));
    let w_enc = transpose(&take("W_enc", &[d, m])?, d, m);
    let mut sae = Sae {
        input_norm: Default::default(),
        d_in: d,
        width: m,
        architecture: if jump {
            Architecture::JumpRelu
        } else {
            Architecture::Relu {
                l1_coefficient: 0.0,
            }
        },
        w_enc,
        b_enc: take("b_enc", &[m])?,
        w_dec: take("W_dec", &[m, d])?,
        b_dec: take("b_dec", &[d])?,
        threshold: Vec::new(),
        gate: None,
    };
    if jump {
        sae.threshold = take("threshold", &[m])?;
    }
    let w_skip = if skip {
        Some(take("W_skip", &[d, d])?)
    } else {
        None
    };
    Ok((sae, w_skip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use glassbox_data::rng::SeededRng;

    fn transcoder(architecture: Architecture, skip: bool) -> Transcoder {
        let (d, m) = (6, 10);
        let mut rng = SeededRng::new(4);
        let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gaussian() as f32).collect() };
        let mut sae = Sae {
            input_norm: Default::default(),
            d_in: d,
            width: m,
            architecture,
            w_enc: r(m * d),
            b_enc: r(m),
            w_dec: r(m * d),
            b_dec: r(d),
            threshold: Vec::new(),
            gate: None,
        };
        if architecture == Architecture::JumpRelu {
            sae.threshold = vec![0.2; m];
        }
        Transcoder::from_uncentred(sae, skip.then(|| r(d * d)))
    }

    fn provenance() -> TranscoderProvenance {
        TranscoderProvenance {
            model_name: "tiny".into(),
            input: HookPoint::ResidMid(3),
            output: HookPoint::MlpOut(3),
            extra: serde_json::Map::from_iter([("glassbox_fingerprint".into(), json!("abc"))]),
        }
    }

    #[test]
    fn every_layout_reads_back_to_the_same_predictions() {
        let x: Vec<f32> = (0..6 * 4).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
        for (architecture, folder) in [
            (Architecture::TopK { k: 3 }, "sparsify"),
            (Architecture::JumpRelu, "saelens"),
            (
                Architecture::Relu {
                    l1_coefficient: 0.0,
                },
                "saelens",
            ),
        ] {
            for skip in [false, true] {
                let t = transcoder(architecture, skip);
                let dir = tempfile::tempdir().unwrap();
                let written = save(dir.path(), &t, &provenance()).unwrap();
                assert_eq!(written, vec![folder, "circuit_tracer"]);
                let back = load(&dir.path().join(folder)).unwrap();
                assert_eq!(back.input_hook.as_deref(), Some("blocks.3.hook_resid_mid"));
                assert_eq!(back.output_hook.as_deref(), Some("blocks.3.hook_mlp_out"));
                assert_eq!(back.fingerprint.as_deref(), Some("abc"));
                assert_eq!(back.transcoder.w_skip.is_some(), skip);
                let (a, b) = (t.predict(&x).unwrap(), back.transcoder.predict(&x).unwrap());
                for (a, b) in a.iter().zip(&b) {
                    assert!((a - b).abs() < 1e-5, "{folder} skip {skip}: {a} vs {b}");
                }
                let ct = dir.path().join("circuit_tracer");
                assert!(ct.join("layer_3.safetensors").exists());
                let yaml = std::fs::read_to_string(ct.join("config.yaml")).unwrap();
                assert!(
                    yaml.contains("feature_input_hook: \"hook_resid_mid\""),
                    "{yaml}"
                );
            }
        }
    }

    #[test]
    fn an_sae_folder_is_not_a_transcoder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cfg.json"),
            r#"{"architecture": "topk", "d_in": 4, "d_sae": 8, "k": 2}"#,
        )
        .unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("an SAE, not a transcoder") && e.contains("--load-sae"),
            "{e}"
        );
    }
}
