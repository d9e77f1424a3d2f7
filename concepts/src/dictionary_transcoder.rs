//! The dictionary stage's transcoders: train (or load) one per `[[dictionary.transcoders]]`
//! entry on the store's paired token rows, measure how well it predicts the output hook, save
//! it for SAELens/sparsify/circuit-tracer, and explain its features over the input hook's rows.
//! Writes `dictionary/transcoder=<output hook>/`: `saelens/` or `sparsify/`, `circuit_tracer/`,
//! `metrics.json` (with a `transcoder` block) and the feature tables.

use crate::dictionary_outputs::{model_name, summary, write_metrics, HookSummary};
use crate::explain::Units;
use crate::sae::ev_bootstrap::Bootstrap;
use crate::sae::fit::{fit_for, FitControl, Objective};
use crate::sae::stream::{count_rows, PairedRows, RowSource, Split, StoreRows};
use crate::sae::transcoder::evaluate;
use crate::sae::transcoder_formats::{self, TranscoderProvenance};
use crate::sae::{Architecture, SaeOptions, Transcoder};
use crate::ConceptError;
use glassbox_data::{HookPoint, Progress, RunDir};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fmt;
use std::path::{Path, PathBuf};

/// One `[[dictionary.transcoders]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscoderSpec {
    /// The hook the features read (e.g. `blocks.3.hook_resid_mid`).
    pub input: HookPoint,
    /// The hook it predicts (e.g. `blocks.3.hook_mlp_out`); names the output folder.
    pub output: HookPoint,
    /// Train with a skip connection `W_skip x` (Paulo et al. 2025). Default false.
    #[serde(default)]
    pub skip: bool,
    /// Analyse a pretrained transcoder (SAELens or sparsify folder) instead of training one.
    #[serde(default)]
    pub load: Option<PathBuf>,
}

impl fmt::Display for TranscoderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.input, self.output)
    }
}

impl std::str::FromStr for TranscoderSpec {
    type Err = String;
    /// `IN->OUT`, `IN->OUT+skip` or `IN->OUT=FOLDER` (a pretrained one).
    fn from_str(s: &str) -> Result<Self, String> {
        let (pair, load) = match s.split_once('=') {
            Some((p, f)) => (p, Some(PathBuf::from(f))),
            None => (s, None),
        };
        let (pair, skip) = match pair.strip_suffix("+skip") {
            Some(p) => (p, true),
            None => (pair, false),
        };
        let (input, output) = pair.split_once("->").ok_or_else(|| {
            format!(
                "`{s}`: a transcoder is `IN->OUT` (e.g. blocks.3.hook_resid_mid->blocks.3.hook_mlp_out), \
                 `IN->OUT+skip` or `IN->OUT=FOLDER`"
            )
        })?;
        let parse = |h: &str| {
            h.trim()
                .parse::<HookPoint>()
                .map_err(|e| format!("`{s}`: {e}"))
        };
        Ok(Self {
            input: parse(input)?,
            output: parse(output)?,
            skip,
            load,
        })
    }
}

impl TranscoderSpec {
    /// The input must come before the output in the forward pass (the splice reads it first).
    pub fn check_order(&self) -> Result<(), ConceptError> {
        if self.input.depth() >= self.output.depth() {
            return Err(ConceptError::Invalid(format!(
                "[[dictionary.transcoders]] {self}: the input hook must come before the output \
                 in the forward pass (e.g. blocks.3.hook_resid_mid->blocks.3.hook_mlp_out)"
            )));
        }
        Ok(())
    }
}

/// What the transcoders need from the dictionary stage (implemented by its context, so this
/// module does not depend on the stage's).
pub(crate) trait StageRows {
    fn run(&self) -> &RunDir;
    fn sae_options(&self) -> &SaeOptions;
    /// The resamples of the evaluation texts behind every explained variance's interval
    /// (seeded by the SAE options' seed, which the manifest records).
    fn bootstrap(&self) -> Bootstrap {
        Bootstrap {
            seed: self.sae_options().seed,
            ..Bootstrap::default()
        }
    }
    fn progress(&self) -> &dyn Progress;
    /// A hook's token rows of a split, filtered as the stage filters them.
    fn rows(&self, hook: HookPoint, split: Split) -> Result<StoreRows, ConceptError>;
    /// Explains `units` over `hook`'s rows into `dir`, their directions compared with the
    /// probes and CAVs found at `directions_at`.
    fn explain_units_at(
        &self,
        hook: HookPoint,
        directions_at: HookPoint,
        dir: &Path,
        units: Units<'_>,
    ) -> Result<(), ConceptError>;
}

