//! `pifw partition mbr`, and `pifw rollback` of a backup holding partition-table sectors:
//! putting saved table sectors back.
//!
//! Which backup fits the card is chosen here; the plan and the write are the domain's
//! ([`crate::change::table::plan_restore`], [`crate::change::table::apply_restore`]). Plan
//! (which backup, which sectors in which order, how the image size changes), confirm,
//! lock, check nothing changed since the plan, back up what is there now (a return can itself
//! be undone), grow an image if the saved tables are for a larger disk, write
//! ([`convert::restore_tables`]: LBA 0 first for a plain MBR, last for a GPT), cut an image
//! back to its saved size when no partition reaches past it, read back
//! ([`convert::verify_restored`]).

use super::{Done, print_json};
use crate::backup::Backup;
use crate::change::table;
use crate::cli::{Cli, WriteArgs};
use crate::commands::Exit;
use crate::commands::change::SCHEMA;
use crate::commands::change::confirm;
use crate::commands::{config, prepare};
use crate::config::Config;
use crate::disk::table::convert::{self, RestoreState, SavedTables};
use crate::disk::table::{SECTOR, TableKind};
use crate::manifest::Manifests;
use crate::status::Report;
use crate::ui::output::Paint;
use anyhow::{Context, bail};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

pub(super) fn mbr(
    cli: &Cli,
    manifests: &Manifests,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, false)?;
    if report.table.kind == TableKind::None {
        bail!(
            "{} has no partition table; see pifw status (nothing was written)",
            path.display()
        );
    }
    // Backups on this machine and on the card itself (copied to `tmp` to be read).
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let all = crate::commands::change::all_backups(&path, &report, &cfg, tmp.path())?;
    let mut skipped = Vec::new();
    let choice = table::choose_mbr_backup(&path, &all, &mut skipped);
    for s in &skipped {
        eprintln!("warning: skipping backup {s}");
    }
    let table::MbrChoice { chosen, rejected } = choice?;
    let Some((backup, saved, state)) = chosen else {
        if report.table.kind == TableKind::Mbr && rejected.is_empty() {
            println!(
                "{} already has a plain MBR; nothing to do (nothing was written).",
                path.display()
            );
            return Ok(Exit::Ok);
        }
        bail!(
            "no backup of this card's MBR in {} fits it{}; pifw keeps one when `pifw partition hybrid` converts a card (on the machine that ran it). Nothing was written",
            cfg.backup_dir.display(),
            if rejected.is_empty() {
                String::new()
            } else {
                format!(": {}", rejected.join("; "))
            }
        );
    };
    restore(
        cli.json, "mbr", &path, &report, &backup, saved, state, wargs, &cfg,
    )
}

/// `pifw rollback` of a backup holding table sectors: the same path as `partition mbr`, with
/// `--force` accepting a card whose partitions no longer match.
pub(in crate::commands) fn rollback_tables(
    json: bool,
    path: &Path,
    report: &Report,
    backup: &Backup,
    force: bool,
    wargs: &WriteArgs,
    cfg: &Config,
) -> anyhow::Result<Exit> {
    let (saved, state) = table::rollback_tables_state(path, backup, force)?;
    restore(
        json, "rollback", path, report, backup, saved, state, wargs, cfg,
    )
}

