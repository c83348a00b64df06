//! The views of `pifw status`: the report as aligned text (or its `--json` document), and
//! the disk picker asked when no TARGET is given.

use super::output::{self, Paint};
use crate::disk::host::Candidate;
use crate::disk::target::TargetKind;
use crate::finding::Severity;
use crate::manifest::{Manifests, ReleaseKind};
use crate::status::{self, BoardChoice, Health, Report};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The report: its `--json` document, or the text.
pub fn report(json: bool, report: &Report, manifests: &Manifests) -> anyhow::Result<()> {
    if json {
        return output::json(report);
    }
    render(
        &mut std::io::stdout().lock(),
        report,
        manifests,
        Paint::stdout(),
    )?;
    Ok(())
}

/// Asks which disk to read: every candidate that could be read (`Ok`, its report) is
/// offered; the others are listed apart with the reason.
pub fn pick_disk(
    candidates: &[Candidate],
    read: Vec<(&Candidate, anyhow::Result<Report>)>,
) -> anyhow::Result<PathBuf> {
    // Only disks pifw can read are offered; the others are listed apart with the reason, so
    // a missing card reader or a missing sudo is visible rather than a dead menu entry.
    let mut readable: Vec<(&Candidate, String)> = Vec::new();
    let mut unreadable: Vec<(&Candidate, String)> = Vec::new();
    for (c, r) in read {
        match r {
            Ok(r) => readable.push((c, summary(&r))),
            Err(e) => unreadable.push((c, unreadable_reason(&e, &c.dev))),
        }
    }
    // dialoguer draws "> " before the chosen line: keep every line within the terminal
    // (at most 80 columns) so the redraw does not wrap.
    let width = output::width().min(80);
    let cols = Columns::for_disks(candidates);
    if !unreadable.is_empty() {
        let p = Paint::stderr();
        eprintln!("{}", p.dim("Not readable (not offered):"));
        for (c, why) in &unreadable {
            let line = format!("  {} {why}", cols.line(c));
            eprintln!("{}", p.dim(&fit(&line, width)));
        }
    }
    if readable.is_empty() {
        bail!(
            "no disk here that pifw can read{}; pass an image file, e.g. pifw status sdcard.img",
            if unreadable.is_empty() {
                ""
            } else {
                " (see the list above)"
            }
        );
    }
    let items: Vec<String> = readable
        .iter()
        .map(|(c, what)| fit(&format!("{} {what}", cols.line(c)), width - 2))
        .collect();
    let choice = dialoguer::Select::new()
        .with_prompt("Which disk holds the Pi's card?")
        // The status that follows names the disk; the echo of the choice after the prompt
        // would be wider than the terminal.
        .report(false)
        .items(&items)
        .default(0)
        .interact_opt()
        .context("asking which disk to read")?;
    match choice {
        Some(i) => Ok(readable[i].0.dev.clone()),
        None => bail!("no disk chosen"),
    }
}

/// Column widths of the picker's disk lines, as wide as the widest entry needs (the model at
/// most 16 characters), so what pifw recognises keeps most of the line.
struct Columns {
    dev: usize,
    model: usize,
    transport: usize,
}

impl Columns {
    fn for_disks(disks: &[Candidate]) -> Columns {
        let max = |f: &dyn Fn(&Candidate) -> usize| disks.iter().map(f).max().unwrap_or(1);
        Columns {
            dev: max(&|c| c.dev.display().to_string().chars().count()),
            model: max(&|c| c.model.chars().count()).clamp(1, 16),
            transport: max(&|c| c.transport.chars().count()),
        }
    }

    /// `/dev/sdb  29.7 GiB  Generic STORAGE  usb`: device, size, model, transport.
    fn line(&self, c: &Candidate) -> String {
        format!(
            "{:<dw$} {:>9}  {:<mw$} {:<tw$}",
            c.dev.display(),
            output::size(c.size_bytes),
            truncate(if c.model.is_empty() { "-" } else { &c.model }, self.model),
            c.transport,
            dw = self.dev,
            mw = self.model,
            tw = self.transport,
        )
    }
}

