//! A planted mechanism, known by construction (`scripts/planted_copy_head.py`): a one-layer
//! GPT-2 whose head 0 copies the token at position 1 to every later position; head 1 and the
//! MLP are zero. Patching, attribution patching and ablation must all point at head 0 (at the
//! last position, and in the residual stream at position 1) and at nothing else.

use glassbox_data::pairs::read_pairs;
use glassbox_data::HookPoint;
use glassbox_models::{load_model, resolve, LoadOptions, LoadedModel, ModelSpec};
use glassbox_runner::patching::{
    ablate, patch_pair, prepare_pairs, Ablation, AblationOptions, Direction, Metric, PatchOptions,
    Positions, PreparedPair,
};

fn planted() -> (LoadedModel, Vec<PreparedPair>) {
    let dir = glassbox_tests::workspace_root().join("tests/fixtures/planted_copy");
    let spec: ModelSpec = dir.display().to_string().parse().unwrap();
    let model = load_model(resolve(&spec).unwrap(), LoadOptions::default()).unwrap();
    let pairs = read_pairs(&dir.join("pairs.jsonl")).unwrap();
    let prepared = prepare_pairs(&model, &pairs).unwrap();
    (model, prepared)
}

fn options(hooks: Vec<HookPoint>) -> PatchOptions {
    PatchOptions {
        hooks,
        positions: Positions::All,
        heads: true,
        metric: Metric::LogitDiff,
        direction: Direction::Denoise,
        batch_size: 16,
        atp: true,
    }
}

#[test]
fn patching_finds_the_copied_position_and_the_copying_head_only() {
    let (model, pairs) = planted();
    for pair in &pairs {
        let (rows, s) = patch_pair(
            &model,
            pair,
            &options(vec![HookPoint::ResidPre(0), HookPoint::AttnZ(0)]),
        )
        .unwrap();
        assert!(
            s.metric_clean > 5.0 && s.metric_corrupted < -5.0,
            "the mechanism decides: {s:?}"
        );
        let last = pair.clean.ids.len() as u32 - 1;
        for r in &rows {
            let planted = match (r.hook, r.head) {
                (HookPoint::ResidPre(0), None) => r.position == 1,
                (HookPoint::AttnZ(0), Some(0)) => r.position == last,
                _ => false,
            };
            if planted {
                assert!(
                    (r.normalized - 1.0).abs() < 0.02,
                    "{r:?} restores the answer"
                );
            } else {
                assert!(r.normalized.abs() < 1e-3, "{r:?} must do nothing");
            }
        }
        // Attribution patching ranks the copying head's last position first among the heads.
        let z: Vec<_> = rows
            .iter()
            .filter(|r| r.hook == HookPoint::AttnZ(0))
            .collect();
        let top = z
            .iter()
            .max_by(|a, b| {
                (a.atp_metric.unwrap() - s.metric_corrupted)
                    .abs()
                    .total_cmp(&(b.atp_metric.unwrap() - s.metric_corrupted).abs())
            })
            .unwrap();
        assert_eq!(
            (top.head, top.position),
            (Some(0), last),
            "AtP's largest estimate"
        );
    }
}

#[test]
fn ablation_moves_the_metric_for_the_copying_head_only() {
    let (model, pairs) = planted();
    for kind in [Ablation::Zero, Ablation::Resample] {
        let opts = AblationOptions {
            kind,
            heads: true,
            neurons: false,
            metric: Metric::LogitDiff,
            batch_size: 4,
            seed: 0,
        };
        let rows = ablate(&model, &pairs, &[HookPoint::AttnZ(0)], &opts).unwrap();
        let head = |h: u32| rows.iter().find(|r| r.head == Some(h)).unwrap();
        assert!(
            head(0).delta < -5.0 && head(0).ci_high < 0.0,
            "{kind:?}: {:?}",
            head(0)
        );
        assert!(head(1).delta.abs() < 1e-6, "{kind:?}: {:?}", head(1));
        assert!(head(1).loss_delta.abs() < 1e-6, "{kind:?}: {:?}", head(1));
    }
}

#[test]
fn ablating_the_zero_mlp_neuron_by_neuron_changes_nothing() {
    let (model, pairs) = planted();
    let opts = AblationOptions {
        kind: Ablation::Mean,
        heads: false,
        neurons: true,
        metric: Metric::LogitDiff,
        batch_size: 16,
        seed: 0,
    };
    let rows = ablate(&model, &pairs, &[HookPoint::MlpPost(0)], &opts).unwrap();
    assert_eq!(rows.len(), model.model.hook_width(HookPoint::MlpPost(0)));
    for r in &rows {
        assert!(r.neuron.is_some() && r.head.is_none());
        // The MLP's output projection is zero: no unit reaches the logits.
        assert!(r.delta.abs() < 1e-6 && r.loss_delta.abs() < 1e-6, "{r:?}");
    }
}

#[test]
fn direct_logit_attribution_puts_the_answer_on_the_copying_head() {
    let (model, pairs) = planted();
    for pair in &pairs {
        let rows = glassbox_runner::dla::direct_logit_attribution(&model, pair).unwrap();
        let head = |h: u32| {
            rows.iter()
                .find(|r| r.run == "clean" && r.head == Some(h))
                .unwrap()
                .contribution
        };
        assert!(head(0) > 5.0, "head 0 writes the answer: {}", head(0));
        assert!(head(1).abs() < 1e-6, "head 1 writes nothing: {}", head(1));
    }
}
