//! `probes/weights.safetensors`: every probe's weights in raw activation space, so a probe
//! applies to stored activations directly: `logits = x · weightᵀ + bias`.
//!
//! Tensor names are `<level>/<label>/<hook>/weight` (`outputs × width`, f32) and `…/bias`
//! (`outputs`); binary probes and regressions have one output (the logit of the second class,
//! or the prediction). The file's metadata maps `<level>/<label>/<hook>` to a JSON object with
//! the class names in output order.

use crate::Result;
use glassbox_data::HookPoint;
use glassbox_data::{atomic, DataError, RunDir};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeWeights {
    pub hook: HookPoint,
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
    let data = glassbox_data::canonical::sorted_safetensors_header(data);
    atomic::write_bytes(&path, &data)?;
    Ok(())
}

/// Reads `probes/weights.safetensors` back.
pub fn read_weights(run: &RunDir) -> Result<Vec<ProbeWeights>> {
    let path = run.probes_dir().join("weights.safetensors");
    let bad = |message: String| DataError::Store {
        path: path.clone(),
        message,
    };
    let bytes = std::fs::read(&path)
        .map_err(|e| bad(format!("cannot read: {e}; run `glassbox probe` first")))?;
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let floats = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let view = tensors
            .tensor(name)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((view.shape().to_vec(), values))
    };
    let mut out = Vec::new();
    let mut keys: Vec<(&String, &String)> = metadata.metadata().iter().flatten().collect();
    keys.sort();
    for (key, info) in keys {
        let mut parts = key.splitn(3, '/');
        let (Some(level), Some(label), Some(hook)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let info: serde_json::Value =
            serde_json::from_str(info).map_err(|e| bad(format!("metadata `{key}`: {e}")))?;
        let classes = info["classes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let (shape, weight) = floats(&format!("{key}/weight"))?;
        let (_, bias) = floats(&format!("{key}/bias"))?;
        if shape.len() != 2 || bias.len() != shape[0] {
            return Err(bad(format!(
                "`{key}`: weight shape {shape:?} and bias length {} disagree",
                bias.len()
            ))
            .into());
        }
        let hook: HookPoint = hook
            .parse()
            .map_err(|e| bad(format!("metadata `{key}`: {e}")))?;
        out.push(ProbeWeights {
            hook,
            label: label.to_owned(),
            level: level.to_owned(),
            classes,
            width: shape[1],
            outputs: shape[0],
            weight,
            bias,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let p = ProbeWeights {
            hook: "blocks.1.hook_resid_post".parse().unwrap(),
            label: "topic".into(),
            level: "sequence".into(),
            classes: vec!["a".into(), "b".into(), "c".into()],
            width: 2,
            outputs: 3,
            weight: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            bias: vec![0.5, -0.5, 0.0],
        };
        write_weights(&run, std::slice::from_ref(&p)).unwrap();
        assert_eq!(read_weights(&run).unwrap(), vec![p]);
    }
}
