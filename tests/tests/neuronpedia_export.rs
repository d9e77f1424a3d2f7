//! `glassbox export neuronpedia` on the committed tiny GPT-2 with a trained SAE: the export is
//! read back by Python (gzip and json, an independent reader); every record carries exactly the
//! fields of Neuronpedia's database models; each feature's vector is the SAE's decoder row (read
//! from its safetensors file); each activation's maximum and its index agree with its values;
//! a second export writes the same bytes; bad input is named with exit 2 and nothing written.

use glassbox_tests::*;
use std::path::Path;

/// The field sets of Neuronpedia's database models (`utils/neuronpedia-utils/neuronpedia_utils/
/// db_models/*.py` in hijohnnylin/neuronpedia), which its importer reads.
const CHECK: &str = r#"
import gzip, json, os, struct, sys
out, run = sys.argv[1], sys.argv[2]
FIELDS = {
    "release": "name description creatorName creatorId visibility isNewUi featured descriptionShort urls creatorEmail creatorNameShort defaultSourceSetName defaultSourceId defaultUmapSourceIds createdAt",
    "model": "id instruct creatorId displayNameShort displayName tlensId dimension visibility defaultSourceSetName defaultSourceId inferenceEnabled layers neuronsPerLayer createdAt owner updatedAt website",
    "sourceset": "modelId name creatorId hasDashboards visibility description type creatorName urls creatorEmail releaseName defaultOfModelId defaultRange defaultShowBreaks showDfa showCorrelated showHeadAttribution showUmap createdAt",
    "source": "id modelId setName creatorId hasDashboards inferenceEnabled inferenceHosts saelensConfig saelensRelease saelensSaeId hfRepoId hfFolderId visibility defaultOfModelId hasUmap hasUmapLogSparsity hasUmapClusters num_prompts num_tokens_in_prompt dataset notes createdAt",
    "features": "modelId layer index creatorId createdAt maxActApprox hasVector vector vectorLabel vectorDefaultSteerStrength hookName topkCosSimIndices topkCosSimValues neuron_alignment_indices neuron_alignment_values neuron_alignment_l1 correlated_neurons_indices correlated_neurons_pearson correlated_neurons_l1 correlated_features_indices correlated_features_pearson correlated_features_l1 neg_str neg_values pos_str pos_values frac_nonzero freq_hist_data_bar_heights freq_hist_data_bar_values logits_hist_data_bar_heights logits_hist_data_bar_values decoder_weights_dist",
    "activations": "id tokens index layer modelId maxValue maxValueTokenIndex minValue values creatorId dataSource dataIndex dfaValues dfaTargetIndex dfaMaxValue createdAt lossValues logitContributions binMin binMax binContains qualifyingTokenIndex",
    "explanations": "id modelId layer index description authorId embedding triggeredById typeName explanationModelName notes createdAt",
}
FIELDS = {k: set(v.split()) for k, v in FIELDS.items()}

