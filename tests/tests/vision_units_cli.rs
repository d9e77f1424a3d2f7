//! Units of image runs through the CLI, on the committed tiny ResNet: `glassbox textures
//! --masks` → extract (per-cell rows) → `glassbox dissect`, and an SAE and the channels of an
//! image run explained by `glassbox dictionary` (cells in place of tokens), the tables read back
//! with pyarrow; and the refusals: a mask of the wrong size, a missing mask file, a concept with
//! no masked pixels, a hook with one position (dissect and dictionary), a run without per-cell
//! rows, a text run, a bad setting — each exit 2, named, the run byte-identical. Planted units
//! through real forwards are in `planted_vision_units.rs`.

use glassbox_tests::*;
use std::path::{Path, PathBuf};

fn masked_set(dir: &Path) -> PathBuf {
    let out = glassbox()
        .args([
            "textures",
            "--masks",
            "--per-class",
            "3",
            "--size",
            "64",
            "--seed",
            "5",
            "--out",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert_success(&out, "textures --masks");
    dir.join("dataset.jsonl")
}

fn extract(data: &Path, run: &Path, token_level: bool) {
    let mut cmd = glassbox();
    cmd.args(["extract", "--model"])
        .arg(workspace_root().join("tests/fixtures/tiny_resnet"))
        .arg("--data")
        .arg(data)
        .args([
            "--hooks",
            "hook_stem,stages.1.blocks.0.hook_out,hook_pooled",
            "--run",
        ])
        .arg(run);
    if !token_level {
        cmd.arg("--no-token-level");
    }
    assert_success(&cmd.output().unwrap(), "extract (tiny_resnet)");
}

fn dissect(run: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = glassbox();
    cmd.args(["dissect", "--run"]).arg(run).args(extra);
    if !extra.contains(&"--permutations") {
        cmd.args(["--permutations", "20"]);
    }
    cmd.output().unwrap()
}

/// Runs `dissect` with `extra`, asserting exit 2, every needle on stderr and an unchanged run.
fn refused(run: &Path, extra: &[&str], needles: &[&str]) {
    let before = snapshot(run);
    let out = dissect(run, extra);
    assert_bad_input(&out, needles);
    assert!(before == snapshot(run), "dissect {extra:?} changed the run");
}

#[test]
fn dissects_an_image_run_and_writes_tables_pyarrow_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let data = masked_set(&tmp.path().join("masked"));
    let run = tmp.path().join("run");
    extract(&data, &run, true);
    let out = dissect(&run, &[]);
    assert_success(&out, "dissect");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Spatial hooks only: the pooled one has a single position.
    assert!(
        stdout.contains("hook_stem:") && stdout.contains("stages.1.blocks.0.hook_out:"),
        "{stdout}"
    );
    assert!(!stdout.contains("hook_pooled"), "{stdout}");
    pyarrow_check(
        "dissect_cli",
        r#"
import sys, pyarrow.parquet as pq
d = sys.argv[1]
hooks = pq.read_table(d + "/hooks.parquet").to_pylist()
units = pq.read_table(d + "/units.parquet").to_pylist()
scores = pq.read_table(d + "/scores.parquet").to_pylist()
examples = pq.read_table(d + "/examples.parquet").to_pylist()
names = {h["hook"] for h in hooks}
assert names == {"hook_stem", "stages.1.blocks.0.hook_out"}, names
stem = [h for h in hooks if h["hook"] == "hook_stem"][0]
# The 64-px crop → 7×7/2 → max-pool 3×3/2: 16 × 16 cells, stride 4.
assert (stem["row_cells"], stem["col_cells"], stem["row_stride"]) == (16, 16, 4.0), stem
for h in hooks:
    mine = [u for u in units if u["hook"] == h["hook"]]
    assert len(mine) == h["units"], (h, len(mine))
    assert sum(u["labelled"] for u in mine) == h["labelled"]
concepts = {"stripes", "dots", "checkerboard", "zigzag", "red", "green", "blue", "yellow"}
assert len(scores) == len(units) * len(concepts)
for u in units:
    assert 0.0 <= u["q_value"] <= 1.0 and 0.0 <= u["iou"] <= 1.0, u
    assert u["concept"] in concepts | {""}, u
    assert u["labelled"] == (u["iou"] >= 0.04 and u["q_value"] <= 0.05 and u["concept"] != "")
for e in examples:
    cells = 16 * 16 if e["hook"] == "hook_stem" else 8 * 8
    assert len(e["map"]) == cells and 0 <= e["example_id"] < 12, (e["hook"], len(e["map"]))
"#,
        &[&run.join("dissection")],
    );
    let again = dissect(&run, &[]);
    assert_success(&again, "dissect again");
    assert!(String::from_utf8_lossy(&again.stderr).contains("up to date"));
    let manifest = std::fs::read_to_string(run.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"dissect\""), "{manifest}");
}

