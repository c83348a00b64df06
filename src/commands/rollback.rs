//! `pifw backups`, `pifw rollback` and `pifw recover`: the ways back.
//!
//! Backups live in two places (see [`crate::backup`]): the backup directory of the machine
//! running pifw, and the card's own firmware partition (`pifw-backup-<id>.zip` in its root),
//! so a card can be rolled back from any machine. Only this card's backups count (see
//! [`all_backups`]). `rollback` reads the chosen backup, checks that the card still holds what
//! the change left (else, for a backup named with `--to`, it wants `--force`), and hands the
//! old contents to the same change path as every update ([`super::change::execute`]): plan,
//! confirm, back up the current state (a rollback can itself be rolled back), apply, verify.
//! A backup of partition-table sectors (made by `pifw partition hybrid`) goes back through
//! [`super::partition::rollback_tables`] instead, which checks that the card still has the
//! partitions the backup describes (else it wants `--force`).

use super::Exit;
use super::change::SCHEMA;
use super::change::{self, Request, card_backup_name};
use super::output::Paint;
use super::{config, prepare};
use crate::backup::Backup;
use crate::backup::ChangeKind;
use crate::cli::{Cli, WriteArgs};
use crate::config::Config;
use crate::disk::lock::WriteTarget;
use crate::disk::target::Target;
use crate::manifest::Manifests;
use crate::status::Report;
use crate::txn::{self, RecoverOutcome, Slice};
use anyhow::{Context, bail};
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

pub(in crate::commands) use crate::backup::found::Found;

/// This card's backups, newest first ([`crate::backup::found::of_card`]); its notes and
/// warnings go to stderr.
pub(in crate::commands) fn all_backups(
    path: &Path,
    report: &Report,
    cfg: &Config,
    tmp: &Path,
) -> anyhow::Result<Vec<Found>> {
    let d = crate::backup::found::of_card(path, report, &cfg.backup_dir, tmp)?;
    say(&d.notes);
    Ok(d.found)
}

/// Every backup with this card's disk identifiers ([`crate::backup::found::candidates`]).
pub(in crate::commands) fn candidates(
    path: &Path,
    report: &Report,
    cfg: &Config,
    tmp: &Path,
) -> anyhow::Result<Vec<Found>> {
    let d = crate::backup::found::candidates(path, report, &cfg.backup_dir, tmp)?;
    say(&d.notes);
    Ok(d.found)
}

