//! Crash-safe changes to a FAT16/FAT32 firmware partition: plan, apply, recover.
//!
//! Owns the order of writes that makes a set of file changes survive a power cut at any
//! write, and the journal that lets any machine finish or undo an interrupted change. The byte
//! edits themselves come from [`crate::fat::write`]; this module never encodes a FAT entry or a
//! directory entry itself. Must not print, open paths other than [`NewContent::Path`] sources,
//! or hold the partition in memory (content moves in chunks of at most 1 MiB).
//!
//! # Design
//!
//! Copy-on-write. New content goes into free clusters; the old file stays intact and reachable
//! until its directory entry is switched. Switching a file is rewriting its 32-byte short entry
//! (first cluster, size, write time); all switches that fall in one directory sector are one
//! sector write. Old chains are freed only after every switch is on disk.
//!
//! The disk model: a single-sector write is atomic (lands whole or not at all); a larger write
//! may land in part; writes between two syncs may land in any order or not at all; a sync
//! makes everything before it durable. Every ordering below that matters is a sync, and
//! `tests/powercut.rs` and the unit tests check it by losing unsynced writes too
//! ([`Unsynced`]), not only by cutting after each write ([`FaultyDevice`]).
//!
//! One transaction, in write order ([`apply`]):
//!
//! 0. Every new content is hashed before the first write: a wrong size or sha256 is refused
//!    with the partition byte-identical. This is the only hash of a new byte on its way in:
//!    a file source stays open from here to step 1.
//! 1. Data: each new content into its free clusters, copied from the handle step 0 hashed,
//!    after checking that nothing wrote to the file since (inode, size, change and
//!    modification times; a file that changed stops here). Nothing on the volume refers to these clusters,
//!    so the volume is unchanged for every reader. Clusters a full directory grows by are
//!    zeroed here too (a new entry never crosses a sector in a directory that can grow).
//! 2. Journal content into its own free clusters (one contiguous run).
//! 3. The journal's root directory slot, written as a *deleted* entry (byte 0 = 0xE5) that
//!    already names its first cluster and size: invisible to every FAT reader, but it tells
//!    recovery where the journal's clusters are if a later step is cut. With it, any free
//!    slot between a directory's end marker (a 0x00 entry, where readers stop) and a new
//!    entry behind it becomes a deleted entry, so that the new entry will be seen. Sync.
//! 4. FSInfo's free count set to "unknown" (FAT32; 0xFFFFFFFF is legal and fsck.fat accepts
//!    it), so no later FAT edit can leave a wrong count behind; sync.
//! 5. Directory growth linked (a zeroed cluster at a directory's end reads as no entries),
//!    FAT copy 0 then a sync then the other copies then a sync, so that a journal slot in a
//!    grown root cluster is reachable before the journal's clusters are allocated; the
//!    journal's chain in every FAT copy; sync; the slot undeleted (`PIFW.JNL` appears); sync.
//!    From here the intent is durable.
//! 6. Roll forward (shared with [`recover`]): new chains and directory growth linked in every
//!    FAT copy, copy 0 first (once copy 0 holds every new chain, recovery finishes the
//!    change: that is the commit); sync; the slot switches, sector by sector, the sector
//!    holding the most boot-critical entries first, a sync after each; old chains freed; sync;
//!    the journal slot deleted again; sync; its clusters freed; sync; FSInfo rewritten from
//!    the FAT; sync.
//!
//! [`recover`] (also run at the start of every [`apply`] that changes something) finds the
//! journal by content, not by name: a root slot whose file starts with the journal header,
//! passes its checksum and records that very slot and first cluster (the name is `PIFW.JNL`,
//! or `PIFWn.JNL` when a user's file has that name; a user's file is never taken for one).
//! Before its first write it proves the journal's clusters are still its own
//! (`safety::walk`: no live entry outside the journal reaches them) and that every journaled
//! slot holds its old or new bytes; otherwise [`TxnError::Unsafe`] with the evidence and
//! nothing written (a card `fsck.fat -a -f` salvaged into `FSCK0000.REC`). If every new chain
//! is linked in FAT copy 0 exactly as journaled and hashes to its new sha256 (or, when some
//! slot already holds its new bytes, the chains can be linked again: free or as journaled, and
//! hashing right, as after `fsck.fat -a` freed them), it rolls forward is linked in FAT copy 0 exactly as journaled and hashes to
//! its new sha256, it rolls forward (step 6 again); otherwise it rolls back: directory growth
//! linked, every journaled slot restored to its old bytes (sync), new chains freed (sync),
//! journal removed as in step 6. A journal that fails its checksum cannot exist by this order
//! (its content is durable before its slot goes live); such a file is left alone. Every
//! step writes values, not deltas, and skips sectors that already hold them, so recovery cut
//! at any write can simply run again. Then, for a *deleted* `PIFW.JNL` slot that still holds a
//! journal naming that slot (steps 3-5 or the end of step 6 were cut): directory growth that
//! some FAT copy holds and another lacks is completed in every copy, and the journal's
//! clusters, if some copy still links them as the journal's chain and no copy gives them to
//! anything else and no live entry reaches them, are freed. Lost clusters holding only an
//! empty directory of their own (`.` and `..`: what [`create_dirs`] leaves when cut) are
//! freed. Finally an "unknown" FSInfo free count is recomputed (a cut between steps 4 and 5
//! leaves it with no journal slot reachable yet). [`recovery_needed`] rehearses all of this
//! on an in-memory [`Overlay`] to tell whether anything is left to clean.
//!
//! Directory sectors are the only atomic switch: files whose entries share a sector switch
//! together; entries in different sectors switch one sector write (and one sync) apart, so a
//! cut between two switch writes leaves some files new and the others old until recovery
//! rolls forward. The boot-critical set is all-old or all-new at every cut exactly when its
//! changed entries share one sector. On the NixOS-like fixture they span two root sectors
//! (one mixed cut point of 35), on the Raspberry Pi OS-like one three (one mixed of 60).
//! Only the fixed FAT16 root, which cannot grow, may have to put a new long name across two
//! sectors (its long-name part and its short entry then appear one write apart).
//!
//! # What a cut leaves, as `fsck.fat -n` sees it
//!
//! Between any two writes the only complaints are: lost clusters (new chains not yet
//! switched to, old chains not yet freed, the journal while its slot is deleted); "FATs
//! differ" where one copy already holds an edit the other does not, which touches only such
//! unreferenced clusters, except for a directory growing by a cluster, where the copies
//! differ on the directory's last link and copy 0 (the one fsck.fat and Linux use) is the
//! grown, zero-filled directory; and "Free cluster summary uninitialized" (informational, exit
//! status 0). Every file is its old or its new version, readable through copy 0, at every cut.
//! After [`recover`] the volume is clean for `fsck.fat -n` and holds exactly the old or
//! exactly the new files. The dirty flag is never touched: the volume is consistent for
//! readers at every cut, so there is nothing for a dirty flag to announce, and a set dirty bit
//! would invite a boot-time `fsck.fat -a`, the one thing that must not run on an interrupted
//! change. A card that was dirty before stays dirty.
//!
//! A volume modified by another system between the cut and the recovery is refused when the
//! modification touches the journal's clusters or slots (see above); a modification elsewhere
//! is not noticed, and roll back frees only clusters whose FAT entries still hold what this
//! transaction linked.

mod journal;
mod mkdir;
mod safety;

// The device primitives sit below both `disk` and `txn` (crate::device); re-exported here
// because the engine's callers and tests know them by these names.
pub use crate::device::{Durable, FaultyDevice, Slice, Unsynced, WriteLog, env_cut};
pub use journal::Action;
pub use mkdir::{create_dirs, missing_dirs, remove_empty_dirs};
pub use safety::{Overlay, check_writable};

use crate::fat::write::{
    self, DirItem, DosTime, FatEdits, FreeMap, Volume, WriteError, expand, names, runs,
};
use crate::fat::{FatError, FatType};
use journal::{Chain, FileRecord, Journal, SlotRecord, hex, unhex32};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Cursor, Read, Seek, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a file's new content comes from, or that it goes away.
#[derive(Debug, Clone)]
pub enum NewContent {
    Path(PathBuf),
    Bytes(Vec<u8>),
    Remove,
}

