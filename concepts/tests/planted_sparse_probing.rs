//! Planted sparse probing: a label written along one SAE latent's direction, which spreads
//! over all 16 neurons, must be read better by one feature than by one or two neurons — and a
//! label written on one neuron the other way round; a label unrelated to the data gives no
//! significant difference. The answer is known by construction: the SAE's encoder is an
//! orthonormal (Hadamard) basis, so a latent sees the planted signal whole, a neuron a quarter.

use glassbox_concepts::sae::stream::{RowId, RowSource};
use glassbox_concepts::sae::{Architecture, Sae};
use glassbox_concepts::sparse_probing::{
    read_rows, run_for_hook, HookInputs, SparseProbeRow, SparseProbingOptions,
};
use glassbox_data::dataset::{Column, ColumnKind, Value};
use glassbox_data::examples::Examples;
use glassbox_data::rng::SeededRng;
use glassbox_data::NoProgress;

const D: usize = 16;
const EXAMPLES: usize = 500;
const TOKENS: usize = 4;

/// Rows of 16-wide Sylvester–Hadamard matrix, scaled to unit norm.
fn hadamard() -> Vec<f32> {
    let mut h = vec![1.0f32];
    let mut n = 1;
    while n < D {
        let mut next = vec![0.0f32; 4 * n * n];
        for i in 0..n {
            for j in 0..n {
                let v = h[i * n + j];
                next[i * 2 * n + j] = v;
                next[i * 2 * n + j + n] = v;
                next[(i + n) * 2 * n + j] = v;
                next[(i + n) * 2 * n + j + n] = -v;
            }
        }
        h = next;
        n *= 2;
    }
    h.iter().map(|v| v / (D as f32).sqrt()).collect()
}

fn sae() -> Sae {
    let h = hadamard();
    Sae {
        d_in: D,
        width: D,
        architecture: Architecture::Relu {
            l1_coefficient: 0.0,
        },
        w_enc: h.clone(),
        b_enc: vec![0.0; D],
        w_dec: h,
        b_dec: vec![0.0; D],
        threshold: Vec::new(),
        gate: None,
        input_norm: Default::default(),
    }
}

/// Token rows in memory, several per example.
struct TokenRows {
    values: Vec<f32>,
    ids: Vec<RowId>,
    done: bool,
}

impl RowSource for TokenRows {
    fn width(&self) -> usize {
        D
    }
    fn next_rows(
        &mut self,
        rows: &mut Vec<f32>,
        ids: &mut Vec<RowId>,
    ) -> Result<bool, glassbox_concepts::ConceptError> {
        if self.done {
            return Ok(false);
        }
        rows.extend_from_slice(&self.values);
        ids.extend_from_slice(&self.ids);
        self.done = true;
        Ok(true)
    }
    fn rewind(&mut self) {
        self.done = false;
    }
}

/// `planted = y · 2 · direction` plus unit Gaussian noise on every token; `y` is the example's
/// class of label `planted`; `unrelated` is a three-class label drawn independently.
fn data(direction: &[f32]) -> (TokenRows, Examples) {
    let mut rng = SeededRng::new(7);
    let (mut values, mut ids) = (Vec::new(), Vec::new());
    let (mut planted, mut unrelated) = (Vec::new(), Vec::new());
    for e in 0..EXAMPLES {
        let y = e % 2;
        for t in 0..TOKENS {
            for &v in direction {
                values.push(2.0 * y as f32 * v + rng.gaussian() as f32);
            }
            ids.push((e as u64 * 3 + 1, t as u32));
        }
        planted.push(Value::Str(if y == 1 { "yes" } else { "no" }.into()));
        unrelated.push(Value::Str(["red", "green", "blue"][rng.below(3)].into()));
    }
    let examples = Examples {
        example_ids: (0..EXAMPLES as u64).map(|e| e * 3 + 1).collect(),
        splits: vec!["all".into(); EXAMPLES],
        texts: (0..EXAMPLES).map(|e| format!("example {e}")).collect(),
        n_tokens: vec![TOKENS as u32; EXAMPLES],
        columns: vec![
            Column {
                name: "planted".into(),
                kind: ColumnKind::Str,
                values: planted,
            },
            Column {
                name: "unrelated".into(),
                kind: ColumnKind::Str,
                values: unrelated,
            },
        ],
    };
    (
        TokenRows {
            values,
            ids,
            done: false,
        },
        examples,
    )
}

