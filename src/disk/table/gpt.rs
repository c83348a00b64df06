//! The GUID Partition Table: both copies (primary at LBA 1, backup at the last LBA) read,
//! checked independently, compared, and the usable one validated.
//!
//! Layout from UEFI 2.10 §5.3.2 (header, Table 5-5) and §5.3.3 (entry, Table 5-6). Each copy is
//! judged on its own so the report can say "primary bad, backup good" (Linux then boots from the
//! backup and EDK2 silently rewrites the primary). The entry array is capped at
//! [`MAX_ENTRY_ARRAY_BYTES`] before anything is allocated, and every LBA is checked against the
//! disk size before it is read.

use super::{GptEntry, GptInfo, SECTOR, read_lbas};
use crate::finding::Finding;
use std::io::{Read, Seek};

/// Largest partition entry array pifw reads (8192 entries of 128 bytes). The spec minimum is
/// 16 KiB; tools write exactly that. Anything larger than this is treated as corruption.
pub(super) const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Size of the header fields defined by UEFI 2.10; `header_size` may be larger, up to a sector.
const MIN_HEADER_SIZE: u32 = 92;
/// Size of the entry fields defined by UEFI 2.10; `size_of_partition_entry` is 128 * 2^n.
const ENTRY_FIELDS: usize = 128;

/// Which of the two copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    Primary,
    Backup,
}

impl Copy {
    fn name(self) -> &'static str {
        match self {
            Copy::Primary => "primary",
            Copy::Backup => "backup",
        }
    }
}

/// GPT header (UEFI 2.10 §5.3.2, Table 5-5). All integers little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    // Offset 0, 8 bytes: signature "EFI PART" (checked before parsing).
    // Offset 8, 4 bytes: revision (0x00010000; not checked, the spec keeps it compatible).
    /// Offset 12, 4 bytes: bytes covered by `header_crc32`; 92 ≤ size ≤ 512.
    header_size: u32,
    /// Offset 16, 4 bytes: CRC32 of the first `header_size` bytes with this field zeroed.
    header_crc32: u32,
    // Offset 20, 4 bytes: reserved, zero.
    /// Offset 24, 8 bytes: LBA of this header.
    my_lba: u64,
    /// Offset 32, 8 bytes: LBA of the other header.
    alternate_lba: u64,
    /// Offset 40, 8 bytes: first LBA a partition may use.
    first_usable_lba: u64,
    /// Offset 48, 8 bytes: last LBA a partition may use (inclusive).
    last_usable_lba: u64,
    /// Offset 56, 16 bytes: disk GUID (mixed-endian, see [`guid_text`]).
    disk_guid: [u8; 16],
    /// Offset 72, 8 bytes: LBA of this copy's partition entry array.
    partition_entry_lba: u64,
    /// Offset 80, 4 bytes: number of entries in the array.
    number_of_partition_entries: u32,
    /// Offset 84, 4 bytes: size of one entry, 128 * 2^n.
    size_of_partition_entry: u32,
    /// Offset 88, 4 bytes: CRC32 of the whole entry array (count * size bytes).
    partition_entry_array_crc32: u32,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn guid_bytes(b: &[u8], at: usize) -> [u8; 16] {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[at..at + 16]);
    g
}

impl Header {
    /// Parses the fixed fields of a 512-byte sector.
    fn parse(s: &[u8]) -> Header {
        Header {
            header_size: le_u32(s, 12),
            header_crc32: le_u32(s, 16),
            my_lba: le_u64(s, 24),
            alternate_lba: le_u64(s, 32),
            first_usable_lba: le_u64(s, 40),
            last_usable_lba: le_u64(s, 48),
            disk_guid: guid_bytes(s, 56),
            partition_entry_lba: le_u64(s, 72),
            number_of_partition_entries: le_u32(s, 80),
            size_of_partition_entry: le_u32(s, 84),
            partition_entry_array_crc32: le_u32(s, 88),
        }
    }

