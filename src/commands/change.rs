//! The one path every mutating command takes: plan → show → confirm → lock → back up → apply
//! → verify → report.
//!
//! Commands build a [`Request`] (the file changes they want) and hand it here; nothing else in
//! pifw opens a target for writing. Refusals (a mounted target, another pifw, too little space,
//! a damaged volume, an unverifiable backup) all happen before the first write to the card.

use super::Exit;
use super::output::{self, Paint};
use crate::backup::{BackupWriter, CardIdentity, FileState as BackupState};
use crate::cli::WriteArgs;
use crate::config::Config;
use crate::disk::lock::WriteTarget;
use crate::disk::target::Target;
use crate::fat;
use crate::status::Report;
use crate::txn::{self, Action, FileChange, Plan, Slice, WriteLog};
use anyhow::{Context, bail};
use serde::Serialize;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Space kept free beyond what a batch needs: directory growth, the journal, rounding to
/// clusters.
const MARGIN: u64 = 256 * 1024;

/// What a command wants changed.
pub struct Request {
    /// One line for the plan, e.g. "Pi firmware 1.20220830 -> 1.20240424".
    pub title: String,
    pub changes: Vec<FileChange>,
    /// The boot set: files the card's boot reads that must switch together (see
    /// `update::boot_set`). Empty: pifw could not work out a boot chain, and every file that
    /// looks boot-related ([`txn::is_boot_critical`]) counts.
    pub boot_critical: Vec<String>,
    /// Make a backup first (rollback does, too: a rollback can be undone).
    pub backup: bool,
    /// Also keep a copy of the backup on the card when it fits. Off for rollback: the card
    /// must end with exactly the file set it had before the change being undone.
    pub card_copy: bool,
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
    dry_run: bool,
    noop: bool,
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

/// The card's identity, as backups record it.
pub fn identity(report: &Report) -> CardIdentity {
    let fw = report.firmware.as_ref();
    CardIdentity {
        mbr_disk_signature: report.table.disk_signature.clone(),
        gpt_disk_guid: report
            .table
            .disk_guid
            .as_ref()
            .map(|g| g.to_ascii_lowercase()),
        fat_volume_id: fw
            .and_then(|f| f.fat.as_ref())
            .map(|f| format!("0x{:08x}", f.volume_id)),
        fat_label: fw.and_then(|f| f.label.clone()),
        firmware_offset_bytes: fw.map_or(0, |f| f.offset_bytes),
        firmware_size_bytes: fw.map_or(0, |f| f.size_bytes),
    }
}

/// The firmware partition's byte range, or a clear refusal.
pub fn firmware_range(report: &Report) -> anyhow::Result<(u64, u64)> {
    let Some(fw) = report.firmware.as_ref() else {
        bail!("the card has no firmware partition pifw can change; see pifw status");
    };
    if fw.fat.is_none() {
        bail!(
            "the firmware partition is not a FAT volume pifw can read safely; see pifw status (nothing was written)"
        );
    }
    Ok((fw.offset_bytes, fw.offset_bytes + fw.size_bytes))
}

/// Splits `changes` into batches that each fit the free space, keeping every boot-critical
/// file in one batch (that batch is the atomic switch of the boot set) and every
/// `start*.elf` with its `fixup*.dat`.
fn batches(changes: Vec<FileChange>, critical: &[String], free: u64) -> Vec<Vec<FileChange>> {
    let room = free.saturating_sub(MARGIN);
    let fits = changes.iter().map(|c| c.size).sum::<u64>() <= room;
    let in_set = |path: &str| {
        if critical.is_empty() {
            txn::is_boot_critical(path, &[])
        } else {
            critical.iter().any(|c| c.eq_ignore_ascii_case(path))
        }
    };
    let (crit, mut rest): (Vec<FileChange>, Vec<FileChange>) =
        changes.into_iter().partition(|c| in_set(&c.path));
    // Why the boot set goes alone and last even when everything fits: its own transaction
    // switches it in the fewest directory-sector writes (one, when its entries share a
    // sector), and a cut before it leaves the card booting the old set; the files the boot
    // does not read switch first, where a cut between them harms no boot.
    if fits {
        return [rest, crit].into_iter().filter(|g| !g.is_empty()).collect();
    }
    // Pair start_x.elf with fixup_x.dat, and so on: the pair must switch together.
    rest.sort_by_key(|c| pair_key(&c.path));
    let mut groups: Vec<Vec<FileChange>> = Vec::new();
    for c in rest {
        match groups.last_mut() {
            Some(g)
                if pair_key(&g[0].path).is_some() && pair_key(&g[0].path) == pair_key(&c.path) =>
            {
                g.push(c)
            }
            _ => groups.push(vec![c]),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.iter().map(|c| c.size).sum::<u64>()));
    let mut out: Vec<Vec<FileChange>> = Vec::new();
    let mut load: Vec<u64> = Vec::new();
    for g in groups {
        let size: u64 = g.iter().map(|c| c.size).sum();
        match load.iter().position(|l| l + size <= room) {
            Some(i) => {
                load[i] += size;
                out[i].extend(g);
            }
            None => {
                load.push(size);
                out.push(g);
            }
        }
    }
    // The boot-critical set goes last, once every other file is in place.
    if !crit.is_empty() {
        out.push(crit);
    }
    out
}

/// `start_x.elf` and `fixup_x.dat` share the key `x`; other files have none.
fn pair_key(path: &str) -> Option<String> {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let variant = name
        .strip_prefix("start")
        .and_then(|r| r.strip_suffix(".elf"))
        .or_else(|| {
            name.strip_prefix("fixup")
                .and_then(|r| r.strip_suffix(".dat"))
        })?;
    Some(variant.to_string())
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
    let (start, end) = firmware_range(report)?;
    let critical = req.boot_critical.clone();

    // Plan on a read-only view: nothing below can write until the user has seen the plan.
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
    let (free, cluster) = fat::check(&mut part)
        .map(|(i, _)| (i.free_bytes, i.cluster_bytes.max(1)))
        .context("checking the firmware partition before planning")?;
    // Directories the change needs and the card lacks are created (empty) before the first
    // batch; files under them cannot be planned by the engine until then, so they are planned
    // here as additions, with their own space check.
    let wanted: Vec<&str> = req
        .changes
        .iter()
        .filter(|c| !matches!(c.content, txn::NewContent::Remove))
        .map(|c| c.path.as_str())
        .collect();
    let missing = txn::missing_dirs(&mut part, &wanted)?;
    let under_missing = |path: &str| {
        missing.iter().any(|d| {
            path.len() > d.len()
                && path[..d.len()].eq_ignore_ascii_case(d)
                && path.as_bytes()[d.len()] == b'/'
        })
    };
    let round = |n: u64| n.div_ceil(cluster) * cluster;
    let deferred_bytes: u64 = req
        .changes
        .iter()
        .filter(|c| under_missing(&c.path))
        .map(|c| round(c.size))
        .sum::<u64>()
        + missing.len() as u64 * cluster;
    if deferred_bytes > 0 && deferred_bytes + MARGIN > free {
        bail!(
            "not enough free space on the firmware partition: the new directories ({}) and their files need {}, the partition has {} free (nothing was written)",
            missing.join(", "),
            output::size(deferred_bytes),
            output::size(free)
        );
    }
    let room = free.saturating_sub(deferred_bytes);
    let split_for_space =
        req.changes.iter().map(|c| c.size).sum::<u64>() > room.saturating_sub(MARGIN);
    let groups = batches(req.changes, &critical, room);
    let mut plans = Vec::new();
    for g in &groups {
        let (later, now): (Vec<FileChange>, Vec<FileChange>) =
            g.iter().cloned().partition(|c| under_missing(&c.path));
        let mut plan = txn::plan(&mut part, &now).map_err(|e| match e {
            txn::TxnError::NoSpace { need, .. } => anyhow::anyhow!(
                "not enough free space on the firmware partition: {} of files that must switch together need {} free (copy-on-write keeps the old files until the switch), the partition has {} (nothing was written); free space by removing files pifw does not manage, or grow the partition",
                output::size(g.iter().map(|c| c.size).sum()),
                output::size(need),
                output::size(free)
            ),
            e => e.into(),
        })?;
        for c in later {
            plan.bytes_to_write += c.size;
            plan.free_after = plan.free_after.saturating_sub(round(c.size));
            plan.items.push(txn::PlanItem {
                path: c.path.clone(),
                action: Action::Add,
                old: None,
                new: Some(txn::FileState {
                    size: c.size,
                    sha256: c.sha256.to_lowercase(),
                }),
            });
        }
        plans.push(plan);
    }
    if let Some(last) = plans.last_mut() {
        last.free_after = last
            .free_after
            .saturating_sub(missing.len() as u64 * cluster);
    }
    // Each batch was planned against the card as it is now, but runs after the batches before
    // it, whose additions keep their space: walk the batches in order and refuse now, before
    // the first write, if one would not find room for its new copies then.
    let mut free_then = free.saturating_sub(missing.len() as u64 * cluster);
    for (i, p) in plans.iter().enumerate() {
        let changed = p.items.iter().filter(|it| it.action != Action::Unchanged);
        let new: u64 = changed
            .clone()
            .filter_map(|it| it.new.as_ref())
            .map(|n| round(n.size))
            .sum();
        let old: u64 = changed
            .filter_map(|it| it.old.as_ref())
            .map(|o| round(o.size))
            .sum();
        if new > 0 && new + MARGIN > free_then {
            bail!(
                "not enough free space on the firmware partition: batch {} of {} needs {} for its new files beside their old copies, and {} will be free by then (nothing was written). Free space first: remove files this card's board does not use (on a Pi 3, start4*.elf and fixup4*.dat are for the Pi 4), or grow the partition",
                i + 1,
                plans.len(),
                output::size(new + MARGIN),
                output::size(free_then)
            );
        }
        free_then = (free_then + old).saturating_sub(new);
    }
    let noop = plans.iter().all(|p| p.is_noop());
    let bytes: u64 = plans.iter().map(|p| p.bytes_to_write).sum();
    let old_bytes: u64 = plans
        .iter()
        .flat_map(|p| p.items.iter())
        .filter(|i| i.action != Action::Unchanged)
        .filter_map(|i| i.old.as_ref().map(|o| o.size))
        .sum();
    let free_after = plans.last().map_or(free, |p| p.free_after);
    // The backup goes onto the card too when it fits after the change, with room to spare.
    let on_card =
        req.backup && req.card_copy && cfg.backups_on_card && old_bytes + 2 * MARGIN < free_after;
    let mut out = PlanOut {
        schema: 1,
        title: &req.title,
        target: target.display().to_string(),
        create_dirs: missing.clone(),
        split_for_space,
        batches: plans.iter().collect(),
        bytes_to_write: bytes,
        free_before: free,
        free_after,
        backup_dir: req.backup.then(|| cfg.backup_dir.display().to_string()),
        backup_on_card: on_card,
        backup_off_card_reason: match (req.backup, on_card) {
            (false, _) | (true, true) => None,
            _ if !req.card_copy => Some("a rollback leaves the card with the files it had"),
            _ if !cfg.backups_on_card => Some("backups_on_card = false in the configuration"),
            _ => Some("too little free space"),
        },
        dry_run: args.dry_run,
        noop,
        result: None,
    };
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
    // Close the read-only handle before the exclusive open for writing.
    drop(ro);

    let mut wt = WriteTarget::open(target)?;
    // Every write is logged (offset, length) so the result can say what reached the card.
    let mut logged = WriteLog::new(&mut wt);
    // Progress bars count the bytes read and written through here (nothing in a pipe).
    let meter = super::progress::Meter::default();
    let mut metered = super::progress::Metered::new(&mut logged, meter.clone());
    let mut part = Slice::new(&mut metered, start, end)?;

    // Back up, and verify the backup, before the first write to the card.
    let mut backup: Option<(String, PathBuf)> = None;
    let mut groups = groups;
    if req.backup {
        let t = std::time::Instant::now();
        meter.start("backing up", old_bytes);
        let (id, path) = make_backup(&mut part, report, &plans, &missing, cfg, on_card)?;
        meter.finish();
        output::detail(format_args!(
            "backup {id}: {} written, synced and read back in {} ms",
            path.display(),
            t.elapsed().as_millis()
        ));
        if on_card {
            let (sha, size) = crate::fetch::hash_reader(&mut std::fs::File::open(&path)?)?;
            // Its own transaction, first: the card carries its way back before anything on
            // it changes, and the boot set's transaction holds only boot files.
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
        backup = Some((id, path));
    }

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
    }

    let opts = txn::ApplyOptions {
        mtime: None,
        boot_critical: critical,
    };
    let mut verified = Vec::new();
    let mut recovered_first = None;
    let mut switch_writes = Vec::new();
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
                "applying batch {} of {total}; the card is consistent: pifw recover finishes or undoes an interrupted batch, pifw rollback returns to the backup",
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
        }
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
        verified,
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
            writeln!(o, "Undo with: pifw rollback --to {id} {}", target.display())?;
        }
    }
    prune_note(cfg, report);
    Ok(Exit::Ok)
}

