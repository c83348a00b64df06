//! The change layer: what every command that changes a card plans and checks before its first
//! write, between the command layer (which resolves arguments and renders) and the engines
//! that write (`txn` for files, `disk::table::convert` for tables).
//!
//! Owns:
//! - the **file plan** ([`plan_files`]): which files go in which transaction (batches), the
//!   space every batch needs beside its old copies *and* beside the backup's copy on the card,
//!   the directories to create, and every refusal a real run could meet for lack of room; a
//!   [`FilePlan`] that passes is one the engine can write to the end;
//! - the **source check** ([`check_sources`]): new content is the size its pin says before
//!   anything is planned;
//! - **revalidation** ([`revalidate`]): the card read again under the lock and compared, by
//!   content, with the report the plan came from;
//! - the card's identity as backups record it ([`identity`]) and the firmware partition's range;
//! - whether a card's structure can be trusted for writing at all ([`structural_damage`]).
//!
//! Submodules: [`exec`] (the executor), [`card`] (the backup's copy on the card), [`table`]
//! and [`restore`] (table changes), [`rollback`] (which backup goes back, and how),
//! [`switch`] (`switch uefi|uboot` composed as plans),
//! [`update`] (`update-firmware|uboot`: sources obtained and verified, file changes).
//!
//! Must not: print, prompt, or read argv. Planning (`plan_files`, `table::plan_hybrid`,
//! `rollback::choose`/`plan`) reads through read-only opens; only the appliers
//! (`exec::apply`, `table::apply_hybrid|apply_restore`, `card`, `rollback::finish|recover`)
//! open the target for writing, and only after the command layer has confirmed. Every
//! refusal of a planner comes before the first write, so each says "nothing was written";
//! an applier's error after a write names what is on the card and the way back.

pub mod card;
pub mod exec;
pub mod restore;
pub mod rollback;
pub mod switch;
pub mod table;
pub mod update;

use crate::backup::CardIdentity;
use crate::disk::target::ReadOnly;
use crate::fat;
use crate::manifest::Manifests;
use crate::status::Report;
use crate::txn::{self, Action, FileChange, Plan};
use std::io::{Read, Seek, Write};

/// The boot set: the files the card's boot reads and that must agree with each other. They
/// switch together, in the last transaction of a change. One type, so every command asks the
/// same question the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootSet {
    names: Vec<String>,
}

impl BootSet {
    /// Every file the card's boot chains name (bootcode.bin, start/fixup, armstub, kernel=),
    /// config.txt, and the device trees of the boards those chains serve: the complete chains
    /// status shows, or (when none is complete, as on a card whose kernel lives elsewhere) the
    /// ones it could follow.
    pub fn of_card(report: &Report, manifests: &Manifests) -> BootSet {
        let mut set = BootSet::default();
        set.add(["config.txt"]);
        for c in &report.chains {
            set.add(c.stages.iter().filter_map(|s| s.file.as_deref()));
            for b in c.boards.iter().filter_map(|id| manifests.board(id)) {
                set.add(b.dtbs.iter().map(String::as_str));
            }
        }
        set
    }

    /// Adds names (case-insensitive; duplicates collapse).
    pub fn add<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.names.extend(names.into_iter().map(str::to_string));
        self.names.sort_by_key(|s| s.to_ascii_lowercase());
        self.names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    }

    /// Whether `path` is in the set. An empty set (no chain known) falls back to every file
    /// that looks boot-related ([`txn::is_boot_critical`]).
    pub fn contains(&self, path: &str) -> bool {
        if self.names.is_empty() {
            txn::is_boot_critical(path, &[])
        } else {
            self.names.iter().any(|c| c.eq_ignore_ascii_case(path))
        }
    }

    /// The names, sorted case-insensitively.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Space kept free beyond what a batch needs: directory growth, the journal, rounding to
/// clusters.
pub const MARGIN: u64 = 256 * 1024;