    /// Entry array length in bytes, as u64 (cannot overflow: u32 * u32).
    fn array_bytes(&self) -> u64 {
        u64::from(self.number_of_partition_entries) * u64::from(self.size_of_partition_entry)
    }

    fn array_sectors(&self) -> u64 {
        self.array_bytes().div_ceil(SECTOR)
    }
}

/// Why one GPT copy is unusable. Each variant maps to one finding code `gpt-<copy>-<suffix>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum CopyError {
    #[error("header LBA {lba} is past the end of the disk ({total_lbas} sectors)")]
    BeyondDisk { lba: u64, total_lbas: u64 },
    #[error("no \"EFI PART\" signature at LBA {lba}")]
    NoSignature { lba: u64 },
    #[error("header at LBA {lba} gives a header size of {size} bytes (valid: 92 to 512)")]
    HeaderSize { lba: u64, size: u32 },
    #[error("header CRC {stored:#010x} != computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("header read at LBA {lba} says it lives at LBA {my_lba}")]
    MyLba { lba: u64, my_lba: u64 },
    #[error("partition entry size {size} is not 128 * 2^n")]
    EntrySize { size: u32 },
    #[error(
        "header claims {count} entries of {size} bytes ({bytes} bytes), over the {limit} byte limit"
    )]
    EntriesTooLarge {
        count: u32,
        size: u32,
        bytes: u64,
        limit: u64,
    },
    #[error(
        "partition entry array at LBA {lba} ({sectors} sectors) does not fit on the disk ({total_lbas} sectors)"
    )]
    EntriesOutOfBounds {
        lba: u64,
        sectors: u64,
        total_lbas: u64,
    },
    #[error("partition entry array CRC {stored:#010x} != computed {computed:#010x}")]
    EntriesCrc { stored: u32, computed: u32 },
}

impl CopyError {
    fn code_suffix(&self) -> &'static str {
        match self {
            CopyError::BeyondDisk { .. } | CopyError::NoSignature { .. } => "missing",
            CopyError::HeaderSize { .. } => "header-size",
            CopyError::Crc { .. } => "crc",
            CopyError::MyLba { .. } => "my-lba",
            CopyError::EntrySize { .. } => "entry-size",
            CopyError::EntriesTooLarge { .. } => "entries-too-large",
            CopyError::EntriesOutOfBounds { .. } => "entries-out-of-bounds",
            CopyError::EntriesCrc { .. } => "entries-crc",
        }
    }

    fn finding(&self, copy: Copy, other_valid: bool) -> Finding {
        let code = format!("gpt-{}-{}", copy.name(), self.code_suffix());
        let message = format!("{} GPT: {self}", copy.name());
        // A bad backup is survivable while the primary is good (every reader uses the primary);
        // a bad primary makes readers disagree (Linux falls back, EDK2 rewrites it on boot).
        let finding = if copy == Copy::Backup && other_valid {
            Finding::warning(&code, message)
        } else {
            Finding::error(&code, message)
        };
        if let CopyError::BeyondDisk { .. } = self {
            // `sgdisk -e` here would write the new backup inside the last partition.
            return finding.advice(
                "the image is truncated or the card is smaller than the one the GPT was made \
                 for; use the full image or a large enough card (do not run `sgdisk -e` on this \
                 one: it would write the backup over the end of the last partition)",
            );
        }
        let advice = match (copy, other_valid) {
            (Copy::Primary, true) => {
                "the backup GPT is intact: rebuild the primary from it with gdisk's recovery menu \
                 (r, then b or c, then v and w); this rewrites LBA 1-33, so save the first and last \
                 MiB of the card first"
            }
            (Copy::Backup, true) => {
                "the primary GPT is intact: `sgdisk -e DEVICE` rewrites the backup at the end of \
                 the disk (partitions are untouched; save the last MiB first)"
            }
            (_, false) => {
                "neither GPT copy is usable; do not write to this card. `sgdisk -v` and \
                 `sfdisk --dump` show what the tools still read; a partition-recovery tool \
                 (testdisk) can rebuild the table"
            }
        };
        finding.advice(advice)
    }
}

