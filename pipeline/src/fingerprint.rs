//! Stage fingerprints: a hash of everything that determines a stage's output.

use serde::Serialize;

/// SHA-256 over the canonical JSON of `inputs` plus the glassbox version.
pub fn fingerprint<T: Serialize>(stage: &str, inputs: &T) -> String {
    let value = serde_json::json!({
        "stage": stage,
        "glassbox_version": env!("CARGO_PKG_VERSION"),
        "inputs": inputs,
    });
    // serde_json's map is ordered by key, so this serialisation is canonical.
    glassbox_data::hash::sha256_bytes(value.to_string().as_bytes())
}

/// A hash of the source this binary was built from (`build.rs`).
pub const SOURCE_ID: &str = env!("GLASSBOX_SOURCE_ID");

/// `glassbox --version`'s long form: the version, the source hash and the instruction set.
pub fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (source {SOURCE_ID}, {} files; kernels at {} on this CPU)",
            env!("CARGO_PKG_VERSION"),
            env!("GLASSBOX_SOURCE_FILES"),
            glassbox_data::simd::level().as_str()
        )
    })
}

/// What the manifest records with each completed stage: this build and its arithmetic.
pub fn build_record() -> glassbox_data::BuildRecord {
    glassbox_data::BuildRecord::current(SOURCE_ID)
}

/// Says that `stage` is up to date (`why`: what was compared, or empty), and when its outputs
/// came from another build, says that too: the stage is kept (its fingerprint keys on the
/// version and the settings), but the reader should know whose numbers they are.
pub fn note_up_to_date(
    progress: &dyn glassbox_data::Progress,
    manifest: &glassbox_data::Manifest,
    stage: &str,
    why: &str,
) {
    progress.note(&up_to_date_message(manifest, stage, why));
}

fn up_to_date_message(manifest: &glassbox_data::Manifest, stage: &str, why: &str) -> String {
    let other = manifest
        .stages
        .get(stage)
        .and_then(|s| s.build.as_ref())
        .filter(|b| b.source != SOURCE_ID);
    match other {
        Some(b) => format!(
            "{stage}: up to date{why}, from another glassbox build (source {}; this one is {SOURCE_ID}); --force re-runs it with this one",
            b.source
        ),
        None => format!("{stage}: up to date{why}; --force re-runs it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_up_to_date_stage_from_another_build_says_so() {
        let mut manifest = glassbox_data::Manifest::empty();
        let mut record = glassbox_data::StageRecord {
            fingerprint: "f".into(),
            finished_at: "2026-12-07T00:00:00Z".into(),
            seconds: None,
            seed: None,
            params: serde_json::Value::Null,
            build: Some(build_record()),
        };
        manifest.stages.insert("probe".into(), record.clone());
        assert_eq!(
            up_to_date_message(&manifest, "probe", ""),
            "probe: up to date; --force re-runs it"
        );
        record.build.as_mut().unwrap().source = "0000000000000000".into();
        manifest.stages.insert("probe".into(), record.clone());
        let note = up_to_date_message(&manifest, "probe", "");
        assert!(
            note.contains("another glassbox build (source 0000000000000000"),
            "{note}"
        );
        // Runs written before builds were recorded: nothing to compare, nothing said.
        record.build = None;
        manifest.stages.insert("probe".into(), record);
        assert!(!up_to_date_message(&manifest, "probe", "").contains("another"));
    }

    #[test]
    fn depends_on_stage_and_inputs() {
        let a = fingerprint("probe", &serde_json::json!({"seed": 0, "labels": ["t"]}));
        assert_eq!(
            a,
            fingerprint("probe", &serde_json::json!({"labels": ["t"], "seed": 0}))
        );
        assert_ne!(
            a,
            fingerprint("probe", &serde_json::json!({"seed": 1, "labels": ["t"]}))
        );
        assert_ne!(
            a,
            fingerprint("report", &serde_json::json!({"seed": 0, "labels": ["t"]}))
        );
    }
}
