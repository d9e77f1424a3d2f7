//! Probes of an image run as targets (`probe:<label>=<class>@<hook>`), end to end on the committed
//! tiny ResNet over generated textures with a probe of the texture label at stage 0: input
//! attributions (the backward starts at the probe's hook) and TCAV (the probe's class's images,
//! CAVs at or before its hook). Tables read back by pyarrow; refusals leave the run unchanged.

use glassbox_tests::{assert_bad_input, assert_success, glassbox, pyarrow_check, snapshot};
use std::path::{Path, PathBuf};

const TARGET: &str = "probe:label=stripes@stages.0.blocks.1.hook_out";

/// `glassbox textures` of stripes and dots, `per_class` each, at 32 px.
fn textures(out: &Path, per_class: &str) {
    let o = glassbox()
        .args([
            "textures",
            "--kinds",
            "stripes,dots",
            "--per-class",
            per_class,
        ])
        .args(["--size", "32", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert_success(&o, "textures");
}

/// The tiny ResNet's run over 8 + 8 textures, stage 0's output and the pooled features stored,
/// the texture label probed.
fn probed_run(dir: &Path) -> PathBuf {
    let images = dir.join("images");
    textures(&images, "8");
    let run = dir.join("run");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(glassbox_tests::workspace_root().join("tests/fixtures/tiny_resnet"))
        .arg("--data")
        .arg(&images)
        .args(["--hooks", "stages.0.blocks.1.hook_out,hook_pooled", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "extract (tiny ResNet)");
    let out = glassbox()
        .args(["probe", "--label", "label", "--bootstrap", "20", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "probe");
    run
}

/// Attributions of the probe: IG complete from the probe's hook down, Grad-CAM at the probe's
/// own map by default, the label-randomisation check run; a Grad-CAM hook after the probe's is
/// refused with the run unchanged.
#[test]
fn image_probe_targets_are_explained_from_their_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let run = probed_run(tmp.path());
    let attribute = |extra: &[&str]| {
        glassbox()
            .args(["attribute", "--run"])
            .arg(&run)
            .args(["--target", TARGET, "--method", "saliency,ig,grad_cam"])
            .args([
                "--max-examples",
                "2",
                "--steps",
                "32",
                "--sanity-examples",
                "2",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let before = snapshot(&run);
    let out = attribute(&["--cam-hook", "stages.1.blocks.0.hook_out"]);
    assert_bad_input(&out, &[TARGET, "comes after the probe's hook"]);
    assert_eq!(
        before,
        snapshot(&run),
        "a refused attribute leaves the run unchanged"
    );
    let out = attribute(&[]);
    assert_success(&out, "attribute (image probe)");
    pyarrow_check(
        "vision_probe_targets (attribute)",
        r#"
import os, sys, pyarrow.parquet as pq, pyarrow.dataset as ds
root = sys.argv[1] + "/attributions"
s = pq.read_table(root + "/summary.parquet").to_pylist()
assert {r["method"] for r in s} == {"saliency", "integrated_gradients", "grad_cam"}, s
ig = [r for r in s if r["method"] == "integrated_gradients"]
assert len(ig) == 2 and all(r["completeness_error"] < 0.05 for r in ig), ig
assert all(abs(r["f_input"] - r["f_baseline"]) > 1e-6 for r in ig), ig
sanity = pq.read_table(root + "/sanity.parquet").to_pylist()
assert {r["randomization"] for r in sanity} == {"cascade", "independent", "labels"}, sanity[:3]
dirs = os.listdir(root + "/method=grad_cam")
assert len(dirs) == 1, dirs
cam = ds.dataset(root + "/method=grad_cam/" + dirs[0], format="parquet").to_table().to_pylist()
assert len(cam) == 2 * 64 * 64 and any(r["attribution"] != 0 for r in cam), len(cam)
# f is the probe's logit of `stripes` (class 1 of dots/stripes) on the stored pooled rows:
# the probe's weights read straight from the safetensors layout.
import json, struct
raw = open(sys.argv[1] + "/probes/weights.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
def tensor(name):
    a, b = header[name]["data_offsets"]
    return struct.unpack("<%df" % ((b - a) // 4), raw[8 + n + a:8 + n + b])
key = "sequence/label/stages.0.blocks.1.hook_out/"
w, b = tensor(key + "weight"), tensor(key + "bias")[0]
pooled = ds.dataset(sys.argv[1] + "/pooled/hook=stages.0.blocks.1.hook_out/pool=mean", format="parquet").to_table().to_pydict()
acts = dict(zip(pooled["example_id"], pooled["act"]))
for r in s:
    z = sum(x * y for x, y in zip(acts[r["example_id"]], w)) + b
    assert abs(r["f_input"] - z) <= 1e-4 * max(1.0, abs(z)), (r["f_input"], z)
"#,
        &[&run],
    );
}

/// TCAV of the probe: scored on the 8 images of its class at hooks up to the probe's; a CAV hook
/// after the probe's is refused before any work, the run unchanged.
#[test]
fn image_probe_targets_get_tcav_scores_from_their_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let run = probed_run(tmp.path());
    let concepts = tmp.path().join("concepts");
    textures(&concepts, "12");
    let tcav = |hooks: &str| {
        glassbox()
            .args(["tcav", "--target", TARGET, "--concepts"])
            .arg(format!(
                "{},{}",
                concepts.join("stripes").display(),
                concepts.join("dots").display()
            ))
            .args(["--hooks", hooks, "--random-runs", "3", "--json", "--run"])
            .arg(&run)
            .output()
            .unwrap()
    };
    let before = snapshot(&run);
    let out = tcav("stages.1.blocks.0.hook_out");
    assert_bad_input(&out, &[TARGET, "comes after the probe's hook"]);
    assert_eq!(
        before,
        snapshot(&run),
        "a refused tcav leaves the run unchanged"
    );
    let out = tcav("stages.0.blocks.0.hook_out,stages.0.blocks.1.hook_out");
    assert_success(&out, "tcav (image probe)");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 4, "2 concepts × 2 hooks: {rows:?}");
    for r in &rows {
        assert_eq!(r["target"], TARGET);
        assert_eq!(r["n_targets"], 8, "the probe class's images: {r}");
        let score = r["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{r}");
    }
}