/// A copy whose header and entry array both passed their checks.
#[derive(Debug, Clone)]
struct ValidCopy {
    lba: u64,
    header: Header,
    array: Vec<u8>,
}

/// Reads and checks the header at `lba` (signature, size, CRC, my_lba).
fn read_header<R: Read + Seek>(
    disk: &mut R,
    lba: u64,
    total_lbas: u64,
) -> Result<Result<Header, CopyError>, std::io::Error> {
    let Some(sector) = read_lbas(disk, lba, 1, total_lbas)? else {
        return Ok(Err(CopyError::BeyondDisk { lba, total_lbas }));
    };
    if &sector[0..8] != SIGNATURE {
        return Ok(Err(CopyError::NoSignature { lba }));
    }
    let header = Header::parse(&sector);
    let size = header.header_size;
    if !(MIN_HEADER_SIZE..=SECTOR as u32).contains(&size) {
        return Ok(Err(CopyError::HeaderSize { lba, size }));
    }
    let mut covered = sector[..size as usize].to_vec();
    covered[16..20].fill(0);
    let computed = CRC32.checksum(&covered);
    if computed != header.header_crc32 {
        return Ok(Err(CopyError::Crc {
            stored: header.header_crc32,
            computed,
        }));
    }
    if header.my_lba != lba {
        return Ok(Err(CopyError::MyLba {
            lba,
            my_lba: header.my_lba,
        }));
    }
    Ok(Ok(header))
}

/// Reads and checks the entry array of a valid header (size sanity, bounds, CRC).
fn read_array<R: Read + Seek>(
    disk: &mut R,
    header: &Header,
    total_lbas: u64,
) -> Result<Result<Vec<u8>, CopyError>, std::io::Error> {
    let size = header.size_of_partition_entry;
    if size < ENTRY_FIELDS as u32 || !size.is_power_of_two() {
        return Ok(Err(CopyError::EntrySize { size }));
    }
    let bytes = header.array_bytes();
    if bytes > MAX_ENTRY_ARRAY_BYTES {
        return Ok(Err(CopyError::EntriesTooLarge {
            count: header.number_of_partition_entries,
            size,
            bytes,
            limit: MAX_ENTRY_ARRAY_BYTES,
        }));
    }
    let lba = header.partition_entry_lba;
    let sectors = header.array_sectors();
    let Some(mut array) = read_lbas(disk, lba, sectors, total_lbas)? else {
        return Ok(Err(CopyError::EntriesOutOfBounds {
            lba,
            sectors,
            total_lbas,
        }));
    };
    // `bytes <= MAX_ENTRY_ARRAY_BYTES`, so it fits a usize.
    array.truncate(bytes as usize);
    let computed = CRC32.checksum(&array);
    if computed != header.partition_entry_array_crc32 {
        return Ok(Err(CopyError::EntriesCrc {
            stored: header.partition_entry_array_crc32,
            computed,
        }));
    }
    Ok(Ok(array))
}

/// One copy, header and array.
fn read_copy<R: Read + Seek>(
    disk: &mut R,
    lba: u64,
    total_lbas: u64,
) -> Result<(Option<Header>, Result<ValidCopy, CopyError>), std::io::Error> {
    let header = match read_header(disk, lba, total_lbas)? {
        Ok(h) => h,
        Err(e) => return Ok((None, Err(e))),
    };
    let copy = read_array(disk, &header, total_lbas)?.map(|array| ValidCopy {
        lba,
        header: header.clone(),
        array,
    });
    Ok((Some(header), copy))
}

