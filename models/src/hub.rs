//! Model resolution: `ORG/NAME[@REVISION]` through the `hf-hub` crate against the standard
//! Hugging Face cache (`HF_HOME`, default `~/.cache/huggingface`), or a local HF-layout folder.
//!
//! Honours `HF_HUB_OFFLINE=1` (cache only), `HF_TOKEN` and `HF_ENDPOINT`. The resolved commit sha
//! is read from the snapshot folder the files come from, so the manifest pins what was used.

use crate::{ModelError, Result};
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// `file`: one weights file of the repo to use (a `.gguf`), from `ORG/NAME[@REV]:FILE`.
    Hub {
        id: String,
        revision: String,
        file: Option<String>,
    },
    Local(PathBuf),
}

impl FromStr for ModelSpec {
    type Err = ModelError;

    fn from_str(spec: &str) -> Result<Self> {
        let bad = |message: &str| ModelError::BadSpec {
            spec: spec.to_owned(),
            message: message.to_owned(),
        };
        let looks_like_path = spec.starts_with('.')
            || spec.starts_with('/')
            || spec.starts_with('~')
            || Path::new(spec).is_dir()
            // `models/x.gguf`: an existing file is what the user meant, not a Hub id.
            || Path::new(spec).is_file();
        if looks_like_path {
            return Ok(ModelSpec::Local(PathBuf::from(spec)));
        }
        let (spec_id, file) = match spec.rsplit_once(':') {
            Some((head, f)) if f.ends_with(".gguf") && !f.contains('/') => {
                (head, Some(f.to_owned()))
            }
            _ => (spec, None),
        };
        let (id, revision) = match spec_id.split_once('@') {
            Some((id, rev)) if !rev.is_empty() => (id, rev),
            Some(_) => return Err(bad("empty revision after `@`")),
            None => (spec_id, "main"),
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let ok = match id.split_once('/') {
            Some((org, name)) => valid(org) && valid(name),
            None => valid(id),
        };
        if !ok {
            return Err(bad(
                "expected ORG/NAME[@REVISION][:FILE.gguf] (e.g. sentence-transformers/all-MiniLM-L6-v2) or a folder or .gguf path starting with ./ or /",
            ));
        }
        Ok(ModelSpec::Hub {
            id: id.to_owned(),
            revision: revision.to_owned(),
            file,
        })
    }
}

/// A model whose files are on local disk.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// `ORG/NAME`, or the folder path for local models.
    pub id: String,
    /// The commit sha of the cache snapshot, or `local`.
    pub revision: String,
    /// `hub` or `local`.
    pub source: &'static str,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: PathBuf,
    /// A PEFT LoRA adapter's `adapter_config.json` (its weights beside it) to merge into the
    /// base model the other paths name; `id`, `revision` and `source` are then the adapter's.
    pub adapter: Option<PathBuf>,
}

const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
const WEIGHTS: &str = "model.safetensors";
/// The shard index of a checkpoint saved in several safetensors files.
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
/// The shard index of a PyTorch pickle checkpoint saved in several files.
const PICKLE_INDEX: &str = "pytorch_model.bin.index.json";
/// Weight files tried after `model.safetensors`: PyTorch pickles, one file or shards, which
/// loaders read only with `--allow-pickle`.
const PICKLE_WEIGHTS: &[&str] = &["pytorch_model.bin", PICKLE_INDEX];

