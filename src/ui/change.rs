//! The views of a file change: the plan ([`PlanOut`], as text or JSON), the progress and
//! notes of the executor ([`Terminal`], a [`Reporter`](change::exec::Reporter)), and the
//! result ("Done: ...", the backup, how to undo it, the retention note).

use super::SCHEMA;
use super::output::{self, Paint};
use crate::change;
use crate::change::card::card_backup_name;
use crate::change::exec::{Outcome, Prepared, Request};
use crate::config::Config;
use crate::status::Report;
use crate::txn::{self, Action, Plan};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// A file change's `--json` document (docs/change-json.md), and what its text shows.
#[derive(Debug, Serialize)]
pub struct PlanOut<'a> {
    /// Version of this JSON (docs/change-json.md).
    schema: u32,
    title: &'a str,
    target: String,
    /// Directories created (empty) before the files.
    create_dirs: Vec<String>,
    /// More than the boot set's own batch, because not everything fits beside its old copy.
    split_for_space: bool,
    batches: Vec<&'a Plan>,
    bytes_to_write: u64,
    free_before: u64,
    free_after: u64,
    backup_dir: Option<String>,
    backup_on_card: bool,
    /// Why the backup stays off the card, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    backup_off_card_reason: Option<&'static str>,
    /// Every copy of the backup, where it goes, and whether a second machine holding only
    /// the card could use it (the backup directory counts when it lies on the card's own
    /// root filesystem).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    backup_copies: Vec<change::BackupCopy>,
    /// What writing does to mounted partitions (unmounts the firmware partition and mounts
    /// it back; other partitions stay mounted), one sentence each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<String>,
    dry_run: bool,
    noop: bool,
    /// The card's own id (`PIFW-ID.TXT`) that the backup records, when the card has one
    /// (added within schema 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    card_id: Option<String>,
    /// The change gives the card its identity first (added within schema 1).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    creates_card_id: bool,
    /// How what is installed was verified, when it comes from a Debian archive release
    /// (absent otherwise; added within schema 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<&'a crate::fetch::ArchiveProvenance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<ResultOut>,
}

#[derive(Debug, Serialize)]
pub struct ResultOut {
    /// Bytes pifw wrote to the card: file data, FAT and directory sectors, journal.
    bytes_written: u64,
    /// Per batch, the directory-sector writes that switched its files over: 1 means every
    /// file of the batch (the boot set, in the last) went from old to new in one write.
    switch_writes: Vec<usize>,
    backup_id: Option<String>,
    backup_path: Option<String>,
    /// The card's id as the backup records it (added within schema 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    card_id: Option<String>,
    verified: Vec<(String, Option<txn::FileState>)>,
    recovered_first: Option<txn::RecoverOutcome>,
}

/// The executor's [`Reporter`](change::exec::Reporter) on a terminal: notes and details
/// through [`output`], steps hidden in `--json` output, progress bars through a
/// [`super::progress::Meter`].
pub struct Terminal {
    json: bool,
    meter: super::progress::Meter,
}

impl Terminal {
    pub fn new(json: bool) -> Terminal {
        Terminal {
            json,
            meter: super::progress::Meter::default(),
        }
    }
}

impl change::exec::Reporter for Terminal {
    fn note(&self, msg: &str) {
        output::note(msg);
    }
    fn step(&self, msg: &str) {
        if !self.json {
            output::note(msg);
        }
    }
    fn detail(&self, msg: &str) {
        output::detail(msg);
    }
    fn start(&self, what: &str, total: u64) {
        self.meter.start(what, total);
    }
    fn advance(&self, n: usize) {
        self.meter.add(n);
    }
    fn finish(&self) {
        self.meter.finish();
    }
}

/// `--verbose`: the byte range of the firmware partition the plan reads.
pub fn reading(report: &Report) {
    if let Ok((start, end)) = change::firmware_range(report) {
        output::detail(format_args!(
            "reading the firmware partition: bytes {start}..{end} (LBA {}-{})",
            start / 512,
            end.div_ceil(512).saturating_sub(1)
        ));
    }
}

