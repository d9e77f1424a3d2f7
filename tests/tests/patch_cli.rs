//! `glassbox patch` end to end on the committed tiny GPT-2: the tables read back by pyarrow (an
//! independent reader) with one row per pair × hook × position × head, and bad pairs refused
//! before anything is written (exit 2, the row or column named, the run unchanged).

use glassbox_tests::*;
use std::path::Path;

fn patch(run: &Path, pairs: &Path, extra: &[&str]) -> std::process::Output {
    glassbox()
        .args(["patch", "--model"])
        .arg(workspace_root().join("tests/fixtures/tiny_gpt2"))
        .arg("--pairs")
        .arg(pairs)
        .arg("--run")
        .arg(run)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn patch_writes_tables_an_independent_reader_agrees_with() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let pairs = workspace_root().join("tests/fixtures/patching/pairs.jsonl");
    let out = patch(
        &run,
        &pairs,
        &[
            "--hooks",
            "blocks.*.hook_resid_pre,blocks.0.attn.hook_z",
            "--heads",
            "--json",
        ],
    );
    assert_success(&out, "patch");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["pairs"], 3);
    let rho = summary["atp_spearman"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&rho), "{rho}");
    // Up to date: same command, nothing new.
    let again = patch(
        &run,
        &pairs,
        &[
            "--hooks",
            "blocks.*.hook_resid_pre,blocks.0.attn.hook_z",
            "--heads",
            "--json",
        ],
    );
    assert_success(&again, "patch again");
    assert!(String::from_utf8_lossy(&again.stderr).contains("up to date"));

    let script = r#"
import sys, json, pyarrow.parquet as pq
d = sys.argv[1]
res = pq.read_table(d + "/results.parquet").to_pylist()
pairs = pq.read_table(d + "/pairs.parquet").to_pylist()
expect = 0
for p in pairs:
    t = len(p["clean_tokens"])
    assert t == len(p["corrupted_tokens"])
    expect += 2 * t + 4 * t  # two residual hooks by position, hook_z by position x 4 heads
assert len(res) == expect, (len(res), expect)
for r in res:
    gap = r["metric_clean"] - r["metric_corrupted"]
    assert abs(r["normalized"] - (r["metric"] - r["metric_corrupted"]) / gap) < 1e-9
    assert (r["head"] is None) == (r["hook"] != "blocks.0.attn.hook_z")
    assert r["layer"] == int(r["hook"].split(".")[1])
    assert r["atp_metric"] is not None
# Patching the first block's input at every position with the clean run's makes the corrupted
# run the clean run, position by position: where the prompts agree, the patch changes nothing.
for p in pairs:
    same = [i for i, (a, b) in enumerate(zip(p["clean_tokens"], p["corrupted_tokens"])) if a == b]
    for r in res:
        if r["pair"] == p["pair"] and r["hook"] == "blocks.0.hook_resid_pre" and r["position"] in same:
            assert abs(r["normalized"]) < 1e-4, r
lens = pq.read_table(d + "/logit_lens.parquet").to_pylist()
assert len(lens) == len(pairs) * 2 * 2, len(lens)  # clean and corrupted x two blocks
assert all(r["answer_rank"] >= 1 for r in lens)
dla = pq.read_table(d + "/dla.parquet").to_pylist()
for p in pairs:
    for run, metric in (("clean", p["metric_clean"]), ("corrupted", p["metric_corrupted"])):
        parts = [r["contribution"] for r in dla if r["pair"] == p["pair"] and r["run"] == run and r["part_of"] is None]
        scale = max(1.0, sum(abs(c) for c in parts))
        assert abs(sum(parts) - metric) <= 1e-4 * scale, (run, sum(parts), metric)
        # Each block's heads and output bias break its attention output down.
        for layer in (0, 1):
            whole = [r["contribution"] for r in dla if r["pair"] == p["pair"] and r["run"] == run and r["component"] == f"blocks.{layer}.hook_attn_out"]
            parts = [r for r in dla if r["pair"] == p["pair"] and r["run"] == run and r["part_of"] == f"blocks.{layer}.hook_attn_out"]
            assert sorted(r["head"] for r in parts if r["head"] is not None) == [0, 1, 2, 3], parts
            assert abs(sum(r["contribution"] for r in parts) - whole[0]) <= 1e-4 * (1 + abs(whole[0])), (whole, parts)
print(len(res))
"#;
    pyarrow_check(
        "patch_writes_tables_an_independent_reader_agrees_with",
        script,
        &[&run.join("patching")],
    );
}

