//! One part of the attribute stage: its examples explained for every target × method. The maps
//! go straight to `attributions/method=<m>/target=<slug>/part-NNNNN.parquet` (and, for images,
//! the inputs to `attributions/inputs/`); the rows of the run-wide tables and the maps the
//! randomisation check compares against go into the part's fragment.

use super::attribute_baseline::Baselines;
use super::attribute_inputs::{subject, Inputs, TargetKind};
use super::parted::Part;
use crate::config::AttributeSection;
use anyhow::Result;
use glassbox_data::Progress;
use glassbox_models::LoadedModel;
use glassbox_runner::attribution::evaluate::area;
use glassbox_runner::attribution::run::{explain_example, EvalOptions};
use glassbox_runner::attribution::tables::{slug, write_maps, CurveRow, MapRows, SummaryRow};
use glassbox_runner::attribution::{Method, MethodOptions, Subject};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one part hands to the worker that commits.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct AttributeFragment {
    /// Per target, in the settings' order.
    pub targets: Vec<TargetRows>,
}

/// One target's rows of a part's examples.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct TargetRows {
    pub summary: Vec<SummaryRow>,
    pub curves: Vec<CurveRow>,
    /// The maps of the examples the randomisation check re-explains: (method, example, map).
    pub originals: Vec<(Method, usize, Vec<f32>)>,
}

/// One example's map: its id, per-position values and (text) its tokens.
type ExampleMap = (u64, Vec<f32>, Option<Vec<String>>);

/// What every part is explained with.
pub(crate) struct PartContext<'a> {
    pub model: &'a LoadedModel,
    pub settings: &'a AttributeSection,
    pub inputs: &'a Inputs,
    pub targets: &'a [(String, TargetKind)],
    pub methods: &'a [Method],
    pub opts: &'a MethodOptions,
    pub eval: &'a EvalOptions,
    pub baselines: &'a Baselines,
}

/// Explains the part's examples, writes their maps (and image inputs) and the fragment.
pub(crate) fn attribute_part(
    cx: &PartContext<'_>,
    part: &Part<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    let dir = part.staged.path("attributions");
    std::fs::create_dir_all(&dir)?;
    let labels = cx.model.model.labels().to_vec();
    let mut fragment = AttributeFragment::default();
    for (spec, kind) in cx.targets {
        let mut rows = TargetRows::default();
        let mut maps: BTreeMap<Method, Vec<ExampleMap>> = BTreeMap::new();
        for i in part.items.clone() {
            let s = subject(cx.model, cx.inputs, i, kind, cx.settings.batch_size)?;
            let baseline = cx.baselines.for_subject(&s, cx.settings)?;
            let result = explain_example(&s, cx.methods, &baseline, cx.opts, cx.eval)?;
            let (example_id, predicted, tokens) = match (cx.inputs, &s) {
                (Inputs::Texts(t), Subject::Text(o)) => (
                    t[i].0,
                    t[i].2.and_then(|k| labels.get(k).cloned()),
                    Some(o.tokens().to_vec()),
                ),
                (Inputs::Images { images, .. }, _) => {
                    (images[i].0, labels.get(images[i].2).cloned(), None)
                }
                _ => unreachable!("subjects follow their inputs"),
            };
            for m in &result.methods {
                let name = m.method.as_str().to_owned();
                let auc = |f: fn(&glassbox_runner::attribution::evaluate::Curves) -> &Vec<f64>| {
                    m.curves.as_ref().map(|c| area(&c.fractions, f(c)))
                };
                rows.summary.push(SummaryRow {
                    example_id,
                    method: name.clone(),
                    target: spec.clone(),
                    predicted: predicted.clone(),
                    f_input: result.f_input,
                    f_baseline: result.f_baseline,
                    attribution_sum: m.attribution_sum,
                    completeness_error: m.completeness_error,
                    deletion_morf_auc: auc(|c| &c.deletion_morf),
                    deletion_lerf_auc: auc(|c| &c.deletion_lerf),
                    insertion_morf_auc: auc(|c| &c.insertion_morf),
                    insertion_lerf_auc: auc(|c| &c.insertion_lerf),
                    comprehensiveness: m.comprehensiveness,
                    sufficiency: m.sufficiency,
                    max_sensitivity: m.max_sensitivity,
                });
                if let Some(c) = &m.curves {
                    for (curve, values) in [
                        ("deletion_morf", &c.deletion_morf),
                        ("deletion_lerf", &c.deletion_lerf),
                        ("insertion_morf", &c.insertion_morf),
                        ("insertion_lerf", &c.insertion_lerf),
                    ] {
                        for (fraction, value) in c.fractions.iter().zip(values) {
                            rows.curves.push(CurveRow {
                                example_id,
                                method: name.clone(),
                                target: spec.clone(),
                                curve: curve.to_owned(),
                                fraction: *fraction,
                                value: *value,
                            });
                        }
                    }
                }
                if i < cx.settings.sanity_examples {
                    rows.originals
                        .push((m.method, i, m.explained.positions.clone()));
                }
                maps.entry(m.method).or_default().push((
                    example_id,
                    m.explained.positions.clone(),
                    tokens.clone(),
                ));
            }
            progress.advance(1);
        }
        let image_width = match cx.inputs {
            Inputs::Images { size, .. } => Some(size.1),
            Inputs::Texts(_) => None,
        };
        for (method, examples) in &maps {
            let folder = dir
                .join(format!("method={}", method.as_str()))
                .join(format!("target={}", slug(spec)));
            let views: Vec<MapRows<'_>> = examples
                .iter()
                .map(|(id, values, tokens)| MapRows {
                    example_id: *id,
                    values,
                    tokens: tokens.as_deref(),
                    image_width,
                })
                .collect();
            write_maps(&folder, part.index, &views)?;
        }
        fragment.targets.push(rows);
    }
    if let Inputs::Images { images, size } = cx.inputs {
        let pre = cx.model.preprocessor()?;
        let folder = dir.join("inputs");
        std::fs::create_dir_all(&folder)?;
        for (id, pixels, _) in &images[part.items.clone()] {
            glassbox_data::images::write_model_input_png(
                &folder.join(format!("{id}.png")),
                pixels,
                *size,
                &pre,
            )?;
        }
    }
    part.write_fragment(&fragment)
}
