//! The input-attribution page (`attributions/index.html`): per target, the methods ranked with
//! their evaluation and sanity verdict, the mean deletion curves, and each example's maps side by
//! side — heat cells over the photo the model saw ("this is a tabby cat because…"), or tokens
//! shaded by attribution. A method that failed the randomisation check is never shown without
//! saying so under its map.

use crate::markup::{escape, page};
use crate::ReportError;
use arrow_array::{
    Array, BooleanArray, Float32Array, Float64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use glassbox_data::table::read_table;
use glassbox_data::RunDir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Examples shown per target (the tables hold them all).
const SHOWN: usize = 8;

/// Reads a whole table as its record batches.
fn batches(path: &Path) -> Result<Vec<RecordBatch>, ReportError> {
    Ok(read_table(path)?)
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a T, ReportError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            ReportError::Invalid(format!(
                "{}: column `{name}` missing or mistyped",
                path.display()
            ))
        })
}

/// One method's verdict (a row of `methods.parquet`); the main report reads the fields it shows.
pub(crate) struct Verdict {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) faithfulness: Option<f64>,
    /// Bootstrap 95% interval of `faithfulness` (absent from older tables).
    pub(crate) faithfulness_ci: Option<(f64, f64)>,
    /// Paired interval of the top method's faithfulness minus this one's, simultaneous at 95%
    /// over every pair of methods.
    pub(crate) vs_top_ci: Option<(f64, f64)>,
    max_sensitivity: Option<f64>,
    pub(crate) completeness_error: Option<f64>,
    randomized_spearman: Option<f64>,
    /// `probe:` targets: |ρ| with the maps of the probe refitted on shuffled labels.
    label_randomized_spearman: Option<f64>,
    pub(crate) sanity_passed: Option<bool>,
    pub(crate) rank: u32,
}

impl Verdict {
    /// "|ρ| 0.12 with the model randomised, 0.05 with the labels shuffled".
    fn evidence(&self) -> String {
        let mut s = format!(
            "|ρ| {} with the model randomised",
            fmt(self.randomized_spearman)
        );
        if self.label_randomized_spearman.is_some() {
            s.push_str(&format!(
                ", {} with the labels shuffled",
                fmt(self.label_randomized_spearman)
            ));
        }
        s
    }
}

fn opt(a: &Float64Array, i: usize) -> Option<f64> {
    (!a.is_null(i)).then(|| a.value(i))
}

pub(crate) fn verdicts(dir: &Path) -> Result<Vec<Verdict>, ReportError> {
    let path = dir.join("methods.parquet");
    let mut out = Vec::new();
    for b in batches(&path)? {
        let method = col::<StringArray>(&b, "method", &path)?;
        let target = col::<StringArray>(&b, "target", &path)?;
        let faith = col::<Float64Array>(&b, "faithfulness", &path)?;
        let sens = col::<Float64Array>(&b, "max_sensitivity", &path)?;
        let comp = col::<Float64Array>(&b, "completeness_error", &path)?;
        let rho = col::<Float64Array>(&b, "randomized_spearman", &path)?;
        // Absent from runs written before the label check existed.
        let label_rho = b
            .column_by_name("label_randomized_spearman")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>());
        let passed = col::<BooleanArray>(&b, "sanity_passed", &path)?;
        // Absent from runs written before the intervals existed.
        let later = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
        };
        let interval = |lo: &str, hi: &str, i: usize| {
            later(lo)
                .and_then(|a| opt(a, i))
                .zip(later(hi).and_then(|a| opt(a, i)))
        };
        let rank = col::<UInt32Array>(&b, "rank", &path)?;
        for i in 0..b.num_rows() {
            out.push(Verdict {
                method: method.value(i).to_owned(),
                target: target.value(i).to_owned(),
                faithfulness: opt(faith, i),
                faithfulness_ci: interval("faithfulness_ci_low", "faithfulness_ci_high", i),
                vs_top_ci: interval("vs_top_ci_low", "vs_top_ci_high", i),
                max_sensitivity: opt(sens, i),
                completeness_error: opt(comp, i),
                randomized_spearman: opt(rho, i),
                label_randomized_spearman: label_rho.and_then(|a| opt(a, i)),
                sanity_passed: (!passed.is_null(i)).then(|| passed.value(i)),
                rank: rank.value(i),
            });
        }
    }
    Ok(out)
}

