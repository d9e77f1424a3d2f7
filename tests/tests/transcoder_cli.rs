//! Transcoders through the CLI on the committed tiny GPT-2: one trained from `hook_resid_mid`
//! to `hook_mlp_out` with a skip connection — its metrics, the spliced-MLP next-token loss, the
//! sparsify and circuit-tracer files (read back with the safetensors crate), the features
//! table (read with pyarrow), the report's listing —, loaded back from its own sparsify folder to the same metrics,
//! and bad specifications refused with exit 2 and the run unchanged.

use glassbox_data::RunDir;
use glassbox_tests::*;
use std::path::Path;

const SPEC: &str = "blocks.1.hook_resid_mid->blocks.1.hook_mlp_out";

fn extracted(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("run");
    let out = glassbox()
        .args(["extract", "--model"])
        .arg(workspace_root().join("tests/fixtures/tiny_gpt2"))
        .arg("--data")
        .arg(workspace_root().join("data/sets/default.jsonl"))
        .args([
            "--hooks",
            "blocks.1.hook_resid_mid,blocks.1.hook_mlp_out,blocks.1.mlp.hook_post",
            "--max-length",
            "64",
            "--run",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "extract");
    run
}

fn dictionary(run: &Path, transcoder: &str) -> std::process::Output {
    glassbox()
        .args(["dictionary", "--run"])
        .arg(run)
        .args(["--transcoder", transcoder])
        .args(["--width", "64", "--k", "4", "--train-tokens", "50000"])
        .args(["--batch-size", "256", "--no-sparse-probing", "--json"])
        .output()
        .unwrap()
}

fn metrics(run: &Path) -> serde_json::Value {
    let dir = RunDir::new(run).transcoder_dir(hook_point("blocks.1.hook_mlp_out"));
    serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn a_transcoder_trains_splices_saves_and_loads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let run = extracted(tmp.path());
    // Probes first: the dictionary explains against their directions, and the report shows it.
    let out = glassbox()
        .args(["probe", "--label", "topic", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "probe");
    let out = dictionary(&run, &format!("{SPEC}+skip"));
    assert_success(&out, "dictionary --transcoder");
    let m = metrics(&run);
    let block = &m["transcoder"];
    assert_eq!(block["input_hook"], "blocks.1.hook_resid_mid");
    assert_eq!(block["skip_connection"], true);
    assert_eq!(
        block["formats"],
        serde_json::json!(["sparsify", "circuit_tracer"])
    );
    let fvu = m["sae"]["fvu"].as_f64().unwrap();
    assert!(fvu < 0.5, "held-out FVU of the MLP output {fvu}");
    // Splicing it in for the MLP keeps most of the next-token loss the MLP is worth.
    let recovered = m["splice"]["ce_loss_recovered"].as_f64().unwrap();
    assert!(
        recovered > 0.5 && recovered <= 1.05,
        "CE recovered {recovered}"
    );
    assert!(m["splice"]["tokens"].as_u64().unwrap() > 100);

    let dir = RunDir::new(&run).transcoder_dir(hook_point("blocks.1.hook_mlp_out"));
    let bytes = std::fs::read(dir.join("sparsify/sae.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("encoder.weight").unwrap().shape(), &[64, 32]);
    assert_eq!(st.tensor("W_skip").unwrap().shape(), &[32, 32]);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("sparsify/cfg.json")).unwrap()).unwrap();
    assert_eq!(
        (cfg["transcode"].as_bool(), cfg["k"].as_u64()),
        (Some(true), Some(4))
    );
    // `sae inspect` reads the hooks glassbox recorded in the sparsify config.
    let out = glassbox()
        .args(["sae", "inspect", "--json"])
        .arg(dir.join("sparsify"))
        .output()
        .unwrap();
    assert_success(&out, "sae inspect");
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        inspected["hook_name"], "blocks.1.hook_resid_mid",
        "{inspected}"
    );
    let bytes = std::fs::read(dir.join("circuit_tracer/layer_1.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("W_dec").unwrap().shape(), &[64, 32]);
    pyarrow_check(
        "a_transcoder_trains_splices_saves_and_loads_back",
        "import pyarrow.parquet as pq, sys\n\
         t = pq.read_table(sys.argv[1] + '/features.parquet')\n\
         assert t.num_rows == 64, t.num_rows\n\
         assert sum(t.column('active_rows').to_pylist()) > 0\n",
        &[&dir],
    );

    // The report lists it as `input → output`, with its own unit pages.
    let out = glassbox()
        .args(["report", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "report");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report/summary.json")).unwrap()).unwrap();
    let finding = summary["dictionary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "transcoder_features")
        .expect("the transcoder in summary.json");
    assert_eq!(finding["input_hook"], "blocks.1.hook_resid_mid");
    let html = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    assert!(html.contains("blocks.1.hook_resid_mid → blocks.1.hook_mlp_out"));
    assert!(run
        .join("report/units/blocks.1.hook_mlp_out/transcoder_features-000.html")
        .exists());

    // The saved folder, loaded as a pretrained transcoder, measures the same on every row.
    let saved = tmp.path().join("saved");
    glassbox_tests::sharded::copy_run(&dir.join("sparsify"), &saved);
    let out = dictionary(&run, &format!("{SPEC}={}", saved.display()));
    assert_success(&out, "dictionary --transcoder …=FOLDER");
    let loaded = metrics(&run);
    assert_eq!(loaded["source"], "loaded transcoder");
    assert!(loaded["eval_rows"].as_u64() > m["eval_rows"].as_u64());
}

#[test]
fn bad_transcoder_specs_are_named_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = extracted(tmp.path());
    let before = snapshot(&run);
    for (spec, says) in [
        (
            "blocks.1.hook_mlp_out->blocks.1.hook_resid_mid",
            "must come before the output",
        ),
        (
            "blocks.1.hook_resid_mid->blocks.1.mlp.hook_post",
            "a transcoder maps between hooks of one width",
        ),
        ("blocks.1.hook_resid_mid", "a transcoder is `IN->OUT`"),
        (
            "blocks.0.hook_resid_mid->blocks.0.hook_mlp_out",
            "not in the store",
        ),
    ] {
        let out = dictionary(&run, spec);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert!(err.contains(says), "{spec}: {err}");
        assert!(snapshot(&run) == before, "{spec} changed the run");
    }
}
