//! The patching section's charts: attribution patching against exact patching (a scatter of
//! the mean normalised effects, one point per hook, position and head, with the diagonal of
//! perfect agreement), and direct logit attribution's bars.

const SIZE: f64 = 320.0;
const PAD: f64 = 40.0;

/// The scatter of `(exact, estimate)` points, or `None` when none is finite.
pub(crate) fn scatter(points: &[(f64, f64)]) -> Option<String> {
    let points: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if points.is_empty() {
        return None;
    }
    let (lo, hi) = points.iter().fold((0.0f64, 1.0f64), |(lo, hi), (x, y)| {
        (lo.min(*x).min(*y), hi.max(*x).max(*y))
    });
    let span = (hi - lo).max(1e-12);
    let at = |v: f64| PAD + (SIZE - 2.0 * PAD) * (v - lo) / span;
    // y grows downwards in SVG.
    let y = |v: f64| SIZE - at(v);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {SIZE} {SIZE}\" width=\"{SIZE}\" height=\"{SIZE}\" role=\"img\" aria-label=\"attribution patching against exact patching\">\
<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
        at(lo),
        y(lo),
        at(hi),
        y(hi)
    );
    for (x, v) in &points {
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#1f4e79\" fill-opacity=\"0.6\"/>",
            at(*x),
            y(*v)
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">exact (mean normalised)</text>\
<text x=\"12\" y=\"{:.1}\" font-size=\"11\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">attribution patching</text>\
<text x=\"{PAD}\" y=\"{:.1}\" font-size=\"10\">{lo:.2}</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{hi:.2}</text></svg>",
        SIZE / 2.0,
        SIZE - 8.0,
        SIZE / 2.0,
        SIZE / 2.0,
        SIZE - PAD + 14.0,
        SIZE - PAD,
        SIZE - PAD + 14.0,
    ));
    Some(svg)
}

/// Horizontal bars of `(label, value)` (the largest |value| first), diverging from 0: blue for
/// positive, red for negative.
pub(crate) fn bars(rows: &[(String, f64)]) -> Option<String> {
    const WIDTH: f64 = 640.0;
    const LABEL: f64 = 220.0;
    const ROW: f64 = 18.0;
    let rows: Vec<&(String, f64)> = rows.iter().filter(|(_, v)| v.is_finite()).collect();
    if rows.is_empty() {
        return None;
    }
    let top = rows
        .iter()
        .map(|(_, v)| v.abs())
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let height = ROW * rows.len() as f64 + 24.0;
    let zero = LABEL + (WIDTH - LABEL) / 2.0;
    let half = (WIDTH - LABEL) / 2.0 - 40.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\" aria-label=\"direct logit attribution\">\
<line x1=\"{zero}\" x2=\"{zero}\" y1=\"0\" y2=\"{height}\" stroke=\"#999\"/>"
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let len = half * v.abs() / top;
        let x = if *v >= 0.0 { zero } else { zero - len };
        let colour = if *v >= 0.0 { "#1f4e79" } else { "#b03a2e" };
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>\
<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{len:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\"{}>{v:+.2}</text>",
            LABEL - 6.0,
            y + 12.0,
            crate::markup::escape(label),
            ROW - 4.0,
            if *v >= 0.0 {
                zero + len + 3.0
            } else {
                zero - len - 3.0
            },
            y + 12.0,
            if *v >= 0.0 {
                ""
            } else {
                " text-anchor=\"end\""
            },
        ));
    }
    svg.push_str("</svg>");
    Some(svg)
}
