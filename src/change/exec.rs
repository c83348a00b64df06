//! The one executor of file changes: [`prepare`] (lock, in-use checks, plan, every refusal)
//! and, once the command layer has shown the plan and the user has confirmed, [`apply`]
//! (write open under the same lock, revalidation by content, backup, the backup's copy on the
//! card, directories, batches, sync) returning a typed [`Outcome`].
//!
//! Why the lock comes first: a plan made without it could be applied over a change another
//! pifw completed while this one waited at its prompt. [`prepare`] takes the lock and runs
//! the in-use checks before anything is planned, so `--dry-run` (which stops after it) meets
//! every refusal the real run would, and [`apply`] writes under the lock [`prepare`] took.
//!
//! Prints nothing: what a user sees along the way goes through a [`Reporter`] the command
//! layer provides (notes, `--verbose` details, progress).

use super::card::{CardIdPlan, card_backup_name};
use super::{BackupPlacement, BootSet, FilePlan};
use crate::backup::{BackupWriter, ChangeKind, FileState as BackupState};
use crate::config::Config;
use crate::device::Counted;
use crate::disk::lock::{CardLock, Preflight, WriteTarget};
use crate::disk::target::Target;
use crate::fat;
use crate::status::Report;
use crate::txn::{self, Action, FileChange, Plan, Slice, WriteLog};
use anyhow::{Context, bail};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// What a command wants changed.
pub struct Request {
    /// One line for the plan, e.g. "Pi firmware 1.20220830 -> 1.20240424".
    pub title: String,
    /// What the backup records this change as.
    pub kind: ChangeKind,
    pub changes: Vec<FileChange>,
    /// The boot set: files the card's boot reads that must switch together.
    pub boot_critical: BootSet,
    /// Make a backup first (rollback does, too: a rollback can be undone).
    pub backup: bool,
    /// Also keep a copy of the backup on the card when it fits. Off for rollback: the card
    /// must end with exactly the file set it had before the change being undone.
    pub card_copy: bool,
    /// How the files were verified, when they come from a Debian archive release: shown in
    /// the plan, the `--json` output and recorded in the backup.
    pub provenance: Option<crate::fetch::ArchiveProvenance>,
}

/// Why `req`'s backup stays off the card, when it does, given the plan `fp` and the
/// configuration's `backups_on_card`.
pub fn backup_off_card_reason(
    req: &Request,
    backups_on_card: bool,
    fp: &super::FilePlan,
) -> Option<&'static str> {
    match (req.backup, fp.backup_on_card) {
        (false, _) | (true, true) => None,
        _ if !req.card_copy => Some("a rollback leaves the card with the files it had"),
        _ if !backups_on_card => Some("backups_on_card = false in the configuration"),
        _ => fp.backup_off_card_reason,
    }
}

/// What the executor tells the user along the way; the command layer renders it.
pub trait Reporter {
    /// A note (hidden by `--quiet`).
    fn note(&self, msg: &str);
    /// A step of a long change ("batch 2/4: 6 files"); hidden in `--json` output too.
    fn step(&self, msg: &str);
    /// A `--verbose` detail.
    fn detail(&self, msg: &str);
    /// A long stretch of work starts: about `total` bytes will pass through the card.
    fn start(&self, what: &str, total: u64);
    /// `n` bytes passed through the card.
    fn advance(&self, n: usize);
    /// The stretch of work ended (or failed).
    fn finish(&self);
}

/// A file change planned under the card's lock; nothing written.
pub struct Prepared {
    lock: CardLock,
    preflight: Preflight,
    range: (u64, u64),
    pub plan: FilePlan,
    /// The card's identity, for a change that makes a backup: written first when the card
    /// has none.
    pub card_id: Option<CardIdPlan>,
    /// Notes for the plan: an interrupted change that will be finished or undone first.
    pub notes: Vec<String>,
    /// What writing does to mounted partitions, one sentence each.
    pub mounts: Vec<String>,
    pub planning_ms: u128,
    /// The files on this machine the change copies from, as they were when planned. `--from`
    /// files are used where they are (not copied), so one the user changes while the plan
    /// waits for its confirmation is refused before the first write, not at its batch's hash
    /// after earlier batches went onto the card.
    sources: Vec<(PathBuf, txn::SourceStamp)>,
}

fn source_stamps(changes: &[FileChange]) -> anyhow::Result<Vec<(PathBuf, txn::SourceStamp)>> {
    changes
        .iter()
        .filter_map(|c| match &c.content {
            txn::NewContent::Path(p) => Some(p),
            _ => None,
        })
        .map(|p| {
            let m = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
            Ok((p.clone(), txn::SourceStamp::of(&m)))
        })
        .collect()
}

/// Refuses, before the first write, a source that changed since the plan.
fn check_stamps(sources: &[(PathBuf, txn::SourceStamp)]) -> anyhow::Result<()> {
    for (path, then) in sources {
        let now = std::fs::metadata(path)
            .ok()
            .map(|m| txn::SourceStamp::of(&m));
        if now.as_ref() != Some(then) {
            bail!(
                "{} changed since the plan was made; run the command again (nothing was written)",
                path.display()
            );
        }
    }
    Ok(())
}