/// Reads both GPT copies, reports what is wrong with each, and validates the one in use
/// (the primary when valid, else the backup). `None` when neither copy is usable.
pub(super) fn read<R: Read + Seek>(
    disk: &mut R,
    total_lbas: u64,
    findings: &mut Vec<Finding>,
) -> Result<Option<GptInfo>, std::io::Error> {
    let last = total_lbas.saturating_sub(1);
    let (primary_header, primary) = read_copy(disk, 1, total_lbas)?;

    // A valid primary header says where its backup is; otherwise (or when it points at LBA 0
    // or 1, which would read the primary as its own backup) the spec places it at the last LBA.
    let pointed = primary_header.as_ref().map(|h| h.alternate_lba);
    let wanted = pointed.filter(|&a| a > 1).unwrap_or(last);
    let (_, mut backup) = read_copy(disk, wanted, total_lbas)?;
    let mut backup_lba = wanted;
    if backup.is_err() && wanted != last {
        let (_, at_last) = read_copy(disk, last, total_lbas)?;
        if at_last.is_ok() {
            backup = at_last;
            backup_lba = last;
        }
    }
    if let Some(pointed) = pointed
        && backup.is_ok()
        && pointed != backup_lba
    {
        findings.push(
            Finding::warning(
                "gpt-alternate-lba",
                format!(
                    "the primary GPT header points to a backup at LBA {pointed}, but the backup \
                     is at the last LBA {backup_lba}"
                ),
            )
            .advice("`sgdisk -e DEVICE` rewrites both headers consistently"),
        );
    }

    if let Err(e) = &primary {
        findings.push(e.finding(Copy::Primary, backup.is_ok()));
    }
    if let Err(e) = &backup {
        findings.push(e.finding(Copy::Backup, primary.is_ok()));
    }
    if backup_lba < last && primary_header.is_some() {
        findings.push(
            Finding::warning(
                "gpt-backup-not-at-end",
                format!(
                    "the backup GPT header is at LBA {backup_lba}, but the disk's last LBA is \
                     {last}: the image was written to a larger card"
                ),
            )
            .advice(
                "`sgdisk -e DEVICE` moves the backup GPT to the end of the disk (partitions are \
                 untouched)",
            ),
        );
    }
    if let (Ok(p), Ok(b)) = (&primary, &backup) {
        compare_copies(p, b, findings);
    }

    let (used, primary_valid, backup_valid) = match (&primary, &backup) {
        (Ok(p), _) => (p, true, backup.is_ok()),
        (Err(_), Ok(b)) => (b, false, true),
        (Err(_), Err(_)) => {
            findings.push(Finding::error(
                "gpt-unreadable",
                "neither GPT copy is valid; partitions are known from the MBR only",
            ));
            return Ok(None);
        }
    };
    check_usable_range(used, total_lbas, findings);
    let entries = parse_entries(&used.header, &used.array);
    check_entries(&used.header, &entries, total_lbas, findings);

    Ok(Some(GptInfo {
        disk_guid: guid_text(&used.header.disk_guid),
        first_usable_lba: used.header.first_usable_lba,
        last_usable_lba: used.header.last_usable_lba,
        primary_valid,
        backup_valid,
        entries,
    }))
}

/// Both copies valid: they must describe the same disk.
fn compare_copies(p: &ValidCopy, b: &ValidCopy, findings: &mut Vec<Finding>) {
    let (ph, bh) = (&p.header, &b.header);
    let mut diffs = Vec::new();
    if ph.disk_guid != bh.disk_guid {
        diffs.push(format!(
            "disk GUID {} vs {}",
            guid_text(&ph.disk_guid),
            guid_text(&bh.disk_guid)
        ));
    }
    if (ph.first_usable_lba, ph.last_usable_lba) != (bh.first_usable_lba, bh.last_usable_lba) {
        diffs.push(format!(
            "usable LBAs {}..{} vs {}..{}",
            ph.first_usable_lba, ph.last_usable_lba, bh.first_usable_lba, bh.last_usable_lba
        ));
    }
    if p.array != b.array {
        diffs.push("partition entries differ".to_string());
    }
    if bh.alternate_lba != p.lba {
        diffs.push(format!(
            "backup header points to a primary at LBA {}",
            bh.alternate_lba
        ));
    }
    if !diffs.is_empty() {
        findings.push(
            Finding::warning(
                "gpt-copies-differ",
                format!(
                    "primary and backup GPT are both valid but differ: {}; tools use the primary",
                    diffs.join("; ")
                ),
            )
            .advice("if the primary is right, `sgdisk -e DEVICE` rewrites the backup from it"),
        );
    }
}

