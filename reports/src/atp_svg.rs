//! Attribution patching against exact patching: a scatter of the mean normalised effects,
//! one point per (hook, position, head), with the diagonal of perfect agreement.

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
