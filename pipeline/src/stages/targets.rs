//! TCAV targets: what a target spec names (`probe:<label>=<class>[@<hook>]`, `token:<text>`)
//! and its resolution against a run into a linear head on a hook and the examples to score.

use anyhow::{anyhow, bail, Result};
use glassbox_data::examples::read_examples;
use glassbox_data::RunDir;
use glassbox_models::{HookPoint, LoadedModel, Pool};
use glassbox_runner::gradients::LinearHead;

pub use glassbox_concepts::target::TargetSpec as ProbeTarget;

/// The probe head a target names, and the examples of its class.
pub(crate) struct ResolvedTarget {
    pub(crate) head: LinearHead,
    pub(crate) examples: Vec<usize>,
    /// The probe's classes in output order (empty for `token:` targets).
    pub(crate) classes: Vec<String>,
    /// The L2 strength the probe was fitted with (NaN for `token:` targets).
    pub(crate) l2: f64,
}

pub(crate) fn resolve_target(
    run: &RunDir,
    model: &LoadedModel,
    target: &ProbeTarget,
) -> Result<ResolvedTarget> {
    if let Some(text) = &target.token {
        return resolve_token_target(run, model, &target.spec, text);
    }
    if let Some(name) = &target.head_class {
        return resolve_class_target(run, model, &target.spec, name);
    }
    let results = glassbox_probes::read_results(run)?;
    let rows: Vec<_> = results
        .iter()
        .filter(|r| r.label == target.label && r.level == "sequence" && r.metric == "accuracy")
        .collect();
    if rows.is_empty() {
        // Say why when the label was probed, but not as a sequence-level classifier.
        let probed = |level: &str, metric: &str| {
            results
                .iter()
                .any(|r| r.label == target.label && r.level == level && r.metric == metric)
        };
        if probed("token", "accuracy") {
            bail!(
                "target `{}`: `{}` is probed per token, and a target is one number per example; probe a sequence-level label (a column of examples.parquet, `glassbox probe --label COLUMN`)",
                target.spec,
                target.label
            );
        }
        if probed("sequence", "r2") {
            bail!(
                "target `{}`: `{}` is a numeric label (its probe is a regression with no classes); target a classification probe's class",
                target.spec,
                target.label
            );
        }
        bail!(
            "target `{}`: no sequence-level classification probe for label `{}` in this run; probe it first (labels probed: {})",
            target.spec,
            target.label,
            results.iter().map(|r| r.label.as_str()).collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let row = match target.hook {
        Some(h) => rows.iter().find(|r| r.hook == h).ok_or_else(|| {
            anyhow!(
                "target `{}`: no probe at hook `{h}`; probed hooks: {}",
                target.spec,
                rows.iter()
                    .map(|r| r.hook.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?,
        None => rows
            .iter()
            .max_by(|a, b| a.depth.total_cmp(&b.depth))
            .expect("not empty"),
    };
    let weights = glassbox_probes::read_weights(run)?;
    let w = weights
        .iter()
        .find(|w| w.level == "sequence" && w.label == target.label && w.hook == row.hook)
        .ok_or_else(|| anyhow!("target `{}`: probes/weights.safetensors lacks the probe at `{}`; re-run `glassbox probe --force`", target.spec, row.hook))?;
    let class = w
        .classes
        .iter()
        .position(|c| *c == target.class)
        .ok_or_else(|| {
            anyhow!(
                "target `{}`: class `{}` unknown; the probe's classes are {}",
                target.spec,
                target.class,
                w.classes.join(", ")
            )
        })?;
    let hook = row.hook;
    let pool: Pool = row.pool.parse()?;
    let examples = read_examples(run)?;
    let column = examples.column(&target.label).ok_or_else(|| {
        anyhow!(
            "target `{}`: examples.parquet has no column `{}`",
            target.spec,
            target.label
        )
    })?;
    let members: Vec<usize> = column
        .values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.class_name().as_deref() == Some(target.class.as_str()))
        .map(|(i, _)| i)
        .collect();
    Ok(ResolvedTarget {
        head: LinearHead {
            hook,
            pool,
            weight: w.weight.clone(),
            bias: w.bias.clone(),
            n_classes: w.classes.len(),
            class,
            pooler: None,
        },
        examples: members,
        classes: w.classes.clone(),
        l2: row.l2,
    })
}

/// `token:<text>`: the unembedding row of `<text>`'s one token applied to the final norm at each
/// example's last real token — the logit of `<text>` coming next — over every example.
/// A text classifier's own class logit, read off its last hidden states as its head does (BERT:
/// `[CLS]` through the pooler and classifier; decoders: the `score` head at the last token),
/// over every example.
fn resolve_class_target(
    run: &RunDir,
    model: &LoadedModel,
    spec: &str,
    name: &str,
) -> Result<ResolvedTarget> {
    let labels = model.model.labels();
    let parts = model.model.class_head_parts().ok_or_else(|| {
        anyhow!(
            "target `{spec}`: the {} model has no class head (a sequence-classification checkpoint has one); use probe:<label>=<class> or token:<text>",
            model.model.family()
        )
    })??;
    let class = super::class_names::class_index(labels, name)
        .map_err(|e| anyhow!("target `{spec}`: {e}"))?;
    let n = read_examples(run)?.texts.len();
    Ok(ResolvedTarget {
        head: LinearHead {
            hook: parts.hook,
            pool: parts.pool,
            weight: parts.weight,
            bias: parts.bias,
            n_classes: labels.len(),
            class,
            pooler: parts.pooler.map(Box::new),
        },
        examples: (0..n).collect(),
        classes: labels.to_vec(),
        l2: f64::NAN,
    })
}

fn resolve_token_target(
    run: &RunDir,
    model: &LoadedModel,
    spec: &str,
    text: &str,
) -> Result<ResolvedTarget> {
    let unembedding = model.model.unembedding().ok_or_else(|| {
        anyhow!(
            "target `{spec}`: token targets need a causal LM; {}",
            glassbox_models::why_no_next_token(model.model.as_ref())
        )
    })?;
    let encoded = model.tokenizer()?.encode(&[text])?.remove(0);
    let ids: Vec<(u32, &String)> = encoded
        .ids
        .iter()
        .zip(&encoded.tokens)
        .zip(&encoded.spans)
        .filter(|(_, span)| span.is_some())
        .map(|((id, tok), _)| (*id, tok))
        .collect();
    let [(id, _)] = ids.as_slice() else {
        bail!(
            "target `{spec}`: `{text}` is {} tokens ({}), not one; pick a string the tokenizer keeps whole (a leading space often matters)",
            ids.len(),
            ids.iter().map(|(_, t)| format!("`{t}`")).collect::<Vec<_>>().join(" ")
        );
    };
    let row: Vec<f32> = unembedding
        .get(*id as usize)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    let n = read_examples(run)?.texts.len();
    Ok(ResolvedTarget {
        head: LinearHead {
            hook: HookPoint::LnFinal,
            pool: Pool::Last,
            weight: row,
            bias: vec![0.0],
            // One output read as a binary head's logit: the loss convention then uses
            // −log σ(logit), the cross-entropy of "this token comes next".
            n_classes: 2,
            class: 1,
            pooler: None,
        },
        examples: (0..n).collect(),
        classes: Vec::new(),
        l2: f64::NAN,
    })
}
