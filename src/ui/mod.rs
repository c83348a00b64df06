//! The terminal: text and versioned-JSON views of the domain's plans, results and reports;
//! prompts, progress, error rendering; the only code that prints.
//!
//! Commands ([`crate::commands`]) resolve the arguments and call the domain; what the user
//! sees of it is made here. Text goes to stdout as it is made; a `--json` document is
//! collected ([`output::json`]) and printed once, at the end of the command
//! ([`output::flush_json`]), so a command prints exactly one JSON document.

pub mod errors;
pub mod output;
pub mod progress;
pub mod prompt;