/// `(example, method, target) → predicted` and `f(x)`, from `summary.parquet`.
type Predictions = BTreeMap<(String, u64), (Option<String>, f64)>;

fn predictions(dir: &Path) -> Result<Predictions, ReportError> {
    let path = dir.join("summary.parquet");
    let mut out = BTreeMap::new();
    for b in batches(&path)? {
        let target = col::<StringArray>(&b, "target", &path)?;
        let id = col::<UInt64Array>(&b, "example_id", &path)?;
        let predicted = col::<StringArray>(&b, "predicted", &path)?;
        let f = col::<Float64Array>(&b, "f_input", &path)?;
        for i in 0..b.num_rows() {
            let p = (!predicted.is_null(i)).then(|| predicted.value(i).to_owned());
            out.insert((target.value(i).to_owned(), id.value(i)), (p, f.value(i)));
        }
    }
    Ok(out)
}

/// One example's map: values by position, and the tokens (text) or the image size.
struct Map {
    values: Vec<f32>,
    tokens: Vec<String>,
    size: Option<(usize, usize)>,
}

/// The `part-*.parquet` files of a method × target's maps, in part order.
fn map_parts(folder: &Path) -> Vec<std::path::PathBuf> {
    let mut parts: Vec<std::path::PathBuf> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet"))
        })
        .collect();
    parts.sort();
    parts
}

fn maps(folder: &Path) -> Result<BTreeMap<u64, Map>, ReportError> {
    let mut out: BTreeMap<u64, Map> = BTreeMap::new();
    for path in map_parts(folder) {
        read_maps(&path, &mut out)?;
    }
    Ok(out)
}

/// Adds one part's maps to `out`.
fn read_maps(path: &Path, out: &mut BTreeMap<u64, Map>) -> Result<(), ReportError> {
    let path = path.to_path_buf();
    for b in batches(&path)? {
        let id = col::<UInt64Array>(&b, "example_id", &path)?;
        let value = col::<Float32Array>(&b, "attribution", &path)?;
        let token = b
            .column_by_name("token")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>());
        let y = b
            .column_by_name("y")
            .and_then(|c| c.as_any().downcast_ref::<UInt32Array>());
        let x = b
            .column_by_name("x")
            .and_then(|c| c.as_any().downcast_ref::<UInt32Array>());
        for i in 0..b.num_rows() {
            let m = out.entry(id.value(i)).or_insert(Map {
                values: Vec::new(),
                tokens: Vec::new(),
                size: None,
            });
            m.values.push(value.value(i));
            if let Some(t) = token {
                m.tokens.push(t.value(i).to_owned());
            }
            if let (Some(y), Some(x)) = (y, x) {
                let (h, w) = m.size.unwrap_or((0, 0));
                m.size = Some((
                    h.max(y.value(i) as usize + 1),
                    w.max(x.value(i) as usize + 1),
                ));
            }
        }
    }
    Ok(())
}

/// `(method, curve)` → `(fraction, mean f)` points.
type MeanCurves = BTreeMap<(String, String), Vec<(f64, f64)>>;

