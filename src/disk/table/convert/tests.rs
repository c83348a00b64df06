//! Conversion and restore on small in-memory disks whose tables are written by hand
//! ([`super::super::testdisk`]), judged by the validating parser.

use super::super::testdisk::Disk;
use super::super::{SECTOR, TableKind, read_layout};
use super::*;
use crate::txn::FaultyDevice;
use std::io::Cursor;

/// 8 MiB.
const TOTAL: u64 = 16384;
const FAT_START: u32 = 2048;
const FAT_SECTORS: u32 = 6144;
const ROOT_START: u32 = 8192;

/// A NixOS-like disk: FAT16 (0x0B) in slot 1, a bootable ext4 root to the last sector whose
/// file system has `fs_blocks` 1 KiB blocks, boot code bytes, the NixOS disk signature.
fn nixos_like(fs_blocks: u32) -> Vec<u8> {
    let mut d = Disk::new(TOTAL);
    d.write(0, &[0xFA; 440]);
    d.mbr(1, 0x00, 0x0B, FAT_START, FAT_SECTORS);
    d.mbr(
        2,
        0x80,
        0x83,
        ROOT_START,
        (TOTAL - u64::from(ROOT_START)) as u32,
    );
    let sb = u64::from(ROOT_START) * SECTOR + 1024;
    d.put_u32(sb + 0x04, fs_blocks);
    d.write(sb + 0x38, &[0x53, 0xEF]);
    d.read_vec(0, (TOTAL * SECTOR) as usize)
}

fn opts(may_grow: bool) -> HybridOptions {
    HybridOptions {
        may_grow,
        disk_guid: Guid::random_v4([0xD0; 16]),
        partition_guids: (1..=4).map(|i| Guid::random_v4([i; 16])).collect(),
    }
}

fn plan(bytes: &[u8], may_grow: bool) -> Result<HybridPlan, ConvertError> {
    plan_hybrid(&mut Cursor::new(bytes), bytes.len() as u64, &opts(may_grow))
}

/// An MBR entry as `(slot, type, bootable, start, sectors)`.
type Entry = (u32, u8, bool, u64, u64);

/// (kind, MBR entries) as the parser sees them.
fn tables(bytes: &[u8]) -> (TableKind, Vec<Entry>) {
    let layout = read_layout(&mut Cursor::new(bytes), bytes.len() as u64).expect("readable");
    let entries = layout
        .mbr
        .map(|m| {
            m.entries
                .iter()
                .map(|e| (e.slot, e.type_byte, e.bootable, e.start_lba, e.sectors))
                .collect()
        })
        .unwrap_or_default();
    (layout.kind, entries)
}

const OLD_ENTRIES: [(u32, u8, bool, u64, u64); 2] =
    [(1, 0x0B, false, 2048, 6144), (2, 0x83, true, 8192, 8192)];

