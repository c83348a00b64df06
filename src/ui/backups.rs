//! The views of the ways back: `pifw backups` (the listing, or its `--json` document), the
//! notes of gathering this card's backups and of `--prune`, and `pifw recover`'s plan and
//! outcome.

use super::SCHEMA;
use super::output::{self, Paint};
use crate::backup::found::Found;
use crate::change::rollback::Interrupted;
use crate::config::Config;
use crate::txn::{self, RecoverOutcome};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// The notes of gathering backups: warnings on stderr always, the rest unless `--quiet`.
pub fn notes(notes: &[String]) {
    for n in notes {
        if n.starts_with("warning:") {
            eprintln!("{n}");
        } else {
            output::note(n);
        }
    }
}

/// A backup `--prune` deleted.
pub fn deleted(p: &Path, cfg: &Config) {
    eprintln!(
        "deleted {} (beyond keep_backups = {})",
        p.display(),
        cfg.keep_backups
    );
}

/// `--prune` found nothing beyond the limit.
pub fn nothing_to_prune(cfg: &Config) {
    eprintln!(
        "nothing to prune: this card has no more than keep_backups = {} backups in {}",
        cfg.keep_backups,
        cfg.backup_dir.display()
    );
}

/// One backup as `pifw backups` shows it.
#[derive(Debug, Serialize)]
struct Listed {
    id: String,
    created: String,
    command: Vec<String>,
    /// `this machine`, `card`, or both.
    places: Vec<String>,
    path: Option<String>,
    files: Vec<ListedFile>,
    has_tables: bool,
}

#[derive(Debug, Serialize)]
struct ListedFile {
    path: String,
    /// `replace` (old content kept), `remove` (the change added it).
    undo: &'static str,
}

/// `pifw backups`: this card's backups, newest first, as text or as the `--json` list.
pub fn listing(json: bool, all: &[Found], path: &Path, cfg: &Config) -> anyhow::Result<()> {
    let listed: Vec<Listed> = all
        .iter()
        .map(|f| (&f.summary, f.local, f.places()))
        .map(|(s, here, places)| Listed {
            id: s.manifest.id.clone(),
            created: s.manifest.created.clone(),
            command: s.manifest.command.clone(),
            places,
            path: here.then(|| s.path.display().to_string()),
            files: s
                .manifest
                .files
                .iter()
                .map(|f| ListedFile {
                    path: f.path.clone(),
                    undo: if f.before.is_some() {
                        "replace"
                    } else {
                        "remove"
                    },
                })
                .collect(),
            has_tables: s.manifest.tables.is_some(),
        })
        .collect();
    if json {
        return output::json(&listed);
    }
    let mut o = std::io::stdout().lock();
    if listed.is_empty() {
        writeln!(
            o,
            "No backups of this card in {}, on the card or in its root filesystem.",
            cfg.backup_dir.display()
        )?;
        return Ok(());
    }
    let paint = Paint::stdout();
    for (i, l) in listed.iter().enumerate() {
        let newest = if i == 0 { "  (newest)" } else { "" };
        writeln!(o, "{}{newest}", paint.bold(&l.id))?;
        writeln!(o, "  created  {}", l.created)?;
        writeln!(o, "  by       {}", display_command(&l.command))?;
        writeln!(o, "  kept on  {}", l.places.join(", "))?;
        if let Some(p) = &l.path {
            writeln!(o, "  file     {p}")?;
        }
        let replaced = l.files.iter().filter(|f| f.undo == "replace").count();
        writeln!(
            o,
            "  undoes   {} files ({replaced} put back, {} removed){}",
            l.files.len(),
            l.files.len() - replaced,
            if l.has_tables {
                ", and the partition table"
            } else {
                ""
            }
        )?;
    }
    writeln!(
        o,
        "Roll back with: pifw rollback --to ID {}",
        path.display()
    )?;
    Ok(())
}

fn display_command(cmd: &[String]) -> String {
    let mut parts = cmd.to_vec();
    if let Some(first) = parts.first_mut()
        && let Some(name) = Path::new(first.as_str()).file_name()
    {
        *first = name.to_string_lossy().into_owned();
    }
    parts.join(" ")
}

#[derive(Debug, Serialize)]
pub struct RecoverOut {
    /// Version of this JSON (docs/change-json.md); the same for every changing command.
    schema: u32,
    target: String,
    interrupted: Option<txn::JournalSummary>,
    dry_run: bool,
    outcome: Option<RecoverOutcome>,
}

/// What `pifw recover` found on `path`, said as text (nothing in `--json`); the document
/// that follows it.
pub fn recover_plan(
    json: bool,
    path: &Path,
    found: &Interrupted,
    dry_run: bool,
) -> anyhow::Result<RecoverOut> {
    let Interrupted { pending, needed } = found;
    let mut o = std::io::stdout().lock();
    if let Some(p) = pending
        && !json
    {
        writeln!(
            o,
            "Interrupted change {} on {}: {} files; recovery would {} it",
            p.txn_id,
            path.display(),
            p.files.len(),
            if Interrupted::undoes(&p.would) {
                "undo"
            } else {
                "finish"
            }
        )?;
    }
    if pending.is_none() && needed.is_some() && !json {
        writeln!(
            o,
            "Leftovers of an interrupted pifw change on {} (no file was changed): recovery frees them and makes the FAT copies agree",
            path.display()
        )?;
    }
    Ok(RecoverOut {
        schema: SCHEMA,
        target: path.display().to_string(),
        interrupted: pending.clone(),
        dry_run,
        outcome: None,
    })
}

/// `pifw recover` with nothing to do (`nothing`), or a dry run.
pub fn recover_ends(json: bool, out: &RecoverOut, nothing: bool) -> anyhow::Result<()> {
    if json {
        return output::json(out);
    }
    let mut o = std::io::stdout().lock();
    if nothing {
        writeln!(o, "No interrupted change on {}.", out.target)?;
    } else {
        writeln!(o, "Dry run: nothing was written.")?;
    }
    Ok(())
}

/// What the recovery did.
pub fn recovered(json: bool, mut out: RecoverOut, outcome: RecoverOutcome) -> anyhow::Result<()> {
    out.outcome = Some(outcome.clone());
    if json {
        return output::json(&out);
    }
    writeln!(
        std::io::stdout().lock(),
        "{}",
        match outcome {
            RecoverOutcome::RolledForward =>
                "Recovered: the change was complete on the card and is now finished.",
            RecoverOutcome::RolledBack =>
                "Recovered: the change was incomplete; the card holds its old files again.",
            RecoverOutcome::DiscardedTorn =>
                "Recovered: a torn journal was removed; no file had been changed.",
            RecoverOutcome::Nothing =>
                "Recovered: the leftovers of an interrupted change were cleaned; no file had been changed.",
        }
    )?;
    Ok(())
}
