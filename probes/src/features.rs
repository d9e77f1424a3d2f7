//! Reading the probed rows' activations from the store: pooled rows for sequence level, token
//! rows streamed part by part for token level (only the selected rows are kept, so memory is
//! bounded by the selection, not by the store).

use crate::labels::{LabelSet, Level, Target};
use crate::{ProbeError, Result};
use glassbox_data::rng::SeededRng;
use glassbox_data::store::{read_parts, read_pooled_matrix};
use glassbox_data::tokens::Tokens;
use glassbox_data::RunDir;
use glassbox_data::{HookPoint, Pool};
use std::collections::HashMap;

/// Keeps at most `cap` rows per class (a seeded sample; all rows for regression targets up to
/// `cap` in total), in row order.
pub fn cap_per_class(labels: &LabelSet, cap: Option<usize>, seed: u64) -> Vec<usize> {
    let n = labels.items.len();
    let Some(cap) = cap else {
        return (0..n).collect();
    };
    let classes: Vec<usize> = match &labels.target {
        Target::Classes { classes, .. } => classes.clone(),
        Target::Values(_) => vec![0; n],
    };
    let n_classes = classes.iter().max().map_or(0, |m| m + 1);
    let mut rng = SeededRng::new(seed ^ 0x6361_7070_6564);
    let mut keep = Vec::new();
    for c in 0..n_classes {
        let mut members: Vec<usize> = (0..n).filter(|&i| classes[i] == c).collect();
        if members.len() > cap {
            rng.shuffle(&mut members);
            members.truncate(cap);
        }
        keep.extend(members);
    }
    keep.sort_unstable();
    keep
}

/// Activations (row-major, `rows.len() × width`) of the label set's items `rows`.
pub fn load(
    run: &RunDir,
    hook: HookPoint,
    pool: Pool,
    labels: &LabelSet,
    rows: &[usize],
    examples: &[u64],
    tokens: &Tokens,
) -> Result<(Vec<f32>, usize)> {
    let (values, width) = match labels.level {
        Level::Sequence => {
            let dir = run.pooled_dir(hook, pool);
            let matrix = read_pooled_matrix(&dir)?;
            if matrix.example_ids != examples {
                return Err(ProbeError::Invalid(format!(
                    "{}: holds {} examples but examples.parquet has {}; the run is inconsistent — re-run extract with --force",
                    dir.display(),
                    matrix.example_ids.len(),
                    examples.len()
                )));
            }
            let w = matrix.width;
            let mut values = Vec::with_capacity(rows.len() * w);
            for &r in rows {
                let e = labels.items[r];
                values.extend_from_slice(&matrix.values[e * w..(e + 1) * w]);
            }
            (values, w)
        }
        Level::Token => {
            let dir = run.activations_dir(hook);
            if !dir.exists() {
                return Err(ProbeError::Invalid(format!(
                    "{}: no token-level activations for hook `{hook}`; extract with token_level = true",
                    dir.display()
                )));
            }
            let slot: HashMap<(u64, u32), usize> = rows
                .iter()
                .enumerate()
                .map(|(slot, &r)| {
                    let t = labels.items[r];
                    ((tokens.example_ids[t], tokens.positions[t]), slot)
                })
                .collect();
            let mut values: Vec<f32> = Vec::new();
            let mut width = 0;
            let mut filled = 0usize;
            read_parts(&dir, |batch| {
                if width == 0 {
                    width = batch.width;
                    values = vec![0.0; rows.len() * width];
                }
                let positions =
                    batch
                        .positions
                        .as_ref()
                        .ok_or_else(|| glassbox_data::DataError::Store {
                            path: dir.clone(),
                            message: "token-level rows without `position`".into(),
                        })?;
                for (i, (&ex, &pos)) in batch.example_ids.iter().zip(positions).enumerate() {
                    if let Some(&s) = slot.get(&(ex, pos)) {
                        values[s * width..(s + 1) * width]
                            .copy_from_slice(&batch.values[i * width..(i + 1) * width]);
                        filled += 1;
                    }
                }
                Ok(())
            })?;
            if filled != rows.len() {
                return Err(ProbeError::Invalid(format!(
                    "{}: {} of the {} labelled tokens have no stored activation; the run is inconsistent — re-run extract with --force",
                    dir.display(),
                    rows.len() - filled.min(rows.len()),
                    rows.len()
                )));
            }
            (values, width)
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let r = rows[i / width.max(1)];
        let item = labels.items[r];
        let at = match labels.level {
            Level::Sequence => format!("example {}", examples[item]),
            Level::Token => format!(
                "example {} position {}",
                tokens.example_ids[item], tokens.positions[item]
            ),
        };
        return Err(ProbeError::Invalid(format!(
            "hook `{hook}`: activation {} at {at} is {} (unit {}); the model produced non-finite values — check the model and its dtype",
            i,
            values[i],
            i % width.max(1)
        )));
    }
    Ok((values, width))
}