#[derive(Debug, Serialize)]
struct RegionOut {
    name: String,
    offset_bytes: u64,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct RestoreOut {
    /// Version of this JSON (docs/change-json.md); the same for every changing command.
    schema: u32,
    action: &'static str,
    target: String,
    dry_run: bool,
    backup_id: String,
    backup_path: String,
    backup_created: String,
    state: RestoreState,
    /// The kind of table the backup holds.
    restores: TableKind,
    /// The partitions it describes, `(first, last)` LBAs.
    partitions: Vec<(u64, u64)>,
    /// In write order.
    writes: Vec<RegionOut>,
    lba0_first: bool,
    disk_bytes_now: u64,
    disk_bytes_after: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    size_note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Done>,
}

/// Puts `saved` back onto `path`: plan, confirm, lock, back up what is there, resize an image,
/// write, read back.
#[allow(clippy::too_many_arguments)]
fn restore(
    json: bool,
    action: &'static str,
    path: &Path,
    report: &Report,
    backup: &Backup,
    saved: SavedTables,
    state: RestoreState,
    wargs: &WriteArgs,
    cfg: &Config,
) -> anyhow::Result<Exit> {
    let id = &backup.manifest.id;
    let prep = table::plan_restore(path, backup, saved, state.clone())?;
    let (saved, now_bytes, after_bytes) = (&prep.saved, prep.now_bytes, prep.after_bytes);
    let saved_layout = saved.layout()?;
    let lba0_first = !saved.restores_gpt();
    let mut writes: Vec<RegionOut> = saved
        .regions()
        .iter()
        .map(|r| RegionOut {
            name: r.name.clone(),
            offset_bytes: r.offset,
            bytes: r.bytes.len() as u64,
        })
        .collect();
    if !lba0_first {
        writes.rotate_left(1);
    }
    let mut out = RestoreOut {
        schema: SCHEMA,
        action,
        target: path.display().to_string(),
        dry_run: wargs.dry_run,
        backup_id: id.clone(),
        backup_path: backup.path.display().to_string(),
        backup_created: backup.manifest.created.clone(),
        state: state.clone(),
        restores: saved_layout.kind,
        partitions: convert::effective_partitions(&saved_layout),
        writes,
        lba0_first,
        disk_bytes_now: now_bytes,
        disk_bytes_after: after_bytes,
        size_note: prep.size_note.clone(),
        result: None,
    };
    if state == RestoreState::Done && now_bytes == after_bytes {
        if json {
            print_json(&out)?;
        } else {
            println!(
                "{} already holds the tables of backup {id}; nothing to do (nothing was written).",
                path.display()
            );
        }
        return Ok(Exit::Ok);
    }
    if !json {
        show_restore(&out, Paint::stdout())?;
        for note in prep.preflight.notes() {
            println!("  {note}");
        }
    }
    if wargs.dry_run {
        if json {
            print_json(&out)?;
        }
        return Ok(Exit::Ok);
    }
    confirm(wargs, path)?;

    let done = table::apply_restore(prep, report, cfg)?;
    if let Some(e) = &done.card_copy_error {
        eprintln!(
            "warning: the tables are restored, but the card's copy of backup {id} could not be removed: {e}"
        );
    }
    let (new_id, new_path, layout) = (done.new_id, done.new_path, done.layout);
    out.result = Some(Done {
        backup_id: new_id.clone(),
        backup_path: new_path.display().to_string(),
        verified: true,
        table: layout.kind,
        disk_bytes: layout.disk_bytes,
        created_card_id: None,
    });
    if json {
        print_json(&out)?;
        return Ok(Exit::Ok);
    }
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "Done: the {} sectors of backup {id} are back byte for byte, read back and verified ({} table).",
        out.writes.iter().map(|r| r.bytes / SECTOR).sum::<u64>(),
        table_name(layout.kind)
    )?;
    writeln!(
        o,
        "The tables it replaced are in backup {new_id}: {}",
        new_path.display()
    )?;
    Ok(Exit::Ok)
}

fn table_name(kind: TableKind) -> &'static str {
    match kind {
        TableKind::None => "no",
        TableKind::Mbr => "plain MBR",
        TableKind::Gpt => "GPT",
        TableKind::Hybrid => "hybrid GPT/MBR",
    }
}

fn show_restore(out: &RestoreOut, p: Paint) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "{} on {}",
        p.bold(&format!(
            "Restore the {} of backup {}",
            table_name(out.restores),
            out.backup_id
        )),
        out.target
    )?;
    writeln!(
        o,
        "  backup made {} ({})",
        out.backup_created, out.backup_path
    )?;
    writeln!(
        o,
        "  partitions it describes: {}",
        table::ranges(&out.partitions)
    )?;
    match &out.state {
        RestoreState::Finish => writeln!(
            o,
            "  LBA 0 already holds the saved sector (an interrupted restore or conversion): the rest is written"
        )?,
        RestoreState::Mismatch { now, .. } => writeln!(
            o,
            "  {} the card has partitions {} (--force)",
            p.yellow("warning:"),
            table::ranges(now)
        )?,
        _ => {}
    }
    let order: Vec<String> = out
        .writes
        .iter()
        .map(|r| {
            format!(
                "{} ({} sector{} at LBA {})",
                r.name,
                r.bytes / SECTOR,
                if r.bytes == SECTOR { "" } else { "s" },
                r.offset_bytes / SECTOR
            )
        })
        .collect();
    writeln!(o, "  writes, in this order: {}", order.join(", "))?;
    writeln!(
        o,
        "  {}",
        if out.lba0_first {
            "LBA 0 goes first, alone: from then on the disk is the saved MBR disk"
        } else {
            "LBA 0 goes last: the GPT is complete before the 0xEE entry points to it"
        }
    )?;
    if let Some(n) = &out.size_note {
        writeln!(o, "  {n}")?;
    }
    writeln!(o, "  the sectors replaced are backed up first")?;
    if out.dry_run {
        writeln!(o, "Dry run: nothing was written.")?;
    }
    Ok(())
}
