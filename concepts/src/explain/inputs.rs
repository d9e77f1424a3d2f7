//! What a run offers to explain units against: its label columns (sequence level, and token
//! level through the probe crate's labelers) and the directions its other stages found (probe
//! weights, CAVs).

use super::{Direction, LabelTarget};
use crate::sae::stream::RowId;
use crate::ConceptError;
use glassbox_data::examples::Examples;
use glassbox_data::tokens::Tokens;
use glassbox_data::HookPoint;
use glassbox_data::{RunDir, Value};
use glassbox_probes::labels::{sequence_labels, token_labels, Target};
use std::collections::HashMap;

/// The sequence labels to use: `labels` as given, or (empty) every categorical column with at
/// least two classes — a one-class column has nothing to correlate with, and only a column the
/// user names is worth an error.
pub fn sequence_label_names(examples: &Examples, labels: &[String]) -> Vec<String> {
    if !labels.is_empty() {
        return labels.to_vec();
    }
    examples
        .columns
        .iter()
        .filter(|c| {
            let classes: std::collections::HashSet<String> = c
                .values
                .iter()
                .filter(|v| matches!(v, Value::Str(_) | Value::Bool(_) | Value::Int(_)))
                .filter_map(Value::class_name)
                .collect();
            classes.len() >= 2
        })
        .map(|c| c.name.clone())
        .collect()
}

/// Label targets keyed by token row: sequence labels (`labels`; empty = every categorical
/// column) apply to all of an example's tokens; token labels (`token_labels`, e.g.
/// `@word_class`) to the labelled tokens.
pub fn label_targets(
    examples: &Examples,
    tokens: &Tokens,
    labels: &[String],
    token_label_names: &[String],
    source: &str,
) -> Result<Vec<LabelTarget>, ConceptError> {
    let names = sequence_label_names(examples, labels);
    let row_of: HashMap<u64, usize> = examples
        .example_ids
        .iter()
        .enumerate()
        .map(|(r, &id)| (id, r))
        .collect();
    let mut out = Vec::new();
    for name in &names {
        let set = sequence_labels(examples, name, source)
            .map_err(|e| ConceptError::Invalid(e.to_string()))?;
        let Target::Classes { classes, names } = set.target else {
            continue; // numeric labels: no classes to correlate with
        };
        let class_of_row: HashMap<usize, u32> = set
            .items
            .iter()
            .zip(&classes)
            .map(|(&row, &c)| (row, c as u32))
            .collect();
        let mut class_of = HashMap::new();
        for t in 0..tokens.len() {
            if let Some(&c) = row_of
                .get(&tokens.example_ids[t])
                .and_then(|row| class_of_row.get(row))
            {
                class_of.insert((tokens.example_ids[t], tokens.positions[t]), c);
            }
        }
        out.push(LabelTarget {
            name: name.clone(),
            classes: names,
            class_of,
        });
    }
    for name in token_label_names {
        let set = token_labels(examples, tokens, name, source)
            .map_err(|e| ConceptError::Invalid(e.to_string()))?;
        let Target::Classes { classes, names } = set.target else {
            continue;
        };
        let class_of: HashMap<RowId, u32> = set
            .items
            .iter()
            .zip(&classes)
            .map(|(&t, &c)| ((tokens.example_ids[t], tokens.positions[t]), c as u32))
            .collect();
        out.push(LabelTarget {
            name: name.clone(),
            classes: names,
            class_of,
        });
    }
    Ok(out)
}

/// The probe weight rows and mean CAV directions the run holds at `hook` (none when those
/// stages have not run).
pub fn run_directions(run: &RunDir, hook: HookPoint) -> Result<Vec<Direction>, ConceptError> {
    let mut out = Vec::new();
    if run.probes_dir().join("weights.safetensors").exists() {
        let probes =
            glassbox_probes::read_weights(run).map_err(|e| ConceptError::Invalid(e.to_string()))?;
        for p in probes.iter().filter(|p| p.hook == hook) {
            for o in 0..p.outputs {
                let name = match (p.outputs, p.classes.len()) {
                    // Binary: the one output is the logit of the second class.
                    (1, 2) => format!("{}={}", p.label, p.classes[1]),
                    (1, _) => p.label.clone(),
                    _ => format!(
                        "{}={}",
                        p.label,
                        p.classes.get(o).cloned().unwrap_or_default()
                    ),
                };
                out.push(Direction {
                    source: "probe".into(),
                    name: format!("{} ({})", name, p.level),
                    vector: p.weight[o * p.width..(o + 1) * p.width]
                        .iter()
                        .map(|&v| v as f64)
                        .collect(),
                });
            }
        }
    }
    if crate::tcav_dir(run).join("cavs.parquet").exists() {
        let mut by_concept: Vec<(String, Vec<f64>)> = Vec::new();
        for cav in crate::read_cavs(run)?
            .into_iter()
            .filter(|c| c.hook == hook && c.concept != "random")
        {
            match by_concept.iter_mut().find(|(c, _)| *c == cav.concept) {
                Some((_, sum)) => sum
                    .iter_mut()
                    .zip(&cav.direction)
                    .for_each(|(s, d)| *s += d),
                None => by_concept.push((cav.concept, cav.direction)),
            }
        }
        for (concept, sum) in by_concept {
            out.push(Direction {
                source: "cav".into(),
                name: concept,
                vector: sum,
            });
        }
    }
    Ok(out)
}
