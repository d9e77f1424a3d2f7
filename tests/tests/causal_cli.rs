//! `glassbox causal` end to end on the committed tiny GPT-2: extract → probe → causal → report.
//! Every finding gets tests with a verdict; the tables read back with pyarrow (an independent
//! reader) with effects, the random baseline and Holm-adjusted p-values that agree with their
//! definitions; the same seed gives the same numbers; the report carries the verdicts and
//! its summary.json validates against the schema.

use glassbox_concepts::causal::{read_tests, Verdict};
use glassbox_tests::*;
use std::path::Path;

fn run_cli(args: &[&str], run: &Path) -> std::process::Output {
    glassbox()
        .args(args)
        .arg("--run")
        .arg(run)
        .output()
        .unwrap()
}

#[test]
fn causal_tests_every_finding_and_the_report_shows_the_verdicts() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_gpt2_run(&run, false, Some("topic"));
    let args = ["causal", "--examples", "24", "--json"];
    let out = run_cli(&args, &run);
    assert_success(&out, "causal");
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tests = done["tests"].as_u64().unwrap();
    // One steering test per topic class (4) and one erasure of the probe at its best hook.
    assert_eq!(tests, 5, "{done}");
    let rows = read_tests(&run.join("causal")).unwrap();
    assert_eq!(rows.len(), 5);
    for r in &rows {
        assert!(r.finding.starts_with("probe topic (sequence) at "), "{r:?}");
        assert!(
            r.verdict != Verdict::NotTestable || !r.reason.is_empty(),
            "a test that cannot run says why: {r:?}"
        );
    }
    // Same seed, same numbers.
    let again = run_cli(&["causal", "--examples", "24", "--force"], &run);
    assert_success(&again, "causal --force");
    assert_eq!(read_tests(&run.join("causal")).unwrap(), rows);
    // Up to date without --force.
    let up = run_cli(&["causal", "--examples", "24"], &run);
    assert_success(&up, "causal again");
    assert!(String::from_utf8_lossy(&up.stderr).contains("up to date"));

    let out = run_cli(&["report"], &run);
    assert_success(&out, "report");
    let md = std::fs::read_to_string(run.join("report/summary.md")).unwrap();
    assert!(md.contains("## Causal tests"), "{md}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["causal"]["tests"].as_array().unwrap().len(), 5);
    assert!(run.join("report/tables/causal_tests.parquet").exists());

    let Some(python) = python_or_skip(
        "causal_tests_every_finding_and_the_report_shows_the_verdicts",
        "jsonschema",
    ) else {
        return;
    };
    let valid = validate_json_schema(
        &python,
        &run.join("report/summary.schema.json"),
        &run.join("report/summary.json"),
    );
    assert_success(&valid, "summary.json against its schema");
    let script = r#"
import sys, math, pyarrow.parquet as pq
d = sys.argv[1]
tests = pq.read_table(d + "/tests.parquet").to_pylist()
curves = pq.read_table(d + "/curves.parquet").to_pylist()
ran = [t for t in tests if t["p"] is not None and not math.isnan(t["p"])]
m = len(ran)
# Holm: the i-th smallest p times (m - i), made monotone, capped at 1.
ordered = sorted(ran, key=lambda t: t["p"])
running = 0.0
for i, t in enumerate(ordered):
    running = max(running, min(1.0, (m - i) * t["p"]))
    assert abs(t["p_holm"] - running) < 1e-12, (t, running)
for t in tests:
    assert t["verdict"] in ("causally supported", "not supported", "not testable"), t
    if t["test"] == "erase (LEACE)":
        assert t["accuracy_after"] is not None and t["chance"] is not None, t
    else:
        assert t["accuracy_after"] is None, t
        points = [c for c in curves if c["finding"] == t["finding"] and c["test"] == t["test"]]
        alphas = sorted(c["alpha"] for c in points)
        assert alphas == [-0.5, -0.25, 0.25, 0.5], alphas
        # The effect is the dose-response slope of the per-α means.
        slope = sum(c["alpha"] * c["effect"] for c in points) / sum(c["alpha"] ** 2 for c in points)
        assert abs(slope - t["effect"]) < 1e-9 * (1 + abs(slope)), (slope, t["effect"])
    if t["verdict"] == "causally supported":
        assert t["p_holm"] < 0.05
print("ok", len(tests))
"#;
    pyarrow_check(
        "causal_tests_every_finding_and_the_report_shows_the_verdicts",
        script,
        &[&run.join("causal")],
    );
}

#[test]
fn causal_refuses_a_run_without_probes_and_leaves_it_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_gpt2_run(&run, false, None);
    let before = std::fs::read(run.join("manifest.json")).unwrap();
    let out = run_cli(&["causal"], &run);
    assert_bad_input(&out, &["`probe`"]);
    assert_eq!(std::fs::read(run.join("manifest.json")).unwrap(), before);
    assert!(!run.join("causal").exists());
}

