//! The probe classifier against scikit-learn's `LogisticRegression` (lbfgs, `C = 1 / l2`) on
//! a committed fixture made by `scripts/reference_probe_sklearn.py`: same rows, same split,
//! same standardisation, same regularisation.

use glassbox_probes::logistic::{fit, Problem};
use glassbox_probes::metrics::accuracy;
use glassbox_probes::Standardizer;
use serde_json::Value;

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn accuracy_matches_scikit_learn_within_half_a_point() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/probe_sklearn_reference.json"
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let d = fixture["d"].as_u64().unwrap() as usize;
    let x: Vec<f32> = numbers(&fixture["x"]).iter().map(|&v| v as f32).collect();
    let train = indices(&fixture["train"]);
    let test = indices(&fixture["test"]);
    let std = Standardizer::fit(&x, d, &train);
    let x_train = std.gather(&x, d, &train, None);
    let x_test = std.gather(&x, d, &test, None);
    for case in fixture["cases"].as_array().unwrap() {
        let label = case["label"].as_str().unwrap();
        let l2 = case["l2"].as_f64().unwrap();
        let y = indices(&fixture["labels"][label]);
        let n_classes = y.iter().max().unwrap() + 1;
        let y_train: Vec<usize> = train.iter().map(|&r| y[r]).collect();
        let y_test: Vec<usize> = test.iter().map(|&r| y[r]).collect();
        let problem = Problem {
            x: &x_train,
            d,
            y: &y_train,
            n_classes,
        };
        let model = fit(&problem, l2, 100, None);
        let predicted = model.predict(&x_test);
        let ours = accuracy(&y_test, &predicted);
        let theirs = case["accuracy"].as_f64().unwrap();
        assert!(
            (ours - theirs).abs() <= 0.005,
            "{label} l2={l2}: glassbox {ours:.4} vs scikit-learn {theirs:.4}"
        );
        let agree = accuracy(&indices(&case["predicted"]), &predicted);
        eprintln!("{label} l2={l2}: glassbox {ours:.4}, scikit-learn {theirs:.4}, predictions agree {agree:.4}");
        assert!(
            agree >= 0.99,
            "{label} l2={l2}: predictions agree on {agree:.3} only"
        );
        assert!(model.converged, "{label} l2={l2}: did not converge");
    }
}
