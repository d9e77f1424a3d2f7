//! Model-parameter randomisation for the sanity checks of attributions (Adebayo et al. 2018,
//! "Sanity Checks for Saliency Maps"): a checkpoint's tensors grouped into layers from the
//! output down, and chosen groups destroyed.
//!
//! Destroying a tensor = a seeded random permutation of its entries: what the layer learned
//! (which weight sits where) is gone, while the values' distribution — scale, sign, the
//! positivity of a batch norm's running variance — is exactly kept, so the randomised network
//! still runs in the same numeric range. Groups are read from tensor names, for every family:
//! a name's first `.<integer>.` component is its block (`h.3.`, `layers.3.`, `layer.3.`,
//! `_blocks.3.`, `stages.3.`); names without one are the input side (embeddings, stems, patch
//! embeddings) or the output side (final norms, heads, classifiers).

use crate::weights::Weights;
use crate::Result;
use candle_core::Tensor;
use glassbox_data::rng::SeededRng;
use std::collections::BTreeMap;

/// Which layer groups to destroy, counted from the output (`0` = the output side: heads and
/// final norms; `1` = the last block; …; the last group = the input side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Randomization {
    /// Cascading: groups `0..=k` (everything from the output down to group `k`).
    Cascade(usize),
    /// Independent: group `k` alone.
    Only(usize),
}

/// Name fragments of the input side's tensors (embeddings, stems, patch embeddings).
const INPUT_SIDE: [&str; 10] = [
    "embed",
    "wte",
    "wpe",
    "stem",
    "_bn0",
    "patch",
    "cls_token",
    "position",
    "pre_layrnorm",
    "class_embedding",
];

/// The block index in a tensor name: its first purely numeric dot-separated component.
fn block_of(name: &str) -> Option<usize> {
    name.split('.').find_map(|part| part.parse().ok())
}

/// Layer groups from the output down: the output side, blocks last to first, the input side.
/// Each group lists tensor names.
pub fn layer_groups(names: &[String]) -> Vec<Vec<String>> {
    let mut blocks: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let (mut input, mut output) = (Vec::new(), Vec::new());
    for name in names {
        match block_of(name) {
            Some(b) => blocks.entry(b).or_default().push(name.clone()),
            None if INPUT_SIDE.iter().any(|f| name.contains(f)) => input.push(name.clone()),
            None => output.push(name.clone()),
        }
    }
    let mut groups = Vec::new();
    if !output.is_empty() {
        groups.push(output);
    }
    groups.extend(blocks.into_values().rev());
    if !input.is_empty() {
        groups.push(input);
    }
    groups.iter_mut().for_each(|g| g.sort());
    groups
}

/// What [`randomize`] did.
#[derive(Debug, Clone, Default)]
pub struct Randomized {
    /// The tensors permuted.
    pub changed: Vec<String>,
    /// Layer groups in the checkpoint.
    pub groups: usize,
}

/// Permutes the entries of every tensor `which` selects, with `seed` (per tensor, a stream
/// derived from its name, so the result does not depend on the map's order).
pub fn randomize(weights: &mut Weights, which: &Randomization, seed: u64) -> Result<Randomized> {
    let groups = layer_groups(&weights.names());
    let chosen: Vec<&String> = match which {
        Randomization::Cascade(k) => groups.iter().take(k + 1).flatten().collect(),
        Randomization::Only(k) => groups.get(*k).into_iter().flatten().collect(),
    };
    let mut out = Vec::new();
    for name in chosen {
        // A GGUF block-quantised matrix is shuffled as its dequantised values (held as f32 after).
        let Some(t) = weights.dense(name).transpose()? else {
            continue;
        };
        let dtype = t.dtype();
        // Integer buffers (position ids, counters) are bookkeeping, not learned parameters.
        if !dtype.is_float() {
            continue;
        }
        let dims = t.dims().to_vec();
        let mut values: Vec<f32> = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let stream = name.bytes().fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        SeededRng::new(stream).shuffle(&mut values);
        let shuffled = Tensor::from_vec(values, dims, t.device())?.to_dtype(dtype)?;
        weights.replace(name, shuffled);
        out.push(name.clone());
    }
    Ok(Randomized {
        changed: out,
        groups: groups.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_run_from_the_output_down() {
        let names: Vec<String> = [
            "wte.weight",
            "wpe.weight",
            "h.0.attn.c_attn.weight",
            "h.1.mlp.c_fc.weight",
            "h.10.ln_1.weight",
            "ln_f.weight",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let g = layer_groups(&names);
        assert_eq!(g.len(), 5);
        assert_eq!(g[0], vec!["ln_f.weight"]);
        assert_eq!(g[1], vec!["h.10.ln_1.weight"]);
        assert_eq!(g[3], vec!["h.0.attn.c_attn.weight"]);
        assert_eq!(g[4], vec!["wpe.weight", "wte.weight"]);
        let effnet: Vec<String> = [
            "_conv_stem.weight",
            "_bn0.running_var",
            "_blocks.15.x",
            "_fc.bias",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let g = layer_groups(&effnet);
        assert_eq!(g.first().unwrap(), &vec!["_fc.bias".to_string()]);
        assert_eq!(g.last().unwrap().len(), 2);
    }
}
