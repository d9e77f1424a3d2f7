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

#[cfg(test)]
mod tests {
    use super::*;

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
