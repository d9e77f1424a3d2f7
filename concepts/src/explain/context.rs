//! Pass 2 of an explanation: each chosen row's context window, with the unit's activation on
//! every token of it.

use super::accumulate::Request;
use super::{for_each_chunk, UnitExample, Units};
use crate::sae::stream::RowSource;
use crate::ConceptError;
use glassbox_data::tokens::Tokens;
use std::collections::HashMap;

pub(super) fn collect<S: RowSource>(
    source: &mut S,
    units: &Units<'_>,
    tokens: &Tokens,
    requests: Vec<Request>,
    window: usize,
    mut advance: impl FnMut(u64),
) -> Result<Vec<UnitExample>, ConceptError> {
    // Where each example's tokens start in tokens.parquet (rows are by example, then position).
    let mut first: HashMap<u64, (usize, usize)> = HashMap::new();
    for (t, &e) in tokens.example_ids.iter().enumerate() {
        first
            .entry(e)
            .and_modify(|(_, n)| *n += 1)
            .or_insert((t, 1));
    }
    let mut examples = Vec::with_capacity(requests.len());
    let mut by_example: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, req) in requests.into_iter().enumerate() {
        let (example, position) = req.id;
        let (start_t, count) = first.get(&example).copied().unwrap_or((0, 0));
        let lo = (position as usize).saturating_sub(window);
        let hi = (position as usize + window + 1).min(count);
        let lo = lo.min(hi);
        let context_tokens: Vec<String> = (lo..hi)
            .map(|p| tokens.tokens[start_t + p].clone())
            .collect();
        let token = if (position as usize) < count {
            tokens.tokens[start_t + position as usize].clone()
        } else {
            String::new()
        };
        examples.push(UnitExample {
            unit: req.unit,
            kind: req.kind,
            rank: req.rank,
            bin: req.bin,
            activation: req.activation,
            example_id: example,
            position,
            token,
            context_activations: vec![0.0; context_tokens.len()],
            context_tokens,
            center: (position as usize - lo.min(position as usize)) as u32,
        });
        by_example.entry(example).or_default().push(i);
    }
    for_each_chunk(source, units, |ids, acts| {
        for (r, &(example, position)) in ids.iter().enumerate() {
            let Some(wanted) = by_example.get(&example) else {
                continue;
            };
            for &i in wanted {
                let ex = &mut examples[i];
                let lo = ex.position as i64 - ex.center as i64;
                let offset = position as i64 - lo;
                if offset >= 0 && (offset as usize) < ex.context_activations.len() {
                    ex.context_activations[offset as usize] = acts.value(r, ex.unit as usize);
                }
            }
        }
        advance(ids.len() as u64);
    })?;
    Ok(examples)
}
