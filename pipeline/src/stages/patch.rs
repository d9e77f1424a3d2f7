//! The `patch` stage: activation patching (and attribution patching) over a file of prompt
//! pairs, on the run's model or the one `--model` names. Writes `patching/`.

use super::parted::{Parted, ShardRun};
use super::patch_targets::prepare_target_pairs;
use super::{Completion, Stage};
use crate::config::PatchSection;
use crate::fingerprint::fingerprint;
use anyhow::{bail, Result};
use glassbox_data::pairs::read_pairs;
use glassbox_data::shards::ShardSpec;
use glassbox_data::{Manifest, ModelRecord, Progress, RunDir};
use glassbox_models::{hooks, load_model, resolve, LoadOptions, ModelSpec};
use glassbox_runner::dla::direct_logit_attribution;
use glassbox_runner::lens::logit_lens;
use glassbox_runner::patch_tables::{
    mean_effects, write_ablation, write_atp, write_dla, write_lens, write_pairs, write_results,
};
use glassbox_runner::patching::{
    ablate, ablate_features, check_patchable, patch_pair, patch_target_pair, positions_for,
    prepare_pairs, AblationOptions, FeatureDictionary, Metric, PairSummary, PatchOptions,
    PreparedPair, TargetPair,
};

/// What a patching run found, for the terminal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PatchDone {
    /// Pairs patched.
    pub pairs: usize,
    /// Patched runs.
    pub runs: usize,
    /// The largest mean normalised effects: hook, position, head, effect.
    pub top: Vec<(String, u32, Option<u32>, f64)>,
    /// Spearman's ρ of attribution patching against the exact effects, when computed.
    pub atp_spearman: Option<f64>,
    /// The run's `patching/` folder.
    pub dir: std::path::PathBuf,
}

/// The pairs of a run, by kind.
enum Prepared {
    /// Causal-LM pairs with answer and wrong tokens.
    Answers(Vec<PreparedPair>),
    /// Pairs with a target.
    Targets(Vec<TargetPair>),
}

impl Prepared {
    fn len(&self) -> usize {
        match self {
            Prepared::Answers(p) => p.len(),
            Prepared::Targets(p) => p.len(),
        }
    }
}

/// The run's SAEs at `hooks` (for feature ablation), checked against the model's widths; an
/// error names a hook without one.
fn feature_dictionaries(
    run: &RunDir,
    model: &glassbox_models::LoadedModel,
    hooks: &[String],
) -> Result<Vec<(glassbox_data::HookPoint, glassbox_concepts::sae::Sae)>> {
    let mut out = Vec::new();
    for name in hooks {
        let hook: glassbox_data::HookPoint = name.parse()?;
        let folder = run.dictionary_dir(hook).join("sae");
        if !folder.join("cfg.json").is_file() {
            let trained: Vec<String> = glassbox_concepts::explain::read::dictionary_hooks(run)?
                .into_iter()
                .filter(|(_, d)| d.join("sae/cfg.json").is_file())
                .map(|(h, _)| h.to_string())
                .collect();
            bail!(
                "patch: no SAE was trained at `{hook}` in {} (SAEs: {}); run `glassbox dictionary --hook {hook}` first",
                run.root().display(),
                if trained.is_empty() { "none".to_owned() } else { trained.join(", ") }
            );
        }
        let sae = glassbox_concepts::sae::saelens::load(&folder)?.sae;
        let width = model.model.hook_width(hook);
        if sae.d_in != width {
            bail!(
                "patch: the SAE at `{hook}` reads {} values but the model's `{hook}` is {width} wide; it was trained on another model",
                sae.d_in
            );
        }
        out.push((hook, sae));
    }
    Ok(out)
}

/// What one part of the pairs hands to the worker that commits.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct PatchFragment {
    rows: Vec<glassbox_runner::patching::PatchRow>,
    summaries: Vec<PairSummary>,
    lens: Vec<glassbox_runner::lens::LensRow>,
    dla: Vec<glassbox_runner::dla::DlaRow>,
}

/// Runs the stage with the model `model` (a Hub id or folder); `None` when up to date.
pub fn run_patch(
    run: &RunDir,
    model: &str,
    settings: &PatchSection,
    force: bool,
    progress: &dyn Progress,
) -> Result<Option<PatchDone>> {
    Ok(run_patch_parts(run, model, settings, force, None, progress)?.whole())
}