/// One wanted file. `sha256` and `size` describe the new content (ignored for `Remove`);
/// [`apply`] refuses content that does not match them.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// `/`-separated path from the volume root, e.g. `start.elf`, `overlays/x.dtbo`; the
    /// directories must exist. Matched case-insensitively against long and 8.3 names.
    pub path: String,
    pub content: NewContent,
    pub sha256: String,
    pub size: u64,
}

/// Size and sha256 of one version of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileState {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    pub path: String,
    pub action: Action,
    pub old: Option<FileState>,
    pub new: Option<FileState>,
}

/// What [`apply`] will do, computed by [`plan`] from the volume alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub items: Vec<PlanItem>,
    /// File content bytes to write (new and replaced files).
    pub bytes_to_write: u64,
    pub free_before: u64,
    /// Free space once old chains are freed.
    pub free_after: u64,
}

impl Plan {
    /// True when applying the plan writes nothing at all.
    pub fn is_noop(&self) -> bool {
        self.items.iter().all(|i| i.action == Action::Unchanged)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Write time stored in switched entries; `None` = now.
    pub mtime: Option<SystemTime>,
    /// Extra file names (e.g. the `kernel=` and `armstub=` targets of config.txt) treated as
    /// boot-critical when ordering the switches; see [`is_boot_critical`].
    pub boot_critical: Vec<String>,
    /// Old contents already hashed while the caller held the card exclusively, just before
    /// this change (the executor's backup reads every file a change replaces): key
    /// [`path_key`], value (size, sha256). A file found with that size and a chain long enough
    /// for it is not hashed again; every other file is. The read-back of the new files after
    /// the switch is never skipped.
    pub known_old: KnownOld,
}

/// Old files' (size, sha256) by [`path_key`], hashed by someone else: see
/// [`ApplyOptions::known_old`].
pub type KnownOld = HashMap<String, (u64, String)>;

/// The key of a path in [`ApplyOptions::known_old`]: its components, lower-cased, joined by `/`.
pub fn path_key(path: &str) -> String {
    match split_path(path) {
        Ok(parts) => parts.join("/").to_lowercase(),
        Err(_) => path.to_lowercase(),
    }
}

/// The result of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// `None` for a no-op plan (nothing written).
    pub txn_id: Option<String>,
    /// What a fresh parse found for each changed path after the change (`None` = absent).
    pub verified: Vec<(String, Option<FileState>)>,
    /// Directory sector writes that switched files (1 means the whole set switched at once).
    pub switch_writes: usize,
    /// What the recovery run at the start found.
    pub recovered_first: RecoverOutcome,
}

/// An interrupted change, as [`pending`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalSummary {
    pub txn_id: String,
    pub files: Vec<(String, Action)>,
    /// What [`recover`] would do now.
    pub would: RecoverOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RecoverOutcome {
    /// No interrupted change; leftovers of one (an unlinked journal, FAT copies that differ on
    /// pifw's own clusters, an unknown FSInfo count, a lost empty directory) may have been
    /// cleaned.
    Nothing,
    /// Every new file was complete: the change was finished.
    RolledForward,
    /// Some new content was incomplete: the old files were put back.
    RolledBack,
    /// No longer produced: a file that fails the journal's checksum is not taken for a journal
    /// (it may be a user's file) and is left alone. Kept so that the JSON stays readable.
    DiscardedTorn,
}

#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Fat(#[from] FatError),
    #[error("I/O on the partition: {0}")]
    Io(#[from] io::Error),
    #[error("reading {path}: {source}")]
    Source { path: PathBuf, source: io::Error },
    #[error("not enough free space: {need} bytes needed, {have} bytes free")]
    NoSpace { need: u64, have: u64 },
    #[error(
        "{path}: content has sha256 {actual} ({actual_size} bytes), expected {expected} ({expected_size} bytes); nothing was changed"
    )]
    ContentMismatch {
        path: String,
        expected: String,
        expected_size: u64,
        actual: String,
        actual_size: u64,
    },
    #[error(
        "the plan no longer matches the volume ({path}: planned {planned:?}, now {now:?}); plan again"
    )]
    PlanStale {
        path: String,
        planned: Option<Action>,
        now: Option<Action>,
    },
    #[error("invalid path {path:?}: {reason}")]
    BadPath { path: String, reason: String },
    #[error("{path} is {size} bytes; FAT files stop at 4 GiB - 1")]
    TooLarge { path: String, size: u64 },
    #[error(
        "after the change, a fresh read of {path} found {actual:?}, expected {expected:?}; run recovery"
    )]
    VerifyFailed {
        path: String,
        expected: Option<FileState>,
        actual: Option<FileState>,
    },
    #[error("refusing to write to a damaged volume: {reason}")]
    Damaged { reason: String },
    #[error("the journal on the volume is inconsistent: {reason}")]
    BadJournal { reason: String },
    #[error(
        "refusing to recover interrupted change {txn_id}: the card changed after the interruption (by fsck.fat or another system?) and pifw cannot prove that finishing or undoing the change is safe: {}. Nothing was written. Copy the partition off (dd) before anything else; the journal file names every file's old and new clusters and sha256",
        evidence.join("; ")
    )]
    Unsafe {
        txn_id: String,
        evidence: Vec<String>,
    },
}

/// Whether `path` is one of the files the Pi's boot needs to agree with each other:
/// `bootcode.bin`, `start*.elf`, `fixup*.dat`, `config.txt`, `*.dtb`, and the usual `kernel=`
/// / `armstub=` targets (`u-boot*.bin`, `armstub*.bin`, `kernel*.img`, `RPI_EFI.fd`), plus
/// any name in `extra`. Case-insensitive, on the last path component.
pub fn is_boot_critical(path: &str, extra: &[String]) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_lowercase();
    let glob = |pre: &str, suf: &str| name.starts_with(pre) && name.ends_with(suf);
    name == "bootcode.bin"
        || name == "config.txt"
        || name == "rpi_efi.fd"
        || glob("start", ".elf")
        || glob("fixup", ".dat")
        || glob("u-boot", ".bin")
        || glob("armstub", ".bin")
        || glob("kernel", ".img")
        || name.ends_with(".dtb")
        || extra
            .iter()
            .any(|e| e.to_lowercase() == name || e.to_lowercase() == path.to_lowercase())
}

fn split_path(path: &str) -> Result<Vec<&str>, TxnError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(TxnError::BadPath {
            path: path.to_string(),
            reason: "empty, or with . or .. components".into(),
        });
    }
    Ok(parts)
}

/// What the volume holds for one change, before anything is written.
struct Current {
    /// The directory holding the file.
    dir: write::Dir,
    item: Option<DirItem>,
    old: Option<Chain>,
}

fn look<R: Read + Seek>(
    part: &mut R,
    vol: &Volume,
    dirs: &mut HashMap<String, write::Dir>,
    path: &str,
    known: &KnownOld,
) -> Result<Current, TxnError> {
    let parts = split_path(path)?;
    let (leaf, parents) = parts.split_last().ok_or_else(|| TxnError::BadPath {
        path: path.to_string(),
        reason: "empty".into(),
    })?;
    let key = parents.join("/").to_lowercase();
    let dir = match dirs.get(&key) {
        Some(d) => d.clone(),
        None => {
            let d = vol.resolve_dir(part, parents)?;
            dirs.insert(key, d.clone());
            d
        }
    };
    let item = dir.find(leaf);
    if let Some(it) = &item
        && it.is_dir()
    {
        return Err(WriteError::IsDir {
            path: path.to_string(),
        }
        .into());
    }
    let old = match &item {
        Some(it) => {
            let known = known
                .get(&path_key(path))
                .filter(|(size, _)| *size == it.size())
                .map(|(_, sha)| sha.as_str());
            Some(read_chain(
                part,
                vol,
                it.first_cluster(),
                it.size(),
                path,
                known,
            )?)
        }
        None => None,
    };
    Ok(Current { dir, item, old })
}