/// Mean curve per `(method, curve)` of one target on 21 evenly spaced fractions: each example's
/// curve (its own fractions: 1/n steps for n tokens) interpolated linearly, then averaged.
fn mean_curves(dir: &Path, target: &str) -> Result<MeanCurves, ReportError> {
    let path = dir.join("curves.parquet");
    type Key = (String, String, u64);
    let mut curves: BTreeMap<Key, Vec<(f64, f64)>> = BTreeMap::new();
    for b in batches(&path)? {
        let t = col::<StringArray>(&b, "target", &path)?;
        let method = col::<StringArray>(&b, "method", &path)?;
        let curve = col::<StringArray>(&b, "curve", &path)?;
        let id = col::<UInt64Array>(&b, "example_id", &path)?;
        let fraction = col::<Float64Array>(&b, "fraction", &path)?;
        let value = col::<Float64Array>(&b, "value", &path)?;
        for i in 0..b.num_rows() {
            if t.value(i) == target {
                curves
                    .entry((
                        method.value(i).to_owned(),
                        curve.value(i).to_owned(),
                        id.value(i),
                    ))
                    .or_default()
                    .push((fraction.value(i), value.value(i)));
            }
        }
    }
    const GRID: usize = 20;
    let mut sums: BTreeMap<(String, String), (Vec<f64>, u32)> = BTreeMap::new();
    for ((method, curve, _), mut points) in curves {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let at = |f: f64| -> f64 {
            let j = points.partition_point(|p| p.0 < f);
            match (j.checked_sub(1).map(|k| points[k]), points.get(j)) {
                (Some(a), Some(b)) if b.0 > a.0 => a.1 + (b.1 - a.1) * (f - a.0) / (b.0 - a.0),
                (_, Some(b)) => b.1,
                (Some(a), None) => a.1,
                (None, None) => f64::NAN,
            }
        };
        let slot = sums
            .entry((method, curve))
            .or_insert((vec![0.0; GRID + 1], 0));
        for (k, v) in slot.0.iter_mut().enumerate() {
            *v += at(k as f64 / GRID as f64);
        }
        slot.1 += 1;
    }
    Ok(sums
        .into_iter()
        .map(|(key, (v, n))| {
            let points = v
                .into_iter()
                .enumerate()
                .map(|(k, s)| (k as f64 / GRID as f64, s / f64::from(n)))
                .collect();
            (key, points)
        })
        .collect())
}

/// An `rgba()` colour for a value in [-1, 1]: red for positive, blue for negative.
fn shade(v: f32) -> String {
    let a = v.abs().min(1.0);
    if v >= 0.0 {
        format!("rgba(214,39,40,{a:.3})")
    } else {
        format!("rgba(31,119,180,{a:.3})")
    }
}

/// Heat cells (8 px) over the photo, as an SVG laid on the example's background image.
fn image_panel(m: &Map, class: &str) -> String {
    let (h, w) = m.size.unwrap_or((1, 1));
    const CELL: usize = 8;
    let (rows, cols) = (h.div_ceil(CELL), w.div_ceil(CELL));
    let mut cells = vec![0f32; rows * cols];
    for (p, v) in m.values.iter().enumerate() {
        cells[(p / w / CELL) * cols + (p % w) / CELL] += v;
    }
    let max = cells.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
    let mut svg = format!(
        "<div class=\"photo {class}\" style=\"width:{w}px;height:{h}px\"><svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">"
    );
    for (i, v) in cells.iter().enumerate() {
        let v = v / max;
        if v.abs() < 0.05 {
            continue;
        }
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{}\"/>",
            (i % cols) * CELL,
            (i / cols) * CELL,
            shade(v * 0.75)
        ));
    }
    svg.push_str("</svg></div>");
    svg
}

/// Tokens shaded by attribution (scaled by the largest magnitude).
fn text_panel(m: &Map) -> String {
    let max = m.values.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
    let mut h = String::from("<div class=\"snippet\">");
    for (t, v) in m.tokens.iter().zip(&m.values) {
        // Byte-level BPE (Ġ, Ċ) and SentencePiece (▁) spell spaces and newlines as letters.
        let shown = t.replace(['Ġ', '▁'], " ").replace('Ċ', "⏎");
        h.push_str(&format!(
            "<span style=\"background:{}\" title=\"{v:.4}\">{}</span>",
            shade(v / max),
            escape(&shown)
        ));
    }
    h.push_str("</div>");
    h
}

/// The mean deletion (most relevant first) curve of each method: a faithful map drops fast.
fn curves_svg(curves: &MeanCurves) -> String {
    let lines: Vec<(&String, &Vec<(f64, f64)>)> = curves
        .iter()
        .filter(|((_, c), _)| c == "deletion_morf")
        .map(|((m, _), v)| (m, v))
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let (lo, hi) = lines
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    let span = (hi - lo).max(1e-9);
    let (w, h, pad) = (420.0, 220.0, 36.0);
    let colours = [
        "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
        "#17becf",
    ];
    let mut svg = format!("<svg width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\"><rect x=\"{pad}\" y=\"8\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>", w + 160.0, h + 40.0, w + 160.0, h + 40.0, w - pad, h - 8.0);
    for (k, (method, points)) in lines.iter().enumerate() {
        let colour = colours[k % colours.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(f, v)| {
                format!(
                    "{:.1},{:.1}",
                    pad + f * (w - pad),
                    8.0 + (hi - v) / span * (h - 8.0)
                )
            })
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{colour}\">{}</text>",
            path.join(" "),
            w + 8.0,
            20.0 + 16.0 * k as f64,
            escape(method)
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{pad}\" y=\"{}\" font-size=\"11\">0 → all units removed (most relevant first)</text><text x=\"2\" y=\"16\" font-size=\"11\">{hi:.2}</text><text x=\"2\" y=\"{}\" font-size=\"11\">{lo:.2}</text></svg>",
        h + 24.0,
        h
    ));
    svg
}

