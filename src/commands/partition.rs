//! `pifw partition hybrid|mbr`: GPT plus a hybrid MBR the Pi 3's boot ROM reads, and back;
//! and the partition-table half of `pifw rollback`.
//!
//! The table work is [`crate::disk::table::convert`]'s; this layer resolves the target, adds
//! what only the firmware partition can tell (cmdline.txt's `PARTUUID=` references, the
//! start.elf build), has the plan shown ([`crate::ui::table`]), and runs the
//! mutating-command sequence: confirm, lock ([`crate::disk::lock::WriteTarget`]), check
//! nothing changed since the plan, back up, grow or shrink an image file, write, read back.
//!
//! Decisions recorded here:
//!
//! - **Backup** (before the first write): LBA 0, LBA 1-33 and the disk's last 33 sectors as
//!   they were, in a verified zip in the configured backup directory (`lba0`, `gpt-primary`,
//!   `gpt-backup`); after the tables are written and verified, a copy goes onto the firmware
//!   partition (`pifw-backup-<id>.zip`, one FAT transaction of its own), so `partition mbr`
//!   works from any machine, and the return removes that copy again. The
//!   backup's card identity carries the GPT disk GUID the conversion *creates*, so it is found
//!   on the converted card and not on other cards flashed from the same image (every NixOS
//!   card has disk signature and FAT id 0x2178694e).
//! - **cmdline.txt is not rewritten**: on a hybrid disk Linux names partitions by their GPT
//!   GUIDs, so `root=PARTUUID=<disk-id>-02` no longer resolves. The plan prints each such
//!   reference with its exact replacement (and again after writing, with the GUIDs written);
//!   rewriting it needs the FAT transaction engine and is left to a later change.
//! - **Growing**: `--grow` on an image file whose last partition reaches the last 33 sectors
//!   grows the file by 1 MiB, after the backup and before the tables; a cut in between leaves
//!   the old MBR on a file 1 MiB longer.
//! - **Going back** (`partition mbr`, or `rollback` of a backup with table sectors) writes the
//!   saved sectors back byte for byte, LBA 0 first when they hold a plain MBR. An image file
//!   grown by the conversion is cut back to its saved size when no partition reaches past it,
//!   so the whole image is byte-identical again. The state being replaced is backed up first,
//!   like every rollback, so the return can itself be undone.
//! - `partition mbr` picks the newest verified backup of this card whose saved tables are a
//!   plain MBR describing the partitions the card has now; a card changed since (other
//!   partitions) is refused, and `pifw rollback --to ID --force` is the explicit override.

mod restore;

pub(super) use restore::rollback_tables;

use super::Exit;
use super::{config, prepare};
use crate::backup::ChangeKind;
use crate::change::table;
pub(super) use crate::change::table::HybridPrep;
use crate::cli::{Cli, PartitionCommand, WriteArgs};
use crate::config::Config;
use crate::disk::table::TableKind;
use crate::finding::{Finding, Severity};
use crate::manifest::Manifests;
use crate::status::Report;
use crate::ui;
use anyhow::bail;
use std::path::Path;

pub fn run(cli: &Cli, manifests: &Manifests, cmd: &PartitionCommand) -> anyhow::Result<Exit> {
    match cmd {
        PartitionCommand::Hybrid {
            grow,
            write,
            target,
        } => hybrid(cli, manifests, *grow, write, target.as_deref()),
        PartitionCommand::Mbr { write, target } => {
            restore::mbr(cli, manifests, write, target.as_deref())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// partition hybrid

fn hybrid(
    cli: &Cli,
    manifests: &Manifests,
    grow: bool,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, false)?;
    match report.table.kind {
        TableKind::Mbr => {}
        TableKind::None => bail!(
            "{} has no partition table to convert; see pifw status (nothing was written)",
            path.display()
        ),
        kind @ (TableKind::Gpt | TableKind::Hybrid) => {
            return already_converted(cli.json, &path, &report, kind, &cfg);
        }
    }
    let mut prep = table::plan_hybrid(&path, &report, grow, true).map_err(usage_if_grow)?;
    ui::table::show_hybrid_plan(cli.json, &prep, wargs.dry_run, &cfg)?;
    if wargs.dry_run {
        return Ok(Exit::Ok);
    }
    ui::prompt::confirm(wargs, &path)?;
    apply_hybrid(
        cli.json,
        ChangeKind::PartitionHybrid,
        &mut prep,
        &report,
        &cfg,
    )
}

/// `--grow` on a block device is a usage error (exit 2), not a refusal of the card.
pub(super) fn usage_if_grow(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<table::GrowOnDevice>() {
        Ok(g) => super::UsageError(g.to_string()).into(),
        Err(e) => e,
    }
}

/// Writes a confirmed conversion ([`table::apply_hybrid`]) and reports it.
pub(super) fn apply_hybrid(
    json: bool,
    kind: ChangeKind,
    prep: &mut HybridPrep,
    report: &Report,
    cfg: &Config,
) -> anyhow::Result<Exit> {
    let done = table::apply_hybrid(kind, prep, report, cfg)?;
    ui::table::hybrid_done(json, prep, &done, cfg)?;
    Ok(Exit::Ok)
}

/// `partition hybrid` on a disk that already has a GPT: nothing to convert; say what is
/// there, including drift between the hybrid MBR and its GPT.
fn already_converted(
    json: bool,
    path: &Path,
    report: &Report,
    kind: TableKind,
    cfg: &Config,
) -> anyhow::Result<Exit> {
    let findings: Vec<Finding> = table::gpt_findings(report);
    let problems = findings.iter().any(|f| f.severity >= Severity::Warning);
    let has_backup = table::has_table_backup(&cfg.backup_dir, report);
    ui::table::already_converted(json, path, kind, findings, has_backup)?;
    Ok(if problems { Exit::Problems } else { Exit::Ok })
}
