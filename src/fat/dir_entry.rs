//! Raw 32-byte directory entries and long-name assembly, for the structure checker.
//!
//! Owns decoding one directory entry (fatgen103 section 6) and putting VFAT long-name entries
//! back together (fatgen103 section 7), so that findings can name files the way users see them.
//! The inventory does not use this: it goes through `fatfs`.

use super::FatType;

/// Size of one directory entry (fatgen103 section 6).
pub(crate) const ENTRY_BYTES: usize = 32;

pub(crate) const ATTR_VOLUME_ID: u8 = 0x08;
pub(crate) const ATTR_DIRECTORY: u8 = 0x10;
/// READ_ONLY | HIDDEN | SYSTEM | VOLUME_ID marks a long-name entry (fatgen103 section 7).
pub(crate) const ATTR_LONG_NAME: u8 = 0x0F;

/// One short (8.3) directory entry, the fields the checker uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShortEntry {
    /// `DIR_Name`, offset 0, 11 bytes: 8 name + 3 extension, space padded; byte 0 = 0x05 stands
    /// for 0xE5.
    pub name: [u8; 11],
    /// `DIR_Attr`, offset 11, 1 byte.
    pub attr: u8,
    /// `DIR_NTRes`, offset 12, 1 byte: bit 3 = base name is lower case, bit 4 = extension is
    /// lower case (Windows NT convention, used by mtools; not in fatgen103, which says "0").
    pub nt_res: u8,
    /// `DIR_FstClusHI` (offset 20, 2 bytes, FAT32 only) << 16 | `DIR_FstClusLO` (offset 26,
    /// 2 bytes).
    pub first_cluster: u32,
    /// `DIR_FileSize`, offset 28, 4 bytes.
    pub size: u32,
}

impl ShortEntry {
    pub fn parse(b: &[u8], fat_type: FatType) -> Self {
        let mut name = [0u8; 11];
        name.copy_from_slice(&b[0..11]);
        // FAT12/16 keep FstClusHI at 0 (fatgen103 section 6); some systems store other data
        // there, so only FAT32 reads it.
        let hi = if fat_type == FatType::Fat32 {
            u32::from(u16::from_le_bytes([b[20], b[21]]))
        } else {
            0
        };
        let lo = u32::from(u16::from_le_bytes([b[26], b[27]]));
        ShortEntry {
            name,
            attr: b[11],
            nt_res: b[12],
            first_cluster: hi << 16 | lo,
            size: u32::from_le_bytes([b[28], b[29], b[30], b[31]]),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIRECTORY != 0
    }

    /// `.` or `..`.
    pub fn is_dot(&self) -> bool {
        &self.name == b".          " || &self.name == b"..         "
    }

    /// The 8.3 name as shown by mtools and fatfs: blanks trimmed, lower-cased per `DIR_NTRes`.
    pub fn display_name(&self) -> String {
        let mut name = self.name;
        if name[0] == 0x05 {
            name[0] = 0xE5;
        }
        let part = |bytes: &[u8], lower: bool| -> String {
            let s: String = bytes
                .iter()
                .map(|&c| match c {
                    c if c.is_ascii() && lower => c.to_ascii_lowercase() as char,
                    c if c.is_ascii() => c as char,
                    _ => '\u{FFFD}',
                })
                .collect();
            s.trim_end_matches(' ').to_string()
        };
        let base = part(&name[0..8], self.nt_res & 0x08 != 0);
        let ext = part(&name[8..11], self.nt_res & 0x10 != 0);
        if ext.is_empty() {
            base
        } else {
            format!("{base}.{ext}")
        }
    }

    /// The checksum long-name entries carry of their short entry (fatgen103 section 7,
    /// `ChkSum()`).
    pub fn checksum(&self) -> u8 {
        self.name
            .iter()
            .fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
    }
}

/// Collects long-name entries that precede a short entry.
#[derive(Debug, Default)]
pub(crate) struct LongName {
    /// UCS-2 characters, 13 per entry, in name order.
    chars: Vec<u16>,
    /// The ordinal expected next (counting down to 1); 0 = nothing pending.
    next_ord: u8,
    checksum: u8,
}

impl LongName {
    /// Feeds one long-name entry (`LDIR_Ord` offset 0, `LDIR_Name1` offset 1 (10 bytes),
    /// `LDIR_Chksum` offset 13, `LDIR_Name2` offset 14 (12 bytes), `LDIR_Name3` offset 28
    /// (4 bytes)). Out-of-order entries drop the pending name.
    pub fn push(&mut self, b: &[u8]) {
        let ord = b[0];
        let n = ord & 0x1F;
        if ord & 0x40 != 0 {
            if n == 0 {
                self.reset();
                return;
            }
            self.chars = vec![0xFFFF; usize::from(n) * 13];
            self.checksum = b[13];
        } else if n == 0 || n != self.next_ord || b[13] != self.checksum {
            self.reset();
            return;
        }
        let base = (usize::from(n) - 1) * 13;
        let offsets = (1..11)
            .step_by(2)
            .chain((14..26).step_by(2))
            .chain((28..32).step_by(2));
        for (i, off) in offsets.enumerate() {
            self.chars[base + i] = u16::from_le_bytes([b[off], b[off + 1]]);
        }
        self.next_ord = n - 1;
    }

