//! `probes/weights.safetensors`: every probe's weights in raw activation space, so a probe
//! applies to stored activations directly: `logits = x · weightᵀ + bias`.
//!
//! Tensor names are `<level>/<label>/<hook>/weight` (`outputs × width`, f32) and `…/bias`
//! (`outputs`); binary probes and regressions have one output (the logit of the second class,
//! or the prediction). The file's metadata maps `<level>/<label>/<hook>` to a JSON object with
//! the class names in output order.

use crate::Result;
use glassbox_data::{atomic, DataError, RunDir};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeWeights {
    pub hook: String,
    pub label: String,
    pub level: String,
    /// Empty for regressions.
    pub classes: Vec<String>,
    pub width: usize,
    pub outputs: usize,
    /// `outputs × width`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl ProbeWeights {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.level, self.label, self.hook)
    }
}

fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn write_weights(run: &RunDir, probes: &[ProbeWeights]) -> Result<()> {
    let path = run.probes_dir().join("weights.safetensors");
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = probes
        .iter()
        .flat_map(|p| {
            [
                (
                    format!("{}/weight", p.key()),
                    vec![p.outputs, p.width],
                    bytes(&p.weight),
                ),
                (format!("{}/bias", p.key()), vec![p.outputs], bytes(&p.bias)),
            ]
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| DataError::Store {
                    path: path.clone(),
                    message: e.to_string(),
                })
        })
        .collect::<std::result::Result<_, _>>()?;
    let metadata: HashMap<String, String> = probes
        .iter()
        .map(|p| {
            (
                p.key(),
                serde_json::json!({ "classes": p.classes }).to_string(),
            )
        })
        .collect();
    let data =
        safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| DataError::Store {
            path: path.clone(),
            message: e.to_string(),
        })?;
    atomic::write_bytes(&path, &data)?;
    Ok(())
}
