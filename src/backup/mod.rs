//! Backups of what a change replaces, so any machine holding the card can undo it.
//!
//! A backup is one zip file (the old files stored, not compressed, the manifest and table
//! sectors deflated: see `write.rs` for the measured reasons; older backups, all deflated,
//! read the same), self-describing and portable:
//!
//! - the old content of every file the change replaces, as a member named by its FAT path
//!   (`config.txt`, `overlays/foo.dtbo`), so `unzip` alone recovers it;
//! - [`MANIFEST_NAME`] (`pifw-backup.json`, a [`Manifest`]): format version, backup id,
//!   creation time, pifw version, the command line, the card's identity, and for each path
//!   whether it existed before (a file the change adds is recorded as absent, so rollback
//!   removes it), its size and sha256, and what the change is meant to leave there;
//! - optionally raw partition-table sectors under `pifw-tables/` ([`Tables`]), for changes
//!   to the table itself.
//!
//! The pieces: [`BackupWriter`] streams files into a new zip and verifies it when finished;
//! [`Backup::open`] reads a backup and checks every member against the manifest (a verified
//! backup is the precondition for a change to proceed); [`Backup::restore_plan`] turns it into
//! data for the transaction engine; [`list`] and [`prune`] manage a backup directory.
//!
//! # Which card a backup belongs to
//!
//! [`CardIdentity`] records the card's own id ([`card_id`]: `PIFW-ID.TXT`, created with the
//! first change pifw makes to a card, before that change's first other write), the MBR disk
//! signature, GPT disk GUID, FAT volume id and label, and the firmware partition's place. Only
//! the card id is unique: every card flashed from the same NixOS sd-image has disk signature
//! and FAT volume id `0x2178694e` (nixpkgs' fixed `firmwarePartitionID`). A backup that
//! records a card id belongs only to the card carrying that id; a backup without one (an
//! older pifw's) is pre-selected by the shared identifiers. Either way a backup also records
//! what the change left in each file ([`FileRecord::after`]), and [`chain`] decides which
//! candidates are the card's own history from that content; each [`RestoreStep`] carries it
//! too, so that a restore can check the card still holds what this change wrote.
//!
//! Must not: write to the card, print, or delete anything unless told ([`prune`]).

pub mod card_id;
pub mod found;
mod read;
pub mod rescue;
mod store;
mod write;

pub use read::{Backup, Content, MemberCheck, RestoreAction, RestoreStep, TableContent};
pub use store::{Chain, Listing, PruneMode, Summary, chain, list, prune};
pub use write::BackupWriter;

/// A file on the card whose bytes a backed-up change installed from a Debian archive release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileProvenance {
    /// The path as the backup records it.
    pub path: String,
    pub sha256: String,
    /// The backup that records the change.
    pub backup_id: String,
    pub provenance: crate::fetch::ArchiveProvenance,
}

/// Where the card's files came from, as far as its backups say: for each `(path, sha256)` on
/// the card, the newest backup (`backups` newest first) whose change left exactly those bytes
/// at that path; reported when that backup records a Debian archive provenance. Only content
/// decides (a card cloned from another shares its identifiers): bytes that no backup left
/// there, or that the newest such backup installed from another source, get nothing.
pub fn provenance_of(backups: &[Manifest], card: &[(&str, &str)]) -> Vec<FileProvenance> {
    let mut out = Vec::new();
    for (path, sha) in card {
        let newest = backups.iter().find(|m| {
            m.files.iter().any(|f| {
                f.path.eq_ignore_ascii_case(path)
                    && f.after.as_ref().is_some_and(|a| a.sha256 == *sha)
            })
        });
        if let Some(m) = newest
            && let Some(p) = &m.provenance
        {
            out.push(FileProvenance {
                path: path.to_string(),
                sha256: sha.to_string(),
                backup_id: m.id.clone(),
                provenance: p.clone(),
            });
        }
    }
    out
}

use serde::{Deserialize, Serialize};
use std::io::{self, Read};
use std::path::PathBuf;

/// Version of the backup format this pifw writes and reads. A backup with a higher number is
/// refused: fields may be added within a version only when ignoring them is safe.
pub const FORMAT: u32 = 1;

/// Name of the manifest member.
pub const MANIFEST_NAME: &str = "pifw-backup.json";

/// Directory (inside the zip) of partition-table members.
pub const TABLES_DIR: &str = "pifw-tables/";

/// Largest manifest pifw reads.
const MANIFEST_CAP: u64 = 4 * 1024 * 1024;

/// Backup file names: `pifw-<id>.zip`.
const FILE_PREFIX: &str = "pifw-";
const FILE_SUFFIX: &str = ".zip";

