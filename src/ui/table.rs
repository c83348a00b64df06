//! The views of a partition-table change: `partition hybrid`'s plan and result, the "already
//! converted" answer, and the return of saved table sectors (`partition mbr`, `rollback` of a
//! table backup), as text or as their `--json` documents (docs/change-json.md).

use super::SCHEMA;
use super::output::{self, Paint};
use crate::backup::Backup;
use crate::change::table::{
    self, CardCopy, HybridApplied, HybridPrep, PartuuidRef, RestoreApplied, RestorePrep, StartElf,
};
use crate::config::Config;
use crate::disk::table::convert::{self, HybridPlan, RestoreState, Room};
use crate::disk::table::{SECTOR, TableKind};
use crate::disk::target::TargetKind;
use crate::finding::{Finding, Severity};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

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
pub fn show_hybrid_plan(
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
        output::json(&out)?;
    }
    Ok(())
}

/// The result of [`table::apply_hybrid`]: the JSON document with its `result`, or the text
/// (the backup, how to undo it, cmdline.txt references to change).
pub fn hybrid_done(
    json: bool,
    prep: &HybridPrep,
    done: &HybridApplied,
    cfg: &Config,
) -> anyhow::Result<()> {
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
        return output::json(&out);
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
    Ok(())
}

/// `partition hybrid` on a disk that already has a GPT: nothing to convert; what is there,
/// including drift between the hybrid MBR and its GPT (`findings`), and the way back when
/// pifw keeps a backup of the card's MBR.
pub fn already_converted(
    json: bool,
    path: &Path,
    kind: TableKind,
    findings: Vec<Finding>,
    has_table_backup: bool,
) -> anyhow::Result<()> {
    if json {
        output::json(&AlreadyOut {
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
        if has_table_backup {
            writeln!(
                o,
                "pifw partition mbr {} returns it to the MBR pifw backed up.",
                path.display()
            )?;
        }
    }
    Ok(())
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

// ---------------------------------------------------------------------------------------------
// the return of saved table sectors

#[derive(Debug, Serialize)]
struct RegionOut {
    name: String,
    offset_bytes: u64,
    bytes: u64,
}

/// The `--json` document of a return of table sectors, and what its text shows.
#[derive(Debug, Serialize)]
pub struct RestoreOut {
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

/// Backups `partition mbr` passed over, and why.
pub fn skipped(skipped: &[String]) {
    for s in skipped {
        eprintln!("warning: skipping backup {s}");
    }
}

/// `partition mbr` on a card that has a plain MBR and no backup of another.
pub fn plain_mbr_already(path: &Path) {
    println!(
        "{} already has a plain MBR; nothing to do (nothing was written).",
        path.display()
    );
}

/// The return of `prep` (saved tables of `backup`) as `action` (`mbr`, `rollback`) shows it.
pub fn restore_out(
    action: &'static str,
    backup: &Backup,
    prep: &RestorePrep,
    dry_run: bool,
) -> anyhow::Result<RestoreOut> {
    let (saved, state) = (&prep.saved, &prep.state);
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
    Ok(RestoreOut {
        schema: SCHEMA,
        action,
        target: prep.path.display().to_string(),
        dry_run,
        backup_id: backup.manifest.id.clone(),
        backup_path: backup.path.display().to_string(),
        backup_created: backup.manifest.created.clone(),
        state: state.clone(),
        restores: saved_layout.kind,
        partitions: convert::effective_partitions(&saved_layout),
        writes,
        lba0_first,
        disk_bytes_now: prep.now_bytes,
        disk_bytes_after: prep.after_bytes,
        size_note: prep.size_note.clone(),
        result: None,
    })
}

/// A card that holds the saved tables already: nothing to do.
pub fn restore_nothing(json: bool, out: &RestoreOut) -> anyhow::Result<()> {
    if json {
        output::json(out)?;
    } else {
        println!(
            "{} already holds the tables of backup {}; nothing to do (nothing was written).",
            out.target, out.backup_id
        );
    }
    Ok(())
}

/// The plan as text, with what writing involves on a live disk; as JSON for a dry run.
pub fn show_restore_plan(json: bool, out: &RestoreOut, prep: &RestorePrep) -> anyhow::Result<()> {
    if !json {
        show_restore(out, Paint::stdout())?;
        for note in prep.preflight.notes() {
            println!("  {note}");
        }
    }
    if json && out.dry_run {
        output::json(out)?;
    }
    Ok(())
}

/// The result of [`table::apply_restore`]: the JSON document with its `result`, or the text.
pub fn restore_done(json: bool, mut out: RestoreOut, done: &RestoreApplied) -> anyhow::Result<()> {
    let id = out.backup_id.clone();
    if let Some(e) = &done.card_copy_error {
        eprintln!(
            "warning: the tables are restored, but the card's copy of backup {id} could not be removed: {e}"
        );
    }
    let (new_id, new_path, layout) = (&done.new_id, &done.new_path, &done.layout);
    out.result = Some(Done {
        backup_id: new_id.clone(),
        backup_path: new_path.display().to_string(),
        verified: true,
        table: layout.kind,
        disk_bytes: layout.disk_bytes,
        created_card_id: None,
    });
    if json {
        return output::json(&out);
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
    Ok(())
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
