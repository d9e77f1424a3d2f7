use super::*;
use crate::sae::stream::RowSource;
use glassbox_data::NoProgress;
use std::collections::HashMap;

/// 20 examples × 6 tokens, width 3. Unit 0 fires (value 1 + position/10) on token "cat" (position
/// 2) of examples with class "animal" (even ids); unit 1 is constant 0.5; unit 2 never fires.
struct Toy {
    done: bool,
}

const EXAMPLES: u64 = 20;
const LEN: u32 = 6;

impl RowSource for Toy {
    fn width(&self) -> usize {
        3
    }
    fn next_rows(
        &mut self,
        rows: &mut Vec<f32>,
        ids: &mut Vec<RowId>,
    ) -> Result<bool, ConceptError> {
        if self.done {
            return Ok(false);
        }
        for e in 0..EXAMPLES {
            for p in 0..LEN {
                let fire = e % 2 == 0 && p == 2;
                rows.extend_from_slice(&[
                    if fire { 1.0 + e as f32 / 10.0 } else { 0.0 },
                    0.5,
                    -1.0,
                ]);
                ids.push((e, p));
            }
        }
        self.done = true;
        Ok(true)
    }
    fn rewind(&mut self) {
        self.done = false;
    }
}

fn tokens() -> Tokens {
    let mut t = Tokens::default();
    for e in 0..EXAMPLES {
        for p in 0..LEN {
            t.example_ids.push(e);
            t.positions.push(p);
            t.tokens.push(if p == 2 {
                "cat".into()
            } else {
                format!("w{p}")
            });
            t.spans.push(None);
        }
    }
    t
}

/// The label "kind": class "animal" for even examples, "other" for odd ones, on every token.
fn kind_label() -> LabelTarget {
    let class_of: HashMap<RowId, u32> = (0..EXAMPLES)
        .flat_map(|e| (0..LEN).map(move |p| ((e, p), (e % 2) as u32)))
        .collect();
    LabelTarget {
        name: "kind".into(),
        classes: vec!["animal".into(), "other".into()],
        class_of,
    }
}

/// The toy's three neurons explained against `labels`, default options, no directions.
fn toy_neurons(labels: &[LabelTarget]) -> Explanations {
    explain(
        Units::Neurons { width: 3 },
        &mut Toy { done: false },
        &tokens(),
        labels,
        &[],
        &ExplainOptions::default(),
        &NoProgress,
    )
    .unwrap()
}