def decoder(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header["W_dec"]
    assert meta["dtype"] == "F32", meta
    a, b = meta["data_offsets"]
    rows, width = meta["shape"]
    return [data[a + r * width * 4 : a + (r + 1) * width * 4] for r in range(rows)], width

[model] = os.listdir(out)
sources = sorted(os.listdir(os.path.join(out, model)))
assert sources == ["1-res-glassbox"], sources
folder = os.path.join(out, model, sources[0])
for name in ["release", "model", "sourceset", "source"]:
    with open(os.path.join(folder, name + ".jsonl")) as f:
        [record] = [json.loads(l) for l in f]
    assert set(record) == FIELDS[name], (name, set(record) ^ FIELDS[name])
def batch(kind):
    with gzip.open(os.path.join(folder, kind, "batch-0.jsonl.gz"), "rt") as f:
        rows = [json.loads(l) for l in f]
    for r in rows:
        assert set(r) == FIELDS[kind], (kind, set(r) ^ FIELDS[kind])
    return rows
w, d_in = decoder(os.path.join(run, "dictionary", "hook=blocks.1.hook_resid_post", "sae", "sae_weights.safetensors"))
features = batch("features")
assert len(features) == len(w), (len(features), len(w))
for f in features:
    row = w[int(f["index"])]
    # The vector, rounded back to f32, is the decoder row bit for bit.
    assert struct.pack("<%df" % d_in, *f["vector"]) == row, f["index"]
    values = struct.unpack("<%df" % d_in, row)
    assert f["hookName"] == "blocks.1.hook_resid_post" and f["layer"] == "1-res-glassbox"
    assert 0.0 <= f["frac_nonzero"] <= 1.0
    assert len(f["pos_str"]) == len(f["pos_values"]) > 0, "promoted tokens (a causal LM)"
    assert len(f["neg_str"]) == len(f["neg_values"]) == len(f["pos_values"]), "suppressed tokens"
    assert f["neg_values"] == sorted(f["neg_values"]) and f["pos_values"] == sorted(f["pos_values"], reverse=True)
    assert max(f["neg_values"]) <= min(f["pos_values"])
    i = f["neuron_alignment_indices"]
    assert len(i) == 3 and abs(values[i[0]]) == max(abs(v) for v in values)
activations = batch("activations")
assert activations, "top activations"
assert len({a["id"] for a in activations}) == len(activations), "unique ids"
live = {f["index"] for f in features if f["maxActApprox"] > 0}
for a in activations:
    assert len(a["tokens"]) == len(a["values"]) > 0
    assert a["maxValue"] == max(a["values"]) and a["values"][a["maxValueTokenIndex"]] == a["maxValue"]
    assert a["minValue"] == min(a["values"])
    assert a["index"] in live, a["index"]
for e in batch("explanations"):
    assert e["typeName"] == "glassbox-label-correlation" and "topic" in e["description"], e
    assert float(e["description"].split("r = ")[1].rstrip(")")) >= 0.3, e
for a in activations:
    assert not any("Ġ" in t for t in a["tokens"]), "tokens as text, not vocabulary spellings"
"#;

fn export(run: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    glassbox()
        .args(["export", "neuronpedia", "--run"])
        .arg(run)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_trained_sae_exports_as_neuronpedia_records() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_decoder_run("tiny_gpt2", &run, true, Some("topic"));
    let out = glassbox()
        .args([
            "dictionary",
            "--hook",
            "blocks.1.hook_resid_post",
            "--width",
            "32",
        ])
        .args(["--k", "4", "--label", "topic", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "dictionary");
    let (first, second) = (tmp.path().join("np1"), tmp.path().join("np2"));
    let out = export(&run, &first, &["--json"]);
    assert_success(&out, "export neuronpedia");
    let written: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(written[0]["features"], 32, "{written}");
    pyarrow_check("neuronpedia_export", CHECK, &[&first, &run]);
    assert_success(&export(&run, &second, &[]), "export again");
    let (a, b) = (snapshot(&first), snapshot(&second));
    assert!(a == b, "the same run exports the same bytes");
    // Exporting again into the same folder replaces it whole (staged beside it, then
    // renamed): the same files and bytes, no staging folder left (the snapshot lists folders).
    assert_success(&export(&run, &first, &[]), "export over the first");
    assert!(
        snapshot(&first) == a,
        "a re-export replaces the folder with the same bytes"
    );

    // Bad input: a hook without an SAE, a run without a dictionary; nothing written.
    let out = export(
        &run,
        &tmp.path().join("bad"),
        &["--hook", "blocks.0.hook_resid_post"],
    );
    assert_bad_input(
        &out,
        &[
            "no SAE at `blocks.0.hook_resid_post`",
            "blocks.1.hook_resid_post",
        ],
    );
    assert!(!tmp.path().join("bad").exists());
    // A pattern that matches no SAE, and --out naming a file.
    let out = export(&run, &tmp.path().join("bad"), &["--hook", "blocks.9.*"]);
    assert_bad_input(
        &out,
        &[
            "--hook blocks.9.*",
            "matches no SAE",
            "blocks.1.hook_resid_post",
        ],
    );
    assert!(!tmp.path().join("bad").exists());
    let file = tmp.path().join("a_file");
    std::fs::write(&file, b"keep").unwrap();
    let out = export(&run, &file, &[]);
    assert_bad_input(&out, &["a file, not a folder"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    // Inside the run directory, and ids that would nest or truncate the export's folders.
    let out = export(&run, &run.join("dictionary/np"), &[]);
    assert_bad_input(&out, &["inside the run directory"]);
    assert!(!run.join("dictionary/np").exists());
    for (flag, value) in [("--model-id", "org/name"), ("--source-set", "")] {
        let out = export(&run, &tmp.path().join("bad"), &[flag, value]);
        assert_bad_input(&out, &[flag, "URL path segments"]);
        assert!(!tmp.path().join("bad").exists());
    }
    let bare = tmp.path().join("bare");
    tiny_decoder_run("tiny_gpt2", &bare, false, None);
    let out = export(&bare, &tmp.path().join("bad"), &[]);
    assert_bad_input(
        &out,
        &["no completed `dictionary` stage", "glassbox dictionary"],
    );
    assert!(!tmp.path().join("bad").exists());
}
