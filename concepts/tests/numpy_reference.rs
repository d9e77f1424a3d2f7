//! TCAV scores, Welch t-statistics and Holm-adjusted p-values against numpy/scipy on fixed
//! gradients and CAVs (`tests/fixtures/tcav_reference.json`, made by
//! `scripts/reference_tcav.py`), to 1e-6.

use glassbox_concepts::stats::holm;
use glassbox_concepts::tcav::{compare, run_scores};
use glassbox_concepts::{Cav, Convention, TargetGradients};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cavs(v: &Value) -> Vec<Cav> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| Cav {
            direction: floats(d),
            accuracy: 1.0,
        })
        .collect()
}

#[test]
fn scores_t_and_holm_match_numpy() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/tcav_reference.json"
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let width = fixture["width"].as_u64().unwrap() as usize;
    let sums: Vec<f32> = floats(&fixture["gradient_sums"])
        .iter()
        .map(|&v| v as f32)
        .collect();
    let random = cavs(&fixture["random_cavs"]);
    let mut p_values = Vec::new();
    let mut expected_holm = Vec::new();
    for case in fixture["results"].as_array().unwrap() {
        let concept = case["concept"].as_str().unwrap();
        let convention = match case["convention"].as_str().unwrap() {
            "logit" => Convention::Logit,
            _ => Convention::Loss,
        };
        let gradients = TargetGradients {
            target: "t",
            hook: glassbox_data::HookPoint::ResidPost(0),
            convention,
            sums: &sums,
        };
        let (scores, magnitudes) =
            run_scores(&gradients, width, &cavs(&fixture["concept_cavs"][concept]));
        let (random_scores, _) = run_scores(&gradients, width, &random);
        let close = |a: &[f64], b: &[f64], what: &str| {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-6, "{concept} {what}: {x} vs numpy {y}");
            }
        };
        close(&scores, &floats(&case["scores"]), "scores");
        close(&magnitudes, &floats(&case["magnitudes"]), "magnitudes");
        close(
            &random_scores,
            &floats(&case["random_scores"]),
            "random scores",
        );
        let (t, p, _, _) = compare(&scores, &random_scores, 100, 0);
        close(
            &[t, p],
            &[case["t"].as_f64().unwrap(), case["p"].as_f64().unwrap()],
            "t, p",
        );
        p_values.push(p);
        expected_holm.push(case["p_holm"].as_f64().unwrap());
    }
    for (ours, theirs) in holm(&p_values).iter().zip(&expected_holm) {
        assert!(
            (ours - theirs).abs() <= 1e-6,
            "Holm: {ours} vs numpy {theirs}"
        );
    }
}
