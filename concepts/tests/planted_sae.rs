//! Planted dictionary: data made of 64 known unit directions, 3 active per sample plus noise.
//! The TopK SAE must recover ≥ 90 % of them (cosine > 0.9), the same seed must give identical
//! weights, and a paused run resumed from its checkpoint must end where an uninterrupted run does.

use glassbox_concepts::sae::ev_bootstrap::Bootstrap;
use glassbox_concepts::sae::fit::{evaluate, fit, FitControl};
use glassbox_concepts::sae::stream::MatrixRows;
use glassbox_concepts::sae::SaeOptions;
use glassbox_data::NoProgress;

mod common;
use common::{planted, recovered, ATOMS, D, ROWS};

fn options() -> SaeOptions {
    common::options(glassbox_concepts::sae::options::ArchitectureName::Topk)
}

fn train(options: &SaeOptions, control: &FitControl<'_>) -> glassbox_concepts::sae::fit::Fitted {
    common::train(planted().1, options, control)
}

#[test]
fn recovers_the_planted_directions_deterministically() {
    let (atoms, rows) = planted();
    let a = train(&options(), &FitControl::default());
    let found = recovered(&a.sae, &atoms);
    let metrics = evaluate(&a.sae, &mut MatrixRows::new(rows, D), Bootstrap::NONE).unwrap();
    eprintln!(
        "recovered {found}/{ATOMS}; EV {:.4}, L0 {:.2}, dead {:.3}",
        metrics.explained_variance, metrics.l0, metrics.dead_fraction
    );
    assert!(
        found * 10 >= ATOMS * 9,
        "recovered only {found} of {ATOMS} directions"
    );
    assert!(metrics.explained_variance > 0.9, "{metrics:?}");
    let b = train(&options(), &FitControl::default());
    assert!(a.sae == b.sae, "same seed, different weights");
}

#[test]
fn a_paused_run_resumes_to_the_same_weights() {
    let options = SaeOptions {
        train_tokens: 200_000,
        checkpoint_every: 50,
        ..options()
    };
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint.safetensors");
    let uninterrupted = train(&options, &FitControl::default());
    let control = FitControl {
        checkpoint: Some(&checkpoint),
        fingerprint: "planted".into(),
        pause_after: Some(120),
    };
    let paused = train(&options, &control);
    assert!(!paused.complete && paused.steps_done == 120);
    assert!(checkpoint.exists());
    let resumed = train(
        &options,
        &FitControl {
            pause_after: None,
            ..control.clone()
        },
    );
    assert_eq!(resumed.resumed_from, Some(120));
    assert!(resumed.complete);
    assert!(
        resumed.sae == uninterrupted.sae,
        "resumed weights differ from an uninterrupted run"
    );
    // Other options: the checkpoint is refused, not silently mixed in.
    let other = FitControl {
        fingerprint: "other".into(),
        ..control
    };
    let (_, rows) = planted();
    let err = fit(
        MatrixRows::new(rows, D),
        ROWS as u64,
        &options,
        &other,
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("other options"), "{err}");
}

#[test]
fn relu_l1_sae_trains_sparse_codes_too() {
    let (atoms, rows) = planted();
    let options = SaeOptions {
        architecture: glassbox_concepts::sae::options::ArchitectureName::Relu,
        l1_coefficient: 2.0,
        train_tokens: 1_000_000,
        ..options()
    };
    let fitted = train(&options, &FitControl::default());
    let metrics = evaluate(&fitted.sae, &mut MatrixRows::new(rows, D), Bootstrap::NONE).unwrap();
    let found = recovered(&fitted.sae, &atoms);
    eprintln!(
        "ReLU: recovered {found}/{ATOMS}; EV {:.4}, L0 {:.2}",
        metrics.explained_variance, metrics.l0
    );
    assert!(metrics.explained_variance > 0.8, "{metrics:?}");
    assert!(
        metrics.l0 < 10.0,
        "L1 keeps codes sparse: L0 {}",
        metrics.l0
    );
    assert!(
        found * 10 >= ATOMS * 9,
        "recovered only {found} of {ATOMS} directions"
    );
}
