//! The Pi boot ROM's choice of firmware partition.
//!
//! A Pi 3 (and Zero 2 W) boot ROM reads the MBR only, and loads `bootcode.bin` from the FAT
//! partition in MBR slot 1 when its type is 0x0B or 0x0C (0x0E also works, as used by the pftf
//! UEFI images); 0xEF is not accepted (raspberrypi/firmware#1711), the bootable flag is ignored,
//! and a pure GPT disk does not boot (raspberrypi/documentation#1291). A hybrid MBR works when
//! the FAT partition is slot 1 and 0xEE sits in a later slot (pftf/RPi3 Readme).
//!
//! This module only applies those rules to a [`Layout`]; it does not read the disk. The caller
//! checks that the returned partition really holds a FAT file system.

use super::{FirmwarePartition, GptInfo, Layout, MbrEntry, SECTOR, TableKind, mbr::PROTECTIVE};
use crate::finding::Finding;

/// MBR types the Pi 3 ROM boots from slot 1.
const ROM_TYPES: [u8; 3] = [0x0B, 0x0C, 0x0E];
/// Other MBR types that usually hold FAT (FAT12, FAT16 <32M, FAT16, EFI System).
const OTHER_FAT_TYPES: [u8; 4] = [0x01, 0x04, 0x06, 0xEF];
/// GPT types that hold the firmware FAT on GPT-converted cards.
const ESP_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const BASIC_DATA_GUID: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";

/// Works on a plain and on a hybrid MBR (without `--label-nested dos`, sfdisk edits the GPT of
/// a hybrid and fails).
const FIX_TYPE: &str = "`sfdisk --label-nested dos --part-type DEVICE 1 c` sets MBR slot 1 to 0x0C \
                        (FAT32 LBA); only the type byte in LBA 0 changes";

pub(super) fn locate(layout: &Layout, findings: &mut Vec<Finding>) -> Option<FirmwarePartition> {
    let total_lbas = layout.disk_bytes / SECTOR;
    let gpt = layout.gpt.as_ref();
    let entries: &[MbrEntry] = layout.mbr.as_ref().map_or(&[], |m| &m.entries);

    if layout.kind == TableKind::Gpt {
        findings.push(
            Finding::error(
                "pure-gpt-unbootable-pi3",
                "the card has a pure GPT (only a protective 0xEE entry in the MBR); a Pi 3's boot \
                 ROM reads the MBR only and cannot find the firmware partition",
            )
            .advice(
                "add a hybrid MBR with the FAT partition in slot 1 and 0xEE after it \
                 (`sgdisk -h 1:EE DEVICE`, then `sfdisk --label-nested dos --part-type DEVICE 1 c`); \
                 only LBA 0 changes",
            ),
        );
        return gpt_guess(gpt, findings);
    }

    let slot1 = entries
        .iter()
        .find(|e| e.slot == 1 && e.type_byte != PROTECTIVE);
    if let Some(e) = slot1 {
        if ROM_TYPES.contains(&e.type_byte) {
            let on_disk = e.sectors > 0 && e.start_lba > 0 && e.start_lba < total_lbas;
            if !on_disk {
                findings.push(Finding::error(
                    "no-firmware-partition",
                    format!(
                        "MBR slot 1 (type {:#04x}) has no sectors on this disk (LBA {}, {} sectors)",
                        e.type_byte, e.start_lba, e.sectors
                    ),
                ));
            }
            return Some(from_mbr(e, gpt, on_disk));
        }
        if e.type_byte == 0xEF {
            findings.push(
                Finding::error(
                    "firmware-type-0xef",
                    "MBR slot 1 has type 0xEF (EFI System); a Pi 3's boot ROM only boots \
                     0x0B/0x0C/0x0E",
                )
                .advice(FIX_TYPE),
            );
            return Some(from_mbr(e, gpt, false));
        }
    }

    let fat = entries
        .iter()
        .find(|e| ROM_TYPES.contains(&e.type_byte))
        .or_else(|| {
            entries
                .iter()
                .find(|e| OTHER_FAT_TYPES.contains(&e.type_byte))
        });
    if let Some(e) = fat {
        findings.push(
            Finding::error(
                "firmware-not-slot1",
                format!(
                    "the FAT partition is in MBR slot {} (type {:#04x}); a Pi 3's boot ROM only \
                     looks at slot 1{}",
                    e.slot,
                    e.type_byte,
                    match slot1 {
                        Some(s1) => format!(", which holds type {:#04x}", s1.type_byte),
                        None => ", which is empty".to_string(),
                    }
                ),
            )
            .advice(
                "reorder the MBR entries so the FAT partition is slot 1 (fdisk: x, f or manual \
                 edit); this rewrites LBA 0 and changes partition numbers, so update fstab and \
                 cmdline.txt references to PARTUUID <disk-id>-NN",
            ),
        );
        return Some(from_mbr(e, gpt, false));
    }

    // sgdisk's hybrid conversion writes the FAT partition's MBR type as 0x07.
    if let Some(e) = slot1.filter(|e| e.type_byte == 0x07) {
        findings.push(
            Finding::error(
                "firmware-wrong-type",
                "MBR slot 1 has type 0x07 (what sgdisk writes when it makes a hybrid MBR); a Pi 3's \
                 boot ROM needs 0x0B/0x0C/0x0E",
            )
            .advice(FIX_TYPE),
        );
        return Some(from_mbr(e, gpt, false));
    }

    if layout.kind == TableKind::Hybrid {
        findings.push(
            Finding::error(
                "firmware-not-in-mbr",
                "the hybrid MBR mirrors no FAT partition; a Pi 3's boot ROM reads the MBR only",
            )
            .advice(
                "recreate the hybrid MBR with the FAT partition first (`sgdisk -h N:EE DEVICE`), \
                 then `sfdisk --label-nested dos --part-type DEVICE 1 c`; only LBA 0 changes",
            ),
        );
        return gpt_guess(gpt, findings);
    }

    findings.push(Finding::error(
        "no-firmware-partition",
        match layout.kind {
            TableKind::None => "no partition table, so no firmware partition".to_string(),
            _ => "no FAT-typed partition in the MBR (types 0x01/0x04/0x06/0x0B/0x0C/0x0E/0xEF)"
                .to_string(),
        },
    ));
    None
}

