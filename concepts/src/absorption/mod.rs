//! Feature absorption on the first-letter task (Chanin et al. 2024; SAEBench's `absorption`
//! eval), over the run's own tokens: a latent that should fire for "starts with S" stays silent
//! on some S-words because a more specific latent ("short") has absorbed the direction.
//!
//! Per hook with an SAE on a text run: the stored rows at whole-word tokens (`words`), split by
//! word into training and test words; a ground-truth logistic probe per letter on the model's
//! activations (`probes`); letters whose probe reaches `min_probe_f1` on the test words are
//! measured (`measure`): main latents by k-sparse probing with feature splitting, then the
//! absorption fraction and full absorption of every test token the probe gets right. Written to
//! `absorption.parquet` (per letter) and `absorption_tokens.parquet` (per token), summarised in
//! `metrics.json`. SAEBench runs this on a vocabulary sweep through prompts on models of ≥ 2B
//! parameters and needs 20 letters; here the letters the run's text supports are measured and
//! the summary says how many there were.

mod measure;
pub mod probes;
pub mod words;
mod write;

pub use measure::{LetterResult, TokenResult};
pub use write::write_tables;

use crate::sae::{Codes, Sae};
use crate::ConceptError;
use glassbox_probes::probe::Standardizer;
use serde::{Deserialize, Serialize};
use words::Words;

/// The `[dictionary.absorption]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AbsorptionOptions {
    /// Run it for every trained or loaded SAE on a text run. Default true.
    pub enabled: bool,
    /// Seeds the word split and the row sample.
    pub seed: u64,
    /// At most this many word tokens (a seeded sample; 0 keeps all). Default 20,000.
    pub max_tokens: usize,
    /// Fraction of the distinct words held out as test words. Default 0.3.
    pub test_fraction: f64,
    /// A letter is measured when its ground-truth probe's test F1 reaches this. Default 0.6
    /// (SAEBench's `min_GT_probe_f1`).
    pub min_probe_f1: f64,
    /// Feature splitting: k grows while the k-sparse probe's F1 rises by more than this.
    /// Default 0.03.
    pub f1_jump: f64,
    /// Largest k tried. Default 10.
    pub max_k: usize,
    /// Letters need at least this many training and this many test tokens. Default 5.
    pub min_tokens: usize,
}

impl Default for AbsorptionOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            seed: 0,
            max_tokens: 20_000,
            test_fraction: 0.3,
            min_probe_f1: 0.6,
            f1_jump: 0.03,
            max_k: 10,
            min_tokens: 5,
        }
    }
}

impl AbsorptionOptions {
    pub fn validate(&self) -> Result<(), ConceptError> {
        let bad = |m: String| {
            Err(ConceptError::Invalid(format!(
                "[dictionary.absorption] {m}"
            )))
        };
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return bad(format!(
                "test_fraction = {} must be between 0 and 1",
                self.test_fraction
            ));
        }
        if !(0.0..=1.0).contains(&self.min_probe_f1) || !self.f1_jump.is_finite() {
            return bad("min_probe_f1 must be in [0, 1] and f1_jump finite".into());
        }
        if self.max_k == 0 {
            return bad("max_k must be at least 1".into());
        }
        Ok(())
    }
}

/// The hook's absorption over the letters measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbsorptionSummary {
    /// Word tokens sampled, and letters with enough of them.
    pub word_tokens: usize,
    pub letters_with_tokens: usize,
    /// Letters whose probe passed the F1 gate (the metric averages over these).
    pub letters_measured: usize,
    /// SAEBench's minimum number of letters for its score (20).
    pub saebench_min_letters: usize,
    pub mean_absorption_fraction: Option<f64>,
    pub mean_full_absorption_rate: Option<f64>,
    /// Mean number of main latents per measured letter (1 = no feature splitting).
    pub mean_main_latents: Option<f64>,
    /// The best ground-truth probe F1 among the letters with tokens (what the gate saw).
    pub best_probe_f1: Option<f64>,
}

/// All of one hook's results.
pub struct Absorption {
    pub letters: Vec<LetterResult>,
    /// Letters with enough tokens whose probe failed the gate: (letter, test F1, training and
    /// test tokens).
    pub gated: Vec<(char, f64, usize, usize)>,
    pub tokens: Vec<TokenResult>,
    pub summary: AbsorptionSummary,
}

