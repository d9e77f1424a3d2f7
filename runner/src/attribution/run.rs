//! One example through every requested method: the attribution, `f` at the input and the
//! baseline, IG's completeness, the perturbation curves, ERASER (text) and max-sensitivity.

use super::evaluate::{self, Curves};
use super::{Explained, Method, MethodOptions, Subject};
use glassbox_data::rng::SeededRng;
use glassbox_models::Result;

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalOptions {
    /// Points along each perturbation curve (fractions 0, 1/n, …, 1); 0 skips the curves.
    pub curve_points: usize,
    /// Pixels per side of the image cells the curves remove.
    pub cell: usize,
    /// Perturbed copies for max-sensitivity; 0 skips it.
    pub sensitivity_samples: usize,
    /// Max-sensitivity's uniform noise radius, relative to the input's value range.
    pub sensitivity_radius: f64,
}

/// One method's result on one example.
#[derive(Debug, Clone)]
pub struct MethodResult {
    /// The method.
    pub method: Method,
    /// Its attribution.
    pub explained: Explained,
    /// Σ of the per-position attributions.
    pub attribution_sum: f64,
    /// IG: `|Σ − (f(x) − f(x'))| / |f(x) − f(x')|`.
    pub completeness_error: Option<f64>,
    /// The perturbation curves.
    pub curves: Option<Curves>,
    /// ERASER comprehensiveness (text).
    pub comprehensiveness: Option<f64>,
    /// ERASER sufficiency (text).
    pub sufficiency: Option<f64>,
    /// The largest relative change of the map under small input noise.
    pub max_sensitivity: Option<f64>,
}

/// Every method's result on one example, with `f` at the input and at the baseline.
#[derive(Debug, Clone)]
pub struct ExampleResult {
    /// `f(x)`.
    pub f_input: f64,
    /// `f(baseline)`.
    pub f_baseline: f64,
    /// One entry per method, in the order asked.
    pub methods: Vec<MethodResult>,
}

/// Runs `methods` on the subject's own input with `baseline`.
pub fn explain_example(
    subject: &Subject<'_>,
    methods: &[Method],
    baseline: &[f32],
    opts: &MethodOptions,
    eval: &EvalOptions,
) -> Result<ExampleResult> {
    let o = subject.oracle();
    let x = o.input().to_vec();
    let f = o.values(&[x.clone(), baseline.to_vec()])?;
    let (f_input, f_baseline) = (f[0], f[1]);
    let units = subject.units(eval.cell);
    let mut out = Vec::with_capacity(methods.len());
    for &method in methods {
        let explained = subject.explain(method, &x, baseline, opts)?;
        let attribution_sum: f64 = explained.positions.iter().map(|v| f64::from(*v)).sum();
        let completeness_error = (method == Method::IntegratedGradients).then(|| {
            let gap = f_input - f_baseline;
            (attribution_sum - gap).abs() / gap.abs().max(f64::MIN_POSITIVE)
        });
        let scores = subject.unit_scores(&explained.positions, eval.cell);
        let curves = if eval.curve_points > 0 {
            Some(evaluate::curves(
                o,
                &x,
                baseline,
                &units,
                &scores,
                eval.curve_points,
            )?)
        } else {
            None
        };
        let (comprehensiveness, sufficiency) = match subject {
            Subject::Text(_) => {
                let (c, s) = evaluate::comprehensiveness_sufficiency(
                    o, &x, baseline, &units, &scores, f_input,
                )?;
                (Some(c), Some(s))
            }
            Subject::Image(_) => (None, None),
        };
        let max_sensitivity = sensitivity(subject, method, &x, baseline, opts, eval, &explained)?;
        out.push(MethodResult {
            method,
            explained,
            attribution_sum,
            completeness_error,
            curves,
            comprehensiveness,
            sufficiency,
            max_sensitivity,
        });
    }
    Ok(ExampleResult {
        f_input,
        f_baseline,
        methods: out,
    })
}

/// Max-sensitivity (Yeh et al. 2019): the largest `‖Φ(x + δ) − Φ(x)‖ / ‖Φ(x)‖` over
/// `sensitivity_samples` draws of δ uniform in ±radius·(max x − min x), per-position maps.
fn sensitivity(
    subject: &Subject<'_>,
    method: Method,
    x: &[f32],
    baseline: &[f32],
    opts: &MethodOptions,
    eval: &EvalOptions,
    explained: &Explained,
) -> Result<Option<f64>> {
    if eval.sensitivity_samples == 0 {
        return Ok(None);
    }
    let (lo, hi) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        });
    let radius = eval.sensitivity_radius * f64::from(hi - lo);
    let mut rng = SeededRng::new(opts.seed ^ 0x5e45_17f1);
    let mut worst: Option<f64> = None;
    for _ in 0..eval.sensitivity_samples {
        let noisy: Vec<f32> = x
            .iter()
            .map(|v| v + (radius * (2.0 * rng.unit_f64() - 1.0)) as f32)
            .collect();
        let again = subject.explain(method, &noisy, baseline, opts)?;
        if let Some(r) = evaluate::relative_change(&explained.positions, &again.positions) {
            worst = Some(worst.map_or(r, |w: f64| w.max(r)));
        }
    }
    Ok(worst)
}
