//! Reading File Allocation Table entries.
//!
//! Owns decoding one FAT entry (12, 16 or 28 significant bits, fatgen103 section 4) and
//! classifying it. Entries are read through a small window cache so that following a chain
//! costs one read per window, not one per cluster, and no FAT copy is ever held in memory whole.

use super::FatType;
use super::boot_sector::Geometry;
use std::io::{self, Read, Seek, SeekFrom};

/// Size of the cached window over the FAT. Large enough that a whole FAT16 of a 30 MiB firmware
/// partition fits; small enough for the 16 MiB RSS budget.
const WINDOW: usize = 64 * 1024;

/// What a FAT entry says about the cluster it belongs to (fatgen103 section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// 0: the cluster is free.
    Free,
    /// The next cluster of the chain (a value in `2..=max_cluster`).
    Next(u32),
    /// 0xFF7 / 0xFFF7 / 0x0FFFFFF7: marked bad.
    Bad,
    /// 0xFF8.. / 0xFFF8.. / 0x0FFFFFF8..: last cluster of a chain.
    EndOfChain,
    /// Any other value: 1, a number past the last cluster, or a reserved value.
    Invalid(u32),
}

/// A cached reader of one FAT copy.
pub(crate) struct FatReader {
    fat_type: FatType,
    max_cluster: u32,
    /// Offset of the FAT copy within the partition.
    base: u64,
    fat_bytes: u64,
    window: Vec<u8>,
    /// FAT-relative offset of `window[0]`.
    window_start: u64,
}

impl FatReader {
    /// A reader over FAT copy `copy` (0-based).
    pub fn new(geo: &Geometry, copy: u8) -> Self {
        FatReader {
            fat_type: geo.fat_type,
            max_cluster: geo.max_cluster(),
            base: geo.fat_offset + u64::from(copy) * geo.fat_bytes,
            fat_bytes: geo.fat_bytes,
            window: Vec::new(),
            window_start: 0,
        }
    }

    /// Returns `len` bytes at FAT-relative `offset`, refilling the window if needed.
    fn bytes<R: Read + Seek>(&mut self, r: &mut R, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = offset + len as u64;
        let cached =
            offset >= self.window_start && end <= self.window_start + self.window.len() as u64;
        if !cached {
            // Align so that sequential chain walks and whole-table scans share windows.
            let start = offset - offset % WINDOW as u64;
            let want = (self.fat_bytes - start).min(2 * WINDOW as u64) as usize;
            let want = want.max((end - start) as usize);
            self.window.resize(want, 0);
            r.seek(SeekFrom::Start(self.base + start))?;
            r.read_exact(&mut self.window)?;
            self.window_start = start;
        }
        let lo = (offset - self.window_start) as usize;
        Ok(&self.window[lo..lo + len])
    }

    /// The raw value of entry `n` (FAT32: the upper 4 bits masked off, fatgen103 section 4).
    pub fn raw<R: Read + Seek>(&mut self, r: &mut R, n: u32) -> io::Result<u32> {
        let n64 = u64::from(n);
        Ok(match self.fat_type {
            FatType::Fat12 => {
                // Entry n occupies 12 bits starting at byte n + n/2 (fatgen103 section 4,
                // "FAT12 ... FATOffset = N + (N / 2)").
                let b = self.bytes(r, n64 + n64 / 2, 2)?;
                let pair = u16::from_le_bytes([b[0], b[1]]);
                u32::from(if n.is_multiple_of(2) {
                    pair & 0x0FFF
                } else {
                    pair >> 4
                })
            }
            FatType::Fat16 => {
                let b = self.bytes(r, n64 * 2, 2)?;
                u32::from(u16::from_le_bytes([b[0], b[1]]))
            }
            FatType::Fat32 => {
                let b = self.bytes(r, n64 * 4, 4)?;
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x0FFF_FFFF
            }
        })
    }

    /// Entry `n`, classified.
    pub fn entry<R: Read + Seek>(&mut self, r: &mut R, n: u32) -> io::Result<Entry> {
        let v = self.raw(r, n)?;
        let bad = match self.fat_type {
            FatType::Fat12 => 0xFF7,
            FatType::Fat16 => 0xFFF7,
            FatType::Fat32 => 0x0FFF_FFF7,
        };
        Ok(if v == 0 {
            Entry::Free
        } else if (2..=self.max_cluster).contains(&v) {
            Entry::Next(v)
        } else if v == bad {
            Entry::Bad
        } else if v > bad {
            Entry::EndOfChain
        } else {
            Entry::Invalid(v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn geo(fat_type: FatType, fat: &[u8]) -> Geometry {
        Geometry {
            fat_type,
            bytes_per_sector: 512,
            cluster_bytes: 512,
            fat_offset: 0,
            fat_bytes: fat.len() as u64,
            fats: 1,
            fats_mirrored: true,
            root_dir_offset: 0,
            root_dir_bytes: 0,
            data_offset: 0,
            cluster_count: 100,
            root_cluster: 0,
            volume_bytes: 0,
            fs_info_offset: None,
        }
    }

    #[test]
    fn fat12_packs_two_entries_in_three_bytes() {
        // Entries 2 = 0x003, 3 = 0xFFF (fatgen103's example layout: low nibble first).
        let fat = vec![0xF8, 0xFF, 0xFF, 0x03, 0xF0, 0xFF];
        let g = geo(FatType::Fat12, &fat);
        let mut r = FatReader::new(&g, 0);
        let mut c = Cursor::new(fat);
        assert_eq!(r.entry(&mut c, 2).expect("read"), Entry::Next(3));
        assert_eq!(r.entry(&mut c, 3).expect("read"), Entry::EndOfChain);
    }

    #[test]
    fn fat32_ignores_the_top_four_bits() {
        let mut fat = vec![0u8; 16];
        fat[8..12].copy_from_slice(&0xF000_0003u32.to_le_bytes());
        fat[12..16].copy_from_slice(&0x0FFF_FFF7u32.to_le_bytes());
        let g = geo(FatType::Fat32, &fat);
        let mut r = FatReader::new(&g, 0);
        let mut c = Cursor::new(fat);
        assert_eq!(r.entry(&mut c, 2).expect("read"), Entry::Next(3));
        assert_eq!(r.entry(&mut c, 3).expect("read"), Entry::Bad);
    }

    #[test]
    fn fat16_out_of_range_value_is_invalid() {
        let mut fat = vec![0u8; 8];
        fat[4..6].copy_from_slice(&500u16.to_le_bytes());
        let g = geo(FatType::Fat16, &fat);
        let mut r = FatReader::new(&g, 0);
        let mut c = Cursor::new(fat);
        assert_eq!(r.entry(&mut c, 2).expect("read"), Entry::Invalid(500));
        assert_eq!(r.entry(&mut c, 3).expect("read"), Entry::Free);
    }
}
