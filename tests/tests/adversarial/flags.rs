//! Refusals of out-of-range and unknown settings, stage by stage: each is caught before the
//! stage touches the run (exit 2, the flag named, the run byte-identical).

use crate::harness::*;
use glassbox_tests::MINILM;

#[test]
fn extract_settings_are_checked_first() {
    let Some(fx) = fixture() else { return };
    let extract = |name, flags: &str, needles| {
        case(
            name,
            &format!("extract --model {MINILM} --data {{data}} --hooks blocks.0.hook_resid_post,blocks.1.hook_resid_post,blocks.2.hook_resid_post --run {{run}} --force {flags}"),
            needles,
        )
    };
    check_refusals(
        fx,
        vec![
            extract("batch size 0", "--batch-size 0", &["batch_size = 0"]),
            extract("shard size 0", "--shard-size 0", &["shard_size = 0"]),
            extract("max length 0", "--max-length 0", &["max_length = 0"]),
            extract("unknown dtype", "--dtype f64", &["f64"]),
            extract("unknown compression", "--compression lz4", &["lz4"]),
            extract("unknown pool", "--pools median", &["median"]),
            extract(
                "a pool twice",
                "--pools mean,cls,mean",
                &["pools lists `mean` twice"],
            ),
            extract(
                "empty pool name",
                "--pools '' --no-token-level",
                &["pooling"],
            ),
        ],
    );
}

#[test]
fn probe_settings_and_degenerate_labels_are_refused() {
    let Some(fx) = fixture() else { return };
    let probe = |name, flags: &str, needles| {
        case(
            name,
            &format!("probe --run {{run}} --force {flags}"),
            needles,
        )
    };
    check_refusals(
        fx,
        vec![
            probe("unknown label", "--label nope", &["`nope`", "topic"]),
            probe(
                "a label twice",
                "--label topic,topic",
                &["labels lists `topic` twice"],
            ),
            probe(
                "a token label twice",
                "--token-label @word_class,@word_class",
                &["token_labels lists `@word_class` twice"],
            ),
            probe(
                "test fraction above 1",
                "--label topic --test-fraction 1.5",
                &["test fraction 1.5"],
            ),
            probe(
                "test fraction 0",
                "--label topic --test-fraction 0",
                &["test fraction 0"],
            ),
            probe(
                "negative validation fraction",
                "--label topic --validation-fraction=-0.1",
                &["validation fraction -0.1"],
            ),
            probe("NaN l2", "--label topic --l2 NaN", &["l2 grid"]),
            probe("negative l2", "--label topic --l2=-1", &["l2 grid"]),
            probe("unknown pool", "--label topic --pool median", &["`median`"]),
            probe(
                "unknown split unit",
                "--token-label @word_class --split-by sentence",
                &["`sentence`", "text", "token"],
            ),
            probe("no labels", "", &["no labels"]),
            probe(
                "one-class label",
                "--label one_class",
                &["`one_class`", "two classes"],
            ),
            probe(
                "constant number label",
                "--label constant",
                &["`constant`", "constant", "degenerate"],
            ),
            probe(
                "all-null label",
                "--label empty",
                &["`empty`", "null", "degenerate"],
            ),
            probe("unknown labeler", "--token-label @nope", &["@nope"]),
            probe(
                "sequence column at token level",
                "--level token --label topic",
                &["topic"],
            ),
            probe("pool not extracted", "--label topic --pool max", &["max"]),
            // A mistyped count is named with its bound instead of failing an allocation.
            probe(
                "absurd bootstrap",
                "--label topic --bootstrap 100000000000",
                &["bootstrap = 100000000000", "at most 100000"],
            ),
        ],
    );
}

