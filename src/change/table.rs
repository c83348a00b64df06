//! The partition-table change: GPT plus a hybrid MBR the Pi 3's boot ROM reads, planned
//! whole before the first write and then written in [`convert`]'s crash-safe order.
//!
//! [`plan_hybrid`] makes every decision on a read-only open, with every refusal the write
//! would meet (no room for the GPTs, `--grow` on a block device, the lock and in-use checks),
//! and adds what only the firmware partition tells: start.elf builds that cannot boot a hybrid
//! MBR and cmdline.txt's `PARTUUID=` references. [`apply_hybrid`] writes a confirmed plan:
//! the write target (under the lock), the check that the sectors are what was planned on, a
//! verified backup of the table sectors, growing an image, the tables, the read-back, then
//! the backup's copy onto the card. It prints nothing; the command layer renders the plan
//! and the [`HybridApplied`] outcome.

use super::card::{card_backup_name, copy_backup_to_card};
use crate::backup::found::Found;
use crate::backup::{Backup, BackupWriter, CardIdentity, ChangeKind};
use crate::config::Config;
use crate::disk::lock::{CardLock, Preflight, WriteTarget};
use crate::disk::table::convert::{
    self, ConvertError, Guid, HybridOptions, HybridPlan, RestoreState, SavedRegion, SavedTables,
};
use crate::disk::table::{Layout, SECTOR, TableKind, read_layout};
use crate::disk::target::{Target, TargetKind};
use crate::finding::Finding;
use crate::status::Report;
use crate::txn::Slice;
use anyhow::{Context, bail};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest cmdline.txt read.
const CMDLINE_CAP: u64 = 256 * 1024;

/// `--grow` asked of a block device, which cannot grow; a usage error.
#[derive(Debug, thiserror::Error)]
#[error("--grow grows image files; {} is a block device, which cannot grow (nothing was written)", .0.display())]
pub struct GrowOnDevice(pub PathBuf);