/// The usable range must lie between the two entry arrays and inside the disk.
fn check_usable_range(copy: &ValidCopy, total_lbas: u64, findings: &mut Vec<Finding>) {
    let h = &copy.header;
    let array_end = h.partition_entry_lba + h.array_sectors();
    let mut problems = Vec::new();
    if h.first_usable_lba > h.last_usable_lba.saturating_add(1) {
        problems.push(format!(
            "first usable LBA {} is after last usable LBA {}",
            h.first_usable_lba, h.last_usable_lba
        ));
    }
    if h.first_usable_lba < 2 {
        problems.push(format!(
            "first usable LBA {} overlaps the MBR or the header",
            h.first_usable_lba
        ));
    }
    // Which array must stay out of the usable range depends on the side of the disk it is on.
    if h.partition_entry_lba < h.first_usable_lba || copy.lba == 1 {
        if array_end > h.first_usable_lba {
            problems.push(format!(
                "the entry array (LBA {}..{}) runs into the usable range starting at LBA {}",
                h.partition_entry_lba,
                array_end.saturating_sub(1),
                h.first_usable_lba
            ));
        }
    } else if h.partition_entry_lba <= h.last_usable_lba {
        problems.push(format!(
            "the backup entry array at LBA {} is inside the usable range ending at LBA {}",
            h.partition_entry_lba, h.last_usable_lba
        ));
    }
    if !problems.is_empty() {
        findings.push(Finding::error(
            "gpt-usable-range",
            format!("GPT header: {}", problems.join("; ")),
        ));
    } else if h.last_usable_lba >= total_lbas {
        findings.push(
            Finding::warning(
                "gpt-usable-range",
                format!(
                    "GPT last usable LBA {} is past the end of the disk ({} sectors): the image is \
                     truncated or the card is smaller than the GPT says",
                    h.last_usable_lba, total_lbas
                ),
            )
            .advice("use the full image, or a card at least as large as the one it was made for"),
        );
    }
}

/// Used entries (type GUID not all zero), 1-based index.
fn parse_entries(h: &Header, array: &[u8]) -> Vec<GptEntry> {
    let size = h.size_of_partition_entry as usize;
    array
        .chunks_exact(size)
        .enumerate()
        .filter_map(|(i, e)| {
            // UEFI 2.10 §5.3.3, Table 5-6: type GUID @0, unique GUID @16, first LBA @32,
            // last LBA @40 (inclusive), attributes @48, name @56 (72 bytes UTF-16LE).
            let type_guid = guid_bytes(e, 0);
            if type_guid == [0; 16] {
                return None;
            }
            let name_units: Vec<u16> = e[56..ENTRY_FIELDS]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            Some(GptEntry {
                index: i as u32 + 1,
                type_guid: guid_text(&type_guid),
                unique_guid: guid_text(&guid_bytes(e, 16)),
                first_lba: le_u64(e, 32),
                last_lba: le_u64(e, 40),
                attributes: le_u64(e, 48),
                name: String::from_utf16_lossy(&name_units),
            })
        })
        .collect()
}

