//! The `causal` stage: the causal validation of the run's findings (probe directions, CAVs, SAE
//! features) by steering and erasure against random directions, Holm-corrected over the run.
//! Reads the run's model, probes, TCAV and dictionary tables; writes `causal/`.

use super::causal_run::{self, forwards, measure_hook, tested_hooks, Context, Measured, Sample};
use super::run_model::{load_run_model, run_modality};
use super::{Completion, Stage, Transaction};
use crate::config::RunConfig;
use crate::fingerprint::fingerprint;
use anyhow::{anyhow, bail, Result};
use glassbox_concepts::causal::{plan, write_curves, write_tests, CausalOptions, PlanContext};
use glassbox_data::examples::read_examples;
use glassbox_data::rng::SeededRng;
use glassbox_data::{Modality, Progress, RunDir};
use glassbox_runner::steering::Batches;
use glassbox_runner::Examples;

/// What the stage found, for the terminal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CausalDone {
    /// Tests planned (one finding may have several).
    pub tests: usize,
    /// Tests per verdict: supported, not supported, not testable.
    pub supported: usize,
    pub not_supported: usize,
    pub not_testable: usize,
    /// Every test: finding, test, verdict, effect, p_holm.
    pub rows: Vec<(String, String, String, f64, f64)>,
    /// The run's `causal/` folder.
    pub dir: std::path::PathBuf,
}

/// Runs the stage; `None` when up to date.
pub fn run_causal(
    run: &RunDir,
    settings: &CausalOptions,
    force: bool,
    progress: &dyn Progress,
) -> Result<Option<CausalDone>> {
    let started = std::time::Instant::now();
    settings.validate()?;
    let manifest = run.require_stage("probe")?;
    let params = serde_json::json!({
        "extract": manifest.stage_fingerprint("extract"),
        "probe": manifest.stage_fingerprint("probe"),
        "tcav": manifest.stage_fingerprint("tcav"),
        "dictionary": manifest.stage_fingerprint("dictionary"),
        "causal": settings,
    });
    let fp = fingerprint("causal", &params);
    if !force && manifest.stage_fingerprint("causal") == Some(fp.as_str()) {
        crate::fingerprint::note_up_to_date(progress, &manifest, "causal", "");
        return Ok(None);
    }
    let config = RunConfig::load(run);
    let probe_options = config.probe.clone().ok_or_else(|| {
        anyhow!(
            "{}: config.toml records no [probe] section; re-run `glassbox probe`",
            run.root().display()
        )
    })?;
    let model = load_run_model(run)?;
    let ctx = PlanContext {
        has_unembedding: model.model.unembedding().is_some(),
        class_labels: model.model.labels().to_vec(),
        widths: model
            .model
            .hook_points()
            .into_iter()
            .map(|h| (h, model.model.hook_width(h)))
            .collect(),
    };
    let planned = plan(run, &ctx)?;
    let sample = sample(run, &model, &config, settings)?;
    let weights = glassbox_probes::read_weights(run)?;
    let cx = Context {
        run,
        model: &model,
        weights: &weights,
        probe_options: &probe_options,
        options: settings,
    };
    let tx = Transaction::begin(run, "causal", vec!["causal".into()], &fp, false)?;
    let dir = tx.run().path("causal");
    std::fs::create_dir_all(&dir)?;
    let hooks = tested_hooks(&planned);
    progress.start("causal (forwards)", forwards(&planned, settings));
    let mut measured: Vec<Measured> = Vec::new();
    for hook in hooks {
        measured.extend(measure_hook(&cx, &sample, &planned, hook, progress)?);
    }
    progress.finish();
    let rows = causal_run::rows(&planned, &measured, settings.significance);
    let curves: Vec<_> = measured.iter().flat_map(|m| m.curve.clone()).collect();
    write_curves(&dir, &curves)?;
    // Tests last: their presence marks the folder complete.
    write_tests(&dir, &rows)?;
    let count =
        |v: glassbox_concepts::causal::Verdict| rows.iter().filter(|r| r.verdict == v).count();
    use glassbox_concepts::causal::Verdict;
    let done = CausalDone {
        tests: rows.len(),
        supported: count(Verdict::Supported),
        not_supported: count(Verdict::NotSupported),
        not_testable: count(Verdict::NotTestable),
        rows: rows
            .iter()
            .map(|r| {
                (
                    r.finding.clone(),
                    r.test.clone(),
                    r.verdict.as_str().to_owned(),
                    r.effect,
                    r.p_holm,
                )
            })
            .collect(),
        dir: run.path("causal"),
    };
    tx.commit(
        Completion {
            stage: Stage::Causal,
            fingerprint: fp,
            seed: Some(settings.seed),
            params,
            started,
        },
        |_| {},
        |config| config.causal = Some(settings.clone()),
    )?;
    Ok(Some(done))
}

/// A seeded sample of the run's examples, batched the way the model reads them.
fn sample(
    run: &RunDir,
    model: &glassbox_models::LoadedModel,
    config: &RunConfig,
    settings: &CausalOptions,
) -> Result<Sample> {
    let table = read_examples(run)?;
    let n = table.texts.len();
    let mut indices: Vec<usize> = (0..n).collect();
    SeededRng::new(settings.seed ^ 0x6361_7573_616c).shuffle(&mut indices);
    indices.truncate(settings.examples.min(n));
    indices.sort_unstable();
    let batches = match run_modality(run) {
        Modality::Text => {
            let texts: Vec<&str> = indices.iter().map(|&i| table.texts[i].as_str()).collect();
            Batches::texts(model, &texts, settings.batch_size)?
        }
        Modality::Vision => {
            // The manifest's record finds the data from another working directory too.
            let recorded = glassbox_data::Manifest::load(run)?.data.map(|d| d.locate());
            let path = match (recorded, config.data.as_ref()) {
                (Some(path), _) => path,
                (None, Some(data)) => data.path.clone(),
                (None, None) => bail!("{}: the run records no data file", run.root().display()),
            };
            match Examples::read(model, &path)? {
                Examples::Images(images, pre) => {
                    Batches::images(&images, &pre, &indices, settings.batch_size)?
                }
                Examples::Texts(_) => unreachable!("a vision model reads images"),
            }
        }
    };
    Ok(Sample {
        indices,
        batches,
        table,
    })
}
