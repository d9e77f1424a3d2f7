//! `glassbox probe --split-by`: a data set's own `split` column reaches the probes through
//! extraction (`--split-by data`), and the split each probe used is what the results say — read
//! back with pyarrow, independently of glassbox.

use glassbox_tests::*;
use std::path::Path;

/// The default data set with a `split` column: every fifth text `test`, the rest `train`.
fn data_with_splits(dir: &Path) -> std::path::PathBuf {
    let source = std::fs::read_to_string(workspace_root().join("data/sets/default.jsonl")).unwrap();
    let mut out = String::new();
    for (i, line) in source.lines().enumerate() {
        let split = if i % 5 == 4 { "test" } else { "train" };
        let body = line
            .trim_end()
            .strip_suffix('}')
            .expect("a JSON object per line");
        out.push_str(&format!("{body}, \"split\": \"{split}\"}}\n"));
    }
    let path = dir.join("with_splits.jsonl");
    std::fs::write(&path, out).unwrap();
    path
}

/// Extracts blocks.1.hook_resid_post of the tiny GPT-2 over `data` into `run`.
fn extract(data: &Path, run: &Path, token_level: bool) {
    let out = glassbox()
        .args(["extract", "--quiet", "--model"])
        .arg(workspace_root().join("tests/fixtures/tiny_gpt2"))
        .arg("--data")
        .arg(data)
        .args(["--hooks", "blocks.1.hook_resid_post", "--max-length", "32"])
        .args(if token_level {
            &[][..]
        } else {
            &["--no-token-level"][..]
        })
        .arg("--run")
        .arg(run)
        .output()
        .unwrap();
    assert_success(&out, "extract");
}

fn probe(run: &Path, extra: &[&str]) -> std::process::Output {
    glassbox()
        .args([
            "probe",
            "--force",
            "--no-neurons",
            "--bootstrap",
            "100",
            "--run",
        ])
        .arg(run)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn the_data_split_column_decides_the_probe_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    extract(&data_with_splits(tmp.path()), &run, true);

    assert_success(
        &probe(&run, &["--label", "topic", "--split-by", "data"]),
        "probe --split-by data",
    );
    // 300 texts: 60 test; 240 train, of which 20 % (12 of each topic's 60) validate.
    let script = r#"
import sys, pyarrow.parquet as pq
run = sys.argv[1]
ex = pq.read_table(run + "/examples.parquet").to_pylist()
assert sum(r["split"] == "test" for r in ex) == 60
rows = pq.read_table(run + "/probes/results.parquet").to_pylist()
assert len(rows) == 1, rows
r = rows[0]
assert r["label"] == "topic" and r["n_test"] == 60 and r["n_classes"] == 4, r
assert r["split_by"] == "data", r
assert (r["n_train"], r["n_validation"]) == (192, 48), r
"#;
    pyarrow_check("probe_split_by_data", script, &[&run]);
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("split_by = \"data\""), "{config}");

    // Token level, texts kept whole: every test token comes from a data `test` text, so the
    // test part holds exactly those texts' labelled tokens.
    assert_success(
        &probe(
            &run,
            &["--token-label", "@is_capitalised", "--split-by", "data"],
        ),
        "probe --split-by data, token level",
    );
    let script = r#"
import sys, pyarrow.parquet as pq
run = sys.argv[1]
test_texts = {r["example_id"]: r["text"].encode() for r in pq.read_table(run + "/examples.parquet").to_pylist() if r["split"] == "test"}
tokens = pq.read_table(run + "/tokens.parquet").to_pylist()
# @is_capitalised labels every token inside a word; a token spanning only a space has none.
n_test_tokens = sum(
    1 for t in tokens
    if t["example_id"] in test_texts and test_texts[t["example_id"]][t["start"]:t["end"]].strip()
)
r = pq.read_table(run + "/probes/results.parquet").to_pylist()[0]
assert r["level"] == "token" and r["n_test"] == n_test_tokens, (r, n_test_tokens)
"#;
    pyarrow_check("probe_split_by_data_tokens", script, &[&run]);
}

