//! Units of image runs through the CLI, on the committed tiny ResNet: `glassbox textures
//! --masks` → extract (per-cell rows) → `glassbox dissect`, and an SAE and the channels of an
//! image run explained by `glassbox dictionary` (cells in place of tokens), the tables read back
//! with pyarrow; and the refusals: a mask of the wrong size, a missing mask file, a concept with
//! no masked pixels, a hook with one position (dissect and dictionary), a run without per-cell
//! rows, a text run, a bad setting — each exit 2, named, the run byte-identical. And planted
//! units through real forwards: a ViT whose patch embedding's channel 0 is a stripes detector
//! (dissected as stripes with IoU 1, the 31 other channels unlabelled, an SAE feature along
//! it: |cos| 0.98), and a ResNet whose one stem channel fires on red (dissected as red, IoU 0.88 through
//! the stem's max-pool, the dead channels unlabelled, an SAE feature along it).

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
    grid = json.load(open(f"{d}/hook={hook}/grid.json"))
    assert grid["rows"]["cells"] == cells and grid["class_token"] is False, grid
labels = pq.read_table(f"{d}/hook=hook_stem/feature_labels.parquet").to_pylist()
assert {l["label"] for l in labels} == {"label"}, labels[:2]
"#,
        &[&run.join("dictionary")],
    );
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

