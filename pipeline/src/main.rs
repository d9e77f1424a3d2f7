//! The `glassbox` command line. Exit codes: 0 success, 2 bad input or failure.

use clap::Parser;

fn main() {
    glassbox::allocator::keep_freed_memory();
    let cli = glassbox::cli::Cli::parse();
    if let Err(error) = glassbox::cli::run(cli) {
        // A reader that stopped reading (`| head`) is not an error.
        if glassbox::output::is_closed_pipe(&error) {
            std::process::exit(0);
        }
        eprintln!("error: {}", glassbox::error_message::error_message(&error));
        std::process::exit(2);
    }
}