/// Puts the backup zip at `backup` onto the card as `pifw-backup-<id>.zip`, as one
/// transaction of its own, printing nothing. For changes that are not file changes (the
/// partition table), whose backup must still travel with the card. Returns false, changing
/// nothing, when it does not fit with room to spare.
pub fn copy_backup_to_card(
    target: &Path,
    report: &Report,
    id: &str,
    backup: &Path,
) -> anyhow::Result<bool> {
    let (sha256, size) = crate::fetch::hash_reader(&mut std::fs::File::open(backup)?)?;
    let change = FileChange {
        path: card_backup_name(id),
        content: txn::NewContent::Path(backup.to_path_buf()),
        sha256,
        size,
    };
    apply_alone(target, report, change, size + 2 * MARGIN)
}

/// Removes the card's copy of backup `id`, if there is one, as one transaction of its own,
/// printing nothing. Returns whether it was there.
pub fn remove_card_copy(target: &Path, report: &Report, id: &str) -> anyhow::Result<bool> {
    let change = FileChange {
        path: card_backup_name(id),
        content: txn::NewContent::Remove,
        sha256: String::new(),
        size: 0,
    };
    apply_alone(target, report, change, 0)
}

/// One file change as a transaction of its own, printing nothing: false, writing nothing,
/// when it changes nothing or the partition has less than `need` bytes free.
fn apply_alone(
    target: &Path,
    report: &Report,
    change: FileChange,
    need: u64,
) -> anyhow::Result<bool> {
    let (start, end) = firmware_range(report)?;
    let changes = [change];
    let mut wt = WriteTarget::open(target)?;
    let mut part = Slice::new(&mut wt, start, end)?;
    if need > 0 && need > fat::check(&mut part)?.0.free_bytes {
        return Ok(false);
    }
    let plan = txn::plan(&mut part, &changes)?;
    if plan.is_noop() {
        return Ok(false);
    }
    txn::apply(&mut part, &plan, &changes, &txn::ApplyOptions::default())?;
    Ok(true)
}

