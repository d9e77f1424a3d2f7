//! `report/summary.md`: the findings and key tables for a terminal or a pull request, built
//! over the Markdown primitives of `md`.

use crate::md;
use crate::{
    neuron_sentence, probe_table_header, probe_table_row, tcav_findings, tcav_row, Summary,
    DEFINITIONS, TCAV_DEFINITIONS, TCAV_HEADER,
};

pub(crate) fn markdown(s: &Summary) -> String {
    let mut md = String::from("# glassbox report\n\n");
    if let Some(m) = &s.manifest.model {
        md.push_str(&format!(
            "Model: {} at revision {} ({}).\n\n",
            md::code(&m.id),
            md::code(&m.revision),
            m.family
        ));
    }
    if let Some(d) = &s.manifest.data {
        md.push_str(&format!(
            "Data: {} (sha256 {}), {} examples, {} tokens.\n\n",
            md::code(&d.path),
            md::code(&d.sha256),
            d.n_examples,
            d.n_tokens
        ));
    }
    md.push_str("## Linear probes\n\n");
    if s.probes.is_empty() {
        md.push_str(&format!("{}\n", crate::NO_PROBES));
    }
    for f in &s.probes {
        md.push_str(&format!("- {}\n", crate::probe_line(f, s)));
    }
    for f in &s.probes {
        md.push_str(&format!("\n### {} ({})\n\n", md::code(&f.label), f.level));
        md.push_str(&format!(
            "| {} |\n",
            probe_table_header(&f.metric).join(" | ")
        ));
        md.push_str(&format!("|{}\n", "---|".repeat(9)));
        for r in &f.by_hook {
            let mut cells = probe_table_row(r);
            cells[0] = md::code(&cells[0]);
            md.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        if let Some(line) = neuron_sentence(f) {
            md.push_str(&format!("\n{line}\n"));
        }
    }
    if !s.probes.is_empty() {
        md.push_str(&format!("\n{DEFINITIONS}\n"));
    }
    if !s.tcav.is_empty() {
        md.push_str("\n## TCAV\n\n");
        for line in tcav_findings(&s.tcav, s.causal.as_ref()) {
            md.push_str(&format!("- {line}\n"));
        }
        md.push_str(&format!(
            "\n| {} |\n|{}\n",
            TCAV_HEADER.join(" | "),
            "---|".repeat(TCAV_HEADER.len())
        ));
        for r in &s.tcav {
            let mut cells = tcav_row(r);
            for cell in &mut cells[..3] {
                *cell = md::code(cell);
            }
            md.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        md.push_str(&format!("\n{TCAV_DEFINITIONS}\n"));
    }
    md.push_str(&crate::dictionary_render::markdown(&s.dictionary));
    if let Some(line) = s.patching.as_ref().and_then(crate::patching::headline) {
        md.push_str(&format!("\n## Activation patching\n\n- {line}\n"));
    }
    if let Some(c) = &s.causal {
        md.push_str(&crate::causal::markdown(c));
    }
    md
}
