//! A run's dictionaries as a Neuronpedia export: the gzipped JSON-lines files Neuronpedia's
//! importer reads (one folder per SAE, the layout its `neuronpedia-utils` converters write),
//! so a run's features can be uploaded or served by a self-hosted Neuronpedia.
//!
//! Per SAE, `<out>/<model_id>/<source_id>/` (`source_id` = `<layer>-<source_set>`) holds
//! `release.jsonl`, `model.jsonl`, `sourceset.jsonl`, `source.jsonl` (one record each) and
//! `features/batch-0.jsonl.gz`, `activations/batch-0.jsonl.gz`,
//! `explanations/batch-0.jsonl.gz`. Records carry exactly the fields of Neuronpedia's
//! database models (mirrors `utils/neuronpedia-utils/neuronpedia_utils/db_models/*.py` of
//! <https://github.com/hijohnnylin/neuronpedia>):
//!
//! - a feature: its decoder row as the steering vector, the frequency (density), the
//!   strongest activation, the promoted and suppressed tokens (causal LMs), and its three
//!   largest decoder entries as the neuron alignment;
//! - an activation: a top example's context window with the feature's value on every token;
//! - an explanation: the label class the feature correlates with most (glassbox's statistic,
//!   named as such in `typeName`), for features whose correlation is a finding (≥ 0.3).
//!
//! Times are the dictionary stage's, and record ids are derived from their content, so the
//! same run exports the same bytes.

use crate::ReportError;
use glassbox_concepts::explain::read::{is_finding, read_examples, read_units, UnitRow};
use glassbox_concepts::explain::UnitExample;
use glassbox_data::{atomic, HookPoint, Manifest, RunDir};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Who and what the export names; the rest comes from the run.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Neuronpedia's model id (e.g. `gpt2-small`); default: the run's model name, lower case.
    pub model_id: Option<String>,
    /// The source set: the SAE family's short name (`res-glassbox`); the layer is prefixed.
    pub source_set: String,
    /// The release the source set belongs to.
    pub release: String,
    /// The Neuronpedia user id that owns the records.
    pub creator_id: String,
    /// The creator's display name.
    pub creator_name: String,
    /// A link for the release (paper, repository), if any.
    pub url: Option<String>,
}

/// What one SAE's export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportedSource {
    pub hook: String,
    pub folder: PathBuf,
    pub features: usize,
    pub activations: usize,
    pub explanations: usize,
}

/// Exports the SAEs at `hooks` (empty: every SAE of the run) into `out`.
pub fn export_neuronpedia(
    run: &RunDir,
    hooks: &[HookPoint],
    opts: &ExportOptions,
    out: &Path,
) -> Result<Vec<ExportedSource>, ReportError> {
    let manifest = Manifest::load(run)?;
    let created = manifest
        .stages
        .get("dictionary")
        .map(|s| s.finished_at.clone())
        .ok_or_else(|| {
            ReportError::Invalid(format!(
                "{}: no completed `dictionary` stage; run `glassbox dictionary` first",
                run.name()
            ))
        })?;
    let model = manifest.model.as_ref().ok_or_else(|| {
        ReportError::Invalid(format!("{}: the manifest names no model", run.name()))
    })?;
    let model_id = opts
        .model_id
        .clone()
        .unwrap_or_else(|| default_model_id(&model.id));
    for (flag, value) in [
        ("--model-id", model_id.as_str()),
        ("--source-set", opts.source_set.as_str()),
        ("--release", opts.release.as_str()),
    ] {
        check_id(flag, value)?;
    }
    let chosen = glassbox_concepts::explain::read::sae_folders(run, hooks)?;
    let data = manifest.data.as_ref();
    let mut written = Vec::new();
    for (hook, dir) in &chosen {
        let source = Source {
            model_id: &model_id,
            id: format!("{}-{}", hook.layer().unwrap_or(0), opts.source_set),
            hook: *hook,
            created: &created,
            dataset: data.map(|d| d.path.clone()).unwrap_or_default(),
            prompts: data.map(|d| d.n_examples).unwrap_or(0),
        };
        written.push(export_source(dir, &source, opts, out)?);
    }
    Ok(written)
}

/// Neuronpedia's model ids are lower case, without the organisation (`gpt2-small`).
/// Neuronpedia's ids are URL path segments and name the export's folders: a `/` would nest
/// them, an empty source set leave a bare layer number (`3-`).
fn check_id(flag: &str, value: &str) -> Result<(), ReportError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if value.is_empty() || value.starts_with('.') || !value.chars().all(allowed) {
        return Err(ReportError::Invalid(format!(
            "{flag} `{value}`: Neuronpedia ids are URL path segments; use letters, digits, `.`, `_` and `-`, not starting with `.` (e.g. gpt2-small, res-glassbox)"
        )));
    }
    Ok(())
}

