//! Target pairs for the patch stage: each row's `target` resolved once per distinct spec — a
//! probe of the run (`probe:<label>=<class>[@<hook>]`, as TCAV reads it) or a classifier's
//! class (`class:<label>`) — and its inputs read the way the model reads them: texts tokenised
//! to equal lengths, or images (paths relative to the pairs file) preprocessed to one size.

use super::targets::{resolve_target, ProbeTarget};
use anyhow::{anyhow, bail, Context, Result};
use glassbox_data::images::load_rgb;
use glassbox_data::pairs::PromptPairs;
use glassbox_data::{Modality, Pool, RunDir};
use glassbox_models::LoadedModel;
use glassbox_runner::patching::{encode_pair, PairInput, TargetHead, TargetPair};
use std::collections::BTreeMap;
use std::path::Path;

/// Every row of `pairs` (which has targets) as a checked target pair.
pub(crate) fn prepare_target_pairs(
    run: &RunDir,
    model: &LoadedModel,
    pairs: &PromptPairs,
) -> Result<Vec<TargetPair>> {
    let targets = pairs.target.as_ref().expect("a target column");
    let file = pairs.source.display();
    let mut heads: BTreeMap<String, (TargetHead, usize)> = BTreeMap::new();
    let mut out = Vec::with_capacity(pairs.len());
    for (row, spec) in targets.iter().enumerate() {
        let spec = spec.trim();
        if !heads.contains_key(spec) {
            let resolved = resolve(run, model, spec)
                .with_context(|| format!("{file}: row {}: column `target`", row + 1))?;
            heads.insert(spec.to_owned(), resolved);
        }
        let (head, class) = heads[spec].clone();
        let (clean, corrupted) = match model.modality() {
            Modality::Text => texts(model, pairs, row)?,
            Modality::Vision => images(model, pairs, row)?,
        };
        out.push(TargetPair {
            row,
            clean,
            corrupted,
            target: spec.to_owned(),
            head,
            class,
        });
    }
    Ok(out)
}

fn resolve(run: &RunDir, model: &LoadedModel, spec: &str) -> Result<(TargetHead, usize)> {
    if let Some(name) = spec.strip_prefix("class:") {
        let labels = model.model.labels();
        if labels.is_empty() {
            bail!(
                "target `{spec}`: class: targets need a classifier, and the {} model has no class head; use probe:<label>=<class>",
                model.model.family()
            );
        }
        let class = super::class_names::class_index(labels, name)
            .map_err(|e| anyhow!("target `{spec}`: {e}"))?;
        let head = TargetHead {
            hook: None,
            pool: Pool::Mean,
            weight: Vec::new(),
            bias: Vec::new(),
        };
        return Ok((head, class));
    }
    let target = ProbeTarget::parse(spec)?;
    if run.require_stage("probe").is_err() {
        bail!(
            "target `{spec}` names a probe, but {} has no probe stage; run `glassbox probe` on this run first",
            run.root().display()
        );
    }
    let resolved = resolve_target(run, model, &target)?;
    let h = resolved.head;
    Ok((
        TargetHead {
            hook: Some(h.hook),
            pool: h.pool,
            weight: h.weight,
            bias: h.bias,
        },
        h.class,
    ))
}

fn texts(model: &LoadedModel, pairs: &PromptPairs, row: usize) -> Result<(PairInput, PairInput)> {
    let (clean, corrupted) = encode_pair(model.tokenizer()?, pairs, row)?;
    Ok((PairInput::Tokens(clean), PairInput::Tokens(corrupted)))
}

fn images(model: &LoadedModel, pairs: &PromptPairs, row: usize) -> Result<(PairInput, PairInput)> {
    let pre = model.preprocessor()?;
    let base = pairs.source.parent().unwrap_or(Path::new("."));
    let read = |column: &str, name: &str| -> Result<PairInput> {
        let path = base.join(name);
        let img = load_rgb(&path).with_context(|| {
            format!(
                "{}: row {}: column `{column}`: image paths are relative to the pairs file",
                pairs.source.display(),
                row + 1
            )
        })?;
        let (pixels, height, width) = pre.apply(&img, &path)?;
        Ok(PairInput::Image {
            pixels,
            height: height as usize,
            width: width as usize,
        })
    };
    let clean = read("clean", &pairs.clean[row])?;
    let corrupted = read("corrupted", &pairs.corrupted[row])?;
    if let (
        PairInput::Image {
            height: a,
            width: b,
            ..
        },
        PairInput::Image {
            height: c,
            width: d,
            ..
        },
    ) = (&clean, &corrupted)
    {
        if (a, b) != (c, d) {
            bail!(
                "{}: row {}: the clean image preprocesses to {b}×{a} but the corrupted one to {d}×{c}; set a crop so both have one size",
                pairs.source.display(),
                row + 1
            );
        }
    }
    Ok((clean, corrupted))
}