#[derive(Debug, Clone, Serialize)]
pub struct StartElf {
    pub file: String,
    /// `YYYY-MM-DD`, from the firmware's `VC_BUILD_ID_TIME` string.
    pub build_date: Option<String>,
    pub breaks_hybrid_mbr: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartuuidRef {
    pub file: &'static str,
    /// The word as written, e.g. `root=PARTUUID=3e247b30-02`.
    pub word: String,
    pub old: String,
    /// The GPT PARTUUID of the same partition; `None` when the reference names no partition.
    pub new: Option<String>,
    /// The word as it must read after the conversion.
    pub replacement: Option<String>,
}

/// A planned conversion to GPT + hybrid MBR: everything decided, nothing written.
pub struct HybridPrep {
    /// The card's lock, held from the plan to the write (see [`plan_hybrid`]'s `hold`).
    pub lock: Option<CardLock>,
    /// What writing involves on a live disk (mounts that stay, the firmware partition's).
    pub preflight: Preflight,
    pub path: std::path::PathBuf,
    pub kind: TargetKind,
    pub plan: HybridPlan,
    pub start_elf: Vec<StartElf>,
    pub refs: Vec<PartuuidRef>,
    /// A table change alone (`hold`) on a card without pifw's identity and with a free
    /// cluster for it: the write gives the card its identity first (see [`apply_hybrid`]).
    pub creates_card_id: bool,
}

/// Plans the conversion on a read-only open, with every refusal the write would meet: no
/// room for the GPTs (and `--grow` where it helps), a block device asked to grow, a target
/// the lock or the in-use checks refuse. Writes nothing.
///
/// `hold`: keep the card's lock in the plan until [`apply_hybrid`] writes it (a table change
/// alone: what the user confirms is planned on a card no other pifw changes meanwhile).
/// Without it (the table step of a composite, whose file step takes the lock for itself) the
/// lock is let go here and taken again by the write, whose check of the table sectors
/// against the plan refuses anything that changed them in between.
pub fn plan_hybrid(
    path: &Path,
    report: &Report,
    grow: bool,
    hold: bool,
) -> anyhow::Result<HybridPrep> {
    // The checks the write's open repeats under the lock (mounts, users, read-only, lock), so
    // a refusal comes here, by the plan (and so by --dry-run), not after the confirmation.
    let lock = CardLock::acquire(path)?;
    let preflight = Preflight::check(path, None, true)?;
    let mut ro = Target::open_read(path)?;
    if grow && ro.kind == TargetKind::BlockDevice {
        return Err(GrowOnDevice(path.to_path_buf()).into());
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
    let creates_card_id = hold
        && super::card::table_id_plan(&mut ro.file, report)?
            .is_some_and(|p| p.to_create().is_some());
    Ok(HybridPrep {
        lock: hold.then_some(lock),
        preflight,
        path: path.to_path_buf(),
        kind: ro.kind,
        plan,
        start_elf,
        refs,
        creates_card_id,
    })
}

/// Where the table backup's copy on the card ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardCopy {
    /// `backups_on_card = false`.
    NotWanted,
    /// On the card under this name.
    Copied(String),
    /// Too little free space; the backup is on this machine only.
    NoRoom,
    /// The copy failed (part way, perhaps): why, and that `pifw recover` cleans up.
    Failed(String),
}

/// A conversion written and verified.
#[derive(Debug)]
pub struct HybridApplied {
    pub backup_id: String,
    pub backup_path: PathBuf,
    pub layout: Layout,
    pub card_copy: CardCopy,
    /// The identity this conversion gave the card (it had none), before the tables.
    pub created_card_id: Option<String>,
}

/// Writes a confirmed conversion: lock, check nothing changed since the plan, back up, grow,
/// write, read back, copy the backup onto the card. Every error after the backup names the
/// way back (`pifw partition mbr`).
pub fn apply_hybrid(
    kind: ChangeKind,
    prep: &mut HybridPrep,
    report: &Report,
    cfg: &Config,
) -> anyhow::Result<HybridApplied> {
    let mut wt = match prep.lock.take() {
        Some(lock) => WriteTarget::open_locked(prep.preflight.clone(), lock)?,
        None => WriteTarget::open_prepared(prep.preflight.clone())?,
    };
    let path = &prep.path;
    let plan = &prep.plan;
    convert::check_unchanged(&mut wt, plan)
        .map_err(|e| anyhow::anyhow!("{e}; run the command again (nothing was written)"))?;

    // Back up, and verify the backup, before the first write to the card.
    let mut card = super::identity(report);
    card.gpt_disk_guid = Some(plan.gpt.disk_guid.to_ascii_lowercase());
    // The card's identity, read now: an earlier step of this run (`switch uefi --hybrid`'s
    // files) may have given it one after `report` was made. A card without one gets it here,
    // when its firmware partition has a free cluster for it (else the backup is bound by the
    // GPT disk GUID this conversion draws, as before).
    let id_plan = super::card::table_id_plan(&mut wt, report)?;
    card.card_id = id_plan.as_ref().and_then(|p| p.id()).map(str::to_string);
    let (backup_id, backup_path) =
        write_table_backup(kind, cfg, card, plan.disk_bytes, &plan.backup_regions())?;
    let mut created_card_id = None;
    if let Some(id) = id_plan.as_ref().and_then(|p| p.to_create()) {
        let (start, end) = super::firmware_range(report)?;
        let mut part = crate::txn::Slice::new(&mut wt, start, end)?;
        super::card::write_card_id(&mut part, id).with_context(|| {
            format!(
                "giving the card its identity ({}) before the tables; the tables are unchanged, and `pifw recover {}` cleans up what the interrupted write left",
                crate::backup::card_id::FILE_NAME,
                path.display()
            )
        })?;
        crate::txn::Durable::sync(&mut part)?;
        created_card_id = Some(id.to_string());
    }
    let undo = format!(
        "`pifw partition mbr {}` restores the old tables from backup {backup_id}",
        path.display()
    );

    if plan.grow_bytes() > 0 {
        wt.set_len(plan.new_disk_bytes).with_context(|| {
            format!(
                "growing {} by {} bytes (the partition tables are unchanged)",
                path.display(),
                plan.grow_bytes()
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
    let card_copy = if cfg.backups_on_card {
        match copy_backup_to_card(path, report, &backup_id, &backup_path) {
            Ok(true) => CardCopy::Copied(card_backup_name(&backup_id)),
            Ok(false) => CardCopy::NoRoom,
            // The tables are written and verified; only the copy failed, part way perhaps.
            Err(e) => CardCopy::Failed(format!(
                "{e:#}; `pifw recover {}` removes what the copy left",
                path.display()
            )),
        }
    } else {
        CardCopy::NotWanted
    };
    Ok(HybridApplied {
        backup_id,
        backup_path,
        layout,
        card_copy,
        created_card_id,
    })
}

/// What only the firmware partition tells: start.elf builds and cmdline.txt references. Adds
/// findings to the plan; never fails (a file it cannot read becomes a finding).
fn firmware_checks(
    ro: &mut Target,
    report: &Report,
    plan: &mut HybridPlan,
) -> (Vec<StartElf>, Vec<PartuuidRef>) {
    let mut elfs = Vec::new();
    let mut refs = Vec::new();
    let Ok((start, end)) = super::firmware_range(report) else {
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
        refs.push(PartuuidRef {
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

/// Writes a backup holding only table regions; returns its id and path once verified.
pub fn write_table_backup(
    kind: ChangeKind,
    cfg: &Config,
    card: CardIdentity,
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
    // A backup that does not read back intact is no backup: `finish` syncs it and re-reads
    // every member against its manifest, and an error here stops before the card is touched.
    let path = w
        .finish()
        .context("writing and verifying the backup (nothing was written to the card)")?;
    Ok((id, path))
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

/// The findings that bear on a card that has a GPT already (`partition hybrid` with nothing
/// to convert): the hybrid MBR and its drift, the firmware partition, the GPTs,
/// cmdline.txt's root.
pub fn gpt_findings(report: &Report) -> Vec<Finding> {
    const RELEVANT: [&str; 6] = [
        "hybrid-",
        "firmware-",
        "pure-gpt",
        "gpt-",
        "protective-",
        "cmdline-root",
    ];
    report
        .findings
        .iter()
        .filter(|f| RELEVANT.iter().any(|p| f.code.starts_with(p)))
        .cloned()
        .collect()
}

/// Whether `backup_dir` holds a backup of this card's table sectors (a way back to its MBR).
pub fn has_table_backup(backup_dir: &Path, report: &Report) -> bool {
    crate::backup::list(backup_dir, &super::identity(report))
        .map(|l| l.backups.iter().any(|b| b.manifest.tables.is_some()))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// The way back: saved table sectors written back.

/// The table sectors of a verified backup.
pub fn saved_tables(backup: &Backup) -> anyhow::Result<SavedTables> {
    let Some(t) = &backup.manifest.tables else {
        bail!(
            "backup {} holds no partition-table sectors",
            backup.manifest.id
        );
    };
    if u64::from(t.sector_size) != SECTOR {
        bail!(
            "backup {} was made with {}-byte sectors; pifw works with 512",
            backup.manifest.id,
            t.sector_size
        );
    }
    let mut regions = Vec::new();
    for tc in backup.tables() {
        if tc.region.size > 4 << 20 {
            bail!(
                "backup {}: region {} is too large",
                backup.manifest.id,
                tc.region.name
            );
        }
        let bytes = tc
            .content
            .read_with(|r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v)?;
                Ok(v)
            })
            .with_context(|| {
                format!(
                    "reading {} from backup {}",
                    tc.region.name, backup.manifest.id
                )
            })?;
        regions.push(SavedRegion {
            name: tc.region.name,
            offset: tc.region.offset_bytes,
            bytes,
        });
    }
    SavedTables::new(t.disk_size_bytes, regions)
        .with_context(|| format!("backup {}", backup.manifest.id))
}

/// `(first, last)` LBA ranges as messages say them: `LBA 2048-4095, LBA 4096-8191`.
pub fn ranges(v: &[(u64, u64)]) -> String {
    v.iter()
        .map(|(a, b)| format!("LBA {a}-{b}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `partition mbr` found among the card's backups.
pub struct MbrChoice {
    /// The newest backup of a plain MBR describing the partitions the card has now, its
    /// sectors, and what the card holds against them.
    pub chosen: Option<(Backup, SavedTables, RestoreState)>,
    /// Backups of a plain MBR passed over, each with the partitions it describes and the
    /// card's.
    pub rejected: Vec<String>,
}

/// Chooses the backup `partition mbr` restores from `all` (this card's backups, newest
/// first): the newest holding a plain MBR (the others hold a hybrid saved by an earlier
/// restore) that describes the partitions on `path` now. Backups that cannot be opened are
/// passed over, each added to `skipped` as `ID: why`.
pub fn choose_mbr_backup(
    path: &Path,
    all: &[Found],
    skipped: &mut Vec<String>,
) -> anyhow::Result<MbrChoice> {
    let mut ro = Target::open_read(path)?;
    let mut rejected = Vec::new();
    for s in all
        .iter()
        .map(|f| &f.summary)
        .filter(|s| s.manifest.tables.is_some())
    {
        let backup = match Backup::open(&s.path) {
            Ok(b) => b,
            Err(e) => {
                skipped.push(format!("{}: {e}", s.manifest.id));
                continue;
            }
        };
        let saved = saved_tables(&backup)?;
        if saved.layout()?.kind != TableKind::Mbr {
            continue;
        }
        match convert::restore_state(&mut ro.file, ro.size_bytes, &saved)? {
            RestoreState::Mismatch { now, saved } => rejected.push(format!(
                "{} describes partitions {} (the card has {})",
                backup.manifest.id,
                ranges(&saved),
                ranges(&now)
            )),
            state => {
                return Ok(MbrChoice {
                    chosen: Some((backup, saved, state)),
                    rejected,
                });
            }
        }
    }
    Ok(MbrChoice {
        chosen: None,
        rejected,
    })
}

/// `rollback` of a backup holding table sectors: its sectors and what `path` holds against
/// them. A backup that also holds files is refused (this pifw does not restore both
/// together), and so is a card whose partitions no longer match, unless `force`.
pub fn rollback_tables_state(
    path: &Path,
    backup: &Backup,
    force: bool,
) -> anyhow::Result<(SavedTables, RestoreState)> {
    if !backup.manifest.files.is_empty() || !backup.manifest.dirs_absent_before.is_empty() {
        bail!(
            "backup {} holds both files and partition-table sectors, which this pifw does not restore together (nothing was written)",
            backup.manifest.id
        );
    }
    let saved = saved_tables(backup)?;
    let state = {
        let mut ro = Target::open_read(path)?;
        convert::restore_state(&mut ro.file, ro.size_bytes, &saved)?
    };
    if let RestoreState::Mismatch { now, saved: then } = &state
        && !force
    {
        bail!(
            "backup {} describes partitions {}, but the card has {}: it changed since, or this is another card. Restoring would describe partitions the card does not have; pass --force to restore anyway (nothing was written)",
            backup.manifest.id,
            ranges(then),
            ranges(now)
        );
    }
    Ok((saved, state))
}

/// A planned return of saved table sectors: everything decided under the card's lock,
/// nothing written.
pub struct RestorePrep {
    lock: CardLock,
    /// What writing involves on a live disk.
    pub preflight: Preflight,
    pub path: PathBuf,
    /// The id of the backup the sectors come from.
    pub backup_id: String,
    pub saved: SavedTables,
    /// What the card holds now, against the saved sectors.
    pub state: RestoreState,
    pub now_bytes: u64,
    /// The image's size after the return (an image grown by the conversion is cut back).
    pub after_bytes: u64,
    pub size_note: Option<String>,
}

/// Plans putting `saved` (from `backup`) back onto `path`: the lock and the in-use checks
/// first (a mounted partition the saved tables would move is refused, so a dry run meets it
/// too), then the sizes.
pub fn plan_restore(
    path: &Path,
    backup: &Backup,
    saved: SavedTables,
    state: RestoreState,
) -> anyhow::Result<RestorePrep> {
    let lock = CardLock::acquire(path)?;
    let preflight = Preflight::check(path, None, true)?;
    let saved_layout = saved.layout()?;
    preflight.refuse_moved_partitions(&convert::effective_partitions(&saved_layout))?;
    let (kind, now_bytes, now_layout) = {
        let mut ro = Target::open_read(path)?;
        let layout = read_layout(&mut ro.file, ro.size_bytes)?;
        (ro.kind, ro.size_bytes, layout)
    };
    let id = &backup.manifest.id;
    let (after_bytes, size_note) =
        restore_sizes(kind, now_bytes, saved.disk_bytes(), &now_layout, id)?;
    Ok(RestorePrep {
        lock,
        preflight,
        path: path.to_path_buf(),
        backup_id: id.clone(),
        saved,
        state,
        now_bytes,
        after_bytes,
        size_note,
    })
}

/// A return of table sectors written and verified.
pub struct RestoreApplied {
    /// The backup of the tables it replaced (a return can itself be undone).
    pub new_id: String,
    pub new_path: PathBuf,
    pub layout: Layout,
    /// Why the card's copy of the restored backup could not be removed, if it could not.
    pub card_copy_error: Option<String>,
}

/// Writes a confirmed return under the lock [`plan_restore`] took: checks nothing changed
/// since the plan, backs up what is there now, grows an image if the saved tables are for a
/// larger disk, writes ([`convert::restore_tables`]: LBA 0 first for a plain MBR, last for a
/// GPT), cuts an image back to its saved size, reads back, then removes the card's copy of
/// the restored backup.
pub fn apply_restore(
    prep: RestorePrep,
    report: &Report,
    cfg: &Config,
) -> anyhow::Result<RestoreApplied> {
    let RestorePrep {
        lock,
        preflight,
        path,
        backup_id: id,
        saved,
        state,
        now_bytes,
        after_bytes,
        ..
    } = prep;
    let path = path.as_path();
    let want_bytes = saved.disk_bytes();
    let mut wt = WriteTarget::open_locked(preflight, lock)?;
    let size = wt.size_bytes;
    let again = convert::restore_state(&mut wt, size, &saved)?;
    if again != state || size != now_bytes {
        bail!(
            "{} changed since the plan was made; run the command again (nothing was written)",
            path.display()
        );
    }
    // What is there now is backed up first: a return can itself be undone.
    let current = SavedTables::capture(&mut wt, now_bytes)?;
    let regions: Vec<(&str, u64, &[u8])> = current
        .regions()
        .iter()
        .map(|r| (r.name.as_str(), r.offset, &r.bytes[..]))
        .collect();
    let mut card = super::identity(report);
    card.card_id = super::card::card_id_now(&mut wt, report);
    let (new_id, new_path) =
        write_table_backup(ChangeKind::Rollback, cfg, card, now_bytes, &regions)?;

    if now_bytes < want_bytes {
        wt.set_len(want_bytes)
            .with_context(|| format!("growing {} back to its saved size", path.display()))?;
    }
    convert::restore_tables(&mut wt, &saved).with_context(|| {
        format!(
            "restoring the tables of {} from backup {id}; the write order leaves either the tables it had or those of the backup (pifw status shows which); running the command again finishes it, and backup {new_id} holds what was there",
            path.display()
        )
    })?;
    if after_bytes < wt.size_bytes {
        // After the tables: the bytes cut off lie outside every partition they describe.
        wt.set_len(after_bytes)
            .with_context(|| format!("shrinking {} to its saved size", path.display()))?;
    }
    let layout = convert::verify_restored(&mut wt, &saved)
        .with_context(|| format!("verifying {} after restoring backup {id}", path.display()))?;
    drop(wt);
    // The tables are back; the card's copy of their backup describes a state it left.
    let card_copy_error = super::card::remove_card_copy(path, report, &id)
        .err()
        .map(|e| format!("{e:#}"));
    Ok(RestoreApplied {
        new_id,
        new_path,
        layout,
        card_copy_error,
    })
}

/// The size the disk ends with, and why it keeps a different one.
fn restore_sizes(
    kind: TargetKind,
    now: u64,
    want: u64,
    now_layout: &Layout,
    id: &str,
) -> anyhow::Result<(u64, Option<String>)> {
    if now == want {
        return Ok((now, None));
    }
    if kind == TargetKind::BlockDevice {
        bail!(
            "the card is {now} bytes, but backup {id} was made on a disk of {want} bytes: its sectors belong to another card or image (nothing was written)"
        );
    }
    if now < want {
        return Ok((
            want,
            Some(format!("the image grows back to {want} bytes first")),
        ));
    }
    let reach = convert::effective_partitions(now_layout)
        .iter()
        .map(|p| (p.1 + 1) * SECTOR)
        .max()
        .unwrap_or(0);
    if reach <= want {
        Ok((
            want,
            Some(format!(
                "the image is cut back to its saved size, {} (no partition reaches past it)",
                super::size(want)
            )),
        ))
    } else {
        Ok((
            now,
            Some(format!(
                "the image keeps its size: a partition reaches past the saved size ({want} bytes)"
            )),
        ))
    }
}