fn default_model_id(id: &str) -> String {
    let name = id.trim_end_matches('/').rsplit('/').next().unwrap_or(id);
    name.to_ascii_lowercase()
}

/// One SAE as a Neuronpedia source.
struct Source<'a> {
    model_id: &'a str,
    id: String,
    hook: HookPoint,
    created: &'a str,
    dataset: String,
    prompts: u64,
}

fn export_source(
    dir: &Path,
    source: &Source<'_>,
    opts: &ExportOptions,
    out: &Path,
) -> Result<ExportedSource, ReportError> {
    let loaded = glassbox_concepts::sae::saelens::load(&dir.join("sae"))?;
    let sae = &loaded.sae;
    let units = read_units(dir, "feature")?;
    let examples = read_examples(dir, "feature", |_, kind, _| kind == "top")?;
    let promoted = crate::pages::read_promoted(dir)?;
    let suppressed = crate::pages::read_token_logits(dir, "feature_suppressed_tokens.parquet")?;
    // Written beside the final folder and renamed into place: a failed export leaves no
    // folder that looks complete, and a new export replaces an old one whole.
    let folder = out.join(source.model_id).join(&source.id);
    let staging = out
        .join(source.model_id)
        .join(format!(".{}.partial", source.id));
    let io = |p: &Path, e: std::io::Error| ReportError::Invalid(format!("{}: {e}", p.display()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
    }
    let (created, model_id, layer) = (source.created, source.model_id, source.id.as_str());
    let record = |file: &str, value: Value| -> Result<(), ReportError> {
        let mut line = serde_json::to_vec(&value).map_err(invalid)?;
        line.push(b'\n');
        atomic::write_bytes(&staging.join(file), &line)?;
        Ok(())
    };
    record(
        "release.jsonl",
        json!({
            "name": opts.release, "description": opts.release, "creatorName": opts.creator_name,
            "creatorId": opts.creator_id, "visibility": "PUBLIC", "isNewUi": false, "featured": false,
            "descriptionShort": opts.release, "urls": opts.url.iter().collect::<Vec<_>>(),
            "creatorEmail": null, "creatorNameShort": opts.creator_name,
            "defaultSourceSetName": opts.source_set, "defaultSourceId": layer,
            "defaultUmapSourceIds": [], "createdAt": created,
        }),
    )?;
    record(
        "model.jsonl",
        json!({
            "id": model_id, "instruct": false, "creatorId": opts.creator_id,
            "displayNameShort": model_id, "displayName": model_id, "tlensId": null,
            "dimension": sae.d_in, "visibility": "PUBLIC", "defaultSourceSetName": opts.source_set,
            "defaultSourceId": layer, "inferenceEnabled": false, "layers": 0,
            "neuronsPerLayer": 0, "createdAt": created, "owner": opts.creator_name,
            "updatedAt": created, "website": null,
        }),
    )?;
    record(
        "sourceset.jsonl",
        json!({
            "modelId": model_id, "name": opts.source_set, "creatorId": opts.creator_id,
            "hasDashboards": true, "visibility": "PUBLIC",
            "description": format!("{} — {} latents (glassbox)", source.hook, sae.width),
            "type": "", "creatorName": opts.creator_name, "urls": opts.url.iter().collect::<Vec<_>>(),
            "creatorEmail": null, "releaseName": opts.release, "defaultOfModelId": null,
            "defaultRange": 1, "defaultShowBreaks": true, "showDfa": false,
            "showCorrelated": false, "showHeadAttribution": false, "showUmap": false,
            "createdAt": created,
        }),
    )?;
    let cfg = std::fs::read_to_string(dir.join("sae/cfg.json")).map_err(|e| {
        ReportError::Invalid(format!("{}: {e}", dir.join("sae/cfg.json").display()))
    })?;
    record(
        "source.jsonl",
        json!({
            "id": layer, "modelId": model_id, "setName": opts.source_set, "creatorId": opts.creator_id,
            "hasDashboards": true, "inferenceEnabled": false, "inferenceHosts": [],
            "saelensConfig": cfg, "saelensRelease": null, "saelensSaeId": null, "hfRepoId": null,
            "hfFolderId": null, "visibility": "PUBLIC", "defaultOfModelId": null, "hasUmap": false,
            "hasUmapLogSparsity": false, "hasUmapClusters": false, "num_prompts": source.prompts,
            "num_tokens_in_prompt": null, "dataset": source.dataset,
            "notes": format!("exported by glassbox from {}", source.hook), "createdAt": created,
        }),
    )?;
    let by_unit: BTreeMap<u32, &UnitRow> = units.iter().map(|u| (u.unit, u)).collect();
    let features: Vec<Value> = (0..sae.width)
        .map(|f| {
            let row = &sae.w_dec[f * sae.d_in..(f + 1) * sae.d_in];
            let logits = (promoted.get(&(f as u32)), suppressed.get(&(f as u32)));
            feature_record(
                f,
                row,
                by_unit.get(&(f as u32)).copied(),
                logits,
                source,
                opts,
            )
        })
        .collect();
    let activations: Vec<Value> = examples
        .iter()
        .map(|e| activation_record(e, source, opts))
        .collect();
    let explanations: Vec<Value> = units
        .iter()
        .filter_map(|u| explanation_record(u, source, opts))
        .collect();
    write_gz(&staging.join("features/batch-0.jsonl.gz"), &features)?;
    write_gz(&staging.join("activations/batch-0.jsonl.gz"), &activations)?;
    write_gz(
        &staging.join("explanations/batch-0.jsonl.gz"),
        &explanations,
    )?;
    if folder.exists() {
        std::fs::remove_dir_all(&folder).map_err(|e| io(&folder, e))?;
    }
    std::fs::rename(&staging, &folder).map_err(|e| io(&folder, e))?;
    Ok(ExportedSource {
        hook: source.hook.to_string(),
        folder,
        features: features.len(),
        activations: activations.len(),
        explanations: explanations.len(),
    })
}

/// The three decoder entries of largest magnitude: `(indices, values, share of the row's L1)`.
fn neuron_alignment(row: &[f32]) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
    let l1: f32 = row.iter().map(|v| v.abs()).sum();
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].abs().total_cmp(&row[a].abs()).then(a.cmp(&b)));
    order.truncate(3);
    let values: Vec<f32> = order.iter().map(|&i| row[i]).collect();
    let shares = values
        .iter()
        .map(|v| if l1 > 0.0 { v.abs() / l1 } else { 0.0 })
        .collect();
    (order, values, shares)
}

