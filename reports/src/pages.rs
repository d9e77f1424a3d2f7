//! One drill-down page per 100 units (features or neurons) of a hook:
//! `report/units/<hook>/<kind>-NNN.html`. Each unit gets every top example with per-token
//! highlighting, the quantile samples by bin, its strongest label correlations and the
//! closest probe/CAV directions. Paging keeps each page small however many units there are
//! (16k features → 164 pages of 100); the full data stays in the Parquet files.

use crate::dictionary::{DictionaryFinding, UNITS_PER_PAGE};
use crate::markup::{escape, inline, snippet};
use crate::ReportError;
use glassbox_concepts::explain::read::{read_directions, read_examples, read_labels, read_units};
use glassbox_concepts::explain::{DirectionCosine, LabelCorrelation, UnitExample};
use glassbox_data::{atomic, RunDir};
use std::collections::HashMap;

/// Writes every page of every finding; returns how many.
pub fn write_pages(run: &RunDir, findings: &[DictionaryFinding]) -> Result<usize, ReportError> {
    let mut written = 0;
    // Pages of an earlier report (perhaps with more units) must not linger.
    let root = run.report_dir().join("units");
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .map_err(|e| ReportError::Invalid(format!("{}: {e}", root.display())))?;
    }
    let mut inputs = crate::thumbnails::ModelInputs::open(run);
    for f in findings {
        let dir = f.dir(run);
        let grid = crate::thumbnails::read_grid(&dir);
        let unit = f.unit();
        let units = read_units(&dir, unit)?;
        let mut examples: HashMap<u32, Vec<UnitExample>> = HashMap::new();
        for e in read_examples(&dir, unit, |_, _, _| true)? {
            examples.entry(e.unit).or_default().push(e);
        }
        let mut labels: HashMap<u32, Vec<LabelCorrelation>> = HashMap::new();
        for l in read_labels(&dir, unit)? {
            labels.entry(l.unit).or_default().push(l);
        }
        let mut directions: HashMap<u32, Vec<DirectionCosine>> = HashMap::new();
        for d in read_directions(&dir, unit)? {
            directions.entry(d.unit).or_default().push(d);
        }
        let promoted = read_promoted(&dir)?;
        let pages = units.len().div_ceil(UNITS_PER_PAGE);
        for (p, chunk) in units.chunks(UNITS_PER_PAGE).enumerate() {
            let mut body = format!(
                "<p class=\"nav\"><a href=\"../../index.html#dictionary\">report</a> · <code>{}</code> {} {}–{} of {}{}{}</p>\n",
                escape(&f.hook.to_string()),
                escape(&f.kind),
                chunk[0].unit,
                chunk[chunk.len() - 1].unit,
                units.len(),
                if p > 0 { format!(" · <a href=\"{}-{:03}.html\">previous</a>", f.kind, p - 1) } else { String::new() },
                if p + 1 < pages { format!(" · <a href=\"{}-{:03}.html\">next</a>", f.kind, p + 1) } else { String::new() },
            );
            for u in chunk {
                // Image runs: the top cells on their images (the first few, small).
                let thumbs: Vec<String> = match (&grid, inputs.as_mut()) {
                    (Some(grid), Some(inputs)) => examples
                        .get(&u.unit)
                        .into_iter()
                        .flatten()
                        .filter(|e| e.kind == "top")
                        .take(PAGE_THUMBNAILS)
                        .map(|e| {
                            crate::thumbnails::cell(
                                inputs,
                                grid,
                                e.example_id,
                                e.position,
                                crate::thumbnails::PAGE_SIDE,
                            )
                            .map(|t| {
                                format!(
                                    "<img alt=\"example {} {}\" title=\"activation {:.3}\" width=\"{side}\" height=\"{side}\" src=\"data:image/jpeg;base64,{t}\">",
                                    e.example_id,
                                    escape(&e.token),
                                    e.activation,
                                    side = crate::thumbnails::PAGE_SIDE
                                )
                            })
                        })
                        // All or none: the rest of the top examples follow as cell names.
                        .collect::<Option<Vec<String>>>()
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                body.push_str(&unit_section(
                    unit,
                    u,
                    grid.is_some().then_some(thumbs.as_slice()),
                    examples.get(&u.unit),
                    labels.get(&u.unit),
                    directions.get(&u.unit),
                    promoted.get(&u.unit),
                ));
            }
            let title = format!("{} {} page {}", f.hook, f.kind, p + 1);
            let path = run.report_dir().join(format!(
                "units/{}/{}-{:03}.html",
                crate::file_name(&f.hook.to_string()),
                f.kind,
                p
            ));
            atomic::write_bytes(&path, crate::markup::page(&title, &body).as_bytes())?;
            written += 1;
        }
    }
    Ok(written)
}

/// `feature_promoted_tokens.parquet` (causal LMs only): feature → (token, logit) by rank.
pub(crate) fn read_promoted(
    dir: &std::path::Path,
) -> Result<HashMap<u32, Vec<(String, f64)>>, ReportError> {
    read_token_logits(dir, "feature_promoted_tokens.parquet")
}

