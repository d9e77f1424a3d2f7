//! Input attribution — "this is a tabby cat because of these pixels, this next token because of
//! these tokens" — and its evaluation.
//!
//! - [`oracle`]: the target's value and gradient at a batch of inputs, for text (token
//!   embeddings) and images (pixels);
//! - [`methods`]: saliency, gradient × input, integrated gradients ([`quadrature`]), SmoothGrad,
//!   occlusion — written once against the oracle;
//! - [`maps`]: Grad-CAM, attention rollout, and the edge-detector control;
//! - [`evaluate`]: deletion/insertion curves, ERASER, similarity measures;
//! - [`run`]: one example × method end to end (attribution, faithfulness, max-sensitivity);
//!   [`sanity`]: the model- and label-randomisation checks.

pub mod baseline;
pub mod evaluate;
pub mod image_oracle;
pub mod maps;
pub mod methods;
pub mod oracle;
pub mod quadrature;
pub mod run;
pub mod sanity;
pub mod tables;
#[cfg(test)]
mod test_oracles;

use glassbox_data::Modality;
use glassbox_models::{HookPoint, ModelError, Result};
pub use image_oracle::default_cam_hook;
use image_oracle::ImageOracle;
use maps::Grid;
use oracle::{Oracle, TextOracle};
pub use quadrature::IgRule;
use serde::{Deserialize, Serialize};

/// An attribution method. Configs read it as the CLI does (aliases such as `ig` included);
/// it is written back under its full name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Method {
    /// `|∇f|` (Simonyan et al. 2014; Captum `Saliency`).
    Saliency,
    /// `x ⊙ ∇f` (Captum `InputXGradient`).
    GradientXInput,
    /// Integrated gradients from a baseline (Sundararajan et al. 2017).
    IntegratedGradients,
    /// The noise-averaged `|∇f|` (Smilkov et al. 2017).
    Smoothgrad,
    /// The noise-averaged `∇f²`.
    SmoothgradSq,
    /// `f(x) − f(x with a window replaced by the baseline)`: sliding windows over images, token
    /// deletion (one token's embedding replaced) for text.
    Occlusion,
    /// Grad-CAM on a spatial hook (CNN feature maps; ViT patch tokens).
    GradCam,
    /// Attention rollout (ViT, BERT and decoders): target-independent.
    AttentionRollout,
    /// Sobel edges of the image: a control that ignores the model.
    Edges,
}

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 9] = [
        Method::Saliency,
        Method::GradientXInput,
        Method::IntegratedGradients,
        Method::Smoothgrad,
        Method::SmoothgradSq,
        Method::Occlusion,
        Method::GradCam,
        Method::AttentionRollout,
        Method::Edges,
    ];

    /// The name folders, tables and flags use.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Saliency => "saliency",
            Method::GradientXInput => "gradient_x_input",
            Method::IntegratedGradients => "integrated_gradients",
            Method::Smoothgrad => "smoothgrad",
            Method::SmoothgradSq => "smoothgrad_sq",
            Method::Occlusion => "occlusion",
            Method::GradCam => "grad_cam",
            Method::AttentionRollout => "attention_rollout",
            Method::Edges => "edges",
        }
    }

    /// Whether the method reads the target (rollout and the edge control do not).
    pub fn reads_target(self) -> bool {
        !matches!(self, Method::AttentionRollout | Method::Edges)
    }

    /// Refuses a method that cannot apply to a model reading `modality`, saying why.
    pub fn check_applies(self, modality: Modality, family: &str) -> Result<()> {
        let why = match (self, modality) {
            (Method::GradCam, Modality::Text) => Some(
                "Grad-CAM weighs the channels of a spatial feature map; a text model has none — use integrated_gradients, occlusion or attention_rollout",
            ),
            (Method::Edges, Modality::Text) => {
                Some("the edge-detector control reads image pixels; this is a text model")
            }
            _ => None,
        };
        match why {
            Some(why) => Err(ModelError::Invalid(format!(
                "method `{}` does not apply to the {family} family: {why}",
                self.as_str()
            ))),
            None => Ok(()),
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        let alias = match s.as_str() {
            "ig" => "integrated_gradients",
            "gradient" | "gradients" => "saliency",
            "input_x_gradient" | "grad_x_input" | "gxi" => "gradient_x_input",
            "smoothgrad2" | "smoothgrad_squared" => "smoothgrad_sq",
            "feature_ablation" | "ablation" => "occlusion",
            "gradcam" => "grad_cam",
            "rollout" => "attention_rollout",
            "edge" => "edges",
            other => other,
        };
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == alias)
            .ok_or_else(|| {
                format!(
                    "unknown attribution method `{s}`; choose from {}",
                    Method::ALL.map(Method::as_str).join(", ")
                )
            })
    }
}

