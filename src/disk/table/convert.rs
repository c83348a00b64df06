//! Converting a Pi card's MBR to GPT plus a hybrid MBR, and putting saved table sectors back.
//!
//! This is the only code in pifw that writes partition tables. It is split into a pure plan
//! ([`plan_hybrid`]: what the new sectors will be, computed from what the disk holds), the
//! writes ([`write_hybrid`], [`restore_tables`]: over any `Read + Write + Seek + Durable`, so
//! the power-cut tests drive them through [`crate::txn::FaultyDevice`]) and read-back checks
//! ([`verify_hybrid`], [`verify_restored`]) that go through the same validating parser as
//! `pifw status`. Opening devices, backups, growing files and printing are the command layer's.
//!
//! # The layout written
//!
//! - **GPT**: one entry per MBR partition, at the index equal to its MBR slot (so
//!   `/dev/mmcblk0p2` stays the root), with exactly the MBR's start and end, except that the
//!   last partition may be shortened to make room for the backup GPT (below). 128 entries
//!   (LBA 2-33), first usable LBA 34, backup at the last 33 sectors. Types: the firmware
//!   partition becomes an EFI System Partition (what systemd-boot and UEFI look for); other FAT
//!   types Microsoft basic data; 0x83 Linux filesystem data (`0FC63DAF-8483-4772-8E79-3D69D8477DE4`);
//!   0x82 swap, 0x8E LVM, 0xFD RAID; anything else is refused rather than guessed. Names:
//!   `firmware`, `root` (the bootable Linux partition, else the first), then by kind and index.
//!   The MBR bootable flag becomes the GPT "legacy BIOS bootable" attribute (bit 2), which is
//!   what U-Boot's distro boot reads on a GPT disk to choose where to look for extlinux.conf.
//! - **GUIDs are random** (version 4), chosen by the caller, not derived from the MBR disk
//!   signature: every NixOS sd-image card carries the same signature (`0x2178694e`), so
//!   derived GUIDs would give every converted NixOS card the same PARTUUIDs, and two such cards
//!   in one machine would make `root=PARTUUID=` ambiguous.
//! - **Hybrid MBR** (what the Pi's boot ROM reads): slot 1 is the firmware partition's
//!   original 16-byte record, byte for byte (type 0x0B/0x0C kept, where `sgdisk -h` writes
//!   0x07 that the ROM does not boot); slot 2 is 0xEE from LBA 1 to just before the first
//!   mirrored partition (gptfdisk's rule; Linux, U-Boot and EDK2 recognise a GPT by an 0xEE
//!   entry starting at LBA 1); slots 3 and 4 mirror the next partitions (root first) with
//!   their original records, so MBR-only readers still see the root with its bootable flag.
//!   Boot code (bytes 0-439), disk signature (440-443) and bytes 444-445 are kept.
//!
//! # Room for the two GPT copies
//!
//! The primary needs LBA 1-33 outside every partition (Pi images start at 4 or 8 MiB); the
//! backup needs the last 33 sectors. When the last partition runs into them: an image file may
//! grow by [`GROW_BYTES`] (the caller does it before writing, so the plan's sizes are the
//! grown ones); otherwise the partition's ext2/3/4 superblock says how much it uses, and if the
//! file system ends before the last 33 sectors only the GPT entry is shortened (to the last
//! 1 MiB boundary before them when the file system allows, as partitioners align; the mirrored
//! MBR entry too, so the two tables agree); if it does not, the plan is refused, saying by how
//! many blocks to shrink the file system.
//!
//! # Write order (crash safety)
//!
//! Every write is one whole sector. The backup GPT goes first (its header sector zeroed, the
//! array written, the header written last), then a sync, then the primary the same way, a sync,
//! and LBA 0 last, alone: the commit. Until LBA 0 changes there is no 0xEE entry, every reader
//! takes the old MBR, and the sectors written lie outside every partition, so a power cut
//! leaves the old disk (with at most a stale GPT signature that `pifw status` reports). After
//! LBA 0 the new layout is complete. [`restore_tables`] applies the same rule in reverse:
//! putting back a plain MBR writes LBA 0 *first* (one sector makes the disk an MBR disk
//! again, and the GPT sectors restored after it are then unused by anyone); putting back a
//! table with an 0xEE entry writes LBA 0 last.