#[test]
fn a_data_set_without_a_split_column_is_refused_for_split_by_data() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    extract(
        &workspace_root().join("data/sets/default.jsonl"),
        &run,
        false,
    );
    let before = std::fs::read_to_string(run.join("manifest.json")).unwrap();
    assert_bad_input(
        &probe(&run, &["--label", "topic", "--split-by", "data"]),
        &["`all` (300 rows)", "--split-by text"],
    );
    assert!(
        !run.join("probes").exists(),
        "a refused probe writes nothing"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("manifest.json")).unwrap(),
        before
    );
}

#[test]
fn without_bootstrap_resamples_no_interval_is_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    extract(
        &workspace_root().join("data/sets/default.jsonl"),
        &run,
        false,
    );
    let out = glassbox()
        .args(["probe", "--label", "topic", "--bootstrap", "0", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "probe --bootstrap 0");
    let report = glassbox()
        .args(["report", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&report, "report");
    for (what, text) in [
        (
            "probe's table",
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ),
        (
            "report's stdout",
            String::from_utf8_lossy(&report.stdout).into_owned(),
        ),
        (
            "summary.md",
            std::fs::read_to_string(run.join("report/summary.md")).unwrap(),
        ),
        (
            "index.html",
            std::fs::read_to_string(run.join("report/index.html")).unwrap(),
        ),
    ] {
        assert!(!text.contains("NaN"), "{what}: {text}");
    }
    let md = std::fs::read_to_string(run.join("report/summary.md")).unwrap();
    assert!(md.contains("(no CI: bootstrap = 0)"), "{md}");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !table.contains("best in") && !table.contains("hold together"),
        "{table}"
    );
    // With resamples and several hooks the terminal table stands each hook against the best:
    // one "best in N%", an interval on every other hook's line, and the note saying what the
    // column is.
    let hooks = tmp.path().join("hooks");
    let out = glassbox()
        .args(["extract", "--quiet", "--no-token-level", "--model"])
        .arg(workspace_root().join("tests/fixtures/tiny_gpt2"))
        .arg("--data")
        .arg(workspace_root().join("data/sets/default.jsonl"))
        .args([
            "--hooks",
            "blocks.*.hook_resid_post",
            "--max-length",
            "32",
            "--run",
        ])
        .arg(&hooks)
        .output()
        .unwrap();
    assert_success(&out, "extract");
    let out = glassbox()
        .args(["probe", "--label", "topic", "--run"])
        .arg(&hooks)
        .output()
        .unwrap();
    assert_success(&out, "probe");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("topic")).collect();
    assert!(rows.len() > 1, "{table}");
    assert_eq!(
        rows.iter().filter(|l| l.contains("best in")).count(),
        1,
        "{table}"
    );
    assert!(
        rows.iter()
            .filter(|l| !l.contains("best in"))
            .all(|l| l.matches('[').count() == 2),
        "score and standing intervals: {table}"
    );
    assert!(table.contains("hold together over every pair"), "{table}");
}

#[test]
fn every_hook_is_compared_with_the_best_on_the_same_resamples() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_gpt2_run(&run, false, Some("topic"));
    // Read back independently: one best hook per label, its share and the others' leads.
    let script = r#"
import sys, math, pyarrow.parquet as pq
rows = pq.read_table(sys.argv[1] + "/probes/results.parquet").to_pylist()
assert len(rows) >= 2, rows
best = max(rows, key=lambda r: (r["score"], -r["depth"]))
assert abs(sum(r["best_share"] for r in rows) - 1) < 1e-9, rows
for r in rows:
    assert 0 <= r["best_share"] <= 1, r
    if r["hook"] == best["hook"]:
        assert r["vs_best_ci_low"] is None and r["vs_best_ci_high"] is None, r
    else:
        lo, hi = r["vs_best_ci_low"], r["vs_best_ci_high"]
        assert lo <= hi, r
        # The lead's interval brackets the lead on the whole test set.
        lead = best["score"] - r["score"]
        assert lo - 1e-9 <= lead <= hi + 1e-9, (r, lead)
"#;
    pyarrow_check("probe_hook_standing", script, &[&run]);
}
