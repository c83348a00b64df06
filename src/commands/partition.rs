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
use super::change::{self, confirm, identity};
use super::output::{self, Paint};
use super::update::{config, prepare};
use crate::backup::{Backup, BackupWriter, ChangeKind};
use crate::cli::{Cli, PartitionCommand, WriteArgs};
use crate::config::Config;
use crate::disk::lock::{Preflight, WriteTarget};
use crate::disk::table::convert::{self, ConvertError, Guid, HybridOptions, HybridPlan, Room};
use crate::disk::table::{SECTOR, TableKind};
use crate::disk::target::{Target, TargetKind};
use crate::finding::{Finding, Severity};
use crate::manifest::Manifests;
use crate::status::Report;
use crate::txn::Slice;
use anyhow::{Context, bail};
use serde::Serialize;
use std::io::{Read, Write};
use std::path::Path;

/// Largest cmdline.txt read.
const CMDLINE_CAP: u64 = 256 * 1024;

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

#[derive(Debug, Clone, Serialize)]
struct StartElf {
    file: String,
    /// `YYYY-MM-DD`, from the firmware's `VC_BUILD_ID_TIME` string.
    build_date: Option<String>,
    breaks_hybrid_mbr: bool,
}

#[derive(Debug, Clone, Serialize)]
struct PartuuidOut {
    file: &'static str,
    /// The word as written, e.g. `root=PARTUUID=3e247b30-02`.
    word: String,
    old: String,
    /// The GPT PARTUUID of the same partition; `None` when the reference names no partition.
    new: Option<String>,
    /// The word as it must read after the conversion.
    replacement: Option<String>,
}

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
    partuuid_references: Vec<PartuuidOut>,
    backup_dir: String,
    /// cmdline.txt references are reported, not rewritten, by this pifw.
    cmdline_rewritten: bool,
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

fn random_guid() -> anyhow::Result<Guid> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for new GUIDs")?;
    Ok(Guid::random_v4(b))
}

/// A refusal: the domain's reason, what to do, and that nothing changed.
fn refusal(e: ConvertError, kind: TargetKind, grow: bool) -> anyhow::Error {
    let hint = match (&e, kind, grow) {
        (ConvertError::NoRoomBackup { .. }, TargetKind::Image, false) => {
            "; on an image file, --grow makes room by growing the file by 1 MiB instead"
        }
        (ConvertError::NoRoomPrimary { .. }, _, _) => {
            "; gdisk can make a GPT with a smaller entry array, but pifw does not"
        }
        _ => "",
    };
    anyhow::anyhow!("cannot convert to GPT + hybrid MBR: {e}{hint} (nothing was written)")
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
    let prep = plan_hybrid(&path, &report, grow)?;
    show_hybrid_plan(cli.json, &prep, wargs.dry_run, &cfg)?;
    if wargs.dry_run {
        return Ok(Exit::Ok);
    }
    confirm(wargs, &path)?;
    apply_hybrid(cli.json, ChangeKind::PartitionHybrid, &prep, &report, &cfg)
}

/// A planned conversion to GPT + hybrid MBR: everything decided, nothing written.
pub(super) struct HybridPrep {
    /// What writing involves on a live disk (mounts that stay, the firmware partition's).
    preflight: Preflight,
    path: std::path::PathBuf,
    kind: TargetKind,
    plan: HybridPlan,
    start_elf: Vec<StartElf>,
    refs: Vec<PartuuidOut>,
}

