//! Text from data sets, labels and concept files is escaped everywhere in the report: a data
//! set built from script and markup payloads renders inert.

use glassbox_tests::*;

const PAYLOADS: [&str; 3] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(2)>",
    "</style><b>bold</b>",
];

#[test]
fn payloads_in_texts_labels_and_concepts_render_inert() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(model) = local_minilm(tmp.path()) else {
        return;
    };
    // Texts, class names, the label column's name and a concept file name carry the payloads.
    let rows: String = (0..30)
        .map(|i| {
            serde_json::json!({
                "text": format!("{} sentence {i} {}", PAYLOADS[i % 3], if i % 2 == 0 { "cats purr" } else { "markets fell" }),
                PAYLOADS[1]: PAYLOADS[i % 2],
            })
            .to_string()
                + "\n"
        })
        .collect();
    let data = tmp.path().join("d.jsonl");
    std::fs::write(&data, rows).unwrap();
    let run = tmp.path().join("run");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .args(["--hooks", "blocks.*.hook_resid_post", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "extract");
    let out = glassbox()
        .args(["probe", "--label", PAYLOADS[1], "--no-neurons", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "probe");
    let concept = tmp.path().join("<script>x.jsonl");
    std::fs::write(
        &concept,
        (0..12)
            .map(|i| format!("{{\"text\":\"<img src=y onerror=alert(3)> dog {i}\"}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let target = format!("probe:{}={}", PAYLOADS[1], PAYLOADS[0]);
    let out = glassbox()
        .args(["gradients", "--run"])
        .arg(&run)
        .args(["--target", &target, "--hooks", "blocks.1.hook_resid_post"])
        .output()
        .unwrap();
    assert_success(&out, "gradients");
    let out = glassbox()
        .args(["tcav", "--run"])
        .arg(&run)
        .arg("--concepts")
        .arg(&concept)
        .args([
            "--target",
            &target,
            "--hooks",
            "blocks.1.hook_resid_post",
            "--random-runs",
            "3",
        ])
        .output()
        .unwrap();
    assert_success(&out, "tcav");
    // Dictionary features and neurons: their examples' tokens and the classes they correlate
    // with carry the payloads into the drill-down pages.
    let out = glassbox()
        .args(["dictionary", "--run"])
        .arg(&run)
        .args([
            "--hook",
            "blocks.1.hook_resid_post",
            "--neurons",
            "blocks.1.hook_resid_post",
            "--width",
            "32",
            "--k",
            "4",
            "--train-tokens",
            "20000",
            "--batch-size",
            "64",
        ])
        .output()
        .unwrap();
    assert_success(&out, "dictionary");
    let out = glassbox()
        .args(["report", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "report");

    let html = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    // The payloads made it into the report — escaped.
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the class name is shown escaped"
    );
    assert!(
        html.contains("&lt;script&gt;x"),
        "the concept name is shown escaped"
    );
    assert!(
        html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"),
        "the label name is shown escaped"
    );
    // Nothing executable or structural came through.
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "no script element");
    assert!(!lower.contains("<img"), "no injected element");
    assert!(!lower.contains("<b>bold"), "no injected markup");
    assert_eq!(
        lower.matches("</style>").count(),
        1,
        "only the page's own style element closes"
    );
    // The drill-down pages: tokens such as `<` and `script` from the texts and the payload class
    // names of the label correlations, all escaped.
    let pages = run.join("report/units/blocks.1.hook_resid_post");
    let mut seen = 0;
    for entry in std::fs::read_dir(&pages).unwrap() {
        let page = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let lower = page.to_lowercase();
        assert!(
            !lower.contains("<script") && !lower.contains("<img") && !lower.contains("<b>bold")
        );
        assert_eq!(
            lower.matches("</style>").count(),
            1,
            "only the page's own style closes"
        );
        seen += usize::from(page.contains("&lt;") && page.contains("&quot;&gt;&lt;img"));
    }
    assert!(seen > 0, "the payloads reach the pages (escaped)");
    let md = std::fs::read_to_string(run.join("report/summary.md")).unwrap();
    assert!(
        md.contains("alert(1)"),
        "the Markdown keeps the text (it is not HTML)"
    );
}
