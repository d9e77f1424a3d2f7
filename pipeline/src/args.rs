//! The command line's arguments (clap derive), one struct per subcommand. `cli::run` turns
//! them into stage settings and dispatches.
//!
//! Defaults come from the config sections' `Default`s (one set of defaults for the CLI and the
//! config file). The doc comments here are the `--help` text (clap reads them verbatim), written for a
//! terminal: `<label>` and `[@REVISION]` are argument syntax, not HTML or doc links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use crate::config::{DictionarySection, PipelineConfig};
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "glassbox",
    version,
    long_version = crate::fingerprint::long_version(),
    about = "Explain what the inside of a neural network encodes: extract activations, probe, report."
)]
pub struct Cli {
    /// Hide progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run data through a model and store hooked activations as Parquet.
    Extract(ExtractArgs),
    /// Train linear probes on stored activations for label columns.
    Probe(ProbeArgs),
    /// Store d target / d activation for a probe target (input of TCAV).
    Gradients(GradientsArgs),
    /// Concept activation vectors and TCAV scores with corrected significance.
    Tcav(TcavArgs),
    /// Train sparse autoencoders on a run's token activations (or load SAELens ones) and explain
    /// their features and the raw neurons of chosen hooks.
    Dictionary(DictionaryArgs),
    /// Activation patching over prompt pairs (clean/corrupted, answer/wrong tokens), with
    /// attribution patching's estimate beside every exact effect.
    Patch(crate::args_patch::PatchArgs),
    /// Test whether the model uses the run's findings: steer along each probe direction, CAV
    /// and SAE feature (and erase probed labels with LEACE) against random directions.
    Causal(crate::args_causal::CausalArgs),
    /// Network Dissection of an image run: label each channel (or patch-token unit) with the
    /// concept whose segmentation masks its top activations overlap, against a permutation
    /// baseline.
    Dissect(crate::args_dissect::DissectArgs),
    /// Input attributions of the run's examples (saliency, integrated gradients, occlusion,
    /// Grad-CAM, …), evaluated: deletion/insertion curves, ERASER, max-sensitivity and the
    /// model-randomisation sanity check.
    Attribute(crate::args_attribute::AttributeArgs),
    /// Write the report bundle (index.html, summary.json, summary.md).
    Report(ReportArgs),
    /// Run extract → probe → tcav → dictionary → patch → causal → attribute → dissect (each when configured) → report from a TOML config.
    Pipeline(PipelineArgs),
    /// List a model's hook points, one per line.
    Hooks(HooksArgs),
    /// Summarise a run directory.
    Inspect(InspectArgs),
    /// Generate texture concept images (stripes, dots, checkerboard, zigzag) and random images,
    /// or with --masks composites with segmentation masks for `dissect`.
    Textures(TexturesArgs),
    /// Pretrained SAE folders (SAELens, Gemma Scope 1/2, Llama Scope, sparsify).
    #[command(subcommand)]
    Sae(SaeCommand),
    /// A run's results in other tools' formats (Neuronpedia, delphi).
    #[command(subcommand)]
    Export(crate::args_export::ExportCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum SaeCommand {
    /// Print an SAE folder's format, architecture, widths, hook, base model, k or threshold
    /// statistics and tensor shapes, from its config and tensor headers (the weights are not
    /// read).
    Inspect(SaeInspectArgs),
}

#[derive(Debug, Args)]
pub struct SaeInspectArgs {
    /// The SAE folder.
    pub folder: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also read the weights and run the checks `dictionary --load-sae` runs (every tensor's
    /// shape against the config, finite values, k and thresholds); exit 2 with the reason if
    /// the SAE would be refused.
    #[arg(long)]
    pub check: bool,
    /// Read pickled checkpoints (Goodfire, Qwen-Scope) for --check; glassbox interprets
    /// tensors only and runs nothing, but reading one is your call.
    #[arg(long)]
    pub allow_pickle: bool,
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// ORG/NAME[@REVISION] from the Hugging Face cache/Hub, or ./local/dir in HF layout.
    #[arg(long)]
    pub model: String,
    /// JSONL, CSV, TSV or Parquet file with a `text` column (other columns are kept as labels);
    /// for vision models a folder with one sub-folder of images per class, or a manifest with
    /// an `image_path` column.
    #[arg(long)]
    pub data: PathBuf,
    /// Hook names or glob patterns, comma-separated (e.g. 'blocks.*.hook_resid_post').
    #[arg(long, value_delimiter = ',', required = true)]
    pub hooks: Vec<String>,
    /// Run directory to write.
    #[arg(long)]
    pub run: PathBuf,
    /// Examples per forward pass (memory grows with it).
    #[arg(long, default_value_t = crate::config::ExtractSection::default().batch_size)]
    pub batch_size: usize,
    /// Tokens per example after truncation (special tokens included); at most the model's
    /// own maximum.
    #[arg(long, default_value_t = crate::config::ExtractSection::default().max_length)]
    pub max_length: usize,
    /// Storage precision of activations: f32 or f16.
    #[arg(long, default_value_t = crate::config::ExtractSection::default().dtype)]
    pub dtype: glassbox_data::ActDtype,
    /// Compression of activation shards: none, snappy or zstd.
    #[arg(long, default_value_t = crate::config::ExtractSection::default().compression)]
    pub compression: glassbox_data::store::Codec,
    /// Sequence-level pools to store: mean, cls, last, max.
    #[arg(long, value_delimiter = ',', default_values_t = crate::config::ExtractSection::default().pools)]
    pub pools: Vec<glassbox_data::Pool>,
    /// Store only pooled activations, not one row per token.
    #[arg(long)]
    pub no_token_level: bool,
    /// Examples per shard (the unit of resumption after an interruption).
    #[arg(long, default_value_t = crate::config::ExtractSection::default().shard_size)]
    pub shard_size: usize,
    /// Run one of N workers that write this run together: INDEX/COUNT (0/3, 1/3, 2/3). Part k
    /// (of --shard-size examples) is shard k mod COUNT's; the worker that finishes last checks
    /// coverage and commits the run, which is then the single-process run byte for byte.
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<glassbox_data::shards::ShardSpec>,
    /// Read PyTorch pickle checkpoints (.pth, pytorch_model.bin). Pickle can encode code;
    /// glassbox interprets tensors only and runs nothing, but reading one is your call.
    #[arg(long)]
    pub allow_pickle: bool,
    /// Precision the weights are held in: auto (a bf16/f16 checkpoint stays so, for families
    /// that support it: half the memory of f32; a GGUF's quantised matrices stay quantised,
    /// dequantised one matrix at a time), f32, bf16 or f16 (a GGUF dequantised at load).
    #[arg(long, default_value = "auto")]
    pub weights_dtype: glassbox_models::WeightsDtype,
    /// Precision of the forward's matrix products: f32 (parity with transformers in f32), or
    /// bf16 (activations rounded to bf16 at each projection, products summed in f32: about
    /// 2x faster on CPUs with AVX-512 BF16; decoder families with weights held in bf16).
    #[arg(long, default_value = "f32")]
    pub compute_dtype: glassbox_models::ComputeDtype,
    /// Re-run even if the run is up to date.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Run directory with a completed extract stage.
    #[arg(long)]
    pub run: PathBuf,
    /// Label column(s) of examples.parquet, comma-separated or repeated, probed at `--level`.
    #[arg(long, value_delimiter = ',')]
    pub label: Vec<String>,
    /// The level of the `--label` columns: sequence (one label per example, pooled
    /// activations) or token (per-word label lists, token activations).
    #[arg(long, value_enum, default_value = "sequence")]
    pub level: LevelArg,
    /// Token-level labels: a column of per-word label lists, or a built-in labeler
    /// (@word_class, @is_number, @is_capitalised, @position).
    #[arg(long, value_delimiter = ',')]
    pub token_label: Vec<String>,
    /// Pooled activations for sequence-level probes: mean, cls, last or max.
    #[arg(long, default_value_t = crate::config::ProbeSection::default().pool)]
    pub pool: glassbox_data::Pool,
    /// Seed of the split, control task, bootstrap and random unit draws.
    #[arg(long, default_value_t = crate::config::ProbeSection::default().seed)]
    pub seed: u64,
    /// Fraction of each class held out for testing.
    #[arg(long, default_value_t = crate::config::ProbeSection::default().test_fraction)]
    pub test_fraction: f64,
    /// How rows are split: text (seeded; every token of a text in one part, CIs resample
    /// texts), token (seeded; tokens split independently, sentences straddling the parts) or
    /// data (the data set's `split` column: train, validation, test).
    #[arg(long, default_value_t = crate::config::ProbeSection::default().split_by)]
    pub split_by: glassbox_probes::SplitBy,
    /// Fraction of each class held out to choose the L2 strength.
    #[arg(long, default_value_t = crate::config::ProbeSection::default().validation_fraction)]
    pub validation_fraction: f64,
    /// L2 strengths to choose from on the validation part (sklearn's C = 1 / l2).
    #[arg(long, value_delimiter = ',', default_values_t = crate::config::ProbeSection::default().l2_grid)]
    pub l2: Vec<f64>,
    /// At most this many examples (or tokens) per class, a seeded sample; 0 keeps all.
    #[arg(long, default_value_t = crate::config::ProbeSection::default().max_per_class)]
    pub max_per_class: usize,
    /// Also compute the MDL online code length (Voita & Titov 2020).
    #[arg(long)]
    pub mdl: bool,
    /// Skip the elastic-net neuron ranking and its top-k check.
    #[arg(long)]
    pub no_neurons: bool,
    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, default_value_t = crate::config::ProbeSection::default().bootstrap)]
    pub bootstrap: usize,
    #[arg(long)]
    pub force: bool,
    /// Print results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GradientsArgs {
    /// Run directory with completed extract and probe stages.
    #[arg(long)]
    pub run: PathBuf,
    /// probe:<label>=<class>[@<hook>] (default hook: the deepest probed one).
    #[arg(long)]
    pub target: String,
    /// Hooks (names or globs) to store gradients at; default: every hook_resid_post before the
    /// target's hook.
    #[arg(long, value_delimiter = ',')]
    pub hooks: Vec<String>,
    /// logit (Captum) or loss (TensorFlow TCAV).
    #[arg(long, value_enum, default_value = "logit")]
    pub convention: ConventionArg,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Examples per part: the unit an interrupted run resumes from and --shard deals out.
    #[arg(long, default_value_t = glassbox_runner::gradient_store::DEFAULT_PART_SIZE)]
    pub part_size: usize,
    /// Run one of N workers that write this run together: INDEX/COUNT (0/3, 1/3, 2/3). Part k
    /// (of --part-size examples) is shard k mod COUNT's; the worker that finishes last moves every part into place
    /// and commits the run, which is then the single-process run byte for byte.
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<glassbox_data::shards::ShardSpec>,
}

#[derive(Debug, Args)]
pub struct TcavArgs {
    /// Run directory with a completed extract stage (and probe, for probe: targets).
    #[arg(long)]
    pub run: PathBuf,
    /// Concept sets: data files with a `text` column or folders of .txt files; for vision runs,
    /// folders of images (e.g. from `glassbox textures`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub concepts: Vec<PathBuf>,
    /// probe:<label>=<class>[@<hook>], repeatable; gradients must be stored (`glassbox gradients`).
    /// Vision runs: class:<label> (a class of the model, e.g. class:zebra), over the run's
    /// images; gradients are computed here.
    #[arg(long, required = true)]
    pub target: Vec<String>,
    /// CAV hooks (names or globs); default: every hook_resid_post before the target's hook.
    #[arg(long, value_delimiter = ',')]
    pub hooks: Vec<String>,
    /// Random counterpart runs (and random-vs-random baseline runs).
    #[arg(long, default_value_t = crate::config::TcavSection::default().random_runs)]
    pub random_runs: usize,
    /// Examples per random set; 0 = the smallest concept's size.
    #[arg(long, default_value_t = crate::config::TcavSection::default().random_set_size)]
    pub random_set_size: usize,
    /// Corpus random sets are drawn from; default: the built-in corpus.
    #[arg(long)]
    pub random_corpus: Option<PathBuf>,
    /// Concepts smaller than this are an error.
    #[arg(long, default_value_t = crate::config::TcavSection::default().min_concept_size)]
    pub min_concept_size: usize,
    /// CAV classifier: logistic or hinge.
    #[arg(long, value_enum, default_value = "logistic")]
    pub cav: CavArg,
    #[arg(long, value_enum, default_value = "logit")]
    pub convention: ConventionArg,
    /// Significance level after Holm–Bonferroni correction.
    #[arg(long, default_value_t = crate::config::TcavSection::default().alpha)]
    pub alpha: f64,
    /// Mean held-out CAV accuracy a concept needs to be called significant.
    #[arg(long, default_value_t = crate::config::TcavSection::default().min_cav_accuracy)]
    pub min_cav_accuracy: f64,
    #[arg(long, default_value_t = crate::config::TcavSection::default().seed)]
    pub seed: u64,
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DictionaryArgs {
    /// Run directory (after `extract` with token-level activations).
    #[arg(long)]
    pub run: PathBuf,
    /// Start from this pipeline config's `[dictionary]` section (flags below override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Hooks to train an SAE on.
    #[arg(long, value_delimiter = ',')]
    pub hook: Vec<glassbox_data::HookPoint>,
    /// Pretrained SAEs in SAELens layout to analyse: `<hook>=<folder>` or `<folder>`.
    #[arg(long, value_delimiter = ',')]
    pub load_sae: Vec<String>,
    /// Transcoders to train, `IN->OUT` (e.g. `blocks.3.hook_resid_mid->blocks.3.hook_mlp_out`),
    /// `IN->OUT+skip` with a skip connection, or `IN->OUT=FOLDER` to analyse a pretrained one
    /// (SAELens or sparsify layout). Repeatable.
    #[arg(long)]
    pub transcoder: Vec<glassbox_concepts::dictionary::TranscoderSpec>,
    /// Hooks whose raw neurons to explain.
    #[arg(long, value_delimiter = ',')]
    pub neurons: Vec<glassbox_data::HookPoint>,
    /// `topk`, `batchtopk`, `jumprelu` or `relu`.
    #[arg(long)]
    pub architecture: Option<glassbox_concepts::sae::options::ArchitectureName>,
    /// Number of latents (default 8 × the hook's width).
    #[arg(long)]
    pub width: Option<usize>,
    /// Active latents per token (TopK).
    #[arg(long)]
    pub k: Option<usize>,
    /// L1 coefficient (ReLU).
    #[arg(long)]
    pub l1: Option<f32>,
    /// Training tokens in all.
    #[arg(long)]
    pub train_tokens: Option<u64>,
    /// Tokens per step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Sequence-level labels to correlate units with (default: every categorical column).
    #[arg(long, value_delimiter = ',')]
    pub label: Vec<String>,
    /// Token-level labels (`@word_class`, list columns) to correlate units with.
    #[arg(long, value_delimiter = ',')]
    pub token_label: Vec<String>,
    /// Skip the PCA baseline.
    #[arg(long)]
    pub no_pca: bool,
    /// Units per sparse probe (SAEBench sparse probing of features against neurons).
    #[arg(long, value_delimiter = ',')]
    pub sparse_probing_k: Vec<usize>,
    /// Skip sparse probing.
    #[arg(long)]
    pub no_sparse_probing: bool,
    /// Read `--load-sae` folders that hold PyTorch pickles (dictionary_learning `ae.pt`); only
    /// tensor data is interpreted, nothing in the file is run.
    #[arg(long)]
    pub allow_pickle: bool,
    /// Stop training after this many steps (a checkpoint is written); run again to resume.
    #[arg(long)]
    pub pause_after: Option<usize>,
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

impl DictionaryArgs {
    /// The `[dictionary]` section these flags describe: `--config`'s section (or the defaults)
    /// with every given flag applied over it.
    pub fn settings(self) -> Result<DictionarySection> {
        let mut s = match &self.config {
            Some(path) => PipelineConfig::load(path)?.dictionary.unwrap_or_default(),
            None => DictionarySection::default(),
        };
        fn replace<T>(v: Vec<T>, into: &mut Vec<T>) {
            if !v.is_empty() {
                *into = v;
            }
        }
        replace(self.hook, &mut s.hooks);
        replace(self.load_sae, &mut s.load);
        replace(self.transcoder, &mut s.transcoders);
        replace(self.neurons, &mut s.neurons);
        replace(self.label, &mut s.labels);
        replace(self.token_label, &mut s.token_labels);
        if let Some(a) = self.architecture {
            s.sae.architecture = a;
        }
        s.sae.width = self.width.or(s.sae.width);
        if let Some(k) = self.k {
            s.sae.k = k;
        }
        if let Some(l1) = self.l1 {
            s.sae.l1_coefficient = l1;
        }
        if let Some(t) = self.train_tokens {
            s.sae.train_tokens = t;
        }
        if let Some(b) = self.batch_size {
            s.sae.batch_size = b;
        }
        s.sae.lr = self.lr.or(s.sae.lr);
        if let Some(seed) = self.seed {
            s.sae.seed = seed;
            s.explain.seed = seed;
            s.sparse_probing.seed = seed;
        }
        if self.no_pca {
            s.pca_baseline = false;
        }
        replace(self.sparse_probing_k, &mut s.sparse_probing.k);
        if self.no_sparse_probing {
            s.sparse_probing.enabled = false;
        }
        if self.allow_pickle {
            s.allow_pickle = true;
        }
        Ok(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConventionArg {
    Logit,
    Loss,
}

impl From<ConventionArg> for glassbox_concepts::Convention {
    fn from(c: ConventionArg) -> Self {
        match c {
            ConventionArg::Logit => glassbox_concepts::Convention::Logit,
            ConventionArg::Loss => glassbox_concepts::Convention::Loss,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CavArg {
    Logistic,
    Hinge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LevelArg {
    Sequence,
    Token,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directory: the report covers every stage it holds.
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Pipeline config (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Override the config's model; the run directory then defaults to runs/<model>.
    #[arg(long)]
    pub model: Option<String>,
    /// Override the config's run directory.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Re-run every stage.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct HooksArgs {
    /// ORG/NAME[@REVISION] or ./local/dir.
    pub model: String,
    /// Read a PyTorch pickle checkpoint (see `extract --allow-pickle`).
    #[arg(long)]
    pub allow_pickle: bool,
    /// Precision the weights are held in (see `extract --weights-dtype`).
    #[arg(long, default_value = "auto")]
    pub weights_dtype: glassbox_models::WeightsDtype,
}

#[derive(Debug, Args)]
pub struct TexturesArgs {
    /// Folder to write: one sub-folder of PNGs per texture (a folder-per-class image data set),
    /// or with --masks `images/`, `masks/` and the manifest `dataset.jsonl`.
    #[arg(long)]
    pub out: PathBuf,
    /// Textures to draw: stripes, dots, checkerboard, zigzag, random (default: all; with
    /// --masks all but random, which is every composite's background).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Composites for Network Dissection: a random background with one texture region and one
    /// colour region (red, green, blue, yellow), and a mask PNG per concept in the image.
    #[arg(long)]
    pub masks: bool,
    /// Images per texture.
    #[arg(long, default_value_t = 40)]
    pub per_class: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Seed of every colour, scale, angle and phase drawn.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Run directory (or s3:// URL).
    #[arg(required_unless_present = "run_option", conflicts_with = "run_option")]
    run: Option<PathBuf>,
    /// The run directory as every other command takes it: `inspect --run DIR` = `inspect DIR`.
    #[arg(long = "run", id = "run_option", value_name = "RUN")]
    run_option: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl InspectArgs {
    /// The run directory, given either way.
    pub fn run(&self) -> &std::path::Path {
        self.run
            .as_deref()
            .or(self.run_option.as_deref())
            .expect("clap requires one of the two")
    }
}
