//! `glassbox sae inspect FOLDER`: what an SAE folder holds — format, architecture, widths,
//! hook, base model, k or threshold statistics, tensor names/dtypes/shapes — read from its
//! config and the tensor headers, without reading the weight matrices (a 1M-latent Gemma Scope
//! SAE is gigabytes; its header is a few hundred bytes).

use super::{detect, hook_from_module_path, npz, Format};
use crate::ConceptError;
use serde::Serialize;
use serde_json::Value;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// One stored tensor, by its header.
#[derive(Debug, Clone, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// What an SAE folder says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub format: &'static str,
    pub architecture: String,
    pub d_in: Option<usize>,
    pub d_sae: Option<usize>,
    pub hook_name: Option<String>,
    pub model_name: Option<String>,
    pub k: Option<usize>,
    /// JumpReLU thresholds: minimum, median, maximum over latents.
    pub threshold: Option<[f32; 3]>,
    /// SAELens `normalize_activations` when it is not `none` (a per-token input normalisation).
    pub normalize_activations: Option<String>,
    pub tensors: Vec<TensorInfo>,
    /// Where the headers disagree with the config (a tensor side that is neither `d_in` nor
    /// `d_sae`, a `k` not below `d_sae`): the folder would be refused on loading.
    pub notes: Vec<String>,
}

fn bad(path: &Path, m: impl std::fmt::Display) -> ConceptError {
    ConceptError::Invalid(format!("{}: {m}", path.display()))
}

fn json(path: &Path) -> Result<Value, ConceptError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| bad(path, format!("not JSON: {e}")))
}

/// Tensors by header (with each one's byte range) and where their data starts.
type Header = (Vec<(TensorInfo, [u64; 2])>, u64);

/// A safetensors file's header: tensors (name, dtype, shape, byte range) and where data starts.
fn safetensors_header(path: &Path) -> Result<Header, ConceptError> {
    let mut f = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(path, format!("not safetensors: {e}")))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(bad(path, format!("not safetensors (header of {n} bytes)")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(path, format!("truncated header: {e}")))?;
    let map: serde_json::Map<String, Value> =
        serde_json::from_slice(&header).map_err(|e| bad(path, format!("bad header: {e}")))?;
    let mut out = Vec::new();
    for (name, v) in map {
        if name == "__metadata__" {
            continue;
        }
        let dtype = v["dtype"].as_str().unwrap_or("?").to_owned();
        let shape = v["shape"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|d| d as usize)
                    .collect()
            })
            .unwrap_or_default();
        let range = v["data_offsets"]
            .as_array()
            .and_then(|a| Some([a.first()?.as_u64()?, a.get(1)?.as_u64()?]))
            .unwrap_or([0, 0]);
        out.push((TensorInfo { name, dtype, shape }, range));
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok((out, 8 + n))
}

