//! The data (label) randomisation check of a `probe:` target (Adebayo et al. 2018, §5): the
//! same probe refitted on the same activations with its labels shuffled. A method whose maps
//! for the shuffled-label probe still rank-correlate with the real probe's explains the
//! model's activations, not what the probe learned.

use super::targets::{resolve_target, ProbeTarget};
use anyhow::{anyhow, bail, Result};
use glassbox_data::examples::read_examples;
use glassbox_data::rng::SeededRng;
use glassbox_data::store::read_pooled_matrix;
use glassbox_data::RunDir;
use glassbox_models::LoadedModel;
use glassbox_probes::probe::{fit_classifier, Rows};
use glassbox_probes::{ProbeOptions, Split, Standardizer};
use glassbox_runner::gradients::LinearHead;

/// The probe `spec` names, refitted with its labels shuffled (seeded by `seed`): same hook,
/// pool, classes and L2 strength, trained on every labelled example of the run. The returned
/// head targets the same class.
pub(crate) fn shuffled_label_head(
    run: &RunDir,
    model: &LoadedModel,
    spec: &str,
    seed: u64,
) -> Result<LinearHead> {
    let target = ProbeTarget::parse(spec)?;
    // The probe's head, classes and L2 strength, read once.
    let resolved = resolve_target(run, model, &target)?;
    let (head, classes) = (resolved.head, &resolved.classes);
    let examples = read_examples(run)?;
    let column = examples.column(&target.label).ok_or_else(|| {
        anyhow!(
            "target `{spec}`: examples.parquet has no column `{}`",
            target.label
        )
    })?;
    let pooled = read_pooled_matrix(&run.pooled_dir(head.hook, head.pool))?;
    let d = pooled.width;
    // Rows with a label the probe knows, in example order.
    let index: std::collections::HashMap<u64, usize> = examples
        .example_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for (r, id) in pooled.example_ids.iter().enumerate() {
        let Some(&i) = index.get(id) else {
            continue;
        };
        let Some(class) = column.values[i]
            .class_name()
            .and_then(|c| classes.iter().position(|k| *k == c))
        else {
            continue;
        };
        x.extend_from_slice(&pooled.values[r * d..(r + 1) * d]);
        y.push(class);
    }
    let n = y.len();
    if n < 2 || y.iter().all(|&c| c == y[0]) {
        bail!(
            "target `{spec}`: fewer than two labelled classes at `{}`; nothing to shuffle",
            head.hook
        );
    }
    // A seeded permutation of the labels: the class counts stay, their link to the inputs goes.
    let mut rng = SeededRng::new(seed ^ 0x6c61_6265_6c73); // "labels"
    rng.shuffle(&mut y);

    let all: Vec<usize> = (0..n).collect();
    let std = Standardizer::fit(&x, d, &all);
    let split = Split {
        train: all.clone(),
        validation: Vec::new(),
        test: all,
        test_clusters: Vec::new(),
    };
    let opts = ProbeOptions {
        l2_grid: vec![resolved.l2],
        bootstrap: 0,
        ..ProbeOptions::default()
    };
    let rows = Rows {
        x: &x,
        d,
        split: &split,
        std: &std,
    };
    let fitted = fit_classifier(rows, &y, classes.len(), &opts, seed);
    Ok(LinearHead {
        weight: fitted.weight,
        bias: fitted.bias,
        ..head
    })
}