/// The plan of `req` on `target` as [`change::exec::prepare`] made it (`batches` is its
/// copy of the plan's batches); its notes said. Shown as text unless `json`.
pub fn plan<'a>(
    json: bool,
    req: &'a Request,
    target: &Path,
    prepared: &Prepared,
    batches: &'a [Plan],
    cfg: &Config,
    dry_run: bool,
) -> anyhow::Result<PlanOut<'a>> {
    for n in &prepared.notes {
        output::note(n);
    }
    let fp = &prepared.plan;
    let on_card = fp.backup_on_card;
    let mut out = PlanOut {
        schema: SCHEMA,
        title: &req.title,
        target: target.display().to_string(),
        create_dirs: fp.missing_dirs.clone(),
        split_for_space: fp.split_for_space,
        batches: batches.iter().collect(),
        bytes_to_write: fp.bytes_to_write,
        free_before: fp.free,
        free_after: fp.free_after,
        backup_dir: req.backup.then(|| cfg.backup_dir.display().to_string()),
        backup_on_card: on_card,
        backup_off_card_reason: change::exec::backup_off_card_reason(req, cfg.backups_on_card, fp),
        backup_copies: Vec::new(),
        mounts: prepared.mounts.clone(),
        dry_run,
        noop: fp.noop,
        card_id: match &prepared.card_id {
            Some(change::card::CardIdPlan::Has(id)) => Some(id.clone()),
            _ => None,
        },
        creates_card_id: !fp.noop
            && prepared
                .card_id
                .as_ref()
                .is_some_and(|c| c.to_create().is_some()),
        provenance: req.provenance.as_ref(),
        result: None,
    };
    if req.backup {
        out.backup_copies = change::planned_backup_copies(&cfg.backup_dir, target, on_card);
    }
    output::detail(format_args!("planned in {} ms", prepared.planning_ms));
    if !json {
        show_plan(&out, Paint::stdout())?;
    }
    Ok(out)
}

impl PlanOut<'_> {
    /// Nothing to write: a dry run, or the card has these files already.
    pub fn ends_here(&self) -> bool {
        self.noop || self.dry_run
    }
}

/// The plan alone (a dry run, or nothing to change): its JSON document.
pub fn planned(json: bool, out: &PlanOut<'_>) -> anyhow::Result<()> {
    if json {
        output::json(out)?;
    }
    Ok(())
}

/// The result of [`change::exec::apply`]: the JSON document with its `result`, or the text
/// ("Done: ...", the backup and how to undo it).
pub fn done(
    json: bool,
    mut out: PlanOut<'_>,
    done: &Outcome,
    card_id: Option<String>,
    target: &Path,
) -> anyhow::Result<()> {
    if done.copy_dropped {
        out.backup_on_card = false;
        out.backup_off_card_reason = Some(change::card_copy_dropped(&mut out.backup_copies));
    }
    if output::verbose() {
        for line in write_ranges(&done.writes) {
            output::detail(line);
        }
    }
    let (backup, on_card) = (&done.backup, done.on_card);
    let switch_writes = &done.switch_writes;
    let bytes_written = done.bytes_written;
    out.result = Some(ResultOut {
        switch_writes: switch_writes.clone(),
        bytes_written,
        backup_id: backup.as_ref().map(|b| b.0.clone()),
        backup_path: backup.as_ref().map(|b| b.1.display().to_string()),
        card_id: backup.as_ref().and(card_id),
        verified: done.verified.clone(),
        recovered_first: done.recovered_first.clone(),
    });
    if json {
        output::json(&out)?;
    } else {
        let mut o = std::io::stdout().lock();
        writeln!(
            o,
            "Done: every changed file read back and verified by sha256 ({} written to the card).",
            output::size(bytes_written)
        )?;
        match (switch_writes.last(), switch_writes.len()) {
            (Some(1), 1) => writeln!(o, "All files switched from old to new in one sector write.")?,
            (Some(1), n) => writeln!(
                o,
                "The boot set switched from old to new in one sector write (batch {n} of {n})."
            )?,
            (Some(k), _) if *k > 1 => writeln!(
                o,
                "The files switched in {k} directory-sector writes (a power cut between them is finished by pifw recover)."
            )?,
            _ => {}
        }
        if let Some((id, path)) = backup {
            writeln!(o, "Backup {id}: {}", path.display())?;
            if on_card {
                writeln!(o, "  and on the card as {}", card_backup_name(id))?;
            }
            if let Some(part) = out
                .backup_copies
                .first()
                .and_then(|c| c.on_card_partition.as_ref())
            {
                writeln!(
                    o,
                    "  (on this card's root filesystem, {part}: a second machine holding the card finds it)"
                )?;
            }
            writeln!(o, "Undo with: pifw rollback --to {id} {}", target.display())?;
        }
    }
    Ok(())
}

