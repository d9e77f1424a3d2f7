//! What the dictionary stage hands to other tools, through the CLI on a small real run: the
//! sparse-probing table (features against neurons, per task and k) and `glassbox export
//! delphi`'s latent cache, read back file by file with the safetensors crate and checked against
//! the SAE applied to the stored rows.

use glassbox_concepts::sae::stream::{RowSource, Split, StoreRows};
use glassbox_data::store::PartStream;
use glassbox_data::RunDir;
use glassbox_tests::*;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

const HOOK: &str = "blocks.1.hook_resid_post";

/// A small TopK SAE at `HOOK`, sparse probing at k = 1 and 4.
fn trained_run(dir: &Path) -> Option<std::path::PathBuf> {
    let run = small_topic_run(dir, HOOK)?;
    let out = glassbox()
        .args(["dictionary", "--run"])
        .arg(&run)
        .args([
            "--hook",
            HOOK,
            "--width",
            "64",
            "--k",
            "4",
            "--batch-size",
            "64",
            "--train-tokens",
            "20000",
            "--sparse-probing-k",
            "1,4",
        ])
        .output()
        .unwrap();
    assert_success(&out, "dictionary");
    Some(run)
}

#[test]
fn sparse_probing_and_the_delphi_cache_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(run) = trained_run(tmp.path()) else {
        return;
    };
    let rd = RunDir::new(&run);
    let dir = rd.dictionary_dir(hook_point(HOOK));

    // Sparse probing: `topic` has two classes, so one task, at k = 1 and 4.
    let rows = glassbox_concepts::sparse_probing::read_rows(&dir)
        .unwrap()
        .expect("sparse_probing.parquet");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in &rows {
        assert_eq!(
            (r.label.as_str(), r.examples, r.positives),
            ("topic", 40, 20)
        );
        assert_eq!(r.features.units.len(), r.k);
        assert_eq!(r.neurons.units.len(), r.k);
        for (acc, ci) in [
            (r.features.accuracy, r.features.ci),
            (r.neurons.accuracy, r.neurons.ci),
        ] {
            assert!(
                (0.0..=1.0).contains(&acc) && ci.0 <= acc && acc <= ci.1,
                "{r:#?}"
            );
        }
        assert!(r.p_holm >= r.p_value && r.p_holm <= 1.0, "{r:#?}");
        // The topic word is in every sentence: the whole hook reads it.
        assert!(r.dense_neurons >= 0.9, "{r:#?}");
    }

    // delphi's latent cache.
    let out_dir = tmp.path().join("delphi");
    let export = |extra: &[&str]| {
        glassbox()
            .args(["export", "delphi", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&out_dir)
            .args(extra)
            .output()
            .unwrap()
    };
    assert_success(
        &export(&["--context-size", "16", "--splits", "3"]),
        "export delphi",
    );
    let module = out_dir.join(HOOK);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(module.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["cache_ctx_len"], 16);
    assert_eq!(config["n_splits"], 3);

    // Expected: the run's tokens in (example, position) order, cut into rows of 16.
    let mut ids: Vec<(u64, u32, u32)> = Vec::new();
    for batch in glassbox_data::table::read_table(&rd.tokens()).unwrap() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{UInt32Type, UInt64Type};
        let col = |n: &str| batch.column_by_name(n).unwrap().clone();
        let (e, p, t) = (col("example_id"), col("position"), col("token_id"));
        for r in 0..batch.num_rows() {
            ids.push((
                e.as_primitive::<UInt64Type>().value(r),
                p.as_primitive::<UInt32Type>().value(r),
                t.as_primitive::<UInt32Type>().value(r),
            ));
        }
    }
    ids.sort_unstable();
    let sequences = ids.len() / 16;
    let at: HashMap<(u64, u32), usize> = ids[..sequences * 16]
        .iter()
        .enumerate()
        .map(|(i, &(e, p, _))| ((e, p), i))
        .collect();
    // The SAE's codes on every stored row, keyed by (sequence · 16 + position, latent).
    let sae = glassbox_concepts::sae::saelens::load(&dir.join("sae"))
        .unwrap()
        .sae;
    let mut source = StoreRows::open(
        PartStream::open(&rd.activations_dir(hook_point(HOOK))).unwrap(),
        hook_point(HOOK),
        Split::All,
        0.0,
        0,
        None,
    )
    .unwrap();
    let mut expected: HashMap<(usize, u32), f32> = HashMap::new();
    let (mut x, mut row_ids) = (Vec::new(), Vec::new());
    while source.next_rows(&mut x, &mut row_ids).unwrap() {
        let codes = sae.encode(&x).unwrap();
        for (r, id) in row_ids.iter().enumerate() {
            if let Some(&flat) = at.get(id) {
                for (latent, v) in codes.row(r).filter(|&(_, v)| v > 0.0) {
                    expected.insert((flat, latent as u32), v);
                }
            }
        }
        x.clear();
        row_ids.clear();
    }
    let mut files: Vec<_> = std::fs::read_dir(&module)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    files.sort_by_key(|n| n.split('_').next().unwrap().parse::<u32>().unwrap());
    assert_eq!(
        files,
        ["0_20.safetensors", "21_41.safetensors", "42_63.safetensors"]
    );
    let mut found = 0;
    for name in &files {
        let first: u32 = name.split('_').next().unwrap().parse().unwrap();
        let bytes = std::fs::read(module.join(name)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let tokens = st.tensor("tokens").unwrap();
        assert_eq!(
            (tokens.dtype(), tokens.shape()),
            (Dtype::I64, &[sequences, 16][..])
        );
        let cached: Vec<i64> = tokens
            .data()
            .chunks(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let want: Vec<i64> = ids[..sequences * 16]
            .iter()
            .map(|&(_, _, t)| t as i64)
            .collect();
        assert_eq!(cached, want, "{name}: tokens");
        let loc = st.tensor("locations").unwrap();
        let act = st.tensor("activations").unwrap();
        assert_eq!(
            (loc.dtype(), act.dtype()),
            (Dtype::U16, Dtype::F16),
            "{name}"
        );
        let n = act.shape()[0];
        assert_eq!(loc.shape(), &[n, 3][..]);
        let loc: Vec<u32> = loc
            .data()
            .chunks(2)
            .map(|b| u16::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        let act: Vec<f32> = act
            .data()
            .chunks(2)
            .map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32())
            .collect();
        for (l, &v) in loc.chunks(3).zip(&act) {
            let flat = l[0] as usize * 16 + l[1] as usize;
            let want = expected[&(flat, l[2] + first)];
            assert_eq!(v, half::f16::from_f32(want).to_f32(), "{name}: {l:?}");
        }
        found += n;
    }
    assert_eq!(found, expected.len(), "every active code once");
    eprintln!(
        "delphi cache: {sequences} sequences of 16, {found} codes in {} files",
        files.len()
    );

    // Bad input: named, exit 2, the cache as it was.
    let before = std::fs::read(module.join("0_20.safetensors")).unwrap();
    assert_bad_input(&export(&["--splits", "0"]), &["splits 0"]);
    assert_bad_input(
        &export(&["--hook", "blocks.0.hook_resid_post"]),
        &["no SAE at", HOOK],
    );
    assert_bad_input(&export(&["--context-size", "100000"]), &["--context-size"]);
    // Codes beyond f16's range (the encoder scaled by 1e6) would be stored as infinities.
    let weights_path = dir.join("sae/sae_weights.safetensors");
    let original = std::fs::read(&weights_path).unwrap();
    let scaled = scaled_tensors(&original, |name| name == "W_enc" || name == "b_enc", 1e6);
    std::fs::write(&weights_path, scaled).unwrap();
    assert_bad_input(
        &export(&["--context-size", "16", "--splits", "3"]),
        &["beyond the f16 range", HOOK],
    );
    std::fs::write(&weights_path, &original).unwrap();
    assert_eq!(
        std::fs::read(module.join("0_20.safetensors")).unwrap(),
        before
    );

    // A run whose model has left the cache: the dictionary stage (which reloads the model for
    // causal-LM extras at the end) names it before training, exit 2, the earlier results as
    // they were. Paused after one step, a stage that looked for the model only at the end
    // would exit 0.
    // The run's model is a local copy (config.toml's `[model] id`): move it away.
    let config: toml::Value =
        toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    let model = std::path::PathBuf::from(config["model"]["id"].as_str().unwrap());
    let gone = model.with_extension("gone");
    std::fs::rename(&model, &gone).unwrap();
    let weights = std::fs::read(dir.join("sae/sae_weights.safetensors")).unwrap();
    let out = glassbox()
        .args(["dictionary", "--force", "--run"])
        .arg(&run)
        .args([
            "--hook",
            HOOK,
            "--width",
            "64",
            "--k",
            "4",
            "--pause-after",
            "1",
        ])
        .output()
        .unwrap();
    assert_bad_input(&out, &[model.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(dir.join("sae/sae_weights.safetensors")).unwrap(),
        weights
    );
}
