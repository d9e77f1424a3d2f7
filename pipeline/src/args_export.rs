//! `glassbox export …`: a run's results in other tools' formats.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// The run's SAEs as a Neuronpedia export (gzipped JSON lines: features with their decoder
    /// vectors, top activations with context, label explanations), one folder per SAE, ready for
    /// Neuronpedia's importer or a self-hosted instance.
    Neuronpedia(NeuronpediaArgs),
    /// The run's SAE latents over its stored tokens as delphi's latent cache (safetensors per
    /// latent range plus config.json), for delphi's explainers and scorers.
    Delphi(DelphiArgs),
}

/// What every export reads and where it writes.
#[derive(Debug, Args)]
pub struct ExportTarget {
    /// Run directory with a completed dictionary stage.
    #[arg(long)]
    pub run: PathBuf,
    /// Folder to write into.
    #[arg(long)]
    pub out: PathBuf,
    /// SAE hooks to export (names or globs); default: every SAE of the run.
    #[arg(long = "hook", value_delimiter = ',')]
    pub hooks: Vec<String>,
}

/// Writes `<out>/<hook>/<first>_<last>.safetensors` and `config.json` per SAE.
#[derive(Debug, Args)]
pub struct DelphiArgs {
    #[command(flatten)]
    pub target: ExportTarget,
    /// Tokens per cached sequence (delphi's `cache_ctx_len`): the run's tokens laid end to end
    /// and cut into windows this long, the remainder dropped.
    #[arg(long, default_value_t = 256)]
    pub context_size: usize,
    /// Latent ranges, one file each (delphi's `n_splits`).
    #[arg(long, default_value_t = 5)]
    pub splits: usize,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Writes `<out>/<model_id>/<layer>-<source_set>/` per SAE.
#[derive(Debug, Args)]
pub struct NeuronpediaArgs {
    #[command(flatten)]
    pub target: ExportTarget,
    /// Neuronpedia's model id (e.g. gpt2-small); default: the run's model name in lower case.
    #[arg(long)]
    pub model_id: Option<String>,
    /// The source set's short name; the layer is prefixed (`6-res-glassbox`).
    #[arg(long, default_value = "res-glassbox")]
    pub source_set: String,
    /// The release the source set belongs to.
    #[arg(long, default_value = "glassbox")]
    pub release: String,
    /// The Neuronpedia user id that owns the records (your account's id on the instance);
    /// default: $NEURONPEDIA_CREATOR_ID, else `glassbox`.
    #[arg(long)]
    pub creator_id: Option<String>,
    /// The creator's display name.
    #[arg(long, default_value = "glassbox")]
    pub creator_name: String,
    /// A link for the release (paper, repository).
    #[arg(long)]
    pub url: Option<String>,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}
