//! `glassbox attribute` end to end on the committed tiny GPT-2 (with a probe on `topic`):
//! token and probe targets, every text method, the tables read back by pyarrow (an independent
//! reader) — one map row per token, IG's completeness, curves, the randomisation check —, an
//! up-to-date re-run, and refusals (exit 2, the fault named, the run byte-identical).

use glassbox_tests::{
    assert_bad_input, assert_success, glassbox, pyarrow_check, python_with, skip, tiny_decoder_run,
    validate_json_schema,
};
use std::collections::BTreeMap;
use std::path::Path;

fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".glassbox.") && name.ends_with(".lock") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

const CHECK: &str = r#"
import sys, pyarrow.parquet as pq, pyarrow.dataset as ds
root = sys.argv[1] + "/attributions"
s = pq.read_table(root + "/summary.parquet").to_pylist()
methods = {r["method"] for r in s}
assert methods == {"saliency", "gradient_x_input", "integrated_gradients", "occlusion", "smoothgrad", "attention_rollout"}, methods
targets = {r["target"] for r in s}
assert targets == {"token: the", "probe:topic=sports"}, targets
for r in s:
    if r["method"] == "integrated_gradients":
        assert r["completeness_error"] < 0.05, r
    assert r["deletion_morf_auc"] is not None and r["max_sensitivity"] is not None, r
    assert r["comprehensiveness"] is not None, r
m = ds.dataset(root + "/method=integrated_gradients/target=token_the", format="parquet").to_table().to_pylist()
by_example = {}
for row in m:
    by_example.setdefault(row["example_id"], []).append(row)
assert len(by_example) == 3, len(by_example)
for rows in by_example.values():
    assert [r["position"] for r in rows] == list(range(len(rows)))
    assert all(isinstance(r["token"], str) for r in rows)
curves = pq.read_table(root + "/curves.parquet").to_pylist()
assert {c["curve"] for c in curves} == {"deletion_morf", "deletion_lerf", "insertion_morf", "insertion_lerf"}
sanity = pq.read_table(root + "/sanity.parquet").to_pylist()
assert sanity and max(r["groups_randomized"] for r in sanity) == sanity[0]["groups_total"]
kinds = {(r["randomization"], r["target"]) for r in sanity}
assert kinds == {(k, t) for k in ("cascade", "independent") for t in targets} | {("labels", "probe:topic=sports")}, kinds
labels = [r for r in sanity if r["randomization"] == "labels"]
assert len(labels) == 2 * 6 and all(r["groups_randomized"] == 0 for r in labels), labels
verdicts = pq.read_table(root + "/methods.parquet").to_pylist()
assert sorted(v["rank"] for v in verdicts if v["target"] == "token: the") == list(range(1, 7))
for v in verdicts:
    # The label check runs for probe targets only, and its |rho| is the labels rows' mean.
    if v["target"] == "probe:topic=sports":
        mine = [abs(r["spearman"] or 0.0) for r in labels if r["method"] == v["method"]]
        assert abs(v["label_randomized_spearman"] - sum(mine) / len(mine)) < 1e-9, v
    else:
        assert v["label_randomized_spearman"] is None, v
# Attention rollout never reads the target: its maps for the shuffled-label probe are the same
# maps, so the label check fails it (by construction) whatever the model check said.
rollout = [v for v in verdicts if v["method"] == "attention_rollout" and v["target"] == "probe:topic=sports"][0]
assert rollout["label_randomized_spearman"] > 0.999 and rollout["sanity_passed"] is False, rollout
ig = [v for v in verdicts if v["method"] == "integrated_gradients" and v["target"] == "probe:topic=sports"][0]
assert ig["label_randomized_spearman"] < 0.99, ig
# Each faithfulness with its bootstrap interval over the examples, and the top method's lead
# over every other as a paired interval — recomputed here from the per-example rows: the lead's
# interval brackets the mean of the per-example differences.
for t in targets:
    mine = [v for v in verdicts if v["target"] == t]
    top = [v for v in mine if v["rank"] == 1][0]
    assert top["vs_top_ci_low"] is None and top["vs_top_ci_high"] is None, top
    per = lambda m: {r["example_id"]: r["deletion_lerf_auc"] - r["deletion_morf_auc"] for r in s if r["method"] == m and r["target"] == t}
    best = per(top["method"])
    for v in mine:
        assert v["faithfulness_ci_low"] <= v["faithfulness"] <= v["faithfulness_ci_high"], v
        if v["rank"] == 1:
            continue
        other = per(v["method"])
        lead = sum(best[e] - other[e] for e in other) / len(other)
        assert v["vs_top_ci_low"] - 1e-9 <= lead <= v["vs_top_ci_high"] + 1e-9, (v, lead)