/// The tiny random ResNet over 12 generated textures of each of three classes, extracted at
/// `hooks` and probed for the texture label; returns the run folder.
fn probed_texture_run(tmp: &Path, hooks: &str) -> std::path::PathBuf {
    let images = tmp.join("images");
    let out = glassbox()
        .args(["textures", "--out"])
        .arg(&images)
        .args(["--kinds", "stripes,dots,checkerboard", "--per-class", "12"])
        .args(["--size", "64", "--seed", "0"])
        .output()
        .unwrap();
    assert_success(&out, "textures");
    let run = tmp.join("run");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(workspace_root().join("tests/fixtures/tiny_resnet"))
        .arg("--data")
        .arg(&images)
        .args(["--hooks", hooks, "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "extract (images)");
    let out = run_cli(&["probe", "--label", "label", "--bootstrap", "50"], &run);
    assert_success(&out, "probe (images)");
    run
}

#[test]
fn causal_tests_probes_of_a_vision_model() {
    // Probes of the texture label at the CNN's stages, steered and erased on cells (positions
    // are feature-map cells).
    let tmp = tempfile::tempdir().unwrap();
    let run = probed_texture_run(tmp.path(), "hook_stem,stages.*.hook_out,hook_pooled");
    let out = run_cli(&["causal", "--examples", "24", "--json"], &run);
    assert_success(&out, "causal (images)");
    let rows = read_tests(&run.join("causal")).unwrap();
    let classes = ["checkerboard", "dots", "stripes"];
    for class in classes {
        assert!(
            rows.iter()
                .any(|r| r.test == format!("steer along class {class}")),
            "a steering test per class: {rows:?}"
        );
    }
    let erase = rows.iter().find(|r| r.test == "erase (LEACE)").unwrap();
    assert!(
        erase.accuracy_after.is_some() && erase.chance.is_some(),
        "{erase:?}"
    );
    for r in &rows {
        assert!(
            r.verdict != Verdict::NotTestable || !r.reason.is_empty(),
            "{r:?}"
        );
        // A classifier always has its class distribution to read.
        assert!(!r.reason.contains("no output distribution"), "{r:?}");
    }
}

/// A probe at the classifier's last hook has no later probe to read: its tests read the KL of
/// the model's class distribution instead (they were not testable).
#[test]
fn a_classifier_without_a_later_probe_reads_its_class_distribution() {
    let tmp = tempfile::tempdir().unwrap();
    let run = probed_texture_run(tmp.path(), "hook_pooled");
    let out = run_cli(&["causal", "--examples", "24"], &run);
    assert_success(&out, "causal (images, one hook)");
    let rows = read_tests(&run.join("causal")).unwrap();
    assert!(!rows.is_empty());
    for r in &rows {
        assert_eq!(r.readout, "KL of the class distribution (nats)", "{r:?}");
        assert!(r.verdict != Verdict::NotTestable, "{r:?}");
    }
}

#[test]
fn a_token_level_probe_of_a_decoder_is_erased_at_every_token() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_gpt2_run(&run, true, None);
    let out = run_cli(
        &[
            "probe",
            "--token-label",
            "@word_class",
            "--bootstrap",
            "50",
            "--no-neurons",
        ],
        &run,
    );
    assert_success(&out, "probe (token level)");
    let out = run_cli(&["causal", "--examples", "24", "--json"], &run);
    assert_success(&out, "causal (token level)");
    let rows = read_tests(&run.join("causal")).unwrap();
    let erase = rows
        .iter()
        .find(|r| r.test == "erase (LEACE)")
        .unwrap_or_else(|| panic!("the token-level finding has its erasure test: {rows:?}"));
    assert!(erase.finding.contains("(token)"), "{erase:?}");
    // Measured (not listed as untestable for being token-level): the refit before erasure is
    // the token-level probe at that hook, on its own rows and split by text.
    let probes = glassbox_probes::read_results(&glassbox_data::RunDir::new(&run)).unwrap();
    let probe = probes
        .iter()
        .find(|p| p.label == "@word_class" && p.hook == erase.hook)
        .unwrap();
    assert_eq!(erase.accuracy_before, Some(probe.score), "{erase:?}");
    assert!(
        erase.accuracy_after.is_some() && erase.chance.is_some(),
        "{erase:?}"
    );
    // The later block's token-level probe reads each token's own class; at the last block a
    // causal LM reads its next-token KL instead.
    assert!(
        erase.readout.contains("each token's true @word_class")
            || erase.readout.contains("KL of the next-token"),
        "{erase:?}"
    );
    assert!(
        erase.examples > 0 || erase.verdict == Verdict::NotTestable,
        "{erase:?}"
    );
}
