//! The activation-patching section's HTML: per-hook layer × position heatmaps, attribution
//! patching against the exact effects, the largest effects, ablations, direct logit attribution
//! and the logit lens (the data is `patching`'s).

use crate::markup::escape;
use crate::patching::{headline, Effect, PatchingFinding};

/// A layer × position heatmap of mean normalised effects for hooks named `blocks.L.<suffix>`.
pub(crate) fn heatmap(f: &PatchingFinding, suffix: &str) -> Option<String> {
    let cells: Vec<&Effect> = f
        .effects
        .iter()
        .filter(|e| {
            e.head.is_none() && e.hook.layer().is_some() && e.hook.to_string().ends_with(suffix)
        })
        .collect();
    if cells.is_empty() {
        return None;
    }
    // Only the patched layers get a row.
    let mut layer_ids: Vec<usize> = cells.iter().filter_map(|e| e.hook.layer()).collect();
    layer_ids.sort_unstable();
    layer_ids.dedup();
    let row_of = |l: usize| layer_ids.binary_search(&l).unwrap_or(0);
    let layers = layer_ids.len();
    let positions = cells.iter().map(|e| e.position).max()? as usize + 1;
    let (cw, ch, left, top) = (36.0, 16.0, 70.0, 70.0);
    let (w, h) = (
        left + cw * positions as f64 + 10.0,
        top + ch * layers as f64 + 10.0,
    );
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        escape(&format!("patching effects at {suffix}, layer by position"))
    );
    for p in 0..positions {
        // Byte-level BPE marks a leading space as `Ġ` and a newline as `Ċ`.
        let label = f
            .tokens
            .get(p)
            .map(|t| t.replace('Ġ', "\u{2423}").replace('Ċ', "\\n"))
            .unwrap_or_else(|| p.to_string());
        let x = left + cw * (p as f64 + 0.5);
        svg.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"start\" transform=\"rotate(-45 {x:.1} {:.1})\">{}</text>",
            top - 4.0,
            top - 4.0,
            escape(&label)
        ));
    }
    for (row, l) in layer_ids.iter().enumerate() {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">L{l}</text>",
            left - 4.0,
            top + ch * (row as f64 + 0.75)
        ));
    }
    for e in cells {
        let l = e.hook.layer().unwrap_or(0);
        let v = e.mean.clamp(-1.0, 1.0);
        // Blue for restoring effects, red for reversing ones, white for none.
        let (r, g, b) = if v >= 0.0 {
            (255.0 * (1.0 - v), 255.0 * (1.0 - 0.6 * v), 255.0)
        } else {
            (255.0, 255.0 * (1.0 + 0.6 * v), 255.0 * (1.0 + v))
        };
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{cw}\" height=\"{ch}\" fill=\"rgb({r:.0},{g:.0},{b:.0})\"><title>{}</title></rect>",
            left + cw * e.position as f64,
            top + ch * row_of(l) as f64,
            escape(&format!("{} @ {}: {:.3} {}", e.hook, e.position, e.mean, interval(e.ci_low, e.ci_high)))
        ));
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// The section's HTML.
pub(crate) fn section_html(f: &PatchingFinding) -> String {
    let mut out = String::from("<h2>Activation patching</h2>\n");
    if let Some(line) = headline(f) {
        out.push_str(&format!("<p>{}</p>\n", crate::markup::inline(&line)));
    }
    let mut suffixes: Vec<String> = f
        .effects
        .iter()
        .filter(|e| e.head.is_none())
        .filter_map(|e| {
            e.hook
                .to_string()
                .split_once('.')
                .and_then(|(_, r)| r.split_once('.'))
                .map(|(_, s)| s.to_owned())
        })
        .collect();
    suffixes.sort();
    suffixes.dedup();
    for s in &suffixes {
        if let Some(svg) = heatmap(f, s) {
            out.push_str(&format!(
                "<figure>{svg}<figcaption>Mean normalised effect of patching <code>{}</code> by layer and position (blue restores the clean answer, red pushes away; tokens of pair 0).</figcaption></figure>\n",
                escape(s)
            ));
        }
    }
    let atp: Vec<(f64, f64)> = f
        .effects
        .iter()
        .filter_map(|e| e.atp.map(|a| (e.mean, a)))
        .collect();
    if let Some(svg) = crate::atp_svg::scatter(&atp) {
        out.push_str(&format!(
            "<figure>{svg}<figcaption>Attribution patching's estimate against the exact patching effect, one point per hook, position and head (mean normalised effect over the pairs; the diagonal is perfect agreement; Spearman ρ = {}).</figcaption></figure>\n",
            f.atp_spearman.map_or("–".to_owned(), |r| format!("{r:.3}"))
        ));
    }
    out.push_str("<table><thead><tr><th>hook</th><th>position</th><th>head</th><th>mean effect [95% CI]</th><th>pairs</th></tr></thead><tbody>\n");
    for e in f.effects.iter().take(15) {
        out.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{:.3} {}</td><td>{}</td></tr>\n",
            escape(&e.hook.to_string()),
            e.position,
            e.head.map_or("–".to_owned(), |h| h.to_string()),
            e.mean,
            interval(e.ci_low, e.ci_high),
            e.n
        ));
    }
    out.push_str("</tbody></table>\n");
    if !f.ablation.is_empty() {
        out.push_str("<h3>Ablation</h3>\n<p class=\"note\">Each unit replaced on the clean prompts (zeros, its mean over the pairs, or another pair's activation); the change of the metric and of the mean next-token cross-entropy, mean over pairs with a bootstrap 95% interval; largest |change| first.</p>\n<table><thead><tr><th>hook</th><th>unit</th><th>ablation</th><th>metric change [95% CI]</th><th>loss change (nats)</th><th>pairs</th></tr></thead><tbody>\n");
        for a in f.ablation.iter().take(15) {
            out.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{:+.3} [{:.3}, {:.3}]</td><td>{}</td><td>{}</td></tr>\n",
                escape(&a.hook.to_string()),
                escape(a.unit.as_deref().unwrap_or("all")),
                escape(&a.ablation),
                a.delta,
                a.ci_low,
                a.ci_high,
                a.loss_delta.map_or("–".to_owned(), |l| format!("{l:+.3}")),
                a.n
            ));
        }
        out.push_str("</tbody></table>\n");
    }
    if !f.dla.is_empty() {
        let changes: Vec<(String, f64)> = f
            .dla
            .iter()
            .take(12)
            .map(|d| (d.component.clone(), d.clean - d.corrupted))
            .collect();
        out.push_str("<h3>Direct logit attribution</h3>\n");
        if let Some(svg) = crate::atp_svg::bars(&changes) {
            out.push_str(&format!(
                "<figure>{svg}<figcaption>Direct logit attribution: each component's clean − corrupted change of its contribution to logit(answer) − logit(wrong), mean over pairs (the twelve largest).</figcaption></figure>\n"
            ));
        }
        out.push_str("<p class=\"note\">Each component's contribution to logit(answer) − logit(wrong) at the last position, read through the final norm with its scale frozen (components sum to the logit difference; `blocks.L.attn.head.H` and `blocks.L.attn.bias` rows break their block's attention output down); mean over pairs, largest clean − corrupted change first.</p>\n<table><thead><tr><th>component</th><th>clean</th><th>corrupted</th><th>change</th></tr></thead><tbody>\n");
        for d in f.dla.iter().take(12) {
            out.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{:.3}</td><td>{:.3}</td><td>{:+.3}</td></tr>\n",
                escape(&d.component),
                d.clean,
                d.corrupted,
                d.clean - d.corrupted
            ));
        }
        out.push_str("</tbody></table>\n");
    }
    if !f.lens.is_empty() {
        out.push_str("<h3>Logit lens</h3>\n<table><thead><tr><th>block</th><th>P(answer) clean</th><th>P(answer) corrupted</th><th>logit diff clean</th><th>logit diff corrupted</th></tr></thead><tbody>\n");
        for l in &f.lens {
            out.push_str(&format!(
                "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>\n",
                l.layer,
                l.clean_answer_prob,
                l.corrupted_answer_prob,
                l.clean_logit_diff,
                l.corrupted_logit_diff
            ));
        }
        out.push_str("</tbody></table>\n");
    }
    out
}

/// `[low, high]`, or `[–]` where one pair left no spread to estimate (the bounds are NaN).
fn interval(low: f64, high: f64) -> String {
    if low.is_finite() && high.is_finite() {
        format!("[{low:.3}, {high:.3}]")
    } else {
        "[–]".to_owned()
    }
}