pub(crate) fn fmt(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.3}"))
}

/// A value with its interval, `0.812 [0.700, 0.905]`, or the value alone.
pub fn fmt_ci(v: Option<f64>, ci: Option<(f64, f64)>) -> String {
    match ci {
        Some((lo, hi)) => format!("{} [{lo:.3}, {hi:.3}]", fmt(v)),
        None => fmt(v),
    }
}

/// How a method stands against the top-ranked one: its lead's paired interval, and whether the
/// examples tell the two apart.
pub fn vs_top(rank: u32, ci: Option<(f64, f64)>) -> String {
    match (rank, ci) {
        (1, _) => "top".to_owned(),
        (_, Some((lo, hi))) if lo > 0.0 => format!("behind by [{lo:.3}, {hi:.3}]"),
        (_, Some((lo, hi))) => format!("not told apart ([{lo:.3}, {hi:.3}])"),
        (_, None) => "–".to_owned(),
    }
}

/// The completeness error above which integrated gradients' integral counts as not converged:
/// the attributions then miss `f(x) − f(baseline)` by more than 1 %, the standard the
/// method's own axiom sets (and Captum's `convergence_delta` is read against).
pub const COMPLETENESS_TOLERANCE: f64 = 0.01;

/// The warning for an integral that has not converged (`None` within the tolerance): what the
/// number means and what to try.
pub fn completeness_warning(method: &str, completeness_error: Option<f64>) -> Option<String> {
    let e = completeness_error.filter(|e| *e > COMPLETENESS_TOLERANCE)?;
    Some(format!(
        "`{method}` has not converged: its attributions miss f(x) − f(baseline) by {:.1} % (median over the examples; tolerance {:.0} %), so its maps are an approximation of the integral — raise --steps, change --rule (adaptive refines where the integrand jumps), or choose a baseline away from where the model is steepest (on RMSNorm decoders, all-zero embeddings)",
        100.0 * e,
        100.0 * COMPLETENESS_TOLERANCE
    ))
}