/// The chain of a file and the hash of its content (`known`: already hashed, see
/// [`ApplyOptions::known_old`]).
fn read_chain<R: Read + Seek>(
    part: &mut R,
    vol: &Volume,
    first: u32,
    size: u64,
    path: &str,
    known: Option<&str>,
) -> Result<Chain, TxnError> {
    let cb = vol.cluster_bytes();
    let clusters = if first == 0 {
        Vec::new()
    } else {
        vol.chain(part, first, size.div_ceil(cb).max(1))?
    };
    let sha = match known {
        Some(sha) if (clusters.len() as u64) * cb >= size => Some(sha.to_lowercase()),
        _ => vol.hash_clusters(part, &clusters, size)?,
    };
    let sha = sha.ok_or_else(|| TxnError::Damaged {
        reason: format!(
            "{path}: {size} bytes do not fit its {} clusters",
            clusters.len()
        ),
    })?;
    Ok(Chain {
        first_cluster: first,
        size,
        sha256: sha,
        runs: runs(&clusters),
    })
}

fn action_of(change: &FileChange, cur: &Current) -> Action {
    match (&change.content, &cur.old) {
        (NewContent::Remove, None) => Action::Unchanged,
        (NewContent::Remove, Some(_)) => Action::Remove,
        (_, None) => Action::Add,
        (_, Some(old)) if old.size == change.size && old.sha256 == change.sha256.to_lowercase() => {
            Action::Unchanged
        }
        _ => Action::Replace,
    }
}

/// Where everything of one transaction goes: computed against a free map, before any write.
struct Layout {
    files: Vec<FileRecord>,
    /// For each record, the index of its change and its new clusters.
    content: Vec<(usize, Vec<u32>)>,
    grow: Vec<(u32, u32)>,
    /// Free slots before new entries that become deleted entries (see [`take_slots`]).
    pads: Vec<u64>,
    journal_slot: u64,
    /// The journal's 8.3 name: `PIFW.JNL`, or `PIFWn.JNL` when a file of the card has that
    /// name (recovery recognises a journal by its content, never by its name).
    journal_name: [u8; 11],
    journal_clusters: Vec<u32>,
    journal_bytes: Vec<u8>,
    free_before: u64,
    free_after: u64,
    bytes_to_write: u64,
    items: Vec<PlanItem>,
}

fn no_space(vol: &Volume, free: &FreeMap, need_clusters: u64) -> TxnError {
    TxnError::NoSpace {
        need: need_clusters * vol.cluster_bytes(),
        have: free.count() * vol.cluster_bytes(),
    }
}

/// Picks `n` consecutive free slots of `dir` inside one sector (so that the entry switches in
/// one write), growing the directory by zeroed clusters when it has no such run; only the fixed
/// FAT16 root, which cannot grow, falls back to a run across two sectors. A run that starts
/// past the end marker gets the free slots between the marker and its start turned into
/// deleted entries (their offsets go to `pads`): readers stop at the end marker, so an entry
/// behind it would never be seen.
#[allow(clippy::too_many_arguments)]
fn take_slots(
    vol: &Volume,
    dir: &mut write::Dir,
    avail: &mut Vec<usize>,
    n: usize,
    free: &mut FreeMap,
    grow: &mut Vec<(u32, u32)>,
    need_clusters: &mut u64,
    pads: &mut Vec<u64>,
) -> Result<Vec<usize>, TxnError> {
    let bps = vol.sector_bytes();
    loop {
        let mut single: Option<usize> = None;
        let mut crossing: Option<usize> = None;
        for w in avail.windows(n.max(1)) {
            let consecutive = w.windows(2).all(|p| p[1] == p[0] + 1);
            if !consecutive {
                continue;
            }
            let one_sector = dir.slot_offset(w[0]) / bps == dir.slot_offset(w[n - 1]) / bps;
            if one_sector {
                single = Some(w[0]);
                break;
            }
            crossing = crossing.or(Some(w[0]));
        }
        let start = single.or(if dir.first == 0 { crossing } else { None });
        if let Some(start) = start {
            let picked: Vec<usize> = (start..start + n).collect();
            avail.retain(|i| !picked.contains(i));
            let gap: Vec<usize> = (dir.end_slot()..start).collect();
            if !gap.is_empty() {
                pads.extend(gap.iter().map(|&g| dir.slot_offset(g)));
                dir.set_slots(&gap, &vec![write::DELETED_ENTRY; gap.len()]);
            }
            return Ok(picked);
        }
        if dir.first == 0 {
            return Err(WriteError::RootFull {
                need: n,
                have: avail.len(),
                total: dir.slot_count(),
            }
            .into());
        }
        *need_clusters += 1;
        let c = free
            .alloc(1)
            .and_then(|v| v.first().copied())
            .ok_or_else(|| no_space(vol, free, *need_clusters))?;
        let last = dir.clusters.last().copied().unwrap_or(dir.first);
        grow.push((last, c));
        let first_new = dir.slot_count();
        dir.grow(c, vol.cluster_offset(c), vol.cluster_bytes());
        avail.extend(first_new..dir.slot_count());
    }
}

