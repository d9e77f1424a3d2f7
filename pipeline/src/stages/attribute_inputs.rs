//! The attribute stage's inputs: its targets resolved against the model (and the run's
//! probes), and the run's examples as explainable subjects — tokenised texts or preprocessed
//! images.

use super::targets::{resolve_target, ProbeTarget};
use anyhow::{anyhow, bail, Context, Result};
use glassbox_data::examples::read_examples;
use glassbox_data::images::{read_image_dataset, ImageDataset, Preprocessor};
use glassbox_data::{Modality, RunDir};
use glassbox_models::tokenizer::Encoded;
use glassbox_models::{Capture, HookPoint, LoadedModel};
use glassbox_runner::attribution::image_oracle::ImageOracle;
use glassbox_runner::attribution::oracle::{Target, TextOracle};
use glassbox_runner::attribution::Subject;

/// A target spec, resolved.
#[derive(Debug, Clone)]
pub(crate) enum TargetKind {
    /// A fixed combination (class, class difference, token, token difference, probe).
    Fixed(Target),
    /// `class:predicted`: each example's own top class (image or text classifiers).
    Predicted,
}

/// The examples of a run, ready to explain.
pub(crate) enum Inputs {
    /// Tokenised texts: `(example id, tokens, predicted class)`, the class where the model is a
    /// text classifier.
    Texts(Vec<(u64, Encoded, Option<usize>)>),
    /// Preprocessed images with their predicted class.
    Images {
        /// `(example id, pixels, predicted class)`.
        images: Vec<(u64, Vec<f32>, usize)>,
        /// Rows and columns of every image.
        size: (usize, usize),
    },
}

impl Inputs {
    pub(crate) fn len(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.len(),
            Inputs::Images { images, .. } => images.len(),
        }
    }
}

/// One token's id; an error when `text` is not exactly one token.
fn one_token(model: &LoadedModel, spec: &str, text: &str) -> Result<u32> {
    let ids = model.tokenizer()?.encode_plain(text)?;
    match ids.as_slice() {
        [(id, _)] => Ok(*id),
        _ => bail!(
            "target `{spec}`: `{text}` is {} tokens ({}), not one; pick a string the tokenizer keeps whole (a leading space often matters)",
            ids.len(),
            ids.iter().map(|(_, t)| format!("`{t}`")).collect::<Vec<_>>().join(" ")
        ),
    }
}

/// The unembedding row of a token (an LM's next-token direction).
fn unembedding_row(model: &LoadedModel, spec: &str, id: u32) -> Result<Vec<f32>> {
    let u = model.model.unembedding().ok_or_else(|| {
        anyhow!(
            "target `{spec}`: token targets need a causal LM; {}",
            glassbox_models::why_no_next_token(model.model.as_ref())
        )
    })?;
    Ok(u.get(id as usize)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?)
}

/// A class index by name, or an error listing the model's classes.
fn class_index(model: &LoadedModel, spec: &str, name: &str) -> Result<usize> {
    let labels = model.model.labels();
    if labels.is_empty() {
        if model.modality() == Modality::Vision {
            bail!(
                "target `{spec}`: this {} checkpoint has no class head (its outputs are features, not class logits), so there is no class to explain; an image–text model explains text:<prompt> (its zero-shot logit), else load a classifier checkpoint (…ForImageClassification)",
                model.model.family()
            );
        }
        bail!(
            "target `{spec}`: the {} model has no class head; use token:TEXT or logit_diff:A|B (LMs) or probe:LABEL=CLASS",
            model.model.family()
        );
    }
    super::class_names::class_index(labels, name).map_err(|e| anyhow!("target `{spec}`: {e}"))
}

