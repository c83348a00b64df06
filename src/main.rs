//! The `pifw` binary: parse arguments, run one command, map the outcome to an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = pifw::cli::Cli::parse();
    match pifw::commands::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            // A closed pipe (`pifw status | head`) is not an error worth a message.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            pifw::commands::exit_code_for(&e).into()
        }
    }
}