/// The weights in `dir`: `model.safetensors`, the shard index `model.safetensors.index.json`,
/// `pytorch_model.bin`, its shard index, or the folder's single `.pth`/`.pt`.
fn local_weights(dir: &Path) -> Option<PathBuf> {
    if let Some(p) = [WEIGHTS, WEIGHTS_INDEX]
        .into_iter()
        .chain(PICKLE_WEIGHTS.iter().copied())
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
    {
        return Some(p);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pth" || e == "pt"))
        .collect();
    found.sort();
    (found.len() == 1).then(|| found.remove(0))
}

/// Resolves a spec to local files, downloading through hf-hub only when allowed and needed.
pub fn resolve(spec: &ModelSpec) -> Result<ResolvedModel> {
    match spec {
        ModelSpec::Local(dir) => resolve_local(dir),
        ModelSpec::Hub { id, revision, file } => resolve_hub(id, revision, file.as_deref()),
    }
}

/// A GGUF file stands for config, tokenizer and weights at once.
fn gguf_model(id: String, revision: String, source: &'static str, file: PathBuf) -> ResolvedModel {
    ResolvedModel {
        id,
        revision,
        source,
        config: file.clone(),
        tokenizer: file.clone(),
        weights: file,
        adapter: None,
    }
}

/// The single `.gguf` file in `dir`, if there is exactly one — or the first part of the one
/// split set (`NAME-00001-of-0000N.gguf` …) the folder holds.
fn single_gguf(dir: &Path) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    let parts: Vec<_> = found
        .iter()
        .filter_map(|p| crate::gguf_split::split_name(p))
        .collect();
    if found.len() > 1 && parts.len() == found.len() {
        let (prefix, _, count) = &parts[0];
        if parts.iter().all(|(p, _, n)| p == prefix && n == count) {
            return Ok(Some(found.swap_remove(0)));
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(ModelError::BadSpec {
            spec: dir.display().to_string(),
            message: format!(
                "holds several GGUF files ({}); name one",
                found
                    .iter()
                    .filter_map(|p| p.file_name()?.to_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// A LoRA adapter in `dir` on the base model its config names (a path — absolute, or relative
/// to the adapter — else a Hub id), with the adapter's identity; its own tokenizer, when it
/// ships one, over the base's.
fn resolve_adapter(
    dir: &Path,
    id: String,
    revision: String,
    source: &'static str,
) -> Result<ResolvedModel> {
    let config_path = dir.join(crate::lora::ADAPTER_CONFIG);
    if crate::lora::weights_file(&config_path).is_none() {
        return Err(ModelError::Config {
            path: dir.join(crate::lora::ADAPTER_WEIGHTS),
            message: "missing: a LoRA adapter folder needs adapter_config.json and adapter_model.safetensors (or an older adapter_model.bin)".into(),
        });
    }
    let config = crate::lora::LoraConfig::read(&config_path)?;
    let named = Path::new(&config.base);
    let local = if named.is_absolute() {
        Some(named.to_path_buf())
    } else {
        Some(dir.join(named)).filter(|p| p.exists())
    };
    let base_spec = match local {
        Some(path) => ModelSpec::Local(path),
        None => config.base.parse().map_err(|e: ModelError| ModelError::Config {
            path: config_path.clone(),
            message: format!(
                "`base_model_name_or_path` `{}` is neither a path beside the adapter nor a Hub id: {e}",
                config.base
            ),
        })?,
    };
    let base = resolve(&base_spec).map_err(|e| ModelError::Config {
        path: config_path.clone(),
        message: format!(
            "its base model `{}` (`base_model_name_or_path`) does not resolve: {e}",
            config.base
        ),
    })?;
    if base.adapter.is_some() {
        return Err(ModelError::Config {
            path: config_path,
            message: format!(
                "the base model `{}` is itself a LoRA adapter; merge it into its own base first (PEFT's `merge_and_unload`)",
                config.base
            ),
        });
    }
    let own_tokenizer = dir.join(TOKENIZER);
    Ok(ResolvedModel {
        id,
        revision,
        source,
        tokenizer: if own_tokenizer.is_file() {
            own_tokenizer
        } else {
            base.tokenizer
        },
        adapter: Some(config_path),
        ..base
    })
}

fn resolve_local(dir: &Path) -> Result<ResolvedModel> {
    if dir.is_dir()
        && dir.join(crate::lora::ADAPTER_CONFIG).is_file()
        && !dir.join(CONFIG).is_file()
    {
        return resolve_adapter(dir, dir.display().to_string(), "local".into(), "local");
    }
    if dir.is_file() && dir.extension().is_some_and(|e| e == "gguf") {
        return Ok(gguf_model(
            dir.display().to_string(),
            "local".into(),
            "local",
            dir.to_path_buf(),
        ));
    }
    if dir.is_dir() && !dir.join(WEIGHTS).is_file() {
        if let Some(file) = single_gguf(dir)? {
            return Ok(gguf_model(
                dir.display().to_string(),
                "local".into(),
                "local",
                file,
            ));
        }
    }
    if !dir.is_dir() {
        return Err(ModelError::BadSpec {
            spec: dir.display().to_string(),
            message: "no such folder".into(),
        });
    }
    let missing = |p: PathBuf| {
        ModelError::Config {
        path: p,
        message: format!(
            "missing; a model folder needs {CONFIG} and {WEIGHTS} (or a PyTorch checkpoint), plus {TOKENIZER} for text models"
        ),
    }
    };
    let config = dir.join(CONFIG);
    if !config.is_file() {
        return Err(missing(config));
    }
    let weights = local_weights(dir).ok_or_else(|| missing(dir.join(WEIGHTS)))?;
    // Vision models have no tokenizer; text loading reports the missing file when it needs it.
    Ok(ResolvedModel {
        id: dir.display().to_string(),
        revision: "local".into(),
        source: "local",
        config,
        tokenizer: dir.join(TOKENIZER),
        weights,
        adapter: None,
    })
}

/// A LoRA adapter repo's `adapter_config.json`, with its weights (and tokenizer, when it has
/// one) fetched beside it; `None` when the repo has no adapter.
fn adapter_repo(fetch: &mut impl FnMut(&str) -> Result<PathBuf>) -> Option<PathBuf> {
    let config = fetch(crate::lora::ADAPTER_CONFIG).ok()?;
    fetch(crate::lora::ADAPTER_WEIGHTS)
        .or_else(|_| fetch(crate::lora::ADAPTER_WEIGHTS_PICKLE))
        .ok()?;
    let _ = fetch(TOKENIZER);
    Some(config)
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

fn resolve_hub(id: &str, revision: &str, file: Option<&str>) -> Result<ResolvedModel> {
    let cache = Cache::from_env();
    let repo = Repo::with_revision(id.to_owned(), RepoType::Model, revision.to_owned());
    let mut api: Option<hf_hub::api::sync::ApiRepo> = None;
    let mut fetch = |name: &str| -> Result<PathBuf> {
        if let Some(p) = cached_file(&cache, &repo, revision, name) {
            return Ok(p);
        }
        let not_found = |why: String| ModelError::NotFound {
            id: id.to_owned(),
            revision: revision.to_owned(),
            cache: cache.path().clone(),
            why,
        };
        if offline() {
            return Err(not_found(format!(
                "HF_HUB_OFFLINE=1 forbids downloading `{name}`"
            )));
        }
        if api.is_none() {
            let mut builder = hf_hub::api::sync::ApiBuilder::from_env().with_progress(false);
            if let Ok(token) = std::env::var("HF_TOKEN") {
                builder = builder.with_token(Some(token));
            }
            let built = builder
                .build()
                .map_err(|e| not_found(format!("the Hub client could not start: {e}")))?;
            api = Some(built.repo(repo.clone()));
        }
        let handle = api.as_ref().expect("api built above");
        handle
            .get(name)
            .map_err(|e| not_found(format!("downloading `{name}` from the Hub failed: {e}")))
    };
    if let Some(file) = file {
        let path = fetch(file)?;
        // A split GGUF named by its first part: its other parts come into the same snapshot.
        if let Some((prefix, 1, count)) = crate::gguf_split::split_name(Path::new(file)) {
            for k in 2..=count {
                fetch(&crate::gguf_split::part_name(&prefix, k, count))?;
            }
        }
        let rev = snapshot_revision(&path).unwrap_or_else(|| revision.to_owned());
        return Ok(gguf_model(id.to_owned(), rev, "hub", path));
    }
    let config = match fetch(CONFIG) {
        Ok(config) => config,
        Err(e) => {
            // No config.json but an adapter config: a LoRA adapter repo, on the base it names.
            if let Some(adapter) = adapter_repo(&mut fetch) {
                let rev = snapshot_revision(&adapter).unwrap_or_else(|| revision.to_owned());
                let dir = adapter.parent().unwrap_or(Path::new("."));
                return resolve_adapter(dir, id.to_owned(), rev, "hub");
            }
            // No config.json: a GGUF-only repo, if its snapshot holds exactly one GGUF file.
            return match cached_snapshot(&cache, &repo, revision).map(|d| single_gguf(&d)) {
                Some(Ok(Some(path))) => {
                    let rev = snapshot_revision(&path).unwrap_or_else(|| revision.to_owned());
                    Ok(gguf_model(id.to_owned(), rev, "hub", path))
                }
                Some(Err(several)) => Err(several),
                _ => Err(e),
            };
        }
    };
    // Vision repos have no tokenizer (text loading names the missing file when it needs it);
    // vision checkpoints may be PyTorch pickles rather than safetensors.
    // Without tokenizer.json, a slow tokenizer's files stand in (BERT's vocab.txt, GPT-2's
    // vocab.json + merges.txt; `tokenizer::TextTokenizer::load` builds the tokenizer from them).
    let tokenizer = fetch(TOKENIZER).unwrap_or_else(|_| {
        for file in [
            "vocab.txt",
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
        ] {
            let _ = fetch(file);
        }
        config.with_file_name(TOKENIZER)
    });
    let weights = match fetch(WEIGHTS) {
        Ok(w) => w,
        // Sharded checkpoints (safetensors, else PyTorch pickles): the index, then every shard
        // it lists (downloaded if need be); a shard that cannot be had is named with a tensor
        // it holds. Then a single pickle, then whatever the cached snapshot holds.
        Err(e) => {
            let index = [WEIGHTS_INDEX, PICKLE_INDEX]
                .into_iter()
                .find_map(|name| fetch(name).ok());
            match index {
                Some(index) => {
                    for (shard, tensor) in crate::safetensors_file::shards(&index)? {
                        let name = shard.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        fetch(name).map_err(|e| ModelError::Weights {
                        path: index.clone(),
                        message: format!("lists shard `{name}` (holding `{tensor}`), which cannot be had: {e}"),
                    })?;
                    }
                    index
                }
                None => match fetch(PICKLE_WEIGHTS[0])
                    .ok()
                    .or_else(|| config.parent().and_then(local_weights))
                {
                    Some(w) => w,
                    None => return Err(e),
                },
            }
        }
    };
    let resolved_revision = snapshot_revision(&config).unwrap_or_else(|| revision.to_owned());
    Ok(ResolvedModel {
        id: id.to_owned(),
        revision: resolved_revision,
        source: "hub",
        config,
        tokenizer,
        weights,
        adapter: None,
    })
}

/// A file from the cache: via `refs/<revision>`, or directly from `snapshots/<sha>` when the
/// revision is a commit sha that no ref names.
fn cached_file(cache: &Cache, repo: &Repo, revision: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = cache.repo(repo.clone()).get(name) {
        return Some(p);
    }
    let direct = cache
        .path()
        .join(repo.folder_name())
        .join("snapshots")
        .join(revision)
        .join(name);
    direct.is_file().then_some(direct)
}

/// The cached snapshot folder of `revision` (via its ref, or a commit sha).
fn cached_snapshot(cache: &Cache, repo: &Repo, revision: &str) -> Option<PathBuf> {
    let root = cache.path().join(repo.folder_name());
    let sha = std::fs::read_to_string(root.join("refs").join(revision))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| revision.to_owned());
    let dir = root.join("snapshots").join(sha);
    dir.is_dir().then_some(dir)
}

/// The `<sha>` in `…/snapshots/<sha>/<file>`.
fn snapshot_revision(file: &Path) -> Option<String> {
    let snapshot = file.parent()?;
    let parent = snapshot.parent()?;
    (parent.file_name()? == "snapshots")
        .then(|| snapshot.file_name()?.to_str().map(str::to_owned))?
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