fn check_entries(h: &Header, entries: &[GptEntry], total_lbas: u64, findings: &mut Vec<Finding>) {
    let mut sane: Vec<&GptEntry> = Vec::new();
    for e in entries {
        if e.first_lba > e.last_lba {
            findings.push(Finding::error(
                "gpt-entry-inverted",
                format!(
                    "GPT entry {} ({}) starts at LBA {} after its last LBA {}",
                    e.index, e.name, e.first_lba, e.last_lba
                ),
            ));
            continue;
        }
        sane.push(e);
        if e.first_lba < h.first_usable_lba || e.last_lba > h.last_usable_lba {
            findings.push(
                Finding::error(
                    "gpt-out-of-bounds",
                    format!(
                        "GPT entry {} ({}) spans LBA {}..{}, outside the usable range {}..{}",
                        e.index,
                        e.name,
                        e.first_lba,
                        e.last_lba,
                        h.first_usable_lba,
                        h.last_usable_lba
                    ),
                )
                .advice("the entry overlaps the GPT's own structures; fix it with gdisk after saving the data"),
            );
        } else if e.last_lba >= total_lbas {
            findings.push(
                Finding::warning(
                    "gpt-out-of-bounds",
                    format!(
                        "GPT entry {} ({}) ends at LBA {}, past the end of the disk ({} sectors)",
                        e.index, e.name, e.last_lba, total_lbas
                    ),
                )
                .advice("the image is truncated or the card is smaller than the GPT says"),
            );
        }
    }
    sane.sort_by_key(|e| (e.first_lba, e.index));
    let mut reach: Option<&GptEntry> = None;
    for e in sane {
        if let Some(r) = reach {
            if e.first_lba <= r.last_lba {
                findings.push(
                    Finding::error(
                        "gpt-overlap",
                        format!(
                            "GPT entries {} (LBA {}..{}) and {} (LBA {}..{}) overlap",
                            r.index, r.first_lba, r.last_lba, e.index, e.first_lba, e.last_lba
                        ),
                    )
                    .advice(
                        "writing one partition corrupts the other; save the data, then fix the \
                         bounds with gdisk (changing bounds is destructive if done wrong)",
                    ),
                );
            }
            if e.last_lba > r.last_lba {
                reach = Some(e);
            }
        } else {
            reach = Some(e);
        }
    }
}

/// On a disk whose MBR has no 0xEE entry, a GPT header at LBA 1 is a leftover (a hybrid MBR
/// rewritten by a hybrid-unaware tool, or a disk re-partitioned without wiping).
pub(super) fn check_stale_signature<R: Read + Seek>(
    disk: &mut R,
    total_lbas: u64,
    findings: &mut Vec<Finding>,
) -> Result<(), std::io::Error> {
    if let Some(sector) = read_lbas(disk, 1, 1, total_lbas)?
        && &sector[0..8] == SIGNATURE
    {
        findings.push(
            Finding::warning(
                "stale-gpt-signature",
                "LBA 1 holds a GPT header but the MBR has no 0xEE entry; Linux reads the MBR, \
                 other tools may read the GPT",
            )
            .advice(
                "compare `sfdisk --dump` with `sgdisk -p`; if the GPT is stale, removing it \
                 rewrites sectors at both ends of the disk, so back them up first",
            ),
        );
    }
    Ok(())
}

