//! Bytes of the tables pifw writes: GUIDs, MBR partition records, GPT headers and entry arrays.
//!
//! The inverse of [`super::super::mbr`] and [`super::super::gpt`], from the same spec tables
//! (UEFI 2.10 §5.2.1 Table 5-2 for MBR records, §5.3.2 Table 5-5 for the GPT header, §5.3.3
//! Table 5-6 for entries). Pure functions over byte arrays: nothing here reads or writes a disk.
//! The unit tests feed every encoded table back through the validating parser.

use super::super::SECTOR;
use super::super::gpt::guid_text;
use std::fmt;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Entries in the arrays pifw writes: 128 of 128 bytes = 16 KiB = 32 sectors, the spec minimum
/// and what every tool writes.
pub const ENTRY_COUNT: u32 = 128;
pub const ENTRY_SIZE: u32 = 128;
pub const ARRAY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE as u64) / SECTOR;
/// Sectors one GPT copy occupies: the header and the entry array.
pub const COPY_SECTORS: u64 = 1 + ARRAY_SECTORS;

/// A GUID in its on-disk byte order (first three fields little-endian, UEFI 2.10 Appendix A).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// A version-4 (random) GUID from 16 random bytes, RFC 9562 §5.4: the version nibble and
    /// the variant bits are forced, the other 122 bits are the input's.
    pub fn random_v4(mut b: [u8; 16]) -> Guid {
        // `b` is taken in text order (the order the canonical form prints).
        b[6] = (b[6] & 0x0F) | 0x40;
        b[8] = (b[8] & 0x3F) | 0x80;
        Guid::from_text_order(b)
    }

    /// Parses the canonical text form (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`, any case).
    pub fn parse(text: &str) -> Option<Guid> {
        let groups: Vec<&str> = text.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return None;
        }
        let hex: String = groups.concat();
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Guid::from_text_order(b))
    }

    fn from_text_order(b: [u8; 16]) -> Guid {
        let mut d = b;
        d[0..4].reverse();
        d[4..6].reverse();
        d[6..8].reverse();
        Guid(d)
    }

    /// Uppercase canonical text, as the parser reports it.
    pub fn text(&self) -> String {
        guid_text(&self.0)
    }

    /// Lowercase canonical text: Linux's PARTUUID, what `root=PARTUUID=` must say.
    pub fn partuuid(&self) -> String {
        self.text().to_ascii_lowercase()
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Cylinder/head/sector of `lba` in the 255-head, 63-sector translation every partitioner
/// uses, packed as an MBR record stores it (head; sector | cylinder bits 8-9 << 6; cylinder
/// bits 0-7). Past cylinder 1023 the fields saturate to FE FF FF, the conventional "use the
/// LBA fields" value. Nothing pifw cares about reads CHS; it is written for old tools.
pub fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cylinder = lba / (HEADS * SECTORS);
    if cylinder > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    [
        head as u8,
        (sector as u8) | (((cylinder >> 8) as u8 & 0x03) << 6),
        cylinder as u8,
    ]
}

/// A 16-byte MBR partition record (UEFI 2.10 §5.2.1, Table 5-2) with CHS computed from the LBAs.
/// `start` and `sectors` must fit 32 bits (the caller checks; MBR disks cannot say more).
pub fn mbr_record(bootable: bool, type_byte: u8, start: u32, sectors: u32) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[0] = if bootable { 0x80 } else { 0x00 };
    r[1..4].copy_from_slice(&chs(u64::from(start)));
    r[4] = type_byte;
    let last = u64::from(start) + u64::from(sectors).saturating_sub(1);
    r[5..8].copy_from_slice(&chs(last));
    r[8..12].copy_from_slice(&start.to_le_bytes());
    r[12..16].copy_from_slice(&sectors.to_le_bytes());
    r
}

/// One GPT partition entry to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryOut {
    /// 1-based index in the array.
    pub index: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    /// At most 36 UTF-16 code units (longer names are cut).
    pub name: String,
}

