//! The `[dictionary]` section: which hooks get an SAE, which SAEs and transcoders are loaded or
//! trained, and the options of every step of the stage.

use crate::absorption::AbsorptionOptions;
use crate::dictionary_transcoder::TranscoderSpec;
use crate::explain::ExplainOptions;
use crate::sae::SaeOptions;
use crate::sparse_probing::SparseProbingOptions;
use glassbox_data::HookPoint;
use serde::{Deserialize, Serialize};

/// The `[dictionary]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DictionaryOptions {
    /// Hooks to train an SAE on (their token rows).
    pub hooks: Vec<HookPoint>,
    /// Pretrained SAEs in SAELens layout to analyse instead: `<hook>=<folder>`, or `<folder>`
    /// when its cfg.json names the hook (`metadata.hook_name`).
    pub load: Vec<String>,
    /// Read pretrained SAEs that ship as PyTorch pickles (dictionary_learning `ae.pt`): only
    /// tensor data is interpreted, nothing in the file is run. Default false.
    pub allow_pickle: bool,
    /// Hooks whose raw units (neurons) are explained too.
    pub neurons: Vec<HookPoint>,
    /// Sequence-level label columns to correlate units with; empty: every categorical column.
    pub labels: Vec<String>,
    /// Token-level labels (`@word_class`, list columns) to correlate units with.
    pub token_labels: Vec<String>,
    /// Fit the PCA baseline (same number of dimensions as the SAE's L0).
    pub pca_baseline: bool,
    pub sae: SaeOptions,
    pub explain: ExplainOptions,
    /// SAEBench-style k-sparse probes on each SAE's features against the hook's neurons.
    pub sparse_probing: SparseProbingOptions,
    /// SAEBench-style feature absorption on the first-letter task (text runs).
    pub absorption: AbsorptionOptions,
    /// Transcoders to train (or load): one hook's rows in, another's predicted; trained with
    /// the `[dictionary.sae]` options.
    pub transcoders: Vec<TranscoderSpec>,
}

impl Default for DictionaryOptions {
    fn default() -> Self {
        Self {
            hooks: Vec::new(),
            load: Vec::new(),
            allow_pickle: false,
            neurons: Vec::new(),
            labels: Vec::new(),
            token_labels: Vec::new(),
            pca_baseline: true,
            sae: SaeOptions::default(),
            explain: ExplainOptions::default(),
            sparse_probing: SparseProbingOptions::default(),
            absorption: Default::default(),
            transcoders: Vec::new(),
        }
    }
}

impl DictionaryOptions {
    /// Whether the section names nothing for the stage to do.
    pub fn nothing_to_do(&self) -> bool {
        self.hooks.is_empty()
            && self.load.is_empty()
            && self.neurons.is_empty()
            && self.transcoders.is_empty()
    }
}
