//! Unit explanations: for every SAE feature or raw neuron of a hook, what makes it fire.
//!
//! Two passes over the rows, memory bounded by the unit count (not the token count):
//! 1. activations of every row: per unit its firing density, mean and maximum, the top
//!    activating rows, a seeded reservoir of active rows (for samples across activation
//!    quantiles), and sums for the correlation with each label's classes;
//! 2. the chosen rows' context windows: the tokens around each and the unit's activation on
//!    every one of them.
//!
//! Plus each unit's cosine with every CAV and probe direction found in the run.

mod accumulate;
mod clustered;
mod context;
pub mod inputs;
pub mod read;
pub mod write;

pub use accumulate::{LabelTarget, UnitStats};

use crate::sae::stream::{RowId, RowSource};
use crate::sae::{Codes, Sae};
use crate::ConceptError;
use glassbox_data::tokens::Tokens;
use glassbox_data::Progress;

/// What the units are.
#[derive(Debug, Clone, Copy)]
pub enum Units<'a> {
    /// The latents of an SAE (activations: its codes).
    Features(&'a Sae),
    /// The hook's raw units (activations: the stored values).
    Neurons { width: usize },
}

impl Units<'_> {
    pub fn count(&self) -> usize {
        match self {
            Units::Features(sae) => sae.width,
            Units::Neurons { width } => *width,
        }
    }

    /// The unit's direction in activation space (decoder row; basis vector for a neuron).
    fn direction(&self, unit: usize) -> Vec<f64> {
        match self {
            Units::Features(sae) => sae.decoder_row(unit).iter().map(|&v| v as f64).collect(),
            Units::Neurons { width } => {
                let mut e = vec![0.0; *width];
                e[unit] = 1.0;
                e
            }
        }
    }

    fn activations(&self, rows: &[f32]) -> Result<Activations, ConceptError> {
        Ok(match self {
            Units::Features(sae) => Activations::Sparse(sae.encode(rows)?),
            Units::Neurons { width } => Activations::Dense {
                values: rows.to_vec(),
                width: *width,
            },
        })
    }
}

/// Activations of a chunk of rows.
enum Activations {
    Sparse(Codes),
    Dense { values: Vec<f32>, width: usize },
}

impl Activations {
    fn rows(&self) -> usize {
        match self {
            Activations::Sparse(c) => c.rows(),
            Activations::Dense { values, width } => values.len() / width,
        }
    }

    /// `(unit, activation)` of row `r`: the active latents, or every neuron.
    fn row(&self, r: usize) -> Box<dyn Iterator<Item = (usize, f32)> + '_> {
        match self {
            Activations::Sparse(c) => Box::new(c.row(r)),
            Activations::Dense { values, width } => Box::new(
                values[r * width..(r + 1) * width]
                    .iter()
                    .copied()
                    .enumerate(),
            ),
        }
    }

    fn value(&self, r: usize, unit: usize) -> f32 {
        match self {
            Activations::Sparse(c) => c.row(r).find(|&(j, _)| j == unit).map_or(0.0, |(_, v)| v),
            Activations::Dense { values, width } => values[r * width + unit],
        }
    }
}

/// A named direction in activation space (a CAV or a probe's weight row).
#[derive(Debug, Clone)]
pub struct Direction {
    /// `"cav"` or `"probe"`.
    pub source: String,
    pub name: String,
    pub vector: Vec<f64>,
}

/// How much to collect per unit.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExplainOptions {
    /// Top-activating examples kept per unit. Default 10.
    pub top_examples: usize,
    /// Activation quantile bins sampled per unit. Default 5.
    pub quantile_bins: usize,
    /// Examples per quantile bin. Default 2.
    pub per_bin: usize,
    /// Context tokens on each side of an example token. Default 8.
    pub window: usize,
    /// Reservoir size for the quantile samples. Default 200.
    pub reservoir: usize,
    pub seed: u64,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        Self {
            top_examples: 10,
            quantile_bins: 5,
            per_bin: 2,
            window: 8,
            reservoir: 200,
            seed: 0,
        }
    }
}

/// One example of a unit firing, with its context.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitExample {
    pub unit: u32,
    /// `"top"` or `"quantile"`.
    pub kind: &'static str,
    /// Rank among the top examples (0 = strongest), or index within the quantile samples.
    pub rank: u32,
    /// The quantile bin (0 = lowest activations), for quantile samples.
    pub bin: Option<u32>,
    pub activation: f32,
    pub example_id: u64,
    pub position: u32,
    pub token: String,
    /// The window's tokens and the unit's activation on each; `center` indexes the example.
    pub context_tokens: Vec<String>,
    pub context_activations: Vec<f32>,
    pub center: u32,
}