fn from_mbr(e: &MbrEntry, gpt: Option<&GptInfo>, bootable: bool) -> FirmwarePartition {
    FirmwarePartition {
        mbr_slot: Some(e.slot),
        gpt_index: gpt.and_then(|g| {
            g.entries
                .iter()
                .find(|g| g.first_lba == e.start_lba)
                .map(|g| g.index)
        }),
        type_byte: Some(e.type_byte),
        offset_bytes: e.start_lba * SECTOR,
        size_bytes: e.sectors * SECTOR,
        pi3_rom_bootable: bootable,
    }
}

/// Best guess on a GPT: the EFI System or basic data partition with the lowest start.
fn gpt_guess(gpt: Option<&GptInfo>, findings: &mut Vec<Finding>) -> Option<FirmwarePartition> {
    let best = gpt.and_then(|g| {
        g.entries
            .iter()
            .filter(|e| e.type_guid == ESP_GUID || e.type_guid == BASIC_DATA_GUID)
            .filter(|e| e.first_lba <= e.last_lba)
            .min_by_key(|e| e.first_lba)
    });
    match best {
        Some(e) => Some(FirmwarePartition {
            mbr_slot: None,
            gpt_index: Some(e.index),
            type_byte: None,
            offset_bytes: e.first_lba.saturating_mul(SECTOR),
            size_bytes: (e.last_lba - e.first_lba + 1).saturating_mul(SECTOR),
            pi3_rom_bootable: false,
        }),
        None => {
            findings.push(Finding::error(
                "no-firmware-partition",
                "no EFI System or basic data partition in the GPT",
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdisk::{BASIC_DATA, Disk, ESP, LINUX_FS, Part};
    use super::super::{FirmwarePartition, locate_firmware};

    const TOTAL: u64 = 131072;

    fn locate(d: &Disk) -> (Option<FirmwarePartition>, Vec<String>) {
        let layout = d.layout();
        let mut findings = Vec::new();
        let fw = locate_firmware(&layout, &mut findings);
        (fw, findings.into_iter().map(|f| f.code).collect())
    }

    fn mbr(slot1: u8, slot2: u8) -> Disk {
        let mut d = Disk::new(TOTAL);
        d.mbr(1, 0, slot1, 16384, 61440);
        d.mbr(2, 0x80, slot2, 77824, 4096);
        d
    }

    fn gpt_parts(d: &mut Disk) {
        d.gpt(&[
            Part {
                type_guid: LINUX_FS,
                first: 63488,
                last: TOTAL - 34,
                name: "root",
            },
            Part {
                type_guid: ESP,
                first: 2048,
                last: 63487,
                name: "firmware",
            },
        ]);
    }

    #[test]
    fn nixos_firmware_in_slot_1_boots() {
        let (fw, codes) = locate(&mbr(0x0B, 0x83));
        assert!(codes.is_empty(), "{codes:?}");
        assert_eq!(
            fw,
            Some(FirmwarePartition {
                mbr_slot: Some(1),
                gpt_index: None,
                type_byte: Some(0x0B),
                offset_bytes: 16384 * 512,
                size_bytes: 61440 * 512,
                pi3_rom_bootable: true,
            })
        );
    }

    #[test]
    fn type_0xef_does_not_boot_a_pi3() {
        let (fw, codes) = locate(&mbr(0xEF, 0x83));
        assert_eq!(codes, ["firmware-type-0xef"]);
        let fw = fw.expect("the 0xEF partition is still the best guess");
        assert_eq!((fw.mbr_slot, fw.pi3_rom_bootable), (Some(1), false));
    }

    #[test]
    fn fat_in_slot_2() {
        let (fw, codes) = locate(&mbr(0x83, 0x0C));
        assert_eq!(codes, ["firmware-not-slot1"]);
        let fw = fw.expect("slot 2 is the best guess");
        assert_eq!(
            (
                fw.mbr_slot,
                fw.type_byte,
                fw.offset_bytes,
                fw.pi3_rom_bootable
            ),
            (Some(2), Some(0x0C), 77824 * 512, false)
        );
    }

    #[test]
    fn no_fat_partition_at_all() {
        let (fw, codes) = locate(&mbr(0x83, 0x82));
        assert_eq!(fw, None);
        assert_eq!(codes, ["no-firmware-partition"]);
    }

    #[test]
    fn no_table_at_all() {
        let (fw, codes) = locate(&Disk::new(TOTAL));
        assert_eq!(fw, None);
        assert_eq!(codes, ["no-firmware-partition"]);
    }

    #[test]
    fn pure_gpt_guesses_the_esp() {
        let mut d = Disk::new(TOTAL);
        d.protective_mbr();
        gpt_parts(&mut d);
        let (fw, codes) = locate(&d);
        assert_eq!(codes, ["pure-gpt-unbootable-pi3"]);
        assert_eq!(
            fw,
            Some(FirmwarePartition {
                mbr_slot: None,
                gpt_index: Some(2),
                type_byte: None,
                offset_bytes: 2048 * 512,
                size_bytes: 61440 * 512,
                pi3_rom_bootable: false,
            })
        );
    }

    #[test]
    fn hybrid_with_fat_first_boots_and_links_the_gpt_entry() {
        let mut d = Disk::new(TOTAL);
        gpt_parts(&mut d);
        d.mbr(1, 0, 0x0C, 2048, 61440);
        d.mbr(2, 0, 0xEE, 1, 2047);
        let (fw, codes) = locate(&d);
        assert!(codes.is_empty(), "{codes:?}");
        let fw = fw.expect("slot 1");
        assert_eq!(
            (fw.mbr_slot, fw.gpt_index, fw.pi3_rom_bootable),
            (Some(1), Some(2), true)
        );
    }

    #[test]
    fn sgdisk_hybrid_with_type_0x07() {
        let mut d = Disk::new(TOTAL);
        gpt_parts(&mut d);
        d.mbr(1, 0, 0x07, 2048, 61440);
        d.mbr(2, 0, 0xEE, 1, 2047);
        let (fw, codes) = locate(&d);
        assert_eq!(codes, ["firmware-wrong-type"]);
        assert_eq!(
            fw.map(|f| (f.mbr_slot, f.pi3_rom_bootable)),
            Some((Some(1), false))
        );
    }

    #[test]
    fn hybrid_without_fat_in_the_mbr() {
        let mut d = Disk::new(TOTAL);
        d.gpt(&[
            Part {
                type_guid: BASIC_DATA,
                first: 2048,
                last: 63487,
                name: "firmware",
            },
            Part {
                type_guid: LINUX_FS,
                first: 63488,
                last: TOTAL - 34,
                name: "root",
            },
        ]);
        d.mbr(1, 0, 0xEE, 1, 63487);
        d.mbr(2, 0, 0x83, 63488, (TOTAL - 34 - 63488 + 1) as u32);
        let (fw, codes) = locate(&d);
        assert_eq!(codes, ["firmware-not-in-mbr"]);
        assert_eq!(fw.map(|f| (f.mbr_slot, f.gpt_index)), Some((None, Some(1))));
    }
}