mod apply;
mod encode;
mod preflight;

pub use apply::{
    RestoreState, SavedRegion, SavedTables, check_unchanged, restore_state, restore_tables,
    verify_hybrid, verify_restored, write_hybrid,
};
pub use encode::{COPY_SECTORS, Guid};
pub use preflight::{
    Ext4Size, PartuuidRef, breaks_hybrid_mbr, ext4_size, partuuid_refs, vc_build_date,
};

use super::{Layout, MbrEntry, SECTOR, TableError, TableKind, locate_firmware, read_layout};
use crate::finding::{Finding, Severity};
use encode::EntryOut;
use serde::Serialize;
use std::io::{self, Read, Seek, SeekFrom};

/// How much an image file grows when its last partition leaves no room for the backup GPT:
/// 1 MiB keeps the size MiB-aligned and leaves more than the 33 sectors needed.
pub const GROW_BYTES: u64 = 1 << 20;

/// Alignment partitioners use (1 MiB); a shortened last partition ends on it when it can.
const ALIGN_SECTORS: u64 = 2048;

/// Most sectors a conversion takes off the last partition's entry: up to the 1 MiB boundary
/// before the backup GPT. [`restore_state`] accepts a last partition that ends this much
/// earlier or later than the saved one.
pub const MAX_SHRINK_SECTORS: u64 = ALIGN_SECTORS + COPY_SECTORS;

/// The GPT "legacy BIOS bootable" attribute (UEFI 2.10 §5.3.3, Table 5-7, bit 2).
pub const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// Sectors at the start of the disk the conversion reads, backs up and rewrites: LBA 0-33.
pub const HEAD_SECTORS: u64 = 1 + COPY_SECTORS;

const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const LINUX_SWAP: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";
const LINUX_LVM: &str = "E6D6D379-F507-44C2-A23C-238F2A3DF928";
const LINUX_RAID: &str = "A19D880F-05FC-4D3B-A006-743F0F84911E";

/// Extended-partition containers.
const EXTENDED: [u8; 3] = [0x05, 0x0F, 0x85];

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("the disk has a {kind} partition table, not a plain MBR")]
    NotMbr { kind: &'static str },
    #[error("the partition table has errors: {0}")]
    Damaged(String),
    #[error(
        "MBR slot {slot} is an extended partition (type {type_byte:#04x}); pifw converts disks with primary partitions only"
    )]
    Extended { slot: u32, type_byte: u8 },
    #[error("{0}")]
    NoFirmware(String),
    #[error(
        "MBR slot {slot} has type {type_byte:#04x}, for which pifw knows no GPT partition type"
    )]
    UnknownType { slot: u32, type_byte: u8 },
    #[error(
        "MBR slot {slot} starts at LBA {start}, but the primary GPT needs LBA 1-33 outside every partition (the first partition must start at LBA 34 or later); pifw does not move partitions"
    )]
    NoRoomPrimary { slot: u32, start: u64 },
    #[error(
        "MBR slot {slot} ends at LBA {last}, past the end of the disk (LBA {disk_last}); the image is truncated or the card too small"
    )]
    PastEnd {
        slot: u32,
        last: u64,
        disk_last: u64,
    },
    #[error(
        "MBR slot {slot} runs into the disk's last 33 sectors, where the backup GPT must go, and {reason}"
    )]
    NoRoomBackup { slot: u32, reason: String },
    #[error("{needed} partition GUIDs needed, {given} given")]
    Guids { needed: usize, given: usize },
    #[error("the disk changed since the plan was made: {0}")]
    Changed(String),
    #[error("reading the tables back after writing: {0}")]
    Verify(String),
    #[error("the saved table sectors are unusable: {0}")]
    BadSaved(String),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> ConvertError {
    move |source| ConvertError::Io { what, source }
}

