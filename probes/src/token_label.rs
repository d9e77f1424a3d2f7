//! A token-level label's probed rows and split, made exactly as the probe stage makes them
//! (class cap, classes left out, `split_by`, seed), with the token rows of any hook: for stages
//! that refit on a token-level probe's rows (the causal stage's LEACE erasure), and each
//! token's own class for readouts that read it.

use crate::labels::{token_labels, LabelSet, Target};
use crate::prepare::{prepare, Prepared};
use crate::{features, ProbeOptions, Result, Split};
use glassbox_data::examples::read_examples;
use glassbox_data::tokens::{read_tokens, Tokens};
use glassbox_data::{HookPoint, Pool, RunDir};
use std::collections::HashMap;

/// A token-level label of a run, prepared as the probe stage prepares it.
pub struct TokenLabel {
    set: LabelSet,
    prepared: Prepared,
    tokens: Tokens,
    example_ids: Vec<u64>,
}

impl TokenLabel {
    /// Reads the run's examples and tokens and prepares the token-level label `name` (a column
    /// of per-word lists or a built-in labeler) under `opts`.
    pub fn prepare(run: &RunDir, name: &str, opts: &ProbeOptions) -> Result<Self> {
        let examples = read_examples(run)?;
        let tokens = read_tokens(run)?;
        let source = run.examples().display().to_string();
        let set = token_labels(&examples, &tokens, name, &source)?;
        let prepared = prepare(&set, opts, &examples.splits_by_id())?;
        Ok(Self {
            set,
            prepared,
            tokens,
            example_ids: examples.example_ids,
        })
    }

    /// Class of each probed row, index into [`Self::names`].
    pub fn classes(&self) -> &[usize] {
        &self.prepared.classes
    }

    /// Class names; empty for a numeric label.
    pub fn names(&self) -> &[String] {
        &self.prepared.names
    }

    /// The probe's split of the probed rows (by text under `split_by = "text"`).
    pub fn split(&self) -> &Split {
        &self.prepared.split
    }

    /// The probed rows' activations at `hook`, row-major, and their width.
    pub fn rows(&self, run: &RunDir, hook: HookPoint) -> Result<(Vec<f32>, usize)> {
        features::load(
            run,
            hook,
            Pool::Mean,
            &self.set,
            &self.prepared.rows,
            &self.example_ids,
            &self.tokens,
        )
    }
}

/// Each labelled token's class under a token-level label, and each example's token count: what
/// a readout of every token's own class needs.
#[derive(Debug, Clone, Default)]
pub struct TokenClasses {
    /// Class name by (example id, position), for every token the label gives a class.
    pub by_token: HashMap<(u64, u32), String>,
    /// Tokens of each example in `tokens.parquet`, by example id.
    pub lengths: HashMap<u64, usize>,
}

/// Reads the run's examples and tokens and resolves the token-level label `name` (all of its
/// tokens, not only the rows a probe was fitted on).
pub fn token_classes(run: &RunDir, name: &str) -> Result<TokenClasses> {
    let examples = read_examples(run)?;
    let tokens = read_tokens(run)?;
    let source = run.examples().display().to_string();
    let set = token_labels(&examples, &tokens, name, &source)?;
    let mut out = TokenClasses::default();
    for &e in &tokens.example_ids {
        *out.lengths.entry(e).or_default() += 1;
    }
    if let Target::Classes { classes, names } = &set.target {
        for (&t, &c) in set.items.iter().zip(classes) {
            out.by_token.insert(
                (tokens.example_ids[t], tokens.positions[t]),
                names[c].clone(),
            );
        }
    }
    Ok(out)
}
