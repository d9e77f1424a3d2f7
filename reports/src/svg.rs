//! A small inline-SVG line chart: probe score by hook with its CI band, the control task and
//! the majority baseline; hooks behind the best (paired interval above 0) drawn hollow.

use crate::markup::escape;
use crate::LabelFinding;

const W: f64 = 640.0;
const H: f64 = 260.0;
// Wide enough for the first rotated hook label.
const LEFT: f64 = 84.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 70.0;

pub(crate) fn accuracy_chart(f: &LabelFinding) -> String {
    let n = f.by_hook.len();
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |i: usize| {
        if n <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| TOP + plot_h * (1.0 - v.clamp(0.0, 1.0));
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        escape(&format!("probe accuracy by hook for {}", f.label))
    );
    for tick in 0..=4 {
        let v = tick as f64 / 4.0;
        svg.push_str(&format!(
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{v:.2}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            y = y(v)
        ));
    }
    let line = |values: &dyn Fn(usize) -> f64| -> String {
        (0..n)
            .map(|i| format!("{:.1},{:.1}", x(i), y(values(i))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // The CI band: upper bounds left to right, then lower bounds back.
    let band: Vec<String> = (0..n)
        .map(|i| format!("{:.1},{:.1}", x(i), y(f.by_hook[i].ci_high)))
        .chain(
            (0..n)
                .rev()
                .map(|i| format!("{:.1},{:.1}", x(i), y(f.by_hook[i].ci_low))),
        )
        .collect();
    // No band without intervals (`bootstrap = 0`).
    let has_ci = f.by_hook.iter().all(|r| r.score_ci().is_some());
    if has_ci {
        svg.push_str(&format!(
            "<polygon fill=\"#1f6feb\" fill-opacity=\"0.15\" stroke=\"none\" points=\"{}\"/>",
            band.join(" ")
        ));
    }
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#999\" stroke-dasharray=\"5 4\" stroke-width=\"1.5\" points=\"{}\"/>",
        line(&|i| f.by_hook[i].majority)
    ));
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#d1242f\" stroke-dasharray=\"2 3\" stroke-width=\"1.5\" points=\"{}\"/>",
        line(&|i| f.by_hook[i].control_score)
    ));
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\" points=\"{}\"/>",
        line(&|i| f.by_hook[i].score)
    ));
    for (i, r) in f.by_hook.iter().enumerate() {
        let ci = r
            .score_ci()
            .map_or(String::new(), |(lo, hi)| format!(" [{lo:.3}, {hi:.3}]"));
        // Filled: the best hook and those its lead does not tell apart from it; hollow: hooks
        // behind it (paired interval above 0). All filled when the hooks were not compared.
        let (fill, standing) = match r.vs_best_ci_low.zip(r.vs_best_ci_high) {
            Some(_) if r.tied_with_best() => (
                "#1f6feb",
                "; tied with the best on every test resample".to_owned(),
            ),
            Some((lo, hi)) if lo > 0.0 => {
                ("#fff", format!("; behind the best by [{lo:.3}, {hi:.3}]"))
            }
            Some((lo, hi)) => (
                "#1f6feb",
                format!("; not told apart from the best ([{lo:.3}, {hi:.3}])"),
            ),
            None => ("#1f6feb", String::new()),
        };
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{fill}\" stroke=\"#1f6feb\" stroke-width=\"1.5\"><title>{}: {:.3}{ci}{standing}</title></circle>",
            x(i),
            y(r.score),
            escape(&r.hook.to_string()),
            r.score,
        ));
        let name = r.hook.to_string();
        let short = name
            .strip_prefix("blocks.")
            .map(|s| format!("b{s}"))
            .unwrap_or_else(|| name.clone())
            .replace(".hook_", ".");
        svg.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{yy:.1}\" font-size=\"10\" text-anchor=\"end\" transform=\"rotate(-35 {x:.1} {yy:.1})\">{}</text>",
            escape(&short),
            x = x(i),
            yy = H - BOTTOM + 14.0
        ));
    }
    svg.push_str("</svg>");
    svg
}