impl TryFrom<String> for Method {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// What a removed feature becomes: the reference input of integrated gradients, occlusion and
/// the perturbation curves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// Text: all-zero token embeddings (positions keep their position embeddings). Images: the
    /// all-zero tensor after normalisation (the data set's mean colour for mean/std
    /// normalisation).
    #[default]
    Zero,
    /// Images: a Gaussian-blurred copy (σ = 5 % of the shorter side).
    Blur,
    /// Images: uniform noise over the input's value range, seeded.
    Uniform,
    /// Text: every token's embedding replaced by the mask token's (the tokenizer's `[MASK]`,
    /// `<mask>`, or else its padding or unknown token).
    Mask,
}

impl Baseline {
    /// The name configs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Baseline::Zero => "zero",
            Baseline::Blur => "blur",
            Baseline::Uniform => "uniform",
            Baseline::Mask => "mask",
        }
    }
}

/// Method settings shared by every example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodOptions {
    /// Integrated gradients' points.
    pub steps: usize,
    /// Integrated gradients' rule.
    pub rule: IgRule,
    /// SmoothGrad's noisy copies.
    pub samples: usize,
    /// SmoothGrad's noise, relative to the input's value range.
    pub noise: f64,
    /// Seed of SmoothGrad's noise, the uniform baseline and the sensitivity perturbations.
    pub seed: u64,
    /// Occlusion window: tokens (text) or pixels per side (images).
    pub window: usize,
    /// Occlusion stride (tokens or pixels).
    pub stride: usize,
    /// Grad-CAM's hook; `None`: the last spatial hook before pooling, or a probe target's own
    /// hook when that is a spatial map ([`ImageOracle::cam_hook`]).
    pub cam_hook: Option<HookPoint>,
}

