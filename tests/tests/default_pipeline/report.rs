//! The report bundle of the default run: files, schema, and rendering in headless Chromium.

use super::default_run;
use glassbox_data::RunDir;
use glassbox_tests::*;

#[test]
fn probes_and_report_are_written() {
    let Some(dir) = default_run() else { return };
    let run = RunDir::new(dir);
    let results = glassbox_probes::read_results(&run).unwrap();
    assert_eq!(
        results.len(),
        21,
        "7 hooks × (2 sequence labels + 1 token label)"
    );
    for r in &results {
        assert!(
            r.ci_low <= r.score && r.score <= r.ci_high,
            "the CI brackets the estimate: {r:?}"
        );
        assert!((r.selectivity - (r.score - r.control_score)).abs() < 1e-12);
        assert!(r.mdl_compression.is_some(), "the default pipeline runs MDL");
    }
    for (label, level) in [
        ("topic", "sequence"),
        ("sentence_type", "sequence"),
        ("@word_class", "token"),
    ] {
        let rows: Vec<_> = results.iter().filter(|r| r.label == label).collect();
        assert!(
            rows.iter().all(|r| r.level == level),
            "{label} at {level} level"
        );
        let best = rows
            .iter()
            .map(|r| r.score - r.majority)
            .fold(f64::MIN, f64::max);
        // Four topics and three sentence types are balanced (majority ≈ 1/4 and 1/3); word
        // classes are dominated by nouns. A real encoder does far better than either.
        assert!(best > 0.4, "{label}: best score over majority only {best}");
        let selectivity = rows.iter().map(|r| r.selectivity).fold(f64::MIN, f64::max);
        assert!(
            selectivity > 0.15,
            "{label}: best selectivity only {selectivity}"
        );
        let compression = rows
            .iter()
            .filter_map(|r| r.mdl_compression)
            .fold(f64::MIN, f64::max);
        assert!(
            compression > 1.5,
            "{label}: MDL compression only {compression}"
        );
    }
    let topk = glassbox_probes::read_topk(&run).unwrap();
    assert_eq!(topk.len(), 21 * 4, "k = 1, 5, 20, 100 for every probe");
    for probe in ["probes/neurons.parquet", "probes/weights.safetensors"] {
        assert!(run.root().join(probe).exists(), "{probe}");
    }
    let html = std::fs::read_to_string(run.report_dir().join("index.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("sentence_type") && html.contains("selectivity")
    );
    assert!(html.contains("@word_class") && html.contains("token level"));
    assert!(!html.contains("<script"), "self-contained, no scripts");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.report_dir().join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["probes"].as_array().unwrap().len(), 3);
    let md = std::fs::read_to_string(run.report_dir().join("summary.md")).unwrap();
    assert!(md.contains("95% CI") && md.contains("control task"), "{md}");
    assert_eq!(summary["schema_version"], 5);
    for figure in [
        "probe-sequence-mean-topic.svg",
        "probe-token-token-_word_class.svg",
    ] {
        let svg = std::fs::read_to_string(run.report_dir().join("figures").join(figure)).unwrap();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{figure}"
        );
    }
}

#[test]
fn summary_json_validates_against_its_schema() {
    let Some(dir) = default_run() else { return };
    let Some(python) = python_or_skip("summary_json_validates_against_its_schema", "jsonschema")
    else {
        return;
    };
    let report = RunDir::new(dir).report_dir();
    let schema = report.join("summary.schema.json");
    let out = validate_json_schema(&python, &schema, &report.join("summary.json"));
    assert_success(&out, "jsonschema validation of summary.json");
    // The schema is strict enough to reject a wrong document.
    let mut bad: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
            .unwrap();
    bad["tcav"][0]["p_holm"] = serde_json::json!(1.5);
    let scratch = tempfile::tempdir().unwrap();
    let bad_path = scratch.path().join("summary-bad.json");
    std::fs::write(&bad_path, bad.to_string()).unwrap();
    let out = validate_json_schema(&python, &schema, &bad_path);
    assert!(!out.status.success(), "a p-value above 1 must not validate");
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(dir) = default_run() else { return };
    let chrome = match chromium() {
        Ok(c) => c,
        Err(why) => {
            skip("report_renders_in_headless_chromium", &why);
            return;
        }
    };
    // The console check can fail: a page that logs is caught.
    let probe_page = tempfile::tempdir().unwrap();
    let noisy = probe_page.path().join("noisy.html");
    std::fs::write(
        &noisy,
        "<html><body><script>console.error('noisy')</script></body></html>",
    )
    .unwrap();
    let (_, console) = headless_dom(&chrome, &noisy);
    assert!(
        console.iter().any(|l| l.contains("noisy")),
        "console capture works: {console:?}"
    );

    let report = RunDir::new(dir).report_dir();
    let index = report.join("index.html");
    let (dom, console) = headless_dom(&chrome, &index);
    assert!(
        console.is_empty(),
        "console output from the report: {console:?}"
    );
    for (what, needle) in [
        ("findings", "<section id=\"findings\">"),
        ("a ranked finding", "<ol class=\"findings\">\n<li>"),
        ("a probe plot", "<svg"),
        ("the TCAV section", "<section id=\"tcav\">"),
        ("the dictionary section", "<section id=\"dictionary\">"),
        (
            "links to feature pages",
            "units/blocks.3.hook_resid_post/features-000.html",
        ),
        (
            "links to neuron pages",
            "units/blocks.3.hook_resid_post/neurons-000.html",
        ),
        ("provenance", "<section id=\"provenance\""),
    ] {
        assert!(
            dom.contains(needle),
            "the rendered DOM lacks {what} ({needle})"
        );
    }
    assert!(!dom.contains("<script"), "no scripts");
    assert!(
        !dom.contains(" src="),
        "nothing to load: everything is inline"
    );
    // A feature page: the first feature with highlighted examples.
    let page = report.join("units/blocks.3.hook_resid_post/features-000.html");
    let (page_dom, console) = headless_dom(&chrome, &page);
    assert!(
        console.is_empty(),
        "console output from a feature page: {console:?}"
    );
    assert!(page_dom.contains("id=\"feature-0\"") && page_dom.contains("class=\"snippet\""));
    assert!(page_dom.contains("Samples by activation quantile"));
    // Screenshot kept as a test artefact (not committed).
    let artefacts = workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let shot = artefacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let out = std::process::Command::new(&chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,2400",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", index.display()))
        .output()
        .unwrap();
    assert_success(&out, "chromium screenshot");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
}
