//! Whole disk images as a source: a NixOS `sd-image` (`.img`, `.img.zst`), a Raspberry Pi OS
//! image (`.img.xz`), or any `.img.gz`, offered as the files of its firmware partition.
//!
//! Owns recognising an image and reading its firmware partition's files. The partition table
//! is parsed by [`crate::disk::table`] and the firmware partition chosen by the same Pi boot
//! ROM rules as on a card ([`locate_firmware`]); its FAT is checked and listed by
//! [`crate::fat`] (read-only). Nothing is written to the image.
//!
//! An image is never decompressed to disk whole. A plain `.img` is read in place (seeks within
//! the file). A compressed one can only be read forwards, and a FAT cannot be read forwards
//! (directories and files sit wherever their clusters are), so the stream is decompressed
//! once, the bytes before the firmware partition are discarded as they come, and only the
//! partition's own byte range is spooled to a temporary file in the cache's `tmp` directory
//! (30 MiB on a NixOS image, 512 MiB on Raspberry Pi OS), bounded by [`Limits::max_total`],
//! and deleted when the walk ends. Decompression stops at the partition's end: the root file
//! system after it is never decompressed.
//!
//! A firmware partition on its own (a `dd` of the partition, FAT from byte 0) is taken as an
//! image whose firmware partition is the whole file.
//!
//! Recognition: after decompression, LBA 0 carries the 0x55AA signature, the table yields a
//! firmware partition that starts within the first [`MAX_FIRMWARE_START`] bytes, and (for a
//! plain file, where it is cheap to check before committing) that partition starts with a FAT
//! boot sector. Anything else is not an image and is offered as the file it is.

use super::FetchError;
use super::archive::{Flow, Limits, Visit, read_head};
use super::compress::{Compression, decompressor};
use crate::disk::table::{self, FirmwarePartition, SECTOR, TableKind, locate_firmware};
use crate::fat;
use fscommon::StreamSlice;
use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Bytes read (after decompression) to find the partition table: the MBR and a primary GPT
/// (LBA 1-33) fit many times over.
const HEAD_BYTES: usize = 1 << 20;

/// A firmware partition starting later than this is not taken for one (NixOS starts it at
/// 8 MiB, Raspberry Pi OS at 4 MiB): discarding gigabytes of decompressed stream to reach it
/// would be a denial of service, not an update.
pub(crate) const MAX_FIRMWARE_START: u64 = 1 << 30;

/// A recognised disk image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiskImage {
    pub compression: Compression,
    pub firmware: FirmwarePartition,
}

impl DiskImage {
    /// What the image is, for messages: `disk image (zstd), firmware partition 30 MiB at 8 MiB`.
    pub fn describe(&self) -> String {
        if self.firmware.offset_bytes == 0 {
            return format!(
                "FAT volume of {} bytes{}",
                self.firmware.size_bytes,
                if self.compression == Compression::None {
                    ""
                } else {
                    " (compressed)"
                }
            );
        }
        let how = match self.compression {
            Compression::None => "",
            Compression::Gzip => " (gzip)",
            Compression::Xz => " (xz)",
            Compression::Zstd => " (zstd)",
        };
        format!(
            "disk image{how}, firmware partition of {} bytes at byte {}",
            self.firmware.size_bytes, self.firmware.offset_bytes
        )
    }
}