/// One small f32/bf16/f16 tensor's values, by a positioned read.
fn read_small(path: &Path, info: &TensorInfo, range: [u64; 2], start: u64) -> Option<Vec<f32>> {
    let bytes = range[1].checked_sub(range[0])?;
    if bytes > 64 << 20 {
        return None;
    }
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(start + range[0])).ok()?;
    let mut buf = vec![0u8; bytes as usize];
    f.read_exact(&mut buf).ok()?;
    Some(match info.dtype.as_str() {
        "F32" => buf
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        "BF16" => buf
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        "F16" => buf
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

fn spread(mut v: Vec<f32>) -> Option<[f32; 3]> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    Some([v[0], v[v.len() / 2], v[v.len() - 1]])
}

/// Inspects the SAE folder `dir`.
pub fn inspect(dir: &Path) -> Result<Inspection, ConceptError> {
    let format = detect(dir)?;
    let mut out = Inspection {
        format: format.name(),
        architecture: String::new(),
        d_in: None,
        d_sae: None,
        hook_name: None,
        model_name: None,
        k: None,
        threshold: None,
        normalize_activations: None,
        tensors: Vec::new(),
        notes: Vec::new(),
    };
    let weights = match format {
        Format::SaeLens => dir.join("sae_weights.safetensors"),
        Format::GemmaScope => dir.join("params.npz"),
        Format::GemmaScope2 => dir.join("params.safetensors"),
        Format::LlamaScope => dir.join("checkpoints/final.safetensors"),
        Format::Sparsify => dir.join("sae.safetensors"),
        Format::DictionaryLearning => dir.join("ae.pt"),
        Format::Goodfire | Format::QwenScope => dir.to_path_buf(),
    };
    if matches!(
        format,
        Format::DictionaryLearning | Format::Goodfire | Format::QwenScope
    ) {
        // A pickle has no header to read without interpreting it: the config says the rest.
    } else if format == Format::GemmaScope {
        let arrays = npz::headers(&weights)?;
        for (name, dtype, shape) in &arrays {
            out.tensors.push(TensorInfo {
                name: name.clone(),
                dtype: dtype.clone(),
                shape: shape.clone(),
            });
        }
        out.threshold = npz::read_one(&weights, "threshold")?.and_then(|a| spread(a.values));
    } else {
        let (tensors, start) = safetensors_header(&weights)?;
        for (info, range) in &tensors {
            if info.name == "threshold" || info.name == "log_threshold" {
                let values = read_small(&weights, info, *range, start);
                let values = values.map(|v| {
                    if info.name == "log_threshold" {
                        v.iter().map(|x| x.exp()).collect()
                    } else {
                        v
                    }
                });
                out.threshold = values.and_then(spread);
            }
        }
        out.tensors = tensors.into_iter().map(|(i, _)| i).collect();
    }
    let shape = |name: &str| {
        out.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.shape.clone())
    };
    let int = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).map(|n| n as usize);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    match format {
        Format::SaeLens => {
            let cfg = json(&dir.join("cfg.json"))?;
            let meta = |k: &str| {
                cfg.get("metadata")
                    .and_then(|m| m.get(k))
                    .or_else(|| cfg.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let mut arch = text(&cfg, "architecture").unwrap_or_else(|| "standard".into());
            if arch == "standard" && text(&cfg, "activation_fn_str").as_deref() == Some("topk") {
                arch = "topk".into();
            }
            out.architecture = arch;
            (out.d_in, out.d_sae) = (int(&cfg, "d_in"), int(&cfg, "d_sae"));
            out.k = int(&cfg, "k")
                .or_else(|| cfg.get("activation_fn_kwargs").and_then(|a| int(a, "k")));
            (out.hook_name, out.model_name) = (meta("hook_name"), meta("model_name"));
            out.normalize_activations = text(&cfg, "normalize_activations").filter(|n| n != "none");
        }
        Format::GemmaScope | Format::GemmaScope2 => {
            out.architecture = "jumprelu".into();
            let enc = shape("W_enc")
                .or_else(|| shape("w_enc"))
                .unwrap_or_default();
            (out.d_in, out.d_sae) = (enc.first().copied(), enc.get(1).copied());
            (out.hook_name, out.model_name) = super::gemma_scope::describe(dir, format);
        }
        Format::LlamaScope => {
            let cfg = json(&dir.join("hyperparams.json"))?;
            out.architecture = text(&cfg, "act_fn").unwrap_or_else(|| "jumprelu".into());
            (out.d_in, out.d_sae) = (int(&cfg, "d_model"), int(&cfg, "d_sae"));
            out.k = int(&cfg, "top_k");
            out.hook_name = text(&cfg, "hook_point_in").and_then(|h| hook_from_module_path(&h));
            out.model_name = Some("meta-llama/Llama-3.1-8B".into());
            if let Some(t) = cfg.get("jump_relu_threshold").and_then(Value::as_f64) {
                out.threshold = Some([t as f32; 3]);
            }
        }
        Format::DictionaryLearning => {
            let cfg = json(&dir.join("config.json"))?;
            let trainer = cfg.get("trainer").cloned().unwrap_or_default();
            out.architecture = text(&trainer, "dict_class").unwrap_or_default();
            (out.d_in, out.d_sae) = (int(&trainer, "activation_dim"), int(&trainer, "dict_size"));
            out.k = int(&trainer, "k");
            out.model_name = text(&trainer, "lm_name");
            out.hook_name = text(&trainer, "submodule_name").and_then(|s| {
                let (kind, layer) = s.rsplit_once("_layer_")?;
                Some(format!("blocks.{layer}.hook_{kind}"))
            });
        }
        Format::Goodfire | Format::QwenScope => {
            (out.architecture, out.hook_name, out.model_name, out.k) =
                super::pickled_suites::name_facts(dir, format)?;
        }
        Format::Sparsify => {
            let cfg = json(&dir.join("cfg.json"))?;
            out.architecture = if cfg.get("transcode").and_then(Value::as_bool) == Some(true) {
                "topk transcoder".into()
            } else {
                "topk".into()
            };
            out.d_in = int(&cfg, "d_in");
            out.d_sae = int(&cfg, "num_latents")
                .filter(|n| *n > 0)
                .or_else(|| Some(out.d_in? * int(&cfg, "expansion_factor").unwrap_or(32)));
            out.k = int(&cfg, "k");
            // glassbox's own sparsify folders carry the hooks and model (sparsify ignores
            // fields it does not know); sparsify's name the HF module by the folder.
            let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
            out.hook_name = text(&cfg, "hook_name").or_else(|| hook_from_module_path(folder));
            if let Some(model) = text(&cfg, "model_name") {
                out.model_name = Some(model);
            }
        }
    }
    out.notes = out.disagreements();
    Ok(out)
}

impl Inspection {
    /// What in the headers contradicts the config's sizes.
    fn disagreements(&self) -> Vec<String> {
        let (Some(d), Some(w)) = (self.d_in, self.d_sae) else {
            return Vec::new();
        };
        let mut notes: Vec<String> = self
            .tensors
            .iter()
            .filter(|t| t.shape.iter().any(|&n| n != d && n != w && n != 1))
            .map(|t| {
                format!(
                    "tensor `{}` {:?} has a side that is neither d_in {d} nor d_sae {w}",
                    t.name, t.shape
                )
            })
            .collect();
        if let Some(k) = self.k.filter(|&k| k == 0 || k >= w) {
            notes.push(format!("k = {k} is not between 1 and d_sae {w}"));
        }
        notes
    }

    /// Human-readable lines.
    pub fn render(&self) -> String {
        let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not recorded)".into());
        let num = |v: Option<usize>| v.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
        let mut s = format!(
            "format        {}\narchitecture  {}\nd_in          {}\nd_sae         {}\nhook          {}\nmodel         {}\n",
            self.format,
            self.architecture,
            num(self.d_in),
            num(self.d_sae),
            or(&self.hook_name),
            or(&self.model_name)
        );
        if let Some(k) = self.k {
            s += &format!("k             {k}\n");
        }
        if let Some([lo, mid, hi]) = self.threshold {
            s += &format!("threshold     min {lo:.4}, median {mid:.4}, max {hi:.4}\n");
        }
        if let Some(n) = &self.normalize_activations {
            s += &format!("input norm    {n} (per token, SAELens normalize_activations)\n");
        }
        if self.tensors.is_empty() {
            s += "tensors       (not listed: the weights are a pickle, read only by --allow-pickle)\n";
        } else {
            s += "tensors\n";
        }
        for t in &self.tensors {
            s += &format!("  {:<28} {:<5} {:?}\n", t.name, t.dtype, t.shape);
        }
        for note in &self.notes {
            s += &format!("note          {note}; it would not load (--check says why)\n");
        }
        s
    }
}