/// A ResNet built by hand (basic block, 4 channels, every weight zero but the stem's channel 0,
/// which computes `ReLU(10·(R − G − B) − 5.5)` from its centre tap: positive on the composites'
/// pure red, `(220, 30, 30)`), and a preprocessor that feeds pixels as they are.
fn red_detector(dir: &Path) {
    use safetensors::tensor::TensorView;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "resnet", "layer_type": "basic", "num_channels": 3, "embedding_size": 4,
            "hidden_sizes": [4], "depths": [1], "hidden_act": "relu", "image_size": 192}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"do_resize": false, "do_center_crop": false, "do_rescale": true,
            "rescale_factor": 0.00392156862745098, "do_normalize": false}"#,
    )
    .unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut stem = vec![0f32; 4 * 3 * 7 * 7];
    for (c, w) in [10.0, -10.0, -10.0].into_iter().enumerate() {
        stem[(c * 7 + 3) * 7 + 3] = w; // channel 0, input c, the centre tap
    }
    let mut conv = |name: &str, shape: Vec<usize>, weight: Vec<f32>, beta: [f32; 4]| {
        let n = shape.iter().product::<usize>();
        tensors.push((
            format!("resnet.{name}.convolution.weight"),
            shape,
            if weight.is_empty() {
                vec![0.0; n]
            } else {
                weight
            },
        ));
        // Batch norm as the identity plus `beta` (var + ε = 1).
        for (part, v) in [
            ("weight", [1.0; 4]),
            ("bias", beta),
            ("running_mean", [0.0; 4]),
            ("running_var", [1.0 - 1e-5; 4]),
        ] {
            tensors.push((
                format!("resnet.{name}.normalization.{part}"),
                vec![4],
                v.to_vec(),
            ));
        }
    };
    conv(
        "embedder.embedder",
        vec![4, 3, 7, 7],
        stem,
        [-5.5, 0.0, 0.0, 0.0],
    );
    for layer in 0..2 {
        conv(
            &format!("encoder.stages.0.layers.0.layer.{layer}"),
            vec![4, 4, 3, 3],
            Vec::new(),
            [0.0; 4],
        );
    }
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, v.iter().flat_map(|x| x.to_le_bytes()).collect(), s))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn a_hand_built_red_channel_is_dissected_as_red_and_found_by_an_sae() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("red-detector");
    red_detector(&model);
    let masked = tmp.path().join("masked");
    let out = glassbox()
        .args([
            "textures",
            "--masks",
            "--per-class",
            "6",
            "--size",
            "192",
            "--seed",
            "11",
            "--out",
        ])
        .arg(&masked)
        .output()
        .unwrap();
    assert_success(&out, "textures --masks");
    let run = tmp.path().join("run");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(masked.join("dataset.jsonl"))
        .args(["--hooks", "hook_stem", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "extract (hand-built ResNet)");
    assert_success(&dissect(&run, &[]), "dissect");
    assert_success(
        &glassbox()
            .args([
                "dictionary",
                "--hook",
                "hook_stem",
                "--width",
                "8",
                "--k",
                "1",
                "--batch-size",
                "256",
                "--train-tokens",
                "200000",
                "--run",
            ])
            .arg(&run)
            .output()
            .unwrap(),
        "dictionary",
    );
    pyarrow_check(
        "vision_units_cli",
        r#"
import sys, struct, json, pyarrow.parquet as pq
run = sys.argv[1]
units = {u["unit"]: u for u in pq.read_table(run + "/dissection/units.parquet").to_pylist()}
red = units[0]
print("planted red channel:", red)
assert red["concept"] == "red" and red["labelled"], red
# IoU 0.88 at 192 px: the stem's 3×3/2 max-pool widens the channel's region by a few pixels
# around each red area (0.77 at 96 px), so not 1.
assert red["iou"] > 0.8, red["iou"]
for u in (1, 2, 3):
    assert not units[u]["labelled"] and units[u]["active_fraction"] == 0.0, units[u]
# An SAE feature on the same pattern: a decoder row along channel 0.
raw = open(run + "/dictionary/hook=hook_stem/sae/sae_weights.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
meta = head["W_dec"]
a, b = meta["data_offsets"]
rows, width = meta["shape"]
w = struct.unpack(f"<{rows * width}f", raw[8 + n + a:8 + n + b])
best = max(abs(w[r * width]) / max(1e-12, sum(v * v for v in w[r * width:(r + 1) * width]) ** 0.5) for r in range(rows))
assert best > 0.99, best
"#,
        &[&run],
    );
}

/// The committed tiny ViT with its patch embedding replaced by hand: channel 0 is a horizontal
/// stripes detector for stripes of period 4 aligned to the 8-px patches (+1 on a patch's rows
/// 0, 1, 4, 5, −1 on the others, every colour), every other channel zero. The preprocessor feeds
/// pixels as `(p/255 − 0.5)/0.5`.
fn stripes_vit(dir: &Path) {
    use safetensors::tensor::TensorView;
    std::fs::create_dir_all(dir).unwrap();
    let fixture = workspace_root().join("tests/fixtures/tiny_vit");
    std::fs::copy(fixture.join("config.json"), dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"do_resize": false, "do_center_crop": false, "do_rescale": true,
            "rescale_factor": 0.00392156862745098, "do_normalize": true,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}"#,
    )
    .unwrap();
    let bytes = std::fs::read(fixture.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = if name.ends_with("patch_embeddings.projection.weight") {
            let (p, per) = (shape[2], shape[1] * shape[2] * shape[3]);
            let mut w = vec![0f32; shape[0] * per];
            for c in 0..shape[1] {
                for r in 0..p {
                    for k in 0..p {
                        w[(c * p + r) * p + k] = if r % 4 < 2 { 1.0 } else { -1.0 };
                    }
                }
            }
            w.iter().flat_map(|x| x.to_le_bytes()).collect()
        } else if name.ends_with("patch_embeddings.projection.bias") {
            vec![0u8; view.data().len()]
        } else {
            view.data().to_vec()
        };
        owned.push((name, shape, data));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

/// 32 × 32 images on mid grey: a band of whole patch rows of horizontal stripes (period 4,
/// aligned to the patches) across the image, and a white patch elsewhere, with both masks.
/// Returns the manifest and how many patches hold stripes.
fn stripes_data(dir: &Path, n: usize) -> (PathBuf, usize) {
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    let mut lines = Vec::new();
    let mut striped = 0;
    for i in 0..n {
        let (r0, r1) = (i % 3, i % 3 + i % 2);
        let square = (3, i % 4); // patch row 3 is never in the band
        let mut img = image::RgbImage::from_pixel(32, 32, image::Rgb([128, 128, 128]));
        let mut stripes = image::GrayImage::new(32, 32);
        let mut white = image::GrayImage::new(32, 32);
        for y in 0..32u32 {
            for x in 0..32u32 {
                let row = y as usize / 8;
                if (r0..=r1).contains(&row) {
                    let v = if y % 4 < 2 { 255 } else { 0 };
                    img.put_pixel(x, y, image::Rgb([v, v, v]));
                    stripes.put_pixel(x, y, image::Luma([255]));
                } else if (row, x as usize / 8) == square {
                    img.put_pixel(x, y, image::Rgb([255, 255, 255]));
                    white.put_pixel(x, y, image::Luma([255]));
                }
            }
        }
        striped += (r1 - r0 + 1) * 4;
        img.save(dir.join(format!("{i}.png"))).unwrap();
        stripes
            .save(dir.join(format!("masks/{i}-stripes.png")))
            .unwrap();
        white
            .save(dir.join(format!("masks/{i}-square.png")))
            .unwrap();
        lines.push(format!(
            r#"{{"image_path": "{i}.png", "label": "{}", "mask_stripes": "masks/{i}-stripes.png", "mask_square": "masks/{i}-square.png"}}"#,
            if i % 2 == 0 { "thin" } else { "wide" }
        ));
    }
    let manifest = dir.join("dataset.jsonl");
    std::fs::write(&manifest, lines.join("\n") + "\n").unwrap();
    (manifest, striped)
}

#[test]
fn a_hand_built_stripes_channel_is_dissected_as_stripes_with_iou_one() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("stripes-vit");
    stripes_vit(&model);
    let n = 24;
    let (data, striped) = stripes_data(&tmp.path().join("data"), n);
    let run = tmp.path().join("run");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .args(["--hooks", "hook_embed", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "extract (hand-built ViT)");
    // The top quantile as large as the stripes' share of the patches: the unit is on exactly
    // where it fires.
    let quantile = (striped as f64 - 0.5) / (n * 16) as f64;
    assert_success(
        &dissect(&run, &["--quantile", &quantile.to_string()]),
        "dissect",
    );
    pyarrow_check(
        "vision_units_cli",
        r#"
import sys, pyarrow.parquet as pq
units = {u["unit"]: u for u in pq.read_table(sys.argv[1] + "/dissection/units.parquet").to_pylist()}
stripes = units[0]
assert stripes["concept"] == "stripes" and stripes["labelled"], stripes
assert stripes["iou"] > 0.999, stripes["iou"]
others = [u for k, u in units.items() if k != 0]
assert len(others) == 31 and not any(u["labelled"] for u in others), [u for u in others if u["labelled"]]
"#,
        &[&run],
    );
    // Its SAE feature: an SAE on the patch tokens has a decoder row along channel 0.
    assert_success(
        &glassbox()
            .args([
                "dictionary",
                "--hook",
                "hook_embed",
                "--width",
                "8",
                "--k",
                "1",
            ])
            .args(["--batch-size", "256", "--train-tokens", "200000", "--run"])
            .arg(&run)
            .output()
            .unwrap(),
        "dictionary (hand-built ViT)",
    );
    let bytes =
        std::fs::read(run.join("dictionary/hook=hook_embed/sae/sae_weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("W_dec").unwrap();
    let (rows, width) = (w.shape()[0], w.shape()[1]);
    let v: Vec<f32> = w
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let best = (0..rows)
        .map(|r| {
            let row = &v[r * width..(r + 1) * width];
            row[0].abs() / row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12)
        })
        .fold(0f32, f32::max);
    // 0.98: the data are two points (striped patches and zeros), which a TopK SAE fits with a
    // row near, not exactly on, the axis; a random row in 32 dimensions is near 0.2.
    assert!(
        best > 0.95,
        "no SAE feature along the stripes channel (best |cos| {best})"
    );
}