/// Whether `file` holds a disk image (plain or compressed), by its content. Leaves the file
/// position anywhere. A compressed stream that fails to decode is "not an image".
pub(crate) fn detect(file: &mut File) -> io::Result<Option<DiskImage>> {
    file.seek(SeekFrom::Start(0))?;
    let magic = read_head(file, 6)?;
    let compression = Compression::sniff(&magic);
    file.seek(SeekFrom::Start(0))?;
    let head = match read_head(&mut decompressor(compression, &mut *file), HEAD_BYTES) {
        Ok(h) => h,
        Err(_) if compression != Compression::None => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(firmware) = bare_fat(&head).or_else(|| firmware_in_head(&head)) else {
        return Ok(None);
    };
    if compression == Compression::None {
        let len = file.metadata()?.len();
        if firmware.offset_bytes.saturating_add(firmware.size_bytes) > len
            || !fat_at(file, &firmware)?
        {
            return Ok(None);
        }
    }
    Ok(Some(DiskImage {
        compression,
        firmware,
    }))
}

/// A firmware partition copied out on its own (`dd if=/dev/sdb1 of=firmware.img`): the file
/// starts with a FAT boot sector (a jump, 512 bytes per sector, a `FAT` type string where the
/// BPB puts it, the 0x55AA signature), and its length is the volume's (BPB total sectors, the
/// 16-bit count at byte 19 or the 32-bit one at byte 32, fatgen103 §3.1).
fn bare_fat(head: &[u8]) -> Option<FirmwarePartition> {
    let b = head.get(..512)?;
    let fat_string = &b[54..57] == b"FAT" || &b[82..85] == b"FAT";
    if !(matches!(b[0], 0xeb | 0xe9)
        && u16::from_le_bytes([b[11], b[12]]) == 512
        && b[510..512] == [0x55, 0xaa]
        && fat_string)
    {
        return None;
    }
    let small = u64::from(u16::from_le_bytes([b[19], b[20]]));
    let large = u64::from(u32::from_le_bytes([b[32], b[33], b[34], b[35]]));
    let sectors = if small != 0 { small } else { large };
    (sectors > 0).then(|| FirmwarePartition {
        mbr_slot: None,
        gpt_index: None,
        type_byte: None,
        offset_bytes: 0,
        size_bytes: sectors * SECTOR,
        pi3_rom_bootable: false,
    })
}

/// The firmware partition the table at the start of an image names, by the card rules.
fn firmware_in_head(head: &[u8]) -> Option<FirmwarePartition> {
    if head.len() < SECTOR as usize || head[510..512] != [0x55, 0xaa] {
        return None;
    }
    // The image's length is unknown before the whole stream is decompressed, so the table is
    // read as if the disk were large; sectors past the head read as absent (the backup GPT,
    // say), which only adds findings, and findings about the source image are not this
    // command's business: the card's are.
    let claimed = MAX_FIRMWARE_START * 64;
    let layout = table::read_layout(&mut Cursor::new(head), claimed).ok()?;
    if layout.kind == TableKind::None {
        return None;
    }
    let fw = locate_firmware(&layout, &mut Vec::new())?;
    (fw.size_bytes >= SECTOR && fw.offset_bytes >= SECTOR && fw.offset_bytes <= MAX_FIRMWARE_START)
        .then_some(fw)
}

/// Whether a FAT boot sector (a jump, 512 bytes per sector, the 0x55AA signature) starts the
/// partition.
fn fat_at(file: &mut File, fw: &FirmwarePartition) -> io::Result<bool> {
    file.seek(SeekFrom::Start(fw.offset_bytes))?;
    let b = read_head(file, 512)?;
    Ok(b.len() == 512
        && matches!(b[0], 0xeb | 0xe9)
        && u16::from_le_bytes([b[11], b[12]]) == 512
        && b[510..512] == [0x55, 0xaa])
}

/// Calls `visit` for each file of the image's firmware partition (sorted by path), as
/// [`super::archive::walk`] does for an archive's members. `tmp_dir` receives the spooled
/// partition of a compressed image.
pub(crate) fn walk(
    path: &Path,
    image: &DiskImage,
    label: &str,
    limits: &Limits,
    tmp_dir: &Path,
    visit: &mut Visit<'_>,
) -> Result<(), FetchError> {
    let io_err = || FetchError::io(format!("reading {label}"));
    let fw = &image.firmware;
    let mut file = File::open(path).map_err(io_err())?;
    if image.compression == Compression::None {
        let end = fw.offset_bytes.saturating_add(fw.size_bytes);
        let mut part = StreamSlice::new(&mut file, fw.offset_bytes, end).map_err(io_err())?;
        return walk_fat(&mut part, label, limits, visit);
    }
    if fw.size_bytes > limits.max_total {
        return Err(FetchError::ArchiveLimit {
            archive: label.to_string(),
            what: format!("its firmware partition ({} bytes)", fw.size_bytes),
            limit: limits.max_total,
        });
    }
    let mut spool = tempfile::Builder::new()
        .prefix("image-")
        .tempfile_in(tmp_dir)
        .map_err(FetchError::io(
            "creating a temporary file for the firmware partition",
        ))?;
    let mut stream = decompressor(image.compression, file);
    let skipped = io::copy(&mut (&mut stream).take(fw.offset_bytes), &mut io::sink())
        .map_err(|e| bad_stream(label, e))?;
    let copied = io::copy(&mut (&mut stream).take(fw.size_bytes), spool.as_file_mut())
        .map_err(|e| bad_stream(label, e))?;
    if skipped + copied < fw.offset_bytes + fw.size_bytes {
        return Err(FetchError::Archive {
            archive: label.to_string(),
            message: format!(
                "the image ends at byte {}, inside its firmware partition (bytes {}..{})",
                skipped + copied,
                fw.offset_bytes,
                fw.offset_bytes + fw.size_bytes
            ),
        });
    }
    spool.as_file_mut().flush().map_err(FetchError::io(
        "writing the firmware partition's temporary copy",
    ))?;
    walk_fat(spool.as_file_mut(), label, limits, visit)
}

fn bad_stream(label: &str, e: io::Error) -> FetchError {
    FetchError::Archive {
        archive: label.to_string(),
        message: format!("decompressing: {e}"),
    }
}

fn walk_fat<R: Read + Seek>(
    part: &mut R,
    label: &str,
    limits: &Limits,
    visit: &mut Visit<'_>,
) -> Result<(), FetchError> {
    let not_fat = |e: fat::FatError| FetchError::Archive {
        archive: label.to_string(),
        message: format!("its firmware partition: {e}"),
    };
    // The checker follows every cluster chain first, so the reads below cannot loop.
    fat::check(part).map_err(not_fat)?;
    let inventory = fat::inventory(part).map_err(not_fat)?;
    if inventory.files.len() > limits.max_members {
        return Err(FetchError::ArchiveLimit {
            archive: label.to_string(),
            what: "the number of files in its firmware partition".into(),
            limit: limits.max_members as u64,
        });
    }
    for entry in &inventory.files {
        if entry.size > limits.max_member {
            return Err(FetchError::ArchiveLimit {
                archive: label.to_string(),
                what: format!("file {} ({} bytes)", entry.path, entry.size),
                limit: limits.max_member,
            });
        }
        let flow = fat::with_file(part, &entry.path, |r| {
            let mut capped = r.take(entry.size);
            Ok(visit(&entry.path, entry.size, &mut capped))
        })
        .map_err(not_fat)?;
        match flow {
            Some(Ok(Flow::Stop)) => break,
            Some(Ok(Flow::Continue)) | None => {}
            Some(Err(e)) => return Err(e),
        }
    }
    Ok(())
}
