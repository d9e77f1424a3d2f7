//! The vision path end to end on the real EfficientNet-Lite0 (laid into the HF cache by
//! `just models`): generated textures → extract (spatial store, pooled variants) → probe →
//! TCAV with texture concepts against a class logit → report; the Parquet read back with
//! pyarrow; and bad image input named with exit 2.

use glassbox_tests::*;
use std::path::Path;

const MODEL: &str = "glassbox-offline/efficientnet-lite0";

fn model_present(test: &str) -> bool {
    let out = glassbox()
        .args(["hooks", MODEL, "--allow-pickle"])
        .output()
        .unwrap();
    if !out.status.success() {
        skip(
            test,
            &format!(
                "{MODEL} is not in the cache ({}); run `just models`",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
    }
    out.status.success()
}

fn textures(out: &Path, kinds: &str, per_class: &str, seed: &str) {
    let o = glassbox()
        .args(["textures", "--out"])
        .arg(out)
        .args([
            "--kinds",
            kinds,
            "--per-class",
            per_class,
            "--size",
            "96",
            "--seed",
            seed,
        ])
        .output()
        .unwrap();
    assert_success(&o, "textures");
}

fn extract(data: &Path, run: &Path, extra: &[&str]) -> std::process::Output {
    glassbox()
        .args(["extract", "--model", MODEL, "--data"])
        .arg(data)
        .args([
            "--hooks",
            "stages.2.blocks.0.hook_out,stages.5.blocks.0.hook_out,hook_pooled",
            "--batch-size",
            "8",
            "--run",
        ])
        .arg(run)
        .args(extra)
        .output()
        .unwrap()
}

/// `glassbox tcav --run RUN --target TARGET --concepts A,B,… EXTRA…`.
fn tcav(run: &Path, target: &str, concepts: &[&Path], extra: &[&str]) -> std::process::Output {
    let concepts: Vec<String> = concepts.iter().map(|c| c.display().to_string()).collect();
    glassbox()
        .args([
            "tcav",
            "--target",
            target,
            "--concepts",
            &concepts.join(","),
        ])
        .args(extra)
        .arg("--run")
        .arg(run)
        .output()
        .unwrap()
}

/// The score rows of a `tcav --json` that must succeed.
fn score_rows(out: &std::process::Output, what: &str) -> Vec<serde_json::Value> {
    assert_success(out, what);
    let scores: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    scores.as_array().unwrap().clone()
}

#[test]
fn textures_extract_probe_tcav_report() {
    if !model_present("textures_extract_probe_tcav_report") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("textures");
    let concepts = tmp.path().join("concepts");
    let run = tmp.path().join("run");
    textures(&data, "stripes,dots,random", "8", "0");
    textures(&concepts, "stripes,dots", "10", "1");

    // Pickle is opt-in.
    let out = extract(&data, &run, &[]);
    assert_bad_input(&out, &["--allow-pickle", ".pth"]);
    let out = extract(&data, &run, &["--allow-pickle", "--pools", "mean,max"]);
    assert_success(&out, "extract");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("24 examples, 24 images, 3 hooks"),
        "{stdout}"
    );

    // Spatial rows: 24 images × 28 × 28 cells at stage 2, 7 × 7 at stage 5; pools one row each.
    // The read-back is skipped without pyarrow, as a failure under CI=true.
    if let Some(python) =
        python_or_skip("textures_extract_probe_tcav_report (read-back)", "pyarrow")
    {
        let script = r#"
import sys, pyarrow.dataset as ds
run = sys.argv[1]
for hook, cells, width in [("stages.2.blocks.0.hook_out", 784, 40), ("stages.5.blocks.0.hook_out", 49, 192)]:
    t = ds.dataset(f"{run}/activations/hook={hook}", format="parquet").to_table()
    assert t.num_rows == 24 * cells, (hook, t.num_rows)
    assert max(t.column("position").to_pylist()) == cells - 1
    assert len(t.column("act")[0].as_py()) == width
p = ds.dataset(f"{run}/pooled/hook=hook_pooled/pool=max", format="parquet").to_table()
assert p.num_rows == 24 and len(p.column("act")[0].as_py()) == 1280
e = ds.dataset(f"{run}/examples.parquet", format="parquet").to_table().to_pydict()
assert e["text"][0] == "dots/0000.png" and e["label"][-1] == "stripes", e["text"][:3]
print("ok")
"#;
        let out = std::process::Command::new(python)
            .args(["-c", script])
            .arg(&run)
            .output()
            .unwrap();
        assert_success(&out, "pyarrow read-back");
    }
    // Token-level rows are on by default for extract; check the layout the script read exists.
    assert!(run
        .join("activations/hook=stages.5.blocks.0.hook_out")
        .is_dir());

    let out = glassbox()
        .args(["probe", "--label", "label", "--bootstrap", "100", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "probe");
    let (stripes, dots) = (concepts.join("stripes"), concepts.join("dots"));
    let extra = [
        "--random-runs",
        "3",
        "--json",
        "--hooks",
        "stages.5.blocks.0.hook_out",
    ];
    let rows = score_rows(
        &tcav(&run, "class:zebra", &[&stripes, &dots], &extra),
        "tcav",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r["target"], "class:zebra");
        assert_eq!(r["n_targets"], 24);
        let score = r["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert!(r["cav_accuracy"].as_f64().unwrap() > 0.9, "{r}");
    }
    // A class the model does not have is named.
    let out = tcav(&run, "class:unicorn", &[&stripes], &[]);
    assert_bad_input(&out, &["class:unicorn", "id2label"]);

    // Dictionaries explain image runs by cell (vision_units_cli.rs); a hook with one position per
    // image has no cells: refused by name, and the stage is not marked complete.
    let out = glassbox()
        .args(["dictionary", "--hook", "hook_pooled", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_bad_input(&out, &["hook_pooled", "single position"]);
    let manifest = std::fs::read_to_string(run.join("manifest.json")).unwrap();
    assert!(!manifest.contains("\"dictionary\""), "{manifest}");

    let out = glassbox()
        .arg("report")
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "report");
    let md = std::fs::read_to_string(run.join("report/summary.md")).unwrap();
    assert!(
        md.contains("efficientnet_lite") && md.contains("class:zebra"),
        "{md}"
    );
    // The concept sets are shown as images (as the model saw them), not only named.
    let html = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    let strips = html
        .split("<h3>Concept sets</h3>")
        .nth(1)
        .unwrap_or_default();
    assert!(
        strips.contains("<code>stripes</code> <img") && strips.contains("<code>dots</code> <img"),
        "no concept images in the TCAV section"
    );
}

#[test]
fn bad_images_are_named() {
    if !model_present("bad_images_are_named") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    textures(&data, "dots", "2", "0");
    // Grayscale + alpha is converted (documented), a corrupt file is an error naming it.
    image::GrayAlphaImage::from_pixel(40, 30, image::LumaA([90, 128]))
        .save(data.join("dots/gray.png"))
        .unwrap();
    let run = tmp.path().join("run");
    let out = extract(&data, &run, &["--allow-pickle"]);
    assert_success(&out, "extract with a grayscale+alpha image");
    std::fs::write(data.join("dots/broken.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let out = extract(&data, &tmp.path().join("run2"), &["--allow-pickle"]);
    assert_bad_input(&out, &["broken.png", "not a decodable image"]);
    assert!(
        !tmp.path().join("run2/manifest.json").exists() || {
            let m = std::fs::read_to_string(tmp.path().join("run2/manifest.json")).unwrap();
            !m.contains("\"extract\"")
        }
    );
    // A manifest row naming a missing file.
    let manifest = tmp.path().join("images.jsonl");
    std::fs::write(&manifest, "{\"image_path\": \"data/dots/0000.png\", \"y\": 1}\n{\"image_path\": \"data/nope.png\", \"y\": 0}\n").unwrap();
    let out = extract(&manifest, &tmp.path().join("run3"), &["--allow-pickle"]);
    assert_bad_input(&out, &["nope.png", "row 2"]);
}

/// CLIP needs no download (the committed tiny fixture): images go through its image tower into
/// the store, and a text prompt is a TCAV target (the zero-shot logit), with gradients from
/// autograd. ViT and ResNet fixtures list their hooks.
#[test]
fn clip_text_prompt_is_a_tcav_target() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("textures");
    let concepts = tmp.path().join("concepts");
    textures(&data, "stripes,dots", "6", "0");
    textures(&concepts, "stripes,dots", "10", "1");
    let model = workspace_root().join("tests/fixtures/tiny_clip");
    let run = tmp.path().join("run");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .args([
            "--hooks",
            "blocks.*.hook_resid_post,hook_pooled",
            "--no-token-level",
            "--run",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "extract (clip)");
    let zebra = "text:a photo of a zebra";
    let (stripes, dots) = (concepts.join("stripes"), concepts.join("dots"));
    let out = tcav(
        &run,
        zebra,
        &[&stripes, &dots],
        &["--random-runs", "3", "--json"],
    );
    let rows = score_rows(&out, "tcav (clip text target)");
    // 2 concepts × 2 default hooks (every block's hook_resid_post).
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["target"] == zebra && r["n_targets"] == 12));
    // Concepts defined by prompts live where images and text meet (`hook_embeds`), against
    // random prompts from the built-in corpus.
    let prompts = tmp.path().join("striped.jsonl");
    let lines: String = [
        "stripes",
        "a striped pattern",
        "zebra stripes",
        "black and white stripes",
        "striped fabric",
        "a striped shirt",
    ]
    .iter()
    .map(|t| format!("{{\"text\": \"{t}\"}}\n"))
    .collect();
    std::fs::write(&prompts, lines).unwrap();
    let extra = [
        "--random-runs",
        "3",
        "--min-concept-size",
        "5",
        "--json",
        "--force",
    ];
    let rows = score_rows(
        &tcav(&run, zebra, &[&prompts], &extra),
        "tcav (prompt concept)",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["hook"], "hook_embeds");
    assert_eq!(rows[0]["concept"], "striped");
    // Mixing prompt and image concepts is refused with the reason.
    let out = tcav(
        &run,
        zebra,
        &[&prompts, &dots],
        &["--min-concept-size", "5"],
    );
    assert_bad_input(&out, &["mix prompt files and image folders"]);
    // A class target on a model without classes is named.
    let out = tcav(&run, "class:zebra", &[&stripes], &[]);
    assert_bad_input(&out, &["class:zebra", "id2label"]);

    for (fixture, want) in [
        ("tiny_vit", "blocks.1.attn.hook_z"),
        ("tiny_resnet", "stages.1.blocks.0.hook_out"),
    ] {
        let out = glassbox()
            .arg("hooks")
            .arg(workspace_root().join("tests/fixtures").join(fixture))
            .output()
            .unwrap();
        assert_success(&out, "hooks");
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l == want),
            "{fixture}: {want}"
        );
    }
}