#[test]
fn neurons_are_explained_by_their_rows() {
    let labels = [kind_label()];
    let directions = [Direction {
        source: "cav".into(),
        name: "x".into(),
        vector: vec![0.0, 2.0, 0.0],
    }];
    let options = ExplainOptions {
        top_examples: 3,
        window: 2,
        ..ExplainOptions::default()
    };
    let e = explain(
        Units::Neurons { width: 3 },
        &mut Toy { done: false },
        &tokens(),
        &labels,
        &directions,
        &options,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(e.rows, EXAMPLES * LEN as u64);
    let u0 = &e.units[0];
    assert_eq!(u0.active_rows, 10);
    assert!((u0.density - 10.0 / 120.0).abs() < 1e-12);
    assert_eq!(u0.top_tokens, vec!["cat".to_string()]);
    assert_eq!(u0.top_label.as_ref().unwrap().1, "animal");
    assert!((u0.max_activation - 2.8).abs() < 1e-6);
    assert_eq!(
        e.units[1].best_direction.as_ref().unwrap(),
        &("cav:x".to_string(), 1.0)
    );
    assert_eq!(e.units[2].active_rows, 0);
    // Top examples: strongest first (example 18), with a ±2 window and the unit's values on it.
    let top: Vec<_> = e
        .examples
        .iter()
        .filter(|x| x.unit == 0 && x.kind == "top")
        .collect();
    assert_eq!(top.len(), 3);
    assert_eq!(
        (top[0].example_id, top[0].position, top[0].rank),
        (18, 2, 0)
    );
    assert_eq!(top[0].context_tokens, vec!["w0", "w1", "cat", "w3", "w4"]);
    assert_eq!(top[0].center, 2);
    assert_eq!(top[0].context_activations, vec![0.0, 0.0, 2.8, 0.0, 0.0]);
    assert_eq!(top[1].example_id, 16);
    // Quantile samples come from the active rows only, lowest bin first.
    let q: Vec<_> = e
        .examples
        .iter()
        .filter(|x| x.unit == 0 && x.kind == "quantile")
        .collect();
    assert!(!q.is_empty());
    assert!(q.windows(2).all(|w| w[0].activation <= w[1].activation));
    // The correlation of unit 0 with "animal" is positive, with "other" its negative.
    let r: Vec<f64> = e
        .labels
        .iter()
        .filter(|l| l.unit == 0)
        .map(|l| l.correlation)
        .collect();
    assert!(r[0] > 0.2 && (r[0] + r[1]).abs() < 1e-12, "{r:?}");
}

#[test]
fn tables_round_trip() {
    let e = toy_neurons(&[]);
    let dir = tempfile::tempdir().unwrap();
    write::write(dir.path(), "neuron", &e).unwrap();
    let units = read::read_units(dir.path(), "neuron").unwrap();
    assert_eq!(units.len(), 3);
    assert_eq!(units[0].active_rows, e.units[0].active_rows);
    assert_eq!(units[0].top_tokens, e.units[0].top_tokens);
    let wanted = [0u32].into_iter().collect();
    let back = read::read_top_examples(dir.path(), "neuron", &wanted, 100).unwrap();
    let want: Vec<_> = e
        .examples
        .iter()
        .filter(|x| x.unit == 0 && x.kind == "top")
        .cloned()
        .collect();
    assert_eq!(back, want);
}

/// A correlation's test counts texts, not rows: the OLS slope's cluster-robust t (CR1, texts as
/// clusters, `texts − 1` df), checked against the definition computed here row by row; the
/// fallback's Student t against numerical integration of the t density; Holm over every unit ×
/// class.
#[test]
fn label_correlations_are_tested_on_their_independent_observations() {
    for (r, n, want) in [
        (0.5, 20, 0.024_769_558_8),
        (0.3, 120, 0.000_871_708_74),
        (0.3, 20, 0.198_757_717_3),
    ] {
        let got = accumulate::correlation_p(r, n);
        assert!((got - want).abs() < 1e-6 * want, "r {r} n {n}: {got}");
    }
    assert!(accumulate::correlation_p(0.9, 2).is_nan());
    let e = toy_neurons(&[kind_label()]);
    let unit0 = e
        .labels
        .iter()
        .find(|l| l.unit == 0 && l.class == "animal")
        .unwrap();
    assert_eq!(unit0.effective_rows, EXAMPLES);
    // The definition: residuals of y on [1, x], each text's Σ (x − x̄) e, the sandwich.
    let mut rows = Vec::new();
    let mut toy = Toy { done: false };
    let (mut acts, mut ids) = (Vec::new(), Vec::new());
    toy.next_rows(&mut acts, &mut ids).unwrap();
    for (r, &(text, _)) in ids.iter().enumerate() {
        let x = if text % 2 == 0 { 1.0 } else { 0.0 };
        rows.push((text, x, acts[r * 3] as f64));
    }
    let n = rows.len() as f64;
    let x_bar = rows.iter().map(|r| r.1).sum::<f64>() / n;
    let y_bar = rows.iter().map(|r| r.2).sum::<f64>() / n;
    let sxx: f64 = rows.iter().map(|r| (r.1 - x_bar).powi(2)).sum();
    let b = rows
        .iter()
        .map(|r| (r.1 - x_bar) * (r.2 - y_bar))
        .sum::<f64>()
        / sxx;
    let mut score = vec![0.0; EXAMPLES as usize];
    for &(text, x, y) in &rows {
        score[text as usize] += (x - x_bar) * ((y - y_bar) - b * (x - x_bar));
    }
    let g = EXAMPLES as f64;
    let variance = score.iter().map(|s| s * s).sum::<f64>() / (sxx * sxx) * g / (g - 1.0)
        * (n - 1.0)
        / (n - 2.0);
    let want = crate::stats::student_t_two_sided(b / variance.sqrt(), g - 1.0);
    assert!(
        (unit0.p - want).abs() <= 1e-9 * want,
        "{} against {want}",
        unit0.p
    );
    // Holm over the 3 units × 2 classes (unit 1 is constant: r = 0, p = 1; unit 2 never varies).
    let p: Vec<f64> = e.labels.iter().map(|l| l.p).collect();
    let holm = crate::stats::holm(&p);
    for (l, h) in e.labels.iter().zip(holm) {
        assert!(l.p_holm == h || (l.p_holm.is_nan() && h.is_nan()), "{l:?}");
    }
    let top = e
        .labels
        .iter()
        .filter(|l| l.unit == 0)
        .max_by(|a, b| a.correlation.total_cmp(&b.correlation))
        .unwrap();
    assert_eq!(e.units[0].top_label_p_holm, Some(top.p_holm));
}

#[test]
fn label_tables_round_trip_with_their_tests() {
    let e = toy_neurons(&[kind_label()]);
    let dir = tempfile::tempdir().unwrap();
    write::write(dir.path(), "neuron", &e).unwrap();
    assert_eq!(read::read_labels(dir.path(), "neuron").unwrap(), e.labels);
    let units = read::read_units(dir.path(), "neuron").unwrap();
    assert_eq!(units[0].top_label_p_holm, e.units[0].top_label_p_holm);
    assert!(units[0].top_label_p_holm.is_some());
}

#[test]
fn a_finding_needs_its_correlation_to_survive_the_correction() {
    let row = |r: f64, p: Option<f64>| read::UnitRow {
        unit: 0,
        active_rows: 5,
        density: 0.1,
        mean_activation: 0.1,
        mean_when_active: 1.0,
        max_activation: 2.0,
        top_tokens: Vec::new(),
        top_label: Some("topic".into()),
        top_class: Some("food".into()),
        top_label_correlation: Some(r),
        top_label_p_holm: p,
        best_direction: None,
        best_direction_cosine: None,
    };
    assert!(read::is_finding(&row(0.6, Some(1e-4))));
    assert!(
        !read::is_finding(&row(0.6, Some(0.2))),
        "r 0.6 on too few texts"
    );
    assert!(
        !read::is_finding(&row(0.2, Some(1e-9))),
        "significant but weak"
    );
    assert!(
        read::is_finding(&row(0.6, None)),
        "older tables: the correlation alone"
    );
    let rows = [row(0.6, Some(0.2)), row(0.4, Some(1e-3))];
    let found = read::finding_units(&rows, 3);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].top_label_correlation, Some(0.4));
}