#[test]
fn bad_pairs_and_hooks_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let write = |name: &str, body: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let no_wrong = write(
        "no_wrong.jsonl",
        "{\"clean\": \"a b\", \"corrupted\": \"a c\", \"answer\": \" the\"}\n",
    );
    assert_bad_input(&patch(&run, &no_wrong, &[]), &["`wrong`", "missing"]);
    let unequal = write(
        "unequal.jsonl",
        "{\"clean\": \"the chef roasted the vegetables\", \"corrupted\": \"the chef\", \"answer\": \" the\", \"wrong\": \" a\"}\n",
    );
    assert_bad_input(&patch(&run, &unequal, &[]), &["row 1", "same length"]);
    let long = write(
        "long.jsonl",
        "{\"clean\": \"a b\", \"corrupted\": \"a c\", \"answer\": \" vegetables roasted\", \"wrong\": \" a\"}\n",
    );
    assert_bad_input(
        &patch(&run, &long, &[]),
        &["row 1", "answer", "exactly one"],
    );
    let same_prompts = write(
        "same_prompts.jsonl",
        "{\"clean\": \"the chef roasted\", \"corrupted\": \"the chef roasted\", \"answer\": \" the\", \"wrong\": \" a\"}\n",
    );
    assert_bad_input(
        &patch(&run, &same_prompts, &[]),
        &["row 1", "same tokens", "corrupted"],
    );
    let empty = write(
        "empty.jsonl",
        "{\"clean\": \"\", \"corrupted\": \"\", \"answer\": \" the\", \"wrong\": \" a\"}\n",
    );
    assert_bad_input(&patch(&run, &empty, &[]), &["row 1", "empty"]);
    let same_answer = write(
        "same_answer.jsonl",
        "{\"clean\": \"a b\", \"corrupted\": \"a c\", \"answer\": \" the\", \"wrong\": \" the\"}\n",
    );
    assert_bad_input(
        &patch(&run, &same_answer, &[]),
        &["row 1", "same token", "--metric prob"],
    );
    let pairs = workspace_root().join("tests/fixtures/patching/pairs.jsonl");
    assert_bad_input(
        &patch(&run, &pairs, &["--hooks", "logits"]),
        &["`logits` cannot be patched"],
    );
    assert_bad_input(
        &patch(&run, &pairs, &["--positions", "40"]),
        &["position 40"],
    );
    assert_bad_input(
        &patch(&run, &pairs, &["--batch-size", "0"]),
        &["batch_size = 0"],
    );
    let left: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".glassbox.lock")
        .collect();
    assert!(
        left.is_empty(),
        "refused runs leave nothing behind: {left:?}"
    );
}

#[test]
fn the_report_shows_patching_next_to_the_probes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_gpt2_run(&run, true, Some("topic"));
    let pairs = workspace_root().join("tests/fixtures/patching/pairs.jsonl");
    // No --model: the run's model.
    let out = glassbox()
        .args(["patch", "--hooks", "blocks.*.hook_resid_pre", "--pairs"])
        .arg(&pairs)
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "patch");
    let out = glassbox()
        .args(["report", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "report");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("patching blocks."), "{stdout}");
    let html = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    assert!(html.contains("<h2>Activation patching</h2>") && html.contains("Logit lens"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report/summary.json")).unwrap())
            .unwrap();
    let effects = summary["patching"]["effects"].as_array().unwrap();
    assert!(!effects.is_empty());
    assert_eq!(summary["patching"]["pairs"], 3);
    let Some(python) = python_or_skip("the_report_shows_patching_next_to_the_probes", "jsonschema")
    else {
        return;
    };
    let out = validate_json_schema(
        &python,
        &run.join("report/summary.schema.json"),
        &run.join("report/summary.json"),
    );
    assert_success(&out, "summary.json against its schema");
}

#[test]
fn ablation_writes_one_row_per_head_with_an_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let pairs = workspace_root().join("tests/fixtures/patching/pairs.jsonl");
    let out = patch(
        &run,
        &pairs,
        &[
            "--hooks",
            "blocks.0.attn.hook_z",
            "--heads",
            "--positions",
            "last",
            "--no-atp",
            "--ablate",
            "mean",
            "--seed",
            "7",
        ],
    );
    assert_success(&out, "patch --ablate mean");
    let script = r#"
import sys, pyarrow.parquet as pq
rows = pq.read_table(sys.argv[1] + "/ablation.parquet").to_pylist()
assert sorted(r["head"] for r in rows) == [0, 1, 2, 3], rows
for r in rows:
    assert r["ablation"] == "mean" and r["n"] == 3 and r["layer"] == 0
    assert r["ci_low"] <= r["delta"] <= r["ci_high"], r
"#;
    pyarrow_check(
        "ablation_writes_one_row_per_head_with_an_interval",
        script,
        &[&run.join("patching")],
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["stages"]["patch"]["seed"], 7,
        "the bootstrap seed is recorded"
    );
}

