//! The default run's TCAV and dictionary stages.

use super::default_run;
use glassbox_data::RunDir;

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
                s.concept == concept
                    && s.target == target
                    && s.hook == glassbox_tests::hook_point("blocks.3.hook_resid_post")
            })
            .unwrap();
        assert!(
            s.significant && s.score > 0.9 && s.random_mean < 0.7,
            "{s:?}"
        );
    }
    // Gradients are stored keyed like activations.
    let grads = run.gradients_dir(
        "probe.topic.food.logit",
        glassbox_tests::hook_point("blocks.1.hook_resid_post"),
    );
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
    let folder = run.dictionary_dir(glassbox_tests::hook_point(hook));
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
    // How sure: an interval over the held-out texts around the estimate, and the SAE's lead
    // over PCA with its paired interval (the same resamples for both).
    let ci = |m: &serde_json::Value| (m[0].as_f64().unwrap(), m[1].as_f64().unwrap());
    let (lo, hi) = ci(&sae["explained_variance_ci"]);
    assert!(
        lo < ev && ev < hi && hi - lo < 0.3,
        "EV {ev} in [{lo}, {hi}]"
    );
    let texts = sae["texts"].as_u64().unwrap();
    assert!(
        texts >= 10 && texts < sae["tokens"].as_u64().unwrap(),
        "{sae}"
    );
    let lead = &metrics["sae_minus_pca"];
    let d = lead["explained_variance"].as_f64().unwrap();
    assert!((d - (ev - pca)).abs() < 1e-12, "{lead}");
    let (lo, hi) = (
        lead["ci_low"].as_f64().unwrap(),
        lead["ci_high"].as_f64().unwrap(),
    );
    assert!(
        0.0 < lo && lo < d && d < hi,
        "the SAE's lead over PCA is clear: {lead}"
    );
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
    // Sparse probing: k features against k neurons, per k, in the summary and the page.
    let sparse = dict[0]["sparse_probing"]["by_k"].as_array().unwrap();
    assert_eq!(sparse.len(), 5, "{sparse:?}");
    for at in sparse {
        for key in [
            "feature_accuracy",
            "neuron_accuracy",
            "dense_neuron_accuracy",
        ] {
            let v = at[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{key} {v}");
        }
    }
    assert!(md.contains("Sparse probing:") && html.contains("class=\"sparse-probing\""));
}

#[test]
fn causal_tests_every_listed_finding_and_supports_the_planted_concepts() {
    use glassbox_concepts::causal::{read_tests, Verdict};
    let Some(dir) = default_run() else { return };
    let run = RunDir::new(dir);
    let tests = read_tests(&run.path("causal")).unwrap();
    let scores = glassbox_concepts::read_scores(&run).unwrap();
    // Every significant TCAV result has its steering test.
    for s in scores.iter().filter(|s| s.significant) {
        let id = glassbox_concepts::causal::tcav_finding(&s.concept, &s.target, s.hook);
        assert!(tests.iter().any(|t| t.finding == id), "{id} is not tested");
    }
    // The concept sets written for these targets move them beyond random directions: food
    // sentences raise the food probe, questions the question probe (as TCAV found).
    for (concept, target) in [
        ("food", "probe:topic=food"),
        ("questions", "probe:sentence_type=question"),
    ] {
        let id = glassbox_concepts::causal::tcav_finding(
            concept,
            target,
            glassbox_tests::hook_point("blocks.3.hook_resid_post"),
        );
        let t = tests.iter().find(|t| t.finding == id).unwrap();
        assert_eq!(t.verdict, Verdict::Supported, "{t:?}");
    }
    // Erasing a probed label with LEACE counts (the refit drops to chance) and lowers the last
    // block's probe beyond random erasers: topic and sentence_type on pooled rows, word_class
    // on token rows at every position (read as each token's own class).
    let (erasures, token_level): (Vec<_>, Vec<_>) = tests
        .iter()
        .filter(|t| t.test == "erase (LEACE)")
        .partition(|t| t.finding.contains("(sequence)"));
    assert_eq!(erasures.len(), 2, "topic and sentence_type");
    assert_eq!(token_level.len(), 1, "word_class: {token_level:?}");
    assert!(
        token_level[0]
            .readout
            .contains("each token's true @word_class"),
        "{token_level:?}"
    );
    // The refit before erasure is the token-level probe itself (same rows, split by text).
    let probes = glassbox_probes::read_results(&run).unwrap();
    let best_word_class = probes
        .iter()
        .find(|r| r.label == "@word_class" && r.level == "token" && r.hook == token_level[0].hook)
        .unwrap();
    assert!(
        (token_level[0].accuracy_before.unwrap() - best_word_class.score).abs() < 1e-12,
        "{token_level:?} vs {best_word_class:?}"
    );
    for e in erasures.into_iter().chain(token_level) {
        assert!(
            e.accuracy_after_low.unwrap() <= e.chance.unwrap() + 1e-9,
            "{e:?}"
        );
        assert_eq!(e.verdict, Verdict::Supported, "{e:?}");
    }
}
