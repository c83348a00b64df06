//! The `pifw` binary: parse arguments, run one command, map the outcome to an exit code.

use clap::Parser;
use pifw::ui::{errors, output};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = pifw::cli::Cli::parse();
    output::init(cli.color, cli.quiet, cli.verbose, cli.json);
    // One `--json` document, printed at the end, also when the command failed after some
    // steps (the error still goes to stderr).
    let result = match pifw::commands::run(cli) {
        Ok(code) => output::flush_json().map(|()| code),
        Err(e) => {
            let _ = output::flush_json();
            Err(e)
        }
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            // A closed pipe (`pifw manifests list --json | head -1`) is how the reader says it
            // has seen enough: end quietly and successfully, as cat and ripgrep do.
            if errors::is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            let paint = output::Paint::stderr();
            eprintln!("{} {}", paint.red("error:"), errors::render(&e));
            if let Some(hint) = errors::hint(&e) {
                eprintln!("{} {hint}", paint.yellow("hint:"));
            }
            pifw::commands::exit_code_for(&e).into()
        }
    }
}