/// The transcoder side of the stage, for anything that provides its rows.
pub(crate) trait Transcoders: StageRows {
    fn paired(&self, spec: &TranscoderSpec, split: Split) -> Result<Paired, ConceptError> {
        PairedRows::new(
            self.rows(spec.input, split)?,
            self.rows(spec.output, split)?,
            format!("transcoder {spec}"),
        )
    }

    fn transcoder_fingerprint(&self, spec: &TranscoderSpec, upstream: &str) -> String {
        glassbox_data::hash::sha256_bytes(
            json!({ "upstream": upstream, "transcoder": spec, "sae": self.sae_options() })
                .to_string()
                .as_bytes(),
        )
    }

    /// Trains (or loads) the transcoder of `spec`; `None` when training paused.
    fn transcoder(
        &self,
        spec: &TranscoderSpec,
        upstream: &str,
        pause_after: Option<usize>,
    ) -> Result<Option<HookSummary>, ConceptError> {
        spec.check_order()?;
        let dir = self.run().transcoder_dir(spec.output);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ConceptError::Invalid(format!("{}: {e}", dir.display())))?;
        let fingerprint = self.transcoder_fingerprint(spec, upstream);
        // A loaded transcoder was trained elsewhere: no training rows of ours.
        let train_rows = match spec.load {
            Some(_) => 0,
            None => count_rows(&mut self.paired(spec, Split::Train)?)?,
        };
        let (transcoder, training, source) = match &spec.load {
            Some(folder) => {
                let loaded = transcoder_formats::load(folder)?;
                // The files may name other hooks (another tool's names, another layer): the
                // spec decides, and the difference is said.
                for (file_hook, asked) in [
                    (&loaded.input_hook, spec.input),
                    (&loaded.output_hook, spec.output),
                ] {
                    if let Some(h) = file_hook.as_deref().filter(|h| *h != asked.to_string()) {
                        self.progress().note(&format!(
                            "dictionary: {} names hook `{h}`; used at `{asked}` as given",
                            folder.display()
                        ));
                    }
                }
                (loaded.transcoder, None, "loaded")
            }
            None => match reusable(&dir, &fingerprint) {
                Some(t) => {
                    self.progress().note(&format!(
                        "dictionary: transcoder {spec} is up to date; re-explaining"
                    ));
                    (t, None, "trained")
                }
                None => {
                    let checkpoint = dir.join("checkpoint.safetensors");
                    let control = FitControl {
                        checkpoint: Some(&checkpoint),
                        fingerprint: fingerprint.clone(),
                        pause_after,
                    };
                    let objective = Objective::Transcode { skip: spec.skip };
                    let fitted = fit_for(
                        objective,
                        self.paired(spec, Split::Train)?,
                        train_rows,
                        self.sae_options(),
                        &control,
                        self.progress(),
                    )?;
                    if !fitted.complete {
                        return Ok(None);
                    }
                    let t = Transcoder {
                        sae: fitted.sae.clone(),
                        w_skip: fitted.w_skip.clone(),
                    };
                    (t, Some(fitted), "trained")
                }
            },
        };
        let width = self.rows(spec.input, Split::All)?.width();
        if transcoder.sae.d_in != width {
            return Err(ConceptError::Invalid(format!(
                "transcoder {spec}: its d_in is {} but `{}` has width {width}; load it for hooks of that width",
                transcoder.sae.d_in, spec.input
            )));
        }
        // Held-out rows for a trained one; every stored row for a loaded one (and when no
        // example was held out). The metrics count their rows: no separate counting pass.
        let held_out = spec.load.is_none();
        let split = if held_out { Split::Eval } else { Split::All };
        let mut metrics = evaluate(
            &transcoder,
            &mut self.paired(spec, split)?,
            self.bootstrap(),
        )?;
        if held_out && metrics.tokens == 0 {
            self.progress().note("dictionary: no held-out examples (eval_fraction too small); the transcoder's metrics are on the training rows");
            metrics = evaluate(
                &transcoder,
                &mut self.paired(spec, Split::All)?,
                self.bootstrap(),
            )?;
        }
        let eval_rows = metrics.tokens;
        let mut extra = serde_json::Map::new();
        extra.insert("glassbox_fingerprint".into(), json!(fingerprint));
        extra.insert("glassbox_options".into(), json!(self.sae_options()));
        if let Some(folder) = &spec.load {
            extra.insert("loaded_from".into(), json!(folder.display().to_string()));
        }
        let provenance = TranscoderProvenance {
            model_name: model_name(self.run()),
            input: spec.input,
            output: spec.output,
            extra,
        };
        let formats = transcoder_formats::save(&dir, &transcoder, &provenance)?;
        write_metrics(
            &dir,
            spec.output,
            &format!("{source} transcoder"),
            &metrics,
            None,
            training.as_ref(),
            train_rows,
            eval_rows,
            self.sae_options(),
        )?;
        add_transcoder_block(&dir, spec, &transcoder, &formats, training.as_ref())?;
        let checkpoint = dir.join("checkpoint.safetensors");
        if checkpoint.exists() {
            std::fs::remove_file(&checkpoint)
                .map_err(|e| ConceptError::Invalid(format!("{}: {e}", checkpoint.display())))?;
        }
        // Its features fire on the input hook's rows; their decoder rows write into the output
        // hook's space, so they are compared with the directions found there.
        self.explain_units_at(
            spec.input,
            spec.output,
            &dir,
            Units::Features(&transcoder.sae),
        )?;
        Ok(Some(summary(
            spec.output,
            &format!("transcoder from {}", spec.input),
            &transcoder.sae,
            metrics,
            None,
            training.as_ref(),
        )))
    }

    /// Where a paused transcoder stands: (step, steps).
    fn transcoder_paused_at(&self, spec: &TranscoderSpec) -> Result<(usize, usize), ConceptError> {
        let checkpoint = self
            .run()
            .transcoder_dir(spec.output)
            .join("checkpoint.safetensors");
        let (_, meta) = crate::sae::tensors_metadata(&checkpoint)?;
        let step = meta.get("step").and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut rows = self.paired(spec, Split::Train)?;
        let d = rows.width() / 2;
        let resolved = self.sae_options().resolve(d, count_rows(&mut rows)?)?;
        Ok((step, resolved.steps))
    }
}

