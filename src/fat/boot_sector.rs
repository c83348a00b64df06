//! The boot sector (BPB) and the volume geometry derived from it.
//!
//! Owns parsing and validating sector 0 of a FAT volume, and the arithmetic that turns the BPB
//! into byte offsets: where each FAT copy starts, where the FAT12/16 root directory sits, where
//! the data area begins, how many clusters there are and so which FAT type the volume is.
//! Everything follows the Microsoft "FAT: General Overview of On-Disk Format" (fatgen103,
//! version 1.03), sections 3 (BPB) and 3.5 (FAT type determination). Nothing here writes.

use super::{FatError, FatType};
use std::io::{Read, Seek, SeekFrom};

/// Bytes of sector 0 that the BPB and the signature occupy; the signature sits at 510
/// whatever the sector size (fatgen103 section 3.1, "Signature_word").
const BOOT_SECTOR_BYTES: usize = 512;

/// The raw BPB fields this crate uses, as stored in sector 0 (little-endian).
///
/// Offsets and sizes are from fatgen103 section 3.1 (common BPB), 3.2 (FAT12/16 extension)
/// and 3.3 (FAT32 extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BootSector {
    /// `BPB_BytsPerSec`, offset 11, 2 bytes: 512, 1024, 2048 or 4096.
    pub bytes_per_sector: u16,
    /// `BPB_SecPerClus`, offset 13, 1 byte: a power of two, 1..=128.
    pub sectors_per_cluster: u8,
    /// `BPB_RsvdSecCnt`, offset 14, 2 bytes: sectors before the first FAT; never 0.
    pub reserved_sectors: u16,
    /// `BPB_NumFATs`, offset 16, 1 byte: number of FAT copies, normally 2.
    pub fats: u8,
    /// `BPB_RootEntCnt`, offset 17, 2 bytes: 32-byte entries in the fixed FAT12/16 root
    /// directory; 0 on FAT32.
    pub root_entries: u16,
    /// `BPB_TotSec16`, offset 19, 2 bytes: total sectors if they fit, else 0.
    pub total_sectors_16: u16,
    /// `BPB_FATSz16`, offset 22, 2 bytes: sectors per FAT copy on FAT12/16; 0 on FAT32.
    pub fat_size_16: u16,
    /// `BPB_TotSec32`, offset 32, 4 bytes: total sectors when `BPB_TotSec16` is 0.
    pub total_sectors_32: u32,
    /// `BPB_FATSz32`, offset 36, 4 bytes (FAT32 only): sectors per FAT copy.
    pub fat_size_32: u32,
    /// `BPB_ExtFlags`, offset 40, 2 bytes (FAT32 only): bit 7 set = FAT mirroring disabled,
    /// bits 0-3 = the one active FAT then.
    pub ext_flags: u16,
    /// `BPB_RootClus`, offset 44, 4 bytes (FAT32 only): first cluster of the root directory.
    pub root_cluster: u32,
    /// `BPB_FSInfo`, offset 48, 2 bytes (FAT32 only): sector number of the FSInfo structure.
    pub fs_info_sector: u16,
    /// `BS_Reserved1`, offset 37 (FAT12/16) or 65 (FAT32), 1 byte. fatgen103 says "set to 0";
    /// Windows NT and Linux use bit 0 as "volume dirty" and bit 1 as "I/O error seen", and
    /// `fsck.fat` reads the dirty bit from here.
    pub state_flags: u8,
    /// `BS_BootSig`, offset 38 (FAT12/16) or 66 (FAT32), 1 byte: 0x29 when the volume ID,
    /// label and type fields that follow are present.
    pub boot_signature: u8,
    /// `BS_VolID`, offset 39 (FAT12/16) or 67 (FAT32), 4 bytes.
    pub volume_id: u32,
    /// `BS_VolLab`, offset 43 (FAT12/16) or 71 (FAT32), 11 bytes, space padded.
    pub volume_label: [u8; 11],
    /// Offset 510, 2 bytes: must read 0x55 0xAA.
    pub signature: [u8; 2],
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl BootSector {
    /// Decodes the first 512 bytes of the volume. Which extension (FAT12/16 or FAT32) applies
    /// is decided the way fatgen103 section 3.5 implies: `BPB_FATSz16 == 0` means FAT32 layout.
    pub fn parse(b: &[u8; BOOT_SECTOR_BYTES]) -> Self {
        let fat_size_16 = u16_at(b, 22);
        // The extended boot record starts at 36 (FAT12/16) or 64 (FAT32).
        let ext = if fat_size_16 == 0 { 64 } else { 36 };
        let mut volume_label = [0u8; 11];
        volume_label.copy_from_slice(&b[ext + 7..ext + 18]);
        BootSector {
            bytes_per_sector: u16_at(b, 11),
            sectors_per_cluster: b[13],
            reserved_sectors: u16_at(b, 14),
            fats: b[16],
            root_entries: u16_at(b, 17),
            total_sectors_16: u16_at(b, 19),
            fat_size_16,
            total_sectors_32: u32_at(b, 32),
            fat_size_32: if fat_size_16 == 0 { u32_at(b, 36) } else { 0 },
            ext_flags: if fat_size_16 == 0 { u16_at(b, 40) } else { 0 },
            root_cluster: if fat_size_16 == 0 { u32_at(b, 44) } else { 0 },
            fs_info_sector: if fat_size_16 == 0 { u16_at(b, 48) } else { 0 },
            state_flags: b[ext + 1],
            boot_signature: b[ext + 2],
            volume_id: u32_at(b, ext + 3),
            volume_label,
            signature: [b[510], b[511]],
        }
    }

    /// The label from the boot sector, `None` for the "NO NAME" placeholder or blanks.
    pub fn label(&self) -> Option<String> {
        if self.boot_signature != 0x29 {
            return None;
        }
        let text: String = self
            .volume_label
            .iter()
            .map(|&c| if c.is_ascii() { c as char } else { '?' })
            .collect();
        let text = text.trim_end_matches([' ', '\0']);
        if text.is_empty() || text == "NO NAME" {
            None
        } else {
            Some(text.to_string())
        }
    }

    /// The volume serial number, 0 when the extended boot signature says it is absent.
    pub fn volume_id(&self) -> u32 {
        if matches!(self.boot_signature, 0x28 | 0x29) {
            self.volume_id
        } else {
            0
        }
    }
}

