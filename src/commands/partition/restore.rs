//! `pifw partition mbr`, and `pifw rollback` of a backup holding partition-table sectors:
//! putting saved table sectors back.
//!
//! Which backup fits the card is chosen here; the plan and the write are the domain's
//! ([`crate::change::table::plan_restore`], [`crate::change::table::apply_restore`]). Plan
//! (which backup, which sectors in which order, how the image size changes), confirm,
//! lock, check nothing changed since the plan, back up what is there now (a return can itself
//! be undone), grow an image if the saved tables are for a larger disk, write
//! ([`crate::disk::table::convert::restore_tables`]: LBA 0 first for a plain MBR, last for a GPT), cut an image
//! back to its saved size when no partition reaches past it, read back
//! ([`crate::disk::table::convert::verify_restored`]).

use crate::backup::Backup;
use crate::change::table;
use crate::cli::{Cli, WriteArgs};
use crate::commands::Exit;
use crate::commands::{config, prepare};
use crate::config::Config;
use crate::disk::table::TableKind;
use crate::disk::table::convert::{RestoreState, SavedTables};
use crate::manifest::Manifests;
use crate::status::Report;
use crate::ui;
use anyhow::{Context, bail};
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
    ui::table::skipped(&skipped);
    let table::MbrChoice { chosen, rejected } = choice?;
    let Some((backup, saved, state)) = chosen else {
        if report.table.kind == TableKind::Mbr && rejected.is_empty() {
            ui::table::plain_mbr_already(&path);
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
    let prep = table::plan_restore(path, backup, saved, state.clone())?;
    let out = ui::table::restore_out(action, backup, &prep, wargs.dry_run)?;
    if state == RestoreState::Done && prep.now_bytes == prep.after_bytes {
        ui::table::restore_nothing(json, &out)?;
        return Ok(Exit::Ok);
    }
    ui::table::show_restore_plan(json, &out, &prep)?;
    if wargs.dry_run {
        return Ok(Exit::Ok);
    }
    ui::prompt::confirm(wargs, path)?;
    let done = table::apply_restore(prep, report, cfg)?;
    ui::table::restore_done(json, out, &done)?;
    Ok(Exit::Ok)
}