/// What the caller decides for the conversion.
#[derive(Debug, Clone)]
pub struct HybridOptions {
    /// The target is an image file that may grow by [`GROW_BYTES`] (`--grow`).
    pub may_grow: bool,
    pub disk_guid: Guid,
    /// One unique GUID per partition, in MBR slot order (4 always suffice).
    pub partition_guids: Vec<Guid>,
}

/// How the backup GPT gets its 33 sectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "how", rename_all = "kebab-case")]
pub enum Room {
    /// They are already outside every partition.
    Free,
    /// The image file grows by `bytes` first.
    Grow { bytes: u64 },
    /// The last partition's GPT (and mirrored MBR) entry ends `sectors` earlier than its MBR
    /// entry; the file system (`fs`) ends before them.
    ShrinkEntry {
        gpt_index: u32,
        sectors: u64,
        fs: Ext4Size,
    },
}

/// One GPT partition the conversion creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPartition {
    pub index: u32,
    pub mbr_slot: u32,
    pub name: String,
    pub type_guid: String,
    pub type_name: &'static str,
    /// Uppercase canonical form.
    pub unique_guid: String,
    /// What Linux will call it (`root=PARTUUID=` value): the GUID, lowercase.
    pub partuuid: String,
    /// What Linux called it on the MBR disk: `<disk-id>-NN`.
    pub old_partuuid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    pub legacy_bios_bootable: bool,
    pub firmware: bool,
}

/// One slot of the hybrid MBR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedSlot {
    pub slot: u32,
    pub type_byte: u8,
    pub bootable: bool,
    pub start_lba: u64,
    pub sectors: u64,
    /// `firmware`, `protective` (0xEE) or `mirror`.
    pub role: &'static str,
    /// The GPT entry this slot mirrors.
    pub gpt_index: Option<u32>,
}

/// The GPT the conversion writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedGpt {
    pub disk_guid: String,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    /// First LBA of the backup copy (its entry array; the header is the disk's last LBA).
    pub backup_first_lba: u64,
    pub partitions: Vec<PlannedPartition>,
}

/// Everything [`write_hybrid`] will do, and the bytes it will write.
#[derive(Debug, Clone, Serialize)]
pub struct HybridPlan {
    /// Size of the disk now.
    pub disk_bytes: u64,
    /// Size the tables are made for (larger when the image grows).
    pub new_disk_bytes: u64,
    /// `0x` + 8 hex digits; kept.
    pub disk_signature: String,
    pub room: Room,
    pub gpt: PlannedGpt,
    pub mbr: Vec<PlannedSlot>,
    /// What the plan found worth saying (partitions left out of the hybrid, data in the gap
    /// that will be overwritten, how boot loaders will see the disk).
    pub findings: Vec<Finding>,
    #[serde(skip)]
    sectors: Sectors,
}

/// The raw sectors: what is there now (for the backup and for [`check_unchanged`]) and what
/// will be written.
#[derive(Debug, Clone)]
struct Sectors {
    /// LBA 0-33 now.
    old_head: Vec<u8>,
    /// The last 33 sectors of the disk now, at `old_tail_offset`.
    old_tail: Vec<u8>,
    old_tail_offset: u64,
    new_lba0: Vec<u8>,
    /// LBA 1-33.
    new_primary: Vec<u8>,
    /// The last 33 sectors of the (possibly grown) disk.
    new_backup: Vec<u8>,
}

impl HybridPlan {
    /// The regions to save before writing, as `(name, byte offset, bytes)`: `lba0`,
    /// `gpt-primary` (LBA 1-33) and `gpt-backup` (the disk's last 33 sectors now), everything
    /// the conversion overwrites except what growing the image adds.
    pub fn backup_regions(&self) -> Vec<(&'static str, u64, &[u8])> {
        let s = &self.sectors;
        vec![
            ("lba0", 0, &s.old_head[..SECTOR as usize]),
            ("gpt-primary", SECTOR, &s.old_head[SECTOR as usize..]),
            ("gpt-backup", s.old_tail_offset, &s.old_tail[..]),
        ]
    }

