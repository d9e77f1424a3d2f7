//! Gemma Scope (Lieberum et al. 2024; `google/gemma-scope-*`): `params.npz` with `W_enc`
//! `[d, m]`, `W_dec` `[m, d]`, `b_enc`, `b_dec`, `threshold` — JumpReLU on `x W_enc + b_enc`
//! (no `b_dec` subtraction on the input). The hook and model come from the path as the Hub
//! lays it out (`gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71`), as SAELens's
//! `get_gemma_2_config_from_hf` reads them; embedding SAEs are rescaled by √d as there.
//!
//! Gemma Scope 2 (`google/gemma-scope-2-*`): `params.safetensors` with lower-case `w_enc`,
//! `w_dec`, `b_enc`, `b_dec`, `threshold`, and an optional `config.json` naming the HF module
//! the SAE reads (`hf_hook_point_in`). Transcoders (an output hook other than the input) are
//! refused by name: glassbox splices SAEs that reconstruct their own input.

use super::super::saelens::{fold_uncentred_input, transpose, LoadedSae};
use super::super::{Architecture, Sae};
use super::{hook_from_module_path, npz, number_after};
use crate::ConceptError;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Arrays by name with shape, whatever file they came from.
type Arrays = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn bad(path: &Path, m: impl std::fmt::Display) -> ConceptError {
    ConceptError::Invalid(format!("{}: {m}", path.display()))
}

/// A JumpReLU SAE from `W_enc [d, m]`, `W_dec [m, d]`, `b_enc`, `b_dec`, `threshold` named as
/// `names` says, its encoder reading raw `x`.
fn jumprelu(file: &Path, mut a: Arrays, names: [&str; 5]) -> Result<Sae, ConceptError> {
    let [enc, dec, be, bd, th] = names;
    let mut take = |name: &str| {
        a.remove(name)
            .ok_or_else(|| bad(file, format!("array `{name}` is missing")))
    };
    let (enc_shape, w_enc) = take(enc)?;
    let [d, m] = enc_shape[..] else {
        return Err(bad(
            file,
            format!("`{enc}` has shape {enc_shape:?}, expected [d_in, d_sae]"),
        ));
    };
    let mut checked = |name: &str, want: &[usize]| -> Result<Vec<f32>, ConceptError> {
        let (shape, values) = take(name)?;
        if shape != want {
            return Err(bad(
                file,
                format!(
                    "`{name}` has shape {shape:?}, expected {want:?} (from `{enc}` {enc_shape:?})"
                ),
            ));
        }
        Ok(values)
    };
    let w_dec = checked(dec, &[m, d])?;
    let b_enc = checked(be, &[m])?;
    let b_dec = checked(bd, &[d])?;
    let threshold = checked(th, &[m])?;
    let mut sae = Sae {
        input_norm: Default::default(),
        d_in: d,
        width: m,
        architecture: Architecture::JumpRelu,
        w_enc: transpose(&w_enc, d, m),
        b_enc,
        w_dec,
        b_dec,
        threshold,
        gate: None,
    };
    fold_uncentred_input(&mut sae);
    Ok(sae)
}

/// Gemma Scope's `params.npz`.
pub(super) fn load_npz(dir: &Path) -> Result<LoadedSae, ConceptError> {
    let file = dir.join("params.npz");
    let arrays: Arrays = npz::read(&file)?
        .into_iter()
        .map(|(k, a)| (k, (a.shape, a.values)))
        .collect();
    let mut sae = jumprelu(
        &file,
        arrays,
        ["W_enc", "W_dec", "b_enc", "b_dec", "threshold"],
    )?;
    let path = dir.to_string_lossy().replace('\\', "/");
    if path.contains("embedding") {
        // Gemma Scope's embedding SAEs were trained on embeddings before Gemma's √d scaling.
        let s = (sae.d_in as f32).sqrt();
        sae.fold_input_scale(1.0 / s);
    }
    sae.validate(&file.display().to_string())?;
    Ok(LoadedSae {
        sae,
        hook_name: gemma_scope_hook(&path),
        model_name: gemma_scope_model(&path),
        fingerprint: None,
        format: "gemma_scope",
    })
}

/// The hook a Gemma Scope path names: `…-res/layer_N` → `blocks.N.hook_resid_post`, `-mlp` →
/// `hook_mlp_out`, `-att` → `attn.hook_z`, `embedding` → `hook_embed`.
fn gemma_scope_hook(path: &str) -> Option<String> {
    if path.contains("embedding") {
        return Some("hook_embed".into());
    }
    let layer = number_after(path, "layer_")?;
    let hook = if path.contains("-res") {
        "hook_resid_post"
    } else if path.contains("-mlp") {
        "hook_mlp_out"
    } else if path.contains("-att") {
        "attn.hook_z"
    } else {
        return None;
    };
    Some(format!("blocks.{layer}.{hook}"))
}