fn show_plan(p: &PlanOut<'_>, paint: Paint) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{} on {}", paint.bold(p.title), p.target)?;
    if let Some(prov) = p.provenance {
        writeln!(o, "  source: {}", prov.describe())?;
    }
    for d in &p.create_dirs {
        writeln!(o, "    {} {d}/", paint.bold("mkdir  "))?;
    }
    let many = p.batches.len() > 1;
    for (i, b) in p.batches.iter().enumerate() {
        if many {
            writeln!(o, "  batch {} of {}:", i + 1, p.batches.len())?;
        }
        for item in &b.items {
            let (verb, size) = match (&item.action, &item.old, &item.new) {
                (Action::Unchanged, _, Some(n)) => ("same", n.size),
                (Action::Add, _, Some(n)) => ("add", n.size),
                (Action::Replace, _, Some(n)) => ("replace", n.size),
                (Action::Remove, Some(o), _) => ("remove", o.size),
                (_, _, _) => ("?", 0),
            };
            let verb = match verb {
                "same" => paint.dim("same   "),
                v => paint.bold(&format!("{v:<7}")),
            };
            writeln!(o, "    {verb} {:<32} {:>10}", item.path, output::size(size))?;
        }
    }
    if p.noop {
        writeln!(
            o,
            "Nothing to change: the card already has exactly these files."
        )?;
        return Ok(());
    }
    for m in &p.mounts {
        writeln!(o, "  {m}")?;
    }
    writeln!(
        o,
        "  writes {} of file data; free space {} now, {} after",
        output::size(p.bytes_to_write),
        output::size(p.free_before),
        output::size(p.free_after)
    )?;
    if many {
        let line = format!(
            "{} batches, each atomic: the boot set (the files the card's boot reads) switches alone, last{}",
            p.batches.len(),
            if p.split_for_space {
                "; the rest is split because copy-on-write needs room for every new file beside its old copy"
            } else {
                ""
            }
        );
        writeln!(o, "  {}", output::fit_terminal(&line, 2, 4))?;
    }
    if let Some(dir) = &p.backup_dir {
        let line = format!(
            "the replaced files are backed up to {dir}{}",
            if p.backup_on_card {
                " and onto the card".to_string()
            } else {
                format!(
                    " (not onto the card: {})",
                    p.backup_off_card_reason.unwrap_or("not asked")
                )
            }
        );
        writeln!(o, "  {}", output::fit_terminal(&line, 2, 4))?;
        for line in copies_lines(&p.backup_copies) {
            writeln!(o, "  {}", output::fit_terminal(&line, 2, 4))?;
        }
    }
    if p.creates_card_id {
        let line = format!(
            "first, the card gets its own identity ({}): it binds the backup to this card, even where other cards were flashed from the same image",
            crate::backup::card_id::FILE_NAME
        );
        writeln!(o, "  {}", output::fit_terminal(&line, 2, 4))?;
    }
    if p.dry_run {
        writeln!(o, "Dry run: nothing was written.")?;
    }
    Ok(())
}

/// The plan's words for where each copy of the backup goes and which one a second machine
/// holding the card could use.
fn copies_lines(copies: &[change::BackupCopy]) -> Vec<String> {
    let mut out = Vec::new();
    for c in copies {
        out.push(match (c.place, &c.on_card_partition) {
            ("backup-dir", Some(part)) => format!(
                "backup: {}/pifw-ID.zip (on this card's root filesystem, {part}: a second machine can use it)",
                c.path.trim_end_matches('/')
            ),
            ("backup-dir", None) => format!(
                "backup: {}/pifw-ID.zip (on this machine only)",
                c.path.trim_end_matches('/')
            ),
            _ => format!(
                "backup: {} on the card's firmware partition (a second machine can use it)",
                c.path
            ),
        });
    }
    if !copies.is_empty() && !copies.iter().any(|c| c.second_machine) {
        out.push(format!(
            "no copy travels with the card: the only copy is in {} on this machine; a second machine holding the card cannot undo this change",
            copies[0].path
        ));
    }
    out
}

/// Retention deletes nothing by itself: it says what is beyond the limit. Counts only this
/// card's backups (`kept`, from [`crate::change::rollback::kept_backups`]).
pub fn prune_note(cfg: &Config, kept: Option<usize>) {
    let Some(mine) = kept else {
        return;
    };
    if mine > cfg.keep_backups {
        output::note(format_args!(
            "note: {mine} backups of this card are kept in {} (keep_backups = {}); pifw deletes none by itself",
            cfg.backup_dir.display(),
            cfg.keep_backups
        ));
    }
}

/// `--verbose`: the writes, in the order made, merged where one continues the last, as
/// sector ranges of the target (512-byte LBAs).
fn write_ranges(log: &[(u64, u64)]) -> Vec<String> {
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in log {
        match merged.last_mut() {
            Some((o, l)) if *o + *l == off => *l += len,
            _ => merged.push((off, len)),
        }
    }
    let mut out = vec![format!(
        "wrote {} in {} ranges:",
        output::size(log.iter().map(|&(_, n)| n).sum()),
        merged.len()
    )];
    out.extend(merged.iter().map(|&(off, len)| {
        format!(
            "  LBA {}-{} ({})",
            off / 512,
            (off + len).div_ceil(512).saturating_sub(1),
            output::size(len)
        )
    }));
    out
}

/// Says on stderr which known issues `--allow-known-issue` let through.
pub fn allowed_issues(lines: Vec<String>) {
    for l in lines {
        eprintln!("warning: allowed by --allow-known-issue: {l}");
    }
}
