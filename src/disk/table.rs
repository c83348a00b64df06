//! Partition tables: MBR, GPT and hybrid GPT/MBR, read and validated.
//!
//! OWNED BY: the partition-table work. This file is a stub with the agreed interface.
//!
//! Works on any `Read + Seek` (an image file, a block device, an in-memory cursor); never writes.

use crate::finding::Finding;
use serde::Serialize;
use std::io::{Read, Seek};

/// Logical sector size pifw supports (SD cards and images are 512-byte sectors).
pub const SECTOR: u64 = 512;

/// Which kind of table the disk carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// No valid MBR signature (0x55AA) at LBA 0.
    None,
    /// A plain MBR (no 0xEE entry).
    Mbr,
    /// GPT with a protective MBR (a single 0xEE entry covering the disk).
    Gpt,
    /// GPT plus an MBR holding 0xEE and up to three partitions mirrored from the GPT.
    Hybrid,
}

/// One primary MBR entry (extended/logical partitions are listed too, slot >= 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MbrEntry {
    /// 1-based slot: 1..=4 primary, 5.. logical.
    pub slot: u32,
    pub bootable: bool,
    pub type_byte: u8,
    pub start_lba: u64,
    pub sectors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MbrInfo {
    /// Disk signature at offset 440 (the `label-id` of sfdisk; PARTUUID prefix on Linux).
    pub disk_signature: u32,
    /// Used entries only, in slot order.
    pub entries: Vec<MbrEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GptEntry {
    /// 1-based index in the partition entry array.
    pub index: u32,
    /// Type GUID, uppercase canonical text form (e.g. `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`).
    pub type_guid: String,
    /// Unique partition GUID, uppercase canonical text form (Linux PARTUUID, lowercased).
    pub unique_guid: String,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GptInfo {
    pub disk_guid: String,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    /// Primary header at LBA 1 and its entry array are valid (signature, CRCs).
    pub primary_valid: bool,
    /// Backup header at the last LBA and its entry array are valid.
    pub backup_valid: bool,
    /// Used entries only, in index order (from the primary, or the backup if the primary is bad).
    pub entries: Vec<GptEntry>,
}

/// Everything read from the partition tables, plus what validation found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub kind: TableKind,
    pub disk_bytes: u64,
    pub mbr: Option<MbrInfo>,
    pub gpt: Option<GptInfo>,
    /// Problems found: bad CRCs, overlaps, out-of-bounds entries, 0xEE misplaced, hybrid drift...
    pub findings: Vec<Finding>,
}

/// Where the Pi boot ROM would look for `bootcode.bin`, per its rules (MBR only, slot 1, FAT type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirmwarePartition {
    /// MBR slot (1-based) holding the FAT partition; `None` when only found through the GPT.
    pub mbr_slot: Option<u32>,
    /// Matching GPT entry index, if the disk has a GPT.
    pub gpt_index: Option<u32>,
    /// MBR type byte, when in the MBR.
    pub type_byte: Option<u8>,
    pub offset_bytes: u64,
    pub size_bytes: u64,
    /// Whether a Pi 3's boot ROM can boot from it (MBR slot 1, type 0x0B/0x0C/0x0E, not 0xEF).
    pub pi3_rom_bootable: bool,
}

/// Errors that stop reading the tables altogether (I/O, disk too small). Structural problems
/// are [`Finding`]s in the [`Layout`], not errors, so status can still report them.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("reading the partition table: {0}")]
    Io(#[from] std::io::Error),
    #[error("the disk is {bytes} bytes, too small to hold a partition table")]
    TooSmall { bytes: u64 },
}

/// Reads and validates the tables of a disk of `disk_bytes` bytes.
pub fn read_layout<R: Read + Seek>(_disk: &mut R, _disk_bytes: u64) -> Result<Layout, TableError> {
    unimplemented!("partition table reader")
}

/// Locates the firmware partition by the Pi boot ROM's rules. Adds findings explaining why a
/// Pi 3 could not boot the card (pure GPT, type 0xEF, FAT not in slot 1) to `findings`.
pub fn locate_firmware(
    _layout: &Layout,
    _findings: &mut Vec<Finding>,
) -> Option<FirmwarePartition> {
    unimplemented!("firmware partition locator")
}