/// A feature's promoted or suppressed tokens with their logits, in rank order.
type TokenLogits = Vec<(String, f64)>;

fn feature_record(
    f: usize,
    decoder_row: &[f32],
    unit: Option<&UnitRow>,
    (promoted, suppressed): (Option<&TokenLogits>, Option<&TokenLogits>),
    source: &Source<'_>,
    opts: &ExportOptions,
) -> Value {
    let max_act = unit.map_or(0.0, |u| u.max_activation as f64);
    let (align_i, align_v, align_l1) = neuron_alignment(decoder_row);
    let text = |tokens: Option<&TokenLogits>| -> (Vec<String>, Vec<f64>) {
        tokens
            .map(|p| p.iter().map(|(t, v)| (spoken(t), *v)).unzip())
            .unwrap_or_default()
    };
    let (pos_str, pos_values) = text(promoted);
    let (neg_str, neg_values) = text(suppressed);
    json!({
        "modelId": source.model_id, "layer": source.id, "index": f.to_string(),
        "creatorId": opts.creator_id, "createdAt": source.created, "maxActApprox": max_act,
        "hasVector": true, "vector": decoder_row, "vectorLabel": null,
        "vectorDefaultSteerStrength": max_act, "hookName": source.hook.to_string(),
        "topkCosSimIndices": [], "topkCosSimValues": [],
        "neuron_alignment_indices": align_i, "neuron_alignment_values": align_v,
        "neuron_alignment_l1": align_l1,
        "correlated_neurons_indices": [], "correlated_neurons_pearson": [], "correlated_neurons_l1": [],
        "correlated_features_indices": [], "correlated_features_pearson": [], "correlated_features_l1": [],
        "neg_str": neg_str, "neg_values": neg_values, "pos_str": pos_str, "pos_values": pos_values,
        "frac_nonzero": unit.map_or(0.0, |u| u.density),
        "freq_hist_data_bar_heights": [], "freq_hist_data_bar_values": [],
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "decoder_weights_dist": [],
    })
}