/// A refusal found while planning; the card is untouched.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("the card has no firmware partition pifw can change; see pifw status")]
    NoFirmware,
    #[error(
        "the firmware partition is not a FAT volume pifw can read safely; see pifw status (nothing was written)"
    )]
    NotFat,
    #[error(
        "the new {path} is {actual} bytes, but the release says {pinned} bytes; pifw installs only content that matches its pin exactly (nothing was written)"
    )]
    SourceSize {
        path: String,
        actual: u64,
        pinned: u64,
    },
    #[error(
        "not enough free space on the firmware partition: the new directories ({dirs}) and their files need {}, the partition has {} free (nothing was written)",
        size(*need), size(*free)
    )]
    NoRoomForDirs { dirs: String, need: u64, free: u64 },
    #[error(
        "not enough free space on the firmware partition: {} of files that must switch together need {} free (copy-on-write keeps the old files until the switch), the partition has {} (nothing was written); free space by removing files pifw does not manage, or grow the partition",
        size(*set), size(*need), size(*free)
    )]
    NoRoomForSet { set: u64, need: u64, free: u64 },
    #[error(
        "not enough free space on the firmware partition: batch {batch} of {batches} needs {} for its new files beside their old copies, and {} will be free by then (nothing was written). Free space first: remove files this card's board does not use (on a Pi 3, start4*.elf and fixup4*.dat are for the Pi 4), or grow the partition",
        size(*need), size(*free_then)
    )]
    NoRoomForBatch {
        batch: usize,
        batches: usize,
        need: u64,
        free_then: u64,
    },
    #[error(
        "the card changed since pifw read it for this plan ({}); nothing was written. Run the command again to plan on the card as it is now",
        .what.join("; ")
    )]
    Changed { what: Vec<String> },
    #[error(transparent)]
    Txn(#[from] txn::TxnError),
    #[error(transparent)]
    Fat(#[from] fat::FatError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("reading the card again before writing: {0:#}")]
    Reread(anyhow::Error),
}

/// Sizes as plans and messages show them: `617.4 KiB`, `7.6 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Where the backup of a file change goes.
#[derive(Debug, Clone, Copy)]
pub struct BackupPlacement {
    /// A backup is made at all (on this machine).
    pub backup: bool,
    /// A copy on the card is wanted (by the change and by the configuration).
    pub on_card_wanted: bool,
    /// The card's identity file is written first (one cluster of its own).
    pub new_card_id: bool,
}

/// One copy of a change's backup, as the plan announces it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupCopy {
    /// `backup-dir` (this run's backup directory) or `card-firmware` (the firmware partition).
    pub place: &'static str,
    /// The backup directory, or the copy's name in the firmware partition's root.
    pub path: String,
    /// For `backup-dir`: the partition of the card holding that directory (the card's own
    /// root filesystem, e.g. `mmcblk0p2`), when it is on the card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_card_partition: Option<String>,
    /// A second machine holding only the card can find and use this copy.
    pub second_machine: bool,
}

/// Where a backup's copies go: the backup directory (on the card when `dir_partition` names
/// the card's partition holding it), and the firmware partition when `on_card`.
pub fn backup_copies(
    dir: &std::path::Path,
    dir_partition: Option<String>,
    on_card: bool,
    card_name: &str,
) -> Vec<BackupCopy> {
    let mut v = vec![BackupCopy {
        place: "backup-dir",
        path: dir.display().to_string(),
        second_machine: dir_partition.is_some(),
        on_card_partition: dir_partition,
    }];
    if on_card {
        v.push(BackupCopy {
            place: "card-firmware",
            path: card_name.to_string(),
            on_card_partition: None,
            second_machine: true,
        });
    }
    v
}