#[test]
fn shrinks_the_last_entry_when_the_file_system_leaves_room() {
    // 4064 KiB of 4096: the last 32 KiB (64 sectors) are unused.
    let disk = nixos_like(4064);
    let p = plan(&disk, false).expect("plannable");
    assert_eq!(
        p.room,
        Room::ShrinkEntry {
            gpt_index: 2,
            sectors: 33,
            fs: Ext4Size {
                block_size: 1024,
                blocks: 4064
            }
        }
    );
    assert_eq!(p.new_disk_bytes, p.disk_bytes);
    let gpt: Vec<_> = p
        .gpt
        .partitions
        .iter()
        .map(|e| {
            (
                e.index,
                e.name.as_str(),
                e.type_name,
                e.first_lba,
                e.last_lba,
                e.attributes,
            )
        })
        .collect();
    assert_eq!(
        gpt,
        vec![
            (1, "firmware", "EFI System", 2048, 8191, 0),
            (
                2,
                "root",
                "Linux filesystem",
                8192,
                TOTAL - 34,
                LEGACY_BIOS_BOOTABLE
            )
        ]
    );
    assert_eq!(p.gpt.partitions[1].old_partuuid, "2178694e-02");
    let mbr: Vec<_> = p
        .mbr
        .iter()
        .map(|s| {
            (
                s.slot,
                s.type_byte,
                s.bootable,
                s.start_lba,
                s.sectors,
                s.role,
            )
        })
        .collect();
    assert_eq!(
        mbr,
        vec![
            (1, 0x0B, false, 2048, 6144, "firmware"),
            (2, 0xEE, false, 1, 2047, "protective"),
            (3, 0x83, true, 8192, TOTAL - 33 - 8192, "mirror")
        ]
    );

    let mut dev = Cursor::new(disk.clone());
    write_hybrid(&mut dev, &p).expect("written");
    let layout = verify_hybrid(&mut dev, &p).expect("verified");
    assert_eq!(layout.kind, TableKind::Hybrid);
    let after = dev.into_inner();
    assert_eq!(
        after[..446],
        disk[..446],
        "boot code and disk signature kept"
    );
    // Slot 1 is the original record byte for byte.
    assert_eq!(after[446..462], disk[446..462]);
    // Only LBA 0-33 and the last 33 sectors changed.
    let changed: Vec<u64> = (0..TOTAL)
        .filter(|&l| {
            let r = (l * SECTOR) as usize..((l + 1) * SECTOR) as usize;
            after[r.clone()] != disk[r]
        })
        .collect();
    assert!(
        changed
            .iter()
            .all(|&l| !(HEAD_SECTORS..TOTAL - COPY_SECTORS).contains(&l)),
        "{changed:?}"
    );

    // And back, byte for byte.
    let mut dev = Cursor::new(after);
    let saved = p.saved_tables();
    assert_eq!(
        restore_state(&mut dev, TOTAL * SECTOR, &saved).expect("state"),
        RestoreState::Applies
    );
    restore_tables(&mut dev, &saved).expect("restored");
    verify_restored(&mut dev, &saved).expect("verified");
    assert_eq!(
        restore_state(&mut dev, TOTAL * SECTOR, &saved).expect("state"),
        RestoreState::Done
    );
    assert!(dev.into_inner() == disk, "restored byte for byte");
}

#[test]
fn a_shortened_entry_ends_on_a_mib_boundary_when_the_file_system_allows() {
    let disk = nixos_like(2000);
    let p = plan(&disk, false).expect("plannable");
    let Room::ShrinkEntry { sectors, .. } = p.room else {
        panic!("expected a shortened entry, got {:?}", p.room);
    };
    assert_eq!(sectors, 2048);
    assert_eq!(p.gpt.partitions[1].last_lba, 14335);
    assert_eq!(p.mbr[2].sectors, 14336 - 8192);
    let mut dev = Cursor::new(disk.clone());
    write_hybrid(&mut dev, &p).expect("written");
    verify_hybrid(&mut dev, &p).expect("verified");
    let saved = p.saved_tables();
    assert_eq!(
        restore_state(&mut dev, TOTAL * SECTOR, &saved).expect("state"),
        RestoreState::Applies
    );
}

#[test]
fn refuses_when_the_file_system_uses_the_tail_and_says_by_how_much() {
    let disk = nixos_like(4096);
    let err = plan(&disk, false).expect_err("no room");
    let text = err.to_string();
    assert!(
        matches!(err, ConvertError::NoRoomBackup { slot: 2, .. }),
        "{text}"
    );
    // 33 sectors = 16.5 KiB: 17 blocks of 1 KiB, leaving 4079.
    assert!(
        text.contains("by at least 17 blocks (17 KiB), to at most 4079 blocks"),
        "{text}"
    );
    assert!(text.contains("`resize2fs PARTITION 4079`"), "{text}");
}

#[test]
fn refuses_a_last_partition_without_ext4() {
    let mut disk = nixos_like(4096);
    let magic = (u64::from(ROOT_START) * SECTOR + 1024 + 0x38) as usize;
    disk[magic] = 0;
    let err = plan(&disk, false).expect_err("cannot measure");
    assert!(err.to_string().contains("no ext2/3/4 file system"), "{err}");
}

#[test]
fn grows_an_image_when_allowed() {
    let disk = nixos_like(4096);
    let p = plan(&disk, true).expect("plannable");
    assert_eq!(p.room, Room::Grow { bytes: GROW_BYTES });
    assert_eq!(p.grow_bytes(), GROW_BYTES);
    let new_total = TOTAL + GROW_BYTES / SECTOR;
    assert_eq!(
        p.gpt.partitions[1].last_lba,
        TOTAL - 1,
        "the partition keeps its size"
    );
    assert_eq!(p.gpt.backup_first_lba, new_total - 33);
    assert_eq!(p.mbr[2].sectors, TOTAL - 8192);

    let mut grown = disk.clone();
    let mut dev = Cursor::new(grown.clone());
    assert!(
        matches!(write_hybrid(&mut dev, &p), Err(ConvertError::Changed(_))),
        "the disk must be grown first"
    );
    grown.resize((new_total * SECTOR) as usize, 0);
    let mut dev = Cursor::new(grown);
    write_hybrid(&mut dev, &p).expect("written");
    verify_hybrid(&mut dev, &p).expect("verified");
}

