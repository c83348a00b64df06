//! The one path every file change takes: lock → plan → show → confirm → revalidate → back up
//! → apply → verify → report.
//!
//! Commands build a [`Request`] (the file changes they want) and hand it here. The planning
//! and every refusal for lack of room or a wrong source live in the domain ([`crate::change`]);
//! this module holds the lock and the writer, asks, renders, and drives the transactions.
//! Refusals (a mounted or read-only target, another pifw, too little space, a damaged volume,
//! a changed card, an unverifiable backup) all happen before the first write to the card.

use super::Exit;
use super::output::{self, Paint};
use crate::backup::{BackupWriter, ChangeKind, FileState as BackupState};
use crate::change;
use crate::cli::WriteArgs;
use crate::config::Config;
use crate::disk::lock::{CardLock, Preflight, WriteTarget};
// The planning lives in the domain (`crate::change`); the command layer keeps these names.
pub use crate::change::card::{card_backup_name, read_card_file, remove_card_copy};
pub use crate::change::{firmware_range, identity};
use crate::disk::target::Target;
use crate::fat;
use crate::status::Report;
use crate::txn::{self, Action, FileChange, Plan, Slice, WriteLog};
use anyhow::{Context, bail};
use serde::Serialize;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Version of every changing command's `--json` (docs/change-json.md).
pub const SCHEMA: u32 = 1;

/// What a command wants changed.
pub struct Request {
    /// One line for the plan, e.g. "Pi firmware 1.20220830 -> 1.20240424".
    pub title: String,
    /// What the backup records this change as.
    pub kind: ChangeKind,
    pub changes: Vec<FileChange>,
    /// The boot set: files the card's boot reads that must switch together (see
    /// `update::boot_set`). Empty: pifw could not work out a boot chain, and every file that
    /// looks boot-related ([`txn::is_boot_critical`]) counts.
    pub boot_critical: change::BootSet,
    /// Make a backup first (rollback does, too: a rollback can be undone).
    pub backup: bool,
    /// Also keep a copy of the backup on the card when it fits. Off for rollback: the card
    /// must end with exactly the file set it had before the change being undone.
    pub card_copy: bool,
    /// How the files were verified, when they come from a Debian archive release: shown in
    /// the plan, the `--json` output and recorded in the backup.
    pub provenance: Option<crate::fetch::ArchiveProvenance>,
}

#[derive(Debug, Serialize)]
struct PlanOut<'a> {
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
    /// How what is installed was verified, when it comes from a Debian archive release
    /// (absent otherwise; added within schema 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<&'a crate::fetch::ArchiveProvenance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<ResultOut>,
}

#[derive(Debug, Serialize)]
struct ResultOut {
    /// Bytes pifw wrote to the card: file data, FAT and directory sectors, journal.
    bytes_written: u64,
    /// Per batch, the directory-sector writes that switched its files over: 1 means every
    /// file of the batch (the boot set, in the last) went from old to new in one write.
    switch_writes: Vec<usize>,
    backup_id: Option<String>,
    backup_path: Option<String>,
    verified: Vec<(String, Option<txn::FileState>)>,
    recovered_first: Option<txn::RecoverOutcome>,
}