/// Why a disk cannot be read, short: the innermost cause, and the way out when there is one.
fn unreadable_reason(e: &anyhow::Error, dev: &Path) -> String {
    let cause = e.root_cause().to_string();
    let cause = cause
        .strip_prefix(&format!("{}: ", dev.display()))
        .unwrap_or(&cause)
        .to_string();
    match super::errors::hint(e) {
        Some(h) if h.starts_with("run with sudo") => format!("{cause} (run with sudo)"),
        _ => cause,
    }
}

/// `s` cut to `width` columns, with `…` where it was cut.
fn fit(s: &str, width: usize) -> String {
    let s = s.trim_end();
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// One line on what pifw recognises on a card, for the disk picker.
fn summary(r: &Report) -> String {
    let mut parts = vec![format!("{:?}", r.table.kind).to_uppercase()];
    if let Some(fw) = &r.firmware {
        parts[0] = format!(
            "{} {}",
            parts[0],
            fw.fat_type.as_deref().unwrap_or("no FAT")
        );
    }
    for v in &r.versions {
        // A card has one version per kind and board file (rpi3 and rpi4 U-Boot): say each
        // once; the upstream version only (`2023.01`, not its Debian revision), to fit a line.
        let short = match v.kind {
            ReleaseKind::Firmware => "firmware",
            ReleaseKind::UBoot => "U-Boot",
            ReleaseKind::Uefi => "UEFI",
        };
        let version = v.version.split('+').next().unwrap_or(&v.version);
        let text = format!("{short} {version}");
        if !parts.contains(&text) {
            parts.push(text);
        }
    }
    parts.join(", ")
}

fn kind_name(k: ReleaseKind) -> &'static str {
    match k {
        ReleaseKind::Firmware => "Pi firmware",
        ReleaseKind::UBoot => "U-Boot",
        ReleaseKind::Uefi => "pftf UEFI",
    }
}

/// Label column width: every line is `label` padded to this, then the value.
const COL: usize = 11;
const WIDTH: usize = 80;

/// The `Mounts` lines: what is mounted from the card, and what a change would do about it.
fn render_mounts(
    out: &mut dyn Write,
    m: &status::MountsReport,
    label: &dyn Fn(&str) -> String,
) -> std::io::Result<()> {
    let mut lines: Vec<String> = m
        .mounted
        .iter()
        .map(|p| {
            let fw = if p.firmware {
                ", the firmware partition"
            } else {
                ""
            };
            format!("{} on {} ({}{fw})", p.device, p.mount_point, p.fstype)
        })
        .collect();
    if let Some(why) = &m.change_refused {
        lines.push(format!("a change would be refused now: {why}"));
    } else if m.change_unmounts.is_empty() {
        lines.push("a change unmounts nothing".to_string());
    } else {
        lines.push(format!(
            "a change unmounts {} and mounts it back afterwards",
            m.change_unmounts.join(", ")
        ));
    }
    if m.mounted.is_empty() && m.change_refused.is_none() {
        lines.insert(0, "nothing mounted".to_string());
    }
    for (i, l) in lines.iter().enumerate() {
        let head = if i == 0 {
            label("Mounts")
        } else {
            format!("{:COL$}", "")
        };
        for (j, part) in l.lines().enumerate() {
            if j == 0 {
                writeln!(out, "{head}{part}")?;
            } else {
                writeln!(out, "{:COL$}{part}", "")?;
            }
        }
    }
    Ok(())
}

