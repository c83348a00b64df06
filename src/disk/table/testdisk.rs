//! Test-only: sparse in-memory disks with MBR, EBR and GPT bytes written by hand.
//!
//! Independent of the parser on purpose: offsets are written out here from the UEFI 2.10
//! tables, and the CRC32 is a bitwise implementation of its own, so a shared mistake would have
//! to be made twice.

use super::{Layout, SECTOR, read_layout};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

/// On-disk (mixed-endian) bytes of well-known GPT type GUIDs.
pub const ESP: [u8; 16] = [
    0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
];
pub const BASIC_DATA: [u8; 16] = [
    0xA2, 0xA0, 0xD0, 0xEB, 0xE5, 0xB9, 0x33, 0x44, 0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7,
];
pub const LINUX_FS: [u8; 16] = [
    0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
];

/// Bitwise CRC32 (IEEE 802.3, reflected, polynomial 0xEDB88320).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A disk of `len` bytes; unwritten sectors read as zeros.
#[derive(Debug, Clone)]
pub struct Disk {
    sectors: BTreeMap<u64, Vec<u8>>,
    len: u64,
    pos: u64,
}

/// A GPT partition for [`Disk::gpt`].
pub struct Part {
    pub type_guid: [u8; 16],
    pub first: u64,
    pub last: u64,
    pub name: &'static str,
}

/// Primary entry array LBA, backup layout: 128 entries of 128 bytes = 32 sectors.
const ENTRIES: u32 = 128;
const ENTRY_SIZE: u32 = 128;
const ARRAY_SECTORS: u64 = 32;

impl Disk {
    pub fn new(total_sectors: u64) -> Disk {
        Disk {
            sectors: BTreeMap::new(),
            len: total_sectors * SECTOR,
            pos: 0,
        }
    }

    /// Changes the disk size without moving anything (a truncated image, a larger card).
    pub fn resize(&mut self, total_sectors: u64) {
        self.len = total_sectors * SECTOR;
        self.sectors.retain(|&lba, _| lba < total_sectors);
    }

    pub fn total(&self) -> u64 {
        self.len / SECTOR
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let at = offset + i as u64;
            let sector = self
                .sectors
                .entry(at / SECTOR)
                .or_insert_with(|| vec![0; SECTOR as usize]);
            sector[(at % SECTOR) as usize] = b;
        }
    }

    pub fn read_vec(&self, offset: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let at = offset + i;
                self.sectors
                    .get(&(at / SECTOR))
                    .map_or(0, |s| s[(at % SECTOR) as usize])
            })
            .collect()
    }

    pub fn xor_byte(&mut self, offset: u64, mask: u8) {
        let b = self.read_vec(offset, 1)[0];
        self.write(offset, &[b ^ mask]);
    }

    pub fn put_u32(&mut self, offset: u64, v: u32) {
        self.write(offset, &v.to_le_bytes());
    }

    pub fn put_u64(&mut self, offset: u64, v: u64) {
        self.write(offset, &v.to_le_bytes());
    }

    /// Boot signature and disk signature of LBA 0.
    pub fn mbr_signature(&mut self, disk_id: u32) {
        self.write(510, &[0x55, 0xAA]);
        self.put_u32(440, disk_id);
    }

    /// A 16-byte partition record at `base` + 446 + 16 * (slot - 1).
    pub fn record(&mut self, base: u64, slot: u64, status: u8, ty: u8, start: u32, sectors: u32) {
        let at = base + 446 + 16 * (slot - 1);
        self.write(at, &[status]);
        self.write(at + 4, &[ty]);
        self.put_u32(at + 8, start);
        self.put_u32(at + 12, sectors);
    }

    /// A primary MBR entry (also sets the boot signature).
    pub fn mbr(&mut self, slot: u64, status: u8, ty: u8, start: u32, sectors: u32) {
        self.mbr_signature(0x2178_694e);
        self.record(0, slot, status, ty, start, sectors);
    }

    /// An EBR at `lba`: logical (type, start relative to the EBR, sectors) and the link to the
    /// next EBR (start relative to the extended partition, sectors).
    pub fn ebr(&mut self, lba: u64, logical: (u8, u32, u32), next: Option<(u32, u32)>) {
        let base = lba * SECTOR;
        self.write(base + 510, &[0x55, 0xAA]);
        self.record(base, 1, 0, logical.0, logical.1, logical.2);
        if let Some((rel, sectors)) = next {
            self.record(base, 2, 0, 0x05, rel, sectors);
        }
    }

    /// A protective MBR: 0xEE from LBA 1 over the rest of the disk.
    pub fn protective_mbr(&mut self) {
        let size = u32::try_from(self.total() - 1).unwrap_or(u32::MAX);
        self.mbr(1, 0, 0xEE, 1, size);
    }

    /// Both GPT copies: primary header at 1 with entries at 2..34, backup entries at the last
    /// 33 sectors and backup header at the last LBA. First usable 34, last usable total - 34.
    pub fn gpt(&mut self, parts: &[Part]) {
        let last = self.total() - 1;
        let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (i, p) in parts.iter().enumerate() {
            let e = &mut array[i * 128..(i + 1) * 128];
            e[0..16].copy_from_slice(&p.type_guid);
            e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
            e[32..40].copy_from_slice(&p.first.to_le_bytes());
            e[40..48].copy_from_slice(&p.last.to_le_bytes());
            for (j, u) in p.name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        let array_crc = crc32(&array);
        let backup_array = last - ARRAY_SECTORS;
        self.write(2 * SECTOR, &array);
        self.write(backup_array * SECTOR, &array);
        self.gpt_header(1, last, 2, array_crc);
        self.gpt_header(last, 1, backup_array, array_crc);
    }

    fn gpt_header(&mut self, lba: u64, alternate: u64, entries_lba: u64, array_crc: u32) {
        let base = lba * SECTOR;
        self.write(base, b"EFI PART");
        self.put_u32(base + 8, 0x0001_0000);
        self.put_u32(base + 12, 92);
        self.put_u64(base + 24, lba);
        self.put_u64(base + 32, alternate);
        self.put_u64(base + 40, 34);
        self.put_u64(base + 48, self.total() - 34);
        self.write(base + 56, &[0xD1; 16]);
        self.put_u64(base + 72, entries_lba);
        self.put_u32(base + 80, ENTRIES);
        self.put_u32(base + 84, ENTRY_SIZE);
        self.put_u32(base + 88, array_crc);
        self.fix_header_crc(lba);
    }

    /// Recomputes the header CRC of the GPT header at `lba` (after a test edited a field).
    pub fn fix_header_crc(&mut self, lba: u64) {
        let base = lba * SECTOR;
        self.put_u32(base + 16, 0);
        let crc = crc32(&self.read_vec(base, 92));
        self.put_u32(base + 16, crc);
    }

    /// Byte offset of GPT entry `index` (1-based) in the primary array.
    pub fn primary_entry(index: u64) -> u64 {
        2 * SECTOR + (index - 1) * 128
    }

    pub fn layout(&self) -> Layout {
        let mut d = self.clone();
        d.pos = 0;
        read_layout(&mut d, self.len).expect("reading an in-memory disk")
    }

    /// Finding codes, in order.
    pub fn codes(&self) -> Vec<String> {
        self.layout()
            .findings
            .iter()
            .map(|f| f.code.clone())
            .collect()
    }
}

impl Read for Disk {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        let data = self.read_vec(self.pos, n);
        buf[..n].copy_from_slice(&data);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Disk {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.pos = match pos {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.len.saturating_add_signed(d),
            SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
        };
        Ok(self.pos)
    }
}