fn layout<R: Read + Seek>(
    part: &mut R,
    vol: &Volume,
    changes: &[FileChange],
    when: DosTime,
    extra_critical: &[String],
    known: &KnownOld,
) -> Result<Layout, TxnError> {
    let cb = vol.cluster_bytes();
    let mut free = vol.free_map(part)?;
    let free_before = free.count() * cb;
    let mut dirs: HashMap<String, write::Dir> = HashMap::new();
    // Directory models being filled, by first cluster, with their still-free slot lists.
    let mut models: BTreeMap<u32, (write::Dir, Vec<usize>)> = BTreeMap::new();
    let mut items = Vec::new();
    let mut files = Vec::new();
    let mut content = Vec::new();
    let mut grow = Vec::new();
    // (sector, boot-critical, slot) before ordering.
    let mut pending_slots: Vec<(u64, bool, SlotRecord)> = Vec::new();
    let mut need_clusters = 0u64;
    let mut freed_clusters = 0u64;
    let mut bytes_to_write = 0u64;
    let mut seen = std::collections::HashSet::new();

    let mut pads = Vec::new();
    let root = vol.read_dir(part, vol.root())?;
    let journal_name = journal_name(&root.short_names());
    let root_first = root.first;
    let avail = root.free_slots();
    models.insert(root_first, (root, avail));
    // Taken before the first changed file's slots, so that the journal's slot comes first in
    // the root; a plan that changes nothing takes none (and needs no free slot or cluster).
    let mut journal_slot = None;

    for (idx, change) in changes.iter().enumerate() {
        let parts = split_path(&change.path)?;
        if !seen.insert(parts.join("/").to_lowercase()) {
            return Err(TxnError::BadPath {
                path: change.path.clone(),
                reason: "named twice in one change set".into(),
            });
        }
        let cur = look(part, vol, &mut dirs, &change.path, known)?;
        let action = action_of(change, &cur);
        let new_state = (!matches!(change.content, NewContent::Remove)).then(|| FileState {
            size: change.size,
            sha256: change.sha256.to_lowercase(),
        });
        items.push(PlanItem {
            path: change.path.clone(),
            action,
            old: cur.old.as_ref().map(|c| FileState {
                size: c.size,
                sha256: c.sha256.clone(),
            }),
            new: new_state.clone(),
        });
        if action == Action::Unchanged {
            continue;
        }
        if journal_slot.is_none() {
            let (dir, avail) = models
                .get_mut(&root_first)
                .ok_or_else(|| TxnError::BadJournal {
                    reason: "root model missing".into(),
                })?;
            let s = take_slots(
                vol,
                dir,
                avail,
                1,
                &mut free,
                &mut grow,
                &mut need_clusters,
                &mut pads,
            )?;
            // In the model only: the slot is taken, and no longer an end marker.
            dir.set_slots(&s, &[write::DELETED_ENTRY]);
            journal_slot = Some(dir.slot_offset(s[0]));
        }
        if change.size > u64::from(u32::MAX) {
            return Err(TxnError::TooLarge {
                path: change.path.clone(),
                size: change.size,
            });
        }
        let critical = is_boot_critical(&change.path, extra_critical);
        let mut new_chain = None;
        if action != Action::Remove {
            let n = change.size.div_ceil(cb);
            need_clusters += n;
            let clusters = free
                .alloc(n)
                .ok_or_else(|| no_space(vol, &free, need_clusters))?;
            bytes_to_write += change.size;
            new_chain = Some(Chain {
                first_cluster: clusters.first().copied().unwrap_or(0),
                size: change.size,
                sha256: change.sha256.to_lowercase(),
                runs: runs(&clusters),
            });
            content.push((idx, clusters));
        }
        if let Some(old) = &cur.old {
            freed_clusters += old.runs.iter().map(|&(_, n)| u64::from(n)).sum::<u64>();
        }
        let first_new = new_chain.as_ref().map_or(0, |c| c.first_cluster);
        let (dir, avail) = models.entry(cur.dir.first).or_insert_with(|| {
            let avail = cur.dir.free_slots();
            (cur.dir.clone(), avail)
        });
        let bps = vol.sector_bytes();
        let mut push = |offset: u64, old: [u8; 32], new: [u8; 32]| {
            pending_slots.push((
                offset / bps,
                critical,
                SlotRecord {
                    offset,
                    old: hex(&old),
                    new: hex(&new),
                },
            ));
        };
        match (&cur.item, action) {
            (Some(item), Action::Replace) => {
                let slot = *item.slots.last().unwrap_or(&0);
                let mut new = item.raw;
                write::set_content(&mut new, first_new, change.size as u32, when);
                push(dir.slot_offset(slot), item.raw, new);
            }
            (Some(item), Action::Remove) => {
                for &s in &item.slots {
                    let old = dir.slot(s);
                    let mut new = old;
                    new[0] = 0xE5;
                    push(dir.slot_offset(s), old, new);
                }
            }
            (None, Action::Add) => {
                let leaf = parts.last().copied().unwrap_or_default();
                let enc = names::encode(leaf, &dir.short_names())?;
                let mut entries = match &enc.long {
                    Some(long) => names::long_entries(long, names::checksum(&enc.short)),
                    None => Vec::new(),
                };
                entries.push(write::new_short_entry(
                    &enc.short,
                    enc.nt_res,
                    first_new,
                    change.size as u32,
                    when,
                ));
                let picked = take_slots(
                    vol,
                    dir,
                    avail,
                    entries.len(),
                    &mut free,
                    &mut grow,
                    &mut need_clusters,
                    &mut pads,
                )?;
                for (s, e) in picked.iter().zip(&entries) {
                    let old = dir.slot(*s);
                    push(dir.slot_offset(*s), old, *e);
                }
                // Later adds to this directory must see this name as taken.
                dir.set_slots(&picked, &entries);
            }
            _ => {
                return Err(TxnError::BadJournal {
                    reason: format!("{}: inconsistent action {action:?}", change.path),
                });
            }
        }
        files.push(FileRecord {
            path: change.path.clone(),
            action,
            old: cur.old.clone(),
            new: new_chain,
        });
    }

    // Why this order: a sector switch is the only atomic step, so the sector holding the most
    // boot-critical entries switches first and, when start.elf and fixup.dat share a sector,
    // they change together; the remaining sectors follow in disk order.
    let mut sectors: Vec<(u64, usize)> = Vec::new();
    for (s, crit, _) in &pending_slots {
        match sectors.iter_mut().find(|(x, _)| x == s) {
            Some((_, n)) => *n += usize::from(*crit),
            None => sectors.push((*s, usize::from(*crit))),
        }
    }
    sectors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut slots = Vec::new();
    for (s, _) in &sectors {
        for (x, _, rec) in &pending_slots {
            if x == s {
                slots.push(rec.clone());
            }
        }
    }

    let Some(journal_slot) = journal_slot else {
        return Ok(Layout {
            files,
            content,
            grow,
            pads,
            journal_slot: 0,
            journal_name,
            journal_clusters: Vec::new(),
            journal_bytes: Vec::new(),
            free_before,
            free_after: free_before,
            bytes_to_write,
            items,
        });
    };
    let mut j = Journal {
        version: journal::FORMAT_VERSION,
        txn_id: txn_id(),
        journal_first: u32::MAX,
        journal_clusters: u32::MAX,
        journal_slot,
        files: files.clone(),
        slots: slots.clone(),
        grow: grow.clone(),
    };
    let estimate = j.encode().len() as u64;
    let jn = estimate.div_ceil(cb).max(1);
    need_clusters += jn;
    let journal_clusters = free
        .alloc(jn)
        .filter(|c| runs(c).len() == 1)
        .ok_or_else(|| no_space(vol, &free, need_clusters))?;
    j.journal_first = journal_clusters[0];
    j.journal_clusters = jn as u32;
    let journal_bytes = j.encode();
    let free_after = (free.count() + freed_clusters + jn) * cb;
    Ok(Layout {
        files,
        content,
        grow,
        pads,
        journal_slot,
        journal_name,
        journal_clusters,
        journal_bytes,
        free_before,
        free_after,
        bytes_to_write,
        items,
    })
}

/// `PIFW.JNL` unless the directory already has that 8.3 name, else `PIFW1.JNL`, ...
fn journal_name(taken: &std::collections::HashSet<[u8; 11]>) -> [u8; 11] {
    for n in 0..1000 {
        let name = if n == 0 {
            *journal::SHORT_NAME
        } else {
            let mut b = [b' '; 11];
            let stem = format!("PIFW{n}");
            b[..stem.len()].copy_from_slice(stem.as_bytes());
            b[8..].copy_from_slice(b"JNL");
            b
        };
        if !taken.contains(&name) {
            return name;
        }
    }
    *journal::SHORT_NAME
}

fn txn_id() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{t:x}-{:x}", std::process::id())
}

/// Computes what [`apply`] would do. Reads only. Refuses with [`TxnError::NoSpace`] when the
/// new content (plus the journal and any directory growth) does not fit in the free clusters:
/// copy-on-write needs room for every new file while the old ones still exist.
pub fn plan<P: Read + Seek>(part: &mut P, changes: &[FileChange]) -> Result<Plan, TxnError> {
    plan_known(part, changes, &KnownOld::new())
}

/// [`plan`], taking the old files' hashes from `known` (as [`ApplyOptions::known_old`]) where
/// they are there. For a plan that is shown, not applied: whoever writes proves first that
/// the card still holds what `known` says.
pub fn plan_known<P: Read + Seek>(
    part: &mut P,
    changes: &[FileChange],
    known: &KnownOld,
) -> Result<Plan, TxnError> {
    let vol = Volume::open(part)?;
    let l = layout(part, &vol, changes, DosTime::from_unix(0), &[], known)?;
    Ok(plan_of(&l))
}

fn plan_of(l: &Layout) -> Plan {
    Plan {
        items: l.items.clone(),
        bytes_to_write: l.bytes_to_write,
        free_before: l.free_before,
        free_after: if l.files.is_empty() {
            l.free_before
        } else {
            l.free_after
        },
    }
}

fn durable<P: Write + Durable>(part: &mut P) -> io::Result<()> {
    part.flush()?;
    part.sync()
}

/// Applies `plan` (from [`plan`] on the same `changes`) crash-safely; see the module doc for
/// the write order. First recovers any interrupted change, then re-plans and refuses if the
/// volume changed since the plan. A no-op plan writes nothing unless a change is pending (then
/// only recovery writes). New content whose size or sha256 differs from its [`FileChange`] is
/// refused before the first write ([`TxnError::ContentMismatch`]). After the change, re-reads the
/// volume through a fresh parse ([`crate::fat::check`] over every chain, then each changed
/// file read through [`crate::fat::with_file`]) and compares every changed file's sha256.
pub fn apply<P: Read + Write + Seek + Durable>(
    part: &mut P,
    plan: &Plan,
    changes: &[FileChange],
    opts: &ApplyOptions,
) -> Result<Applied, TxnError> {
    // A no-op plan writes nothing: recovery runs only for an interrupted change.
    let recovered_first = if plan.is_noop() && pending(part)?.is_none() {
        RecoverOutcome::Nothing
    } else {
        recover(part)?
    };
    let (vol, l, when) = prepare_layout(part, changes, opts)?;
    for (want, now) in plan.items.iter().zip(&l.items) {
        if want != now {
            return Err(TxnError::PlanStale {
                path: want.path.clone(),
                planned: Some(want.action),
                now: Some(now.action),
            });
        }
    }
    if plan.items.len() != l.items.len() {
        return Err(TxnError::PlanStale {
            path: String::new(),
            planned: None,
            now: None,
        });
    }
    write_layout(part, &vol, &l, changes, when, recovered_first)
}