#[test]
fn resample_ablation_of_neurons_from_an_identical_prompt_changes_nothing() {
    // Two copies of one pair (each the other's resample partner: the same activations, so no
    // change at all) and a pair of another length (no partner: left out, n = 2).
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let fixture =
        std::fs::read_to_string(workspace_root().join("tests/fixtures/patching/pairs.jsonl"))
            .unwrap();
    let lines: Vec<&str> = fixture.lines().collect();
    let (pair, other) = (format!("{}\n", lines[0]), format!("{}\n", lines[1]));
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(&pairs, format!("{pair}{pair}{other}")).unwrap();
    let out = patch(
        &run,
        &pairs,
        &[
            "--hooks",
            "blocks.0.mlp.hook_post",
            "--positions",
            "last",
            "--no-atp",
            "--ablate",
            "resample",
            "--ablate-neurons",
            "--json",
        ],
    );
    assert_success(&out, "patch --ablate resample --ablate-neurons");
    let script = r#"
import sys, pyarrow.parquet as pq
rows = pq.read_table(sys.argv[1] + "/ablation.parquet").to_pylist()
assert sorted(r["neuron"] for r in rows) == list(range(128)), len(rows)
for r in rows:
    assert r["ablation"] == "resample" and r["n"] == 2 and r["head"] is None, r
    assert abs(r["delta"]) < 1e-6 and abs(r["loss_delta"]) < 1e-6, r
"#;
    pyarrow_check(
        "resample_ablation_of_neurons",
        script,
        &[&run.join("patching")],
    );
    assert_bad_input(
        &patch(&tmp.path().join("run2"), &pairs, &["--ablate-neurons"]),
        &["ablate_neurons", "--ablate"],
    );
}

#[test]
fn sae_features_are_ablated_through_the_spliced_sae() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_gpt2_run(&run, true, None);
    let out = glassbox()
        .args(["dictionary", "--run"])
        .arg(&run)
        .args([
            "--hook",
            "blocks.0.hook_resid_post",
            "--width",
            "32",
            "--k",
            "4",
            "--train-tokens",
            "20000",
            "--batch-size",
            "256",
            "--no-pca",
        ])
        .output()
        .unwrap();
    assert_success(&out, "dictionary");
    let fixture =
        std::fs::read_to_string(workspace_root().join("tests/fixtures/patching/pairs.jsonl"))
            .unwrap();
    let first = format!("{}\n", fixture.lines().next().unwrap());
    let pairs = tmp.path().join("pairs.jsonl");
    // Two copies of one pair: each is the other's resample partner.
    std::fs::write(&pairs, format!("{first}{first}")).unwrap();
    let patch_with = |kind: &str, features: &str| {
        glassbox()
            .args(["patch", "--force", "--hooks", "blocks.0.hook_resid_post"])
            .args(["--positions", "last", "--no-atp", "--ablate", kind])
            .args(["--ablate-features", features, "--pairs"])
            .arg(&pairs)
            .arg("--run")
            .arg(&run)
            .output()
            .unwrap()
    };
    // Zero: some active feature moves the metric. Resample from an identical prompt: none.
    for (kind, moves) in [("zero", true), ("resample", false)] {
        let out = patch_with(kind, "blocks.0.hook_resid_post");
        assert_success(&out, &format!("patch --ablate {kind} --ablate-features"));
        let script = format!(
            r#"
import sys, pyarrow.parquet as pq
rows = pq.read_table(sys.argv[1] + "/ablation.parquet").to_pylist()
features = [r for r in rows if r["feature"] is not None]
assert features and all(r["n"] == 2 and r["ablation"] == "{kind}" for r in features), rows
assert all(r["hook"] == "blocks.0.hook_resid_post" and r["head"] is None for r in features)
moved = max(abs(r["delta"]) for r in features)
assert (moved > 1e-4) == {moves}, moved
"#,
            moves = if moves { "True" } else { "False" }
        );
        pyarrow_check(
            "sae_features_are_ablated_through_the_spliced_sae",
            &script,
            &[&run.join("patching")],
        );
    }
    // A hook without a trained SAE is named, and nothing is written.
    let before = std::fs::read(run.join("manifest.json")).unwrap();
    assert_bad_input(
        &patch_with("zero", "blocks.1.hook_resid_post"),
        &[
            "no SAE",
            "blocks.1.hook_resid_post",
            "blocks.0.hook_resid_post",
        ],
    );
    assert_eq!(std::fs::read(run.join("manifest.json")).unwrap(), before);
}