/// A unit's correlation with one class of a label.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelCorrelation {
    pub unit: u32,
    pub label: String,
    pub class: String,
    /// Pearson correlation of the activation with membership of the class (over all rows).
    pub correlation: f64,
    /// The independent observations the test of `correlation` counts: the texts the rows came
    /// from (a text's tokens are not independent of each other).
    pub effective_rows: u64,
    /// Two-sided p-value of `correlation` against 0: the OLS slope of the activation on class
    /// membership with its cluster-robust t over texts (CR1, `effective_rows − 1` df).
    pub p: f64,
    /// `p` Holm-adjusted over every unit × class of the hook's table.
    pub p_holm: f64,
    pub mean_in_class: f64,
    pub rows_in_class: u64,
}

/// A unit's cosine with a CAV or probe direction.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectionCosine {
    pub unit: u32,
    pub source: String,
    pub name: String,
    pub cosine: f64,
}

/// Everything known about the units of one hook.
#[derive(Debug, Clone)]
pub struct Explanations {
    pub units: Vec<UnitStats>,
    pub examples: Vec<UnitExample>,
    pub labels: Vec<LabelCorrelation>,
    pub directions: Vec<DirectionCosine>,
    pub rows: u64,
}

/// Explains `units` over one epoch of `source` (two passes).
pub fn explain<S: RowSource>(
    units: Units<'_>,
    source: &mut S,
    tokens: &Tokens,
    labels: &[LabelTarget],
    directions: &[Direction],
    options: &ExplainOptions,
    progress: &dyn Progress,
) -> Result<Explanations, ConceptError> {
    let n = units.count();
    let mut acc = accumulate::Accumulator::new(n, labels, options);
    let what = match units {
        Units::Features(_) => "features",
        Units::Neurons { .. } => "neurons",
    };
    progress.start(&format!("explaining {n} {what}: activations (rows)"), 0);
    for_each_chunk(source, &units, |ids, acts| {
        acc.add(ids, acts);
        progress.advance(ids.len() as u64);
    })?;
    progress.finish();
    let rows = acc.rows();
    let (stats, requests, clusters) = acc.finish();
    progress.start(&format!("explaining {n} {what}: contexts (rows)"), rows);
    let examples = context::collect(source, &units, tokens, requests, options.window, |k| {
        progress.advance(k)
    })?;
    progress.finish();
    let mut stats = stats;
    let labels_out = accumulate::correlations(&stats, labels, &clusters);
    let directions_out = cosines(&units, directions);
    // Outputs come in unit order: one pass each fills the summaries' "best" fields.
    for d in &directions_out {
        let s = &mut stats[d.unit as usize];
        if s.best_direction
            .as_ref()
            .is_none_or(|(_, c)| d.cosine.abs() > c.abs())
        {
            s.best_direction = Some((format!("{}:{}", d.source, d.name), d.cosine));
        }
    }
    for l in &labels_out {
        let s = &mut stats[l.unit as usize];
        if l.correlation > 0.0
            && s.top_label
                .as_ref()
                .is_none_or(|(_, _, c)| l.correlation > *c)
        {
            s.top_label = Some((l.label.clone(), l.class.clone(), l.correlation));
            s.top_label_p_holm = Some(l.p_holm).filter(|p| !p.is_nan());
        }
    }
    for e in examples.iter().filter(|e| e.kind == "top") {
        let s = &mut stats[e.unit as usize];
        if !s.top_tokens.contains(&e.token) && s.top_tokens.len() < 5 {
            s.top_tokens.push(e.token.clone());
        }
    }
    Ok(Explanations {
        units: stats,
        examples,
        labels: labels_out,
        directions: directions_out,
        rows,
    })
}

/// Runs `f` on chunks of up to 4,096 rows with their ids and activations, for one epoch.
fn for_each_chunk<S: RowSource>(
    source: &mut S,
    units: &Units<'_>,
    mut f: impl FnMut(&[RowId], &Activations),
) -> Result<(), ConceptError> {
    let width = source.width();
    crate::sae::stream::for_each_chunk(source, 4096, |rows, ids| {
        if rows.len() != ids.len() * width {
            return Err(ConceptError::Invalid(
                "row source returned ragged rows".into(),
            ));
        }
        let acts = units.activations(rows)?;
        f(ids, &acts);
        Ok(())
    })
}

fn cosines(units: &Units<'_>, directions: &[Direction]) -> Vec<DirectionCosine> {
    let mut out = Vec::new();
    let norms: Vec<f64> = directions
        .iter()
        .map(|d| d.vector.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    for unit in 0..units.count() {
        let u = units.direction(unit);
        let un = u.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (d, dn) in directions.iter().zip(&norms) {
            if d.vector.len() != u.len() || un == 0.0 || *dn == 0.0 {
                continue;
            }
            let c = u.iter().zip(&d.vector).map(|(a, b)| a * b).sum::<f64>() / (un * dn);
            out.push(DirectionCosine {
                unit: unit as u32,
                source: d.source.clone(),
                name: d.name.clone(),
                cosine: c,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