/// [`backup_copies`] for a change to `target`: the partition holding the backup directory
/// looked up among this system's mounts, the card's copy named with the placeholder id `ID`.
pub fn planned_backup_copies(
    dir: &std::path::Path,
    target: &std::path::Path,
    on_card: bool,
) -> Vec<BackupCopy> {
    let dir_partition = crate::disk::mounts::partition_holding(
        dir,
        target,
        &crate::disk::mounts::SystemView::system(),
    );
    backup_copies(dir, dir_partition, on_card, &card::card_backup_name("ID"))
}

/// The executor left the card's copy out (the backup came out larger than planned): `copies`
/// without it, and the reason the backup is off the card.
pub fn card_copy_dropped(copies: &mut Vec<BackupCopy>) -> &'static str {
    copies.retain(|c| c.place != "card-firmware");
    "larger than planned"
}

/// A file change, planned whole: what a real run will write, in which order, with room for
/// every step checked.
#[derive(Debug)]
pub struct FilePlan {
    /// Free bytes on the firmware partition now.
    pub free: u64,
    /// Directories created (empty) before the first batch, parents first.
    pub missing_dirs: Vec<String>,
    /// The transactions, in order; the boot set is in the last.
    pub groups: Vec<Vec<FileChange>>,
    /// What each transaction changes, planned on the card as it is now.
    pub plans: Vec<Plan>,
    /// More than the boot set's own batch, because not everything fits beside its old copy.
    pub split_for_space: bool,
    pub bytes_to_write: u64,
    pub free_after: u64,
    /// Nothing to change: the card has these files already.
    pub noop: bool,
    /// The largest the backup zip can be (the old files stored, plus headers and manifest).
    pub backup_bound: u64,
    /// The backup's copy goes onto the card (first, in a transaction of its own).
    pub backup_on_card: bool,
    /// Why it does not, when a copy was wanted.
    pub backup_off_card_reason: Option<&'static str>,
}

/// The firmware partition's byte range, or a clear refusal.
pub fn firmware_range(report: &Report) -> Result<(u64, u64), ChangeError> {
    let fw = report.firmware.as_ref().ok_or(ChangeError::NoFirmware)?;
    if fw.fat.is_none() {
        return Err(ChangeError::NotFat);
    }
    Ok((fw.offset_bytes, fw.offset_bytes + fw.size_bytes))
}

/// Finding codes that mean the card's structure cannot be trusted for writing.
const STRUCTURAL: [&str; 9] = [
    "mbr-",
    "gpt-",
    "protective-",
    "hybrid-drift",
    "fat-",
    "firmware-fat",
    "firmware-unreadable",
    "no-partition",
    "no-firmware",
];

/// The errors in `report` that make its structure untrustworthy for writing (damaged tables,
/// a FAT pifw cannot read safely), each as `message (code)`; empty when the card may be changed.
pub fn structural_damage(report: &Report) -> Vec<String> {
    report
        .findings
        .iter()
        .filter(|f| f.severity == crate::finding::Severity::Error)
        .filter(|f| STRUCTURAL.iter().any(|p| f.code.starts_with(p)))
        .map(|f| format!("{} ({})", f.message, f.code))
        .collect()
}

/// The card's identity, as backups record it.
pub fn identity(report: &Report) -> CardIdentity {
    CardIdentity::of_report(report)
}

/// Every new content is the size the change says, before anything is planned: a source whose
/// size disagrees with its pin (a manifest off by one, a truncated download) is refused here,
/// not in a transaction after the backup's copy went onto the card. The sha256 was taken when
/// the source was obtained; the transaction hashes every byte once more, before its first write.
pub fn check_sources(changes: &[FileChange]) -> Result<(), ChangeError> {
    for c in changes {
        let actual = match &c.content {
            txn::NewContent::Remove => continue,
            txn::NewContent::Bytes(b) => b.len() as u64,
            txn::NewContent::Path(p) => std::fs::metadata(p)?.len(),
        };
        if actual != c.size {
            return Err(ChangeError::SourceSize {
                path: c.path.clone(),
                actual,
                pinned: c.size,
            });
        }
    }
    Ok(())
}