impl<T: StageRows> Transcoders for T {}

type Paired = PairedRows<StoreRows, StoreRows>;

/// The transcoder saved by an earlier run with the same training fingerprint, if any.
fn reusable(dir: &Path, fingerprint: &str) -> Option<Transcoder> {
    ["sparsify", "saelens"]
        .iter()
        .filter_map(|f| transcoder_formats::load(&dir.join(f)).ok())
        .find(|l| l.fingerprint.as_deref() == Some(fingerprint))
        .map(|l| l.transcoder)
}

/// `metrics.json`'s `transcoder` block: what it maps, how, and where the files are.
fn add_transcoder_block(
    dir: &Path,
    spec: &TranscoderSpec,
    t: &Transcoder,
    formats: &[&str],
    training: Option<&crate::sae::fit::Fitted>,
) -> Result<(), ConceptError> {
    let block = json!({
        "input_hook": spec.input,
        "output_hook": spec.output,
        "skip_connection": t.w_skip.is_some(),
        "architecture": t.sae.architecture.name(),
        "k": match t.sae.architecture { Architecture::TopK { k } => Some(k), _ => None },
        "formats": formats,
        "target_scale": training.and_then(|f| f.target_scale),
        "definitions": {
            "sae": "metrics of the prediction ŷ of the output hook from the input hook's rows: fvu = ‖y − ŷ‖² / ‖y − ȳ‖² over the held-out tokens",
        },
    });
    crate::dictionary_outputs::add_to_metrics(dir, "transcoder", block)
}
