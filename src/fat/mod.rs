//! FAT12/16/32: structure checks and the file inventory.
//!
//! OWNED BY: the FAT work. This file is a stub with the agreed interface.
//!
//! Works on the partition's byte range as any `Read + Seek` (use `fscommon::StreamSlice` over the
//! disk). Never loads the partition into memory; hashes stream through a fixed buffer. Never
//! writes: the `fatfs` crate wants `Read + Write + Seek`, so reads go through a wrapper whose
//! writes fail.

use crate::finding::Finding;
use serde::Serialize;
use std::io::{self, Read, Seek};

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
}

/// Checks the boot sector and every cluster chain reachable from the root (loops, cross-links,
/// chains that end early or run past the file size, clusters out of range). Returns the volume
/// facts and findings for survivable problems (lost clusters, dirty flag, FAT copies that
/// differ); returns `Err(Damaged)` when reading the files would be unsafe (a looping chain).
pub fn check<R: Read + Seek>(_part: &mut R) -> Result<(FatInfo, Vec<Finding>), FatError> {
    unimplemented!("FAT checker")
}

/// Lists every file with its size and streamed sha256. Call [`check`] first.
pub fn inventory<R: Read + Seek>(_part: &mut R) -> Result<Inventory, FatError> {
    unimplemented!("FAT inventory")
}

/// Reads one small file (e.g. `config.txt`), case-insensitively by path. `Ok(None)` if absent;
/// an error if it is larger than `max_bytes`.
pub fn read_small_file<R: Read + Seek>(
    _part: &mut R,
    _path: &str,
    _max_bytes: u64,
) -> Result<Option<Vec<u8>>, FatError> {
    unimplemented!("FAT small-file reader")
}

/// Opens one file, case-insensitively by path, and hands `f` a streaming reader of its content.
/// `Ok(None)` if absent. For probing binaries without loading them into memory.
pub fn with_file<R: Read + Seek, T>(
    _part: &mut R,
    _path: &str,
    _f: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> Result<Option<T>, FatError> {
    unimplemented!("FAT streaming reader")
}