/// Locks the card, runs the in-use checks, reads it read-only and plans `req`'s changes
/// (taken out of `req`), with every refusal a real run could meet.
pub fn prepare(
    target: &Path,
    report: &Report,
    req: &mut Request,
    cfg: &Config,
) -> anyhow::Result<Prepared> {
    let (start, end) = super::firmware_range(report)?;
    super::check_sources(&req.changes)?;
    // The lock and the in-use checks come before the plan (see the module doc). Planning
    // reads through a read-only open: nothing can write before the user has said yes.
    let lock = CardLock::acquire(target)?;
    let preflight = Preflight::check(target, Some((start, end)), false)?;
    let mut ro = Target::open_read(target)?;
    let mut part = Slice::new(&mut ro.file, start, end)?;
    let planning = std::time::Instant::now();
    let mut notes = Vec::new();
    if let Some(p) = txn::pending(&mut part)? {
        notes.push(format!(
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
    let card_id = if req.backup {
        Some(CardIdPlan::of(report)?)
    } else {
        None
    };
    let placement = BackupPlacement {
        backup: req.backup,
        on_card_wanted: req.card_copy && cfg.backups_on_card,
        new_card_id: card_id.as_ref().is_some_and(|c| c.to_create().is_some()),
    };
    let changes = std::mem::take(&mut req.changes);
    let sources = source_stamps(&changes)?;
    let known = super::known_files(report);
    let plan = super::plan_files(&mut part, changes, &req.boot_critical, placement, &known)
        .context("planning the change on the firmware partition")?;
    let mounts = preflight.notes();
    Ok(Prepared {
        lock,
        preflight,
        range: (start, end),
        plan,
        card_id,
        notes,
        mounts,
        planning_ms: planning.elapsed().as_millis(),
        sources,
    })
}

/// What a confirmed change did.
#[derive(Debug)]
pub struct Outcome {
    /// The backup's id and path on this machine.
    pub backup: Option<(String, PathBuf)>,
    /// Its copy went onto the card.
    pub on_card: bool,
    /// The copy was planned but the zip came out larger than its bound, so it stayed here.
    pub copy_dropped: bool,
    pub verified: Vec<(String, Option<txn::FileState>)>,
    /// Per batch, the directory-sector writes that switched its files over.
    pub switch_writes: Vec<usize>,
    pub recovered_first: Option<txn::RecoverOutcome>,
    pub bytes_written: u64,
    /// Every write to the card, as (offset, length).
    pub writes: Vec<(u64, u64)>,
}

/// Applies a confirmed plan: opens the card for writing under the lock [`prepare`] took,
/// compares it with `report` by content, backs up (verified) before the first write, then
/// writes the backup's card copy, the new directories and every batch, and syncs. After the
/// first write, a failure says what is complete on the card and how to undo it.
pub fn apply(
    prepared: Prepared,
    target: &Path,
    report: &Report,
    req: &Request,
    cfg: &Config,
    ui: &dyn Reporter,
) -> anyhow::Result<Outcome> {
    let Prepared {
        lock,
        preflight,
        range: (start, end),
        plan: fp,
        card_id,
        sources,
        ..
    } = prepared;
    // Unmounts the firmware partition if it is mounted (it is mounted back when `wt` is
    // dropped) and takes the exclusive opens, under the lock held since the plan.
    let mut wt = WriteTarget::open_locked(preflight, lock)?;
    // The plan was made from what pifw read before it held the lock (the report), and the
    // user may have taken their time to confirm: a program that ignores pifw's lock (mtools,
    // dd) could have changed the card meanwhile. Compare by content before the first write.
    super::revalidate(&mut wt, report)?;
    check_stamps(&sources)?;
    // Every write is logged (offset, length) so the result can say what reached the card.
    let mut logged = WriteLog::new(&mut wt);
    let advance = |n: usize| ui.advance(n);
    let mut counted = Counted::new(&mut logged, &advance);
    let mut part = Slice::new(&mut counted, start, end)?;

    // Back up, and verify the backup, before the first write to the card.
    let mut backup: Option<(String, PathBuf)> = None;
    let mut groups = fp.groups.clone();
    let mut on_card = fp.backup_on_card;
    let mut copy_dropped = false;
    // What the backup hashed of each file it saved: the batches take these sizes and hashes
    // instead of hashing the old files once more (the card is held exclusively throughout).
    let mut known_old = txn::KnownOld::new();
    if req.backup {
        let t = std::time::Instant::now();
        let old_bytes: u64 = fp
            .plans
            .iter()
            .flat_map(|p| p.items.iter())
            .filter(|i| i.action != Action::Unchanged)
            .filter_map(|i| i.old.as_ref().map(|o| o.size))
            .sum();
        ui.start("backing up", old_bytes);
        let mut card = super::identity(report);
        card.card_id = card_id.as_ref().and_then(|c| c.id()).map(str::to_string);
        let made = make_backup(&mut part, card, &fp, cfg, on_card, req);
        ui.finish();
        let (id, path, known) = made?;
        // An interrupted change on the card is finished or undone by the first transaction
        // below, which can change the very files the backup just read: then every batch
        // hashes its old files itself.
        if txn::pending(&mut part)?.is_none() {
            known_old = known;
        }
        ui.detail(&format!(
            "backup {id}: {} written, synced and read back in {} ms",
            path.display(),
            t.elapsed().as_millis()
        ));
        if on_card {
            let (sha, size) = crate::digest::hash_reader(&mut std::fs::File::open(&path)?)?;
            if size > fp.backup_bound {
                // Cannot happen with the stored members' bound; if it did, the space walk of the plan
                // would no longer hold, so the copy stays on this machine only.
                ui.note(&format!(
                    "note: the backup is {size} bytes, more than the {} planned for its copy on the card; it stays on this machine only",
                    fp.backup_bound
                ));
                on_card = false;
                copy_dropped = true;
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
    let missing = &fp.missing_dirs;
    let applied: anyhow::Result<()> = (|| {
        // The card's identity first, when it has none: every backup naming it then belongs to
        // a card that carries it (a cut before this leaves the card untouched by the change).
        if let Some(id) = card_id.as_ref().and_then(|c| c.to_create()) {
            let applied = super::card::write_card_id(&mut part, id)
                .context("giving the card its identity (PIFW-ID.TXT)")?;
            recovered_first = Some(applied.recovered_first);
            done.push(format!(
                "the card's identity ({})",
                crate::backup::card_id::FILE_NAME
            ));
        }
        if !missing.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            txn::create_dirs(&mut part, missing, fat::write::DosTime::from_unix(now))
                .context("creating directories on the firmware partition")?;
            done.push(format!("the new directories ({})", missing.join(", ")));
        }
        let opts = txn::ApplyOptions {
            mtime: None,
            boot_critical: req.boot_critical.names().to_vec(),
            known_old: std::mem::take(&mut known_old),
        };
        let total = groups.len();
        let copy_first = usize::from(on_card && req.backup);
        for (i, g) in groups.iter().enumerate() {
            if i < copy_first {
                ui.step("copying the backup onto the card");
            } else if total - copy_first > 1 {
                ui.step(&format!(
                    "batch {}/{}: {} files",
                    i + 1 - copy_first,
                    total - copy_first,
                    g.len()
                ));
            }
            let t = std::time::Instant::now();
            // Planned again against the card as it is now (an earlier batch freed and used
            // space), in the same pass that applies it: nothing is shown in between, so the
            // card is laid out once per batch. Each changed file is written once and read
            // back once.
            let applied = txn::apply_now(&mut part, g, &opts, &mut |plan| {
                ui.start(
                    &format!("writing {}/{total}", i + 1),
                    2 * plan.bytes_to_write,
                )
            })
            .with_context(|| {
                format!(
                    "applying batch {} of {total}; the card is consistent: pifw recover finishes or undoes an interrupted batch",
                    i + 1
                )
            })?
            .1;
            ui.finish();
            ui.detail(&format!(
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
        ui.finish();
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
    txn::Durable::sync(&mut part)?;
    Ok(Outcome {
        backup,
        on_card,
        copy_dropped,
        verified,
        switch_writes,
        recovered_first,
        bytes_written: logged.bytes_written(),
        writes: logged.log().to_vec(),
    })
}

/// The backup of every file the plan changes (and the directories and files it creates, as
/// absent), written, synced and read back before the card is touched. Also returns what it
/// hashed of each old file.
fn make_backup<P: Read + Seek>(
    part: &mut P,
    card: crate::backup::CardIdentity,
    fp: &FilePlan,
    cfg: &Config,
    on_card: bool,
    req: &Request,
) -> anyhow::Result<(String, PathBuf, txn::KnownOld)> {
    let mut known = txn::KnownOld::new();
    let command: Vec<String> = std::env::args().collect();
    let mut w = BackupWriter::create(&cfg.backup_dir, card, command)
        .with_context(|| format!("creating a backup in {}", cfg.backup_dir.display()))?;
    w.set_change(req.kind);
    if let Some(p) = &req.provenance {
        w.set_provenance(p.clone());
    }
    for d in &fp.missing_dirs {
        w.add_absent_dir(d)?;
    }
    let plans: &[Plan] = &fp.plans;
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
            match res {
                Some(st) => {
                    // Under the lock and after the revalidation, so only a program that
                    // ignores the lock can make this differ from the plan.
                    if let Some(old) = &item.old
                        && (old.size, old.sha256.as_str()) != (st.size, st.sha256.as_str())
                    {
                        bail!(
                            "{} changed while pifw was backing it up; run the command again (nothing was written)",
                            item.path
                        );
                    }
                    known.insert(txn::path_key(&item.path), (st.size, st.sha256));
                }
                None => bail!("{} vanished while backing it up", item.path),
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
    Ok((id, path, known))
}
