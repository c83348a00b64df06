//! `pifw backups`, `pifw rollback` and `pifw recover`: the ways back.
//!
//! Backups live in two places (see [`crate::backup`]): the backup directory of the machine
//! running pifw, and the card's own firmware partition (`pifw-backup-<id>.zip` in its root),
//! so a card can be rolled back from any machine. Only this card's backups count (see
//! [`super::change::all_backups`]). Which backup `rollback` uses, the checks that the card
//! still holds what the change left (else, for a backup named with `--to`, it wants
//! `--force`), and whether it goes back through the table writer are the domain's
//! ([`crate::change::rollback`]); the restore runs through the same change path as every
//! update ([`super::change::put_back`]): plan, confirm, back up the current state (a rollback
//! can itself be rolled back), apply, verify.

use super::Exit;
use super::change::SCHEMA;
use super::change::{self, all_backups, candidates};
use super::{config, prepare};
use crate::change::rollback::{self as plan, Choice, Undo};
use crate::cli::{Cli, WriteArgs};
use crate::manifest::Manifests;
use crate::txn::{self, RecoverOutcome};
use crate::ui::output::Paint;
use anyhow::Context;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

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

pub fn backups(
    cli: &Cli,
    manifests: &Manifests,
    prune: bool,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, false)?;
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let mut all = all_backups(&path, &report, &cfg, tmp.path())?;
    if prune {
        let doomed = plan::prune(&all, cfg.keep_backups);
        for p in &doomed {
            std::fs::remove_file(p).with_context(|| format!("deleting {}", p.display()))?;
            eprintln!(
                "deleted {} (beyond keep_backups = {})",
                p.display(),
                cfg.keep_backups
            );
        }
        if doomed.is_empty() {
            eprintln!(
                "nothing to prune: this card has no more than keep_backups = {} backups in {}",
                cfg.keep_backups,
                cfg.backup_dir.display()
            );
        }
        plan::after_prune(&mut all, cfg.keep_backups);
    }
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
    let mut o = std::io::stdout().lock();
    if cli.json {
        serde_json::to_writer_pretty(&mut o, &listed)?;
        writeln!(o)?;
        return Ok(Exit::Ok);
    }
    if listed.is_empty() {
        writeln!(
            o,
            "No backups of this card in {}, on the card or in its root filesystem.",
            cfg.backup_dir.display()
        )?;
        return Ok(Exit::Ok);
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
    Ok(Exit::Ok)
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

pub fn rollback(
    cli: &Cli,
    manifests: &Manifests,
    to: Option<&str>,
    force: bool,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, true)?;
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let all = match to {
        Some(_) => candidates(&path, &report, &cfg, tmp.path())?,
        None => all_backups(&path, &report, &cfg, tmp.path())?,
    };
    match plan::choose(all, to, &path, &report, &cfg.backup_dir, tmp.path())? {
        Choice::Run(ids) => {
            crate::ui::output::note(plan::run_note(&ids));
            drop(tmp);
            change::undo(cli, manifests, &Undo { ids }, force, wargs, &path)
        }
        Choice::One(chosen) => change::put_back(
            cli,
            manifests,
            &path,
            &report,
            &chosen,
            force,
            wargs,
            &cfg,
            tmp.path(),
        ),
    }
}

#[derive(Debug, Serialize)]
struct RecoverOut {
    /// Version of this JSON (docs/change-json.md); the same for every changing command.
    schema: u32,
    target: String,
    interrupted: Option<txn::JournalSummary>,
    dry_run: bool,
    outcome: Option<RecoverOutcome>,
}

pub fn recover(
    cli: &Cli,
    manifests: &Manifests,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    // No structural refusal here: a card with an interrupted change is what this command is for.
    let (path, report) = prepare(cli, manifests, target, false)?;
    let plan::Interrupted { pending, needed } = plan::interrupted(&path, &report)?;
    let mut out = RecoverOut {
        schema: SCHEMA,
        target: path.display().to_string(),
        interrupted: pending.clone(),
        dry_run: wargs.dry_run,
        outcome: None,
    };
    let mut o = std::io::stdout().lock();
    if let Some(p) = &pending
        && !cli.json
    {
        writeln!(
            o,
            "Interrupted change {} on {}: {} files; recovery would {} it",
            p.txn_id,
            path.display(),
            p.files.len(),
            if plan::Interrupted::undoes(&p.would) {
                "undo"
            } else {
                "finish"
            }
        )?;
    }
    if pending.is_none() && needed.is_some() && !cli.json {
        writeln!(
            o,
            "Leftovers of an interrupted pifw change on {} (no file was changed): recovery frees them and makes the FAT copies agree",
            path.display()
        )?;
    }
    if needed.is_none() || wargs.dry_run {
        if cli.json {
            serde_json::to_writer_pretty(&mut o, &out)?;
            writeln!(o)?;
        } else if needed.is_none() {
            writeln!(o, "No interrupted change on {}.", path.display())?;
        } else {
            writeln!(o, "Dry run: nothing was written.")?;
        }
        return Ok(Exit::Ok);
    }
    drop(o);
    super::change::confirm(wargs, &path)?;
    let outcome = plan::recover(&path, &report)?;
    out.outcome = Some(outcome.clone());
    let mut o = std::io::stdout().lock();
    if cli.json {
        serde_json::to_writer_pretty(&mut o, &out)?;
        writeln!(o)?;
    } else {
        writeln!(
            o,
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
    }
    Ok(Exit::Ok)
}