/// The entry array (UEFI 2.10 §5.3.3, Table 5-6): [`ENTRY_COUNT`] entries of [`ENTRY_SIZE`]
/// bytes, each entry at `(index - 1) * 128`, unused entries all zero. `index` must be
/// 1..=[`ENTRY_COUNT`].
pub fn entry_array(entries: &[EntryOut]) -> Vec<u8> {
    let mut a = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
    for e in entries {
        let at = (e.index as usize - 1) * ENTRY_SIZE as usize;
        let b = &mut a[at..at + ENTRY_SIZE as usize];
        b[0..16].copy_from_slice(&e.type_guid.0);
        b[16..32].copy_from_slice(&e.unique_guid.0);
        b[32..40].copy_from_slice(&e.first_lba.to_le_bytes());
        b[40..48].copy_from_slice(&e.last_lba.to_le_bytes());
        b[48..56].copy_from_slice(&e.attributes.to_le_bytes());
        for (i, unit) in e.name.encode_utf16().take(36).enumerate() {
            b[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
    a
}

/// The fields of one GPT header that differ between the two copies, plus the shared ones.
#[derive(Debug, Clone, Copy)]
pub struct HeaderOut {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
}

/// A GPT header sector (UEFI 2.10 §5.3.2, Table 5-5): revision 1.0, 92-byte header, CRCs of
/// the header and of `array`, the rest of the sector zero.
pub fn header(h: &HeaderOut, array: &[u8]) -> [u8; SECTOR as usize] {
    let mut s = [0u8; SECTOR as usize];
    s[0..8].copy_from_slice(b"EFI PART");
    s[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    s[12..16].copy_from_slice(&92u32.to_le_bytes());
    // 16..20: header CRC, computed last; 20..24 reserved.
    s[24..32].copy_from_slice(&h.my_lba.to_le_bytes());
    s[32..40].copy_from_slice(&h.alternate_lba.to_le_bytes());
    s[40..48].copy_from_slice(&h.first_usable_lba.to_le_bytes());
    s[48..56].copy_from_slice(&h.last_usable_lba.to_le_bytes());
    s[56..72].copy_from_slice(&h.disk_guid.0);
    s[72..80].copy_from_slice(&h.entries_lba.to_le_bytes());
    s[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
    s[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
    s[88..92].copy_from_slice(&CRC32.checksum(array).to_le_bytes());
    let crc = CRC32.checksum(&s[..92]);
    s[16..20].copy_from_slice(&crc.to_le_bytes());
    s
}

/// Both GPT copies of a disk of `total_lbas` sectors: `(primary, backup)`, each
/// [`COPY_SECTORS`] sectors. The primary is LBA 1 (header) then 2..=33 (array); the backup is
/// the array at `total - 33` then the header at the last LBA, so each is laid out in disk
/// order starting at its first LBA.
pub fn gpt_copies(total_lbas: u64, disk_guid: Guid, entries: &[EntryOut]) -> (Vec<u8>, Vec<u8>) {
    let array = entry_array(entries);
    let last = total_lbas - 1;
    let backup_array_lba = total_lbas - COPY_SECTORS;
    let common = HeaderOut {
        my_lba: 1,
        alternate_lba: last,
        first_usable_lba: 1 + COPY_SECTORS,
        last_usable_lba: backup_array_lba - 1,
        disk_guid,
        entries_lba: 2,
    };
    let mut primary = header(&common, &array).to_vec();
    primary.extend_from_slice(&array);
    let backup_header = header(
        &HeaderOut {
            my_lba: last,
            alternate_lba: 1,
            entries_lba: backup_array_lba,
            ..common
        },
        &array,
    );
    let mut backup = array;
    backup.extend_from_slice(&backup_header);
    (primary, backup)
}

#[cfg(test)]
mod tests {
    use super::super::super::testdisk::{Disk, crc32};
    use super::super::super::{SECTOR, TableKind};
    use super::*;

    #[test]
    fn guid_text_round_trip_and_byte_order() {
        let esp = Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").expect("valid");
        assert_eq!(
            esp.0,
            super::super::super::testdisk::ESP,
            "mixed-endian on disk"
        );
        assert_eq!(esp.text(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(esp.partuuid(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert!(Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93").is_none());
        assert!(Guid::parse("C12A7328F81F-11D2-BA4B-00A0C93EC93B0").is_none());
        assert!(Guid::parse("G12A7328-F81F-11D2-BA4B-00A0C93EC93B").is_none());
    }

    #[test]
    fn random_guids_carry_version_4_and_the_rfc_variant() {
        let g = Guid::random_v4([0xFF; 16]).text();
        assert_eq!(g, "FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF");
        let g = Guid::random_v4([0x00; 16]).text();
        assert_eq!(g, "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn chs_matches_the_classic_translation() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(1), [0, 2, 0]);
        // LBA 16383 = cylinder 1, head 5, sector 4 (16383 = 1*16065 + 5*63 + 3).
        assert_eq!(chs(16383), [5, 4, 1]);
        // Cylinder 256 sets bit 6 of the sector byte.
        assert_eq!(chs(256 * 16065), [0, 0x41, 0]);
        assert_eq!(chs(1024 * 16065), [0xFE, 0xFF, 0xFF]);
    }

    #[test]
    fn mbr_record_fields() {
        let r = mbr_record(true, 0xEE, 1, 16383);
        assert_eq!(r[0], 0x80);
        assert_eq!(&r[1..4], &[0, 2, 0]);
        assert_eq!(r[4], 0xEE);
        assert_eq!(&r[5..8], &chs(16383));
        assert_eq!(&r[8..12], &1u32.to_le_bytes());
        assert_eq!(&r[12..16], &16383u32.to_le_bytes());
    }

    /// The encoded copies, written onto a disk with a protective MBR, read back through the
    /// validating parser with no findings, and the CRCs agree with an independent CRC32.
    #[test]
    fn encoded_gpt_reads_back_clean() {
        let total = 131072;
        let disk_guid = Guid::parse("2178694E-0000-4000-8000-0000000000AA").expect("valid");
        let entries = vec![
            EntryOut {
                index: 1,
                type_guid: Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").expect("valid"),
                unique_guid: Guid::random_v4([1; 16]),
                first_lba: 2048,
                last_lba: 63487,
                attributes: 0,
                name: "firmware".into(),
            },
            EntryOut {
                index: 2,
                type_guid: Guid::parse("0FC63DAF-8483-4772-8E79-3D69D8477DE4").expect("valid"),
                unique_guid: Guid::random_v4([2; 16]),
                first_lba: 63488,
                last_lba: total - 34,
                attributes: 1 << 2,
                name: "a name longer than thirty-six UTF-16 units is cut".into(),
            },
        ];
        let (primary, backup) = gpt_copies(total, disk_guid, &entries);
        assert_eq!(primary.len() as u64, COPY_SECTORS * SECTOR);
        assert_eq!(backup.len() as u64, COPY_SECTORS * SECTOR);
        let array = &primary[SECTOR as usize..];
        assert_eq!(
            u32::from_le_bytes(primary[88..92].try_into().expect("4 bytes")),
            crc32(array)
        );

        let mut d = Disk::new(total);
        d.protective_mbr();
        d.write(SECTOR, &primary);
        d.write((total - COPY_SECTORS) * SECTOR, &backup);
        let layout = d.layout();
        assert_eq!(layout.kind, TableKind::Gpt);
        assert!(layout.findings.is_empty(), "{:?}", layout.findings);
        let gpt = layout.gpt.expect("a GPT");
        assert!(gpt.primary_valid && gpt.backup_valid);
        assert_eq!(gpt.disk_guid, disk_guid.text());
        assert_eq!(
            (gpt.first_usable_lba, gpt.last_usable_lba),
            (34, total - 34)
        );
        let got: Vec<_> = gpt
            .entries
            .iter()
            .map(|e| {
                (
                    e.index,
                    e.first_lba,
                    e.last_lba,
                    e.attributes,
                    e.name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 2048, 63487, 0, "firmware"),
                (
                    2,
                    63488,
                    total - 34,
                    4,
                    "a name longer than thirty-six UTF-16"
                )
            ]
        );
        assert_eq!(gpt.entries[0].unique_guid, entries[0].unique_guid.text());
    }
}