/// Plans `changes` on the firmware partition `part` (read through a reader that cannot
/// write): batches, directories, space for every batch in order and for the backup's copy.
/// `critical` is the boot set ([`BootSet`]); empty: every file that looks
/// boot-related counts.
///
/// `known`: the old files' sizes and hashes as the status report read them
/// ([`known_files`]); the executor revalidates the card against that report, by content,
/// before its first write, so the plan need not hash them a second time.
pub fn plan_files<P: Read + Write + Seek>(
    part: &mut P,
    changes: Vec<FileChange>,
    critical: &BootSet,
    backup: BackupPlacement,
    known: &txn::KnownOld,
) -> Result<FilePlan, ChangeError> {
    let (info, _) = fat::check(part)?;
    let cluster = info.cluster_bytes.max(1);
    // What the identity file takes before the change's own writes is not free for them.
    let reserve = if backup.new_card_id { cluster } else { 0 };
    let free = info.free_bytes.saturating_sub(reserve);
    // Directories the change needs and the card lacks are created (empty) before the first
    // batch; files under them cannot be planned by the engine until then, so they are planned
    // here as additions, with their own space check.
    let wanted: Vec<&str> = changes
        .iter()
        .filter(|c| !matches!(c.content, txn::NewContent::Remove))
        .map(|c| c.path.as_str())
        .collect();
    let missing = txn::missing_dirs(part, &wanted)?;
    let under_missing = |path: &str| {
        missing.iter().any(|d| {
            path.len() > d.len()
                && path[..d.len()].eq_ignore_ascii_case(d)
                && path.as_bytes()[d.len()] == b'/'
        })
    };
    let round = |n: u64| n.div_ceil(cluster) * cluster;
    let dirs_bytes = missing.len() as u64 * cluster;
    let deferred_bytes: u64 = changes
        .iter()
        .filter(|c| under_missing(&c.path))
        .map(|c| round(c.size))
        .sum::<u64>()
        + dirs_bytes;
    if deferred_bytes > 0 && deferred_bytes + MARGIN > free {
        return Err(ChangeError::NoRoomForDirs {
            dirs: missing.join(", "),
            need: deferred_bytes,
            free,
        });
    }
    let room = free.saturating_sub(deferred_bytes);
    let split_for_space = changes.iter().map(|c| c.size).sum::<u64>() > room.saturating_sub(MARGIN);
    let groups = batches(changes, critical, room);
    let mut plans = Vec::new();
    for g in &groups {
        let (later, now): (Vec<FileChange>, Vec<FileChange>) =
            g.iter().cloned().partition(|c| under_missing(&c.path));
        let mut plan = txn::plan_known(part, &now, known).map_err(|e| match e {
            txn::TxnError::NoSpace { need, .. } => ChangeError::NoRoomForSet {
                set: g.iter().map(|c| c.size).sum(),
                need,
                free,
            },
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
        last.free_after = last.free_after.saturating_sub(dirs_bytes);
    }
    let noop = plans.iter().all(|p| p.is_noop());
    let changed_items = || {
        plans
            .iter()
            .flat_map(|p| p.items.iter())
            .filter(|i| i.action != Action::Unchanged)
    };
    let old_bytes: u64 = changed_items()
        .filter_map(|i| i.old.as_ref().map(|o| o.size))
        .sum();
    let free_after = plans
        .last()
        .map_or(free, |p| p.free_after.saturating_sub(reserve));
    // The backup's copy on the card is written first, before every batch, and stays: it needs
    // its room during every batch and after the change. Its size is bounded before the zip
    // exists (the old files are stored: their bytes plus headers and the deflated manifest;
    // the slack also covers deflate's few bytes per block); the zip made later is checked
    // against this bound before it goes anywhere.
    let backup_bound = old_bytes
        + old_bytes / 256
        + 1024 * (changed_items().count() as u64 + missing.len() as u64 + 16);
    let after_dirs = free.saturating_sub(dirs_bytes);
    let wanted = backup.backup && backup.on_card_wanted && !noop;
    let with_copy = wanted
        && round(backup_bound) + MARGIN < free_after
        && batches_fit(
            &plans,
            after_dirs.saturating_sub(round(backup_bound)),
            round,
        )
        .is_ok();
    // Each batch was planned against the card as it is now, but runs after the batches before
    // it, whose additions keep their space: walk the batches in order and refuse now, before
    // the first write, if one would not find room for its new copies then.
    if !with_copy && let Err((i, need, free_then)) = batches_fit(&plans, after_dirs, round) {
        return Err(ChangeError::NoRoomForBatch {
            batch: i + 1,
            batches: plans.len(),
            need,
            free_then,
        });
    }
    Ok(FilePlan {
        free: info.free_bytes,
        missing_dirs: missing,
        bytes_to_write: plans.iter().map(|p| p.bytes_to_write).sum(),
        groups,
        plans,
        split_for_space,
        free_after,
        noop,
        backup_bound,
        backup_on_card: with_copy,
        backup_off_card_reason: (wanted && !with_copy)
            .then_some("too little free space beside the change"),
    })
}

/// Walks the batches in order from `free` bytes free: `Err((batch, need, free_then))` for the
/// first batch that would not find room for its new copies beside the old ones.
fn batches_fit(
    plans: &[Plan],
    free: u64,
    round: impl Fn(u64) -> u64,
) -> Result<(), (usize, u64, u64)> {
    let mut free_then = free;
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
            return Err((i, new + MARGIN, free_then));
        }
        free_then = (free_then + old).saturating_sub(new);
    }
    Ok(())
}