/// Plans the conversion on a read-only open, with every refusal the write would meet: no
/// room for the GPTs (and `--grow` where it helps), a block device asked to grow, a target
/// the lock or the in-use checks refuse. Writes nothing.
pub(super) fn plan_hybrid(path: &Path, report: &Report, grow: bool) -> anyhow::Result<HybridPrep> {
    // The checks the write's open repeats under the lock (mounts, users, read-only, lock), so
    // a refusal comes here, by the plan (and so by --dry-run), not after the confirmation.
    drop(crate::disk::lock::CardLock::acquire(path)?);
    let preflight = Preflight::check(path, None, true)?;
    let mut ro = Target::open_read(path)?;
    if grow && ro.kind == TargetKind::BlockDevice {
        return Err(super::UsageError(format!(
            "--grow grows image files; {} is a block device, which cannot grow (nothing was written)",
            path.display()
        ))
        .into());
    }
    let opts = HybridOptions {
        may_grow: grow && ro.kind == TargetKind::Image,
        disk_guid: random_guid()?,
        partition_guids: (0..4)
            .map(|_| random_guid())
            .collect::<anyhow::Result<_>>()?,
    };
    let mut plan = convert::plan_hybrid(&mut ro.file, ro.size_bytes, &opts)
        .map_err(|e| refusal(e, ro.kind, grow))?;
    let extents: Vec<(u64, u64)> = plan
        .gpt
        .partitions
        .iter()
        .map(|p| (p.first_lba, p.last_lba))
        .collect();
    preflight.refuse_moved_partitions(&extents)?;
    let (start_elf, refs) = firmware_checks(&mut ro, report, &mut plan);
    Ok(HybridPrep {
        preflight,
        path: path.to_path_buf(),
        kind: ro.kind,
        plan,
        start_elf,
        refs,
    })
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

/// Writes a confirmed conversion: lock, check nothing changed since the plan, back up, grow,
/// write, read back, copy the backup onto the card, report.
pub(super) fn apply_hybrid(
    json: bool,
    kind: ChangeKind,
    prep: &HybridPrep,
    report: &Report,
    cfg: &Config,
) -> anyhow::Result<Exit> {
    let path = &prep.path;
    let plan = &prep.plan;
    let mut out = hybrid_out(prep, false, cfg);
    let mut wt = WriteTarget::open_prepared(prep.preflight.clone())?;
    convert::check_unchanged(&mut wt, plan)
        .map_err(|e| anyhow::anyhow!("{e}; run the command again (nothing was written)"))?;

    // Back up, and verify the backup, before the first write to the card.
    let mut card = identity(report);
    card.gpt_disk_guid = Some(plan.gpt.disk_guid.to_ascii_lowercase());
    let (backup_id, backup_path) =
        write_backup(kind, cfg, card, plan.disk_bytes, &plan.backup_regions())?;
    let undo = format!(
        "`pifw partition mbr {}` restores the old tables from backup {backup_id}",
        path.display()
    );

    if plan.grow_bytes() > 0 {
        wt.set_len(plan.new_disk_bytes).with_context(|| {
            format!(
                "growing {} by {} (the partition tables are unchanged)",
                path.display(),
                output::size(plan.grow_bytes())
            )
        })?;
    }
    convert::write_hybrid(&mut wt, plan).with_context(|| {
        format!(
            "writing the partition tables of {}; the write order leaves either the old MBR or the complete new tables (pifw status shows which); {undo}",
            path.display()
        )
    })?;
    let layout = convert::verify_hybrid(&mut wt, plan)
        .with_context(|| format!("verifying {}; {undo}", path.display()))?;

    // The backup travels with the card, so any machine can undo the conversion: a file
    // change of its own, after the tables (a cut before it leaves the backup on this machine
    // only, which is what the plan promised at least).
    drop(wt);
    let on_card = if cfg.backups_on_card {
        match change::copy_backup_to_card(path, report, &backup_id, &backup_path) {
            Ok(true) => Some(format!(
                "and on the card as {}",
                change::card_backup_name(&backup_id)
            )),
            Ok(false) => Some("not on the card: too little free space".to_string()),
            Err(e) => Some(format!("not on the card: {e:#}")),
        }
    } else {
        None
    };
    out.result = Some(Done {
        backup_id: backup_id.clone(),
        backup_path: backup_path.display().to_string(),
        verified: true,
        table: layout.kind,
        disk_bytes: layout.disk_bytes,
    });
    if json {
        print_json(&out)?;
        return Ok(Exit::Ok);
    }
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "Done: GPT and hybrid MBR written, read back and verified (both GPT copies valid, MBR slot 1 type {:#04x}).",
        plan.mbr[0].type_byte
    )?;
    writeln!(o, "Backup {backup_id}: {}", backup_path.display())?;
    if let Some(note) = &on_card {
        writeln!(o, "  {note}")?;
    }
    writeln!(o, "Undo with: pifw partition mbr {}", path.display())?;
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

/// What only the firmware partition tells: start.elf builds and cmdline.txt references. Adds
/// findings to the plan; never fails (a file it cannot read becomes a finding).
fn firmware_checks(
    ro: &mut Target,
    report: &Report,
    plan: &mut HybridPlan,
) -> (Vec<StartElf>, Vec<PartuuidOut>) {
    let mut elfs = Vec::new();
    let mut refs = Vec::new();
    let Ok((start, end)) = change::firmware_range(report) else {
        plan.findings.push(Finding::warning(
            "convert-firmware-unread",
            "the firmware partition's files could not be read, so cmdline.txt and start.elf \
             were not checked",
        ));
        return (elfs, refs);
    };
    let Ok(mut part) = Slice::new(&mut ro.file, start, end) else {
        return (elfs, refs);
    };
    let names: Vec<String> = report
        .firmware
        .iter()
        .flat_map(|f| &f.files)
        .map(|f| f.path.clone())
        .filter(|p| {
            let l = p.to_ascii_lowercase();
            !l.contains('/') && l.starts_with("start") && l.ends_with(".elf")
        })
        .collect();
    for name in names {
        let date = crate::fat::with_file(&mut part, &name, |r| convert::vc_build_date(r))
            .ok()
            .flatten()
            .flatten();
        let breaks = date.is_some_and(convert::breaks_hybrid_mbr);
        if breaks {
            plan.findings.push(
                Finding::warning(
                    "convert-start-elf-breaks-hybrid",
                    format!(
                        "{name} was built {}: firmware builds from July-August 2020 read the \
                         GPT and did not boot hybrid-MBR cards (raspberrypi/linux#3831, fixed in \
                         September 2020 by raspberrypi/firmware#1465)",
                        date_text(date)
                    ),
                )
                .advice("update the firmware first (pifw update-firmware), then convert"),
            );
        }
        elfs.push(StartElf {
            file: name,
            build_date: date.map(|d| date_text(Some(d))),
            breaks_hybrid_mbr: breaks,
        });
    }

    let cmdline = crate::fat::with_file(&mut part, "cmdline.txt", |r| {
        let mut text = Vec::new();
        r.take(CMDLINE_CAP).read_to_end(&mut text)?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    })
    .ok()
    .flatten();
    let sig = u32::from_str_radix(plan.disk_signature.trim_start_matches("0x"), 16).unwrap_or(0);
    for r in convert::partuuid_refs(cmdline.as_deref().unwrap_or(""), sig) {
        let new = plan
            .gpt
            .partitions
            .iter()
            .find(|p| p.mbr_slot == r.number)
            .map(|p| p.partuuid.clone());
        let replacement = new.as_ref().map(|n| replace_ci(&r.word, &r.partuuid, n));
        let finding = match (&new, &replacement) {
            (Some(new), Some(rep)) => Finding::warning(
                "convert-partuuid-reference",
                format!(
                    "cmdline.txt has `{}`: on the hybrid disk Linux reads the GPT and knows \
                     partition {} as PARTUUID={new}, so this would name no partition",
                    r.word, r.number
                ),
            )
            .advice(format!(
                "change it to `{rep}` after the conversion, before booting (pifw does not \
                 rewrite cmdline.txt yet); /etc/fstab on the root file system may name \
                 PARTUUID={}-NN too",
                &r.partuuid[..8]
            )),
            _ => Finding::warning(
                "convert-partuuid-reference",
                format!(
                    "cmdline.txt has `{}`, which names no partition of this disk",
                    r.word
                ),
            ),
        };
        plan.findings.push(finding);
        refs.push(PartuuidOut {
            file: "cmdline.txt",
            word: r.word,
            old: r.partuuid,
            new,
            replacement,
        });
    }
    (elfs, refs)
}

/// `word` with `old` replaced by `new`, ignoring ASCII case.
fn replace_ci(word: &str, old: &str, new: &str) -> String {
    match word.to_ascii_lowercase().find(&old.to_ascii_lowercase()) {
        Some(at) => format!("{}{new}{}", &word[..at], &word[at + old.len()..]),
        None => word.to_string(),
    }
}

fn date_text(d: Option<(u16, u8, u8)>) -> String {
    d.map_or_else(
        || "at an unknown date".to_string(),
        |(y, m, d)| format!("{y:04}-{m:02}-{d:02}"),
    )
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
    const RELEVANT: [&str; 6] = [
        "hybrid-",
        "firmware-",
        "pure-gpt",
        "gpt-",
        "protective-",
        "cmdline-root",
    ];
    let findings: Vec<Finding> = report
        .findings
        .iter()
        .filter(|f| RELEVANT.iter().any(|p| f.code.starts_with(p)))
        .cloned()
        .collect();
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
        let has_backup = crate::backup::list(&cfg.backup_dir, &identity(report))
            .map(|l| l.backups.iter().any(|b| b.manifest.tables.is_some()))
            .unwrap_or(false);
        if has_backup {
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

/// Writes a backup holding only table regions; returns its id and path once verified.
fn write_backup(
    kind: ChangeKind,
    cfg: &Config,
    card: crate::backup::CardIdentity,
    disk_bytes: u64,
    regions: &[(&str, u64, &[u8])],
) -> anyhow::Result<(String, std::path::PathBuf)> {
    let command: Vec<String> = std::env::args().collect();
    let mut w = BackupWriter::create(&cfg.backup_dir, card, command)
        .with_context(|| format!("creating a backup in {}", cfg.backup_dir.display()))?;
    w.set_change(kind);
    w.set_tables(SECTOR as u32, disk_bytes, regions)
        .context("saving the table sectors into the backup")?;
    let id = w.id().to_string();
    let path = w
        .finish()
        .context("writing the backup (nothing was written to the card)")?;
    // A backup that does not read back intact is no backup: stop before touching the card.
    Backup::open(&path).with_context(|| {
        format!(
            "verifying the backup {} (nothing was written to the card)",
            path.display()
        )
    })?;
    Ok((id, path))
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut o, v)?;
    writeln!(o)?;
    Ok(())
}
