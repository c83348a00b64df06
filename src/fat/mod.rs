//! FAT12/16/32: structure checks and the file inventory.
//!
//! Works on the partition's byte range as any `Read + Seek` (use `fscommon::StreamSlice` over the
//! disk). Never loads the partition into memory; hashes stream through a fixed buffer. Never
//! writes: the `fatfs` crate wants `Read + Write + Seek`, so reads go through a wrapper whose
//! writes fail.
//!
//! The pieces:
//!
//! - [`boot_sector`]: the BPB, validated, and the byte layout derived from it; the FAT type comes
//!   from the cluster count (fatgen103 section 3.5), never from the `FilSysType` string.
//! - [`table`]: FAT entries read through a small window.
//! - [`dir_entry`]: raw directory entries and long names, for the checker's own walk.
//! - [`check`](mod@check): the structure checker. `fatfs` cannot see cluster chains, so the
//!   checker walks the tree itself and follows every chain.
//! - [`readonly`] and [`files`]: the `fatfs`-based inventory and small-file reads.
//!
//! Call [`check()`] before [`inventory`] or [`read_small_file`]: those trust the chains (they
//! are bounded, so a damaged volume makes them fail, not hang).

mod boot_sector;
mod check;
mod dir_entry;
mod files;
mod readonly;
mod table;

use crate::finding::Finding;
use serde::Serialize;
use std::io::{Read, Seek};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FatType {
    #[serde(rename = "FAT12")]
    Fat12,
    #[serde(rename = "FAT16")]
    Fat16,
    #[serde(rename = "FAT32")]
    Fat32,
}

/// What the boot sector and FAT say about the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FatInfo {
    pub fat_type: FatType,
    /// Volume label from the boot sector (trailing spaces trimmed), `None` if `NO NAME`/empty.
    pub label: Option<String>,
    pub volume_id: u32,
    pub cluster_bytes: u64,
    /// Size of the data area (clusters × cluster size).
    pub total_bytes: u64,
    /// Free clusters × cluster size, counted from the FAT (not trusted from FSInfo).
    pub free_bytes: u64,
    /// The volume's dirty flag is set (not cleanly unmounted).
    pub dirty: bool,
}

/// One regular file on the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Path relative to the volume root, `/`-separated, as stored (long name when present),
    /// e.g. `bootcode.bin`, `overlays/vc4-kms-v3d.dtbo`.
    pub path: String,
    pub size: u64,
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
}

/// Every file and directory on the volume, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub files: Vec<FileEntry>,
    /// Directory paths, e.g. `overlays`, `EFI/BOOT`.
    pub dirs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("reading the FAT volume: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a FAT volume: {reason}")]
    NotFat { reason: String },
    #[error("the FAT volume is damaged: {reason}")]
    Damaged { reason: String },
    #[error("{path} is {size} bytes, more than the {max_bytes} bytes pifw reads into memory")]
    TooLarge {
        path: String,
        size: u64,
        max_bytes: u64,
    },
}

/// Checks the boot sector and every cluster chain reachable from the root (loops, cross-links,
/// chains that end early or run past the file size, clusters out of range). Returns the volume
/// facts and findings for survivable problems (lost clusters, dirty flag, FAT copies that
/// differ); returns `Err(Damaged)` when reading the files would be unsafe (a looping chain).
///
/// Finding codes: `fat-dirty`, `fat-io-error-flag`, `fat-lost-clusters`, `fat-bad-clusters`,
/// `fat-copies-differ`, `fat-file-truncated` (error), `fat-chain-too-long`, `fat-dot-entry`,
/// `fat-directory-too-large`, `fat-fsinfo-invalid`, `fat-fsinfo-stale`.
pub fn check<R: Read + Seek>(part: &mut R) -> Result<(FatInfo, Vec<Finding>), FatError> {
    check::check(part)
}

/// Lists every file with its size and streamed sha256. Call [`check`] first.
/// Names are as `fatfs` returns them (long name, else the 8.3 name with the NT lower-case
/// flags applied, which is also what `mdir` shows).
pub fn inventory<R: Read + Seek>(part: &mut R) -> Result<Inventory, FatError> {
    files::inventory(part)
}

/// Reads one small file (e.g. `config.txt`), case-insensitively by path. `Ok(None)` if absent;
/// [`FatError::TooLarge`] if it is larger than `max_bytes`. A directory at `path` counts as
/// absent. Each path component matches the long name or the 8.3 alias.
pub fn read_small_file<R: Read + Seek>(
    part: &mut R,
    path: &str,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, FatError> {
    files::read_small_file(part, path, max_bytes)
}