/// `pifw-backup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`] when written.
    pub format: u32,
    /// `YYYYMMDDTHHMMSS.mmmZ-xxxxxx`: UTC time to the millisecond, then 6 hex digits of a hash of the time in
    /// nanoseconds, pid, command and card; sorts by creation time.
    pub id: String,
    /// RFC 3339, UTC, e.g. `2026-11-03T14:25:01Z`.
    pub created: String,
    pub pifw_version: String,
    /// The command line that made the change.
    pub command: Vec<String>,
    pub card: CardIdentity,
    /// Every path the change touches, in the order recorded.
    pub files: Vec<FileRecord>,
    /// Directories the change creates (rollback removes them when empty), parents first.
    #[serde(default)]
    pub dirs_absent_before: Vec<String>,
    pub tables: Option<Tables>,
    /// The kind of change this backup undoes ([`ChangeKind`]'s names: `update-firmware`,
    /// `switch-uefi`, ...). Absent in backups made before pifw recorded it; readers then fall
    /// back to the command line.
    #[serde(default)]
    pub change: Option<String>,
    /// One id for every backup one pifw run made: a composite change (`switch uefi
    /// --hybrid`: the files, then the table) leaves two backups that are undone together.
    /// Absent in backups made before pifw recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// How what the change installed was verified, when pifw resolved it through a Debian
    /// archive (`verified_by` "the Debian archive signature", suite, package, version, signing
    /// key): the files it installed are the `after` states of [`Manifest::files`]. Absent for
    /// every other source (the manifests' pins, `--from`); older pifw ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<crate::fetch::ArchiveProvenance>,
}

/// What a change was, as its backup records it. `switch uboot` finds the backups of the last
/// `switch uefi` by this, not by the words of a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    UpdateFirmware,
    UpdateUboot,
    /// The files of `switch uefi`, and the table of `switch uefi --hybrid`.
    SwitchUefi,
    /// `update-uefi`: another pftf release on a card already on UEFI.
    UpdateUefi,
    PartitionHybrid,
    /// A rollback, and `partition mbr` (a restore of saved table sectors).
    Rollback,
}

impl ChangeKind {
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::UpdateFirmware => "update-firmware",
            ChangeKind::UpdateUboot => "update-uboot",
            ChangeKind::SwitchUefi => "switch-uefi",
            ChangeKind::UpdateUefi => "update-uefi",
            ChangeKind::PartitionHybrid => "partition-hybrid",
            ChangeKind::Rollback => "rollback",
        }
    }
}

impl Manifest {
    /// Whether this backup undoes a `switch uefi` (by its recorded kind; for backups made
    /// before kinds were recorded, by its command line).
    /// Whether `other` was made by the same pifw run as this backup (both parts of one
    /// composite change). Backups from before the run was recorded: the same command line.
    pub fn same_run(&self, other: &Manifest) -> bool {
        match (&self.run, &other.run) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.command == other.command,
            _ => false,
        }
    }

    pub fn undoes_switch_uefi(&self) -> bool {
        match &self.change {
            Some(kind) => kind == ChangeKind::SwitchUefi.name(),
            None => self
                .command
                .windows(2)
                .any(|w| w[0] == "switch" && w[1] == "uefi"),
        }
    }
}

/// What identifies the card (see the module doc: not uniquely).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardIdentity {
    /// The card's own id ([`card_id`]), when it carried one (or got one with this change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_id: Option<String>,
    /// MBR disk signature (LBA 0, offset 440) as `0x` + 8 hex digits.
    pub mbr_disk_signature: Option<String>,
    /// GPT disk GUID, lowercase.
    pub gpt_disk_guid: Option<String>,
    /// FAT volume id as `0x` + 8 hex digits.
    pub fat_volume_id: Option<String>,
    pub fat_label: Option<String>,
    pub firmware_offset_bytes: u64,
    pub firmware_size_bytes: u64,
}

