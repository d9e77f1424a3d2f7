//! `glassbox pipeline` on the shipped default config with the real all-MiniLM-L6-v2: the
//! activations match PyTorch `transformers`, the Parquet reads back with pyarrow, and the
//! probe and report stages produce their files.

use glassbox_data::examples::read_examples;
use glassbox_data::store::{read_metadata, read_parts, read_pooled_matrix};
use glassbox_data::RunDir;
use glassbox_tests::*;
use std::collections::BTreeMap;
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

/// All token rows of a hook: example_id → rows in position order.
fn token_rows(run: &RunDir, hook: &str) -> BTreeMap<u64, Vec<Vec<f32>>> {
    let mut rows: BTreeMap<u64, Vec<(u32, Vec<f32>)>> = BTreeMap::new();
    read_parts(&run.activations_dir(hook), |b| {
        let pos = b.positions.expect("token-level shards have positions");
        for (i, id) in b.example_ids.iter().enumerate() {
            rows.entry(*id)
                .or_default()
                .push((pos[i], b.values[i * b.width..(i + 1) * b.width].to_vec()));
        }
        Ok(())
    })
    .expect("read activations");
    rows.into_iter()
        .map(|(id, mut r)| {
            r.sort_by_key(|(p, _)| *p);
            assert!(
                r.iter().enumerate().all(|(i, (p, _))| *p as usize == i),
                "positions 0..n"
            );
            (id, r.into_iter().map(|(_, v)| v).collect())
        })
        .collect()
}

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
        let mean = read_pooled_matrix(&run.pooled_dir(hook, "mean")).unwrap();
        let cls = read_pooled_matrix(&run.pooled_dir(hook, "cls")).unwrap();
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
        read_parts(&run.activations_dir(hook), |b| {
            assert_eq!(b.width, 384);
            n += b.example_ids.len();
            Ok(())
        })
        .unwrap();
        assert_eq!(
            n, total_tokens,
            "{hook}: one row per kept token, padding excluded"
        );
        let part = run.activations_dir(hook).join("part-00000.parquet");
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
fn probes_and_report_are_written() {
    let Some(dir) = default_run() else { return };
    let run = RunDir::new(dir);
    let results = glassbox_probes::read_results(&run).unwrap();
    assert_eq!(
        results.len(),
        21,
        "7 hooks × (2 sequence labels + 1 token label)"
    );
    for r in &results {
        assert!(
            r.ci_low <= r.score && r.score <= r.ci_high,
            "the CI brackets the estimate: {r:?}"
        );
        assert!((r.selectivity - (r.score - r.control_score)).abs() < 1e-12);
        assert!(r.mdl_compression.is_some(), "the default pipeline runs MDL");
    }
    for (label, level) in [
        ("topic", "sequence"),
        ("sentence_type", "sequence"),
        ("@word_class", "token"),
    ] {
        let rows: Vec<_> = results.iter().filter(|r| r.label == label).collect();
        assert!(
            rows.iter().all(|r| r.level == level),
            "{label} at {level} level"
        );
        let best = rows
            .iter()
            .map(|r| r.score - r.majority)
            .fold(f64::MIN, f64::max);
        // Four topics and three sentence types are balanced (majority ≈ 1/4 and 1/3); word
        // classes are dominated by nouns. A real encoder does far better than either.
        assert!(best > 0.4, "{label}: best score over majority only {best}");
        let selectivity = rows.iter().map(|r| r.selectivity).fold(f64::MIN, f64::max);
        assert!(
            selectivity > 0.15,
            "{label}: best selectivity only {selectivity}"
        );
        let compression = rows
            .iter()
            .filter_map(|r| r.mdl_compression)
            .fold(f64::MIN, f64::max);
        assert!(
            compression > 1.5,
            "{label}: MDL compression only {compression}"
        );
    }
    let topk = glassbox_probes::read_topk(&run).unwrap();
    assert_eq!(topk.len(), 21 * 4, "k = 1, 5, 20, 100 for every probe");
    for probe in ["probes/neurons.parquet", "probes/weights.safetensors"] {
        assert!(run.root().join(probe).exists(), "{probe}");
    }
    let html = std::fs::read_to_string(run.report_dir().join("index.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("sentence_type") && html.contains("selectivity")
    );
    assert!(html.contains("@word_class") && html.contains("token level"));
    assert!(!html.contains("<script"), "self-contained, no scripts");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.report_dir().join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["probes"].as_array().unwrap().len(), 3);
    let md = std::fs::read_to_string(run.report_dir().join("summary.md")).unwrap();
    assert!(md.contains("95% CI") && md.contains("control task"), "{md}");
    assert_eq!(summary["schema_version"], 2);
    for figure in [
        "probe-sequence-mean-topic.svg",
        "probe-token-token-_word_class.svg",
    ] {
        let svg = std::fs::read_to_string(run.report_dir().join("figures").join(figure)).unwrap();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{figure}"
        );
    }
}

