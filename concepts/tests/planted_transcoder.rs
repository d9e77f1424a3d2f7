//! Planted transcoder: inputs made of 64 known directions (3 active per token), targets made of
//! 64 *other* known directions with the same coefficients — a sparse "MLP" whose features are
//! known by construction. A TopK transcoder must predict the targets (FVU < 0.1) and its decoder
//! rows must recover ≥ 90 % of the output directions. With dense noise in the inputs and a dense
//! linear map of the inputs added to the targets (which no sparse code can carry), the skip
//! connection must learn that map and beat the transcoder without one. A paused run
//! resumed from its checkpoint (skip weights and both scales included) must end where an
//! uninterrupted run does.

use glassbox_concepts::sae::ev_bootstrap::Bootstrap;
use glassbox_concepts::sae::fit::{fit_for, FitControl, Fitted, Objective};
use glassbox_concepts::sae::options::ArchitectureName;
use glassbox_concepts::sae::stream::{MatrixRows, PairedRows};
use glassbox_concepts::sae::transcoder::evaluate;
use glassbox_concepts::sae::{SaeOptions, Transcoder};
use glassbox_data::rng::SeededRng;
use glassbox_data::NoProgress;

#[allow(dead_code)]
mod common;
use common::{atoms, distinct, recovered, ACTIVE, ATOMS, D, ROWS};

/// Inputs, targets (`ROWS × D` each), the output atoms, and the dense map `A` added to the
/// targets (`A x`, output-major) when `dense` is set; then the inputs also carry N(0, 0.15²)
/// noise per dimension, which makes `A` identifiable (the atoms alone span no dense part).
fn planted(dense: bool) -> (Vec<f32>, Vec<f32>, Vec<Vec<f64>>, Vec<f64>) {
    let mut rng = SeededRng::new(77);
    let inputs = atoms(&mut rng);
    let outputs = atoms(&mut rng);
    let a: Vec<f64> = (0..D * D)
        .map(|_| {
            if dense {
                rng.gaussian() / (D as f64).sqrt()
            } else {
                0.0
            }
        })
        .collect();
    let (mut xs, mut ys) = (Vec::with_capacity(ROWS * D), Vec::with_capacity(ROWS * D));
    for _ in 0..ROWS {
        let (mut x, mut y) = (vec![0.0f64; D], vec![0.0f64; D]);
        for j in distinct(&mut rng, 0..ATOMS, ACTIVE) {
            let c = 1.0 + rng.unit_f64();
            x.iter_mut().zip(&inputs[j]).for_each(|(x, e)| *x += c * e);
            y.iter_mut().zip(&outputs[j]).for_each(|(y, u)| *y += c * u);
        }
        let noise = if dense { 0.15 } else { 0.02 };
        x.iter_mut().for_each(|v| *v += noise * rng.gaussian());
        for (t, y) in y.iter_mut().enumerate() {
            *y += (0..D).map(|s| a[t * D + s] * x[s]).sum::<f64>();
        }
        xs.extend(x.iter().map(|v| *v as f32));
        ys.extend(y.iter().map(|v| *v as f32));
    }
    (xs, ys, outputs, a)
}

fn source(x: &[f32], y: &[f32]) -> PairedRows<MatrixRows, MatrixRows> {
    PairedRows::new(
        MatrixRows::new(x.to_vec(), D),
        MatrixRows::new(y.to_vec(), D),
        "planted".into(),
    )
    .unwrap()
}

fn options() -> SaeOptions {
    SaeOptions {
        train_tokens: 1_000_000,
        ..common::options(ArchitectureName::Topk)
    }
}

fn train(x: &[f32], y: &[f32], skip: bool, options: &SaeOptions, c: &FitControl<'_>) -> Fitted {
    let objective = Objective::Transcode { skip };
    fit_for(
        objective,
        source(x, y),
        ROWS as u64,
        options,
        c,
        &NoProgress,
    )
    .unwrap()
}

fn transcoder(f: &Fitted) -> Transcoder {
    Transcoder {
        sae: f.sae.clone(),
        w_skip: f.w_skip.clone(),
    }
}

