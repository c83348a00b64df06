//! Partition tables: MBR, GPT and hybrid GPT/MBR, read and validated; and the Pi boot ROM's
//! rules for which partition it boots from.
//!
//! This module owns everything between "here are the bytes of a disk" and "these are its
//! partitions, this is what is wrong with them, and this is the partition a Pi 3 would boot".
//! It works on any `Read + Seek` (an image file, a block device, an in-memory cursor) and never
//! writes, except [`convert`], the one writer of partition tables (MBR to GPT plus hybrid MBR,
//! and putting saved table sectors back), which reads its results back through this parser.
//! Structural problems become [`Finding`]s with stable codes; only I/O failures and a disk
//! too small to hold LBA 0 are errors, so `status` can always report what it saw.
//!
//! # Why the tables are parsed here and not by `mbrman`/`gptman`
//!
//! Both crates are built to edit healthy tables, and on corrupted input they either stop at the
//! first problem or fail in ways pifw cannot afford:
//!
//! - `gptman::GPT::read_from` falls back to the backup header when the primary is bad without
//!   saying so, and never looks at the backup when the primary is good, so neither "primary bad,
//!   backup good" nor "backup bad" can be reported. It also reserves
//!   `number_of_partition_entries` entries up front (a header claiming 2^32 entries aborts the
//!   process on allocation) and asserts that `count * size` matches what it read (a panic on an
//!   entry size other than 128), and rejects header sizes other than 92 that the spec allows.
//! - `mbrman::MBR::read_from` rejects the whole table on one invalid status byte (one finding
//!   for one slot is what we want), and adds EBR offsets as unchecked `u32`s (overflow panics
//!   in debug builds).
//!
//! The formats are small (UEFI 2.10 §5.2 for the MBR, §5.3 for the GPT), so [`mbr`] and [`gpt`]
//! parse them from fixed offsets with every length checked against the disk size and capped
//! (the GPT entry array at [`gpt::MAX_ENTRY_ARRAY_BYTES`]; the EBR chain at
//! [`mbr::MAX_LOGICAL`] links). CRC32 is the IEEE polynomial (`crc::CRC_32_ISO_HDLC`, the same
//! crate gptman uses). [`hybrid`] checks a hybrid MBR against its GPT; [`firmware`] applies the
//! boot ROM's rules.
//!
//! # Finding codes
//!
//! `no-partition-table`, `mbr-*` (invalid status, zero size, out of bounds, overlap, EBR chain),
//! `protective-mbr-*`, `gpt-primary-*` / `gpt-backup-*` (one set per copy: missing, crc,
//! header-size, my-lba, entry-size, entries-too-large, entries-out-of-bounds, entries-crc),
//! `gpt-unreadable`, `gpt-copies-differ`, `gpt-backup-not-at-end`, `gpt-usable-range`,
//! `gpt-entry-inverted`, `gpt-out-of-bounds`, `gpt-overlap`, `stale-gpt-signature`,
//! `hybrid-*`, and from [`locate_firmware`]: `pure-gpt-unbootable-pi3`, `firmware-type-0xef`,
//! `firmware-not-slot1`, `firmware-wrong-type`, `firmware-not-in-mbr`, `no-firmware-partition`.

pub mod convert;
mod firmware;
mod gpt;
mod hybrid;
mod mbr;
#[cfg(test)]
mod testdisk;

use crate::finding::Finding;
use crate::finding::Severity;
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};

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
///
/// `disk_bytes` is authoritative: anything the tables place at or past `disk_bytes / 512`
/// sectors is reported as out of bounds (a truncated image, a card smaller than the table says),
/// never read.
pub fn read_layout<R: Read + Seek>(disk: &mut R, disk_bytes: u64) -> Result<Layout, TableError> {
    if disk_bytes < SECTOR {
        return Err(TableError::TooSmall { bytes: disk_bytes });
    }
    let total_lbas = disk_bytes / SECTOR;
    let mut findings = Vec::new();
    let Some(lba0) = read_lbas(disk, 0, 1, total_lbas)? else {
        return Err(TableError::TooSmall { bytes: disk_bytes });
    };

    let Some(mbr) = mbr::read(disk, &lba0, total_lbas, &mut findings)? else {
        findings.push(
            Finding::error(
                "no-partition-table",
                format!(
                    "no MBR signature at LBA 0 (bytes 510-511 are {:02x} {:02x}, expected 55 aa)",
                    lba0[510], lba0[511]
                ),
            )
            .advice("the disk is blank or not a partitioned disk image; check the target path"),
        );
        return Ok(Layout {
            kind: TableKind::None,
            disk_bytes,
            mbr: None,
            gpt: None,
            findings,
        });
    };

    let protective: Vec<&MbrEntry> = mbr
        .entries
        .iter()
        .filter(|e| e.type_byte == mbr::PROTECTIVE)
        .collect();
    let others = mbr.entries.len() - protective.len();
    let kind = match (protective.len(), others) {
        (0, _) => TableKind::Mbr,
        (_, 0) => TableKind::Gpt,
        _ => TableKind::Hybrid,
    };

    let gpt = match kind {
        TableKind::Gpt | TableKind::Hybrid => gpt::read(disk, total_lbas, &mut findings)?,
        TableKind::Mbr => {
            gpt::check_stale_signature(disk, total_lbas, &mut findings)?;
            None
        }
        TableKind::None => None,
    };

    match kind {
        TableKind::Gpt => mbr::check_protective(&mbr, total_lbas, &mut findings),
        TableKind::Hybrid => hybrid::check(&mbr, gpt.as_ref(), &mut findings),
        TableKind::Mbr | TableKind::None => {}
    }

    Ok(Layout {
        kind,
        disk_bytes,
        mbr: Some(mbr),
        gpt,
        findings,
    })
}

/// Locates the firmware partition by the Pi boot ROM's rules. Adds findings explaining why a
/// Pi 3 could not boot the card (pure GPT, type 0xEF, FAT not in slot 1) to `findings`.
///
/// Returns the partition the ROM would boot, or when none qualifies the best guess (first
/// FAT-typed MBR entry, else the GPT EFI System / basic data partition with the lowest start)
/// with `pi3_rom_bootable == false`. The caller must still verify the partition holds FAT.
pub fn locate_firmware(layout: &Layout, findings: &mut Vec<Finding>) -> Option<FirmwarePartition> {
    firmware::locate(layout, findings)
}

/// Reads `count` sectors from `lba`. `Ok(None)` when the range is not inside the disk (past
/// `total_lbas`, or the stream ends early): callers turn that into a finding, not an error.
/// Callers bound `count`; this never allocates more than `count * 512` bytes.
fn read_lbas<R: Read + Seek>(
    disk: &mut R,
    lba: u64,
    count: u64,
    total_lbas: u64,
) -> Result<Option<Vec<u8>>, std::io::Error> {
    match lba.checked_add(count) {
        Some(end) if end <= total_lbas => {}
        _ => return Ok(None),
    }
    // `count <= total_lbas`, and callers cap `count`, so the length fits in memory.
    let len = usize::try_from(count * SECTOR).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; len];
    disk.seek(SeekFrom::Start(lba * SECTOR))?;
    match disk.read_exact(&mut buf) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Severity helper: `Error` when `bad`, else `Warning`.
fn error_if(bad: bool) -> Severity {
    if bad {
        Severity::Error
    } else {
        Severity::Warning
    }
}
