//! What the conversion must know about the card beyond its tables: how much of the last
//! partition an ext2/3/4 file system uses, which start.elf build is on the firmware partition,
//! and where cmdline.txt names partitions by their MBR identity.
//!
//! Readers only, over streams; never writes.

use std::io::{self, Read, Seek, SeekFrom};

/// The size of an ext2/3/4 file system, from its superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Ext4Size {
    pub block_size: u64,
    pub blocks: u64,
}

impl Ext4Size {
    /// Bytes from the partition's start to the end of the last block the file system owns.
    pub fn bytes(&self) -> u64 {
        self.blocks * self.block_size
    }
}

/// Offset of the superblock inside the partition, and its fields (Linux
/// Documentation/filesystems/ext4/super.rst, "The Super Block").
const SUPERBLOCK_OFFSET: u64 = 1024;
/// 0x04, 4 bytes: `s_blocks_count_lo`.
const BLOCKS_LO: usize = 0x04;
/// 0x18, 4 bytes: `s_log_block_size` (block size = 2 ^ (10 + n)).
const LOG_BLOCK_SIZE: usize = 0x18;
/// 0x38, 2 bytes: `s_magic` = 0xEF53.
const MAGIC: usize = 0x38;
/// 0x60, 4 bytes: `s_feature_incompat`; bit 0x80 (INCOMPAT_64BIT) makes `s_blocks_count_hi`
/// meaningful.
const FEATURE_INCOMPAT: usize = 0x60;
const INCOMPAT_64BIT: u32 = 0x80;
/// 0x150, 4 bytes: `s_blocks_count_hi`.
const BLOCKS_HI: usize = 0x150;

/// Reads the superblock of the partition starting at byte `offset`. `None` when there is no
/// ext2/3/4 magic or the block size is absurd (the caller then cannot tell what is used).
pub fn ext4_size<R: Read + Seek>(disk: &mut R, offset: u64) -> io::Result<Option<Ext4Size>> {
    let mut sb = [0u8; 1024];
    disk.seek(SeekFrom::Start(offset + SUPERBLOCK_OFFSET))?;
    match disk.read_exact(&mut sb) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    if u16::from_le_bytes([sb[MAGIC], sb[MAGIC + 1]]) != 0xEF53 {
        return Ok(None);
    }
    let log = u32_at(LOG_BLOCK_SIZE);
    // Linux accepts 1 KiB to 64 KiB blocks.
    if log > 6 {
        return Ok(None);
    }
    let mut blocks = u64::from(u32_at(BLOCKS_LO));
    if u32_at(FEATURE_INCOMPAT) & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32_at(BLOCKS_HI)) << 32;
    }
    Ok(Some(Ext4Size {
        block_size: 1024 << log,
        blocks,
    }))
}