fn say(notes: &[String]) {
    for n in notes {
        if n.starts_with("warning:") {
            eprintln!("{n}");
        } else {
            super::output::note(n);
        }
    }
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
        // Only this card's backups count, and only copies on this machine are deleted: the
        // newest `keep_backups` stay.
        let keep = cfg.keep_backups.max(1);
        let mut gone = 0;
        for s in all
            .iter()
            .skip(keep)
            .filter(|f| f.local)
            .map(|f| &f.summary)
        {
            std::fs::remove_file(&s.path)
                .with_context(|| format!("deleting {}", s.path.display()))?;
            eprintln!(
                "deleted {} (beyond keep_backups = {})",
                s.path.display(),
                cfg.keep_backups
            );
            gone += 1;
        }
        if gone == 0 {
            eprintln!(
                "nothing to prune: this card has no more than keep_backups = {} backups in {}",
                cfg.keep_backups,
                cfg.backup_dir.display()
            );
        }
        let mut i = 0;
        all.retain_mut(|f| {
            i += 1;
            if i > keep {
                f.local = false;
            }
            f.local || f.card || f.root.is_some()
        });
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

/// Undoes the backups `ids`, newest first, each planned on the card as the step before left
/// it (so a dry run shows the first step only).
pub(in crate::commands) fn undo_in_order(
    cli: &Cli,
    manifests: &Manifests,
    ids: &[String],
    force: bool,
    wargs: &WriteArgs,
    path: &Path,
) -> anyhow::Result<Exit> {
    for id in ids {
        let code = rollback(cli, manifests, Some(id), force, wargs, Some(path))?;
        if code != Exit::Ok || wargs.dry_run {
            if wargs.dry_run && ids.len() > 1 {
                super::output::note(
                    "note: dry run shows the first step only; each later step is planned on the card as the step before leaves it",
                );
            }
            return Ok(code);
        }
    }
    Ok(Exit::Ok)
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
    let chosen = match to {
        Some(id) => all
            .iter()
            .find(|f| f.summary.manifest.id == id)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no backup {id} of this card in {}, on the card or in its root filesystem; pifw backups lists them (nothing was written)",
                    cfg.backup_dir.display()
                )
            })?,
        None => match all.first() {
            // One pifw run that made several backups (`switch uefi --hybrid`: the files,
            // then the table) is one change to the user: undo all of it, newest first.
            Some(b)
                if b.summary.manifest.run.is_some()
                    && all
                        .get(1)
                        .is_some_and(|n| n.summary.manifest.same_run(&b.summary.manifest)) =>
            {
                let ids: Vec<String> = all
                    .iter()
                    .take_while(|n| n.summary.manifest.same_run(&b.summary.manifest))
                    .map(|n| n.summary.manifest.id.clone())
                    .collect();
                super::output::note(format_args!(
                    "note: the newest change made {} backups in one run ({}); all of them are undone, newest first",
                    ids.len(),
                    ids.join(", ")
                ));
                drop(tmp);
                return undo_in_order(cli, manifests, &ids, force, wargs, &path);
            }
            Some(b) => b,
            None => {
                // Same disk identifiers, other files: another card flashed from the same image,
                // or this card changed since. Neither is guessed; the ids stay in the directory.
                let seen =
                    crate::backup::found::candidates(&path, &report, &cfg.backup_dir, tmp.path())?;
                let others = seen.found.len();
                let mut hint = if others > 0 {
                    format!(
                        "; {others} backups have this card's disk identifiers but record files this card does not hold (another card flashed from the same image, or this card changed since). If one of them is this card's, name it: pifw rollback --to ID (pifw backups on that card lists ids; the file names in {} carry them)",
                        cfg.backup_dir.display()
                    )
                } else {
                    String::new()
                };
                if seen.other_cards > 0 {
                    let this = match report.firmware.as_ref().and_then(|f| f.card_id.as_deref()) {
                        Some(id) => format!("this card's is {id}"),
                        None => "this card has none".to_string(),
                    };
                    hint.push_str(&format!(
                        "; {} backups have this card's disk identifiers but were made on another card: they record another card id ({this}; {}), and pifw never applies them",
                        seen.other_cards,
                        crate::backup::card_id::FILE_NAME
                    ));
                }
                bail!(
                    "no backups of this card in {}, on the card or in its root filesystem, so there is nothing to roll back to{hint} (nothing was written)",
                    cfg.backup_dir.display()
                );
            }
        },
    };
    if let Some(r) = &chosen.root {
        super::output::note(format_args!(
            "note: using backup {} from the card's root filesystem ({r}), copied to this machine and verified",
            chosen.summary.manifest.id
        ));
    }
    let backup = Backup::open(&chosen.summary.path)
        .with_context(|| format!("verifying the backup {}", chosen.summary.path.display()))?;
    if backup.manifest.tables.is_some() {
        // Partition-table sectors go back through the table writer, not the FAT engine.
        return super::partition::rollback_tables(
            cli.json, &path, &report, &backup, force, wargs, &cfg,
        );
    }
    let id = backup.manifest.id.clone();
    let now_of = |p: &str| report.card_file(p);
    let own = card_backup_name(&id);

    let crate::change::restore::Restore {
        changes,
        drift,
        dirs,
    } = crate::change::restore::files_from_backup(&backup, &report, tmp.path())?;
    let mut notes = Vec::new();
    if !drift.is_empty() && !force {
        bail!(
            "the card no longer holds what backup {id} recorded the change leaving in {}: it changed since, or this is another card with the same identifiers. Check with pifw status; pass --force to restore anyway (nothing was written)",
            drift.join(", ")
        );
    }
    if !dirs.is_empty() {
        notes.push(format!(
            "the directories the change created are removed once empty: {}",
            dirs.join(", ")
        ));
    }
    if now_of(&own).is_some() {
        notes.push(format!(
            "the card's copy of the backup ({own}) stays until the restored files are verified, then goes in a transaction of its own"
        ));
    }
    for n in &notes {
        super::output::note(format_args!("note: {n}"));
    }
    let req = Request {
        title: format!("Roll back to before {id}"),
        kind: ChangeKind::Rollback,
        changes,
        boot_critical: super::update::boot_set(&report, manifests),
        backup: true,
        card_copy: false,
        provenance: None,
    };
    let code = change::execute(cli.json, &path, &report, req, wargs, &cfg)?;
    if code != Exit::Ok || wargs.dry_run {
        return Ok(code);
    }
    // Why a later transaction of its own: until the restore above is committed and read
    // back, the card's copy of this backup is the only way back on a machine without the
    // local one; a cut at any write leaves either the old files or this copy. The restored
    // card then carries no copy of a backup of a state it has left.
    if now_of(&own).is_some() {
        change::remove_card_copy(&path, &report, &id)
            .context("removing the card's copy of the backup after the restore")?;
    }
    if dirs.is_empty() {
        return Ok(code);
    }
    // The files are back; the directories the change made go too when nothing else is in them
    // (restore_plan lists them deepest first).
    let (start, end) = change::firmware_range(&report)?;
    let mut wt = WriteTarget::open(&path)?;
    let mut part = Slice::new(&mut wt, start, end)?;
    txn::remove_empty_dirs(&mut part, &dirs)
        .context("removing the directories the change created")?;
    Ok(Exit::Ok)
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
    let (start, end) = change::firmware_range(&report)?;
    let (pending, needed) = {
        let mut ro = Target::open_read(&path)?;
        let mut part = Slice::new(&mut ro.file, start, end)?;
        let pending = txn::pending(&mut part).context("reading the change journal")?;
        // Leftovers without a live journal (a change cut before its journal went live, or
        // while removing it) are cleaned too; a card changed under the journal is refused here.
        let needed = txn::recovery_needed(&mut part)?;
        (pending, needed)
    };
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
            match p.would {
                RecoverOutcome::RolledBack | RecoverOutcome::DiscardedTorn => "undo",
                _ => "finish",
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
    let mut wt = WriteTarget::open(&path)?;
    let mut part = Slice::new(&mut wt, start, end)?;
    let outcome = txn::recover(&mut part).context("recovering the interrupted change")?;
    txn::Durable::sync(&mut part)?;
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
