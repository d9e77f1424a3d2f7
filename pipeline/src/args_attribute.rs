//! The `attribute` subcommand's flags (they fill the `[attribute]` section).
//! As in `args`, the doc comments are `--help` text: `[@HOOK]` is argument syntax, not a doc link.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct AttributeArgs {
    /// Run directory with a completed extract stage (and probe, for probe: targets).
    #[arg(long)]
    pub run: PathBuf,
    /// What to explain, repeatable or comma-separated: class:LABEL (a label, one of its
    /// comma-separated synonyms or the class index; class:predicted = each example's top
    /// class), token:TEXT, logit_diff:A|B, probe:LABEL=CLASS[@HOOK].
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// Methods, comma-separated: saliency, gradient_x_input, integrated_gradients (ig),
    /// smoothgrad, smoothgrad_sq, occlusion, grad_cam, attention_rollout, edges. Default: a set
    /// fitting the model.
    #[arg(long = "method", value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Integrated gradients' points.
    #[arg(long, default_value_t = crate::config::AttributeSection::default().steps as i64, allow_hyphen_values = true)]
    pub steps: i64,
    /// Integration rule: gausslegendre, riemann_left, riemann_right, riemann_middle, riemann_trapezoid, adaptive.
    #[arg(long, default_value = "gausslegendre")]
    pub rule: String,
    /// zero, blur, uniform (images) or mask (text).
    #[arg(long, value_enum, default_value = "zero")]
    pub baseline: BaselineArg,
    /// A baseline array (.npy) instead of --baseline: images [3, H, W] (channels first, after the
    /// model's normalisation, as PyTorch and Captum take it); text [hidden] (one token
    /// embedding at every position) or [tokens, hidden].
    #[arg(long)]
    pub baseline_file: Option<std::path::PathBuf>,
    /// SmoothGrad's noisy copies.
    #[arg(long, default_value_t = crate::config::AttributeSection::default().samples)]
    pub samples: usize,
    /// SmoothGrad's noise level (fraction of the input's value range).
    #[arg(long, default_value_t = crate::config::AttributeSection::default().noise, allow_hyphen_values = true)]
    pub noise: f64,
    /// Occlusion window: tokens (text) or pixels per side (images).
    #[arg(long)]
    pub window: Option<usize>,
    /// Occlusion stride.
    #[arg(long)]
    pub stride: Option<usize>,
    /// Grad-CAM's hook (default: hook_head for CNNs, the last block's hook_resid_pre for ViTs).
    #[arg(long)]
    pub cam_hook: Option<String>,
    /// Explain the run's first N examples.
    #[arg(long, default_value_t = crate::config::AttributeSection::default().max_examples)]
    pub max_examples: usize,
    /// Points along each deletion/insertion curve (0: none).
    #[arg(long, default_value_t = crate::config::AttributeSection::default().curve_points)]
    pub curve_points: usize,
    /// Max-sensitivity's perturbed copies (0: skip).
    #[arg(long, default_value_t = crate::config::AttributeSection::default().sensitivity_samples)]
    pub sensitivity_samples: usize,
    /// Skip the model-parameter randomisation check.
    #[arg(long)]
    pub no_sanity: bool,
    /// Examples the randomisation check re-explains per target.
    #[arg(long, default_value_t = crate::config::AttributeSection::default().sanity_examples)]
    pub sanity_examples: usize,
    /// Inputs per forward pass.
    #[arg(long, default_value_t = crate::config::AttributeSection::default().batch_size)]
    pub batch_size: usize,
    /// Seed of SmoothGrad, the uniform baseline, sensitivity noise and the randomisation.
    #[arg(long, default_value_t = crate::config::AttributeSection::default().seed)]
    pub seed: u64,
    /// Examples per part: the unit an interrupted run resumes from and --shard deals out.
    #[arg(long, default_value_t = crate::config::AttributeSection::default().part_size)]
    pub part_size: usize,
    /// Run one of N workers that write this run together: INDEX/COUNT (0/3, 1/3, 2/3). Part k
    /// (of --part-size examples) is shard k mod COUNT's; the worker that finishes last runs the randomisation checks and the verdicts
    /// and commits the run, which is then the single-process run byte for byte.
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<glassbox_data::shards::ShardSpec>,
    /// Attribute again even when the run is up to date.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--baseline`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BaselineArg {
    Zero,
    Blur,
    Uniform,
    Mask,
}

impl AttributeArgs {
    /// The `[attribute]` section these flags describe.
    pub fn settings(&self) -> anyhow::Result<crate::config::AttributeSection> {
        use glassbox_runner::attribution::Baseline;
        if self.steps <= 0 {
            anyhow::bail!(
                "attribute: --steps {}; integrated gradients need at least 1 step (64 is usual)",
                self.steps
            );
        }
        let methods = self
            .methods
            .iter()
            .map(|m| {
                m.parse()
                    .map_err(|e: String| anyhow::anyhow!("--method: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(crate::config::AttributeSection {
            targets: split_targets(&self.targets),
            methods,
            steps: self.steps as usize,
            rule: self
                .rule
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--rule: {e}"))?,
            baseline: match self.baseline {
                BaselineArg::Zero => Baseline::Zero,
                BaselineArg::Blur => Baseline::Blur,
                BaselineArg::Uniform => Baseline::Uniform,
                BaselineArg::Mask => Baseline::Mask,
            },
            baseline_file: self.baseline_file.clone(),
            samples: self.samples,
            noise: self.noise,
            window: self.window,
            stride: self.stride,
            cam_hook: self.cam_hook.clone(),
            max_examples: self.max_examples,
            curve_points: self.curve_points,
            sensitivity_samples: self.sensitivity_samples,
            sanity: !self.no_sanity,
            sanity_examples: self.sanity_examples,
            batch_size: self.batch_size,
            part_size: self.part_size,
            seed: self.seed,
            ..Default::default()
        })
    }
}

/// The targets of `--target` values: each value split at the commas that start another
/// target (`class:`, `token:`, `logit_diff:`, `probe:`, `text:`), so a class label with commas
/// in it (ImageNet's "tabby, tabby cat") or a token that is a comma stays one target.
pub fn split_targets(values: &[String]) -> Vec<String> {
    const KINDS: [&str; 5] = ["class:", "token:", "logit_diff:", "probe:", "text:"];
    let mut targets: Vec<String> = Vec::new();
    for value in values {
        for (i, piece) in value.split(',').enumerate() {
            let starts_a_target = KINDS.iter().any(|k| piece.trim_start().starts_with(k));
            match targets.last_mut() {
                // A piece after a comma that starts no target belongs to the one before it.
                Some(last) if i > 0 && !starts_a_target => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => targets.push(piece.trim_start().to_owned()),
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::split_targets;

    #[test]
    fn commas_split_targets_but_not_labels() {
        let split =
            |v: &[&str]| split_targets(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            split(&["class:tabby, tabby cat,class:goldfish", "probe:topic=food"]),
            [
                "class:tabby, tabby cat",
                "class:goldfish",
                "probe:topic=food"
            ]
        );
        assert_eq!(
            split(&["probe:topic=sports, probe:topic=food"]),
            ["probe:topic=sports", "probe:topic=food"]
        );
        assert_eq!(
            split(&["token:,", "logit_diff:a|b"]),
            ["token:,", "logit_diff:a|b"]
        );
        // A value that starts with no kind stays whole (and is refused later by name).
        assert_eq!(split(&["tabby, tabby cat"]), ["tabby, tabby cat"]);
    }
}