/// Canonical text form of an on-disk GUID: the first three fields are little-endian
/// (UEFI 2.10 Appendix A), the last two are byte strings. Uppercase.
pub(super) fn guid_text(g: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

#[cfg(test)]
mod tests {
    use super::super::testdisk::{BASIC_DATA, Disk, ESP, LINUX_FS, Part};
    use super::super::{SECTOR, TableKind};
    use crate::finding::Severity;

    const TOTAL: u64 = 131072; // 64 MiB

    fn gpt_disk(parts: &[Part]) -> Disk {
        let mut d = Disk::new(TOTAL);
        d.protective_mbr();
        d.gpt(parts);
        d
    }

    fn two_parts() -> Disk {
        gpt_disk(&[
            Part {
                type_guid: ESP,
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
        ])
    }

    fn with_severity(d: &Disk) -> Vec<(String, Severity)> {
        d.layout()
            .findings
            .into_iter()
            .map(|f| (f.code, f.severity))
            .collect()
    }

    #[test]
    fn reads_a_protective_gpt() {
        let layout = two_parts().layout();
        assert_eq!(layout.kind, TableKind::Gpt);
        assert!(layout.findings.is_empty(), "{:?}", layout.findings);
        let gpt = layout.gpt.expect("a GPT");
        assert!(gpt.primary_valid && gpt.backup_valid);
        assert_eq!(gpt.disk_guid, "D1D1D1D1-D1D1-D1D1-D1D1-D1D1D1D1D1D1");
        assert_eq!(
            (gpt.first_usable_lba, gpt.last_usable_lba),
            (34, TOTAL - 34)
        );
        let e = &gpt.entries[0];
        assert_eq!(e.index, 1);
        assert_eq!(e.type_guid, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(e.unique_guid, "01010101-0101-0101-0101-010101010101");
        assert_eq!(
            (e.first_lba, e.last_lba, e.name.as_str()),
            (2048, 63487, "firmware")
        );
        assert_eq!(
            gpt.entries[1].type_guid,
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );
        assert_eq!(gpt.entries.len(), 2);
    }

    #[test]
    fn bad_primary_crc_with_good_backup() {
        let mut d = two_parts();
        d.xor_byte(SECTOR + 40, 0x01); // first_usable_lba
        let layout = d.layout();
        assert_eq!(
            with_severity(&d),
            [("gpt-primary-crc".to_string(), Severity::Error)]
        );
        let f = &layout.findings[0];
        assert!(
            f.message.starts_with("primary GPT: header CRC 0x"),
            "{}",
            f.message
        );
        assert!(f.message.contains("!= computed 0x"));
        assert!(
            f.advice
                .as_deref()
                .unwrap_or("")
                .contains("backup GPT is intact")
        );
        let gpt = layout.gpt.expect("the backup is used");
        assert!(!gpt.primary_valid && gpt.backup_valid);
        assert_eq!(gpt.entries.len(), 2);
        assert_eq!(gpt.first_usable_lba, 34);
    }

    #[test]
    fn corrupted_primary_entry_array() {
        let mut d = two_parts();
        d.xor_byte(Disk::primary_entry(1) + 56, 0x20); // a letter of the name
        assert_eq!(d.codes(), ["gpt-primary-entries-crc"]);
        let gpt = d.layout().gpt.expect("the backup is used");
        assert_eq!(gpt.entries[0].name, "firmware");
    }

    #[test]
    fn bad_backup_crc_is_a_warning() {
        let mut d = two_parts();
        d.xor_byte((TOTAL - 1) * SECTOR + 48, 0x01);
        assert_eq!(
            with_severity(&d),
            [("gpt-backup-crc".to_string(), Severity::Warning)]
        );
        let gpt = d.layout().gpt.expect("the primary is used");
        assert!(gpt.primary_valid && !gpt.backup_valid);
    }

    #[test]
    fn both_copies_bad() {
        let mut d = two_parts();
        d.xor_byte(SECTOR + 40, 0x01);
        d.xor_byte((TOTAL - 1) * SECTOR + 40, 0x01);
        assert_eq!(
            d.codes(),
            ["gpt-primary-crc", "gpt-backup-crc", "gpt-unreadable"]
        );
        assert!(d.layout().gpt.is_none());
    }

    #[test]
    fn absurd_entry_count_is_refused_before_allocating() {
        let mut d = two_parts();
        d.put_u32(SECTOR + 80, u32::MAX);
        d.put_u32(SECTOR + 84, 1 << 31);
        d.fix_header_crc(1);
        assert_eq!(d.codes(), ["gpt-primary-entries-too-large"]);
        assert!(
            d.layout().findings[0]
                .message
                .contains("4294967295 entries")
        );
    }

    #[test]
    fn entry_size_not_a_power_of_two() {
        let mut d = two_parts();
        d.put_u32(SECTOR + 84, u32::MAX);
        d.fix_header_crc(1);
        assert_eq!(d.codes(), ["gpt-primary-entry-size"]);
    }

    #[test]
    fn header_size_out_of_range() {
        let mut d = two_parts();
        d.put_u32(SECTOR + 12, 0xFFFF);
        assert_eq!(d.codes(), ["gpt-primary-header-size"]);
    }

    #[test]
    fn entry_array_past_the_end() {
        let mut d = two_parts();
        d.put_u64(SECTOR + 72, TOTAL - 2);
        d.fix_header_crc(1);
        assert_eq!(d.codes(), ["gpt-primary-entries-out-of-bounds"]);
    }

    #[test]
    fn header_at_the_wrong_lba() {
        let mut d = two_parts();
        d.put_u64(SECTOR + 24, 7);
        d.fix_header_crc(1);
        assert_eq!(d.codes(), ["gpt-primary-my-lba"]);
    }

    #[test]
    fn overlapping_entries() {
        let d = gpt_disk(&[
            Part {
                type_guid: BASIC_DATA,
                first: 2048,
                last: 63487,
                name: "a",
            },
            Part {
                type_guid: LINUX_FS,
                first: 63000,
                last: 90000,
                name: "b",
            },
        ]);
        assert_eq!(d.codes(), ["gpt-overlap"]);
        assert!(
            d.layout().findings[0]
                .message
                .contains("entries 1 (LBA 2048..63487) and 2 (LBA 63000..90000)")
        );
    }

    #[test]
    fn entry_outside_the_usable_range() {
        let d = gpt_disk(&[Part {
            type_guid: LINUX_FS,
            first: 2048,
            last: TOTAL - 1,
            name: "greedy",
        }]);
        assert_eq!(
            with_severity(&d),
            [("gpt-out-of-bounds".to_string(), Severity::Error)]
        );
    }

    #[test]
    fn inverted_entry() {
        let d = gpt_disk(&[Part {
            type_guid: LINUX_FS,
            first: 9000,
            last: 8000,
            name: "backwards",
        }]);
        assert_eq!(d.codes(), ["gpt-entry-inverted"]);
    }

    #[test]
    fn image_written_to_a_larger_card() {
        let mut d = two_parts();
        d.resize(TOTAL * 2);
        let codes = d.codes();
        assert_eq!(codes, ["gpt-backup-not-at-end", "protective-mbr-size"]);
        assert!(d.layout().gpt.expect("a GPT").backup_valid);
    }

    #[test]
    fn truncated_image_loses_the_backup() {
        let mut d = two_parts();
        d.resize(TOTAL / 2);
        assert_eq!(
            d.codes(),
            [
                "gpt-backup-missing",
                "gpt-usable-range",
                "gpt-out-of-bounds",
                "protective-mbr-size"
            ]
        );
        assert!(
            d.layout().findings[0]
                .message
                .contains("past the end of the disk")
        );
    }

    #[test]
    fn primary_pointing_to_itself_as_backup() {
        let mut d = two_parts();
        d.put_u64(SECTOR + 32, 1);
        d.fix_header_crc(1);
        assert_eq!(d.codes(), ["gpt-alternate-lba"]);
        assert!(d.layout().gpt.expect("a GPT").backup_valid);
    }

    #[test]
    fn valid_copies_that_disagree() {
        let mut d = two_parts();
        d.xor_byte((TOTAL - 1) * SECTOR + 56, 0x01); // backup disk GUID
        d.fix_header_crc(TOTAL - 1);
        assert_eq!(d.codes(), ["gpt-copies-differ"]);
        assert!(
            d.layout().findings[0]
                .message
                .contains("disk GUID D1D1D1D1-D1D1-D1D1-D1D1-D1D1D1D1D1D1 vs D1D1D1D0-")
        );
    }

    #[test]
    fn protective_entry_not_at_lba_1() {
        let mut d = two_parts();
        d.mbr(1, 0, 0xEE, 2, (TOTAL - 2) as u32);
        assert_eq!(d.codes(), ["protective-mbr-not-first-lba"]);
    }

    #[test]
    fn stale_gpt_behind_a_plain_mbr() {
        let mut d = two_parts();
        d.mbr(1, 0, 0x0C, 2048, 61440);
        assert_eq!(d.layout().kind, TableKind::Mbr);
        assert_eq!(d.codes(), ["stale-gpt-signature"]);
    }
}