fn probe(direction: &[f32], dir: &std::path::Path) -> Vec<SparseProbeRow> {
    let (mut rows, examples) = data(direction);
    let options = SparseProbingOptions {
        k: vec![1, 2],
        ..SparseProbingOptions::default()
    };
    let labels = ["planted".to_owned(), "unrelated".to_owned()];
    run_for_hook(
        dir,
        HookInputs {
            sae: &sae(),
            rows: &mut rows,
            examples: &examples,
            label_names: &labels,
            source: "planted examples",
        },
        &options,
        &NoProgress,
    )
    .unwrap()
}

fn row<'a>(rows: &'a [SparseProbeRow], label: &str, k: usize) -> &'a SparseProbeRow {
    rows.iter()
        .find(|r| r.label == label && r.k == k)
        .unwrap_or_else(|| panic!("no {label} row at k = {k}: {rows:#?}"))
}

#[test]
fn a_label_along_one_latent_is_read_better_by_one_feature_than_by_neurons() {
    let tmp = tempfile::tempdir().unwrap();
    let direction = hadamard()[D..2 * D].to_vec(); // latent 1's direction
    let rows = probe(&direction, tmp.path());
    // Two labels: `planted` (two classes: one task) and `unrelated` (three: one per class).
    assert_eq!(rows.len(), 4 * 2, "{rows:#?}");
    for k in [1, 2] {
        let r = row(&rows, "planted", k);
        eprintln!(
            "k={k}: features {:.3} {:?} (control {:.3}), neurons {:.3} (control {:.3}), p_holm {:.2e}",
            r.features.accuracy, r.features.ci, r.features.control_accuracy,
            r.neurons.accuracy, r.neurons.control_accuracy, r.p_holm
        );
        assert_eq!(r.class, "yes");
        assert_eq!((r.examples, r.positives, r.test_examples), (500, 250, 100));
        assert_eq!(
            r.features.units[0], 1,
            "the planted latent is selected first"
        );
        assert!(r.features.accuracy >= 0.9, "{r:#?}");
        assert!(r.features.ci.0 <= r.features.accuracy && r.features.accuracy <= r.features.ci.1);
        assert!(r.neurons.accuracy <= 0.85, "{r:#?}");
        assert!(r.features.control_accuracy <= 0.7, "{r:#?}");
        assert!(r.features.selectivity() >= 0.25, "{r:#?}");
        assert!(r.difference_ci.0 > 0.0 && r.p_holm < 0.05, "{r:#?}");
        assert_eq!(r.verdict, "features better");
        assert!(
            r.dense_neurons >= 0.9,
            "every neuron together reads it: {r:#?}"
        );
    }
    for r in rows.iter().filter(|r| r.label == "unrelated") {
        assert_eq!(r.verdict, "no significant difference", "{r:#?}");
        assert!(r.features.accuracy <= r.majority_baseline + 0.15, "{r:#?}");
    }
    // The table reads back as written, and the same seed gives the same rows.
    assert_eq!(read_rows(tmp.path()).unwrap().unwrap(), rows);
    let again = tempfile::tempdir().unwrap();
    assert_eq!(probe(&direction, again.path()), rows);
}

#[test]
fn a_label_on_one_neuron_is_read_better_by_that_neuron() {
    let tmp = tempfile::tempdir().unwrap();
    let mut direction = vec![0.0f32; D];
    direction[5] = 1.0;
    let rows = probe(&direction, tmp.path());
    let r = row(&rows, "planted", 1);
    assert_eq!(r.neurons.units, vec![5]);
    assert!(r.neurons.accuracy >= 0.9, "{r:#?}");
    assert!(r.features.accuracy <= 0.85, "{r:#?}");
    assert_eq!(r.verdict, "neurons better", "{r:#?}");
}

#[test]
fn invalid_options_are_named() {
    let bad = SparseProbingOptions {
        k: vec![0],
        ..SparseProbingOptions::default()
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("sparse_probing] k = [0]"), "{e}");
    let bad = SparseProbingOptions {
        alpha: 1.5,
        ..SparseProbingOptions::default()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("alpha"));
}

#[test]
fn max_examples_samples_the_examples_with_the_seed() {
    let (mut rows, examples) = data(&hadamard()[D..2 * D]);
    let options = SparseProbingOptions {
        k: vec![1],
        max_examples: 200,
        ..SparseProbingOptions::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = run_for_hook(
        tmp.path(),
        HookInputs {
            sae: &sae(),
            rows: &mut rows,
            examples: &examples,
            label_names: &["planted".to_owned()],
            source: "planted examples",
        },
        &options,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].examples, 200, "{out:#?}");
    assert!(out[0].features.accuracy >= 0.85, "{out:#?}");
}
