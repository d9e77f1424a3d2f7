//! Where each example's attribution baseline comes from: a named kind (`--baseline zero|blur|
//! uniform|mask`) or the user's own array (`--baseline-file`, a NumPy `.npy`), checked against
//! the model's input before any work so a wrong shape is refused with what would fit.

use super::attribute_inputs::Inputs;
use crate::config::AttributeSection;
use anyhow::{bail, Context, Result};
use glassbox_runner::attribution::baseline::{image_baseline, text_baseline};
use glassbox_runner::attribution::oracle::Oracle;
use glassbox_runner::attribution::{Baseline, Subject};
use std::path::PathBuf;

/// A user's baseline array as read from its `.npy` file.
pub(crate) struct BaselineArray {
    path: PathBuf,
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// The baseline settings of a stage run, resolved once.
pub(crate) struct Baselines {
    /// The `mask` baseline's token (the tokenizer's mask, padding or unknown token).
    pub(crate) mask: Option<u32>,
    /// `--baseline-file`'s array, replacing the named kind.
    array: Option<BaselineArray>,
}

impl Baselines {
    /// Reads `settings.baseline_file` (if any) and checks it against every input.
    pub(crate) fn load(
        settings: &AttributeSection,
        mask: Option<u32>,
        inputs: &Inputs,
        hidden: usize,
    ) -> Result<Self> {
        let array = match &settings.baseline_file {
            None => None,
            Some(path) => {
                let bytes = std::fs::read(path).with_context(|| {
                    format!("--baseline-file {}: cannot read it", path.display())
                })?;
                let a = glassbox_concepts::sae::formats::npz::parse_npy(&bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "--baseline-file {}: not a float .npy array ({e}); write one with numpy.save",
                        path.display()
                    )
                })?;
                let array = BaselineArray {
                    path: path.clone(),
                    shape: a.shape,
                    values: a.values,
                };
                array.check(inputs, hidden)?;
                Some(array)
            }
        };
        Ok(Self { mask, array })
    }

    /// The SHA-256 of the baseline file's bytes (part of the stage's fingerprint), if any.
    pub(crate) fn file_sha256(&self) -> Result<Option<String>> {
        self.array
            .as_ref()
            .map(|a| glassbox_data::hash::sha256_file(&a.path).map_err(Into::into))
            .transpose()
    }

    /// The baseline input of a subject.
    pub(crate) fn for_subject(
        &self,
        subject: &Subject<'_>,
        settings: &AttributeSection,
    ) -> Result<Vec<f32>> {
        if let Some(a) = &self.array {
            return Ok(match subject {
                Subject::Text(t) => a.text(t.tokens().len(), t.width()),
                Subject::Image(i) => {
                    let (h, w) = i.size();
                    a.image(h, w)
                }
            });
        }
        Ok(match subject {
            Subject::Text(t) => {
                let row = match (settings.baseline, self.mask) {
                    (Baseline::Mask, Some(id)) => Some(t.token_embedding(id)?),
                    _ => None,
                };
                text_baseline(
                    settings.baseline,
                    t.tokens().len(),
                    t.width(),
                    row.as_deref(),
                )?
            }
            Subject::Image(i) => {
                image_baseline(settings.baseline, i.input(), i.size(), settings.seed)?
            }
        })
    }
}

impl BaselineArray {
    /// Refuses a shape that does not fit every input, saying which shapes would.
    fn check(&self, inputs: &Inputs, hidden: usize) -> Result<()> {
        let path = self.path.display();
        let shape = &self.shape;
        match inputs {
            Inputs::Images { size: (h, w), .. } => {
                if !matches!(shape.as_slice(), [3, a, b] | [1, 3, a, b] if a == h && b == w) {
                    bail!(
                        "--baseline-file {path}: shape {shape:?} does not fit this model's images: a baseline image is [3, {h}, {w}] (or [1, 3, {h}, {w}]), channels first and after the model's normalisation, as PyTorch and Captum take it"
                    );
                }
            }
            Inputs::Texts(texts) => match shape.as_slice() {
                [d] if *d == hidden => {}
                [t, d] | [1, t, d] if *d == hidden => {
                    if let Some((id, e, _)) = texts.iter().find(|(_, e, _)| e.ids.len() != *t) {
                        bail!(
                            "--baseline-file {path}: shape {shape:?} holds {t} token embeddings, but example {id} has {} tokens; a [{hidden}] baseline (one embedding at every position) fits every example",
                            e.ids.len()
                        );
                    }
                }
                _ => bail!(
                    "--baseline-file {path}: shape {shape:?} does not fit this model's token embeddings ({hidden} wide): a text baseline is [{hidden}] (one embedding at every position) or [tokens, {hidden}]"
                ),
            },
        }
        if let Some(i) = self.values.iter().position(|v| !v.is_finite()) {
            bail!("--baseline-file {path}: value {i} is not finite");
        }
        Ok(())
    }

    /// `tokens × hidden` rows: the one row repeated, or the rows as given.
    fn text(&self, tokens: usize, hidden: usize) -> Vec<f32> {
        if self.shape.len() == 1 {
            self.values.repeat(tokens)
        } else {
            debug_assert_eq!(self.values.len(), tokens * hidden, "checked at load");
            self.values.clone()
        }
    }

    /// Channels-first values as the oracles' channels-last `h × w × 3`.
    fn image(&self, h: usize, w: usize) -> Vec<f32> {
        let mut out = vec![0f32; h * w * 3];
        for c in 0..3 {
            for p in 0..h * w {
                out[p * 3 + c] = self.values[c * h * w + p];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::BaselineArray;

    fn array(shape: &[usize], values: Vec<f32>) -> BaselineArray {
        BaselineArray {
            path: "b.npy".into(),
            shape: shape.to_vec(),
            values,
        }
    }

    #[test]
    fn images_go_from_channels_first_to_the_oracles_channels_last() {
        // 2 × 2 pixels; channel c of pixel p holds 10c + p.
        let chw: Vec<f32> = (0..3)
            .flat_map(|c| (0..4).map(move |p| (10 * c + p) as f32))
            .collect();
        let hwc = array(&[3, 2, 2], chw).image(2, 2);
        assert_eq!(hwc[..6], [0.0, 10.0, 20.0, 1.0, 11.0, 21.0]);
        assert_eq!(hwc[9..], [3.0, 13.0, 23.0]);
    }

    #[test]
    fn one_text_row_is_put_at_every_position() {
        let rows = array(&[2], vec![1.0, 2.0]).text(3, 2);
        assert_eq!(rows, [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
        let given = array(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]).text(2, 2);
        assert_eq!(given, [1.0, 2.0, 3.0, 4.0]);
    }
}
