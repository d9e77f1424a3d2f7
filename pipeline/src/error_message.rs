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
    message
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