    /// The long name for `short`, if a complete run of long-name entries with the right
    /// checksum preceded it. Resets the collector.
    pub fn take(&mut self, short: &ShortEntry) -> Option<String> {
        let complete = !self.chars.is_empty() && self.next_ord == 0;
        let ok = complete && self.checksum == short.checksum();
        let chars = std::mem::take(&mut self.chars);
        self.reset();
        if !ok {
            return None;
        }
        let end = chars.iter().position(|&c| c == 0).unwrap_or(chars.len());
        Some(String::from_utf16_lossy(&chars[..end]))
    }

    pub fn reset(&mut self) {
        self.chars.clear();
        self.next_ord = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(name: &[u8; 11], nt_res: u8) -> ShortEntry {
        let mut b = [0u8; 32];
        b[0..11].copy_from_slice(name);
        b[12] = nt_res;
        ShortEntry::parse(&b, FatType::Fat16)
    }

    #[test]
    fn nt_lowercase_flags_apply_per_part() {
        assert_eq!(short(b"BOOTCODEBIN", 0x18).display_name(), "bootcode.bin");
        assert_eq!(short(b"CONFIG  TXT", 0x08).display_name(), "config.TXT");
        assert_eq!(short(b"OVERLAYS   ", 0x00).display_name(), "OVERLAYS");
    }

    #[test]
    fn checksum_matches_the_fatgen103_reference_loop() {
        // fatgen103 section 7 spells the sum as `((Sum & 1) ? 0x80 : 0) + (Sum >> 1) + *pFcbName++`.
        let mut sum = 0u8;
        for &c in b"ALONGN~1TXT" {
            sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(sum >> 1)
                .wrapping_add(c);
        }
        assert_eq!(short(b"ALONGN~1TXT", 0).checksum(), sum);
    }

    #[test]
    fn long_name_needs_the_right_checksum() {
        let s = short(b"ALONGN~1TXT", 0);
        let mut e = [0xFFu8; 32];
        e[0] = 0x41;
        e[11] = ATTR_LONG_NAME;
        e[13] = s.checksum();
        let name: Vec<u16> = "ab".encode_utf16().chain([0]).collect();
        for (i, c) in name.iter().enumerate() {
            e[1 + 2 * i..3 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        let mut ln = LongName::default();
        ln.push(&e);
        assert_eq!(ln.take(&s).as_deref(), Some("ab"));
        e[13] ^= 1;
        ln.push(&e);
        assert_eq!(ln.take(&s), None);
    }
}