/// Byte-level layout of a validated volume. All offsets are relative to the partition start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub fat_type: FatType,
    pub bytes_per_sector: u64,
    pub cluster_bytes: u64,
    /// Offset of FAT copy 0.
    pub fat_offset: u64,
    /// Bytes per FAT copy.
    pub fat_bytes: u64,
    pub fats: u8,
    /// FAT mirroring is on (always on FAT12/16; FAT32 `BPB_ExtFlags` bit 7 clear).
    pub fats_mirrored: bool,
    /// Offset and size of the fixed FAT12/16 root directory (size 0 on FAT32).
    pub root_dir_offset: u64,
    pub root_dir_bytes: u64,
    /// Offset of cluster 2, the first data cluster.
    pub data_offset: u64,
    /// Number of data clusters; valid cluster numbers are `2..=cluster_count + 1`.
    pub cluster_count: u32,
    /// FAT32 root directory cluster (0 on FAT12/16).
    pub root_cluster: u32,
    /// Bytes the volume claims: total sectors × sector size.
    pub volume_bytes: u64,
    /// Byte offset of the FAT32 FSInfo sector, if the BPB names one.
    pub fs_info_offset: Option<u64>,
}

impl Geometry {
    /// The highest valid cluster number.
    pub fn max_cluster(&self) -> u32 {
        self.cluster_count + 1
    }

    /// Byte offset of a data cluster (caller guarantees `2..=max_cluster`).
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster - 2) * self.cluster_bytes
    }
}

fn not_fat(reason: impl Into<String>) -> FatError {
    FatError::NotFat {
        reason: reason.into(),
    }
}

