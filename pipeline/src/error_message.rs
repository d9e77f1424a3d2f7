//! How the `glassbox` binary prints an error.

/// The error and its causes on one line, each cause once: library errors often already
/// contain their source's text (`{path}: {source}`, or followed by a hint), which `{:#}` would
/// print a second time.
pub fn error_message(error: &anyhow::Error) -> String {
    let mut message = without_backtrace(&error.to_string());
    for cause in error.chain().skip(1) {
        let text = without_backtrace(&cause.to_string());
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    if let Some(hint) = damaged_output_hint(error) {
        message.push_str(&hint);
    }
    message
}

/// The data crate's error inside `cause`: the libraries wrap it transparently (their
/// `source()` skips it), so the chain alone does not show it.
fn data_error<'a>(
    cause: &'a (dyn std::error::Error + 'static),
) -> Option<&'a glassbox_data::DataError> {
    use glassbox_concepts::ConceptError;
    use glassbox_probes::ProbeError;
    use glassbox_reports::ReportError;
    let probe = |e: &'a ProbeError| match e {
        ProbeError::Data(d) => Some(d),
        _ => None,
    };
    let concept = |e: &'a ConceptError| match e {
        ConceptError::Data(d) => Some(d),
        ConceptError::Probe(p) => probe(p),
        _ => None,
    };
    if let Some(d) = cause.downcast_ref::<glassbox_data::DataError>() {
        return Some(d);
    }
    if let Some(e) = cause.downcast_ref::<ProbeError>() {
        return probe(e);
    }
    if let Some(e) = cause.downcast_ref::<ConceptError>() {
        return concept(e);
    }
    match cause.downcast_ref::<ReportError>()? {
        ReportError::Data(d) => Some(d),
        ReportError::Probe(p) => probe(p),
        ReportError::Concept(c) => concept(c),
        _ => None,
    }
}

/// A stage's output missing or unreadable inside a run directory (moved, deleted, truncated by
/// a full disk after the commit): which stage wrote it and how to write it again.
fn damaged_output_hint(error: &anyhow::Error) -> Option<String> {
    use glassbox_data::DataError;
    let path = error.chain().find_map(|cause| match data_error(cause)? {
        DataError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
            Some(path.clone())
        }
        DataError::Parquet { path, .. } => Some(path.clone()),
        _ => None,
    })?;
    let run = path
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("manifest.json").is_file())?;
    let first = path.strip_prefix(run).ok()?.components().next()?;
    let stage = match first.as_os_str().to_str()? {
        "activations" | "pooled" | "tokens.parquet" | "examples.parquet" => "extract",
        "probes" => "probe",
        "gradients" => "gradients",
        "tcav" => "tcav",
        "dictionary" => "dictionary",
        "patching" => "patch",
        "causal" => "causal",
        "attributions" => "attribute",
        "dissection" => "dissect",
        "report" => "report",
        _ => return None,
    };
    // Only a stage the manifest records as finished: a stage never run has its own error.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).ok()?).ok()?;
    manifest.get("stages")?.get(stage)?;
    Some(format!(
        " (an output of the run's `{stage}` stage, missing or damaged since it was written; run `glassbox {stage}` on {} again with --force, or the pipeline with --force)",
        run.display()
    ))
}

/// `text` up to a backtrace some library appended to its message (candle does, when
/// `RUST_BACKTRACE` is set): the user needs the fault, not our stack.
fn without_backtrace(text: &str) -> String {
    let mut kept = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t == "stack backtrace:" || (t.starts_with("0: ") && line.len() > t.len()) {
            break;
        }
        kept.push(line);
    }
    kept.join("\n").trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::{error_message, without_backtrace};

    #[test]
    fn a_missing_stage_output_names_its_stage() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = r#"{"stages": {"extract": {}, "tcav": {}}}"#;
        std::fs::write(dir.path().join("manifest.json"), manifest).unwrap();
        let missing = |rel: &str| {
            let path = dir.path().join(rel);
            anyhow::Error::new(glassbox_data::DataError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file"),
            })
        };
        let message = error_message(&missing("tcav/scores.parquet"));
        assert!(
            message.contains("`tcav` stage") && message.contains("--force"),
            "{message}"
        );
        let message = error_message(&missing("activations/hook=x/part-00000.parquet"));
        assert!(message.contains("`extract` stage"), "{message}");
        // Outside a run directory, or not a stage's output: no hint.
        let elsewhere = anyhow::Error::new(glassbox_data::DataError::Io {
            path: "/nonexistent/data.jsonl".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file"),
        });
        assert!(!error_message(&elsewhere).contains("stage"));
        assert!(!error_message(&missing("notes.txt")).contains("stage"));
        assert!(
            !error_message(&missing("probes/results.parquet")).contains("stage"),
            "never run"
        );
    }

    #[test]
    fn backtraces_are_cut() {
        let text = "cannot read safetensors: header too large\n   0: candle_core::error::Error::bt\n             at src/error.rs:1";
        assert_eq!(
            without_backtrace(text),
            "cannot read safetensors: header too large"
        );
        assert_eq!(without_backtrace("a\nb"), "a\nb");
    }

    /// Like the data crate's I/O error: its message ends with its source's.
    #[derive(Debug)]
    struct Wrapped {
        path: String,
        source: std::io::Error,
    }
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.path, self.source)
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let error = anyhow::Error::new(Wrapped {
            path: "run/tokens.parquet".into(),
            source: io,
        });
        assert_eq!(error_message(&error), "run/tokens.parquet: No such file");
        let error = error.context("reading the run");
        assert_eq!(
            error_message(&error),
            "reading the run: run/tokens.parquet: No such file"
        );
        let plain = anyhow::anyhow!("first").context("second");
        assert_eq!(error_message(&plain), "second: first");
    }
}