/// Plans and applies `changes` in one pass over the volume: what [`plan`] then [`apply`] do,
/// with the volume laid out (every old file's chain read and hashed) once instead of twice.
/// For a caller that has nothing to show between the two: the plan it would compare against
/// is made here, under the same open. `on_plan` sees the plan before the first write (a
/// progress total, say). Recovers an interrupted change first, as [`apply`] does.
pub fn apply_now<P: Read + Write + Seek + Durable>(
    part: &mut P,
    changes: &[FileChange],
    opts: &ApplyOptions,
    on_plan: &mut dyn FnMut(&Plan),
) -> Result<(Plan, Applied), TxnError> {
    let recovered_first = recover(part)?;
    let (vol, l, when) = prepare_layout(part, changes, opts)?;
    let plan = plan_of(&l);
    on_plan(&plan);
    let applied = write_layout(part, &vol, &l, changes, when, recovered_first)?;
    Ok((plan, applied))
}

/// The volume after recovery, checked writable, with `changes` laid out on it.
fn prepare_layout<P: Read + Write + Seek + Durable>(
    part: &mut P,
    changes: &[FileChange],
    opts: &ApplyOptions,
) -> Result<(Volume, Layout, DosTime), TxnError> {
    let vol = Volume::open(part)?;
    // Why before any write of this change: lost clusters that are not pifw's own may be a
    // hidden file's data, and this change would allocate them.
    check_writable(part)?;
    let when = DosTime::from_unix(
        opts.mtime
            .unwrap_or_else(SystemTime::now)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    let l = layout(
        part,
        &vol,
        changes,
        when,
        &opts.boot_critical,
        &opts.known_old,
    )?;
    Ok((vol, l, when))
}

/// Writes a laid-out change in the crash-safe order of the module doc, then verifies it.
fn write_layout<P: Read + Write + Seek + Durable>(
    part: &mut P,
    vol: &Volume,
    l: &Layout,
    changes: &[FileChange],
    when: DosTime,
    recovered_first: RecoverOutcome,
) -> Result<Applied, TxnError> {
    if l.files.is_empty() {
        return Ok(Applied {
            txn_id: None,
            verified: Vec::new(),
            switch_writes: 0,
            recovered_first,
        });
    }

    // 0. Every new content hashed before the first write: a wrong size or sha256 leaves the
    //    partition byte-identical. This is the one hash of each new byte on its way to the
    //    card: a file source stays open, and step 1 copies from the same handle once its
    //    identity (inode, size, change time) shows nothing wrote to it since. The read-back
    //    after the switch (`verify`) is the independent check of what reached the card.
    let mut held: Vec<Option<HeldSource>> = Vec::with_capacity(l.content.len());
    for (idx, _) in &l.content {
        let change = &changes[*idx];
        let (sha, got, h) = match &change.content {
            NewContent::Bytes(b) => {
                let (sha, got) = write::hash_stream(&mut Cursor::new(b), change.size)?;
                (sha, got, None)
            }
            NewContent::Path(p) => {
                let mut file = open_source(p)?;
                let stamp = source_stamp(p, &file)?;
                let (sha, got) = write::hash_stream(&mut file, change.size)?;
                (sha, got, Some(HeldSource { file, stamp }))
            }
            NewContent::Remove => (String::new(), 0, None),
        };
        if !matches!(change.content, NewContent::Remove) {
            check_content(change, sha, got)?;
        }
        held.push(h);
    }

    // 1. Data into free clusters: invisible to every reader until linked and switched.
    for ((idx, clusters), h) in l.content.iter().zip(held.iter_mut()) {
        let change = &changes[*idx];
        let got = match (&change.content, h) {
            (NewContent::Bytes(b), _) => {
                vol.copy_content(part, clusters, &mut Cursor::new(b), change.size)?
            }
            (NewContent::Path(p), Some(h)) => {
                if source_stamp(p, &h.file)? != h.stamp {
                    return Err(TxnError::Source {
                        path: p.clone(),
                        source: io::Error::other(
                            "the file changed while pifw was writing it to the card",
                        ),
                    });
                }
                h.file.seek(io::SeekFrom::Start(0))?;
                vol.copy_content(part, clusters, &mut h.file, change.size)?
            }
            _ => continue,
        };
        if got != change.size {
            return Err(TxnError::ContentMismatch {
                path: change.path.clone(),
                expected: change.sha256.clone(),
                expected_size: change.size,
                actual: String::from("(not hashed again)"),
                actual_size: got,
            });
        }
    }
    let zero = vec![0u8; vol.cluster_bytes() as usize];
    for &(_, c) in &l.grow {
        part.seek(io::SeekFrom::Start(vol.cluster_offset(c)))?;
        part.write_all(&zero)?;
    }
    // 2. The journal's content, before anything points at it.
    vol.copy_content(
        part,
        &l.journal_clusters,
        &mut Cursor::new(&l.journal_bytes),
        l.journal_bytes.len() as u64,
    )?;
    // 3. Its slot as a deleted entry: recovery can find and free the journal's clusters if a
    //    cut comes before the slot goes live, yet no reader sees a file yet. With it, the
    //    padding in front of new entries (deleted entries too, invisible).
    let mut jentry = write::new_short_entry(
        &l.journal_name,
        0,
        l.journal_clusters[0],
        l.journal_bytes.len() as u32,
        when,
    );
    jentry[0] = 0xE5;
    let mut pre: Vec<(u64, [u8; 32])> = vec![(l.journal_slot, jentry)];
    pre.extend(l.pads.iter().map(|&o| (o, write::DELETED_ENTRY)));
    write::patch_slots(part, vol.sector_bytes(), &pre)?;
    // Why: the slot must be on disk before FSInfo says "unknown" (recovery refreshes FSInfo
    // when it finds a journal slot) and before any FAT edit can allocate what it names.
    durable(part)?;
    // 4. FSInfo "unknown" before the first FAT edit, so no cut leaves a wrong free count.
    if vol.write_fs_info(part, 0xFFFF_FFFF, 0xFFFF_FFFF)? > 0 {
        durable(part)?;
    }
    // 5. Directory growth linked (a zeroed cluster appended: the directory reads the same),
    //    so that the journal's slot is reachable before its clusters are allocated; then the
    //    journal's chain; then its slot live: the intent is durable before any change.
    //    Copy 0 is synced before the others: recovery completes a growth that copy 0 holds
    //    (see `complete_growth`), and copy 0 is the one it reads the root through.
    if !l.grow.is_empty() {
        let mut edits = FatEdits::default();
        grow_links(&mut edits, &l.grow, vol.eoc());
        for copy in 0..vol.fat_copies() {
            if vol.write_fat_copy(part, &edits, copy)? > 0 {
                durable(part)?;
            }
        }
    }
    let mut edits = FatEdits::default();
    edits.link(&l.journal_clusters, vol.eoc());
    vol.write_fat(part, &edits)?;
    durable(part)?;
    jentry[0] = l.journal_name[0];
    write::patch_slots(part, vol.sector_bytes(), &[(l.journal_slot, jentry)])?;
    durable(part)?;

    let j = Journal::decode(&l.journal_bytes).map_err(|t| TxnError::BadJournal { reason: t.0 })?;
    let switch_writes = roll_forward(part, vol, &j)?;

    let verified = verify(part, l)?;
    Ok(Applied {
        txn_id: Some(j.txn_id),
        verified,
        switch_writes,
        recovered_first,
    })
}

/// A file source hashed in step 0, held open for step 1.
struct HeldSource {
    file: std::fs::File,
    stamp: SourceStamp,
}

/// What changes when anything writes to a file: its inode, size and change time. The
/// executor also stamps a change's sources when it plans, and refuses before its first write
/// a source whose stamp moved while the plan waited.
#[derive(Debug, PartialEq, Eq)]
pub struct SourceStamp {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl SourceStamp {
    pub fn of(m: &std::fs::Metadata) -> SourceStamp {
        use std::os::unix::fs::MetadataExt;
        SourceStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            ctime: (m.ctime(), m.ctime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

fn source_stamp(p: &std::path::Path, f: &std::fs::File) -> Result<SourceStamp, TxnError> {
    let m = f.metadata().map_err(|source| TxnError::Source {
        path: p.to_path_buf(),
        source,
    })?;
    Ok(SourceStamp::of(&m))
}

fn open_source(p: &PathBuf) -> Result<std::fs::File, TxnError> {
    std::fs::File::open(p).map_err(|source| TxnError::Source {
        path: p.clone(),
        source,
    })
}

fn check_content(change: &FileChange, sha: String, got: u64) -> Result<(), TxnError> {
    if sha != change.sha256.to_lowercase() || got != change.size {
        return Err(TxnError::ContentMismatch {
            path: change.path.clone(),
            expected: change.sha256.clone(),
            expected_size: change.size,
            actual: sha,
            actual_size: got,
        });
    }
    Ok(())
}

fn verify<P: Read + Seek>(
    part: &mut P,
    l: &Layout,
) -> Result<Vec<(String, Option<FileState>)>, TxnError> {
    if let Err(FatError::Damaged { reason }) = crate::fat::check(part) {
        return Err(TxnError::VerifyFailed {
            path: String::new(),
            expected: None,
            actual: Some(FileState {
                size: 0,
                sha256: reason,
            }),
        });
    }
    // The structure check above walked every chain; only the changed files are read again
    // (through fatfs, a parser independent of the one that wrote them) and hashed.
    let mut out = Vec::new();
    for it in l.items.iter().filter(|i| i.action != Action::Unchanged) {
        let want_path = split_path(&it.path)?.join("/");
        let actual = crate::fat::with_file(part, &want_path, |r| crate::fetch::hash_reader(r))?
            .map(|(sha256, size)| FileState { size, sha256 });
        if actual != it.new {
            return Err(TxnError::VerifyFailed {
                path: it.path.clone(),
                expected: it.new.clone(),
                actual,
            });
        }
        out.push((it.path.clone(), actual));
    }
    Ok(out)
}

fn slot_bytes(s: &str) -> Result<[u8; 32], TxnError> {
    unhex32(s).ok_or_else(|| TxnError::BadJournal {
        reason: format!("slot bytes {s:?} are not 32 hex bytes"),
    })
}

/// Links new chains and directory growth, switches every slot to its new bytes, frees old
/// chains, removes the journal. Returns the number of switch writes.
fn roll_forward<P: Read + Write + Seek + Durable>(
    part: &mut P,
    vol: &Volume,
    j: &Journal,
) -> Result<usize, TxnError> {
    let mut link = FatEdits::default();
    for f in &j.files {
        if let Some(new) = &f.new {
            link.link(&expand(&new.runs), vol.eoc());
        }
    }
    grow_links(&mut link, &j.grow, vol.eoc());
    // Why: chains must be complete in every copy before an entry points at them.
    vol.write_fat(part, &link)?;
    durable(part)?;
    // Why a sync after each sector: the journal's order (the most boot-critical sector first)
    // must hold on a disk that reorders the writes between two syncs.
    let mut switches = 0;
    for sector in by_sector(&j.slots, vol.sector_bytes()) {
        let slots: Vec<(u64, [u8; 32])> = sector
            .iter()
            .map(|s| Ok((s.offset, slot_bytes(&s.new)?)))
            .collect::<Result<_, TxnError>>()?;
        if write::patch_slots(part, vol.sector_bytes(), &slots)? > 0 {
            durable(part)?;
            switches += 1;
        }
    }
    // Why: only now that no entry refers to them can the old chains be freed.
    let mut free = FatEdits::default();
    for f in &j.files {
        if let Some(old) = &f.old {
            free.free(&expand(&old.runs));
        }
    }
    if vol.write_fat(part, &free)? > 0 {
        // Why: the journal must outlive the frees it promises; once its slot is deleted, only
        // its own clusters can still be found.
        durable(part)?;
    }
    finish(part, vol, j)?;
    Ok(switches)
}

/// The journal's slot records grouped by directory sector, in journal order.
fn by_sector(slots: &[SlotRecord], sector_bytes: u64) -> Vec<Vec<&SlotRecord>> {
    let mut out: Vec<(u64, Vec<&SlotRecord>)> = Vec::new();
    for s in slots {
        let sector = s.offset / sector_bytes;
        match out.iter_mut().find(|(x, _)| *x == sector) {
            Some((_, v)) => v.push(s),
            None => out.push((sector, vec![s])),
        }
    }
    out.into_iter().map(|(_, v)| v).collect()
}

/// FAT edits of directory growth: each `(last, new)` links `new` after `last`.
fn grow_links(edits: &mut FatEdits, grow: &[(u32, u32)], eoc: u32) {
    for &(last, new) in grow {
        edits.set(last, new);
        // A later growth of the same directory links this cluster onward.
        if !grow.iter().any(|&(l, _)| l == new) {
            edits.set(new, eoc);
        }
    }
}

/// Restores every slot's old bytes, then frees the new chains (only clusters that still hold
/// what this transaction linked), then removes the journal.
fn roll_back<P: Read + Write + Seek + Durable>(
    part: &mut P,
    vol: &Volume,
    j: &Journal,
) -> Result<(), TxnError> {
    let mut grow = FatEdits::default();
    grow_links(&mut grow, &j.grow, vol.eoc());
    vol.write_fat(part, &grow)?;
    let slots: Vec<(u64, [u8; 32])> = j
        .slots
        .iter()
        .map(|s| Ok((s.offset, slot_bytes(&s.old)?)))
        .collect::<Result<_, TxnError>>()?;
    write::patch_slots(part, vol.sector_bytes(), &slots)?;
    durable(part)?;
    // Why after the restore: until the old entries are back, a new chain may be referenced.
    let mut free = FatEdits::default();
    let mut fat = vol.reader(0);
    for f in &j.files {
        if let Some(new) = &f.new {
            let clusters = expand(&new.runs);
            for (i, &c) in clusters.iter().enumerate() {
                let want = clusters.get(i + 1).copied().unwrap_or(vol.eoc());
                let v = fat.raw(part, c)?;
                if v == 0 || v == want || (i + 1 == clusters.len() && v >= vol.eoc() - 7) {
                    free.set(c, 0);
                }
            }
        }
    }
    if vol.write_fat(part, &free)? > 0 {
        // Why: as in roll_forward, the frees must be on disk while the journal still lives.
        durable(part)?;
    }
    finish(part, vol, j)
}

/// Deletes the journal's slot, frees its clusters, rewrites FSInfo from the FAT, syncing
/// between the three: each step must be on disk before the next can land.
fn finish<P: Read + Write + Seek + Durable>(
    part: &mut P,
    vol: &Volume,
    j: &Journal,
) -> Result<(), TxnError> {
    let mut slot = write::read_slot(part, j.journal_slot)?;
    let live = slot[0] != 0xE5 && slot[0] != 0 && slot[11] & 0x18 == 0;
    if live && slot_first_size(vol, &slot).0 == j.journal_first {
        slot[0] = 0xE5;
        // Why the slot before the clusters: a live entry must never point at free clusters;
        // freed second, a cut leaves lost clusters that the deleted slot still names.
        write::patch_slots(part, vol.sector_bytes(), &[(j.journal_slot, slot)])?;
        durable(part)?;
    }
    let mut edits = FatEdits::default();
    let clusters: Vec<u32> = (j.journal_first..j.journal_first + j.journal_clusters).collect();
    edits.free(&clusters);
    if vol.write_fat(part, &edits)? > 0 {
        // Why: FSInfo counts what is on disk; written before the frees land, it would be wrong.
        durable(part)?;
    }
    refresh_fs_info(part, vol)?;
    durable(part)?;
    Ok(())
}

fn refresh_fs_info<P: Read + Write + Seek>(part: &mut P, vol: &Volume) -> Result<(), TxnError> {
    if vol.fat_type() == FatType::Fat32 {
        let free = vol.free_map(part)?;
        vol.write_fs_info(part, free.count() as u32, free.first_free())?;
    }
    Ok(())
}

/// A directory slot of the root that holds a journal naming that very slot: live (the change
/// is in flight) or deleted (a change cut before its journal went live, or after it was
/// deleted). Recognised by content (the journal's header, checksum, and its record of its own
/// slot and first cluster), never by name: a user's file called `PIFW.JNL` is not one.
struct JournalSlot {
    offset: u64,
    live: bool,
    journal: Journal,
}

fn journal_slots<R: Read + Seek>(part: &mut R, vol: &Volume) -> Result<Vec<JournalSlot>, TxnError> {
    let root = vol.read_dir(part, vol.root())?;
    let mut out = Vec::new();
    for i in 0..root.slot_count() {
        let raw = root.slot(i);
        if raw[0] == 0 {
            break;
        }
        // Long-name pieces, directories and the volume label hold no journal.
        if raw[11] & 0x3F == 0x0F || raw[11] & 0x18 != 0 {
            continue;
        }
        let (first, size) = slot_first_size(vol, &raw);
        if first < 2 || size < journal::MAGIC.len() as u64 || size > write::CHUNK as u64 {
            continue;
        }
        if vol.cluster_offset(first) + vol.cluster_bytes() > vol.geo_volume_bytes() {
            continue;
        }
        let mut magic = vec![0u8; journal::MAGIC.len()];
        part.seek(io::SeekFrom::Start(vol.cluster_offset(first)))?;
        part.read_exact(&mut magic)?;
        if magic != journal::MAGIC {
            continue;
        }
        let offset = root.slot_offset(i);
        if let Ok(j) = read_journal(part, vol, &raw)?
            && j.journal_slot == offset
        {
            out.push(JournalSlot {
                offset,
                live: raw[0] != 0xE5,
                journal: j,
            });
        }
    }
    Ok(out)
}

fn slot_first_size(vol: &Volume, raw: &[u8; 32]) -> (u32, u64) {
    let hi = if vol.fat_type() == FatType::Fat32 {
        u32::from(u16::from_le_bytes([raw[20], raw[21]]))
    } else {
        0
    };
    let lo = u32::from(u16::from_le_bytes([raw[26], raw[27]]));
    (
        hi << 16 | lo,
        u64::from(u32::from_le_bytes([raw[28], raw[29], raw[30], raw[31]])),
    )
}

/// Reads the journal a slot names, straight from its clusters (contiguous by construction).
fn read_journal<R: Read + Seek>(
    part: &mut R,
    vol: &Volume,
    raw: &[u8; 32],
) -> Result<Result<Journal, journal::Torn>, TxnError> {
    let (first, size) = slot_first_size(vol, raw);
    let cb = vol.cluster_bytes();
    if first < 2 || size == 0 || size > write::CHUNK as u64 {
        return Ok(Err(journal::Torn(format!(
            "journal slot names cluster {first}, {size} bytes"
        ))));
    }
    let n = size.div_ceil(cb);
    let clusters: Vec<u32> = (first..first.saturating_add(n as u32)).collect();
    if clusters
        .iter()
        .any(|&c| vol.cluster_offset(c) + cb > vol.geo_volume_bytes())
    {
        return Ok(Err(journal::Torn("journal clusters out of range".into())));
    }
    let mut buf = vec![0u8; size as usize];
    part.seek(io::SeekFrom::Start(vol.cluster_offset(first)))?;
    part.read_exact(&mut buf)?;
    Ok(Journal::decode(&buf).and_then(|j| {
        if j.journal_first == first {
            Ok(j)
        } else {
            Err(journal::Torn(format!(
                "journal names cluster {} but its slot says {first}",
                j.journal_first
            )))
        }
    }))
}

/// Whether every new chain is linked in FAT copy 0 exactly as journaled and hashes right.
fn complete<R: Read + Seek>(part: &mut R, vol: &Volume, j: &Journal) -> Result<bool, TxnError> {
    for f in &j.files {
        let Some(new) = &f.new else { continue };
        let want = expand(&new.runs);
        if want.is_empty() {
            continue;
        }
        let got = match vol.chain(part, new.first_cluster, want.len() as u64) {
            Ok(c) => c,
            Err(WriteError::Damaged { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if got != want {
            return Ok(false);
        }
        if vol.hash_clusters(part, &got, new.size)?.as_deref() != Some(new.sha256.as_str()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reports an interrupted change without writing.
pub fn pending<P: Read + Seek>(part: &mut P) -> Result<Option<JournalSummary>, TxnError> {
    let vol = Volume::open(part)?;
    let Some(s) = journal_slots(part, &vol)?.into_iter().find(|s| s.live) else {
        return Ok(None);
    };
    let j = s.journal;
    Ok(Some(JournalSummary {
        would: if complete(part, &vol, &j)? {
            RecoverOutcome::RolledForward
        } else {
            RecoverOutcome::RolledBack
        },
        txn_id: j.txn_id,
        files: j.files.iter().map(|f| (f.path.clone(), f.action)).collect(),
    }))
}

/// What [`recover`] would do now, rehearsed on an in-memory [`Overlay`] without writing:
/// `Ok(None)` when it would write nothing (no interrupted change and no leftovers of one),
/// else its outcome ([`RecoverOutcome::Nothing`]: only leftovers would be cleaned, e.g. a
/// journal cut before it went live, FAT copies that differ on pifw's own clusters, an unknown
/// FSInfo count, a lost empty directory cluster). [`TxnError::Unsafe`] when recovery would
/// refuse.
pub fn recovery_needed<P: Read + Seek>(part: &mut P) -> Result<Option<RecoverOutcome>, TxnError> {
    let mut ov = Overlay::new(&mut *part);
    let outcome = recover(&mut ov)?;
    Ok(ov.written().then_some(outcome))
}

/// Clusters of a journal's chains (new, old, its own), and the slots it owns.
fn journal_clusters(j: &Journal) -> (HashSet<u32>, HashSet<u64>) {
    let mut clusters: HashSet<u32> =
        (j.journal_first..j.journal_first + j.journal_clusters).collect();
    for f in &j.files {
        for c in [&f.new, &f.old].into_iter().flatten() {
            clusters.extend(expand(&c.runs));
        }
    }
    let mut slots: HashSet<u64> = j.slots.iter().map(|s| s.offset).collect();
    slots.insert(j.journal_slot);
    (clusters, slots)
}

/// Evidence that the volume changed under an interrupted change in a way recovery cannot
/// undo safely: an entry outside the journal reaches one of its clusters, or one of its slots
/// holds neither its old nor its new bytes. Empty when recovery may proceed.
fn tampered<R: Read + Seek>(
    part: &mut R,
    vol: &Volume,
    j: &Journal,
) -> Result<Vec<String>, TxnError> {
    let mut evidence = Vec::new();
    for s in &j.slots {
        let now = write::read_slot(part, s.offset)?;
        if now != slot_bytes(&s.old)? && now != slot_bytes(&s.new)? {
            evidence.push(format!(
                "the directory slot at byte {} holds neither the old nor the new entry the journal recorded",
                s.offset
            ));
        }
    }
    let (clusters, slots) = journal_clusters(j);
    let owners = safety::walk(part, vol, &slots, &clusters)?;
    for (c, path) in owners.watched.iter().take(8) {
        let what = j
            .files
            .iter()
            .find_map(|f| {
                if f.new.as_ref().is_some_and(|n| expand(&n.runs).contains(c)) {
                    Some(format!("the new {}", f.path))
                } else if f.old.as_ref().is_some_and(|o| expand(&o.runs).contains(c)) {
                    Some(format!("the old {}", f.path))
                } else {
                    None
                }
            })
            .unwrap_or_else(|| "the journal".to_string());
        evidence.push(format!(
            "{path} uses cluster {c}, which the interrupted change holds for {what}"
        ));
    }
    Ok(evidence)
}

/// Whether every new chain can be linked as journaled: each of its clusters is, in every FAT
/// copy, free or already linked as journaled, and its content hashes to the new sha256. True
/// after `fsck.fat -a` freed the chains of a change whose slots were already switching.
fn relinkable<R: Read + Seek>(part: &mut R, vol: &Volume, j: &Journal) -> Result<bool, TxnError> {
    for f in &j.files {
        let Some(new) = &f.new else { continue };
        let want = expand(&new.runs);
        for copy in 0..vol.fat_copies() {
            let mut fat = vol.reader(copy);
            for (i, &c) in want.iter().enumerate() {
                let v = fat.raw(part, c)?;
                let linked = match want.get(i + 1) {
                    Some(&next) => v == next,
                    None => v >= vol.eoc() - 7,
                };
                if v != 0 && !linked {
                    return Ok(false);
                }
            }
        }
        if vol.hash_clusters(part, &want, new.size)?.as_deref() != Some(new.sha256.as_str()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Finishes or undoes an interrupted change (see the module doc); safe to cut and re-run.
/// Before its first write it proves that nothing outside the journal reaches the clusters it
/// will link or free, and that every journaled slot holds its old or new bytes; else
/// [`TxnError::Unsafe`], with the evidence, and nothing written.
pub fn recover<P: Read + Write + Seek + Durable>(part: &mut P) -> Result<RecoverOutcome, TxnError> {
    let vol = Volume::open(part)?;
    let mut outcome = RecoverOutcome::Nothing;
    let slots = journal_slots(part, &vol)?;
    let mut live_first = None;
    if let Some(s) = slots.iter().find(|s| s.live) {
        let j = &s.journal;
        live_first = Some(j.journal_first);
        let evidence = tampered(part, &vol, j)?;
        if !evidence.is_empty() {
            return Err(TxnError::Unsafe {
                txn_id: j.txn_id.clone(),
                evidence,
            });
        }
        let switched = j
            .slots
            .iter()
            .map(|r| Ok(write::read_slot(part, r.offset)? == slot_bytes(&r.new)? && r.new != r.old))
            .collect::<Result<Vec<bool>, TxnError>>()?
            .into_iter()
            .any(|b| b);
        if complete(part, &vol, j)? {
            roll_forward(part, &vol, j)?;
            outcome = RecoverOutcome::RolledForward;
        } else if switched {
            // Some entries already point at new chains that are no longer linked: not a state
            // pifw's own order leaves (the chains are linked and synced before any switch), so
            // something freed them. Finishing is safe only when every new chain is intact.
            if !relinkable(part, &vol, j)? {
                return Err(TxnError::Unsafe {
                    txn_id: j.txn_id.clone(),
                    evidence: vec![
                        "some files already point at their new clusters, but the FAT no longer links them as the change wrote them, and their content does not hash to the new files".into(),
                    ],
                });
            }
            roll_forward(part, &vol, j)?;
            outcome = RecoverOutcome::RolledForward;
        } else {
            roll_back(part, &vol, j)?;
            outcome = RecoverOutcome::RolledBack;
        }
    }
    // Deleted journal slots whose clusters are still allocated and still hold that journal.
    let mut swept = false;
    for s in journal_slots(part, &vol)?.into_iter().filter(|s| !s.live) {
        let j = &s.journal;
        if Some(j.journal_first) == live_first {
            continue;
        }
        let clusters: Vec<u32> = (j.journal_first..j.journal_first + j.journal_clusters).collect();
        // Someone else's now (fsck.fat salvaged it into a file, or a file was written over
        // it): leave every copy alone.
        let owned = safety::walk(
            part,
            &vol,
            &HashSet::from([s.offset]),
            &clusters.iter().copied().collect(),
        )?;
        if !owned.watched.is_empty() {
            continue;
        }
        swept |= complete_growth(part, &vol, &j.grow)?;
        // Ours: linked as the journal chain in some copy; foreign: anything else but free in
        // any copy (someone else owns the cluster now: leave every copy alone).
        let (mut ours, mut foreign) = (false, false);
        for copy in 0..vol.fat_copies() {
            let mut fat = vol.reader(copy);
            for (i, &c) in clusters.iter().enumerate() {
                let v = fat.raw(part, c)?;
                let linked = match clusters.get(i + 1) {
                    Some(&next) => v == next,
                    None => v >= vol.eoc() - 7,
                };
                match (v, linked) {
                    (0, _) => {}
                    (_, true) => ours = true,
                    (_, false) => foreign = true,
                }
            }
        }
        if ours && !foreign {
            let mut edits = FatEdits::default();
            edits.free(&clusters);
            vol.write_fat(part, &edits)?;
            // Why: FSInfo is recounted below from what must already be on disk.
            durable(part)?;
            swept = true;
        }
    }
    swept |= sweep_lost_dirs(part, &vol)?;
    // An "unknown" free count is recomputed whatever set it: a cut between step 4 and the
    // growth of a full root (step 5) leaves it with no journal slot reachable yet.
    let unknown = vol.fs_info_free(part)? == Some(0xFFFF_FFFF);
    if swept || unknown {
        refresh_fs_info(part, &vol)?;
        durable(part)?;
    }
    Ok(outcome)
}

/// Frees lost clusters that hold an empty directory of their own (`.` naming the cluster,
/// `..`, nothing else) and are a one-cluster chain or free in each copy: what
/// [`create_dirs`] leaves when cut before the directory's entry is written. Such a cluster
/// holds no data, so freeing it loses nothing whoever made it. Returns whether it wrote.
fn sweep_lost_dirs<P: Read + Write + Seek + Durable>(
    part: &mut P,
    vol: &Volume,
) -> Result<bool, TxnError> {
    let owners = safety::walk(part, vol, &HashSet::new(), &HashSet::new())?;
    let lost = safety::lost(part, vol, &owners.used)?;
    let cb = vol.cluster_bytes() as usize;
    let mut edits = FatEdits::default();
    let mut buf = vec![0u8; cb];
    for (&c, vals) in &lost {
        if !vals.iter().all(|&v| v == 0 || v >= vol.eoc() - 7) {
            continue;
        }
        part.seek(io::SeekFrom::Start(vol.cluster_offset(c)))?;
        part.read_exact(&mut buf)?;
        let (first, _) = slot_first_size(vol, buf[..32].try_into().unwrap_or(&[0u8; 32]));
        let dot = &buf[..11] == b".          " && buf[11] & 0x10 != 0 && first == c;
        let dotdot = &buf[32..43] == b"..         " && buf[43] & 0x10 != 0;
        if dot && dotdot && buf[64..].iter().all(|&b| b == 0) {
            edits.free(&[c]);
        }
    }
    if edits.is_empty() || vol.write_fat(part, &edits)? == 0 {
        return Ok(false);
    }
    durable(part)?;
    Ok(true)
}

/// Finishes the directory growth of a journal whose slot never went live (a cut inside step
/// 5 of [`apply`], between the FAT copies): when some copy links a grown cluster and every copy
/// holds either that link or the directory's old end, with the grown cluster free or ending
/// the chain, every copy gets the links. Anything else (the directory changed since) is left
/// alone. Returns whether it wrote.
fn complete_growth<P: Read + Write + Seek + Durable>(
    part: &mut P,
    vol: &Volume,
    grow: &[(u32, u32)],
) -> Result<bool, TxnError> {
    let eoc = |v: u32| v >= vol.eoc() - 7;
    let (mut linked, mut plausible) = (false, true);
    for &(last, new) in grow {
        let next = grow.iter().find(|&&(l, _)| l == new).map(|&(_, n)| n);
        for copy in 0..vol.fat_copies() {
            let mut fat = vol.reader(copy);
            let (vl, vn) = (fat.raw(part, last)?, fat.raw(part, new)?);
            linked |= vl == new;
            plausible &= (vl == new || eoc(vl)) && (vn == 0 || eoc(vn) || Some(vn) == next);
        }
    }
    if !(linked && plausible) {
        return Ok(false);
    }
    let mut edits = FatEdits::default();
    grow_links(&mut edits, grow, vol.eoc());
    if vol.write_fat(part, &edits)? == 0 {
        return Ok(false);
    }
    durable(part)?;
    Ok(true)
}

#[cfg(test)]
mod tests;
