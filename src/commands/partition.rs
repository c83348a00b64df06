//! `pifw partition hybrid|mbr`: GPT plus a hybrid MBR the Pi 3's boot ROM reads, and back;
//! and the partition-table half of `pifw rollback`.
//!
//! The table work is [`crate::disk::table::convert`]'s; this layer resolves the target, adds
//! what only the firmware partition can tell (cmdline.txt's `PARTUUID=` references, the
//! start.elf build), shows the plan, and runs the mutating-command sequence: confirm, lock
//! ([`WriteTarget`]), check nothing changed since the plan, back up, grow or shrink an image
//! file, write, read back.
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
use super::change::SCHEMA;
use super::change::confirm;
use super::{config, prepare};
use crate::backup::ChangeKind;
pub(super) use crate::change::table::HybridPrep;
use crate::change::table::{self, CardCopy, PartuuidRef, StartElf};
use crate::cli::{Cli, PartitionCommand, WriteArgs};
use crate::config::Config;
use crate::disk::table::convert::{HybridPlan, Room};
use crate::disk::table::{SECTOR, TableKind};
use crate::disk::target::TargetKind;
use crate::finding::{Finding, Severity};
use crate::manifest::Manifests;
use crate::status::Report;
use crate::ui::output::{self, Paint};
use anyhow::bail;
use serde::Serialize;
use std::io::Write;
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

#[derive(Debug, Serialize)]
struct HybridOut<'a> {
    /// Version of this JSON (docs/change-json.md); the same for every changing command.
    schema: u32,
    action: &'static str,
    target: String,
    target_kind: TargetKind,
    dry_run: bool,
    plan: &'a HybridPlan,
    start_elf: Vec<StartElf>,
    partuuid_references: Vec<PartuuidRef>,
    backup_dir: String,
    /// cmdline.txt references are reported, not rewritten, by this pifw.
    cmdline_rewritten: bool,
    /// The card gets its identity (`PIFW-ID.TXT`) before the tables (added within schema 1).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    creates_card_id: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Done>,
}

#[derive(Debug, Serialize)]
struct Done {
    backup_id: String,
    backup_path: String,
    /// Read back through the validating parser and compared with the plan (or the backup).
    verified: bool,
    table: TableKind,
    disk_bytes: u64,
    /// The identity the conversion gave the card first (`PIFW-ID.TXT`), when it had none.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_card_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct AlreadyOut {
    /// Version of this JSON (docs/change-json.md); the same for every changing command.
    schema: u32,
    action: &'static str,
    target: String,
    table: TableKind,
    nothing_to_do: bool,
    findings: Vec<Finding>,
}

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
    show_hybrid_plan(cli.json, &prep, wargs.dry_run, &cfg)?;
    if wargs.dry_run {
        return Ok(Exit::Ok);
    }
    confirm(wargs, &path)?;
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

fn hybrid_out<'a>(prep: &'a HybridPrep, dry_run: bool, cfg: &Config) -> HybridOut<'a> {
    HybridOut {
        schema: SCHEMA,
        action: "hybrid",
        target: prep.path.display().to_string(),
        target_kind: prep.kind,
        dry_run,
        plan: &prep.plan,
        start_elf: prep.start_elf.clone(),
        partuuid_references: prep.refs.clone(),
        backup_dir: cfg.backup_dir.display().to_string(),
        cmdline_rewritten: false,
        creates_card_id: prep.creates_card_id,
        result: None,
    }
}