/// A cut after every number of writes leaves either the old MBR disk or the complete hybrid,
/// and the same holds for the way back.
#[test]
fn power_cut_at_every_write_leaves_old_or_new() {
    let disk = nixos_like(4064);
    let p = plan(&disk, false).expect("plannable");
    let mut full = FaultyDevice::new(Cursor::new(disk.clone()), None);
    write_hybrid(&mut full, &p).expect("written");
    let writes = full.writes();
    assert_eq!(writes, 69, "1 + 32 + 1 sectors per GPT copy, then LBA 0");
    let hybrid = full.into_inner().into_inner();
    let new_tables = tables(&hybrid);
    assert_eq!(new_tables.0, TableKind::Hybrid);

    for k in 0..=writes {
        let mut dev = FaultyDevice::new(Cursor::new(disk.clone()), Some(k));
        // With k == writes every sector is written and only the last sync fails.
        let result = write_hybrid(&mut dev, &p);
        assert!(result.is_err(), "cut after {k} writes");
        let bytes = dev.into_inner().into_inner();
        let got = tables(&bytes);
        if k < writes {
            assert_eq!(got, (TableKind::Mbr, OLD_ENTRIES.to_vec()), "cut after {k}");
        } else {
            assert_eq!(got, new_tables);
            verify_hybrid(&mut Cursor::new(bytes), &p).expect("complete");
        }
    }

    let saved = p.saved_tables();
    let mut full = FaultyDevice::new(Cursor::new(hybrid.clone()), None);
    restore_tables(&mut full, &saved).expect("restored");
    let writes = full.writes();
    assert_eq!(writes, 67, "LBA 0, then 33 + 33 sectors");
    for k in 0..=writes {
        let mut dev = FaultyDevice::new(Cursor::new(hybrid.clone()), Some(k));
        let _ = restore_tables(&mut dev, &saved);
        let bytes = dev.into_inner().into_inner();
        let got = tables(&bytes);
        match k {
            0 => assert_eq!(got, new_tables),
            _ => assert_eq!(got, (TableKind::Mbr, OLD_ENTRIES.to_vec()), "cut after {k}"),
        }
        // An interrupted restore is finished by running it again.
        let state = restore_state(&mut Cursor::new(&bytes), TOTAL * SECTOR, &saved).expect("state");
        let want = match k {
            0 => RestoreState::Applies,
            _ if k == writes => RestoreState::Done,
            _ => RestoreState::Finish,
        };
        assert_eq!(state, want, "cut after {k}");
    }
}

#[test]
fn restoring_a_hybrid_writes_lba0_last() {
    // The way back from `partition mbr`: saved sectors of a hybrid, put onto the MBR disk.
    let disk = nixos_like(4064);
    let p = plan(&disk, false).expect("plannable");
    let mut dev = Cursor::new(disk.clone());
    write_hybrid(&mut dev, &p).expect("written");
    let hybrid = dev.into_inner();
    let saved = SavedTables::capture(&mut Cursor::new(&hybrid), TOTAL * SECTOR).expect("captured");
    assert!(saved.restores_gpt());
    let mut full = FaultyDevice::new(Cursor::new(disk.clone()), None);
    restore_tables(&mut full, &saved).expect("restored");
    let writes = full.writes();
    for k in 0..writes {
        let mut dev = FaultyDevice::new(Cursor::new(disk.clone()), Some(k));
        assert!(restore_tables(&mut dev, &saved).is_err());
        let got = tables(&dev.into_inner().into_inner());
        assert_eq!(got, (TableKind::Mbr, OLD_ENTRIES.to_vec()), "cut after {k}");
    }
    let bytes = full.into_inner().into_inner();
    assert!(bytes == hybrid);
}

#[test]
fn restore_state_refuses_other_partitions() {
    let disk = nixos_like(4064);
    let p = plan(&disk, false).expect("plannable");
    let saved = p.saved_tables();
    let mut other = Disk::new(TOTAL);
    other.mbr(1, 0x00, 0x0C, 4096, 4096);
    let bytes = other.read_vec(0, (TOTAL * SECTOR) as usize);
    let state = restore_state(&mut Cursor::new(bytes), TOTAL * SECTOR, &saved).expect("state");
    assert_eq!(
        state,
        RestoreState::Mismatch {
            now: vec![(4096, 8191)],
            saved: vec![(2048, 8191), (8192, TOTAL - 1)]
        }
    );
}