/// `gemma-scope-2b-pt-res` → `gemma-2-2b`; `-it` → `gemma-2-2b-it`.
fn gemma_scope_model(path: &str) -> Option<String> {
    let at = path.find("gemma-scope-")? + "gemma-scope-".len();
    let rest = &path[at..];
    if rest.starts_with("2-") {
        return None; // Gemma Scope 2 is read from params.safetensors
    }
    let size: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let it = rest[size.len()..].starts_with("-it");
    Some(format!("gemma-2-{size}{}", if it { "-it" } else { "" }))
}

/// Hook and model of a Gemma Scope (2) folder, from its path and config only.
pub(super) fn describe(dir: &Path, format: super::Format) -> (Option<String>, Option<String>) {
    let path = dir.to_string_lossy().replace('\\', "/");
    if format == super::Format::GemmaScope {
        return (gemma_scope_hook(&path), gemma_scope_model(&path));
    }
    let cfg: Value = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let text = |k: &str| cfg.get(k).and_then(Value::as_str).map(str::to_owned);
    let hook = text("hf_hook_point_in")
        .and_then(|h| hook_from_module_path(&h))
        .or_else(|| gemma_scope_2_hook(&path));
    (hook, text("model_name"))
}

/// The hook a Gemma Scope 2 folder path names (`resid_post/layer_N…`).
fn gemma_scope_2_hook(path: &str) -> Option<String> {
    let layer = number_after(path, "layer_")?;
    let hook = if path.contains("resid_post") {
        "hook_resid_post"
    } else if path.contains("attn_out") {
        "attn.hook_z"
    } else if path.contains("mlp_out") {
        "hook_mlp_out"
    } else {
        return None;
    };
    Some(format!("blocks.{layer}.{hook}"))
}

/// Gemma Scope 2's `params.safetensors` (+ optional `config.json`).
pub(super) fn load_safetensors(dir: &Path) -> Result<LoadedSae, ConceptError> {
    let file = dir.join("params.safetensors");
    let (tensors, _) = super::super::tensors_metadata(&file)?;
    let arrays: Arrays = tensors
        .into_iter()
        .map(|(k, t)| (k, (t.shape, t.values)))
        .collect();
    let cfg: Value = match std::fs::read_to_string(dir.join("config.json")) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| bad(&dir.join("config.json"), format!("not JSON: {e}")))?,
        Err(_) => Value::Null,
    };
    let text = |k: &str| cfg.get(k).and_then(Value::as_str).map(str::to_owned);
    if let Some(arch) = text("architecture").filter(|a| a != "jump_relu" && a != "jumprelu") {
        return Err(bad(
            dir,
            format!("architecture `{arch}`; Gemma Scope 2 SAEs are jump_relu"),
        ));
    }
    let path = dir.to_string_lossy().replace('\\', "/");
    let transcoder = text("hf_hook_point_out").is_some()
        || path.contains("transcoder")
        || path.contains("clt")
        || arrays.contains_key("affine_skip_connection");
    if transcoder {
        return Err(bad(
            dir,
            "a transcoder (it reads one hook and writes another); glassbox reads SAEs from Gemma Scope 2, transcoders are not supported yet",
        ));
    }
    let sae = jumprelu(
        &file,
        arrays,
        ["w_enc", "w_dec", "b_enc", "b_dec", "threshold"],
    )?;
    sae.validate(&file.display().to_string())?;
    let hook_name = text("hf_hook_point_in")
        .and_then(|h| hook_from_module_path(&h))
        .or_else(|| gemma_scope_2_hook(&path));
    Ok(LoadedSae {
        sae,
        hook_name,
        model_name: text("model_name"),
        fingerprint: None,
        format: "gemma_scope_2",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_and_models_from_hub_paths() {
        let p =
            "/c/models--google--gemma-scope-2b-pt-res/snapshots/x/layer_20/width_16k/average_l0_71";
        assert_eq!(
            gemma_scope_hook(p).as_deref(),
            Some("blocks.20.hook_resid_post")
        );
        assert_eq!(gemma_scope_model(p).as_deref(), Some("gemma-2-2b"));
        let p = "gemma-scope-9b-it-mlp/layer_3/width_131k/average_l0_10";
        assert_eq!(
            gemma_scope_hook(p).as_deref(),
            Some("blocks.3.hook_mlp_out")
        );
        assert_eq!(gemma_scope_model(p).as_deref(), Some("gemma-2-9b-it"));
        assert_eq!(gemma_scope_hook("somewhere/else"), None);
    }
}