#[test]
fn tcav_settings_and_concepts_are_refused() {
    let Some(fx) = fixture() else { return };
    let tcav = |name, flags: &str, needles| {
        case(
            name,
            &format!("tcav --run {{run}} --hooks blocks.1.hook_resid_post {flags}"),
            needles,
        )
    };
    let concepts =
        "--target probe:topic=food --concepts {concepts}/food.jsonl,{concepts}/numbers.jsonl";
    check_refusals(
        fx,
        vec![
            tcav(
                "alpha above 1",
                &format!("{concepts} --alpha 2"),
                &["alpha = 2"],
            ),
            tcav("alpha 0", &format!("{concepts} --alpha 0"), &["alpha = 0"]),
            tcav(
                "one probe head twice",
                &format!("{concepts} --target probe:topic=food"),
                &["`probe:topic=food` and `probe:topic=food` name the same probe head"],
            ),
            tcav(
                "CAV accuracy above 1",
                &format!("{concepts} --min-cav-accuracy 1.5"),
                &["min_cav_accuracy = 1.5"],
            ),
            tcav(
                "one random run",
                &format!("{concepts} --random-runs 1"),
                &["random_runs = 1"],
            ),
            tcav(
                "missing concept file",
                "--target probe:topic=food --concepts {tmp}/nope.jsonl",
                &["nope.jsonl"],
            ),
            tcav(
                "two concepts with one name",
                "--target probe:topic=food --concepts {concepts}/food.jsonl,{tmp}/food.jsonl",
                &["food", "share the name"],
            )
            .with_setup(|t, _| std::fs::write(t.join("food.jsonl"), "{\"text\":\"x\"}\n").unwrap()),
            // Its texts are left out of the random sets: nothing is left to draw from.
            tcav(
                "random corpus that is the concept set",
                "--target probe:topic=food --concepts {concepts}/food.jsonl --random-corpus {concepts}/food.jsonl",
                &["random corpus has 0 texts"],
            ),
            tcav(
                "concept too small",
                &format!("{concepts} --min-concept-size 50"),
                &["food"],
            ),
            tcav(
                "malformed target",
                "--concepts {concepts}/food.jsonl --target probe:topic",
                &["probe:topic"],
            ),
            tcav(
                "unknown target class",
                "--concepts {concepts}/food.jsonl --target probe:topic=nope",
                &["nope"],
            ),
            tcav(
                "unknown target label",
                "--concepts {concepts}/food.jsonl --target probe:colour=red",
                &["colour"],
            ),
            tcav(
                "absurd random runs",
                &format!("{concepts} --random-runs 100000000000"),
                &["random_runs = 100000000000", "at most 10000"],
            ),
            tcav(
                "hook after the target",
                &format!("{concepts} --hooks blocks.9.hook_resid_post"),
                &["blocks.9.hook_resid_post"],
            ),
        ],
    );
}

#[test]
fn dictionary_settings_are_checked_against_the_store() {
    let Some(fx) = fixture() else { return };
    let dict = |name, flags: &str, needles| {
        case(name, &format!("dictionary --run {{run}} {flags}"), needles)
    };
    let h = "--hook blocks.1.hook_resid_post --train-tokens 500";
    check_refusals(
        fx,
        vec![
            dict("k of 0", &format!("{h} --k 0"), &["k = 0"]),
            dict(
                "a hook twice",
                "--hook blocks.1.hook_resid_post,blocks.1.hook_resid_post --train-tokens 500",
                &["hooks lists `blocks.1.hook_resid_post` twice"],
            ),
            dict(
                "k as wide as the dictionary",
                &format!("{h} --width 32 --k 32"),
                &["k = 32", "width = 32"],
            ),
            dict("NaN learning rate", &format!("{h} --lr NaN"), &["lr = NaN"]),
            dict(
                "negative learning rate",
                &format!("{h} --lr=-1"),
                &["lr = -1"],
            ),
            dict(
                "infinite learning rate",
                &format!("{h} --lr inf"),
                &["lr = inf"],
            ),
            dict(
                "unknown architecture",
                &format!("{h} --architecture gated"),
                &["gated"],
            ),
            dict(
                "NaN L1",
                &format!("{h} --architecture relu --l1 NaN"),
                &["l1_coefficient"],
            ),
            dict(
                "batch size 0",
                &format!("{h} --batch-size 0"),
                &["batch_size"],
            ),
            dict(
                "zero training tokens",
                "--hook blocks.1.hook_resid_post --train-tokens 0",
                &["train_tokens"],
            ),
            dict(
                "hook not stored",
                "--hook blocks.4.hook_resid_post",
                &["blocks.4.hook_resid_post", "stored hooks"],
            ),
            dict(
                "neuron hook not stored",
                "--neurons blocks.5.hook_resid_post",
                &["blocks.5.hook_resid_post"],
            ),
            dict(
                "SAE folder missing",
                "--load-sae blocks.1.hook_resid_post={tmp}/nope",
                &["nope"],
            ),
            dict(
                "a width no machine holds",
                "--hook blocks.1.hook_resid_post --width 100000000000",
                &[
                    "width = 100000000000",
                    "at hook width 384",
                    "GB",
                    "8 × 384 = 3072",
                ],
            ),
            dict("nothing to do", "", &["nothing to do"]),
            dict(
                "config with an unknown key",
                "--config {tmp}/c.toml",
                &["c.toml", "unknown field"],
            )
            .with_setup(|t, _| {
                std::fs::write(
                    t.join("c.toml"),
                    "run='r'\n[model]\nid='a/b'\n[data]\npath='d'\n[dictionary]\nhook=['x']\n",
                )
                .unwrap()
            }),
        ],
    );
}

