//! Refusals about the run directory itself and about pipeline configs.

use crate::harness::*;
use glassbox_data::RunDir;
use glassbox_tests::*;
use std::path::Path;

fn drop_stage(run: &Path, stage: &str) {
    let path = run.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["stages"].as_object_mut().unwrap().remove(stage);
    std::fs::write(path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

#[test]
fn damaged_or_incomplete_runs_are_refused() {
    let Some(fx) = fixture() else { return };
    check_refusals(
        fx,
        vec![
            case("damaged manifest, probe", "probe --run {run} --label topic", &["manifest.json"])
                .with_setup(|_, r| std::fs::write(r.join("manifest.json"), "{ not json").unwrap()),
            case("damaged manifest, extract without --force", &format!("extract --model {MINILM} --data {{data}} --hooks blocks.0.hook_resid_post --run {{run}}"), &["manifest.json", "--force"])
                .with_setup(|_, r| std::fs::write(r.join("manifest.json"), "{ not json").unwrap()),
            case("tcav before probe", "tcav --run {run} --concepts {concepts}/food.jsonl --target probe:topic=food", &["probe"])
                .with_setup(|_, r| drop_stage(r, "probe")),
            case("report before probe", "report --run {run}", &["`probe`"])
                .with_setup(|_, r| drop_stage(r, "probe")),
            case("causal before probe", "causal --run {run}", &["`probe`"])
                .with_setup(|_, r| drop_stage(r, "probe")),
            case("probe before extract", "probe --run {run} --label topic", &["`extract`"])
                .with_setup(|_, r| {
                    drop_stage(r, "extract");
                    drop_stage(r, "probe");
                }),
            case("gradients with a bad target", "gradients --run {run} --target probe:topic=nope", &["nope"]),
            case("gradients with batch size 0", "gradients --run {run} --target probe:topic=food --batch-size 0", &["batch_size = 0"]),
            case("inspect a folder that is not a run", "inspect {tmp}", &["not a run directory"]),
            case("run path is a file", &format!("extract --model {MINILM} --data {{data}} --hooks blocks.0.hook_resid_post --run {{tmp}}/file"), &["file"])
                .with_setup(|t, _| std::fs::write(t.join("file"), "x").unwrap()),
        ],
    );
}

#[test]
fn configs_are_checked_before_any_stage_runs() {
    let Some(fx) = fixture() else { return };
    fn config(tmp: &Path, run: &Path, extra: &str) {
        std::fs::write(
            tmp.join("p.toml"),
            format!(
                "run = '{}'\n[model]\nid = '{MINILM}'\n[data]\npath = 'data/sets/default.jsonl'\n[extract]\nhooks = ['blocks.0.hook_resid_post']\n[probe]\nlabels = ['topic']\n{extra}",
                run.display()
            ),
        )
        .unwrap();
    }
    check_refusals(
        fx,
        vec![
            case("pipeline config missing", "pipeline --config {tmp}/none.toml", &["none.toml"]),
            case("pipeline config with an unknown key", "pipeline --config {tmp}/p.toml", &["p.toml", "unknown field `labelz`"])
                .with_setup(|t, r| config(t, r, "labelz = ['x']\n")),
            case("pipeline [tcav] alpha out of range", "pipeline --config {tmp}/p.toml", &["[tcav]", "alpha = 2"])
                .with_setup(|t, r| config(t, r, "[tcav]\nconcepts = ['data/concepts/food.jsonl']\ntargets = ['probe:topic=food']\nalpha = 2.0\n")),
            case("pipeline [tcav] target on a label [probe] does not probe", "pipeline --config {tmp}/p.toml", &["[tcav]", "`sentence_type` is not probed", "[probe] labels: topic"])
                .with_setup(|t, r| config(t, r, "[tcav]\nconcepts = ['data/concepts/food.jsonl']\ntargets = ['probe:sentence_type=question']\n")),
            case("pipeline [attribute] probe target on a token-level label", "pipeline --config {tmp}/p.toml", &["[attribute]", "token level", "sequence-level"])
                .with_setup(|t, r| {
                    config(t, r, "[attribute]\ntargets = ['probe:@word_class=NOUN']\nmethods = ['saliency']\n");
                    let text = std::fs::read_to_string(t.join("p.toml")).unwrap();
                    std::fs::write(t.join("p.toml"), text.replace("labels = ['topic']\n", "labels = ['topic']\ntoken_labels = ['@word_class']\n")).unwrap();
                }),
            case("pipeline [dictionary] hook [extract] does not store", "pipeline --config {tmp}/p.toml", &["[dictionary] hooks", "blocks.3.hook_resid_post", "[extract] stores (blocks.0.hook_resid_post)"])
                .with_setup(|t, r| config(t, r, "[dictionary]\nhooks = ['blocks.3.hook_resid_post']\n")),
            case("pipeline [tcav] hook [extract] does not store", "pipeline --config {tmp}/p.toml", &["[tcav] hooks", "blocks.2.hook_resid_post"])
                .with_setup(|t, r| config(t, r, "[tcav]\nconcepts = ['data/concepts/food.jsonl']\ntargets = ['probe:topic=food']\nhooks = ['blocks.2.hook_resid_post']\n")),
            case("pipeline [patch] pairs file missing", "pipeline --config {tmp}/p.toml", &["[patch] pairs", "missing_pairs.jsonl", "does not exist"])
                .with_setup(|t, r| config(t, r, "[patch]\npairs = 'missing_pairs.jsonl'\nhooks = ['blocks.0.hook_resid_post']\n")),
            case("pipeline [tcav] concept set missing", "pipeline --config {tmp}/p.toml", &["[tcav] concepts", "data/concepts/nope.jsonl", "does not exist"])
                .with_setup(|t, r| config(t, r, "[tcav]\nconcepts = ['data/concepts/nope.jsonl']\ntargets = ['probe:topic=food']\n")),
            case("pipeline [causal] empty α grid", "pipeline --config {tmp}/p.toml", &["[causal]", "α grid is empty"])
                .with_setup(|t, r| config(t, r, "[causal]\nalphas = []\n")),
            case("pipeline [extract] batch size 0", "pipeline --config {tmp}/p.toml", &["[extract]", "batch_size = 0"])
                .with_setup(|t, r| {
                    config(t, r, "");
                    let text = std::fs::read_to_string(t.join("p.toml")).unwrap();
                    std::fs::write(t.join("p.toml"), text.replace("[extract]\n", "[extract]\nbatch_size = 0\n")).unwrap();
                }),
            case("pipeline [probe] test fraction out of range", "pipeline --config {tmp}/p.toml", &["[probe]", "test fraction"])
                .with_setup(|t, r| {
                    config(t, r, "");
                    let text = std::fs::read_to_string(t.join("p.toml")).unwrap();
                    std::fs::write(t.join("p.toml"), text.replace("[probe]\n", "[probe]\ntest_fraction = 1.5\n")).unwrap();
                }),
        ],
    );
}

#[test]
fn a_refused_first_stage_creates_no_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("new-run");
    let out = glassbox()
        .args(["probe", "--label", "topic", "--run"])
        .arg(&run)
        .output()
        .unwrap();
    assert_bad_input(&out, &["`extract`"]);
    assert!(!run.exists(), "a refused probe created {}", run.display());
    let out = glassbox()
        .args([
            "extract",
            "--model",
            MINILM,
            "--hooks",
            "blocks.0.hook_resid_post",
            "--data",
        ])
        .arg(tmp.path().join("nope.jsonl"))
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert_bad_input(&out, &["nope.jsonl"]);
    assert!(!run.exists(), "a refused extract created {}", run.display());
    assert!(RunDir::new(&run).require_stage("extract").is_err());
}

#[test]
fn extract_force_repairs_a_damaged_manifest() {
    let Some(fx) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    copy_tree(&fx.run(), &run);
    std::fs::write(run.join("manifest.json"), "{ not json").unwrap();
    let out = glassbox()
        .args([
            "extract",
            "--model",
            MINILM,
            "--force",
            "--hooks",
            "blocks.0.hook_resid_post",
            "--data",
        ])
        .arg(fx.data())
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert_success(&out, "extract --force over a damaged manifest");
    let manifest = RunDir::new(&run).require_stage("extract").unwrap();
    assert!(
        !manifest.stages.contains_key("probe"),
        "the old probe is dropped"
    );
    assert!(
        !run.join("probes").exists(),
        "the old probe results are removed"
    );
}

#[test]
fn hostile_label_names_stay_inside_their_code_spans() {
    let Some(fx) = fixture() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.jsonl");
    let source = std::fs::read_to_string(fx.data()).unwrap();
    let rows: Vec<String> = source
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let topic = v["topic"].clone();
            v.as_object_mut()
                .unwrap()
                .insert("top`ic\n# heading".into(), topic);
            v.to_string()
        })
        .collect();
    std::fs::write(&data, rows.join("\n")).unwrap();
    let run = tmp.path().join("run");
    for args in [
        vec![
            "extract",
            "--model",
            MINILM,
            "--hooks",
            "blocks.1.hook_resid_post",
            "--data",
            data.to_str().unwrap(),
        ],
        vec![
            "probe",
            "--label",
            "top`ic\n# heading",
            "--no-neurons",
            "--bootstrap",
            "20",
        ],
        vec!["report"],
    ] {
        let out = glassbox()
            .args(&args)
            .arg("--run")
            .arg(&run)
            .output()
            .unwrap();
        assert_success(&out, args[0]);
    }
    let md = std::fs::read_to_string(run.join("report/summary.md")).unwrap();
    assert!(md.contains("``top`ic # heading``"), "{md}");
    assert!(!md.lines().any(|l| l.starts_with("# heading")), "{md}");
}