/// The report as aligned text.
pub fn render(
    out: &mut dyn Write,
    r: &Report,
    manifests: &Manifests,
    p: Paint,
) -> std::io::Result<()> {
    let label = |s: &str| p.bold(&format!("{s:<COL$}"));
    let kind = match r.target.kind {
        TargetKind::Image => "image",
        TargetKind::BlockDevice => "block device",
    };
    let target = format!(
        "{} ({}, {}, opened read-only)",
        r.target.path,
        kind,
        output::size(r.target.size_bytes)
    );
    writeln!(
        out,
        "{}{}",
        label("Target"),
        output::wrap(&target, COL, COL, WIDTH)
    )?;
    let t = &r.table;
    let mut table_line = format!("{:?}", t.kind).to_uppercase();
    if let Some(sig) = &t.disk_signature {
        table_line.push_str(&format!(", disk id {sig}"));
    }
    if let Some(g) = &t.disk_guid {
        table_line.push_str(&format!(", GUID {g}"));
    }
    writeln!(out, "{}{}", label("Table"), table_line)?;
    for part in &t.partitions {
        let ty = if part.source == "gpt" {
            gpt_type_name(&part.type_)
        } else {
            part.type_.clone()
        };
        let mut flags = Vec::new();
        if part.firmware {
            flags.push("firmware".to_string());
        }
        if part.bootable {
            flags.push("bootable".to_string());
        }
        if let Some(n) = &part.name {
            // Room is left for 10 characters of the GPT name within 80 columns.
            let short: String = n.chars().take(10).collect();
            let dots = if n.chars().count() > 10 { "..." } else { "" };
            flags.push(format!("\"{short}{dots}\""));
        }
        let line = format!(
            "{:COL$}{:>2} {:<5} {:<10} at {:>9}  {:>9}  {}",
            "",
            part.number,
            part.filesystem.unwrap_or("-"),
            truncate(&ty, 10),
            output::size(part.start_lba * 512),
            output::size(part.sectors * 512),
            flags.join(" ")
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    if t.kind == crate::disk::table::TableKind::Hybrid {
        let mbr: Vec<String> = t
            .mbr_entries
            .iter()
            .map(|e| format!("{}:{}", e.number, e.type_))
            .collect();
        writeln!(out, "{:COL$}hybrid MBR slots {}", "", mbr.join(" "))?;
    }

    match &r.firmware {
        None => writeln!(
            out,
            "{}{}",
            label("Firmware"),
            p.red("no firmware partition")
        )?,
        Some(fw) => {
            let slot = match (fw.mbr_slot, fw.gpt_index) {
                (Some(s), _) => format!("MBR slot {s}"),
                (None, Some(g)) => format!("GPT entry {g}"),
                _ => "?".into(),
            };
            let what = match (&fw.fat_type, fw.free_bytes) {
                (Some(ft), Some(free)) => format!(
                    "{ft} \"{}\", {slot}, {}, {} free",
                    fw.label.as_deref().unwrap_or(""),
                    output::size(fw.size_bytes),
                    output::size(free)
                ),
                _ => format!("{slot}, {}, not readable", output::size(fw.size_bytes)),
            };
            writeln!(out, "{}{}", label("Firmware"), what)?;
            let known = fw.files.iter().filter(|f| f.identified.is_some()).count();
            writeln!(
                out,
                "{:COL$}{} files, {} identified by hash",
                "",
                fw.files.len(),
                known
            )?;
            if let Some(id) = &fw.card_id {
                writeln!(
                    out,
                    "{:COL$}card id {id} ({})",
                    "",
                    crate::backup::card_id::FILE_NAME
                )?;
            }
        }
    }

    if let Some(m) = &r.mounts {
        render_mounts(out, m, &label)?;
    }

    let board_line = match &r.board {
        BoardChoice::Given { id } => format!("{id} (--board)"),
        BoardChoice::DeviceTree { id, model } => format!("{id} (this Pi: {model})"),
        BoardChoice::Unknown => {
            "not given; showing every board the card serves (use --board)".to_string()
        }
    };
    writeln!(out, "{}{}", label("Board"), board_line)?;

    let mut first = true;
    for v in &r.versions {
        let build = v
            .build
            .as_deref()
            .map(|b| format!(" {b}"))
            .unwrap_or_default();
        let files = if v.files.len() > 3 {
            format!("{} files", v.files.len())
        } else {
            v.files.join(", ")
        };
        let line = format!(
            "{} {} ({}{build}): {files}",
            kind_name(v.kind),
            v.version,
            v.flavour
        );
        writeln!(
            out,
            "{}{}",
            label(if first { "Versions" } else { "" }),
            output::wrap(&line, COL, COL + 2, WIDTH)
        )?;
        first = false;
    }
    if first {
        writeln!(out, "{}none identified", label("Versions"))?;
    }
    for (i, p) in r.provenance.iter().enumerate() {
        let line = format!(
            "{}: {} (backup {})",
            p.path,
            p.provenance.describe(),
            p.backup_id
        );
        writeln!(
            out,
            "{}{}",
            label(if i == 0 { "Source" } else { "" }),
            output::wrap(&line, COL, COL + 2, WIDTH)
        )?;
    }

    for c in &r.chains {
        let boards = c.boards.join(" ");
        writeln!(
            out,
            "{}{} ({})",
            label("Boot chain"),
            boards,
            if c.complete {
                c.kind.to_string()
            } else {
                format!("{}, incomplete", c.kind)
            }
        )?;
        // start.elf and fixup.dat load together: one token, `start.elf+fixup.dat`.
        let mut stages: Vec<String> = Vec::new();
        for (s, token) in c.stages.iter().zip(c.stages.iter().map(|s| {
            let name = s.file.clone().unwrap_or_else(|| match s.role {
                "rom" => "ROM".into(),
                "eeprom" => "EEPROM".into(),
                "entry" => "NO BOOT ENTRY".into(),
                _ => "OS".into(),
            });
            if s.file.is_some() && !s.present {
                p.red(&format!("{name} MISSING"))
            } else if !s.present {
                p.red(&name)
            } else {
                name
            }
        })) {
            match (s.role, stages.last_mut()) {
                ("fixup", Some(prev)) => *prev = format!("{prev}+{token}"),
                _ => stages.push(token),
            }
        }
        writeln!(
            out,
            "{:COL$}{}",
            "",
            output::wrap(&stages.join(" -> "), COL, COL + 2, WIDTH)
        )?;
        for s in c.stages.iter().filter(|s| s.file.is_some() && s.present) {
            if let Some(what) = &s.what
                && s.role != "fixup"
                && s.role != "bootcode"
            {
                let line = format!("{}: {what}", s.file.as_deref().unwrap_or(""));
                writeln!(
                    out,
                    "{:COL$}  {}",
                    "",
                    p.dim(&output::wrap(&line, COL + 2, COL + 4, WIDTH))
                )?;
            }
        }
        if let Some(os) = c.stages.iter().find(|s| s.role == "os")
            && let Some(w) = &os.what
        {
            writeln!(
                out,
                "{:COL$}  {}",
                "",
                p.dim(&output::wrap(w, COL + 2, COL + 4, WIDTH))
            )?;
        }
    }
    let _ = manifests;

    let errors = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    for f in &r.findings {
        let tag = match f.severity {
            Severity::Error => p.red("error  "),
            Severity::Warning => p.yellow("warning"),
            Severity::Info => p.dim("info   "),
        };
        writeln!(
            out,
            "{tag}    {}",
            output::wrap(&f.message, COL, COL, WIDTH)
        )?;
        if let Some(a) = &f.advice {
            writeln!(
                out,
                "{:COL$}{}",
                "",
                p.dim(&output::wrap(&format!("-> {a}"), COL, COL + 3, WIDTH))
            )?;
        }
    }
    let result = match r.health {
        Health::Ok => p.green("healthy"),
        _ => format!(
            "{}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        ),
    };
    writeln!(out, "{}{}", label("Result"), result)
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Short names for the GPT type GUIDs seen on Pi cards.
fn gpt_type_name(guid: &str) -> String {
    match guid.to_ascii_uppercase().as_str() {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "ESP".into(),
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "basic-data".into(),
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "linux".into(),
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" => "linux-root".into(),
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "xbootldr".into(),
        _ => guid.chars().take(8).collect(),
    }
}