impl CardIdentity {
    /// The card's identity as a status report shows it.
    pub fn of_report(report: &crate::status::Report) -> CardIdentity {
        let fw = report.firmware.as_ref();
        CardIdentity {
            card_id: fw.and_then(|f| f.card_id.clone()),
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

    /// Whether a backup that recorded `self` may belong to `card` (the card as it is now).
    ///
    /// The card id decides when the backup has one: the same id, or not this card (a card
    /// without an id never made a backup that names one: the id is on the card before any
    /// write of the change it belongs to). A backup without a card id (made by an older pifw)
    /// is pre-selected by the disk identifiers: no identifier both record disagrees, and at
    /// least one strong identifier (non-zero disk signature, GPT GUID, FAT volume id) agrees.
    /// Labels and the partition's place are not compared: the label is the same on every card
    /// of a distribution, and the place may change with the table.
    pub fn same_card(&self, card: &CardIdentity) -> bool {
        if let Some(mine) = &self.card_id {
            return card
                .card_id
                .as_deref()
                .is_some_and(|c| c.eq_ignore_ascii_case(mine));
        }
        self.disk_ids_match(card)
    }

    /// The rule for backups without a card id: no identifier both record disagrees, and at
    /// least one strong identifier agrees (see [`CardIdentity::same_card`]).
    pub fn disk_ids_match(&self, other: &CardIdentity) -> bool {
        let norm = |s: &Option<String>| {
            s.as_deref()
                .map(str::to_ascii_lowercase)
                .filter(|s| s != "0x00000000")
        };
        let pairs = [
            (
                norm(&self.mbr_disk_signature),
                norm(&other.mbr_disk_signature),
            ),
            (norm(&self.gpt_disk_guid), norm(&other.gpt_disk_guid)),
            (norm(&self.fat_volume_id), norm(&other.fat_volume_id)),
        ];
        let mut agree = false;
        for (a, b) in pairs {
            if let (Some(a), Some(b)) = (a, b) {
                if a != b {
                    return false;
                }
                agree = true;
            }
        }
        agree
    }

    /// A key grouping backups for retention: the card id, or else the strong identifiers as
    /// recorded.
    fn key(&self) -> String {
        if let Some(id) = &self.card_id {
            return format!("card:{}", id.to_ascii_lowercase());
        }
        format!(
            "{}/{}/{}",
            self.mbr_disk_signature.as_deref().unwrap_or("-"),
            self.gpt_disk_guid.as_deref().unwrap_or("-"),
            self.fat_volume_id.as_deref().unwrap_or("-")
        )
        .to_ascii_lowercase()
    }
}

/// A file's content, by size and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub size: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
}

/// One path the change touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// FAT path, `/`-separated, relative to the partition root; also the zip member name.
    pub path: String,
    /// The content before the change; `None`: the file did not exist (the change adds it).
    pub before: Option<FileState>,
    /// What the change is meant to leave there; `None` when the change removes the file or
    /// the caller did not say.
    pub after: Option<FileState>,
}

/// Raw partition-table sectors, each a member under [`TABLES_DIR`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tables {
    pub sector_size: u32,
    pub disk_size_bytes: u64,
    pub regions: Vec<TableRegion>,
}

/// A byte range of the disk, saved verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRegion {
    /// e.g. `lba0`, `gpt-primary` (LBA 1-33), `gpt-backup` (the last 33 sectors).
    pub name: String,
    pub offset_bytes: u64,
    pub size: u64,
    pub sha256: String,
}

impl TableRegion {
    /// The zip member holding this region.
    pub fn member(&self) -> String {
        format!("{TABLES_DIR}{}.bin", self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a readable zip: {source}")]
    Zip {
        path: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("{path}: {MANIFEST_NAME} is missing; not a pifw backup")]
    NoManifest { path: PathBuf },
    #[error("{path}: {MANIFEST_NAME} is unreadable: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error(
        "{path}: backup format {found} is newer than this pifw understands ({FORMAT}); use a newer pifw"
    )]
    NewerFormat { path: PathBuf, found: u32 },
    #[error("{path}: member {member} is listed in the manifest but missing from the zip")]
    MissingMember { path: PathBuf, member: String },
    #[error("{path}: member {member} is not listed in the manifest")]
    UnexpectedMember { path: PathBuf, member: String },
    #[error(
        "{path}: {member}: sha256 {actual} ({actual_size} bytes), manifest says {expected} ({expected_size} bytes)"
    )]
    HashMismatch {
        path: PathBuf,
        member: String,
        expected: String,
        expected_size: u64,
        actual: String,
        actual_size: u64,
    },
    #[error("{path}: `{name}` is not a usable FAT path: {reason}")]
    BadPath {
        path: PathBuf,
        name: String,
        reason: &'static str,
    },
    #[error("{path}: `{name}` is recorded twice (FAT names are case-insensitive)")]
    DuplicatePath { path: PathBuf, name: String },
}

/// Checks a FAT path as recorded in a backup: relative, `/`-separated, no empty, `.` or `..`
/// components, no backslash or NUL, and not one of the backup's own names.
fn check_fat_path(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.starts_with('/') {
        return Err("absolute");
    }
    if name.contains(['\\', '\0']) {
        return Err("contains a backslash or NUL");
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("has an empty, `.` or `..` component");
    }
    if name.eq_ignore_ascii_case(MANIFEST_NAME)
        || name
            .to_ascii_lowercase()
            .starts_with(&TABLES_DIR.to_ascii_lowercase())
    {
        return Err("collides with the backup's own members");
    }
    Ok(())
}

use crate::digest::{Hashing, hex};

/// The state of everything a [`Hashing`] reader has seen, after draining the rest.
fn drained<R: Read>(h: Hashing<R>) -> io::Result<FileState> {
    let (sha256, size) = h.drain()?;
    Ok(FileState { size, sha256 })
}

#[cfg(test)]
mod tests;