/// Build date of a Raspberry Pi firmware image (start*.elf), `(year, month, day)`.
///
/// The VideoCore firmware carries `VC_BUILD_ID_*` strings (the source of `vcgencmd version`);
/// one of its two `VC_BUILD_ID_TIME: ` strings holds the date as `Aug 26 2022` (the other the
/// time of day). Seen in the 2022 and 2024 builds the fixtures use; whether the July-August
/// 2020 builds carry them the same way is unverified (none was available here). Streams the
/// file with a small overlap, never loading it whole.
pub fn vc_build_date(r: &mut dyn Read) -> io::Result<Option<(u16, u8, u8)>> {
    const KEY: &[u8] = b"VC_BUILD_ID_TIME: ";
    const TAIL: usize = 12; // "Aug 26 2022" plus one
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = r.read(&mut buf)?;
        let mut window = std::mem::take(&mut carry);
        window.extend_from_slice(&buf[..n]);
        let mut from = 0;
        while let Some(p) = find(&window[from..], KEY) {
            let at = from + p + KEY.len();
            if window.len() < at + TAIL && n > 0 {
                // The value may continue in the next read.
                break;
            }
            if let Some(d) = parse_date(&window[at..window.len().min(at + TAIL)]) {
                return Ok(Some(d));
            }
            from = at;
        }
        if n == 0 {
            return Ok(None);
        }
        let keep = (KEY.len() + TAIL).min(window.len());
        carry = window[window.len() - keep..].to_vec();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Mmm dd yyyy` (day space-padded or not).
fn parse_date(b: &[u8]) -> Option<(u16, u8, u8)> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let text = std::str::from_utf8(b.split(|&c| c == 0).next()?).ok()?;
    let mut words = text.split_whitespace();
    let month_word = words.next()?;
    let month = MONTHS.iter().position(|m| *m == month_word)? as u8 + 1;
    let day: u8 = words.next()?.parse().ok()?;
    let year_text: String = words.next()?.chars().take(4).collect();
    let year: u16 = year_text.parse().ok()?;
    ((1..=31).contains(&day) && (2000..=2100).contains(&year)).then_some((year, month, day))
}

/// Whether a start.elf build date falls in the window known to break hybrid MBRs: builds from
/// July-August 2020 parse the GPT and ignore the hybrid's MBR entries (raspberrypi/linux#3831);
/// September 2020 builds fall back to the MBR (raspberrypi/firmware#1465). The exact cut-off
/// is unverified, so the whole two months count.
pub fn breaks_hybrid_mbr(date: (u16, u8, u8)) -> bool {
    date.0 == 2020 && (7..=8).contains(&date.1)
}

/// One `PARTUUID=<disk-id>-NN` in cmdline.txt that names a partition of this disk by its MBR
/// identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartuuidRef {
    /// The whole word, e.g. `root=PARTUUID=3e247b30-02`.
    pub word: String,
    /// The identity as written (`3e247b30-02`).
    pub partuuid: String,
    /// MBR partition number it names (Linux prints it as two hex digits).
    pub number: u32,
}

/// The words of `cmdline` holding `PARTUUID=<disk_signature>-NN` (any case).
pub fn partuuid_refs(cmdline: &str, disk_signature: u32) -> Vec<PartuuidRef> {
    let prefix = format!("{disk_signature:08x}-");
    cmdline
        .split_whitespace()
        .filter_map(|word| {
            let at = word.to_ascii_uppercase().find("PARTUUID=")? + "PARTUUID=".len();
            let id = word[at..].to_ascii_lowercase();
            let nn = id.strip_prefix(&prefix)?;
            let nn = nn.split(['/', ',']).next()?;
            if nn.len() != 2 {
                return None;
            }
            Some(PartuuidRef {
                word: word.to_string(),
                partuuid: format!("{prefix}{nn}"),
                number: u32::from_str_radix(nn, 16).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn superblock(blocks_lo: u32, log: u32, incompat: u32, blocks_hi: u32) -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        let sb = 1024;
        d[sb + BLOCKS_LO..sb + BLOCKS_LO + 4].copy_from_slice(&blocks_lo.to_le_bytes());
        d[sb + LOG_BLOCK_SIZE..sb + LOG_BLOCK_SIZE + 4].copy_from_slice(&log.to_le_bytes());
        d[sb + MAGIC..sb + MAGIC + 2].copy_from_slice(&0xEF53u16.to_le_bytes());
        d[sb + FEATURE_INCOMPAT..sb + FEATURE_INCOMPAT + 4]
            .copy_from_slice(&incompat.to_le_bytes());
        d[sb + BLOCKS_HI..sb + BLOCKS_HI + 4].copy_from_slice(&blocks_hi.to_le_bytes());
        d
    }

    #[test]
    fn ext4_size_from_the_superblock() {
        let mut d = Cursor::new(superblock(92160, 0, 0, 7));
        let s = ext4_size(&mut d, 0).expect("io").expect("ext4");
        assert_eq!(
            (s.block_size, s.blocks, s.bytes()),
            (1024, 92160, 94_371_840)
        );
        // The high word counts only with INCOMPAT_64BIT.
        let mut d = Cursor::new(superblock(1, 2, INCOMPAT_64BIT, 1));
        let s = ext4_size(&mut d, 0).expect("io").expect("ext4");
        assert_eq!((s.block_size, s.blocks), (4096, (1 << 32) + 1));
    }

    #[test]
    fn no_magic_or_absurd_block_size_is_unknown() {
        let mut blank = Cursor::new(vec![0u8; 4096]);
        assert_eq!(ext4_size(&mut blank, 0).expect("io"), None);
        let mut d = Cursor::new(superblock(10, 7, 0, 0));
        assert_eq!(ext4_size(&mut d, 0).expect("io"), None);
        let mut short = Cursor::new(vec![0u8; 1500]);
        assert_eq!(ext4_size(&mut short, 0).expect("io"), None);
    }

    /// A reader returning at most `n` bytes per call, so the key straddles reads.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn build_date_from_vc_build_id_strings() {
        let mut blob = vec![0xAAu8; 100_000];
        blob.extend_from_slice(b"VC_BUILD_ID_TIME: 14:04:36\0VC_BUILD_ID_VARIANT: start\0");
        blob.extend_from_slice(b"VC_BUILD_ID_TIME: Aug 26 2022\0VC_BUILD_ID_BRANCH: x\0");
        blob.extend_from_slice(&[0x55; 70_000]);
        for chunk in [1, 7, 65_536, 1 << 20] {
            let date = vc_build_date(&mut Trickle(&blob, chunk)).expect("io");
            assert_eq!(date, Some((2022, 8, 26)), "chunk {chunk}");
        }
        let date = vc_build_date(&mut Trickle(b"VC_BUILD_ID_TIME: Jul  3 2020", 5)).expect("io");
        assert_eq!(date, Some((2020, 7, 3)));
        assert_eq!(
            vc_build_date(&mut Trickle(&[0u8; 5000], 999)).expect("io"),
            None
        );
    }

    #[test]
    fn the_broken_window_is_july_and_august_2020() {
        assert!(!breaks_hybrid_mbr((2020, 6, 30)));
        assert!(breaks_hybrid_mbr((2020, 7, 1)));
        assert!(breaks_hybrid_mbr((2020, 8, 31)));
        assert!(!breaks_hybrid_mbr((2020, 9, 1)));
        assert!(!breaks_hybrid_mbr((2022, 8, 26)));
    }

    #[test]
    fn partuuid_references_of_this_disk_only() {
        let cmdline = "console=serial0,115200 root=PARTUUID=3E247B30-02 rootfstype=ext4 \
                       resume=PARTUUID=3e247b30-0a foo=PARTUUID=deadbeef-01 \
                       bar=PARTUUID=3e247b30-1 rootwait";
        let refs = partuuid_refs(cmdline, 0x3e24_7b30);
        let got: Vec<_> = refs
            .iter()
            .map(|r| (r.word.as_str(), r.partuuid.as_str(), r.number))
            .collect();
        assert_eq!(
            got,
            vec![
                ("root=PARTUUID=3E247B30-02", "3e247b30-02", 2),
                ("resume=PARTUUID=3e247b30-0a", "3e247b30-0a", 10)
            ]
        );
    }
}