/// An example ready to explain: its oracle, and how its features group into positions.
pub enum Subject<'a> {
    /// A tokenised text.
    Text(TextOracle<'a>),
    /// A preprocessed image.
    Image(ImageOracle<'a>),
}

/// One method's attribution of one input.
#[derive(Debug, Clone)]
pub struct Explained {
    /// Per token (text) or per pixel (images).
    pub positions: Vec<f32>,
    /// Per input feature (embedding value, pixel channel), for the methods that give one.
    pub features: Option<Vec<f32>>,
    /// The map at its own resolution (Grad-CAM's feature map, rollout's patch grid).
    pub grid: Option<Grid>,
}

impl Subject<'_> {
    /// The oracle.
    pub fn oracle(&self) -> &dyn Oracle {
        match self {
            Subject::Text(o) => o,
            Subject::Image(o) => o,
        }
    }

    /// Units the curves remove: tokens, or `cell × cell` pixel cells (all channels).
    pub fn units(&self, cell: usize) -> Vec<Vec<usize>> {
        match self {
            Subject::Text(o) => {
                let d = o.width();
                (0..o.input().len() / d)
                    .map(|t| (t * d..(t + 1) * d).collect())
                    .collect()
            }
            Subject::Image(o) => {
                let (h, w) = o.size();
                cells(h, w, cell)
                    .into_iter()
                    .map(|pixels| pixels.into_iter().flat_map(|p| p * 3..p * 3 + 3).collect())
                    .collect()
            }
        }
    }

    /// Per-unit scores from per-position attributions (a cell sums its pixels).
    pub fn unit_scores(&self, positions: &[f32], cell: usize) -> Vec<f32> {
        match self {
            Subject::Text(_) => positions.to_vec(),
            Subject::Image(o) => {
                let (h, w) = o.size();
                cells(h, w, cell)
                    .into_iter()
                    .map(|c| c.iter().map(|&p| positions[p]).sum())
                    .collect()
            }
        }
    }

    /// `method`'s attribution of input `x` (the example's own or a perturbed copy).
    pub fn explain(
        &self,
        method: Method,
        x: &[f32],
        baseline: &[f32],
        opts: &MethodOptions,
    ) -> Result<Explained> {
        let o = self.oracle();
        let from_features = |features: Vec<f32>| Explained {
            positions: methods::per_position(&features, o.width()),
            features: Some(features),
            grid: None,
        };
        Ok(match method {
            Method::Saliency => from_features(methods::saliency(o, x)?.1),
            Method::GradientXInput => from_features(methods::gradient_x_input(o, x)?.1),
            Method::IntegratedGradients => from_features(methods::integrated_gradients(
                o, x, baseline, opts.steps, opts.rule,
            )?),
            Method::Smoothgrad | Method::SmoothgradSq => from_features(methods::smoothgrad(
                o,
                x,
                opts.samples,
                opts.noise,
                opts.seed,
                method == Method::SmoothgradSq,
            )?),
            Method::Occlusion => {
                let windows = match self {
                    Subject::Text(t) => methods::token_windows(
                        x.len() / t.width(),
                        t.width(),
                        opts.window,
                        opts.stride,
                    ),
                    Subject::Image(i) => {
                        let (h, w) = i.size();
                        methods::image_windows(h, w, opts.window, opts.stride)
                    }
                };
                from_features(methods::occlusion(o, x, baseline, &windows)?.1)
            }
            Method::GradCam => {
                let Subject::Image(i) = self else {
                    return Err(ModelError::Invalid(
                        "Grad-CAM needs a spatial feature map; this is a text model".into(),
                    ));
                };
                let hook = i.cam_hook(opts.cam_hook)?;
                let (a, g) = i.hook_gradient(x, hook)?;
                let channels = i.hook_width(hook);
                let grid = maps::grad_cam(hook, &a, &g, channels, i.size())?;
                let (h, w) = i.size();
                Explained {
                    positions: maps::upsample(&grid, h, w),
                    features: None,
                    grid: Some(grid),
                }
            }
            Method::AttentionRollout => match self {
                Subject::Text(t) => {
                    let (patterns, query) = t.patterns(x)?;
                    let heads = heads_of(&patterns)?;
                    Explained {
                        positions: maps::rollout(&patterns, heads, query)?,
                        features: None,
                        grid: None,
                    }
                }
                Subject::Image(i) => {
                    let patterns = i.patterns(x)?;
                    let heads = heads_of(&patterns)?;
                    let flow = maps::rollout(&patterns, heads, 0)?;
                    let cells = flow.len() - 1;
                    let side = (cells as f64).sqrt().round() as usize;
                    if side * side != cells {
                        return Err(ModelError::Invalid(format!(
                            "attention rollout: {cells} patch tokens are not a square grid"
                        )));
                    }
                    let grid = Grid {
                        values: flow[1..].to_vec(),
                        rows: side,
                        cols: side,
                    };
                    let (h, w) = i.size();
                    Explained {
                        positions: maps::upsample(&grid, h, w),
                        features: None,
                        grid: Some(grid),
                    }
                }
            },
            Method::Edges => {
                let Subject::Image(i) = self else {
                    return Err(ModelError::Invalid(
                        "the edge control reads image pixels; this is a text model".into(),
                    ));
                };
                let (h, w) = i.size();
                Explained {
                    positions: maps::edges(x, h, w),
                    features: None,
                    grid: None,
                }
            }
        })
    }
}

/// Heads of a `[1, t, heads · t]` pattern.
fn heads_of(patterns: &[candle_core::Tensor]) -> Result<usize> {
    let p = patterns
        .first()
        .ok_or_else(|| ModelError::Invalid("the model offered no attention patterns".into()))?;
    let (_, t, width) = p.dims3()?;
    Ok(width / t.max(1))
}

/// Pixel indices of each `cell × cell` cell of an `h × w` image, row-major (edge cells smaller).
pub fn cells(h: usize, w: usize, cell: usize) -> Vec<Vec<usize>> {
    let cell = cell.max(1);
    let mut out = Vec::new();
    for y0 in (0..h).step_by(cell) {
        for x0 in (0..w).step_by(cell) {
            out.push(
                (y0..(y0 + cell).min(h))
                    .flat_map(|y| (x0..(x0 + cell).min(w)).map(move |x| y * w + x))
                    .collect(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Method;

    #[test]
    fn configs_read_the_cli_names_and_aliases_and_write_the_full_name() {
        let read: Vec<Method> =
            serde_json::from_str(r#"["ig", "integrated_gradients", "Grad-CAM", "rollout"]"#)
                .unwrap();
        assert_eq!(
            read,
            [
                Method::IntegratedGradients,
                Method::IntegratedGradients,
                Method::GradCam,
                Method::AttentionRollout
            ]
        );
        assert_eq!(
            serde_json::to_string(&Method::IntegratedGradients).unwrap(),
            r#""integrated_gradients""#
        );
        let e = serde_json::from_str::<Method>(r#""lrp""#).unwrap_err();
        assert!(e.to_string().contains("choose from saliency"), "{e}");
    }
}