#[test]
fn saved_tables_are_checked() {
    let region = |offset: u64, len: usize| SavedRegion {
        name: "r".into(),
        offset,
        bytes: vec![0; len],
    };
    assert!(SavedTables::new(1 << 20, vec![region(0, 512)]).is_ok());
    for bad in [
        vec![region(512, 512)],
        vec![region(0, 500)],
        vec![region(0, 1024), region(512, 512)],
        vec![region(0, 512), region((1 << 20) - 512, 1024)],
        vec![region(0, 8 << 20)],
    ] {
        assert!(
            matches!(
                SavedTables::new(1 << 20, bad),
                Err(ConvertError::BadSaved(_))
            ),
            "accepted a bad region"
        );
    }
}

#[test]
fn refusals_name_the_reason() {
    // The first partition inside LBA 1-33.
    let mut d = Disk::new(TOTAL);
    d.mbr(1, 0, 0x0C, 32, 4096);
    let bytes = d.read_vec(0, (TOTAL * SECTOR) as usize);
    assert!(matches!(
        plan(&bytes, true),
        Err(ConvertError::NoRoomPrimary { slot: 1, start: 32 })
    ));

    // FAT in slot 2: the ROM would not boot it, and the hybrid needs it in slot 1.
    let mut d = Disk::new(TOTAL);
    d.mbr(1, 0, 0x83, 8192, 4096);
    d.mbr(2, 0, 0x0C, 2048, 4096);
    let bytes = d.read_vec(0, (TOTAL * SECTOR) as usize);
    let err = plan(&bytes, true).expect_err("refused");
    assert!(matches!(err, ConvertError::NoFirmware(_)), "{err}");
    assert!(err.to_string().contains("slot 2"), "{err}");

    // An unknown type.
    let mut d = Disk::new(TOTAL);
    d.mbr(1, 0, 0x0C, 2048, 4096);
    d.mbr(2, 0, 0xA5, 8192, 4096);
    let bytes = d.read_vec(0, (TOTAL * SECTOR) as usize);
    assert!(matches!(
        plan(&bytes, true),
        Err(ConvertError::UnknownType {
            slot: 2,
            type_byte: 0xA5
        })
    ));

    // An extended partition.
    let mut d = Disk::new(TOTAL);
    d.mbr(1, 0, 0x0C, 2048, 4096);
    d.mbr(2, 0, 0x05, 8192, 4096);
    let bytes = d.read_vec(0, (TOTAL * SECTOR) as usize);
    assert!(matches!(
        plan(&bytes, true),
        Err(ConvertError::Extended { slot: 2, .. })
    ));

    // Already converted.
    let disk = nixos_like(4064);
    let p = plan(&disk, false).expect("plannable");
    let mut dev = Cursor::new(disk);
    write_hybrid(&mut dev, &p).expect("written");
    assert!(matches!(
        plan(&dev.into_inner(), false),
        Err(ConvertError::NotMbr { .. })
    ));
}

#[test]
fn four_partitions_leave_one_out_of_the_hybrid_mbr() {
    let mut d = Disk::new(TOTAL);
    d.mbr(1, 0, 0x0C, 2048, 2048);
    d.mbr(2, 0, 0x82, 4096, 2048);
    d.mbr(3, 0x80, 0x83, 6144, 2048);
    d.mbr(4, 0, 0x83, 8192, 2048);
    let bytes = d.read_vec(0, (TOTAL * SECTOR) as usize);
    let p = plan(&bytes, false).expect("plannable");
    let names: Vec<_> = p.gpt.partitions.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["firmware", "swap2", "root", "linux4"]);
    let mirrored: Vec<_> = p.mbr.iter().map(|s| (s.slot, s.gpt_index)).collect();
    assert_eq!(
        mirrored,
        vec![(1, Some(1)), (2, None), (3, Some(3)), (4, Some(2))]
    );
    let left_out: Vec<_> = p
        .findings
        .iter()
        .filter(|f| f.code == "convert-not-mirrored")
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(left_out.len(), 1);
    assert!(
        left_out[0].starts_with("partition 4 (linux4)"),
        "{left_out:?}"
    );
    let mut dev = Cursor::new(bytes);
    write_hybrid(&mut dev, &p).expect("written");
    verify_hybrid(&mut dev, &p).expect("verified");
}
