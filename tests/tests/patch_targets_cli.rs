//! `glassbox patch` with target pairs: a probe of the run (`probe:<label>=<class>`) as the
//! metric on a text model, and a classifier's class (`class:<label>`) on a vision model whose
//! pairs are image paths. Tables read back with pyarrow; bad targets refused naming the row.

use glassbox_tests::*;
use std::path::Path;

#[test]
fn a_probe_target_scores_patching_on_a_text_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_gpt2_run(&run, false, Some("topic"));
    let fixture =
        std::fs::read_to_string(workspace_root().join("tests/fixtures/patching/pairs.jsonl"))
            .unwrap();
    // The LM pairs with a probe target instead of answer/wrong tokens.
    let pairs: String = fixture
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("answer");
            o.remove("wrong");
            o.insert(
                "target".into(),
                "probe:topic=finance@blocks.1.hook_resid_post".into(),
            );
            v.to_string() + "\n"
        })
        .collect();
    let file = tmp.path().join("pairs.jsonl");
    std::fs::write(&file, pairs).unwrap();
    let out = glassbox()
        .args([
            "patch",
            "--hooks",
            "blocks.0.hook_resid_pre,blocks.1.hook_resid_pre",
            "--pairs",
        ])
        .arg(&file)
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "patch with a probe target");
    pyarrow_check(
        "a_probe_target_scores_patching_on_a_text_model",
        r#"
import sys, pyarrow.parquet as pq
d = sys.argv[1]
res = pq.read_table(d + "/results.parquet").to_pylist()
pairs = pq.read_table(d + "/pairs.parquet").to_pylist()
assert len(pairs) == 3 and all(p["target"] == "probe:topic=finance@blocks.1.hook_resid_post" for p in pairs)
assert all(p["answer_id"] is None for p in pairs)
expect = sum(2 * len(p["clean_tokens"]) for p in pairs)
assert len(res) == expect, (len(res), expect)
for p in pairs:
    assert p["metric_clean"] != p["metric_corrupted"], p
    # At the first block's input, a position whose token is the same in both prompts has the
    # same activation: patching it changes nothing.
    same = [i for i, (a, b) in enumerate(zip(p["clean_tokens"], p["corrupted_tokens"])) if a == b]
    for r in res:
        if r["pair"] == p["pair"] and r["hook"] == "blocks.0.hook_resid_pre":
            if r["position"] in same:
                assert abs(r["normalized"]) < 1e-4, r
    assert any(r["atp_metric"] is not None for r in res)
"#,
        &[&run.join("patching")],
    );
    // A target class the probe does not have, named with its row.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"clean\": \"a b\", \"corrupted\": \"a c\", \"target\": \"probe:topic=astrology\"}\n",
    )
    .unwrap();
    let out = glassbox()
        .args(["patch", "--force", "--pairs"])
        .arg(&bad)
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert_bad_input(&out, &["row 1", "astrology"]);
}

#[test]
fn a_class_target_scores_patching_on_image_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    let out = glassbox()
        .args(["textures", "--out"])
        .arg(&images)
        .args([
            "--kinds",
            "stripes,dots",
            "--per-class",
            "1",
            "--size",
            "64",
            "--seed",
            "0",
        ])
        .output()
        .unwrap();
    assert_success(&out, "textures");
    let pairs = images.join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"clean\": \"stripes/0000.png\", \"corrupted\": \"dots/0000.png\", \"target\": \"class:class 2\"}\n",
    )
    .unwrap();
    let run = tmp.path().join("run");
    let patch = |extra: &[&str], pairs: &Path| {
        glassbox()
            .args(["patch", "--model"])
            .arg(workspace_root().join("tests/fixtures/tiny_resnet"))
            .arg("--pairs")
            .arg(pairs)
            .arg("--run")
            .arg(&run)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = patch(
        &[
            "--hooks",
            "stages.1.blocks.0.hook_out,hook_pooled",
            "--json",
        ],
        &pairs,
    );
    assert_success(&out, "patch image pairs");
    pyarrow_check(
        "a_class_target_scores_patching_on_image_pairs",
        r#"
import sys, pyarrow.parquet as pq
d = sys.argv[1]
res = pq.read_table(d + "/results.parquet").to_pylist()
cells = sorted(r["position"] for r in res if r["hook"] == "stages.1.blocks.0.hook_out")
assert cells == list(range(len(cells))) and len(cells) > 1, cells
pooled = [r for r in res if r["hook"] == "hook_pooled"]
assert len(pooled) == 1, pooled
# The classifier reads only the pooled vector: patching it restores the clean metric exactly.
assert abs(pooled[0]["normalized"] - 1.0) < 1e-4, pooled
"#,
        &[&run.join("patching")],
    );
    std::fs::write(
        &pairs,
        "{\"clean\": \"stripes/0000.png\", \"corrupted\": \"dots/0000.png\", \"target\": \"class:zebra\"}\n",
    )
    .unwrap();
    assert_bad_input(
        &patch(&["--force", "--hooks", "hook_pooled"], &pairs),
        &["row 1", "zebra"],
    );
    std::fs::write(
        &pairs,
        "{\"clean\": \"stripes/0000.png\", \"corrupted\": \"missing.png\", \"target\": \"class:class 2\"}\n",
    )
    .unwrap();
    assert_bad_input(
        &patch(&["--force", "--hooks", "hook_pooled"], &pairs),
        &["row 1", "corrupted", "missing.png"],
    );
}
