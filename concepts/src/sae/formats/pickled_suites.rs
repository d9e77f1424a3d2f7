//! Suites that ship one pickled state dict per SAE, configured by nothing but their Hub repo and
//! file names (as SAELens's `get_goodfire_huggingface_loader` and
//! `qwen_scope_sae_huggingface_loader` read them):
//!
//! - Goodfire (`Goodfire/Llama-3.1-8B-Instruct-SAE-l19` → `Llama-3.1-8B-Instruct-SAE-l19.pth`,
//!   `Goodfire/Llama-3.3-70B-Instruct-SAE-l50` → `….pt`): nn.Linear layouts
//!   `encoder_linear.weight [m, d]`, `encoder_linear.bias [m]`, `decoder_linear.weight [d, m]`,
//!   `decoder_linear.bias [d]`; ReLU of `W_enc x + b_enc` on the uncentred input; the hook
//!   `blocks.<l>.hook_resid_post` from `-SAE-l<l>`.
//! - Qwen-Scope (`Qwen/SAE-Res-<model>-W<N>K-L0_<k>` → `layer<n>.sae.pt`): `W_enc [m, d]`,
//!   `W_dec [d, m]`, `b_enc`, `b_dec`; TopK (k from the repo name's `L0_<k>`) of `W_enc x +
//!   b_enc` on the uncentred input; the hook `blocks.<n>.hook_resid_post`.
//!
//! Both are pickles: read only on request, through the allow-listed unpickler.

use super::super::saelens::{fold_uncentred_input, take_tensor, transpose, LoadedSae};
use super::super::tensors::Loaded;
use super::super::{Architecture, Sae};
use super::Format;
use crate::ConceptError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The format a file's name says it is (`layer3.sae.pt`, `…-SAE-l19.pth`).
pub(crate) fn detect_file(name: &str) -> Option<Format> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(n) = name
        .strip_prefix("layer")
        .and_then(|r| r.strip_suffix(".sae.pt"))
    {
        return digits(n).then_some(Format::QwenScope);
    }
    let stem = name
        .strip_suffix(".pth")
        .or_else(|| name.strip_suffix(".pt"))?;
    let (_, layer) = stem.rsplit_once("-SAE-l")?;
    digits(layer).then_some(Format::Goodfire)
}

/// The SAE file: `path` itself, or the one file of a suite's naming in the folder `path`.
pub(super) fn suite_files(dir: &Path) -> Vec<(PathBuf, Format)> {
    let mut found: Vec<(PathBuf, Format)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    Some((e.path(), detect_file(&name)?))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn file_of(path: &Path) -> Result<PathBuf, ConceptError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    match suite_files(path).as_slice() {
        [(one, _)] => Ok(one.clone()),
        _ => Err(ConceptError::Invalid(format!(
            "{}: not exactly one Goodfire or Qwen-Scope file in the folder; name the file",
            path.display()
        ))),
    }
}

/// `[m, d]` of the encoder matrix `name`, before anything is taken.
fn widths(
    t: &HashMap<String, Loaded>,
    file: &Path,
    name: &str,
) -> Result<(usize, usize), ConceptError> {
    match t.get(name).map(|l| l.shape.as_slice()) {
        Some(&[m, d]) => Ok((m, d)),
        Some(shape) => Err(ConceptError::Invalid(format!(
            "{}: tensor `{name}` has shape {shape:?}, expected [d_sae, d_in]",
            file.display()
        ))),
        None => Err(ConceptError::Invalid(format!(
            "{}: tensor `{name}` is missing",
            file.display()
        ))),
    }
}

/// A number right after `key` in the file's name.
fn layer_in(name: &str, key: &str) -> Option<usize> {
    super::number_after(name, key)
}

pub(super) fn load_goodfire(path: &Path, allow_pickle: bool) -> Result<LoadedSae, ConceptError> {
    let file = file_of(path)?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut t = super::read_pickle(&file, allow_pickle, "Goodfire")?;
    let (m, d) = widths(&t, &file, "encoder_linear.weight")?;
    let mut take = |n: &str, shape: &[usize]| take_tensor(&mut t, &file, n, shape, (d, m));
    let mut out = Sae {
        w_enc: take("encoder_linear.weight", &[m, d])?,
        b_enc: take("encoder_linear.bias", &[m])?,
        w_dec: transpose(&take("decoder_linear.weight", &[d, m])?, d, m),
        b_dec: take("decoder_linear.bias", &[d])?,
        architecture: Architecture::Relu {
            l1_coefficient: 0.0,
        },
        ..super::unfilled(d, m)
    };
    fold_uncentred_input(&mut out);
    out.validate(&file.display().to_string())?;
    let model = name
        .rsplit_once("-SAE-l")
        .map(|(m, _)| format!("meta-llama/{m}"));
    Ok(LoadedSae {
        sae: out,
        hook_name: layer_in(name, "-SAE-l").map(|l| format!("blocks.{l}.hook_resid_post")),
        model_name: model,
        fingerprint: None,
        format: Format::Goodfire.name(),
    })
}

