//! The dictionary stage's checks before it starts (settings against the store's hooks).

use crate::dictionary::DictionaryOptions;
use crate::ConceptError;
use glassbox_data::store::PartStream;
use glassbox_data::HookPoint;
use glassbox_data::RunDir;
use std::path::PathBuf;

/// Everything about `options` that can be checked before the stage starts: something to do,
/// every hook in the store's token rows, the SAE options valid for each hook's width (`k <
/// width`, a finite positive learning rate, …), every SAE to load readable and of the right
/// width. Reads only the hooks' first parts.
pub fn check(run: &RunDir, options: &DictionaryOptions) -> Result<(), ConceptError> {
    if options.nothing_to_do() {
        return Err(ConceptError::Invalid(
            "[dictionary] names no hooks, no SAEs to load, no transcoders and no neuron hooks: \
             nothing to do"
                .into(),
        ));
    }
    // A hook, SAE, label or k named twice would be trained or scored twice and its rows
    // written twice under one key.
    use glassbox_data::limits::each_once;
    each_once("hooks", &options.hooks)
        .and_then(|()| each_once("load", &options.load))
        .and_then(|()| each_once("neurons", &options.neurons))
        .and_then(|()| each_once("labels", &options.labels))
        .and_then(|()| each_once("token_labels", &options.token_labels))
        .and_then(|()| each_once("sparse_probing.k", &options.sparse_probing.k))
        .map_err(|e| ConceptError::Invalid(format!("[dictionary] {e}")))?;
    options.sparse_probing.validate()?;
    options.absorption.validate()?;
    let width_of = |hook: HookPoint| -> Result<usize, ConceptError> {
        let dir = run.activations_dir(hook);
        let first = glassbox_data::run::list_parts(&dir)?.into_iter().next();
        let Some(part) = first else {
            let stored = run.stored_hooks(false).unwrap_or_default();
            return Err(ConceptError::Invalid(format!(
                "hook `{hook}` is not in the store's token-level activations ({}); stored hooks: {}. \
                 Extract it (with token_level = true) or pick a stored one",
                dir.display(),
                if stored.is_empty() { "none".to_owned() } else { glassbox_data::hook_point::join(&stored) }
            )));
        };
        // The width from the first batch: stores written by other tools carry no metadata.
        let mut stream = PartStream::open(&dir)?;
        match stream.next_batch()? {
            Some(batch) => Ok(batch.width),
            None => Err(ConceptError::Invalid(format!(
                "{}: holds no rows",
                part.display()
            ))),
        }
    };
    for hook in &options.hooks {
        options.sae.resolve(width_of(*hook)?, 1)?;
    }
    for hook in &options.neurons {
        width_of(*hook)?;
    }
    for spec in &options.transcoders {
        spec.check_order()?;
        let (input, output) = (width_of(spec.input)?, width_of(spec.output)?);
        if input != output {
            return Err(ConceptError::Invalid(format!(
                "[[dictionary.transcoders]] {spec}: `{}` has width {input} and `{}` {output}; \
                 a transcoder maps between hooks of one width (blocks.L.hook_resid_mid → \
                 blocks.L.hook_mlp_out)",
                spec.input, spec.output
            )));
        }
        match &spec.load {
            Some(folder) => {
                crate::sae::transcoder_formats::load(folder)?;
            }
            None => {
                options.sae.resolve(input, 1)?;
            }
        }
    }
    for spec in &options.load {
        let folder = match spec.split_once('=') {
            Some((h, f)) if !h.contains('/') => PathBuf::from(f),
            _ => PathBuf::from(spec),
        };
        crate::sae::formats::load_with(&folder, options.allow_pickle)?;
    }
    Ok(())
}