fn activation_record(e: &UnitExample, source: &Source<'_>, opts: &ExportOptions) -> Value {
    let values = &e.context_activations;
    let (mut max_i, mut max_v, mut min_v) = (0usize, f32::NEG_INFINITY, f32::INFINITY);
    for (i, &v) in values.iter().enumerate() {
        if v > max_v {
            (max_i, max_v) = (i, v);
        }
        min_v = min_v.min(v);
    }
    let key = format!(
        "{}|{}|{}|top|{}",
        source.model_id, source.id, e.unit, e.rank
    );
    json!({
        "id": record_id(&key),
        "tokens": e.context_tokens.iter().map(|t| spoken(t)).collect::<Vec<_>>(),
        "index": e.unit.to_string(),
        "layer": source.id, "modelId": source.model_id,
        "maxValue": if values.is_empty() { 0.0 } else { max_v },
        "maxValueTokenIndex": max_i, "minValue": if values.is_empty() { 0.0 } else { min_v },
        "values": values, "creatorId": opts.creator_id, "dataSource": source.dataset,
        "dataIndex": e.example_id.to_string(), "dfaValues": [], "dfaTargetIndex": null,
        "dfaMaxValue": null, "createdAt": source.created, "lossValues": [],
        "logitContributions": null, "binMin": null, "binMax": null, "binContains": null,
        "qualifyingTokenIndex": e.center,
    })
}

fn explanation_record(u: &UnitRow, source: &Source<'_>, opts: &ExportOptions) -> Option<Value> {
    let (label, class, r) = (
        u.top_label.as_ref()?,
        u.top_class.as_ref()?,
        u.top_label_correlation?,
    );
    // Only correlations the report would call a finding: a weak or chance one explains nothing.
    if !is_finding(u) {
        return None;
    }
    let key = format!("{}|{}|{}|label", source.model_id, source.id, u.unit);
    Some(json!({
        "id": record_id(&key), "modelId": source.model_id, "layer": source.id,
        "index": u.unit.to_string(), "description": format!("{label} = {class} (r = {r:.2})"),
        "authorId": opts.creator_id, "embedding": null, "triggeredById": null,
        "typeName": "glassbox-label-correlation",
        "explanationModelName": "glassbox (point-biserial correlation with the run's labels)",
        "notes": null, "createdAt": source.created,
    }))
}

/// A vocabulary entry as text: byte-level BPE's `Ġ` and SentencePiece's `▁` are the space they
/// stand for, `Ċ` a newline (Neuronpedia shows tokens as text).
fn spoken(token: &str) -> String {
    token.replace(['Ġ', '▁'], " ").replace('Ċ', "\n")
}

/// A cuid-shaped id (25 lower-case letters and digits, a letter first) derived from `key`.
fn record_id(key: &str) -> String {
    let digest = glassbox_data::hash::sha256_bytes(key.as_bytes());
    format!("g{}", &digest[..24])
}

/// Writes `records` as gzipped JSON lines.
fn write_gz(path: &Path, records: &[Value]) -> Result<(), ReportError> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(5));
    for r in records {
        serde_json::to_writer(&mut gz, r).map_err(invalid)?;
        gz.write_all(b"\n").map_err(invalid)?;
    }
    let bytes = gz.finish().map_err(invalid)?;
    atomic::write_bytes(path, &bytes)?;
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> ReportError {
    ReportError::Invalid(format!("writing the Neuronpedia export: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_would_nest_or_hide_folders_are_refused() {
        for ok in ["gpt2-small", "res-glassbox", "qwen2.5-0.5b", "tiny_gpt2"] {
            assert!(check_id("--model-id", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "..", ".hidden", "my model", "a\\b"] {
            let err = check_id("--source-set", bad).unwrap_err().to_string();
            assert!(
                err.contains("--source-set") && err.contains("URL path segments"),
                "{err}"
            );
        }
    }

    #[test]
    fn alignment_takes_the_largest_magnitudes_and_their_l1_shares() {
        let (i, v, l1) = neuron_alignment(&[0.1, -0.5, 0.2, 0.0, 0.2]);
        assert_eq!(i, vec![1, 2, 4]);
        assert_eq!(v, vec![-0.5, 0.2, 0.2]);
        assert!((l1[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn ids_are_cuid_shaped_and_stable() {
        let a = record_id("m|0-x|3|top|0");
        assert_eq!(a.len(), 25);
        assert!(a.starts_with('g'));
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_eq!(a, record_id("m|0-x|3|top|0"));
        assert_ne!(a, record_id("m|0-x|3|top|1"));
        assert_eq!(
            default_model_id("sentence-transformers/all-MiniLM-L6-v2"),
            "all-minilm-l6-v2"
        );
    }
}
