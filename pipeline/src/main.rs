//! The `glassbox` command line. Exit codes: 0 success, 2 bad input or failure.

use clap::Parser;

fn main() {
    let cli = glassbox::cli::Cli::parse();
    if let Err(error) = glassbox::cli::run(cli) {
        eprintln!("error: {error:#}");
        std::process::exit(2);
    }
}
