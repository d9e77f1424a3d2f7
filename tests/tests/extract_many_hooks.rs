//! Extraction of more hooks than are written at once (13 here; the store writes up to 8 hooks'
//! rows together, in parallel) and of batches and shards that do not divide the data: every
//! hook's token rows and pools are still that hook's, compared with PyTorch `transformers`'
//! hidden states of all-MiniLM-L6-v2.

use glassbox_data::examples::read_examples;
use glassbox_data::store::read_pooled_matrix;
use glassbox_data::{Pool, RunDir};
use glassbox_tests::*;

#[test]
fn thirteen_hooks_each_store_their_own_activations() {
    if require_minilm("thirteen_hooks_each_store_their_own_activations").is_none() {
        return;
    }
    let (reference, _) = minilm_reference();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("texts.jsonl");
    let lines: Vec<String> = reference
        .iter()
        .map(|r| serde_json::json!({ "text": r.text }).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let run_dir = tmp.path().join("run");
    // resid_mid of every block between the stored hidden states: the residual hooks land in
    // the first and the second group of written hooks.
    let out = glassbox()
        .args([
            "extract",
            "--quiet",
            "--model",
            MINILM,
            "--hooks",
            "blocks.*.hook_resid_mid,blocks.0.hook_resid_pre,blocks.*.hook_resid_post",
            "--batch-size",
            "3",
            "--shard-size",
            "5",
            "--data",
        ])
        .arg(&data)
        .arg("--run")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert_success(&out, "extract");
    let run = RunDir::new(&run_dir);
    assert_eq!(run.stored_hooks(false).unwrap().len(), 13);
    let examples = read_examples(&run).unwrap();
    assert_eq!(examples.example_ids.len(), reference.len());

    let mut hidden = vec!["blocks.0.hook_resid_pre".to_owned()];
    hidden.extend((0..6).map(|b| format!("blocks.{b}.hook_resid_post")));
    let mut worst = 0f32;
    for (layer, hook) in hidden.iter().enumerate() {
        let rows = token_rows(&run, hook);
        let cls = read_pooled_matrix(&run.pooled_dir(hook_point(hook), Pool::Cls)).unwrap();
        for (id, r) in reference.iter().enumerate() {
            let ours = &rows[&(id as u64)];
            let theirs = &r.hidden_states[layer];
            assert_eq!(ours.len(), theirs.len(), "{hook} example {id}: token count");
            for (a, b) in ours.iter().zip(theirs) {
                worst = worst.max(max_abs_diff(a, b));
            }
            let pooled = &cls.values[id * cls.width..(id + 1) * cls.width];
            worst = worst.max(max_abs_diff(pooled, &theirs[0]));
        }
    }
    eprintln!("max |glassbox - transformers| over 7 of 13 hooks: {worst:e}");
    assert!(worst <= 1e-4, "max abs difference {worst} exceeds 1e-4");

    // The resid_mid hooks hold their own values: between the block's input and output.
    for b in 0..6 {
        let mid = token_rows(&run, &format!("blocks.{b}.hook_resid_mid"));
        let post = token_rows(&run, &format!("blocks.{b}.hook_resid_post"));
        assert_eq!(mid.len(), reference.len());
        assert!(
            max_abs_diff(&mid[&0][0], &post[&0][0]) > 1e-2,
            "blocks.{b}.hook_resid_mid stored resid_post's rows"
        );
    }
}