#[test]
fn summary_json_validates_against_its_schema() {
    let Some(dir) = default_run() else { return };
    let python = match python_with("jsonschema") {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIP summary_json_validates_against_its_schema: {why}");
            return;
        }
    };
    let report = RunDir::new(dir).report_dir();
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        jsonschema.Draft202012Validator(schema).validate(json.load(open(sys.argv[2])))\n\
        print('valid')";
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(report.join("summary.schema.json"))
        .arg(report.join("summary.json"))
        .output()
        .unwrap();
    assert_success(&out, "jsonschema validation of summary.json");
    // The schema is strict enough to reject a wrong document.
    let mut bad: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
            .unwrap();
    bad["tcav"][0]["p_holm"] = serde_json::json!(1.5);
    let scratch = tempfile::tempdir().unwrap();
    let bad_path = scratch.path().join("summary-bad.json");
    std::fs::write(&bad_path, bad.to_string()).unwrap();
    let python = python_with("jsonschema").unwrap();
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(report.join("summary.schema.json"))
        .arg(&bad_path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a p-value above 1 must not validate");
}

#[test]
fn tcav_runs_on_probe_targets_with_corrected_p_values() {
    let Some(dir) = default_run() else { return };
    let run = RunDir::new(dir);
    let scores = glassbox_concepts::read_scores(&run).unwrap();
    assert_eq!(scores.len(), 4 * 2 * 2, "4 concepts × 2 targets × 2 hooks");
    for s in &scores {
        assert!(s.p_holm >= s.p && (0.0..=1.0).contains(&s.p_holm), "{s:?}");
        assert_eq!((s.runs, s.convention.as_str()), (20, "logit"));
    }
    // The concept of food sentences raises the food-topic probe's logit, and the concept of
    // questions the question probe's, far above random CAVs: significant after correction.
    for (concept, target) in [
        ("food", "probe:topic=food"),
        ("questions", "probe:sentence_type=question"),
    ] {
        let s = scores
            .iter()
            .find(|s| {
                s.concept == concept && s.target == target && s.hook == "blocks.3.hook_resid_post"
            })
            .unwrap();
        assert!(
            s.significant && s.score > 0.9 && s.random_mean < 0.7,
            "{s:?}"
        );
    }
    // Gradients are stored keyed like activations.
    let grads = run.gradients_dir("probe.topic.food.logit", "blocks.1.hook_resid_post");
    assert!(grads.join("part-00000.parquet").exists());
    let md = std::fs::read_to_string(run.report_dir().join("summary.md")).unwrap();
    assert!(md.contains("## TCAV") && md.contains("p (Holm)"), "{md}");
    let html = std::fs::read_to_string(run.report_dir().join("index.html")).unwrap();
    assert!(html.contains("id=\"tcav\"") && html.contains("not significant after correction"));
    assert!(
        html.contains("aria-label=\"TCAV scores for probe:topic=food\""),
        "TCAV bars"
    );
    assert!(run
        .report_dir()
        .join("figures/tcav-probe_topic_food.svg")
        .exists());
}

