//! `glassbox pipeline` on the shipped default config with the real all-MiniLM-L6-v2: the
//! activations match PyTorch `transformers`, the Parquet reads back with pyarrow, and the
//! probe, TCAV, dictionary (`analysis`) and report (`report`) stages produce their files, and
//! polars, DuckDB and pandas open the run as the cookbook shows (`notebooks`).
//! One test binary, so the pipeline runs once for all of them.

mod analysis;
mod notebooks;
mod report;

use glassbox_data::examples::read_examples;
use glassbox_data::store::{read_metadata, read_parts, read_pooled_matrix};
use glassbox_data::RunDir;
use glassbox_tests::*;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One pipeline run shared by the tests of this file (they only read it).
fn default_run() -> Option<&'static PathBuf> {
    static RUN: OnceLock<Option<PathBuf>> = OnceLock::new();
    RUN.get_or_init(|| {
        require_minilm("default pipeline")?;
        let dir = tempfile::tempdir().expect("tempdir").keep().join("run");
        let out = glassbox()
            .args(["pipeline", "--config", "pipelines/default.toml", "--run"])
            .arg(&dir)
            .output()
            .expect("run glassbox");
        assert_success(&out, "glassbox pipeline");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("report: "),
            "the report path is printed:\n{stdout}"
        );
        Some(dir)
    })
    .as_ref()
}

const RESID_HOOKS: [&str; 7] = [
    "blocks.0.hook_resid_pre",
    "blocks.0.hook_resid_post",
    "blocks.1.hook_resid_post",
    "blocks.2.hook_resid_post",
    "blocks.3.hook_resid_post",
    "blocks.4.hook_resid_post",
    "blocks.5.hook_resid_post",
];

#[test]
fn default_pipeline_activations_match_pytorch_hidden_states() {
    let Some(dir) = default_run() else { return };
    let run = RunDir::new(dir);
    let (reference, n_default) = minilm_reference();
    let examples = read_examples(&run).unwrap();
    let mut worst = 0f32;
    for (layer, hook) in RESID_HOOKS.iter().enumerate() {
        let rows = token_rows(&run, hook);
        assert_eq!(
            rows.len(),
            examples.example_ids.len(),
            "{hook}: one entry per example"
        );
        let mean = read_pooled_matrix(
            &run.pooled_dir(glassbox_tests::hook_point(hook), glassbox_data::Pool::Mean),
        )
        .unwrap();
        let cls = read_pooled_matrix(
            &run.pooled_dir(glassbox_tests::hook_point(hook), glassbox_data::Pool::Cls),
        )
        .unwrap();
        for (id, r) in reference.iter().take(n_default).enumerate() {
            assert_eq!(
                examples.texts[id], r.text,
                "reference texts are the first examples"
            );
            let ours = &rows[&(id as u64)];
            let theirs = &r.hidden_states[layer];
            assert_eq!(ours.len(), theirs.len(), "{hook} example {id}: token count");
            for (a, b) in ours.iter().zip(theirs) {
                worst = worst.max(max_abs_diff(a, b));
            }
            // Pools over the reference's tokens (no padding exists there).
            let width = theirs[0].len();
            let ref_mean: Vec<f32> = (0..width)
                .map(|u| theirs.iter().map(|t| t[u]).sum::<f32>() / theirs.len() as f32)
                .collect();
            let row = |m: &glassbox_data::store::PooledMatrix| {
                m.values[id * m.width..(id + 1) * m.width].to_vec()
            };
            assert!(
                max_abs_diff(&row(&mean), &ref_mean) <= 1e-4,
                "{hook} mean pool"
            );
            assert!(
                max_abs_diff(&row(&cls), &theirs[0]) <= 1e-4,
                "{hook} cls pool"
            );
        }
    }
    eprintln!("max |glassbox - transformers| over 7 hidden states: {worst:e}");
    assert!(worst <= 1e-4, "max abs difference {worst} exceeds 1e-4");
}

#[test]
fn store_layout_metadata_and_counts() {
    let Some(dir) = default_run() else { return };
    let run = RunDir::new(dir);
    let examples = read_examples(&run).unwrap();
    assert_eq!(examples.example_ids.len(), 300);
    let total_tokens: usize = examples.n_tokens.iter().map(|&n| n as usize).sum();
    assert_eq!(run.stored_hooks(false).unwrap().len(), 7);
    for hook in RESID_HOOKS {
        let mut n = 0;
        read_parts(
            &run.activations_dir(glassbox_tests::hook_point(hook)),
            |b| {
                assert_eq!(b.width, 384);
                n += b.example_ids.len();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            n, total_tokens,
            "{hook}: one row per kept token, padding excluded"
        );
        let part = run
            .activations_dir(glassbox_tests::hook_point(hook))
            .join("part-00000.parquet");
        let kv = read_metadata(&part).unwrap();
        assert_eq!(kv["glassbox.model_id"], MINILM);
        assert_eq!(kv["glassbox.hook"], hook);
        assert_eq!(kv["glassbox.dtype"], "f32");
        assert_eq!(kv["glassbox.width"], "384");
        assert_eq!(kv["glassbox.revision"].len(), 40, "a resolved commit sha");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.manifest()).unwrap()).unwrap();
    assert_eq!(manifest["model"]["id"], MINILM);
    assert_eq!(manifest["model"]["revision"].as_str().unwrap().len(), 40);
    assert_eq!(manifest["data"]["n_tokens"], total_tokens as u64);
    for stage in ["extract", "probe", "tcav", "report"] {
        assert!(
            manifest["stages"][stage]["fingerprint"].is_string(),
            "{stage} recorded"
        );
    }
    assert_eq!(manifest["stages"]["probe"]["seed"], 0);
    assert!(
        !run.root().join("_progress").exists(),
        "no scratch state left behind"
    );
    assert!(run.config().exists());
}