/// Validates the BPB and derives the geometry. `slice_len` is the size of the byte range the
/// volume lives in: a volume claiming more than that (a truncated image, a partition entry
/// smaller than the file system) is reported as damaged instead of read past its end.
pub(crate) fn geometry(bs: &BootSector, slice_len: u64) -> Result<Geometry, FatError> {
    if bs.signature != [0x55, 0xAA] {
        return Err(not_fat(format!(
            "no boot sector signature (bytes 510-511 are {:02x} {:02x}, expected 55 aa)",
            bs.signature[0], bs.signature[1]
        )));
    }
    let bps = bs.bytes_per_sector;
    if !(512..=4096).contains(&bps) || !bps.is_power_of_two() {
        return Err(not_fat(format!(
            "bytes per sector is {bps}, expected 512, 1024, 2048 or 4096"
        )));
    }
    let spc = bs.sectors_per_cluster;
    if spc == 0 || !spc.is_power_of_two() {
        return Err(not_fat(format!(
            "sectors per cluster is {spc}, expected a power of two up to 128"
        )));
    }
    if bs.reserved_sectors == 0 {
        return Err(not_fat("reserved sector count is 0"));
    }
    if bs.fats == 0 {
        return Err(not_fat("number of FATs is 0"));
    }
    let total_sectors = if bs.total_sectors_16 != 0 {
        u64::from(bs.total_sectors_16)
    } else {
        u64::from(bs.total_sectors_32)
    };
    if total_sectors == 0 {
        return Err(not_fat("total sector count is 0"));
    }
    let fat_sectors = if bs.fat_size_16 != 0 {
        u64::from(bs.fat_size_16)
    } else {
        u64::from(bs.fat_size_32)
    };
    if fat_sectors == 0 {
        return Err(not_fat("FAT size is 0 sectors"));
    }
    let bps64 = u64::from(bps);
    // fatgen103 section 3.5: RootDirSectors rounds up; DataSec and CountofClusters round down.
    let root_dir_sectors = (u64::from(bs.root_entries) * 32).div_ceil(bps64);
    let meta_sectors =
        u64::from(bs.reserved_sectors) + u64::from(bs.fats) * fat_sectors + root_dir_sectors;
    if meta_sectors >= total_sectors {
        return Err(not_fat(format!(
            "reserved sectors, FATs and root directory ({meta_sectors} sectors) fill the whole \
             volume ({total_sectors} sectors)"
        )));
    }
    let clusters = (total_sectors - meta_sectors) / u64::from(spc);
    let fat_type = if clusters < 4085 {
        FatType::Fat12
    } else if clusters < 65525 {
        FatType::Fat16
    } else {
        FatType::Fat32
    };
    if clusters == 0 {
        return Err(not_fat("the data area holds no whole cluster"));
    }
    // Above 0x0FFFFFF6 cluster numbers collide with the bad/end-of-chain markers.
    if clusters > 0x0FFF_FFF5 {
        return Err(not_fat(format!(
            "{clusters} clusters is more than FAT32 allows"
        )));
    }
    let cluster_count = clusters as u32;
    let is_fat32 = fat_type == FatType::Fat32;
    if is_fat32 != (bs.fat_size_16 == 0) {
        return Err(not_fat(format!(
            "{clusters} clusters make this {fat_type:?}, but the BPB is laid out for {} \
             (BPB_FATSz16 = {})",
            if bs.fat_size_16 == 0 {
                "FAT32"
            } else {
                "FAT12/16"
            },
            bs.fat_size_16
        )));
    }
    if is_fat32 && bs.root_entries != 0 {
        return Err(not_fat(format!(
            "FAT32 volume with {} fixed root directory entries",
            bs.root_entries
        )));
    }
    if !is_fat32 && bs.root_entries == 0 {
        return Err(not_fat("FAT12/16 volume without root directory entries"));
    }
    let bits: u64 = match fat_type {
        FatType::Fat12 => 12,
        FatType::Fat16 => 16,
        FatType::Fat32 => 32,
    };
    let fat_bytes = fat_sectors * bps64;
    let needed = (u64::from(cluster_count) + 2) * bits;
    if fat_bytes * 8 < needed {
        return Err(not_fat(format!(
            "a FAT of {fat_bytes} bytes cannot hold {cluster_count} clusters of {fat_type:?}"
        )));
    }
    if is_fat32 && !(2..=cluster_count + 1).contains(&bs.root_cluster) {
        return Err(FatError::Damaged {
            reason: format!(
                "root directory cluster {} is outside 2..={}",
                bs.root_cluster,
                cluster_count + 1
            ),
        });
    }
    let volume_bytes = total_sectors * bps64;
    if volume_bytes > slice_len {
        return Err(FatError::Damaged {
            reason: format!(
                "the volume is {volume_bytes} bytes but its partition holds only {slice_len} \
                 (truncated image or partition smaller than the file system)"
            ),
        });
    }
    let fat_offset = u64::from(bs.reserved_sectors) * bps64;
    let root_dir_offset = fat_offset + u64::from(bs.fats) * fat_bytes;
    let fs_info_offset = (is_fat32 && bs.fs_info_sector != 0 && bs.fs_info_sector != 0xFFFF)
        .then(|| u64::from(bs.fs_info_sector) * bps64);
    Ok(Geometry {
        fat_type,
        bytes_per_sector: bps64,
        cluster_bytes: bps64 * u64::from(spc),
        fat_offset,
        fat_bytes,
        fats: bs.fats,
        fats_mirrored: !is_fat32 || bs.ext_flags & 0x80 == 0,
        root_dir_offset,
        root_dir_bytes: root_dir_sectors * bps64,
        data_offset: meta_sectors * bps64,
        cluster_count,
        root_cluster: if is_fat32 { bs.root_cluster } else { 0 },
        volume_bytes,
        fs_info_offset,
    })
}

