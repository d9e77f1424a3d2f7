//! Checkpoints whose `config.json` was written by `transformers` 4 — most of the Hub's — load to
//! the forward their transformers-5 configs give: the tiny decoder fixtures with their configs
//! rewritten into the old form, compared with the same PyTorch references.

mod decoder_parity;

use decoder_parity::*;

/// A rewrite of a config object.
type Edit = dyn Fn(&mut serde_json::Map<String, serde_json::Value>);

/// A copy of fixture `name` whose `config.json` is rewritten by `edit` (into the form
/// `transformers` 4 wrote, which most checkpoints on the Hub still carry).
fn with_config(
    name: &str,
    edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    dir
}

/// transformers 4's rotary fields: `rope_theta` at the top, the scaling (if any) in
/// `rope_scaling` under its old key `type`.
fn legacy_rope(c: &mut serde_json::Map<String, serde_json::Value>) {
    let mut rope = c.remove("rope_parameters").unwrap();
    let rope = rope.as_object_mut().unwrap();
    c.insert("rope_theta".into(), rope.remove("rope_theta").unwrap());
    let kind = rope.remove("rope_type").unwrap();
    if kind != "default" {
        rope.insert("type".into(), kind);
        c.insert(
            "rope_scaling".into(),
            serde_json::Value::Object(rope.clone()),
        );
    }
}

/// The same checkpoints with configs as `transformers` 4 wrote them: no `rope_parameters`
/// (`rope_theta`, `rope_scaling` with `type`, Phi-3's `su` for longrope), no `layer_types`
/// (Gemma-2: even layers slide; Gemma-3: `rope_local_base_freq` and `sliding_window_pattern`;
/// Qwen2: `use_sliding_window` from `max_window_layers` on; OLMo-3: every fourth layer global,
/// yarn there only). Each must give the forward its transformers-5 config gives.
#[test]
fn transformers_4_configs_give_the_same_forwards() {
    let cases: Vec<(&str, &str, Box<Edit>)> = vec![
        ("tiny_llama", "llama", Box::new(legacy_rope)),
        ("tiny_mistral", "llama", Box::new(legacy_rope)),
        (
            "tiny_phi3_partial",
            "phi3",
            Box::new(|c| {
                legacy_rope(c);
                let scaling = c["rope_scaling"].as_object_mut().unwrap();
                scaling.insert("type".into(), "su".into());
                scaling.remove("original_max_position_embeddings");
                scaling.remove("partial_rotary_factor");
            }),
        ),
        (
            "tiny_gemma2",
            "gemma2",
            Box::new(|c| {
                legacy_rope(c);
                c.remove("layer_types");
            }),
        ),
        (
            "tiny_qwen2_windows",
            "llama",
            Box::new(|c| {
                legacy_rope(c);
                c.remove("layer_types");
            }),
        ),
        (
            "tiny_gemma3_scaled",
            "gemma3_text",
            Box::new(|c| {
                let rope = c.remove("rope_parameters").unwrap();
                c.insert(
                    "rope_theta".into(),
                    rope["full_attention"]["rope_theta"].clone(),
                );
                c.insert(
                    "rope_local_base_freq".into(),
                    rope["sliding_attention"]["rope_theta"].clone(),
                );
                c.insert(
                    "rope_scaling".into(),
                    serde_json::json!({"rope_type": "linear", "factor": 8.0}),
                );
                c.insert("sliding_window_pattern".into(), 3.into());
                c.remove("layer_types");
            }),
        ),
        (
            "tiny_olmo3",
            "olmo3",
            Box::new(|c| {
                let rope = c.remove("rope_parameters").unwrap();
                c.insert(
                    "rope_theta".into(),
                    rope["sliding_attention"]["rope_theta"].clone(),
                );
                let mut yarn = rope["full_attention"].clone();
                yarn.as_object_mut().unwrap().remove("rope_theta");
                c.insert("rope_scaling".into(), yarn);
                c.remove("layer_types");
            }),
        ),
    ];
    for (name, family, edit) in cases {
        let dir = with_config(name, edit);
        let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(
            !config.contains("rope_parameters") && !config.contains("layer_types"),
            "{name}"
        );
        one_at_a_time_in(dir.path(), family);
        padded_batch_in(dir.path());
    }
}