/// Per feature, `(token, logit)` in rank order from `<dir>/<file>` (the promoted or suppressed
/// tokens of a causal LM's SAE); empty when the file is absent.
pub(crate) fn read_token_logits(
    dir: &std::path::Path,
    file: &str,
) -> Result<HashMap<u32, Vec<(String, f64)>>, ReportError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, UInt32Type};
    let path = dir.join(file);
    let mut out: HashMap<u32, Vec<(String, f64)>> = HashMap::new();
    if !path.exists() {
        return Ok(out);
    }
    for batch in glassbox_data::table::read_table(&path)? {
        let col = |n: &str| {
            batch
                .column_by_name(n)
                .cloned()
                .ok_or_else(|| ReportError::Invalid(format!("{}: no column `{n}`", path.display())))
        };
        let (feature, token, logit) = (col("feature")?, col("token")?, col("logit")?);
        let (feature, token, logit) = (
            feature.as_primitive::<UInt32Type>(),
            token.as_string::<i32>(),
            logit.as_primitive::<Float64Type>(),
        );
        for r in 0..batch.num_rows() {
            out.entry(feature.value(r))
                .or_default()
                .push((token.value(r).to_owned(), logit.value(r)));
        }
    }
    Ok(out)
}

/// A text example with its highlighted context; an image run's cell as one line (its
/// neighbours along the row say little there).
fn example_html(e: &UnitExample, cells: bool) -> String {
    if cells {
        format!(
            "<div class=\"cellref\">example {} · cell <code>{}</code> · {:.3}</div>",
            e.example_id,
            escape(&e.token),
            e.activation
        )
    } else {
        snippet(
            &e.context_tokens,
            &e.context_activations,
            e.center,
            e.activation,
        )
    }
}

/// Top examples shown as images per unit on an image run's pages.
const PAGE_THUMBNAILS: usize = 3;

fn unit_section(
    unit: &str,
    u: &glassbox_concepts::explain::read::UnitRow,
    // Image runs: the top examples' thumbnails (possibly none); `None` for text runs.
    images: Option<&[String]>,
    examples: Option<&Vec<UnitExample>>,
    labels: Option<&Vec<LabelCorrelation>>,
    directions: Option<&Vec<DirectionCosine>>,
    promoted: Option<&Vec<(String, f64)>>,
) -> String {
    let mut h = format!(
        "<section class=\"unit-page\" id=\"{unit}-{}\">\n<h2>{unit} {}</h2>\n<p>active on {} tokens (density {:.3}%), mean {:.3} (when active {:.3}), max {:.3}</p>\n",
        u.unit,
        u.unit,
        u.active_rows,
        100.0 * u.density,
        u.mean_activation,
        u.mean_when_active,
        u.max_activation
    );
    let empty = Vec::new();
    let examples = examples.unwrap_or(&empty);
    if examples.is_empty() {
        h.push_str("<p class=\"note\">Never active: no examples.</p>\n");
    }
    let top: Vec<&UnitExample> = examples.iter().filter(|e| e.kind == "top").collect();
    let (cells, thumbs) = (images.is_some(), images.unwrap_or_default());
    if !top.is_empty() {
        h.push_str("<h3>Top activations</h3>\n");
        if !thumbs.is_empty() {
            h.push_str(&format!(
                "<div class=\"thumbs\">{}</div>\n",
                thumbs.concat()
            ));
        }
        for e in top.into_iter().skip(thumbs.len()) {
            h.push_str(&example_html(e, cells));
        }
    }
    let quantile: Vec<&UnitExample> = examples.iter().filter(|e| e.kind == "quantile").collect();
    if !quantile.is_empty() {
        h.push_str("<h3>Samples by activation quantile (lowest first)</h3>\n");
        for e in quantile {
            h.push_str(&format!(
                "<div class=\"bin\">bin {}</div>",
                e.bin.unwrap_or_default()
            ));
            h.push_str(&example_html(e, cells));
        }
    }
    if let Some(labels) = labels {
        let mut best: Vec<&LabelCorrelation> = labels.iter().collect();
        best.sort_by(|a, b| b.correlation.total_cmp(&a.correlation));
        let lines: Vec<String> = best
            .iter()
            .take(3)
            .map(|l| {
                format!(
                    "`{}` = `{}`: r {:.3} (mean {:.3} on its {} tokens)",
                    l.label, l.class, l.correlation, l.mean_in_class, l.rows_in_class
                )
            })
            .collect();
        h.push_str(&format!(
            "<h3>Labels</h3>\n<ul><li>{}</li></ul>\n",
            lines
                .iter()
                .map(|l| inline(l))
                .collect::<Vec<_>>()
                .join("</li><li>")
        ));
    }
    if let Some(directions) = directions {
        let mut best: Vec<&DirectionCosine> = directions.iter().collect();
        best.sort_by(|a, b| b.cosine.abs().total_cmp(&a.cosine.abs()));
        let lines: Vec<String> = best
            .iter()
            .take(3)
            .map(|d| format!("{} `{}`: cos {:.3}", d.source, d.name, d.cosine))
            .collect();
        h.push_str(&format!(
            "<h3>Aligned probes and concepts</h3>\n<ul><li>{}</li></ul>\n",
            lines
                .iter()
                .map(|l| inline(l))
                .collect::<Vec<_>>()
                .join("</li><li>")
        ));
    }
    if let Some(tokens) = promoted {
        let shown: Vec<String> = tokens
            .iter()
            .map(|(t, l)| format!("`{t}` ({l:+.2})"))
            .collect();
        h.push_str(&format!(
            "<h3>Tokens it promotes</h3>\n<p class=\"promoted\">Through the unembedding, its decoder direction raises: {}</p>\n",
            inline(&shown.join(", "))
        ));
    }
    h.push_str("</section>\n");
    h
}
