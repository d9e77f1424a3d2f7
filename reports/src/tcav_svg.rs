//! TCAV bars for one target: a row per (concept, hook) with the mean TCAV score as a bar, the
//! random-vs-random runs' mean ± one standard deviation as a grey band, the concept runs' ±1 sd
//! as a whisker, and `*` where the result is significant after correction.

use crate::markup::escape;
use glassbox_concepts::ScoreRow;

const W: f64 = 640.0;
const ROW: f64 = 22.0;
const LEFT: f64 = 300.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 24.0;

pub(crate) fn tcav_chart(target: &str, rows: &[&ScoreRow]) -> String {
    let h = TOP + ROW * rows.len() as f64 + 24.0;
    let plot = W - LEFT - RIGHT;
    let x = |v: f64| LEFT + plot * v.clamp(0.0, 1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        escape(&format!("TCAV scores for {target}"))
    );
    for tick in 0..=4 {
        let v = tick as f64 / 4.0;
        svg.push_str(&format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{TOP}\" y2=\"{1:.1}\" stroke=\"#eee\"/><text x=\"{0:.1}\" y=\"{2:.1}\" font-size=\"10\" text-anchor=\"middle\">{v:.2}</text>",
            x(v),
            h - 20.0,
            h - 6.0
        ));
    }
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let label = format!("{} @ {}", r.concept, r.hook);
        let (lo, hi) = (r.random_mean - r.random_std, r.random_mean + r.random_std);
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y + 14.0,
            escape(&label)
        ));
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#ccc\" fill-opacity=\"0.6\"><title>random {:.3} ± {:.3}</title></rect>",
            x(lo),
            y + 2.0,
            (x(hi) - x(lo)).max(1.0),
            ROW - 4.0,
            r.random_mean,
            r.random_std
        ));
        svg.push_str(&format!(
            "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {:.3} (p_holm {:.2e})</title></rect>",
            y + 6.0,
            x(r.score) - LEFT,
            ROW - 12.0,
            if r.significant { "#1f6feb" } else { "#9db8e0" },
            escape(&label),
            r.score,
            r.p_holm
        ));
        svg.push_str(&format!(
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{2:.1}\" y2=\"{2:.1}\" stroke=\"#222\"/>",
            x(r.score - r.score_std),
            x(r.score + r.score_std),
            y + ROW / 2.0
        ));
        if r.significant {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" font-weight=\"bold\">*</text>",
                W - RIGHT + 8.0,
                y + 15.0
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}
