//! The MBR at LBA 0, its extended-partition (EBR) chain, and their validation.
//!
//! Parsed from fixed offsets (UEFI 2.10 §5.2.1, Tables 5-1 and 5-2, which restate the IBM PC
//! layout). CHS fields are ignored: every tool pifw cares about (the Pi ROM, Linux, U-Boot)
//! uses the LBA fields. The EBR chain is followed with a hard bound ([`MAX_LOGICAL`]) and a
//! strictly-increasing check, so a looping or absurd chain cannot hang the reader.

use super::{MbrEntry, MbrInfo, error_if, read_lbas};
use crate::finding::{Finding, Severity};
use std::io::{Read, Seek};

/// Type byte of the GPT protective (or hybrid) entry.
pub(super) const PROTECTIVE: u8 = 0xEE;
/// Type bytes of an extended partition container (CHS, LBA, Linux).
const EXTENDED: [u8; 3] = [0x05, 0x0F, 0x85];
/// Most logical partitions followed in an EBR chain; Linux stops well before this in practice.
pub(super) const MAX_LOGICAL: u32 = 128;

/// Offset of the disk signature in LBA 0 (4 bytes, little-endian).
const DISK_SIGNATURE_OFFSET: usize = 440;
/// Offset of the four partition records in LBA 0 and in each EBR.
const RECORDS_OFFSET: usize = 446;
/// Offset of the 0x55 0xAA boot signature.
const BOOT_SIGNATURE_OFFSET: usize = 510;

/// One 16-byte partition record (UEFI 2.10 §5.2.1, Table 5-2).
#[derive(Debug, Clone, Copy)]
struct RawRecord {
    /// Offset 0, 1 byte: 0x80 bootable, 0x00 not; anything else is invalid (Linux then ignores
    /// the whole table).
    status: u8,
    // Offset 1, 3 bytes: starting CHS (ignored).
    /// Offset 4, 1 byte: OS type; 0x00 marks an unused record.
    type_byte: u8,
    // Offset 5, 3 bytes: ending CHS (ignored).
    /// Offset 8, 4 bytes LE: starting LBA (relative to the EBR or the extended partition in an
    /// EBR, absolute in the MBR).
    start_lba: u32,
    /// Offset 12, 4 bytes LE: size in sectors.
    sectors: u32,
}

