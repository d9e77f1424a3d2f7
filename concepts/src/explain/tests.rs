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

#[test]
fn neurons_are_explained_by_their_rows() {
    let class_of: HashMap<RowId, u32> = (0..EXAMPLES)
        .flat_map(|e| (0..LEN).map(move |p| ((e, p), (e % 2) as u32)))
        .collect();
    let labels = [LabelTarget {
        name: "kind".into(),
        classes: vec!["animal".into(), "other".into()],
        class_of,
    }];
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
    let e = explain(
        Units::Neurons { width: 3 },
        &mut Toy { done: false },
        &tokens(),
        &[],
        &[],
        &ExplainOptions::default(),
        &NoProgress,
    )
    .unwrap();
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