/// Resolves one target spec against the model (and, for probes, the run).
pub(crate) fn resolve(run: &RunDir, model: &LoadedModel, spec: &str) -> Result<TargetKind> {
    let (kind, rest) = spec.split_once(':').ok_or_else(|| {
        anyhow!("target `{spec}`: use class:LABEL, token:TEXT, logit_diff:A|B or probe:LABEL=CLASS[@HOOK]")
    })?;
    let image = model.modality() == Modality::Vision;
    // Image models and text classifiers (a class head, no unembedding) are explained through
    // their class logits.
    let classifier = image || !model.model.labels().is_empty();
    let outputs = |weights: Vec<f32>| TargetKind::Fixed(Target::Outputs { weights });
    Ok(match kind.trim() {
        "class" if classifier && rest == "predicted" => {
            if model.model.labels().is_empty() {
                // Outputs that are not class logits (a CLIP tower): its error says so.
                class_index(model, spec, rest)?;
            }
            TargetKind::Predicted
        }
        "class" => {
            let k = class_index(model, spec, rest)?;
            let mut w = vec![0f32; model.model.labels().len()];
            w[k] = 1.0;
            outputs(w)
        }
        "logit_diff" => {
            let (a, b) = rest.split_once('|').ok_or_else(|| {
                anyhow!("target `{spec}`: logit_diff takes two names separated by `|`, e.g. logit_diff: Mary| John")
            })?;
            if classifier && model.model.unembedding().is_none() {
                // Class logits: image models and text classifiers (no language-model head).
                let (a, b) = (class_index(model, spec, a)?, class_index(model, spec, b)?);
                if a == b {
                    bail!("target `{spec}`: both sides name class {a}; the difference is 0 for every input — name two different classes");
                }
                let mut w = vec![0f32; model.model.labels().len()];
                w[a] += 1.0;
                w[b] -= 1.0;
                outputs(w)
            } else {
                let (ia, ib) = (one_token(model, spec, a)?, one_token(model, spec, b)?);
                if ia == ib {
                    bail!("target `{spec}`: both sides are token {ia}; the difference is 0 for every input — name two different tokens");
                }
                TargetKind::Fixed(Target::NextToken {
                    row: unembedding_row(model, spec, ia)?,
                    minus: Some(unembedding_row(model, spec, ib)?),
                })
            }
        }
        "text" if image => outputs(super::tcav_vision::text_prompt_row(model, spec, rest.trim())?),
        "token" if !image => {
            let row = unembedding_row(model, spec, one_token(model, spec, rest)?)?;
            TargetKind::Fixed(Target::NextToken { row, minus: None })
        }
        "probe" => {
            let parsed = ProbeTarget::parse(spec)?;
            let resolved = resolve_target(run, model, &parsed)?;
            TargetKind::Fixed(Target::Probe(resolved.head))
        }
        "token" => bail!(
            "target `{spec}`: token: targets are for text models; this {} model reads images — use class:LABEL, logit_diff:A|B, probe:LABEL=CLASS[@HOOK] or (CLIP) text:PROMPT",
            model.model.family()
        ),
        other => bail!(
            "target `{spec}`: unknown kind `{other}`; use class:LABEL, token:TEXT, logit_diff:A|B, probe:LABEL=CLASS[@HOOK] or (CLIP) text:PROMPT"
        ),
    })
}

/// Whether two resolved targets are the same function of the input: `class:tabby` and
/// `class:281`, or a probe named with and without its (deepest) hook, would be computed twice
/// and ranked against each other.
fn same_target(a: &TargetKind, b: &TargetKind) -> bool {
    match (a, b) {
        (TargetKind::Predicted, TargetKind::Predicted) => true,
        (TargetKind::Fixed(a), TargetKind::Fixed(b)) => match (a, b) {
            (Target::Outputs { weights: x }, Target::Outputs { weights: y }) => x == y,
            (Target::NextToken { row: x, minus: mx }, Target::NextToken { row: y, minus: my }) => {
                x == y && mx == my
            }
            (Target::Probe(x), Target::Probe(y)) => x.same_score(y),
            _ => false,
        },
        _ => false,
    }
}

/// Refuses two target specs that resolve to the same target.
pub(crate) fn refuse_repeats(targets: &[(String, TargetKind)]) -> Result<()> {
    let same = |a: &(String, TargetKind), b: &(String, TargetKind)| same_target(&a.1, &b.1);
    if let Some((i, j)) = glassbox_data::limits::first_repeat_by(targets, same) {
        bail!(
            "attribute: targets `{}` and `{}` name the same target; list it once",
            targets[i].0,
            targets[j].0
        );
    }
    Ok(())
}

/// The run's first `max` examples.
pub(crate) fn read_inputs(run: &RunDir, model: &LoadedModel, max: usize) -> Result<Inputs> {
    let examples = read_examples(run)?;
    let n = examples.texts.len().min(max);
    if n == 0 {
        bail!(
            "{}: examples.parquet has no examples to explain",
            run.root().display()
        );
    }
    if model.modality() == Modality::Text {
        let tokenizer = model.tokenizer()?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let encoded = tokenizer.encode(&[examples.texts[i].as_str()])?.remove(0);
            let predicted = predicted_class(model, &encoded)?;
            out.push((examples.example_ids[i], encoded, predicted));
        }
        return Ok(Inputs::Texts(out));
    }
    let manifest = run.require_stage("extract")?;
    let path = manifest
        .data
        .as_ref()
        .map(|d| d.locate())
        .ok_or_else(|| anyhow!("{}: the manifest records no data set", run.root().display()))?;
    let data: ImageDataset = read_image_dataset(&path)
        .with_context(|| format!("the run's images at {}", path.display()))?;
    let pre: Preprocessor = model.preprocessor()?;
    let mut images = Vec::with_capacity(n);
    let mut size = (0, 0);
    for i in 0..n {
        let batch = glassbox_runner::extract::image_batch(&data, &pre, i..i + 1)?;
        size = (batch.height, batch.width);
        let out = model.model.forward(
            (&batch).into(),
            &mut Capture::new(std::iter::empty::<HookPoint>()),
        )?;
        let scores: Vec<f32> = out.flatten_all()?.to_vec1()?;
        let predicted = top(&scores).unwrap_or(0);
        images.push((examples.example_ids[i], batch.pixels, predicted));
    }
    Ok(Inputs::Images { images, size })
}

