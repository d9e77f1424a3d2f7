//! The `glassbox` command line. Exit codes: 0 success, 2 bad input or failure.

use clap::Parser;

fn main() {
    glassbox::allocator::keep_freed_memory();
    quiet_on_closed_stdout();
    let cli = glassbox::cli::Cli::parse();
    if let Err(error) = glassbox::cli::run(cli) {
        eprintln!("error: {}", glassbox::error_message::error_message(&error));
        std::process::exit(2);
    }
}

/// `glassbox … | head`: when the reader closes the pipe, `println!` panics with EPIPE (Rust
/// ignores SIGPIPE). A reader that stopped reading is not an error: exit quietly with 0, as
/// command-line tools do, instead of printing a panic. Every other panic is reported as usual.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}