/// Renders `attributions/index.html` for the run's `attributions/` folder (at `dir`).
pub fn attribution_page(run: &RunDir, dir: &Path) -> Result<String, ReportError> {
    let verdicts = verdicts(dir)?;
    let predictions = predictions(dir)?;
    let mut body = String::from("<h1>Why the model decided: input attributions</h1>\n<p class=\"note\">Each map is ranked by faithfulness (area between the deletion curves, least- minus most-relevant first: higher = the map orders features by how much the target needs them), with max-sensitivity (lower = steadier under small input noise), integrated gradients' completeness error, and the randomisation checks (Adebayo et al. 2018): a method whose maps still rank-correlate with the trained model's once every layer is destroyed — or, for a probe target, with those of the probe refitted on shuffled labels — explains the input, not the model, and is marked FAILED wherever its map appears. Red = supports the target, blue = against it.</p>\n");
    let mut style = String::new();
    let inputs = dir.join("inputs");
    let mut targets: Vec<&String> = verdicts.iter().map(|v| &v.target).collect();
    targets.dedup();
    targets.sort();
    targets.dedup();
    for target in targets {
        let mut mine: Vec<&Verdict> = verdicts.iter().filter(|v| &v.target == target).collect();
        mine.sort_by_key(|v| v.rank);
        body.push_str(&format!("<section><h2>Target <code>{}</code></h2>\n<table><thead><tr><th>rank</th><th>method</th><th>faithfulness [95% CI]</th><th>against the top [simultaneous 95% CI of its lead]</th><th>max-sensitivity</th><th>IG completeness error</th><th>sanity check</th></tr></thead><tbody>\n", escape(target)));
        for v in &mine {
            let sanity = match v.sanity_passed {
                Some(true) => format!("passed ({})", v.evidence()),
                Some(false) => format!("<strong>FAILED</strong> ({})", v.evidence()),
                None => "not run".to_owned(),
            };
            let completeness = match completeness_warning(&v.method, v.completeness_error) {
                None => fmt(v.completeness_error),
                Some(warning) => format!(
                    "{} — <strong>not converged</strong><br><small>{}</small>",
                    fmt(v.completeness_error),
                    escape(&warning)
                ),
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{completeness}</td><td>{sanity}</td></tr>\n",
                v.rank,
                escape(&v.method),
                fmt_ci(v.faithfulness, v.faithfulness_ci),
                escape(&vs_top(v.rank, v.vs_top_ci)),
                fmt(v.max_sensitivity),
            ));
        }
        body.push_str("</tbody></table>\n");
        body.push_str(&format!(
            "<figure>{}<figcaption>Mean target score as units (tokens or 16-px cells) are removed most-relevant-first: a faithful map drops fastest.</figcaption></figure>\n",
            curves_svg(&mean_curves(dir, target)?)
        ));
        let slug = glassbox_data::run::folder_slug(target);
        let mut per_method: Vec<(&Verdict, BTreeMap<u64, Map>)> = Vec::new();
        for v in &mine {
            let folder = dir
                .join(format!("method={}", v.method))
                .join(format!("target={slug}"));
            if !map_parts(&folder).is_empty() {
                per_method.push((v, maps(&folder)?));
            }
        }
        let ids: Vec<u64> = per_method
            .first()
            .map(|(_, m)| m.keys().copied().take(SHOWN).collect())
            .unwrap_or_default();
        for id in ids {
            let (predicted, f) = predictions
                .get(&(target.clone(), id))
                .cloned()
                .unwrap_or((None, f64::NAN));
            let heading = match &predicted {
                Some(p) => format!("Example {id}: the model says <strong>{}</strong> (target score {f:.3}) because…", escape(p)),
                None => format!("Example {id} (target score {f:.3})"),
            };
            body.push_str(&format!("<h3>{heading}</h3>\n<div class=\"panels\">\n"));
            let png = inputs.join(format!("{id}.png"));
            let class = format!("ex{id}");
            if png.is_file() && !style.contains(&format!(".{class} ")) {
                let bytes = std::fs::read(&png)
                    .map_err(|e| ReportError::Invalid(format!("{}: {e}", png.display())))?;
                style.push_str(&format!(
                    ".{class} {{ background-image: url(data:image/png;base64,{}); }}\n",
                    crate::markup::base64(&bytes)
                ));
            }
            for (v, maps) in &per_method {
                let Some(m) = maps.get(&id) else { continue };
                let panel = if m.size.is_some() {
                    image_panel(m, &class)
                } else {
                    text_panel(m)
                };
                let caption = match v.sanity_passed {
                    Some(false) => format!("{} — <strong>failed the randomisation check: not an explanation of the model</strong>", escape(&v.method)),
                    _ => escape(&v.method),
                };
                body.push_str(&format!(
                    "<figure class=\"panel\">{panel}<figcaption>{caption}</figcaption></figure>\n"
                ));
            }
            body.push_str("</div>\n");
        }
        body.push_str("</section>\n");
    }
    let _ = run;
    let extra = format!("<style>.panels {{ display:flex; flex-wrap:wrap; gap:12px; }} .panel {{ margin:0; }} .photo {{ background-size:cover; position:relative; }} .photo svg {{ position:absolute; left:0; top:0; }}\n{style}</style>\n");
    Ok(page("input attributions", &(extra + &body)))
}

/// Writes `index.html` into `dir` (a run's `attributions/` folder, or its staging).
pub fn write_attribution_page(run: &RunDir, dir: &Path) -> Result<PathBuf, ReportError> {
    let html = attribution_page(run, dir)?;
    let path = dir.join("index.html");
    glassbox_data::atomic::write_bytes(&path, html.as_bytes())?;
    Ok(path)
}