/// `(model, k)` from the Qwen-Scope repo name in a folder above `file`
/// (`SAE-Res-Qwen3-1.7B-Base-W32K-L0_50`, or the Hub cache's `models--Qwen--SAE-Res-…`).
pub(super) fn qwen_repo(file: &Path) -> Option<(String, usize)> {
    file.ancestors().skip(1).find_map(|dir| {
        let name = dir.file_name()?.to_str()?;
        let repo = &name[name.find("SAE-Res-")?..];
        let k = super::number_after(repo, "-L0_")?;
        let model = repo.strip_prefix("SAE-Res-")?;
        let model = &model[..model.rfind("-W")?];
        Some((format!("Qwen/{model}"), k))
    })
}

pub(super) fn load_qwen_scope(path: &Path, allow_pickle: bool) -> Result<LoadedSae, ConceptError> {
    let file = file_of(path)?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let (model, k) = qwen_repo(&file).ok_or_else(|| {
        ConceptError::Invalid(format!(
            "{}: a Qwen-Scope SAE's k is in its Hub repo's name (Qwen/SAE-Res-<model>-W<N>K-L0_<k>), \
             and no folder above the file is named so; keep it in its Hub cache folder or in a \
             folder named after the repo",
            file.display()
        ))
    })?;
    let mut t = super::read_pickle(&file, allow_pickle, "Qwen-Scope")?;
    let (m, d) = widths(&t, &file, "W_enc")?;
    if k == 0 || k > m {
        return Err(ConceptError::Invalid(format!(
            "{}: k = {k} from the repo name, but the SAE has {m} latents",
            file.display()
        )));
    }
    let mut take = |n: &str, shape: &[usize]| take_tensor(&mut t, &file, n, shape, (d, m));
    let mut out = Sae {
        w_enc: take("W_enc", &[m, d])?,
        b_enc: take("b_enc", &[m])?,
        w_dec: transpose(&take("W_dec", &[d, m])?, d, m),
        b_dec: take("b_dec", &[d])?,
        architecture: Architecture::TopK { k },
        ..super::unfilled(d, m)
    };
    fold_uncentred_input(&mut out);
    out.validate(&file.display().to_string())?;
    Ok(LoadedSae {
        sae: out,
        hook_name: layer_in(name, "layer").map(|l| format!("blocks.{l}.hook_resid_post")),
        model_name: Some(model),
        fingerprint: None,
        format: Format::QwenScope.name(),
    })
}

/// What a suite's names say: architecture, hook, model and k.
pub(super) type NameFacts = (String, Option<String>, Option<String>, Option<usize>);

/// What the names alone say (for `sae inspect`, which reads no pickle).
pub(super) fn name_facts(path: &Path, format: Format) -> Result<NameFacts, ConceptError> {
    let file = file_of(path)?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let hook = |key: &str| layer_in(name, key).map(|l| format!("blocks.{l}.hook_resid_post"));
    Ok(match format {
        Format::QwenScope => {
            let repo = qwen_repo(&file);
            (
                "topk".into(),
                hook("layer"),
                repo.as_ref().map(|r| r.0.clone()),
                repo.map(|r| r.1),
            )
        }
        _ => (
            "standard".into(),
            hook("-SAE-l"),
            name.rsplit_once("-SAE-l")
                .map(|(m, _)| format!("meta-llama/{m}")),
            None,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_the_suite() {
        assert_eq!(detect_file("layer12.sae.pt"), Some(Format::QwenScope));
        assert_eq!(
            detect_file("Llama-3.1-8B-Instruct-SAE-l19.pth"),
            Some(Format::Goodfire)
        );
        assert_eq!(
            detect_file("Llama-3.3-70B-Instruct-SAE-l50.pt"),
            Some(Format::Goodfire)
        );
        assert_eq!(detect_file("layerx.sae.pt"), None);
        assert_eq!(detect_file("ae.pt"), None);
        let f = Path::new(
            "/c/models--Qwen--SAE-Res-Qwen3-1.7B-Base-W32K-L0_50/snapshots/ab/layer3.sae.pt",
        );
        assert_eq!(qwen_repo(f), Some(("Qwen/Qwen3-1.7B-Base".into(), 50)));
        assert_eq!(qwen_repo(Path::new("/tmp/x/layer3.sae.pt")), None);
    }
}