/// Trains a small SAE into the case's copy of the run, so a later invalid setting meets a
/// finished dictionary (an invalid value must not pass as "up to date").
fn with_trained_dictionary(_: &std::path::Path, run: &std::path::Path) {
    let out = glassbox_tests::glassbox()
        .args([
            "dictionary",
            "--hook",
            "blocks.1.hook_resid_post",
            "--width",
            "32",
            "--k",
            "4",
        ])
        .args([
            "--train-tokens",
            "2000",
            "--batch-size",
            "64",
            "--no-pca",
            "--run",
        ])
        .arg(run)
        .output()
        .unwrap();
    glassbox_tests::assert_success(&out, "dictionary for the setup");
}

#[test]
fn invalid_settings_after_a_finished_stage_are_not_up_to_date() {
    let Some(fx) = fixture() else { return };
    let h = "dictionary --run {run} --hook blocks.1.hook_resid_post --width 32 --k 4 --train-tokens 2000 --batch-size 64 --no-pca";
    check_refusals(
        fx,
        vec![
            case("NaN lr after a finished dictionary", &format!("{h} --lr NaN"), &["lr = NaN"])
                .with_setup(with_trained_dictionary),
            case("k = width after a finished dictionary", "dictionary --run {run} --hook blocks.1.hook_resid_post --width 32 --k 32 --train-tokens 2000 --batch-size 64 --no-pca", &["k = 32"])
                .with_setup(with_trained_dictionary),
            case("NaN test fraction after a finished probe", "probe --run {run} --label topic --no-neurons --bootstrap 50 --test-fraction NaN", &["test fraction NaN"]),
            case("NaN alpha", "tcav --run {run} --concepts {concepts}/food.jsonl --target probe:topic=food --alpha NaN", &["alpha = NaN"]),
        ],
    );
}

#[test]
fn causal_settings_are_checked_first() {
    let Some(fx) = fixture() else { return };
    let causal = |name, flags: &str, needles| {
        case(
            name,
            &format!("causal --run {{run}} --force {flags}"),
            needles,
        )
    };
    check_refusals(
        fx,
        vec![
            causal("α = 0 in the grid", "--alphas 0,0.5", &["α = 0"]),
            causal(
                "an α twice",
                "--alphas=-0.5,0.5,-0.5",
                &["alphas lists `-0.5` twice"],
            ),
            causal("α not a number", "--alphas x", &["--alphas"]),
            causal(
                "α beyond any readout",
                "--alphas 0.5,1e300",
                &["α = 1e300", "at most 1000"],
            ),
            causal(
                "too few random directions",
                "--random-directions 5",
                &["random_directions = 5", "20"],
            ),
            causal("one example", "--examples 1", &["examples = 1"]),
            causal("batch size 0", "--batch-size 0", &["batch_size = 0"]),
            causal(
                "significance out of range",
                "--significance 1.5",
                &["significance = 1.5"],
            ),
            causal(
                "absurd random directions",
                "--random-directions 100000000000",
                &["random_directions = 100000000000", "at most 10000"],
            ),
            causal(
                "absurd bootstrap",
                "--bootstrap 100000000000",
                &["bootstrap = 100000000000", "at most 100000"],
            ),
        ],
    );
}

#[test]
fn attribute_settings_are_checked_first() {
    let Some(fx) = fixture() else { return };
    let attribute = |name, flags: &str, needles| {
        case(
            name,
            &format!("attribute --run {{run}} --target probe:topic=sports --force {flags}"),
            needles,
        )
    };
    check_refusals(
        fx,
        vec![
            attribute(
                "a method twice under two names",
                "--method ig,integrated_gradients",
                &["methods lists `integrated_gradients` twice"],
            ),
            attribute(
                "a target twice",
                "--method saliency --target probe:topic=sports",
                &["targets lists `probe:topic=sports` twice"],
            ),
            attribute(
                "absurd IG steps",
                "--method ig --steps 100000000000",
                &["steps = 100000000000", "at most 10000"],
            ),
            attribute(
                "absurd SmoothGrad samples",
                "--method smoothgrad --samples 100000000000",
                &["samples = 100000000000", "at most 10000"],
            ),
            attribute(
                "absurd curve points",
                "--method saliency --curve-points 100000000000",
                &["curve_points = 100000000000", "at most 10000"],
            ),
        ],
    );
}