/// Patches the pairs part by part — this worker's parts only with `shard` — and, once every
/// part is there, runs the ablations (they need every pair: mean ablation averages over them)
/// and writes the tables.
pub fn run_patch_parts(
    run: &RunDir,
    model: &str,
    settings: &PatchSection,
    force: bool,
    shard: Option<ShardSpec>,
    progress: &dyn Progress,
) -> Result<ShardRun<PatchDone>> {
    let started = std::time::Instant::now();
    settings.validate()?;
    let pairs = read_pairs(&settings.pairs)?;
    let spec: ModelSpec = model.parse()?;
    let resolved = resolve(&spec)?;
    let weights_sha256 = glassbox_models::model_sha256(&resolved)?;
    // The run's own model is held and computed as extraction held it.
    let options = LoadOptions {
        max_length: None,
        allow_pickle: settings.allow_pickle,
        ..super::run_model::load_options_for(run, model)
    };
    let model = load_model(resolved, options)?;
    for note in &model.notes {
        progress.note(&format!("patch: {note}"));
    }
    let selected = hooks::select(&settings.hooks, &model.model.hook_points())?;
    for &hook in &selected {
        check_patchable(hook)?;
    }
    // Target pairs (a `target` column) for any model; answer/wrong pairs for causal LMs.
    let prepared = match pairs.target {
        Some(_) => {
            if settings.ablation.is_some() {
                bail!(
                    "patch: ablation reads answer/wrong pairs of a causal LM; {} has targets — drop --ablate (or use answer/wrong pairs)",
                    settings.pairs.display()
                );
            }
            Prepared::Targets(prepare_target_pairs(run, &model, &pairs)?)
        }
        None => {
            let prepared = prepare_pairs(&model, &pairs)?;
            for pair in &prepared {
                positions_for(&settings.positions, pair)?;
                if settings.metric == Metric::LogitDiff && pair.answer == pair.wrong {
                    bail!(
                        "{}: row {}: answer and wrong are the same token ({:?}); their logit difference is 0 whatever is patched — give a different wrong token, or use --metric prob/logprob",
                        settings.pairs.display(),
                        pair.row + 1,
                        pairs.answer[pair.row]
                    );
                }
            }
            Prepared::Answers(prepared)
        }
    };
    let dictionaries = feature_dictionaries(run, &model, &settings.ablate_features)?;
    let params = serde_json::json!({
        "model_id": model.resolved.id,
        "revision": model.resolved.revision,
        "weights_sha256": weights_sha256,
        "weights_dtype": options.weights_dtype,
        "compute_dtype": options.compute_dtype,
        "pairs_sha256": pairs.sha256,
        "hooks": selected,
        "patch": settings,
        "saes": dictionaries
            .iter()
            .map(|(hook, _)| {
                glassbox_data::hash::sha256_file(
                    &run.dictionary_dir(*hook).join("sae/sae_weights.safetensors"),
                )
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
    });
    let fp = fingerprint("patch", &params);
    let manifest = Manifest::load_or_default(run)?;
    if let Some(m) = &manifest.model {
        if m.weights_sha256 != weights_sha256 {
            bail!(
                "{}: this run holds results of model {} (weights sha256 {}…); patching {} here \
                 would mix two models. Use the same model, or choose a new --run",
                run.root().display(),
                m.id,
                &m.weights_sha256[..12.min(m.weights_sha256.len())],
                model.resolved.id
            );
        }
    }
    if !force && manifest.stage_fingerprint("patch") == Some(fp.as_str()) {
        crate::fingerprint::note_up_to_date(progress, &manifest, "patch", "");
        return Ok(ShardRun::UpToDate);
    }
    let opts = PatchOptions {
        hooks: selected,
        positions: settings.positions.clone(),
        heads: settings.heads,
        metric: settings.metric,
        direction: settings.direction,
        batch_size: settings.batch_size,
        atp: settings.atp,
    };
    let parted = Parted {
        run,
        stage: "patch",
        outputs: vec!["patching".into()],
        fingerprint: fp.clone(),
        params: params.clone(),
        items: prepared.len(),
        part_size: settings.part_size,
        shard,
        force,
        progress: ("patch (pairs)".into(), 1),
    };
    let outcome = parted.run(progress, |part| {
        let mut fragment = PatchFragment::default();
        match &prepared {
            Prepared::Answers(pairs) => {
                for pair in &pairs[part.items.clone()] {
                    let (r, s) = patch_pair(&model, pair, &opts)?;
                    fragment.rows.extend(r);
                    fragment.summaries.push(s);
                    fragment.lens.extend(logit_lens(&model, pair)?);
                    fragment.dla.extend(direct_logit_attribution(&model, pair)?);
                    progress.advance(1);
                }
            }
            Prepared::Targets(pairs) => {
                for pair in &pairs[part.items.clone()] {
                    let (r, m) = patch_target_pair(&model, pair, &opts)?;
                    fragment.rows.extend(r);
                    fragment.summaries.push(PairSummary {
                        row: pair.row,
                        clean_tokens: pair.clean.tokens(),
                        corrupted_tokens: pair.corrupted.tokens(),
                        answer: None,
                        wrong: None,
                        target: Some(pair.target.clone()),
                        metric_clean: m.clean,
                        metric_corrupted: m.corrupted,
                    });
                    progress.advance(1);
                }
            }
        }
        part.write_fragment(&fragment)
    })?;
    outcome.settle(shard, |ready| {
        let fragments: Vec<PatchFragment> = ready.fragments()?;
        let (mut rows, mut summaries) = (Vec::new(), Vec::new());
        let (mut lens, mut dla) = (Vec::new(), Vec::new());
        for f in fragments {
            rows.extend(f.rows);
            summaries.extend(f.summaries);
            lens.extend(f.lens);
            dla.extend(f.dla);
        }
        let tx = ready.tx;
        let dir = &tx.run().path("patching");
        std::fs::create_dir_all(dir)?;
        write_pairs(dir, &summaries)?;
        write_lens(dir, &lens)?;
        if let (Some(kind), Prepared::Answers(prepared)) = (settings.ablation, &prepared) {
            let ablation = AblationOptions {
                kind,
                heads: opts.heads,
                neurons: settings.ablate_neurons,
                metric: opts.metric,
                batch_size: opts.batch_size,
                seed: settings.seed,
            };
            let mut rows = ablate(&model, prepared, &opts.hooks, &ablation)?;
            for (hook, sae) in &dictionaries {
                let encode = |x: &[f32]| -> std::result::Result<Vec<f32>, String> {
                    let codes = sae.encode(x).map_err(|e| e.to_string())?;
                    let mut dense = vec![0f32; codes.rows() * sae.width];
                    for r in 0..codes.rows() {
                        for (j, v) in codes.row(r) {
                            dense[r * sae.width + j] = v;
                        }
                    }
                    Ok(dense)
                };
                let dict = FeatureDictionary {
                    hook: *hook,
                    encode: &encode,
                    decoder: &sae.w_dec,
                    features: sae.width,
                };
                rows.extend(ablate_features(&model, prepared, &dict, &ablation)?);
            }
            write_ablation(dir, &rows)?;
        }
        write_dla(dir, &dla)?;
        write_atp(dir, &rows)?;
        // Results last: their presence marks the folder complete.
        write_results(dir, &rows)?;
        let atp_spearman =
            glassbox_runner::patch_tables::atp_summary(&rows).and_then(|s| s["spearman"].as_f64());
        let done = Completion {
            stage: Stage::Patch,
            fingerprint: fp,
            seed: settings.ablation.map(|_| settings.seed),
            params,
            started,
        };
        let record = ModelRecord {
            id: model.resolved.id.clone(),
            revision: model.resolved.revision.clone(),
            source: model.resolved.source.to_owned(),
            family: model.model.family().to_owned(),
            modality: Some(model.modality()),
            weights_sha256,
            preprocessor: None,
        };
        tx.commit(
            done,
            |manifest| {
                manifest.model.get_or_insert(record);
            },
            |config| config.patch = Some(settings.clone()),
        )?;
        Ok(PatchDone {
            pairs: prepared.len(),
            runs: rows.len(),
            top: mean_effects(&rows)
                .into_iter()
                .take(10)
                .map(|(h, p, head, e)| (h.to_string(), p, head, e))
                .collect(),
            atp_spearman,
            dir: run.path("patching"),
        })
    })
}