    /// The sectors written, in write order: `(name, first LBA, bytes)`.
    pub fn writes(&self) -> Vec<(&'static str, u64, &[u8])> {
        let s = &self.sectors;
        vec![
            ("gpt-backup", self.gpt.backup_first_lba, &s.new_backup[..]),
            ("gpt-primary", 1, &s.new_primary[..]),
            ("lba0", 0, &s.new_lba0[..]),
        ]
    }

    /// Grow bytes, when the image grows.
    pub fn grow_bytes(&self) -> u64 {
        self.new_disk_bytes - self.disk_bytes
    }
}

/// GPT type, its name, and the kind word used in partition names, for an MBR type byte.
fn gpt_type(type_byte: u8, firmware: bool) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match type_byte {
        _ if firmware => (ESP, "EFI System", "firmware"),
        0xEF => (ESP, "EFI System", "esp"),
        0x01 | 0x04 | 0x06 | 0x07 | 0x0B | 0x0C | 0x0E => {
            (BASIC_DATA, "Microsoft basic data", "data")
        }
        0x83 => (LINUX_FS, "Linux filesystem", "linux"),
        0x82 => (LINUX_SWAP, "Linux swap", "swap"),
        0x8E => (LINUX_LVM, "Linux LVM", "lvm"),
        0xFD => (LINUX_RAID, "Linux RAID", "raid"),
        _ => return None,
    })
}

