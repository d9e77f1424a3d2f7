//! The `[attribute]` section: input attributions of the run's examples, evaluated.

use anyhow::{bail, Result};
use glassbox_runner::attribution::{Baseline, IgRule, Method};
use serde::{Deserialize, Serialize};

/// Settings of the `attribute` stage (CLI flags and the `[attribute]` section alike).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AttributeSection {
    /// What to explain: `class:<label>` (or `class:predicted`, each image's top class),
    /// `token:<text>` (an LM's next-token logit), `logit_diff:<a>|<b>` (classes or tokens),
    /// `probe:<label>=<class>[@hook]` (text models with probes in the run).
    pub targets: Vec<String>,
    /// Methods; empty: saliency, gradient × input, integrated gradients and occlusion (text) or
    /// saliency, integrated gradients, occlusion, Grad-CAM (CNNs) / attention rollout (ViTs)
    /// and the edge control (images).
    pub methods: Vec<Method>,
    /// Integrated gradients' points.
    pub steps: usize,
    /// Integrated gradients' rule: `gausslegendre` (Captum's default), `riemann_*`, or `adaptive`.
    pub rule: IgRule,
    /// `zero` (default), `blur` or `uniform` (images), `mask` (text).
    pub baseline: Baseline,
    /// A baseline array (NumPy `.npy`) in place of `baseline`: images `[3, H, W]` (channels
    /// first, after the model's normalisation, as PyTorch and Captum take it), text `[hidden]`
    /// (one token embedding at every position) or `[tokens, hidden]`.
    pub baseline_file: Option<std::path::PathBuf>,
    /// SmoothGrad's noisy copies.
    pub samples: usize,
    /// SmoothGrad's noise level, relative to the input's value range.
    pub noise: f64,
    /// Occlusion window: tokens (text; default 1) or pixels per side (images; default 16).
    pub window: Option<usize>,
    /// Occlusion stride: tokens (default 1) or pixels (default 16).
    pub stride: Option<usize>,
    /// Grad-CAM's hook; default: `hook_head` (CNNs) or the last block's `hook_resid_pre` (ViT).
    pub cam_hook: Option<String>,
    /// Pixels per side of the cells the image curves remove.
    pub cell: usize,
    /// Points along each deletion/insertion curve; 0 skips the curves.
    pub curve_points: usize,
    /// Max-sensitivity's perturbed copies; 0 skips it.
    pub sensitivity_samples: usize,
    /// Max-sensitivity's noise radius, relative to the input's value range.
    pub sensitivity_radius: f64,
    /// Run the model-parameter randomisation check.
    pub sanity: bool,
    /// Examples the randomisation check re-explains per target.
    pub sanity_examples: usize,
    /// A method fails the check when its maps keep mean |Spearman ρ| ≥ this with every layer
    /// randomised.
    pub sanity_threshold: f64,
    /// Explain the run's first N examples.
    pub max_examples: usize,
    /// Examples per part: the unit an interrupted run resumes from and `--shard` deals out.
    pub part_size: usize,
    /// Inputs per forward (IG's steps, SmoothGrad's copies, occluded copies).
    pub batch_size: usize,
    /// Seed of SmoothGrad, the uniform baseline, sensitivity noise and the randomisation.
    pub seed: u64,
}

impl Default for AttributeSection {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            methods: Vec::new(),
            steps: 64,
            rule: IgRule::GaussLegendre,
            baseline: Baseline::Zero,
            baseline_file: None,
            samples: 32,
            noise: 0.15,
            window: None,
            stride: None,
            cam_hook: None,
            cell: 16,
            curve_points: 20,
            sensitivity_samples: 3,
            sensitivity_radius: 0.02,
            sanity: true,
            sanity_examples: 4,
            sanity_threshold: 0.5,
            max_examples: 16,
            part_size: 4,
            batch_size: 16,
            seed: 0,
        }
    }
}

/// The most integrated-gradients steps a run takes.
pub const MOST_STEPS: usize = 10_000;
/// The most SmoothGrad copies per example.
pub const MOST_SAMPLES: usize = 10_000;
/// The most max-sensitivity draws per example.
pub const MOST_SENSITIVITY_SAMPLES: usize = 1_000;
/// The most points on each deletion and insertion curve.
pub const MOST_CURVE_POINTS: usize = 10_000;

impl AttributeSection {
    /// Checks that need no model or data.
    pub fn validate(&self) -> Result<()> {
        if self.targets.is_empty() || self.targets.iter().any(|t| t.trim().is_empty()) {
            bail!("attribute: no target (or an empty one); pass --target class:LABEL, token:TEXT, logit_diff:A|B or probe:LABEL=CLASS");
        }
        // The same method or target twice would be computed twice and ranked against itself.
        let methods: Vec<&str> = self.methods.iter().map(|m| m.as_str()).collect();
        glassbox_data::limits::each_once("methods", &methods)
            .and_then(|()| glassbox_data::limits::each_once("targets", &self.targets))
            .map_err(|e| anyhow::anyhow!("attribute: {e}"))?;
        if self.steps == 0 {
            bail!("attribute: steps = 0; integrated gradients need at least 1 step (64 is Captum's usual)");
        }
        if self.samples == 0 {
            bail!("attribute: samples = 0; SmoothGrad needs at least 1 noisy copy");
        }
        // Upper bounds that catch a mistyped count before it runs for days (or, for IG, before
        // its quadrature nodes alone take minutes): each step, copy or draw costs a forward and
        // a backward of the model per example.
        for (name, value, most, why) in [
            ("steps", self.steps, MOST_STEPS, "IG's completeness error is usually under 1% at 64–256 steps; --rule adaptive spends the steps where the integrand needs them"),
            ("samples", self.samples, MOST_SAMPLES, "SmoothGrad's maps settle within tens to hundreds of noisy copies"),
            ("sensitivity_samples", self.sensitivity_samples, MOST_SENSITIVITY_SAMPLES, "each draw reruns every method on a perturbed input"),
            ("curve_points", self.curve_points, MOST_CURVE_POINTS, "each point of a deletion or insertion curve is four forwards; a curve has at most one point per unit anyway"),
        ] {
            glassbox_data::limits::at_most(name, value, most, why)
                .map_err(|e| anyhow::anyhow!("attribute: {e}"))?;
        }
        if !self.noise.is_finite() || self.noise < 0.0 {
            bail!("attribute: noise = {}; it must be a finite value ≥ 0 (a fraction of the input's range, e.g. 0.15)", self.noise);
        }
        if !self.sensitivity_radius.is_finite() || self.sensitivity_radius < 0.0 {
            bail!(
                "attribute: sensitivity_radius = {}; it must be a finite value ≥ 0",
                self.sensitivity_radius
            );
        }
        if !(0.0..=1.0).contains(&self.sanity_threshold) {
            bail!(
                "attribute: sanity_threshold = {}; it must lie in [0, 1]",
                self.sanity_threshold
            );
        }
        for (name, v) in [
            ("window", self.window),
            ("stride", self.stride),
            ("cell", Some(self.cell)),
            ("max_examples", Some(self.max_examples)),
            ("part_size", Some(self.part_size)),
            ("batch_size", Some(self.batch_size)),
        ] {
            if v == Some(0) {
                bail!("attribute: {name} = 0; it must be at least 1");
            }
        }
        Ok(())
    }
}
