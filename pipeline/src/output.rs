//! Results to stdout, with write errors returned rather than panicking (`println!` panics):
//! when the reader closes the pipe (`glassbox inspect run | head`), the write fails with
//! `io::ErrorKind::BrokenPipe`, the command stops there, and `main` exits quietly with 0, as
//! command-line tools do.

use std::io::Write;

/// Writes `args` to stdout; the error is the write's own.
pub fn write(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.flush()
}

/// Whether `error` is a closed stdout somewhere in its chain.
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` for results: `outln!(...)?` returns the write's error.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for results: `out!(...)?` returns the write's error.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let error = anyhow::Error::from(io).context("printing the table");
        assert!(super::is_closed_pipe(&error));
        assert!(!super::is_closed_pipe(&anyhow::anyhow!("other")));
    }
}