/// A text classifier's top class for one text (`None`: the model has no class head).
fn predicted_class(model: &LoadedModel, encoded: &Encoded) -> Result<Option<usize>> {
    if model.model.labels().is_empty() {
        return Ok(None);
    }
    let batch = glassbox_models::TokenBatch::from_encoded(&[encoded], model.pad_id, &model.device)?;
    let last = model.model.forward(
        (&batch).into(),
        &mut Capture::new(std::iter::empty::<HookPoint>()),
    )?;
    let Some(logits) = model.model.classify(&last, &batch.lengths) else {
        return Ok(None);
    };
    let scores: Vec<f32> = logits?.flatten_all()?.to_vec1()?;
    Ok(top(&scores))
}

/// The index of the largest score.
fn top(scores: &[f32]) -> Option<usize> {
    scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(k, _)| k)
}

/// The embedding row the `mask` baseline uses: the tokenizer's mask token, else its padding or
/// unknown token.
pub(crate) fn mask_token(model: &LoadedModel) -> Option<u32> {
    let tokenizer = model.tokenizer().ok()?;
    ["[MASK]", "<mask>", "[PAD]", "<pad>", "[UNK]", "<unk>"]
        .iter()
        .find_map(|t| tokenizer.token_id(t))
}

pub(crate) use glassbox_runner::attribution::default_cam_hook;

/// One subject per example of `inputs` for `target` on `model`.
pub(crate) fn subject<'a>(
    model: &'a LoadedModel,
    inputs: &Inputs,
    i: usize,
    target: &TargetKind,
    batch: usize,
) -> Result<Subject<'a>> {
    Ok(match inputs {
        Inputs::Texts(texts) => {
            let t = match (target, texts[i].2) {
                (TargetKind::Fixed(t), _) => t.clone(),
                (TargetKind::Predicted, Some(k)) => one_hot(model, k),
                (TargetKind::Predicted, None) => {
                    return Err(anyhow!("class:predicted is for classifiers (image models, or text models with a class head)"))
                }
            };
            Subject::Text(TextOracle::new(model, texts[i].1.clone(), t, batch)?)
        }
        Inputs::Images { images, size } => {
            let t = match target {
                TargetKind::Fixed(t) => t.clone(),
                TargetKind::Predicted => one_hot(model, images[i].2),
            };
            Subject::Image(ImageOracle::new(
                model,
                images[i].1.clone(),
                *size,
                &t,
                batch,
            )?)
        }
    })
}

/// Class `k`'s logit as a target.
fn one_hot(model: &LoadedModel, k: usize) -> Target {
    let mut weights = vec![0f32; model.model.labels().len()];
    weights[k] = 1.0;
    Target::Outputs { weights }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(k: usize) -> TargetKind {
        let mut weights = vec![0f32; 4];
        weights[k] = 1.0;
        TargetKind::Fixed(Target::Outputs { weights })
    }

    #[test]
    fn one_class_named_twice_is_refused_with_both_specs() {
        let targets = vec![
            ("class:tabby".to_string(), class(1)),
            ("class:2".to_string(), class(2)),
            ("class:281".to_string(), class(1)),
        ];
        let err = refuse_repeats(&targets).unwrap_err().to_string();
        assert!(err.contains("`class:tabby` and `class:281`"), "{err}");
        assert!(refuse_repeats(&targets[..2]).is_ok());
    }

    #[test]
    fn predicted_twice_is_a_repeat_but_not_a_fixed_class() {
        let targets = vec![
            ("class:predicted".to_string(), TargetKind::Predicted),
            ("class:0".to_string(), class(0)),
        ];
        assert!(refuse_repeats(&targets).is_ok());
        let twice = vec![
            targets[0].clone(),
            ("class: predicted".into(), TargetKind::Predicted),
        ];
        assert!(refuse_repeats(&twice).is_err());
    }
}