/// One file of the firmware partition, read-only, at most `max` bytes (`None`: absent).
pub fn read_card_file(
    target: &Path,
    report: &Report,
    name: &str,
    max: u64,
) -> anyhow::Result<Option<Vec<u8>>> {
    let (start, end) = firmware_range(report)?;
    let mut t = Target::open_read(target)?;
    let mut part = Slice::new(&mut t.file, start, end)?;
    Ok(fat::read_small_file(&mut part, name, max)?)
}

/// Name of a backup's copy on the card.
pub fn card_backup_name(id: &str) -> String {
    format!("pifw-backup-{id}.zip")
}

fn make_backup<P: Read + Seek>(
    part: &mut P,
    report: &Report,
    plans: &[Plan],
    new_dirs: &[String],
    cfg: &Config,
    on_card: bool,
) -> anyhow::Result<(String, PathBuf)> {
    let command: Vec<String> = std::env::args().collect();
    let mut w = BackupWriter::create(&cfg.backup_dir, identity(report), command)
        .with_context(|| format!("creating a backup in {}", cfg.backup_dir.display()))?;
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
    }
    if p.dry_run {
        writeln!(o, "Dry run: nothing was written.")?;
    }
    Ok(())
}

/// Retention deletes nothing by itself: it says what is beyond the limit.
fn prune_note(cfg: &Config, report: &Report) {
    let Ok(listing) = crate::backup::list(&cfg.backup_dir, &identity(report)) else {
        return;
    };
    if listing.backups.len() > cfg.keep_backups {
        output::note(format_args!(
            "note: {} backups of this card are kept in {} (keep_backups = {}); pifw deletes none by itself",
            listing.backups.len(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(path: &str, size: u64) -> FileChange {
        FileChange {
            path: path.into(),
            content: txn::NewContent::Remove,
            sha256: String::new(),
            size,
        }
    }

    #[test]
    fn boot_set_last_pairs_together_and_batches_fit() {
        let changes = vec![
            ch("start.elf", 3000),
            ch("fixup.dat", 10),
            ch("bootcode.bin", 50),
            ch("start_x.elf", 4000),
            ch("fixup_x.dat", 10),
            ch("start_db.elf", 5000),
            ch("fixup_db.dat", 10),
        ];
        let b = batches(changes, &[], 6000 + MARGIN);
        let names: Vec<Vec<&str>> = b
            .iter()
            .map(|g| g.iter().map(|c| c.path.as_str()).collect())
            .collect();
        let last = names.last().unwrap();
        for crit in ["start.elf", "fixup.dat", "bootcode.bin"] {
            assert!(last.contains(&crit), "{names:?}");
        }
        for g in &names[..names.len() - 1] {
            let x = g.contains(&"start_x.elf");
            assert_eq!(x, g.contains(&"fixup_x.dat"), "{names:?}");
        }
        for g in &b[..b.len() - 1] {
            assert!(g.iter().map(|c| c.size).sum::<u64>() <= 6000, "{names:?}");
        }
    }
}