impl RawRecord {
    fn parse(sector: &[u8], index: usize) -> RawRecord {
        let b = &sector[RECORDS_OFFSET + 16 * index..RECORDS_OFFSET + 16 * (index + 1)];
        RawRecord {
            status: b[0],
            type_byte: b[4],
            start_lba: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            sectors: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }
}

fn has_boot_signature(sector: &[u8]) -> bool {
    sector[BOOT_SIGNATURE_OFFSET] == 0x55 && sector[BOOT_SIGNATURE_OFFSET + 1] == 0xAA
}

fn is_extended(type_byte: u8) -> bool {
    EXTENDED.contains(&type_byte)
}

/// Parses LBA 0 (`lba0`, at least 512 bytes) and any EBR chain, validates the entries, and
/// returns `None` when LBA 0 has no boot signature.
pub(super) fn read<R: Read + Seek>(
    disk: &mut R,
    lba0: &[u8],
    total_lbas: u64,
    findings: &mut Vec<Finding>,
) -> Result<Option<MbrInfo>, std::io::Error> {
    if !has_boot_signature(lba0) {
        return Ok(None);
    }
    let disk_signature = u32::from_le_bytes([
        lba0[DISK_SIGNATURE_OFFSET],
        lba0[DISK_SIGNATURE_OFFSET + 1],
        lba0[DISK_SIGNATURE_OFFSET + 2],
        lba0[DISK_SIGNATURE_OFFSET + 3],
    ]);

    let mut entries = Vec::new();
    for index in 0..4 {
        let rec = RawRecord::parse(lba0, index);
        if rec.type_byte == 0 {
            continue;
        }
        let slot = index as u32 + 1;
        check_status(slot, rec.status, findings);
        entries.push(MbrEntry {
            slot,
            bootable: rec.status == 0x80,
            type_byte: rec.type_byte,
            start_lba: u64::from(rec.start_lba),
            sectors: u64::from(rec.sectors),
        });
    }

    let extended: Vec<MbrEntry> = entries
        .iter()
        .filter(|e| is_extended(e.type_byte))
        .cloned()
        .collect();
    if let Some(first) = extended.first() {
        if extended.len() > 1 {
            findings.push(
                Finding::warning(
                    "mbr-multiple-extended",
                    format!(
                        "{} extended partitions in the MBR (slots {}); only slot {} is followed",
                        extended.len(),
                        slot_list(&extended),
                        first.slot
                    ),
                )
                .advice("an MBR may hold one extended partition; fdisk can show which is stale"),
            );
        }
        read_logicals(disk, first, total_lbas, &mut entries, findings)?;
    }

    validate(&entries, total_lbas, findings);
    Ok(Some(MbrInfo {
        disk_signature,
        entries,
    }))
}

fn slot_list(entries: &[MbrEntry]) -> String {
    entries
        .iter()
        .map(|e| e.slot.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_status(slot: u32, status: u8, findings: &mut Vec<Finding>) {
    if status != 0x00 && status != 0x80 {
        findings.push(
            Finding::error(
                "mbr-invalid-status",
                format!(
                    "MBR slot {slot} has status byte {status:#04x} (only 0x00 and 0x80 are valid); \
                     Linux ignores a table with such an entry"
                ),
            )
            .advice(
                "set the status byte to 0x00 or 0x80 (fdisk's `a` command rewrites it); only \
                 sector 0 changes, save it first (`dd bs=512 count=1`)",
            ),
        );
    }
}

/// Follows the EBR chain of the extended partition `ext`, appending logical entries (slot 5..).
///
/// In each EBR, record 1 is the logical partition (start relative to the EBR) and record 2 links
/// to the next EBR (start relative to the extended partition's start).
fn read_logicals<R: Read + Seek>(
    disk: &mut R,
    ext: &MbrEntry,
    total_lbas: u64,
    entries: &mut Vec<MbrEntry>,
    findings: &mut Vec<Finding>,
) -> Result<(), std::io::Error> {
    let mut slot = 5;
    let mut rel: u64 = 0;
    let mut links = 0;
    loop {
        if links == MAX_LOGICAL {
            findings.push(Finding::error(
                "mbr-ebr-chain-too-long",
                format!("the extended partition chain has more than {MAX_LOGICAL} links; stopped reading it"),
            ));
            return Ok(());
        }
        links += 1;
        let ebr_lba = ext.start_lba + rel;
        let Some(ebr) = read_lbas(disk, ebr_lba, 1, total_lbas)? else {
            findings.push(Finding::new(
                error_if(rel != 0),
                "mbr-ebr-out-of-bounds",
                format!(
                    "the extended partition's boot record at LBA {ebr_lba} is past the end of the \
                     disk ({total_lbas} sectors); its logical partitions cannot be read"
                ),
            ));
            return Ok(());
        };
        if !has_boot_signature(&ebr) {
            // An extended partition with no logicals need not hold an EBR at all.
            if rel != 0 {
                findings.push(Finding::error(
                    "mbr-ebr-invalid",
                    format!(
                        "the extended boot record at LBA {ebr_lba} has no 55 aa signature; logical \
                         partitions from slot {slot} on are lost"
                    ),
                ));
            }
            return Ok(());
        }
        let logical = RawRecord::parse(&ebr, 0);
        if logical.type_byte != 0 {
            check_status(slot, logical.status, findings);
            entries.push(MbrEntry {
                slot,
                bootable: logical.status == 0x80,
                type_byte: logical.type_byte,
                start_lba: ebr_lba + u64::from(logical.start_lba),
                sectors: u64::from(logical.sectors),
            });
            slot += 1;
        }
        let next = RawRecord::parse(&ebr, 1);
        if next.type_byte == 0 || next.start_lba == 0 || !is_extended(next.type_byte) {
            return Ok(());
        }
        let next_rel = u64::from(next.start_lba);
        if next_rel <= rel {
            findings.push(Finding::error(
                "mbr-ebr-loop",
                format!(
                    "the extended boot record at LBA {ebr_lba} links back to LBA {} (links must move \
                     forward); stopped reading the chain",
                    ext.start_lba + next_rel
                ),
            ));
            return Ok(());
        }
        rel = next_rel;
    }
}

/// End (exclusive) of an entry, in sectors.
fn end(e: &MbrEntry) -> u64 {
    e.start_lba + e.sectors
}

/// Zero-size, out-of-bounds and overlap checks over all used entries except 0xEE (whose range is
/// checked by [`check_protective`] or the hybrid checks).
fn validate(entries: &[MbrEntry], total_lbas: u64, findings: &mut Vec<Finding>) {
    let data: Vec<&MbrEntry> = entries
        .iter()
        .filter(|e| e.type_byte != PROTECTIVE)
        .collect();
    for e in &data {
        if e.sectors == 0 {
            findings.push(
                Finding::warning(
                    "mbr-zero-size",
                    format!(
                        "MBR slot {} has type {:#04x} but a size of 0 sectors",
                        e.slot, e.type_byte
                    ),
                )
                .advice("a leftover entry; remove it with fdisk if nothing uses it"),
            );
            continue;
        }
        if e.start_lba == 0 {
            findings.push(Finding::error(
                "mbr-out-of-bounds",
                format!(
                    "MBR slot {} (type {:#04x}) starts at LBA 0, which holds the partition table",
                    e.slot, e.type_byte
                ),
            ));
        } else if end(e) > total_lbas {
            let nothing_there = e.start_lba >= total_lbas;
            findings.push(
                Finding::new(
                    error_if(nothing_there),
                    "mbr-out-of-bounds",
                    format!(
                        "MBR slot {} (type {:#04x}) spans LBA {}..{} but the disk ends at LBA {} \
                         ({} sectors){}",
                        e.slot,
                        e.type_byte,
                        e.start_lba,
                        end(e) - 1,
                        total_lbas.saturating_sub(1),
                        total_lbas,
                        if nothing_there {
                            "; none of it is on the disk"
                        } else {
                            "; its tail is missing"
                        }
                    ),
                )
                .advice(
                    "the image is truncated or the card is smaller than the table says; \
                     use the full image or a larger card",
                ),
            );
        }
    }
    for (i, a) in data.iter().enumerate() {
        for b in &data[i + 1..] {
            let container_and_logical = (is_extended(a.type_byte) && b.slot >= 5)
                || (is_extended(b.type_byte) && a.slot >= 5);
            if container_and_logical || a.sectors == 0 || b.sectors == 0 {
                continue;
            }
            if a.start_lba < end(b) && b.start_lba < end(a) {
                findings.push(
                    Finding::error(
                        "mbr-overlap",
                        format!(
                            "MBR slots {} (LBA {}..{}) and {} (LBA {}..{}) overlap",
                            a.slot,
                            a.start_lba,
                            end(a) - 1,
                            b.slot,
                            b.start_lba,
                            end(b) - 1
                        ),
                    )
                    .advice(
                        "writing one partition corrupts the other; save the data, then fix the \
                         bounds with fdisk (changing bounds is destructive if done wrong)",
                    ),
                );
            }
        }
    }
}

/// Checks the single 0xEE entry of a protective MBR (UEFI 2.10 §5.2.3): it must start at LBA 1
/// and cover the rest of the disk (or 0xFFFFFFFF sectors when the disk is larger than 2 TiB).
pub(super) fn check_protective(mbr: &MbrInfo, total_lbas: u64, findings: &mut Vec<Finding>) {
    for e in mbr.entries.iter().filter(|e| e.type_byte == PROTECTIVE) {
        if e.start_lba != 1 {
            findings.push(
                Finding::error(
                    "protective-mbr-not-first-lba",
                    format!(
                        "the protective 0xEE entry in MBR slot {} starts at LBA {}, not 1; Linux \
                         and UEFI then do not read the GPT",
                        e.slot, e.start_lba
                    ),
                )
                .advice(
                    "rewrite the protective MBR with gdisk (x, n: new protective MBR, w); only \
                     LBA 0 changes",
                ),
            );
            continue;
        }
        let expected = (total_lbas - 1).min(u64::from(u32::MAX));
        if e.sectors != expected && e.sectors != u64::from(u32::MAX) {
            findings.push(
                Finding::warning(
                    "protective-mbr-size",
                    format!(
                        "the protective 0xEE entry covers {} sectors; the disk has {} after LBA 0",
                        e.sectors,
                        total_lbas - 1
                    ),
                )
                .advice(
                    "usual after copying an image to a different-size card; `sgdisk -e DEVICE` \
                     fixes it with the backup GPT",
                ),
            );
        }
        // The UEFI spec wants the 0xEE record's status at 0x00; firmware rarely cares.
        if e.bootable {
            findings.push(Finding::new(
                Severity::Info,
                "protective-mbr-bootable",
                format!(
                    "the protective 0xEE entry in slot {} is marked bootable",
                    e.slot
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdisk::Disk;
    use super::super::{TableError, TableKind, read_layout};
    use crate::finding::Severity;

    /// The NixOS sd-image layout: FAT16 firmware at 8 MiB (30 MiB), bootable ext4 root after it.
    fn nixos() -> Disk {
        let mut d = Disk::new(81920);
        d.mbr(1, 0x00, 0x0B, 16384, 61440);
        d.mbr(2, 0x80, 0x83, 77824, 4096);
        d
    }

    #[test]
    fn reads_a_nixos_like_mbr() {
        let layout = nixos().layout();
        assert_eq!(layout.kind, TableKind::Mbr);
        assert!(layout.findings.is_empty(), "{:?}", layout.findings);
        let mbr = layout.mbr.expect("an MBR");
        assert_eq!(mbr.disk_signature, 0x2178_694e);
        let got: Vec<_> = mbr
            .entries
            .iter()
            .map(|e| (e.slot, e.bootable, e.type_byte, e.start_lba, e.sectors))
            .collect();
        assert_eq!(
            got,
            vec![(1, false, 0x0B, 16384, 61440), (2, true, 0x83, 77824, 4096)]
        );
        assert!(layout.gpt.is_none());
    }

    #[test]
    fn no_signature_means_no_table() {
        let mut d = nixos();
        d.xor_byte(511, 0xFF);
        let layout = d.layout();
        assert_eq!(layout.kind, TableKind::None);
        assert!(layout.mbr.is_none());
        assert_eq!(d.codes(), ["no-partition-table"]);
        assert!(layout.findings[0].message.contains("55 55"));
    }

    #[test]
    fn too_small_is_an_error_not_a_finding() {
        let mut d = Disk::new(1);
        let err = read_layout(&mut d, 511).expect_err("511 bytes cannot hold an MBR");
        assert!(matches!(err, TableError::TooSmall { bytes: 511 }));
    }

    #[test]
    fn overlapping_primaries() {
        let mut d = nixos();
        d.mbr(2, 0x80, 0x83, 70000, 4096);
        assert_eq!(d.codes(), ["mbr-overlap"]);
        assert!(
            d.layout().findings[0]
                .message
                .contains("slots 1 (LBA 16384..77823) and 2")
        );
    }

    #[test]
    fn tail_past_the_end_is_a_warning() {
        let mut d = nixos();
        d.resize(80000);
        let layout = d.layout();
        assert_eq!(d.codes(), ["mbr-out-of-bounds"]);
        assert_eq!(layout.findings[0].severity, Severity::Warning);
        assert!(layout.findings[0].message.contains("slot 2"));
    }

    #[test]
    fn partition_wholly_past_the_end_is_an_error() {
        let mut d = nixos();
        d.resize(70000);
        let layout = d.layout();
        let sev: Vec<_> = layout
            .findings
            .iter()
            .map(|f| (f.code.as_str(), f.severity))
            .collect();
        assert_eq!(
            sev,
            [
                ("mbr-out-of-bounds", Severity::Warning),
                ("mbr-out-of-bounds", Severity::Error)
            ]
        );
    }

    #[test]
    fn invalid_status_byte() {
        let mut d = nixos();
        d.write(446, &[0x01]);
        assert_eq!(d.codes(), ["mbr-invalid-status"]);
        assert!(d.layout().findings[0].message.contains("0x01"));
    }

    #[test]
    fn zero_size_entry_with_a_type() {
        let mut d = nixos();
        d.mbr(3, 0, 0x83, 2048, 0);
        assert_eq!(d.codes(), ["mbr-zero-size"]);
    }

    /// Extended partition in slot 2 with two logicals, the second EBR linked from the first.
    fn with_logicals() -> Disk {
        let mut d = Disk::new(81920);
        d.mbr(1, 0, 0x0C, 8192, 61440);
        d.mbr(2, 0, 0x05, 69632, 12288);
        d.ebr(69632, (0x83, 2048, 4096), Some((6144, 6144)));
        d.ebr(69632 + 6144, (0x82, 2048, 4096), None);
        d
    }

    #[test]
    fn follows_the_ebr_chain() {
        let d = with_logicals();
        let layout = d.layout();
        assert!(layout.findings.is_empty(), "{:?}", layout.findings);
        let got: Vec<_> = layout
            .mbr
            .expect("an MBR")
            .entries
            .iter()
            .map(|e| (e.slot, e.type_byte, e.start_lba, e.sectors))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 0x0C, 8192, 61440),
                (2, 0x05, 69632, 12288),
                (5, 0x83, 71680, 4096),
                (6, 0x82, 77824, 4096)
            ]
        );
    }

    #[test]
    fn ebr_chain_pointing_backwards_stops() {
        let mut d = with_logicals();
        // The second EBR links to itself.
        d.record((69632 + 6144) * 512, 2, 0, 0x05, 6144, 6144);
        assert_eq!(d.codes(), ["mbr-ebr-loop"]);
    }

    #[test]
    fn logicals_overlapping_each_other() {
        let mut d = with_logicals();
        // Logical 5 now runs to LBA 77679, logical 6 starts at 75777.
        d.ebr(69632, (0x83, 2048, 6000), Some((6144, 6144)));
        d.ebr(69632 + 6144, (0x82, 1, 4096), None);
        assert_eq!(d.codes(), ["mbr-overlap"]);
        assert!(d.layout().findings[0].message.contains("slots 5"));
    }
}