/// Reads sector 0 and the slice length, then validates. Leaves the stream position undefined.
pub(crate) fn read<R: Read + Seek>(part: &mut R) -> Result<(BootSector, Geometry), FatError> {
    let slice_len = part.seek(SeekFrom::End(0))?;
    if slice_len < BOOT_SECTOR_BYTES as u64 {
        return Err(not_fat(format!(
            "the partition is {slice_len} bytes, smaller than a boot sector"
        )));
    }
    part.seek(SeekFrom::Start(0))?;
    let mut buf = [0u8; BOOT_SECTOR_BYTES];
    part.read_exact(&mut buf)?;
    let bs = BootSector::parse(&buf);
    let geo = geometry(&bs, slice_len)?;
    Ok((bs, geo))
}

/// The FAT32 FSInfo sector (fatgen103 section 5), only the fields the checker compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FsInfo {
    /// `FSI_LeadSig` (offset 0, 4 bytes) = 0x41615252, `FSI_StrucSig` (offset 484, 4 bytes) =
    /// 0x61417272 and `FSI_TrailSig` (offset 508, 4 bytes) = 0xAA550000 all present.
    pub signatures_ok: bool,
    /// `FSI_Free_Count`, offset 488, 4 bytes: last known free cluster count, 0xFFFFFFFF unknown.
    pub free_count: u32,
}

impl FsInfo {
    pub fn read<R: Read + Seek>(part: &mut R, offset: u64) -> std::io::Result<Self> {
        let mut b = [0u8; 512];
        part.seek(SeekFrom::Start(offset))?;
        part.read_exact(&mut b)?;
        Ok(FsInfo {
            signatures_ok: u32_at(&b, 0) == 0x4161_5252
                && u32_at(&b, 484) == 0x6141_7272
                && u32_at(&b, 508) == 0xAA55_0000,
            free_count: u32_at(&b, 488),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FAT16 boot sector as mkfs.fat 4.2 writes it for `truncate -s 30M; mkfs.vfat -F 16`
    /// (values written out by hand from fatgen103 offsets, so this test does not depend on the
    /// parser it checks).
    fn fat16_sector() -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 4;
        b[14..16].copy_from_slice(&4u16.to_le_bytes());
        b[16] = 2;
        b[17..19].copy_from_slice(&512u16.to_le_bytes());
        b[19..21].copy_from_slice(&61440u16.to_le_bytes());
        b[21] = 0xF8;
        b[22..24].copy_from_slice(&60u16.to_le_bytes());
        b[38] = 0x29;
        b[39..43].copy_from_slice(&0x1234_ABCDu32.to_le_bytes());
        b[43..54].copy_from_slice(b"FIRMWARE   ");
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn fat16_geometry_follows_fatgen103_arithmetic() {
        let bs = BootSector::parse(&fat16_sector());
        let g = geometry(&bs, 30 << 20).expect("valid FAT16");
        assert_eq!(g.fat_type, FatType::Fat16);
        assert_eq!(g.fat_offset, 4 * 512);
        assert_eq!(g.root_dir_offset, (4 + 120) * 512);
        assert_eq!(g.root_dir_bytes, 32 * 512);
        assert_eq!(g.data_offset, (4 + 120 + 32) * 512);
        assert_eq!(g.cluster_count, (61440 - 156) / 4);
        assert_eq!(bs.label().as_deref(), Some("FIRMWARE"));
        assert_eq!(bs.volume_id(), 0x1234_ABCD);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(usize, &[u8], &str); 5] = [
            (510, &[0, 0], "signature"),
            (11, &[0x00, 0x03], "bytes per sector is 768"),
            (13, &[3], "sectors per cluster is 3"),
            (14, &[0, 0], "reserved sector count is 0"),
            (16, &[0], "number of FATs is 0"),
        ];
        for (off, bytes, want) in cases {
            let mut b = fat16_sector();
            b[off..off + bytes.len()].copy_from_slice(bytes);
            let err = geometry(&BootSector::parse(&b), 30 << 20).expect_err(want);
            assert!(
                matches!(&err, FatError::NotFat { reason } if reason.contains(want)),
                "{want}: got {err}"
            );
        }
    }

    #[test]
    fn a_volume_larger_than_its_slice_is_damaged() {
        let bs = BootSector::parse(&fat16_sector());
        let err = geometry(&bs, 20 << 20).expect_err("truncated");
        assert!(
            matches!(&err, FatError::Damaged { reason } if reason.contains("31457280 bytes")),
            "{err}"
        );
    }

    #[test]
    fn no_name_label_is_none() {
        let mut b = fat16_sector();
        b[43..54].copy_from_slice(b"NO NAME    ");
        assert_eq!(BootSector::parse(&b).label(), None);
    }
}
