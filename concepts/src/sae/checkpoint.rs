//! Resumable training checkpoints: the trainer's whole state (weights, Adam moments, step,
//! dead-latent clocks) in one safetensors file, written atomically every few steps. Because
//! batches are a seeded function of the step, resuming replays the data stream to the saved
//! step and continues with exactly the numbers an uninterrupted run would have produced.

use super::curve::CurvePoint;
use super::tensors;
use super::train::Trainer;
use crate::ConceptError;
use std::collections::HashMap;
use std::path::Path;

/// Writes `trainer` with the input `scale` and a `fingerprint` of everything that decides the
/// training (options, hook, data), so a resume under other settings is refused.
/// The training curve so far goes with it, so a resumed run reports every step's statistics.
pub fn save(
    path: &Path,
    trainer: &Trainer,
    scales: &[f32],
    fingerprint: &str,
    curve: &[CurvePoint],
) -> Result<(), ConceptError> {
    let (s, m, v) = (&trainer.sae, &trainer.adam.m, &trainer.adam.v);
    let (w, d) = (s.width, s.d_in);
    let mut tensors = vec![
        ("w_enc", vec![w, d], s.w_enc.as_slice()),
        ("b_enc", vec![w], &s.b_enc),
        ("w_dec", vec![w, d], &s.w_dec),
        ("b_dec", vec![d], &s.b_dec),
        ("adam_m.w_enc", vec![w, d], &m.w_enc),
        ("adam_m.b_enc", vec![w], &m.b_enc),
        ("adam_m.w_dec", vec![w, d], &m.w_dec),
        ("adam_m.b_dec", vec![d], &m.b_dec),
        ("adam_v.w_enc", vec![w, d], &v.w_enc),
        ("adam_v.b_enc", vec![w], &v.b_enc),
        ("adam_v.w_dec", vec![w, d], &v.w_dec),
        ("adam_v.b_dec", vec![d], &v.b_dec),
    ];
    // JumpReLU thresholds are trained weights with Adam moments of their own.
    if !s.threshold.is_empty() {
        tensors.extend([
            ("threshold", vec![w], s.threshold.as_slice()),
            ("adam_m.threshold", vec![w], &m.threshold),
            ("adam_v.threshold", vec![w], &v.threshold),
        ]);
    }
    // A transcoder's skip connection likewise.
    if !trainer.w_skip.is_empty() {
        tensors.extend([
            ("w_skip", vec![d, d], trainer.w_skip.as_slice()),
            ("adam_m.w_skip", vec![d, d], &m.w_skip),
            ("adam_v.w_skip", vec![d, d], &v.w_skip),
        ]);
    }
    let scale_list: Vec<String> = scales.iter().map(|s| format!("{s:e}")).collect();
    let metadata = HashMap::from([
        ("step".to_owned(), trainer.step.to_string()),
        ("tokens_seen".to_owned(), trainer.tokens_seen.to_string()),
        ("scale".to_owned(), scale_list.join(",")),
        // Rust prints the shortest decimal that parses back to the same f64.
        (
            "batch_threshold".to_owned(),
            format!("{:e}", trainer.batch_threshold),
        ),
        ("fingerprint".to_owned(), fingerprint.to_owned()),
        (
            "last_fired".to_owned(),
            serde_json::to_string(&trainer.last_fired).expect("numbers serialise"),
        ),
        (
            "curve".to_owned(),
            serde_json::to_string(curve).expect("numbers serialise"),
        ),
    ]);
    tensors::write(path, &tensors, metadata)
}

/// Restores a checkpoint into `trainer` (freshly built with the same shapes); returns the
/// saved input scales (a transcoder's input's and target's) and the training curve up to the
/// checkpoint.
pub fn load(
    path: &Path,
    trainer: &mut Trainer,
    fingerprint: &str,
) -> Result<(Vec<f32>, Vec<CurvePoint>), ConceptError> {
    let bad = |m: String| ConceptError::Invalid(format!("checkpoint {}: {m}", path.display()));
    let (mut tensors, meta) = tensors::read(path)?;
    if meta.get("fingerprint").map(String::as_str) != Some(fingerprint) {
        return Err(bad(
            "it was written with other options or data; delete it (or rerun with --force) to start over"
                .into(),
        ));
    }
    let number = |key: &str| -> Result<f64, ConceptError> {
        meta.get(key)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| bad(format!("metadata `{key}` is missing or not a number")))
    };
    let mut take = |name: &str, into: &mut Vec<f32>| -> Result<(), ConceptError> {
        let t = tensors
            .remove(name)
            .ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
        if t.values.len() != into.len() {
            return Err(bad(format!(
                "tensor `{name}` has {} values, expected {}",
                t.values.len(),
                into.len()
            )));
        }
        *into = t.values;
        Ok(())
    };
    let (s, m, v) = (&mut trainer.sae, &mut trainer.adam.m, &mut trainer.adam.v);
    take("w_enc", &mut s.w_enc)?;
    take("b_enc", &mut s.b_enc)?;
    take("w_dec", &mut s.w_dec)?;
    take("b_dec", &mut s.b_dec)?;
    take("adam_m.w_enc", &mut m.w_enc)?;
    take("adam_m.b_enc", &mut m.b_enc)?;
    take("adam_m.w_dec", &mut m.w_dec)?;
    take("adam_m.b_dec", &mut m.b_dec)?;
    take("adam_v.w_enc", &mut v.w_enc)?;
    take("adam_v.b_enc", &mut v.b_enc)?;
    take("adam_v.w_dec", &mut v.w_dec)?;
    take("adam_v.b_dec", &mut v.b_dec)?;
    if !s.threshold.is_empty() {
        take("threshold", &mut s.threshold)?;
        take("adam_m.threshold", &mut m.threshold)?;
        take("adam_v.threshold", &mut v.threshold)?;
    }
    if !trainer.w_skip.is_empty() {
        take("w_skip", &mut trainer.w_skip)?;
        take("adam_m.w_skip", &mut m.w_skip)?;
        take("adam_v.w_skip", &mut v.w_skip)?;
    }
    trainer.step = number("step")? as usize;
    trainer.batch_threshold = number("batch_threshold")?;
    trainer.tokens_seen = meta
        .get("tokens_seen")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("metadata `tokens_seen` is missing".into()))?;
    let last_fired: Vec<u64> = meta
        .get("last_fired")
        .and_then(|v| serde_json::from_str(v).ok())
        .ok_or_else(|| bad("metadata `last_fired` is missing".into()))?;
    if last_fired.len() != trainer.last_fired.len() {
        return Err(bad("`last_fired` has the wrong length".into()));
    }
    trainer.last_fired = last_fired;
    let curve: Vec<CurvePoint> = meta
        .get("curve")
        .and_then(|v| serde_json::from_str(v).ok())
        .ok_or_else(|| bad("metadata `curve` is missing".into()))?;
    let scales = meta
        .get("scale")
        .and_then(|v| v.split(',').map(|s| s.parse::<f32>().ok()).collect())
        .ok_or_else(|| bad("metadata `scale` is missing".into()))?;
    Ok((scales, curve))
}