#[test]
fn refuses_bad_masks_hooks_and_runs_by_name_and_leaves_the_run_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = masked_set(&tmp.path().join("masked"));
    let run = tmp.path().join("run");
    extract(&data, &run, true);
    refused(
        &run,
        &["--hooks", "hook_pooled"],
        &["hook_pooled", "single position"],
    );
    refused(&run, &["--quantile", "2"], &["quantile = 2"]);
    refused(
        &run,
        &["--permutations", "5", "--force"],
        &["permutations = 5"],
    );

    // Masks given beside the run, one at a time broken.
    let text = std::fs::read_to_string(&data).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let stripes = first["mask_stripes"].as_str().unwrap().to_owned();
    let write_manifest =
        |name: &str, edit: &dyn Fn(usize, &mut serde_json::Map<String, serde_json::Value>)| {
            let mut lines = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let mut row: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(line).unwrap();
                edit(i, &mut row);
                lines.push(serde_json::Value::Object(row).to_string());
            }
            let path = data.with_file_name(name);
            std::fs::write(&path, lines.join("\n")).unwrap();
            path
        };
    let missing = write_manifest("missing.jsonl", &|i, row| {
        if i == 1 {
            row.insert("mask_dots".into(), "masks/nowhere.png".into());
        }
    });
    let m = missing.display().to_string();
    refused(
        &run,
        &["--masks", &m],
        &["row 2, column `mask_dots`", "cannot be read"],
    );
    let blank = data.with_file_name("masks/blank.png");
    image::GrayImage::new(64, 64).save(&blank).unwrap();
    let empty = write_manifest("empty.jsonl", &|_, row| {
        row.insert("mask_sky".into(), "masks/blank.png".into());
    });
    let e = empty.display().to_string();
    refused(
        &run,
        &["--masks", &e],
        &["concept `sky`", "no masked pixels"],
    );
    let reordered = write_manifest("reordered.jsonl", &|i, row| {
        if i == 0 {
            row.insert("image_path".into(), "images/dots-0000.png".into());
        }
    });
    let r = reordered.display().to_string();
    refused(
        &run,
        &["--masks", &r],
        &["row 1 is image `images/dots-0000.png`"],
    );
    // The run's own data file with one mask replaced by a smaller image.
    image::GrayImage::new(32, 32)
        .save(data.with_file_name(&stripes))
        .unwrap();
    refused(
        &run,
        &[],
        &["row 1, column `mask_stripes`", "32×32", "64×64"],
    );

    // A run with pooled rows only, and a text run.
    let pooled = tmp.path().join("pooled");
    extract(&data, &pooled, false);
    refused(&pooled, &[], &["no per-cell activations", "token_level"]);
    let text_run = tmp.path().join("text");
    tiny_gpt2_run(&text_run, true, None);
    refused(&text_run, &[], &["text model"]);
}

#[test]
fn explains_an_image_runs_sae_features_and_channels_by_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let data = masked_set(&tmp.path().join("masked"));
    let run = tmp.path().join("run");
    extract(&data, &run, true);
    let dictionary = |extra: &[&str]| {
        glassbox()
            .args([
                "dictionary",
                "--width",
                "32",
                "--k",
                "4",
                "--train-tokens",
                "3000",
                "--label",
                "label",
                "--run",
            ])
            .arg(&run)
            .args(extra)
            .output()
            .unwrap()
    };
    // Probes first: a new probe result voids the dictionary (its explanations cite them).
    let probe = glassbox()
        .args([
            "probe",
            "--label",
            "label",
            "--bootstrap",
            "50",
            "--no-neurons",
            "--run",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&probe, "probe");
    let before = snapshot(&run);
    assert_bad_input(
        &dictionary(&["--hook", "hook_pooled"]),
        &["hook_pooled", "single position"],
    );
    assert!(
        before == snapshot(&run),
        "a refused dictionary changed the run"
    );
    let out = dictionary(&[
        "--hook",
        "hook_stem",
        "--neurons",
        "stages.1.blocks.0.hook_out",
    ]);
    assert_success(&out, "dictionary on an image run");
    pyarrow_check(
        "vision_units_cli",
        r#"
import json, re, sys, pyarrow.parquet as pq
d = sys.argv[1]
for hook, kind, cells in (("hook_stem", "feature", 16), ("stages.1.blocks.0.hook_out", "neuron", 8)):
    rows = pq.read_table(f"{d}/hook={hook}/{kind}_examples.parquet").to_pylist()
    assert rows, hook
    for r in rows:
        m = re.fullmatch(r"r(\d+)c(\d+)", r["token"])
        assert m, r["token"]
        assert int(m[1]) * cells + int(m[2]) == r["position"] and 0 <= r["example_id"] < 12, r
        assert (r["row"], r["col"]) == (int(m[1]), int(m[2])), r
        assert r["image_path"].startswith("images/") and r["x0"] <= r["x1"] <= 63, r
        # tiny_resnet's preprocessor is ConvNeXt's (transformers' class for ResNet): the 64-px
        # files go to int(72 / 0.875) = 82 px, a centre 72-px crop (offset 5), then the 64-px
        # crop_size (offset 4): back onto the files' pixels.
        scale = 64 / 82
        assert r["source_x0"] == int((r["x0"] + 9) * scale), r
        assert r["source_x1"] == min(63, -(-(r["x1"] + 1 + 9) * 64 // 82) - 1), r
    grid = json.load(open(f"{d}/hook={hook}/grid.json"))
    assert grid["rows"]["cells"] == cells and grid["class_token"] is False, grid
labels = pq.read_table(f"{d}/hook=hook_stem/feature_labels.parquet").to_pylist()
assert {l["label"] for l in labels} == {"label"}, labels[:2]
"#,
        &[&run.join("dictionary")],
    );
    // delphi's cache is token sequences: an image run is refused with the export that fits.
    let out_dir = run.with_file_name("delphi");
    let out = glassbox()
        .args(["export", "delphi", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_bad_input(&out, &["made from text runs", "export neuronpedia"]);
    assert!(!out_dir.exists());
    // The report shows the listed units' top cells on their images, not cell names.
    assert_success(
        &glassbox()
            .arg("report")
            .arg("--run")
            .arg(&run)
            .output()
            .unwrap(),
        "report",
    );
    let html = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    let thumbs = html.matches("<div class=\"thumbs\"><img").count();
    assert!(thumbs > 0, "no thumbnails in the dictionary section");
    assert!(
        html.contains("src=\"data:image/jpeg;base64,/9j/"),
        "a JPEG data URI"
    );
}