#[test]
fn rerunning_the_pipeline_skips_up_to_date_stages() {
    let Some(dir) = default_run() else { return };
    let before = std::fs::read_to_string(RunDir::new(dir).manifest()).unwrap();
    let out = glassbox()
        .args(["pipeline", "--config", "pipelines/default.toml", "--run"])
        .arg(dir)
        .output()
        .unwrap();
    assert_success(&out, "second pipeline run");
    let after = std::fs::read_to_string(RunDir::new(dir).manifest()).unwrap();
    assert_eq!(
        before, after,
        "nothing re-ran, so the manifest is unchanged"
    );
}

#[test]
fn pyarrow_reads_the_run_independently() {
    let Some(dir) = default_run() else { return };
    let Some(python) = python_or_skip("pyarrow_reads_the_run_independently", "pyarrow") else {
        return;
    };
    let run = RunDir::new(dir);
    // Our own reader's view, to compare values with pyarrow's.
    let rows = token_rows(&run, "blocks.3.hook_resid_post");
    let probe_value = rows[&7][2][5];
    let script = workspace_root().join("tests/scripts/read_run.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert_success(&out, "pyarrow reader");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let examples = read_examples(&run).unwrap();
    let total_tokens: u64 = examples.n_tokens.iter().map(|&n| n as u64).sum();
    assert_eq!(report["examples"], 300);
    assert_eq!(report["tokens_rows"], total_tokens);
    assert_eq!(report["hooks"].as_array().unwrap().len(), 7);
    assert_eq!(report["activation_rows"], total_tokens * 7);
    assert_eq!(
        report["act_type"],
        "fixed_size_list<item: float not null>[384]"
    );
    assert_eq!(report["pooled_mean_rows"], 300 * 7);
    assert_eq!(report["distinct_keys_per_hook"], total_tokens);
    let theirs = report["value_ex7_pos2_unit5"].as_f64().unwrap() as f32;
    assert_eq!(
        theirs, probe_value,
        "pyarrow and glassbox read the same float"
    );
    assert_eq!(report["metadata_hook"], "blocks.3.hook_resid_post");
    assert_eq!(report["probe_results"], 21);
    assert_eq!(
        report["probe_levels"],
        serde_json::json!(["sequence", "token"])
    );
    assert!(report["tokens_with_span"].as_u64().unwrap() > 0);
    assert_eq!(report["sae_features"], 768);
    assert_eq!(report["sae_neurons"], 384);
    assert_eq!(
        report["sae_weight_shapes"],
        serde_json::json!({"W_dec": [768, 384], "W_enc": [384, 768], "b_dec": [384], "b_enc": [768]})
    );
    assert_eq!(
        report["feature_example_types"],
        serde_json::json!({"context_activations": "list<item: float>", "context_tokens": "list<item: string>"})
    );
    // Sparse probing: every class of `topic` (4) and `sentence_type` (3) against the rest, at
    // the five default k.
    assert_eq!(report["sparse_probing_rows"], 7 * 5);
    assert_eq!(report["sparse_probing_units_type"], "list<item: uint32>");
    assert_eq!(report["sparse_probing_tasks"].as_array().unwrap().len(), 7);
    // Feature absorption: MiniLM's block 3 does not carry first letters linearly on these
    // sentences (no probe reaches F1 0.6), so every letter with tokens is listed, none measured.
    let letters = report["absorption_letters"].as_u64().unwrap();
    assert!(letters >= 10, "{letters} letters with tokens");
    assert_eq!(report["absorption_measured"], 0);
    for column in ["letter", "probe_f1", "main_latents", "full_absorption_rate"] {
        assert!(
            report["absorption_columns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == column),
            "{column}"
        );
    }
    let ours = glassbox_probes::read_results(&run).unwrap();
    let best = ours.iter().map(|r| r.score).fold(f64::MIN, f64::max);
    assert_eq!(report["probe_best_score"].as_f64().unwrap(), best);
}

#[test]
fn inspect_summarises_the_run() {
    let Some(dir) = default_run() else { return };
    let out = glassbox().arg("inspect").arg(dir).output().unwrap();
    assert_success(&out, "inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(MINILM) && text.contains("blocks.5.hook_resid_post"),
        "{text}"
    );
    let out = glassbox()
        .args(["inspect", "--json"])
        .arg(dir)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["hooks"].as_array().unwrap().len(), 7);
}

#[test]
fn hooks_lists_every_hook_point() {
    if require_minilm("hooks_lists_every_hook_point").is_none() {
        return;
    }
    let out = glassbox().args(["hooks", MINILM]).output().unwrap();
    assert_success(&out, "glassbox hooks");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3 + 6 * 10, "embeddings + 10 hooks per block");
    assert_eq!(
        &lines[..4],
        [
            "hook_embed",
            "hook_pos_embed",
            "hook_token_type_embed",
            "blocks.0.hook_resid_pre"
        ]
    );
    assert_eq!(
        &lines[4..13],
        [
            "blocks.0.attn.hook_q",
            "blocks.0.attn.hook_k",
            "blocks.0.attn.hook_v",
            "blocks.0.attn.hook_z",
            "blocks.0.hook_attn_out",
            "blocks.0.hook_resid_mid",
            "blocks.0.mlp.hook_post",
            "blocks.0.hook_mlp_out",
            "blocks.0.hook_resid_post",
        ]
    );
    assert_eq!(lines.last(), Some(&"blocks.5.hook_resid_post"));
}