#[test]
fn recovers_the_planted_output_directions() {
    let (x, y, outputs, _) = planted(false);
    let fitted = train(&x, &y, false, &options(), &FitControl::default());
    assert!(fitted.w_skip.is_none() && fitted.target_scale.is_some());
    let t = transcoder(&fitted);
    let metrics = evaluate(&t, &mut source(&x, &y), Bootstrap::NONE).unwrap();
    let found = recovered(&t.sae, &outputs);
    eprintln!(
        "recovered {found}/{ATOMS}; FVU {:.4}, L0 {:.2}",
        metrics.fvu, metrics.l0
    );
    assert!(found * 10 >= ATOMS * 9, "recovered only {found} of {ATOMS}");
    assert!(metrics.fvu < 0.1, "{metrics:?}");
    let again = train(&x, &y, false, &options(), &FitControl::default());
    assert!(again.sae == fitted.sae, "same seed, different weights");
}

#[test]
fn the_skip_connection_learns_the_dense_part() {
    let (x, y, _, a) = planted(true);
    let with = train(&x, &y, true, &options(), &FitControl::default());
    let without = train(&x, &y, false, &options(), &FitControl::default());
    let fvu = |f: &Fitted| {
        evaluate(&transcoder(f), &mut source(&x, &y), Bootstrap::NONE)
            .unwrap()
            .fvu
    };
    let (fvu_with, fvu_without) = (fvu(&with), fvu(&without));
    let w = with.w_skip.as_ref().unwrap();
    let err: f64 = w.iter().zip(&a).map(|(w, a)| (*w as f64 - a).powi(2)).sum();
    let norm: f64 = a.iter().map(|a| a * a).sum();
    let relative = (err / norm).sqrt();
    let dot: f64 = w.iter().zip(&a).map(|(w, a)| *w as f64 * a).sum();
    let w_norm: f64 = w.iter().map(|w| (*w as f64).powi(2)).sum::<f64>().sqrt();
    let cosine = dot / (w_norm * norm.sqrt());
    eprintln!(
        "FVU with skip {fvu_with:.4}, without {fvu_without:.4}; ‖W_skip − A‖/‖A‖ \
         {relative:.3}, cosine {cosine:.3}"
    );
    assert!(fvu_with < 0.5 * fvu_without, "{fvu_with} vs {fvu_without}");
    // Along the atoms' directions decoders can carry part of A, so W_skip need not equal A
    // there; the dense noise pins it elsewhere.
    assert!(cosine > 0.85, "W_skip is at cosine {cosine} from A");
}

#[test]
fn a_paused_transcoder_resumes_to_the_same_weights() {
    let (x, y, _, _) = planted(true);
    let options = SaeOptions {
        train_tokens: 150_000,
        checkpoint_every: 40,
        ..options()
    };
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint.safetensors");
    let uninterrupted = train(&x, &y, true, &options, &FitControl::default());
    let control = FitControl {
        checkpoint: Some(&checkpoint),
        fingerprint: "planted transcoder".into(),
        pause_after: Some(100),
    };
    let paused = train(&x, &y, true, &options, &control);
    assert!(!paused.complete && checkpoint.exists());
    let resumed = train(
        &x,
        &y,
        true,
        &options,
        &FitControl {
            pause_after: None,
            ..control
        },
    );
    assert_eq!(resumed.resumed_from, Some(100));
    assert!(resumed.sae == uninterrupted.sae);
    assert!(resumed.w_skip == uninterrupted.w_skip);
}

#[test]
fn hooks_of_different_widths_or_tokens_are_named_errors() {
    let e = PairedRows::new(
        MatrixRows::new(vec![0.0; 8], 4),
        MatrixRows::new(vec![0.0; 6], 3),
        "blocks.0.hook_resid_mid → blocks.0.hook_mlp_out".into(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("width 4") && e.contains("blocks.0.hook_mlp_out"),
        "{e}"
    );
    // Five input rows, four target rows: the pairing runs out on one side.
    let mut rows = PairedRows::new(
        MatrixRows::new(vec![1.0; 20], 4),
        MatrixRows::new(vec![1.0; 16], 4),
        "pair".into(),
    )
    .unwrap();
    use glassbox_concepts::sae::stream::RowSource;
    let (mut r, mut ids) = (Vec::new(), Vec::new());
    let e = loop {
        match rows.next_rows(&mut r, &mut ids) {
            Ok(true) => continue,
            Ok(false) => panic!("the mismatch went unnoticed"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(e.contains("target hook's rows end before example 4"), "{e}");
}