"#;

#[test]
fn tiny_gpt2_attributions_are_written_evaluated_and_refused_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_decoder_run("tiny_gpt2", &run, false, Some("topic"));
    let attribute = |extra: &[&str]| {
        glassbox()
            .args(["attribute", "--run"])
            .arg(&run)
            .args(["--max-examples", "3", "--steps", "32", "--samples", "4"])
            .args(["--sanity-examples", "2", "--curve-points", "5"])
            .args(extra)
            .output()
            .unwrap()
    };
    let methods = "saliency,gxi,ig,occlusion,smoothgrad,rollout";
    let out = attribute(&[
        "--target",
        "token: the",
        "--target",
        "probe:topic=sports",
        "--method",
        methods,
    ]);
    assert_success(&out, "attribute");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("integrated_gradients"), "{stdout}");
    pyarrow_check("attribute_cli", CHECK, &[&run]);
    // Same settings: up to date.
    let again = attribute(&[
        "--target",
        "token: the",
        "--target",
        "probe:topic=sports",
        "--method",
        methods,
    ]);
    assert_success(&again, "attribute (again)");
    assert!(String::from_utf8_lossy(&again.stderr).contains("up to date"));
    // The main report ranks the methods per target and links the attribution page.
    let out = glassbox()
        .args(["report", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "report");
    let report = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    assert!(
        report.contains("href=\"../attributions/index.html\""),
        "link"
    );
    assert!(
        report.contains("<h2>Input attributions</h2>") && report.contains("integrated_gradients")
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report/summary.json")).unwrap()).unwrap();
    assert!(summary["attributions"]
        .as_array()
        .is_some_and(|a| a.len() >= 6));
    // The summary of a run with attributions validates against its schema (it once carried a
    // field the schema did not allow).
    match python_with("jsonschema") {
        Ok(python) => assert_success(
            &validate_json_schema(
                &python,
                &run.join("report/summary.schema.json"),
                &run.join("report/summary.json"),
            ),
            "summary.json against its schema",
        ),
        Err(why) => skip("attribute_cli summary schema", &why),
    }

    let before = snapshot(&run);
    for (args, needles) in [
        (
            vec!["--target", "token: the", "--method", "grad_cam"],
            vec!["grad_cam", "text model"],
        ),
        (
            vec!["--target", "token: the", "--steps", "0"],
            vec!["steps", "at least 1"],
        ),
        (
            vec!["--target", "token: the", "--baseline", "blur"],
            vec!["blur", "for images"],
        ),
        (
            vec!["--target", "class:cat"],
            vec!["class:cat", "no class head"],
        ),
        (
            vec!["--target", "token: the", "--method", "sharpness"],
            vec!["sharpness", "choose from"],
        ),
        (vec!["--target", "probe:topic=cooking"], vec!["cooking"]),
        (vec!["--target", "token: the cat sat"], vec!["not one"]),
    ] {
        let out = glassbox()
            .args(["attribute", "--run"])
            .arg(&run)
            .args(&args)
            .output()
            .unwrap();
        assert_bad_input(&out, &needles);
        assert!(before == snapshot(&run), "{args:?} changed the run");
    }
}

const VISION_CHECK: &str = r#"
import sys, pyarrow.parquet as pq, pyarrow.dataset as ds
root = sys.argv[1] + "/attributions"
verdicts = {v["method"]: v for v in pq.read_table(root + "/methods.parquet").to_pylist()}
assert verdicts["edges"]["sanity_passed"] is False, verdicts["edges"]
assert verdicts["edges"]["rank"] == len(verdicts), verdicts
assert verdicts["integrated_gradients"]["sanity_passed"] is True, verdicts["integrated_gradients"]
s = pq.read_table(root + "/summary.parquet").to_pylist()
assert all(r["predicted"] for r in s), s[0]
m = ds.dataset(root + "/method=grad_cam/target=class_predicted", format="parquet").to_table().to_pylist()
assert len(m) == 2 * 32 * 32 and max(r["y"] for r in m) == 31 and max(r["x"] for r in m) == 31
"#;

/// The tiny ViT on generated textures: class:predicted with every image method, the edge control
/// failing the randomisation check (ranked last, labelled on the page), the page embedding the
/// model-input images.
#[test]
fn tiny_vit_attributions_flag_the_edge_control() {
    let tmp = tempfile::tempdir().unwrap();
    let run = glassbox_tests::tiny_image_run("tiny_vit", tmp.path());
    let out = glassbox()
        .args(["attribute", "--run"])
        .arg(&run)
        .args([
            "--target",
            "class:predicted",
            "--method",
            "saliency,ig,occlusion,grad_cam,rollout,edges",
        ])
        .args([
            "--steps",
            "16",
            "--window",
            "8",
            "--stride",
            "8",
            "--cam-hook",
            "blocks.1.hook_resid_pre",
        ])
        .output()
        .unwrap();
    assert_success(&out, "attribute (tiny ViT)");
    pyarrow_check("attribute_cli (vision)", VISION_CHECK, &[&run]);
    let page = std::fs::read_to_string(run.join("attributions/index.html")).unwrap();
    assert!(
        page.contains("data:image/png;base64,"),
        "the page embeds the model's input"
    );
    assert!(page.contains("edges — <strong>failed the randomisation check"));
    // An unknown class lists the model's classes.
    assert_bad_input(
        &attribute_target(&run, "class:zebra"),
        &["class:zebra", "class 0"],
    );
    // One class twice: under two names as two targets, or on both sides of a difference.
    for (target, needle) in [
        (
            "class:class 1,class:1",
            "`class:class 1` and `class:1` name the same target",
        ),
        ("logit_diff:2|class 2", "both sides name class 2"),
    ] {
        assert_bad_input(&attribute_target(&run, target), &[needle]);
    }
}

/// `glassbox attribute` on `run` with one `--target` and the default settings.
fn attribute_target(run: &Path, target: &str) -> std::process::Output {
    glassbox()
        .args(["attribute", "--run"])
        .arg(run)
        .args(["--target", target])
        .output()
        .unwrap()
}

/// The tiny ResNet with the default image methods: its hand-written backward gives saliency,
/// IG (complete within 5 % at 32 steps) and Grad-CAM at the last block's output (the default
/// hook: 64-px inputs, 4 × 4 cells); the edge control fails the randomisation check.
#[test]
fn tiny_resnet_attributions_use_its_backward_and_grad_cam() {
    let tmp = tempfile::tempdir().unwrap();
    let run = glassbox_tests::tiny_image_run("tiny_resnet", tmp.path());
    let out = glassbox()
        .args(["attribute", "--run"])
        .arg(&run)
        .args(["--target", "class:predicted", "--steps", "32"])
        .output()
        .unwrap();
    assert_success(&out, "attribute (tiny ResNet)");
    pyarrow_check(
        "attribute_cli (resnet)",
        r#"
import sys, pyarrow.parquet as pq, pyarrow.dataset as ds
root = sys.argv[1] + "/attributions"
verdicts = {v["method"]: v for v in pq.read_table(root + "/methods.parquet").to_pylist()}
assert set(verdicts) == {"saliency", "integrated_gradients", "occlusion", "grad_cam", "edges"}, verdicts
assert verdicts["edges"]["sanity_passed"] is False, verdicts["edges"]
s = pq.read_table(root + "/summary.parquet").to_pylist()
ig = [r for r in s if r["method"] == "integrated_gradients"]
assert len(ig) == 2 and all(r["completeness_error"] < 0.05 for r in ig), ig
cam = ds.dataset(root + "/method=grad_cam/target=class_predicted", format="parquet").to_table().to_pylist()
assert len(cam) == 2 * 64 * 64, len(cam)
assert any(r["attribution"] != 0 for r in cam)
"#,
        &[&run],
    );
}

const CLASSIFIER_CHECK: &str = r#"
import json, sys, pyarrow.parquet as pq
run = sys.argv[1]
root = run + "/attributions"
s = pq.read_table(root + "/summary.parquet").to_pylist()
assert {r["target"] for r in s} == {"class:positive", "class:predicted", "logit_diff:positive|negative"}
assert {r["predicted"] for r in s} <= {"negative", "neutral", "positive"} and all(r["predicted"] for r in s), s
for r in s:
    if r["method"] == "integrated_gradients":
        # Within 5% of the gap, or of f's own size where f(x) and f(baseline) nearly cancel
        # (DistilBERT's ReLU head on a text whose gap is 0.02 of a logit of 0.28).
        gap = r["f_input"] - r["f_baseline"]
        scale = max(abs(gap), abs(r["f_input"]), abs(r["f_baseline"]))
        assert abs(r["attribution_sum"] - gap) < 0.05 * scale, r
# class:predicted explains each text's own top class: the same f as class:<that class>.
by = {(r["example_id"], r["target"], r["method"]): r for r in s}
for (e, t, m), r in by.items():
    if t == "class:predicted" and r["predicted"] == "positive":
        assert abs(r["f_input"] - by[(e, "class:positive", m)]["f_input"]) < 1e-6, r
# The model has 64 positions: the extraction cut texts there and recorded it.
manifest = json.load(open(run + "/manifest.json"))
assert manifest["stages"]["extract"]["params"]["max_length"] == 64, manifest["stages"]["extract"]["params"]
# Patching a class target reads the classifier, which sees only [CLS] after the last block:
# restoring the last block's output there restores the clean logits, anywhere else nothing.
rows = pq.read_table(run + "/patching/results.parquet").to_pylist()
last = [r for r in rows if r["hook"] == "blocks.1.hook_resid_post"]
assert last and all(abs(r["normalized"] - (1.0 if r["position"] == 0 else 0.0)) < 1e-4 for r in last), last
"#;

/// Text classifiers with named labels (`BertForSequenceClassification`, and RoBERTa's and
/// DistilBERT's, whose heads and embeddings differ): class, predicted-class and
/// class-difference targets explained through each one's head; an unknown class lists the
/// model's classes and leaves the run unchanged.
#[test]
fn text_classifier_attributions_explain_its_class_logits() {
    for fixture in [
        "tiny_bert_classifier",
        "tiny_roberta_classifier",
        "tiny_distilbert_classifier",
    ] {
        classifier_attributions(fixture);
    }
}

fn classifier_attributions(fixture: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(
            glassbox_tests::workspace_root()
                .join("tests/fixtures")
                .join(fixture),
        )
        .arg("--data")
        .arg(glassbox_tests::workspace_root().join("data/sets/default.jsonl"))
        .args(["--hooks", "blocks.1.hook_resid_post", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, &format!("extract ({fixture})"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cut at 64 tokens"),
        "extract says the texts are cut at the model's 64 positions"
    );
    let out = glassbox()
        .args(["attribute", "--run"])
        .arg(&run)
        .args([
            "--target",
            "class:positive,class:predicted,logit_diff:positive|negative",
            "--method",
            "saliency,ig,occlusion",
            "--steps",
            "32",
            "--max-examples",
            "3",
        ])
        .output()
        .unwrap();
    assert_success(&out, &format!("attribute ({fixture})"));
    // Pairs that tokenise to the same length with these fixtures' vocabularies.
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        concat!(
            r#"{"clean": "the market was the", "corrupted": "the market was and", "target": "class:positive"}"#,
            "\n",
            r#"{"clean": "the team was the", "corrupted": "the team was and", "target": "class:negative"}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = glassbox()
        .args(["patch", "--run"])
        .arg(&run)
        .arg("--pairs")
        .arg(&pairs)
        .args(["--hooks", "blocks.*.hook_resid_post"])
        .output()
        .unwrap();
    assert_success(&out, &format!("patch ({fixture})"));
    // A run without probes still gets its report: the patching and attribution findings.
    let out = glassbox()
        .args(["report", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "report (no probes)");
    let md = std::fs::read_to_string(run.join("report/summary.md")).unwrap();
    assert!(md.contains("No probes in this run"), "{md}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("attributions of class:positive: ")
                && l.contains("is the most faithful method")),
        "the findings name each target's most faithful method: {stdout}"
    );
    pyarrow_check(
        &format!("attribute_cli ({fixture})"),
        CLASSIFIER_CHECK,
        &[&run],
    );
    let before = snapshot(&run);
    let out = glassbox()
        .args(["attribute", "--run"])
        .arg(&run)
        .args(["--target", "class:sarcastic"])
        .output()
        .unwrap();
    assert_bad_input(&out, &["class:sarcastic", "negative; neutral; positive"]);
    // An index names a class too, within the head's range.
    let out = glassbox()
        .args(["attribute", "--run"])
        .arg(&run)
        .args(["--target", "class:3"])
        .output()
        .unwrap();
    assert_bad_input(&out, &["class:3", "out of range", "3 classes (0–2)"]);
    assert!(
        before == snapshot(&run),
        "the refused target changed the run"
    );
}

/// CLIP has no class head: `text:<prompt>` explains its zero-shot logit for the prompt (IG
/// complete to its quadrature), and `class:` targets are refused saying why, not a panic.
#[test]
fn clip_attributions_explain_a_text_prompt_and_refuse_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = glassbox_tests::tiny_image_run("tiny_clip", tmp.path());
    let before = snapshot(&run);
    for target in ["class:predicted", "class:zebra"] {
        let out = attribute_target(&run, target);
        assert_bad_input(&out, &["no class head", "text:<prompt>"]);
        assert!(before == snapshot(&run), "{target} changed the run");
    }
    let out = glassbox()
        .args(["attribute", "--run"])
        .arg(&run)
        .args([
            "--target",
            "text:a photo of stripes",
            "--method",
            "saliency,ig,occlusion",
        ])
        .args([
            "--steps",
            "32",
            "--window",
            "8",
            "--stride",
            "8",
            "--no-sanity",
        ])
        .output()
        .unwrap();
    assert_success(&out, "attribute (tiny CLIP, text prompt)");
    pyarrow_check(
        "attribute_cli (clip)",
        r#"
import sys, pyarrow.parquet as pq
s = pq.read_table(sys.argv[1] + "/attributions/summary.parquet").to_pylist()
assert {r["target"] for r in s} == {"text:a photo of stripes"} and len(s) == 2 * 3, s
for r in s:
    assert r["predicted"] is None, r
    if r["method"] == "integrated_gradients":
        assert r["completeness_error"] < 0.05, r
"#,
        &[&run],
    );
}

/// A `probe:` target naming a label probed only per token says so, rather than "probe it first".
#[test]
fn a_token_level_label_as_a_target_is_refused_saying_why() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_decoder_run("tiny_gpt2", &run, true, None);
    let out = glassbox()
        .args([
            "probe",
            "--token-label",
            "@is_capitalised",
            "--bootstrap",
            "20",
        ])
        .args(["--no-neurons", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "probe (token level)");
    let before = snapshot(&run);
    let out = glassbox()
        .args(["attribute", "--run"])
        .arg(&run)
        .args(["--target", "probe:@is_capitalised=True", "--method", "ig"])
        .output()
        .unwrap();
    assert_bad_input(&out, &["probed per token", "one number per example"]);
    assert!(before == snapshot(&run), "the run changed");
}

/// An image run extracted with a relative `--data` path rereads its images from another
/// working directory (through the absolute path the manifest records).
#[test]
fn an_image_run_is_explained_from_another_working_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = glassbox()
        .current_dir(tmp.path())
        .args(["textures", "--kinds", "stripes,dots", "--per-class", "1"])
        .args(["--size", "32", "--out", "images"])
        .output()
        .unwrap();
    assert_success(&out, "textures");
    let out = glassbox()
        .current_dir(tmp.path())
        .args(["extract", "--model"])
        .arg(glassbox_tests::workspace_root().join("tests/fixtures/tiny_resnet"))
        .args(["--data", "images", "--hooks", "hook_pooled", "--run", "run"])
        .output()
        .unwrap();
    assert_success(&out, "extract (relative data path)");
    let elsewhere = tempfile::tempdir().unwrap();
    let out = glassbox()
        .current_dir(elsewhere.path())
        .args(["attribute", "--run"])
        .arg(tmp.path().join("run"))
        .args([
            "--target",
            "class:predicted",
            "--method",
            "saliency",
            "--steps",
            "4",
        ])
        .output()
        .unwrap();
    assert_success(&out, "attribute from another directory");
}