/// Plans, shows, and (unless `--dry-run` or declined) applies `req` to `target`.
pub fn execute(
    json: bool,
    target: &Path,
    report: &Report,
    req: Request,
    args: &WriteArgs,
    cfg: &Config,
) -> anyhow::Result<Exit> {
    let (start, end) = change::firmware_range(report)?;
    let critical = req.boot_critical.clone();
    change::check_sources(&req.changes)?;

    // The lock and the in-use checks come before the plan: what the user confirms is then
    // planned on a card no other pifw can change until it is written, and a target the real
    // run would refuse (mounted, read-only, locked by another pifw) is refused by `--dry-run`
    // too, with the same message. Planning reads through `ReadOnly`: nothing can write
    // before the user has seen the plan and said yes.
    let lock = CardLock::acquire(target)?;
    let preflight = Preflight::check(target, Some((start, end)), false)?;
    let mut ro = Target::open_read(target)?;
    let mut part = Slice::new(&mut ro.file, start, end)?;
    output::detail(format_args!(
        "reading the firmware partition: bytes {start}..{end} (LBA {}-{})",
        start / 512,
        end.div_ceil(512).saturating_sub(1)
    ));
    let planning = std::time::Instant::now();
    if let Some(p) = txn::pending(&mut part)? {
        output::note(format_args!(
            "note: an interrupted change ({}) is on the card; it will be {} first",
            p.txn_id,
            match p.would {
                txn::RecoverOutcome::RolledBack => "undone",
                _ => "finished",
            }
        ));
    }
    // Before the plan is shown (and so for --dry-run too): lost clusters that are not pifw's
    // own may hide a file's data, and a change would write over them.
    txn::check_writable(&mut part)
        .context("checking the firmware partition before planning (nothing was written)")?;
    let placement = change::BackupPlacement {
        backup: req.backup,
        on_card_wanted: req.card_copy && cfg.backups_on_card,
    };
    let fp = change::plan_files(&mut part, req.changes, &critical, placement)
        .context("planning the change on the firmware partition")?;
    let (plans, groups, missing, noop, on_card) = (
        &fp.plans,
        fp.groups.clone(),
        fp.missing_dirs.clone(),
        fp.noop,
        fp.backup_on_card,
    );
    let backup_bound = fp.backup_bound;
    let mut out = PlanOut {
        schema: SCHEMA,
        title: &req.title,
        target: target.display().to_string(),
        create_dirs: missing.clone(),
        split_for_space: fp.split_for_space,
        batches: plans.iter().collect(),
        bytes_to_write: fp.bytes_to_write,
        free_before: fp.free,
        free_after: fp.free_after,
        backup_dir: req.backup.then(|| cfg.backup_dir.display().to_string()),
        backup_on_card: on_card,
        backup_off_card_reason: match (req.backup, on_card) {
            (false, _) | (true, true) => None,
            _ if !req.card_copy => Some("a rollback leaves the card with the files it had"),
            _ if !cfg.backups_on_card => Some("backups_on_card = false in the configuration"),
            _ => fp.backup_off_card_reason,
        },
        backup_copies: Vec::new(),
        mounts: Vec::new(),
        dry_run: args.dry_run,
        noop,
        provenance: req.provenance.as_ref(),
        result: None,
    };
    let dir_partition = req
        .backup
        .then(|| {
            crate::disk::mounts::partition_holding(
                &cfg.backup_dir,
                target,
                &crate::disk::mounts::SystemView::system(),
            )
        })
        .flatten();
    if req.backup {
        out.backup_copies = change::backup_copies(
            &cfg.backup_dir,
            dir_partition.clone(),
            on_card,
            &card_backup_name("ID"),
        );
    }
    // Mounts and users of the card (read-only): a dry run meets the same refusals.
    out.mounts = preflight.notes();
    output::detail(format_args!(
        "planned in {} ms",
        planning.elapsed().as_millis()
    ));
    if !json {
        show_plan(&out, Paint::stdout())?;
    }
    if noop || args.dry_run {
        if json {
            print_json(&out)?;
        }
        return Ok(Exit::Ok);
    }
    confirm(args, target)?;
    drop(ro);
    // Unmounts the firmware partition if it is mounted (it is mounted back when `wt` is
    // finished or dropped) and takes the exclusive opens, under the lock held since the plan.
    let mut wt = WriteTarget::open_locked(preflight, lock)?;
    // The plan was made from what pifw read before it held the lock (the report), and the
    // user may have taken their time to confirm: a program that ignores pifw's lock (mtools,
    // dd) could have changed the card meanwhile. Compare the card with the report, by content,
    // before the first write.
    change::revalidate(&mut wt, report)?;
    // Every write is logged (offset, length) so the result can say what reached the card.
    let mut logged = WriteLog::new(&mut wt);
    // Progress bars count the bytes read and written through here (nothing in a pipe).
    let meter = super::progress::Meter::default();
    let mut metered = super::progress::Metered::new(&mut logged, meter.clone());
    let mut part = Slice::new(&mut metered, start, end)?;

    // Back up, and verify the backup, before the first write to the card.
    let mut backup: Option<(String, PathBuf)> = None;
    let mut groups = groups;
    let mut on_card = on_card;
    if req.backup {
        let t = std::time::Instant::now();
        let old_bytes: u64 = plans
            .iter()
            .flat_map(|p| p.items.iter())
            .filter(|i| i.action != Action::Unchanged)
            .filter_map(|i| i.old.as_ref().map(|o| o.size))
            .sum();
        meter.start("backing up", old_bytes);
        let (id, path) = make_backup(
            &mut part,
            report,
            plans,
            &missing,
            cfg,
            on_card,
            req.kind,
            req.provenance.clone(),
        )?;
        meter.finish();
        output::detail(format_args!(
            "backup {id}: {} written, synced and read back in {} ms",
            path.display(),
            t.elapsed().as_millis()
        ));
        if on_card {
            let (sha, size) = crate::fetch::hash_reader(&mut std::fs::File::open(&path)?)?;
            if size > backup_bound {
                // Cannot happen with deflate's bound; if it did, the space walk above would
                // no longer hold, so the copy stays on this machine only.
                output::note(format_args!(
                    "note: the backup is {size} bytes, more than the {backup_bound} planned for its copy on the card; it stays on this machine only"
                ));
                on_card = false;
                out.backup_on_card = false;
                out.backup_off_card_reason = Some("larger than planned");
                out.backup_copies.retain(|c| c.place != "card-firmware");
            } else {
                // Its own transaction, first: the card carries its way back before anything
                // on it changes, and the boot set's transaction holds only boot files.
                groups.insert(
                    0,
                    vec![FileChange {
                        path: card_backup_name(&id),
                        content: txn::NewContent::Path(path.clone()),
                        sha256: sha,
                        size,
                    }],
                );
            }
        }
        backup = Some((id, path));
    }

    // From the first write on, a failure must say what is already on the card and how to go
    // on, never "nothing was written": `done` names every step that completed.
    let mut done: Vec<String> = Vec::new();
    let mut verified = Vec::new();
    let mut recovered_first = None;
    let mut switch_writes = Vec::new();
    let applied: anyhow::Result<()> = (|| {
        if !missing.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            txn::create_dirs(
                &mut part,
                &missing,
                crate::fat::write::DosTime::from_unix(now),
            )
            .context("creating directories on the firmware partition")?;
            done.push(format!("the new directories ({})", missing.join(", ")));
        }

        let opts = txn::ApplyOptions {
            mtime: None,
            boot_critical: critical.names().to_vec(),
        };
        let total = groups.len();
        let copy_first = usize::from(on_card && req.backup);
        for (i, g) in groups.iter().enumerate() {
            // Plan again against the card as it is now (an earlier batch freed and used space).
            let plan = txn::plan(&mut part, g)?;
            if i < copy_first {
                if !json {
                    output::note("copying the backup onto the card");
                }
            } else if total - copy_first > 1 && !json {
                output::note(format_args!(
                    "batch {}/{}: {} files",
                    i + 1 - copy_first,
                    total - copy_first,
                    g.len()
                ));
            }
            let t = std::time::Instant::now();
            // Each changed file is written once and read back once.
            meter.start(
                &format!("writing {}/{total}", i + 1),
                2 * plan.bytes_to_write,
            );
            let applied = txn::apply(&mut part, &plan, g, &opts).with_context(|| {
                format!(
                    "applying batch {} of {total}; the card is consistent: pifw recover finishes or undoes an interrupted batch",
                    i + 1
                )
            })?;
            meter.finish();
            output::detail(format_args!(
                "transaction {} of {total} ({} files): applied and read back in {} ms",
                i + 1,
                g.len(),
                t.elapsed().as_millis()
            ));
            if recovered_first.is_none() {
                recovered_first = Some(applied.recovered_first.clone());
            }
            verified.extend(applied.verified);
            if i >= copy_first {
                switch_writes.push(applied.switch_writes);
                done.push(format!(
                    "batch {} of {}",
                    i + 1 - copy_first,
                    total - copy_first
                ));
            } else {
                done.push("the backup's copy on the card".to_string());
            }
        }
        Ok(())
    })();
    if let Err(e) = applied {
        meter.finish();
        let undo = match &backup {
            Some((id, _)) => format!(
                "pifw rollback --to {id} {} returns the card to where it was",
                target.display()
            ),
            None => "pifw status shows the card as it is".to_string(),
        };
        let written = if done.is_empty() {
            "no step was complete, but the card may hold the failed step's unreferenced clusters (pifw recover frees them)".to_string()
        } else {
            format!(
                "already written and complete on the card: {}",
                done.join(", ")
            )
        };
        return Err(e.context(format!("the change stopped part way: {written}; {undo}")));
    }
    crate::txn::Durable::sync(&mut part)?;
    let bytes_written = logged.bytes_written();
    if output::verbose() {
        for line in write_ranges(logged.log()) {
            output::detail(line);
        }
    }

    out.result = Some(ResultOut {
        switch_writes: switch_writes.clone(),
        bytes_written,
        backup_id: backup.as_ref().map(|b| b.0.clone()),
        backup_path: backup.as_ref().map(|b| b.1.display().to_string()),
        verified: verified.clone(),
        recovered_first,
    });
    if json {
        print_json(&out)?;
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
        if let Some((id, path)) = &backup {
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
    prune_note(cfg, report, &verified);
    Ok(Exit::Ok)
}

#[allow(clippy::too_many_arguments)]
fn make_backup<P: Read + Seek>(
    part: &mut P,
    report: &Report,
    plans: &[Plan],
    new_dirs: &[String],
    cfg: &Config,
    on_card: bool,
    kind: ChangeKind,
    provenance: Option<crate::fetch::ArchiveProvenance>,
) -> anyhow::Result<(String, PathBuf)> {
    let command: Vec<String> = std::env::args().collect();
    let mut w = BackupWriter::create(&cfg.backup_dir, identity(report), command)
        .with_context(|| format!("creating a backup in {}", cfg.backup_dir.display()))?;
    w.set_change(kind);
    if let Some(p) = provenance {
        w.set_provenance(p);
    }
    for d in new_dirs {
        w.add_absent_dir(d)?;
    }
    for item in plans.iter().flat_map(|p| p.items.iter()) {
        if item.action == Action::Unchanged {
            continue;
        }
        let after = item.new.as_ref().map(|n| BackupState {
            size: n.size,
            sha256: n.sha256.clone(),
        });
        if item.old.is_some() {
            let res = fat::with_file(part, &item.path, |r| {
                w.add_file(&item.path, r, after.clone())
                    .map_err(std::io::Error::other)
            })?;
            if res.is_none() {
                bail!("{} vanished while backing it up", item.path);
            }
        } else {
            w.add_absent(&item.path, after)?;
        }
    }
    let id = w.id().to_string();
    if on_card {
        w.add_absent(&card_backup_name(&id), None)?;
    }
    // A backup that does not read back intact is no backup: `finish` syncs it and re-reads
    // every member against its manifest, and an error here stops before the card is touched.
    let path = w.finish().with_context(|| {
        format!(
            "writing and verifying the backup in {}",
            cfg.backup_dir.display()
        )
    })?;
    Ok((id, path))
}

/// The question before the first write (see [`super::prompt`]).
pub(super) fn confirm(args: &WriteArgs, target: &Path) -> anyhow::Result<()> {
    super::prompt::confirm(args, target)
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut o, v)?;
    writeln!(o)?;
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
/// card's backups ([`crate::backup::chain`] against the card as the change left it).
fn prune_note(cfg: &Config, report: &Report, after: &[(String, Option<txn::FileState>)]) {
    let Ok(listing) = crate::backup::list(&cfg.backup_dir, &identity(report)) else {
        return;
    };
    let refs: Vec<(&crate::backup::Manifest, bool)> = listing
        .backups
        .iter()
        .map(|s| (&s.manifest, false))
        .collect();
    let now = |p: &str| match after.iter().find(|(q, _)| q.eq_ignore_ascii_case(p)) {
        Some((_, state)) => state.as_ref().map(|s| s.sha256.clone()),
        None => report.card_file(p).map(|f| f.sha256.clone()),
    };
    let mine = crate::backup::chain(&refs, &now).members.len();
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