#[test]
fn dictionary_trains_an_sae_and_explains_features_and_neurons() {
    let Some(dir) = default_run() else { return };
    let run = RunDir::new(dir);
    let hook = "blocks.3.hook_resid_post";
    let folder = run.dictionary_dir(hook);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("metrics.json")).unwrap())
            .unwrap();
    let sae = &metrics["sae"];
    let ev = sae["explained_variance"].as_f64().unwrap();
    let pca = metrics["pca_baseline"]["explained_variance"]
        .as_f64()
        .unwrap();
    // A 768-latent TopK SAE (k = 16) on ~2,300 tokens of MiniLM's block 3: it must reconstruct
    // held-out tokens far better than chance and better than PCA with 16 dimensions.
    assert!(ev > 0.4 && ev <= 1.0, "held-out explained variance {ev}");
    assert!(
        ev > pca,
        "SAE EV {ev} should beat the PCA baseline {pca} at equal L0"
    );
    assert!((sae["l0"].as_f64().unwrap() - 16.0).abs() < 0.5, "{sae}");
    assert!((ev + sae["fvu"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert!(metrics["definitions"]["explained_variance"]
        .as_str()
        .unwrap()
        .contains("x̄"));
    assert!(sae["dead_fraction"].as_f64().unwrap() < 0.5, "{sae}");
    assert!(metrics["training"]["curve"].as_array().unwrap().len() > 10);
    // The SAE in SAELens layout.
    let loaded = glassbox_concepts::sae::saelens::load(&folder.join("sae")).unwrap();
    assert_eq!((loaded.sae.d_in, loaded.sae.width), (384, 768));
    assert_eq!(loaded.hook_name.as_deref(), Some(hook));
    // Every feature and neuron explained; top examples carry context and per-token activations.
    let features = glassbox_concepts::explain::read::read_units(&folder, "feature").unwrap();
    assert_eq!(features.len(), 768);
    let neurons = glassbox_concepts::explain::read::read_units(&folder, "neuron").unwrap();
    assert_eq!(neurons.len(), 384);
    let live: std::collections::HashSet<u32> = features
        .iter()
        .filter(|f| f.active_rows > 0)
        .map(|f| f.unit)
        .collect();
    assert!(live.len() > 600, "{} live features", live.len());
    let examples =
        glassbox_concepts::explain::read::read_top_examples(&folder, "feature", &live, 1).unwrap();
    assert_eq!(
        examples.len(),
        live.len(),
        "one rank-0 example per live feature"
    );
    for e in &examples {
        let c = e.center as usize;
        assert_eq!(e.context_tokens[c], e.token);
        assert!(
            (e.context_activations[c] - e.activation).abs() < 1e-4 * e.activation.max(1.0),
            "{e:?}"
        );
    }
    // Label-aligned features exist: some feature tracks a word class strongly.
    let best = features
        .iter()
        .filter_map(|f| f.top_label_correlation)
        .fold(0.0, f64::max);
    assert!(best > 0.5, "best feature–label correlation {best}");
    assert!(features.iter().any(|f| f
        .best_direction
        .as_deref()
        .is_some_and(|d| d.starts_with("cav:"))));
    // The report lists features with their top examples.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.report_dir().join("summary.json")).unwrap(),
    )
    .unwrap();
    let dict = summary["dictionary"].as_array().unwrap();
    assert_eq!(dict.len(), 2, "features and neurons of one hook");
    let listed = dict[0]["listed"].as_array().unwrap();
    assert!(!listed.is_empty() && !listed[0]["examples"].as_array().unwrap().is_empty());
    let html = std::fs::read_to_string(run.report_dir().join("index.html")).unwrap();
    assert!(html.contains("id=\"dictionary\"") && html.contains("class=\"snippet\""));
    let md = std::fs::read_to_string(run.report_dir().join("summary.md")).unwrap();
    assert!(md.contains("## Sparse dictionary features"), "{md}");
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(dir) = default_run() else { return };
    let chrome = match chromium() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIP report_renders_in_headless_chromium: {why}");
            return;
        }
    };
    // The console check can fail: a page that logs is caught.
    let probe_page = tempfile::tempdir().unwrap();
    let noisy = probe_page.path().join("noisy.html");
    std::fs::write(
        &noisy,
        "<html><body><script>console.error('noisy')</script></body></html>",
    )
    .unwrap();
    let (_, console) = headless_dom(&chrome, &noisy);
    assert!(
        console.iter().any(|l| l.contains("noisy")),
        "console capture works: {console:?}"
    );

    let report = RunDir::new(dir).report_dir();
    let index = report.join("index.html");
    let (dom, console) = headless_dom(&chrome, &index);
    assert!(
        console.is_empty(),
        "console output from the report: {console:?}"
    );
    for (what, needle) in [
        ("findings", "<section id=\"findings\">"),
        ("a ranked finding", "<ol class=\"findings\">\n<li>"),
        ("a probe plot", "<svg"),
        ("the TCAV section", "<section id=\"tcav\">"),
        ("the dictionary section", "<section id=\"dictionary\">"),
        (
            "links to feature pages",
            "units/blocks.3.hook_resid_post/features-000.html",
        ),
        (
            "links to neuron pages",
            "units/blocks.3.hook_resid_post/neurons-000.html",
        ),
        ("provenance", "<section id=\"provenance\""),
    ] {
        assert!(
            dom.contains(needle),
            "the rendered DOM lacks {what} ({needle})"
        );
    }
    assert!(!dom.contains("<script"), "no scripts");
    assert!(
        !dom.contains(" src="),
        "nothing to load: everything is inline"
    );
    // A feature page: the first feature with highlighted examples.
    let page = report.join("units/blocks.3.hook_resid_post/features-000.html");
    let (page_dom, console) = headless_dom(&chrome, &page);
    assert!(
        console.is_empty(),
        "console output from a feature page: {console:?}"
    );
    assert!(page_dom.contains("id=\"feature-0\"") && page_dom.contains("class=\"snippet\""));
    assert!(page_dom.contains("Samples by activation quantile"));
    // Screenshot kept as a test artefact (not committed).
    let artefacts = workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let shot = artefacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let out = std::process::Command::new(&chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,2400",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", index.display()))
        .output()
        .unwrap();
    assert_success(&out, "chromium screenshot");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
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
    let python = match python_with_pyarrow() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIP pyarrow_reads_the_run_independently: {why}");
            return;
        }
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