/// Plans the conversion of the MBR disk `disk` (`disk_bytes` long). Reads LBA 0-33, the last
/// 33 sectors, and, when the last partition runs into them, its ext2/3/4 superblock. Never
/// writes. Refuses (with the reason) whatever it cannot convert safely.
pub fn plan_hybrid<R: Read + Seek>(
    disk: &mut R,
    disk_bytes: u64,
    opts: &HybridOptions,
) -> Result<HybridPlan, ConvertError> {
    let layout = read_layout(disk, disk_bytes)?;
    let total = disk_bytes / SECTOR;
    let mbr = match (&layout.kind, &layout.mbr) {
        (TableKind::Mbr, Some(m)) => m,
        (kind, _) => {
            return Err(ConvertError::NotMbr {
                kind: kind_name(*kind),
            });
        }
    };
    let errors: Vec<String> = layout
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{} ({})", f.message, f.code))
        .collect();
    if !errors.is_empty() {
        return Err(ConvertError::Damaged(errors.join("; ")));
    }
    if let Some(e) = mbr
        .entries
        .iter()
        .find(|e| EXTENDED.contains(&e.type_byte) || e.slot > 4)
    {
        return Err(ConvertError::Extended {
            slot: e.slot,
            type_byte: e.type_byte,
        });
    }
    let mut fw_findings = Vec::new();
    let fw = locate_firmware(&layout, &mut fw_findings);
    match &fw {
        Some(f) if f.mbr_slot == Some(1) && f.pi3_rom_bootable => {}
        _ => {
            let why = fw_findings
                .iter()
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ConvertError::NoFirmware(format!(
                "the hybrid MBR keeps the firmware partition in slot 1 as the Pi's boot ROM \
                 needs it, but this disk has no bootable FAT partition there{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            )));
        }
    }

    let mut findings = Vec::new();
    let mut parts: Vec<&MbrEntry> = Vec::new();
    for e in &mbr.entries {
        if e.sectors == 0 {
            findings.push(Finding::info(
                "convert-empty-slot-dropped",
                format!(
                    "MBR slot {} (type {:#04x}) has no sectors; it is left out of the GPT",
                    e.slot, e.type_byte
                ),
            ));
            continue;
        }
        if gpt_type(e.type_byte, e.slot == 1).is_none() {
            return Err(ConvertError::UnknownType {
                slot: e.slot,
                type_byte: e.type_byte,
            });
        }
        parts.push(e);
    }
    if opts.partition_guids.len() < parts.len() {
        return Err(ConvertError::Guids {
            needed: parts.len(),
            given: opts.partition_guids.len(),
        });
    }
    let end = |e: &MbrEntry| e.start_lba + e.sectors; // exclusive
    if let Some(first) = parts.iter().min_by_key(|e| e.start_lba)
        && first.start_lba < HEAD_SECTORS
    {
        return Err(ConvertError::NoRoomPrimary {
            slot: first.slot,
            start: first.start_lba,
        });
    }
    if let Some(e) = parts.iter().find(|e| end(e) > total) {
        return Err(ConvertError::PastEnd {
            slot: e.slot,
            last: end(e) - 1,
            disk_last: total.saturating_sub(1),
        });
    }

    // Room for the backup GPT.
    let in_tail: Vec<&&MbrEntry> = parts
        .iter()
        .filter(|e| end(e) > total - COPY_SECTORS)
        .collect();
    let (room, new_total) = match in_tail.as_slice() {
        [] => (Room::Free, total),
        _ if opts.may_grow => (
            Room::Grow { bytes: GROW_BYTES },
            total + GROW_BYTES / SECTOR,
        ),
        [e] => (shrink_room(disk, e, total)?, total),
        [e, ..] => {
            return Err(ConvertError::NoRoomBackup {
                slot: e.slot,
                reason: "so do other partitions; pifw does not move partitions".into(),
            });
        }
    };

    // Gap contents: the sectors written must hold nothing anyone uses.
    let old_head = read_exact_at(disk, 0, HEAD_SECTORS)?;
    let old_tail_offset = (total - COPY_SECTORS) * SECTOR;
    let old_tail = read_exact_at(disk, total - COPY_SECTORS, COPY_SECTORS)?;
    if old_head[SECTOR as usize..].iter().any(|&b| b != 0) {
        findings.push(Finding::warning(
            "convert-gap-not-empty",
            "LBA 1-33 (between the MBR and the first partition) hold data, e.g. a boot loader for \
             another board or an old GPT; the primary GPT overwrites them (they are in the backup)",
        ));
    }
    if room == Room::Free && old_tail.iter().any(|&b| b != 0) {
        findings.push(Finding::warning(
            "convert-tail-not-empty",
            "the disk's last 33 sectors, outside every partition, hold data (an old GPT?); the \
             backup GPT overwrites them (they are in the backup)",
        ));
    }

    // The GPT.
    let root_slot = parts
        .iter()
        .filter(|e| e.type_byte == 0x83)
        .max_by_key(|e| (e.bootable, std::cmp::Reverse(e.slot)))
        .map(|e| e.slot);
    let last_usable = new_total - COPY_SECTORS - 1;
    let mut planned = Vec::new();
    let mut entries_out = Vec::new();
    for (i, e) in parts.iter().enumerate() {
        let firmware = e.slot == 1;
        let (type_guid, type_name, kind) =
            gpt_type(e.type_byte, firmware).expect("types were checked above");
        let name = if firmware {
            "firmware".to_string()
        } else if Some(e.slot) == root_slot {
            "root".to_string()
        } else {
            format!("{kind}{}", e.slot)
        };
        let last_lba = match &room {
            Room::ShrinkEntry {
                gpt_index, sectors, ..
            } if *gpt_index == e.slot => end(e) - 1 - sectors,
            _ => end(e) - 1,
        };
        let guid = opts.partition_guids[i];
        let attributes = if e.bootable { LEGACY_BIOS_BOOTABLE } else { 0 };
        let type_guid = Guid::parse(type_guid).expect("the type GUID constants are valid");
        entries_out.push(EntryOut {
            index: e.slot,
            type_guid,
            unique_guid: guid,
            first_lba: e.start_lba,
            last_lba,
            attributes,
            name: name.clone(),
        });
        planned.push(PlannedPartition {
            index: e.slot,
            mbr_slot: e.slot,
            name,
            type_guid: type_guid.text(),
            type_name,
            unique_guid: guid.text(),
            partuuid: guid.partuuid(),
            old_partuuid: format!("{:08x}-{:02x}", mbr.disk_signature, e.slot),
            first_lba: e.start_lba,
            last_lba,
            attributes,
            legacy_bios_bootable: e.bootable,
            firmware,
        });
    }
    let (new_primary, new_backup) = encode::gpt_copies(new_total, opts.disk_guid, &entries_out);

    // The hybrid MBR: firmware in slot 1, 0xEE in slot 2, then up to two mirrors, root first.
    let mut mirrors: Vec<&PlannedPartition> = planned.iter().filter(|p| !p.firmware).collect();
    mirrors.sort_by_key(|p| (p.name != "root", p.index));
    for p in mirrors.iter().skip(2) {
        findings.push(Finding::warning(
            "convert-not-mirrored",
            format!(
                "partition {} ({}) is in the GPT only: a hybrid MBR holds three partitions \
                 besides 0xEE, so MBR-only readers no longer see it",
                p.index, p.name
            ),
        ));
    }
    mirrors.truncate(2);
    let mut mirrored: Vec<&PlannedPartition> = planned.iter().filter(|p| p.firmware).collect();
    mirrored.extend(mirrors.iter().copied());
    let first_mirrored = mirrored
        .iter()
        .map(|p| p.first_lba)
        .min()
        .expect("the firmware partition is mirrored");
    let mut slots = Vec::new();
    let mut new_lba0 = old_head[..SECTOR as usize].to_vec();
    new_lba0[446..510].fill(0);
    let mut put = |slot: u32, record: [u8; 16], planned: PlannedSlot| {
        let at = 446 + 16 * (slot as usize - 1);
        new_lba0[at..at + 16].copy_from_slice(&record);
        slots.push(planned);
    };
    for (slot, p) in [1u32, 3, 4].into_iter().zip(mirrored.iter()) {
        let orig = mbr
            .entries
            .iter()
            .find(|e| e.slot == p.mbr_slot)
            .expect("every planned partition comes from an MBR entry");
        let sectors = p.last_lba + 1 - p.first_lba;
        let record = if sectors == orig.sectors {
            // The original record verbatim: CHS, status and type as the card had them.
            let at = 446 + 16 * (orig.slot as usize - 1);
            let mut r = [0u8; 16];
            r.copy_from_slice(&old_head[at..at + 16]);
            r
        } else {
            encode::mbr_record(
                orig.bootable,
                orig.type_byte,
                to_u32(p.first_lba)?,
                to_u32(sectors)?,
            )
        };
        put(
            slot,
            record,
            PlannedSlot {
                slot,
                type_byte: orig.type_byte,
                bootable: orig.bootable,
                start_lba: p.first_lba,
                sectors,
                role: if p.firmware { "firmware" } else { "mirror" },
                gpt_index: Some(p.index),
            },
        );
        if slot == 1 {
            put(
                2,
                encode::mbr_record(false, 0xEE, 1, to_u32(first_mirrored - 1)?),
                PlannedSlot {
                    slot: 2,
                    type_byte: 0xEE,
                    bootable: false,
                    start_lba: 1,
                    sectors: first_mirrored - 1,
                    role: "protective",
                    gpt_index: None,
                },
            );
        }
    }

    if planned.iter().any(|p| p.firmware) {
        findings.push(Finding::info(
            "convert-uboot-esp-bootable",
            "U-Boot (2023.01 measured) counts an EFI System partition as bootable, so its distro \
             boot now looks in the firmware partition (extlinux/extlinux.conf, \
             EFI/BOOT/BOOTAA64.EFI) before the partitions marked legacy-BIOS-bootable",
        ));
    }

    Ok(HybridPlan {
        disk_bytes,
        new_disk_bytes: new_total * SECTOR,
        disk_signature: format!("0x{:08x}", mbr.disk_signature),
        room,
        gpt: PlannedGpt {
            disk_guid: opts.disk_guid.text(),
            first_usable_lba: HEAD_SECTORS,
            last_usable_lba: last_usable,
            backup_first_lba: new_total - COPY_SECTORS,
            partitions: planned,
        },
        mbr: slots,
        findings,
        sectors: Sectors {
            old_head,
            old_tail,
            old_tail_offset,
            new_lba0,
            new_primary,
            new_backup,
        },
    })
}

/// The last partition `e` runs into the last 33 sectors: shorten its entry if its ext2/3/4
/// file system ends before them, else say by how much to shrink the file system.
fn shrink_room<R: Read + Seek>(
    disk: &mut R,
    e: &MbrEntry,
    total: u64,
) -> Result<Room, ConvertError> {
    let limit = total - COPY_SECTORS; // exclusive end available to the partition
    let Some(fs) = ext4_size(disk, e.start_lba * SECTOR).map_err(io_err("reading a superblock"))?
    else {
        return Err(ConvertError::NoRoomBackup {
            slot: e.slot,
            reason: "pifw finds no ext2/3/4 file system in it to tell whether those sectors \
                     are in use"
                .into(),
        });
    };
    let avail = limit.saturating_sub(e.start_lba) * SECTOR;
    if fs.bytes() > avail || limit <= e.start_lba {
        let max_blocks = avail / fs.block_size;
        let over = fs.blocks.saturating_sub(max_blocks);
        return Err(ConvertError::NoRoomBackup {
            slot: e.slot,
            reason: format!(
                "its ext4 file system ({} blocks of {} bytes) uses them: shrink the file system \
                 by at least {} blocks ({} KiB), to at most {max_blocks} blocks \
                 (`resize2fs PARTITION {max_blocks}` while it is unmounted)",
                fs.blocks,
                fs.block_size,
                over,
                (over * fs.block_size).div_ceil(1024)
            ),
        });
    }
    // End on a 1 MiB boundary when the file system allows (partitioners align, and sgdisk
    // cautions about an unaligned end), else right before the backup GPT.
    let aligned = limit / ALIGN_SECTORS * ALIGN_SECTORS;
    let new_end = if aligned > e.start_lba && fs.bytes() <= (aligned - e.start_lba) * SECTOR {
        aligned
    } else {
        limit
    };
    Ok(Room::ShrinkEntry {
        gpt_index: e.slot,
        sectors: e.start_lba + e.sectors - new_end,
        fs,
    })
}

fn to_u32(v: u64) -> Result<u32, ConvertError> {
    u32::try_from(v).map_err(|_| {
        ConvertError::Damaged(format!("LBA {v} does not fit an MBR entry (over 2 TiB)"))
    })
}

fn kind_name(kind: TableKind) -> &'static str {
    match kind {
        TableKind::None => "missing",
        TableKind::Mbr => "MBR",
        TableKind::Gpt => "GPT (protective MBR)",
        TableKind::Hybrid => "hybrid GPT/MBR",
    }
}

/// `count` sectors from `lba`, which must exist.
fn read_exact_at<R: Read + Seek>(
    disk: &mut R,
    lba: u64,
    count: u64,
) -> Result<Vec<u8>, ConvertError> {
    let mut buf = vec![0u8; (count * SECTOR) as usize];
    disk.seek(SeekFrom::Start(lba * SECTOR))
        .map_err(io_err("seeking"))?;
    disk.read_exact(&mut buf)
        .map_err(io_err("reading sectors"))?;
    Ok(buf)
}

/// The partitions readers see, `(first, last)` LBAs sorted: the GPT's when the disk has one,
/// else the MBR's (0xEE and extended containers left out).
pub fn effective_partitions(layout: &Layout) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = match (&layout.kind, &layout.gpt, &layout.mbr) {
        (TableKind::Gpt | TableKind::Hybrid, Some(g), _) => g
            .entries
            .iter()
            .map(|e| (e.first_lba, e.last_lba))
            .collect(),
        (_, _, Some(m)) => m
            .entries
            .iter()
            .filter(|e| e.type_byte != 0xEE && !EXTENDED.contains(&e.type_byte) && e.sectors > 0)
            .map(|e| (e.start_lba, e.start_lba + e.sectors - 1))
            .collect(),
        _ => Vec::new(),
    };
    v.sort();
    v
}

#[cfg(test)]
mod tests;
