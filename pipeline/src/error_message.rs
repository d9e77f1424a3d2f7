//! How the `glassbox` binary prints an error.

/// The error and its causes on one line, each cause once: library errors often already end
/// with their source's text (`{path}: {source}`), which `{:#}` would print a second time.
pub fn error_message(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::error_message;

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