/// Shows the plan (text), or prints it as JSON when this is a dry run.
pub(super) fn show_hybrid_plan(
    json: bool,
    prep: &HybridPrep,
    dry_run: bool,
    cfg: &Config,
) -> anyhow::Result<()> {
    let out = hybrid_out(prep, dry_run, cfg);
    if !json {
        show_hybrid(&out, Paint::stdout())?;
        for note in prep.preflight.notes() {
            println!("  {note}");
        }
    } else if dry_run {
        print_json(&out)?;
    }
    Ok(())
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
    let prep = &*prep;
    let mut out = hybrid_out(prep, false, cfg);
    out.result = Some(Done {
        backup_id: done.backup_id.clone(),
        backup_path: done.backup_path.display().to_string(),
        verified: true,
        table: done.layout.kind,
        disk_bytes: done.layout.disk_bytes,
        created_card_id: done.created_card_id.clone(),
    });
    if json {
        print_json(&out)?;
        return Ok(Exit::Ok);
    }
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "Done: GPT and hybrid MBR written, read back and verified (both GPT copies valid, MBR slot 1 type {:#04x}).",
        prep.plan.mbr[0].type_byte
    )?;
    writeln!(
        o,
        "Backup {}: {}",
        done.backup_id,
        done.backup_path.display()
    )?;
    match &done.card_copy {
        CardCopy::NotWanted => {}
        CardCopy::Copied(name) => writeln!(o, "  and on the card as {name}")?,
        CardCopy::NoRoom => writeln!(o, "  not on the card: too little free space")?,
        CardCopy::Failed(why) => writeln!(o, "  not on the card: {why}")?,
    }
    if let Some(id) = &done.created_card_id {
        writeln!(
            o,
            "  the card got its identity first: card id {id} ({}), which the backup records",
            crate::backup::card_id::FILE_NAME
        )?;
    }
    writeln!(o, "Undo with: pifw partition mbr {}", prep.path.display())?;
    for r in &out.partuuid_references {
        if let Some(rep) = &r.replacement {
            writeln!(
                o,
                "{} cmdline.txt still says {}: change it to {rep} before booting",
                Paint::stdout().yellow("Now:"),
                r.word
            )?;
        }
    }
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
    if json {
        print_json(&AlreadyOut {
            schema: SCHEMA,
            action: "hybrid",
            target: path.display().to_string(),
            table: kind,
            nothing_to_do: true,
            findings,
        })?;
    } else {
        let p = Paint::stdout();
        let mut o = std::io::stdout().lock();
        writeln!(
            o,
            "{} already has {}; nothing to convert (nothing was written).",
            path.display(),
            match kind {
                TableKind::Hybrid => "a GPT with a hybrid MBR",
                _ => "a GPT (with only a protective MBR, which a Pi 3 cannot boot)",
            }
        )?;
        render_findings(&mut o, &findings, p)?;
        if table::has_table_backup(&cfg.backup_dir, report) {
            writeln!(
                o,
                "pifw partition mbr {} returns it to the MBR pifw backed up.",
                path.display()
            )?;
        }
    }
    Ok(if problems { Exit::Problems } else { Exit::Ok })
}

