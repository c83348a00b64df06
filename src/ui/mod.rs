//! The terminal: text and versioned-JSON views of the domain's plans, results and reports;
//! prompts, progress, error rendering; the only code that prints.
//!
//! Commands ([`crate::commands`]) resolve the arguments and call the domain; what the user
//! sees of it is made here, one file per view: [`change`] (a file change's plan, progress and
//! result), [`table`] (partition-table changes and returns), [`status`] (the report and the
//! disk picker), [`backups`] (the listing, `recover`), [`manifests`], [`switch`] (next steps), [`meta`] (completions and the man page).
//! Beside them the plumbing: [`output`] (colour, notes, sizes, wrapping, the `--json`
//! document), [`progress`] (bars), [`prompt`] (the confirmation), [`errors`] (an error said
//! once, with advice).

pub mod backups;
pub mod change;
pub mod errors;
pub mod manifests;
pub mod meta;
pub mod output;
pub mod progress;
pub mod prompt;
pub mod status;
pub mod switch;
pub mod table;

/// Version of every changing command's `--json` (docs/change-json.md).
pub const SCHEMA: u32 = 1;