/// Splits `changes` into batches that each fit the free space, keeping every boot-critical
/// file in one batch (that batch is the atomic switch of the boot set) and every
/// `start*.elf` with its `fixup*.dat`.
fn batches(changes: Vec<FileChange>, critical: &BootSet, free: u64) -> Vec<Vec<FileChange>> {
    let room = free.saturating_sub(MARGIN);
    let fits = changes.iter().map(|c| c.size).sum::<u64>() <= room;
    let in_set = |path: &str| critical.contains(path);
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

/// Every file of the report's firmware partition: [`txn::path_key`] -> (size, sha256).
pub fn known_files(report: &Report) -> txn::KnownOld {
    report
        .firmware
        .iter()
        .flat_map(|f| f.files.iter())
        .map(|f| (txn::path_key(&f.path), (f.size, f.sha256.clone())))
        .collect()
}

/// The card as pifw reads it now, through the locked handle, against the report the plan was
/// made from: the partition table and every file of the firmware partition, by sha256.
pub fn revalidate<D: Read + Seek>(disk: &mut D, report: &Report) -> Result<(), ChangeError> {
    // Identification does not enter the comparison, so the built-in manifests serve.
    let manifests = Manifests::embedded().map_err(|e| ChangeError::Reread(e.into()))?;
    let mut view = ReadOnly(disk);
    let now = crate::status::inspect(
        &mut view,
        report.target.clone(),
        &manifests,
        report.board.clone(),
    )
    .map_err(ChangeError::Reread)?;
    let what = report.changes_since(&now);
    if what.is_empty() {
        Ok(())
    } else {
        Err(ChangeError::Changed { what })
    }
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
        let b = batches(changes, &BootSet::default(), 6000 + MARGIN);
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

    #[test]
    fn a_source_whose_size_differs_from_its_pin_is_refused() {
        let c = FileChange {
            path: "u-boot-rpi3.bin".into(),
            content: txn::NewContent::Bytes(vec![0; 10]),
            sha256: String::new(),
            size: 11,
        };
        let e = check_sources(&[c]).unwrap_err();
        assert!(matches!(
            e,
            ChangeError::SourceSize {
                actual: 10,
                pinned: 11,
                ..
            }
        ));
        assert!(e.to_string().contains("nothing was written"));
    }
}