fn show_hybrid(out: &HybridOut<'_>, p: Paint) -> std::io::Result<()> {
    let plan = out.plan;
    let mut o = std::io::stdout().lock();
    let lbas = |first: u64, last: u64| format!("LBA {first}-{last}");
    writeln!(
        o,
        "{} on {}",
        p.bold("Convert to GPT + hybrid MBR"),
        out.target
    )?;
    writeln!(
        o,
        "  GPT, disk GUID {} (new, random), entries at LBA 2-33, backup at LBA {}-{}:",
        plan.gpt.disk_guid,
        plan.gpt.backup_first_lba,
        plan.new_disk_bytes / SECTOR - 1
    )?;
    for e in &plan.gpt.partitions {
        writeln!(
            o,
            "    {} {:<9} {:<17} {:<22} {:>10}{}",
            e.index,
            e.name,
            e.type_name,
            lbas(e.first_lba, e.last_lba),
            output::size((e.last_lba + 1 - e.first_lba) * SECTOR),
            if e.legacy_bios_bootable {
                "  legacy BIOS bootable"
            } else {
                ""
            }
        )?;
        writeln!(o, "      PARTUUID {} -> {}", e.old_partuuid, e.partuuid)?;
    }
    writeln!(
        o,
        "  hybrid MBR (what the Pi's boot ROM reads), disk signature {} and boot code kept:",
        plan.disk_signature
    )?;
    for s in &plan.mbr {
        let what = match (s.role, s.gpt_index) {
            ("protective", _) => "0xEE: Linux, U-Boot and UEFI read the GPT".to_string(),
            ("firmware", Some(i)) => format!("= GPT {i}, the firmware partition the ROM boots"),
            (_, Some(i)) => format!("= GPT {i}"),
            _ => String::new(),
        };
        writeln!(
            o,
            "    slot {}  {:#04x}{:<9} {:<22} {what}",
            s.slot,
            s.type_byte,
            if s.bootable { " bootable" } else { "" },
            lbas(s.start_lba, s.start_lba + s.sectors - 1)
        )?;
    }
    match &plan.room {
        Room::Free => {}
        Room::Grow { bytes } => writeln!(
            o,
            "  the last partition reaches the end of the image: the file grows by {} ({} -> {}) for the backup GPT",
            output::size(*bytes),
            output::size(plan.disk_bytes),
            output::size(plan.new_disk_bytes)
        )?,
        Room::ShrinkEntry {
            gpt_index,
            sectors,
            fs,
        } => writeln!(
            o,
            "  partition {gpt_index}'s entries end {sectors} sectors earlier than its MBR entry, to make room for the backup GPT; its ext4 file system ({}) ends before them",
            output::size(fs.bytes())
        )?,
    }
    writeln!(
        o,
        "  writes, in this order: backup GPT (LBA {}-{}), primary GPT (LBA 1-33), then LBA 0 alone (the commit)",
        plan.gpt.backup_first_lba,
        plan.new_disk_bytes / SECTOR - 1
    )?;
    writeln!(
        o,
        "  first, LBA 0-33 and the last 33 sectors are backed up to {}",
        out.backup_dir
    )?;
    let mut fine: Vec<(&str, Vec<&str>)> = Vec::new();
    for e in out.start_elf.iter().filter(|e| !e.breaks_hybrid_mbr) {
        let date = e.build_date.as_deref().unwrap_or("date unknown");
        match fine.iter_mut().find(|(d, _)| *d == date) {
            Some((_, files)) => files.push(&e.file),
            None => fine.push((date, vec![&e.file])),
        }
    }
    for (date, files) in fine {
        let text = format!(
            "firmware built {date} ({}): {}",
            files.join(", "),
            if date == "date unknown" {
                "pifw cannot tell whether it is a July-August 2020 build that fails on hybrid MBRs"
            } else {
                "not one of the July-August 2020 builds that fail on hybrid MBRs"
            }
        );
        writeln!(o, "  {}", output::wrap(&text, 2, 4, 80))?;
    }
    render_findings(&mut o, &plan.findings, p)?;
    if out.creates_card_id {
        let text = format!(
            "first, the card gets its own identity ({}) in the firmware partition: it binds the backup to this card",
            crate::backup::card_id::FILE_NAME
        );
        writeln!(o, "  {}", output::wrap(&text, 2, 4, 80))?;
    }
    if out.dry_run {
        writeln!(
            o,
            "Dry run: nothing was written (the GUIDs are chosen anew when writing)."
        )?;
    }
    Ok(())
}

fn render_findings(o: &mut dyn Write, findings: &[Finding], p: Paint) -> std::io::Result<()> {
    const COL: usize = 11;
    for f in findings {
        let tag = match f.severity {
            Severity::Error => p.red("error  "),
            Severity::Warning => p.yellow("warning"),
            Severity::Info => p.dim("info   "),
        };
        writeln!(o, "{tag}    {}", output::wrap(&f.message, COL, COL, 80))?;
        if let Some(a) = &f.advice {
            writeln!(
                o,
                "{:COL$}{}",
                "",
                p.dim(&output::wrap(&format!("-> {a}"), COL, COL + 3, 80))
            )?;
        }
    }
    Ok(())
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut o, v)?;
    writeln!(o)?;
    Ok(())
}