/// Measures `sae` on the sampled word rows.
pub fn measure_words(
    sae: &Sae,
    words: &Words,
    options: &AbsorptionOptions,
) -> Result<Absorption, ConceptError> {
    let codes = encode(sae, words)?;
    let train: Vec<usize> = (0..words.len()).filter(|&i| !words.test[i]).collect();
    let test: Vec<usize> = (0..words.len()).filter(|&i| words.test[i]).collect();
    let d = words.d;
    let std = Standardizer::fit(&words.x, d, &train);
    let x_train = std.gather(&words.x, d, &train, None);
    let (mut letters, mut gated, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    let mut with_tokens = 0;
    for letter in 0..26u8 {
        let count = |rows: &[usize]| rows.iter().filter(|&&i| words.letter[i] == letter).count();
        if count(&train) < options.min_tokens || count(&test) < options.min_tokens {
            continue;
        }
        with_tokens += 1;
        let y: Vec<usize> = train
            .iter()
            .map(|&i| usize::from(words.letter[i] == letter))
            .collect();
        let probe = probes::ground_truth(&x_train, d, &y, &std, 1.0);
        let predicted: Vec<bool> = test
            .iter()
            .map(|&i| probe.score(words.row(i)) > 0.0)
            .collect();
        let truth: Vec<bool> = test.iter().map(|&i| words.letter[i] == letter).collect();
        let probe_f1 = probes::f1(&predicted, &truth);
        if probe_f1 < options.min_probe_f1 {
            let letter = (b'a' + letter) as char;
            gated.push((letter, probe_f1, count(&train), count(&test)));
            continue;
        }
        let data = measure::LetterData {
            words,
            codes: &codes,
            letter,
            train: &train,
            test: &test,
        };
        let (result, letter_tokens) = measure::measure(sae, &data, &probe, probe_f1, options);
        letters.push(result);
        tokens.extend(letter_tokens);
    }
    let mean = |f: &dyn Fn(&LetterResult) -> f64| {
        (!letters.is_empty()).then(|| letters.iter().map(f).sum::<f64>() / letters.len() as f64)
    };
    let summary = AbsorptionSummary {
        word_tokens: words.len(),
        letters_with_tokens: with_tokens,
        letters_measured: letters.len(),
        saebench_min_letters: 20,
        mean_absorption_fraction: mean(&|l| l.mean_absorption_fraction),
        mean_full_absorption_rate: mean(&|l| l.full_absorption_rate()),
        mean_main_latents: mean(&|l| l.main_latents.len() as f64),
        best_probe_f1: letters
            .iter()
            .map(|l| l.probe_f1)
            .chain(gated.iter().map(|g| g.1))
            .reduce(f64::max),
    };
    Ok(Absorption {
        letters,
        gated,
        tokens,
        summary,
    })
}

fn encode(sae: &Sae, words: &Words) -> Result<Codes, ConceptError> {
    let mut parts = Vec::new();
    for chunk in words.x.chunks(4096 * words.d) {
        parts.push(sae.encode(chunk)?);
    }
    Ok(Codes::concat(parts))
}

/// The dictionary stage's step for one SAE: collects the hook's word rows, measures and writes
/// the two tables into `dir` (the stage adds [`metrics_block`] to `metrics.json`). `None` when
/// disabled or when no letter has enough tokens (then nothing is written).
pub fn run_for_hook<S: crate::sae::stream::RowSource>(
    dir: &std::path::Path,
    sae: &Sae,
    rows: &mut S,
    tokens: &glassbox_data::tokens::Tokens,
    options: &AbsorptionOptions,
    progress: &dyn glassbox_data::Progress,
) -> Result<Option<AbsorptionSummary>, ConceptError> {
    if !options.enabled {
        return Ok(None);
    }
    progress.note("dictionary: feature absorption on the first-letter task");
    let words = words::collect(
        rows,
        tokens,
        options.max_tokens,
        options.test_fraction,
        options.seed,
    )?;
    let a = measure_words(sae, &words, options)?;
    if a.summary.letters_with_tokens == 0 {
        return Ok(None);
    }
    write_tables(dir, &a, &words)?;
    Ok(Some(a.summary))
}

/// `metrics.json`'s `absorption` block: the summary, the options and the definitions.
pub fn metrics_block(
    summary: &AbsorptionSummary,
    options: &AbsorptionOptions,
) -> serde_json::Value {
    serde_json::json!({
        "summary": summary,
        "options": options,
        "definitions": {
            "mean_absorption_fraction": "per measured letter, the mean over test tokens the ground-truth probe classifies correctly of the share of their probe projection carried by up to 3 non-main latents (cos ≥ 0.1) instead of the letter's main latents; averaged over letters",
            "mean_full_absorption_rate": "per measured letter, the fraction of those tokens on which no main latent fires and one other latent (cos ≥ 0.025) carries ≥ 40% of the probe projection; averaged over letters",
            "letters_measured": "letters with ≥ min_tokens training and test tokens whose ground-truth probe reaches min_probe_f1 on the test words (SAEBench averages over ≥ 20)",
        },
    })
}
