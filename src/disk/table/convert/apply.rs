//! Writing a [`HybridPlan`], putting saved sectors back, and reading both back.
//!
//! Every write here is one whole sector in one `write` call, so a device that loses power
//! between calls ([`crate::txn::FaultyDevice`]) sees exactly the states a card can be left in.
//! Syncs ([`Durable`]) separate the steps whose order the crash-safety argument relies on (see
//! the parent module).

use super::super::{Layout, SECTOR, TableKind, read_layout};
use super::{
    COPY_SECTORS, ConvertError, HEAD_SECTORS, HybridPlan, MAX_SHRINK_SECTORS, effective_partitions,
    io_err, read_exact_at,
};
use crate::device::Durable;
use crate::finding::Severity;
use serde::Serialize;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Largest amount of saved table data accepted (the conversion saves 67 sectors).
const MAX_SAVED_BYTES: u64 = 4 << 20;

const SECTOR_LEN: usize = SECTOR as usize;

fn disk_len<D: Seek>(disk: &mut D) -> Result<u64, ConvertError> {
    disk.seek(SeekFrom::End(0))
        .map_err(io_err("finding the disk size"))
}

/// Writes `bytes` from `lba` on, one sector per write call, in ascending order.
fn write_sectors<D: Write + Seek>(
    disk: &mut D,
    lba: u64,
    bytes: &[u8],
) -> Result<(), ConvertError> {
    for (i, sector) in bytes.chunks(SECTOR_LEN).enumerate() {
        disk.seek(SeekFrom::Start((lba + i as u64) * SECTOR))
            .map_err(io_err("seeking"))?;
        disk.write_all(sector).map_err(io_err("writing a sector"))?;
    }
    Ok(())
}

fn sync<D: Durable>(disk: &mut D) -> Result<(), ConvertError> {
    disk.sync().map_err(io_err("syncing"))
}

/// One GPT copy: its header sector zeroed first, then the entry array, then the header. A
/// header is therefore never on the disk beside an array it does not describe (a stale header
/// from an earlier table would otherwise sit next to a half-written array).
fn write_gpt_copy<D: Write + Seek>(
    disk: &mut D,
    header_lba: u64,
    header: &[u8],
    array_lba: u64,
    array: &[u8],
) -> Result<(), ConvertError> {
    write_sectors(disk, header_lba, &[0u8; SECTOR_LEN])?;
    write_sectors(disk, array_lba, array)?;
    write_sectors(disk, header_lba, header)
}

/// Refuses when LBA 0-33 or the last 33 sectors differ from what the plan read (another
/// program changed the tables between the plan and the exclusive open).
pub fn check_unchanged<D: Read + Seek>(
    disk: &mut D,
    plan: &HybridPlan,
) -> Result<(), ConvertError> {
    let s = &plan.sectors;
    let len = disk_len(disk)?;
    if len != plan.disk_bytes {
        return Err(ConvertError::Changed(format!(
            "it is {len} bytes, the plan was made for {}",
            plan.disk_bytes
        )));
    }
    if read_exact_at(disk, 0, HEAD_SECTORS)? != s.old_head {
        return Err(ConvertError::Changed("LBA 0-33 differ".into()));
    }
    if read_exact_at(disk, s.old_tail_offset / SECTOR, COPY_SECTORS)? != s.old_tail {
        return Err(ConvertError::Changed("the last 33 sectors differ".into()));
    }
    Ok(())
}

/// Writes the plan's tables: backup GPT, sync, primary GPT, sync, LBA 0, sync. The disk must
/// already have the plan's size (grown by the caller when the plan grows it) and the LBA 0 the
/// plan read.
pub fn write_hybrid<D: Read + Write + Seek + Durable>(
    disk: &mut D,
    plan: &HybridPlan,
) -> Result<(), ConvertError> {
    let s = &plan.sectors;
    let len = disk_len(disk)?;
    if len != plan.new_disk_bytes {
        return Err(ConvertError::Changed(format!(
            "it is {len} bytes, the tables are planned for {}",
            plan.new_disk_bytes
        )));
    }
    if read_exact_at(disk, 0, 1)? != s.old_head[..SECTOR_LEN] {
        return Err(ConvertError::Changed("LBA 0 differs".into()));
    }
    let backup_array_lba = plan.gpt.backup_first_lba;
    let backup_header_lba = backup_array_lba + COPY_SECTORS - 1;
    let array_len = (COPY_SECTORS as usize - 1) * SECTOR_LEN;
    // Why this order: until LBA 0 gains its 0xEE entry no reader looks for a GPT, and both
    // copies lie outside every partition, so a cut anywhere before the last write leaves the
    // old MBR disk. The backup goes first so that the moment the primary becomes reachable
    // (at the LBA 0 commit) a complete backup already exists behind it.
    write_gpt_copy(
        disk,
        backup_header_lba,
        &s.new_backup[array_len..],
        backup_array_lba,
        &s.new_backup[..array_len],
    )?;
    sync(disk)?;
    write_gpt_copy(
        disk,
        1,
        &s.new_primary[..SECTOR_LEN],
        2,
        &s.new_primary[SECTOR_LEN..],
    )?;
    sync(disk)?;
    // The commit: one sector turns the MBR disk into the hybrid.
    write_sectors(disk, 0, &s.new_lba0)?;
    sync(disk)
}

/// Reads the disk back after [`write_hybrid`]: every written sector as planned, and the
/// validating parser sees exactly the planned hybrid (both GPT copies valid, entries, MBR
/// slots, disk signature and boot code) with no warning or error.
pub fn verify_hybrid<D: Read + Seek>(
    disk: &mut D,
    plan: &HybridPlan,
) -> Result<Layout, ConvertError> {
    let fail = |what: String| Err(ConvertError::Verify(what));
    let len = disk_len(disk)?;
    if len != plan.new_disk_bytes {
        return fail(format!(
            "the disk is {len} bytes, expected {}",
            plan.new_disk_bytes
        ));
    }
    for (name, lba, bytes) in plan.writes() {
        if read_exact_at(disk, lba, bytes.len() as u64 / SECTOR)? != bytes {
            return fail(format!(
                "{name} (from LBA {lba}) differs from what was written"
            ));
        }
    }
    let layout = read_layout(disk, len)?;
    if layout.kind != TableKind::Hybrid {
        return fail(format!("the disk reads as {:?}, not hybrid", layout.kind));
    }
    let bad: Vec<String> = layout
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
        .map(|f| format!("{} ({})", f.message, f.code))
        .collect();
    if !bad.is_empty() {
        return fail(bad.join("; "));
    }
    let Some(gpt) = &layout.gpt else {
        return fail("no GPT".into());
    };
    if !(gpt.primary_valid && gpt.backup_valid) || gpt.disk_guid != plan.gpt.disk_guid {
        return fail("the GPT copies are not both valid with the planned disk GUID".into());
    }
    let got: Vec<_> = gpt
        .entries
        .iter()
        .map(|e| {
            (
                e.index,
                e.type_guid.clone(),
                e.unique_guid.clone(),
                e.first_lba,
                e.last_lba,
                e.attributes,
                e.name.clone(),
            )
        })
        .collect();
    let want: Vec<_> = plan
        .gpt
        .partitions
        .iter()
        .map(|p| {
            (
                p.index,
                p.type_guid.clone(),
                p.unique_guid.clone(),
                p.first_lba,
                p.last_lba,
                p.attributes,
                p.name.clone(),
            )
        })
        .collect();
    if got != want {
        return fail(format!("GPT entries {got:?}, planned {want:?}"));
    }
    let Some(mbr) = &layout.mbr else {
        return fail("no MBR".into());
    };
    let got: Vec<_> = mbr
        .entries
        .iter()
        .map(|e| (e.slot, e.type_byte, e.bootable, e.start_lba, e.sectors))
        .collect();
    let want: Vec<_> = plan
        .mbr
        .iter()
        .map(|s| (s.slot, s.type_byte, s.bootable, s.start_lba, s.sectors))
        .collect();
    if got != want || format!("0x{:08x}", mbr.disk_signature) != plan.disk_signature {
        return fail(format!("MBR entries {got:?}, planned {want:?}"));
    }
    let lba0 = read_exact_at(disk, 0, 1)?;
    if lba0[..446] != plan.sectors.old_head[..446] {
        return fail("the boot code or disk signature changed".into());
    }
    Ok(layout)
}

/// One saved byte range of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRegion {
    pub name: String,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Table sectors saved from a disk of `disk_bytes` bytes (a backup's `pifw-tables/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedTables {
    disk_bytes: u64,
    regions: Vec<SavedRegion>,
}

impl SavedTables {
    /// Checks the regions: sector-aligned, inside the disk, not overlapping, one of them
    /// starting at LBA 0, at most 4 MiB in all.
    pub fn new(
        disk_bytes: u64,
        mut regions: Vec<SavedRegion>,
    ) -> Result<SavedTables, ConvertError> {
        let bad = |what: String| Err(ConvertError::BadSaved(what));
        regions.sort_by_key(|r| r.offset);
        let total: u64 = regions.iter().map(|r| r.bytes.len() as u64).sum();
        if total > MAX_SAVED_BYTES {
            return bad(format!(
                "{total} bytes of tables (at most {MAX_SAVED_BYTES})"
            ));
        }
        let mut reach = 0;
        for r in &regions {
            let len = r.bytes.len() as u64;
            if !r.offset.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) || len == 0 {
                return bad(format!("{} is not whole sectors", r.name));
            }
            if r.offset < reach || r.offset + len > disk_bytes {
                return bad(format!(
                    "{} overlaps another region or the disk end",
                    r.name
                ));
            }
            reach = r.offset + len;
        }
        if regions.first().map(|r| r.offset) != Some(0) {
            return bad("no region holds LBA 0".into());
        }
        Ok(SavedTables {
            disk_bytes,
            regions,
        })
    }

    /// LBA 0-33 and the last 33 sectors of `disk` as they are now (`lba0`, `gpt-primary`,
    /// `gpt-backup`): what a table change overwrites.
    pub fn capture<R: Read + Seek>(
        disk: &mut R,
        disk_bytes: u64,
    ) -> Result<SavedTables, ConvertError> {
        let total = disk_bytes / SECTOR;
        if total < HEAD_SECTORS + COPY_SECTORS {
            return Err(ConvertError::BadSaved(format!(
                "a disk of {disk_bytes} bytes is too small"
            )));
        }
        let head = read_exact_at(disk, 0, HEAD_SECTORS)?;
        let tail = read_exact_at(disk, total - COPY_SECTORS, COPY_SECTORS)?;
        SavedTables::new(
            disk_bytes,
            vec![
                SavedRegion {
                    name: "lba0".into(),
                    offset: 0,
                    bytes: head[..SECTOR_LEN].to_vec(),
                },
                SavedRegion {
                    name: "gpt-primary".into(),
                    offset: SECTOR,
                    bytes: head[SECTOR_LEN..].to_vec(),
                },
                SavedRegion {
                    name: "gpt-backup".into(),
                    offset: (total - COPY_SECTORS) * SECTOR,
                    bytes: tail,
                },
            ],
        )
    }

    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    pub fn regions(&self) -> &[SavedRegion] {
        &self.regions
    }

    fn lba0(&self) -> &[u8] {
        &self.regions[0].bytes[..SECTOR_LEN]
    }

    /// The tables the saved sectors describe, read by the validating parser (sectors not saved
    /// read as zeros).
    pub fn layout(&self) -> Result<Layout, ConvertError> {
        let mut view = SavedView {
            saved: self,
            pos: 0,
        };
        Ok(read_layout(&mut view, self.disk_bytes)?)
    }

    /// Whether the saved LBA 0 has an 0xEE entry (it restores a GPT or hybrid disk).
    pub fn restores_gpt(&self) -> bool {
        let l = self.lba0();
        l[510] == 0x55 && l[511] == 0xAA && (0..4).any(|i| l[446 + 16 * i + 4] == 0xEE)
    }
}

/// A [`SavedTables`] read as a disk.
struct SavedView<'a> {
    saved: &'a SavedTables,
    pos: u64,
}

impl Read for SavedView<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let end = self.saved.disk_bytes;
        if self.pos >= end || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(end - self.pos);
        for r in &self.saved.regions {
            let r_end = r.offset + r.bytes.len() as u64;
            if (r.offset..r_end).contains(&self.pos) {
                let n = want.min(r_end - self.pos) as usize;
                let at = (self.pos - r.offset) as usize;
                buf[..n].copy_from_slice(&r.bytes[at..at + n]);
                self.pos += n as u64;
                return Ok(n);
            }
        }
        let next = self
            .saved
            .regions
            .iter()
            .map(|r| r.offset)
            .filter(|&o| o > self.pos)
            .min()
            .unwrap_or(end);
        let n = want.min(next - self.pos) as usize;
        buf[..n].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SavedView<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.saved.disk_bytes.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

/// How a disk relates to saved tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RestoreState {
    /// Every saved region is on the disk, which has the saved size: nothing to write.
    Done,
    /// LBA 0 already holds the saved sector (an interrupted restore): the rest is written.
    Finish,
    /// The disk has the partitions the saved tables describe (the last may end up to
    /// [`MAX_SHRINK_SECTORS`] apart, where a conversion shortened it): restoring brings the
    /// saved tables back.
    Applies,
    /// The partitions differ: the disk changed since, or it is another card.
    Mismatch {
        now: Vec<(u64, u64)>,
        saved: Vec<(u64, u64)>,
    },
}

/// Compares `disk` (`disk_bytes` long) with `saved`.
pub fn restore_state<D: Read + Seek>(
    disk: &mut D,
    disk_bytes: u64,
    saved: &SavedTables,
) -> Result<RestoreState, ConvertError> {
    let mut all_equal = disk_bytes == saved.disk_bytes;
    for r in &saved.regions {
        all_equal = all_equal
            && r.offset + r.bytes.len() as u64 <= disk_bytes
            && read_exact_at(disk, r.offset / SECTOR, r.bytes.len() as u64 / SECTOR)? == r.bytes;
    }
    if all_equal {
        return Ok(RestoreState::Done);
    }
    if read_exact_at(disk, 0, 1)? == saved.lba0() {
        return Ok(RestoreState::Finish);
    }
    let now = effective_partitions(&read_layout(disk, disk_bytes)?);
    let then = effective_partitions(&saved.layout()?);
    let same = now.len() == then.len()
        && !now.is_empty()
        && now.iter().zip(&then).enumerate().all(|(i, (a, b))| {
            a.0 == b.0
                && (a.1 == b.1 || (i + 1 == now.len() && a.1.abs_diff(b.1) <= MAX_SHRINK_SECTORS))
        });
    Ok(if same {
        RestoreState::Applies
    } else {
        RestoreState::Mismatch { now, saved: then }
    })
}

/// Writes the saved regions back, sector by sector. When they hold a plain MBR, LBA 0 goes
/// first and alone (from that sync on the disk is the saved MBR disk; the GPT sectors written
/// after it are then outside every partition and unread). When they hold an 0xEE entry, LBA 0
/// goes last (the GPT must be complete before anything looks for it). The disk must be at
/// least as large as the saved regions reach.
pub fn restore_tables<D: Read + Write + Seek + Durable>(
    disk: &mut D,
    saved: &SavedTables,
) -> Result<(), ConvertError> {
    let len = disk_len(disk)?;
    if let Some(r) = saved
        .regions
        .iter()
        .find(|r| r.offset + r.bytes.len() as u64 > len)
    {
        return Err(ConvertError::Changed(format!(
            "it is {len} bytes, too small for the saved {} at byte {}",
            r.name, r.offset
        )));
    }
    let rest = |disk: &mut D| -> Result<(), ConvertError> {
        for (i, r) in saved.regions.iter().enumerate() {
            let skip = if i == 0 { SECTOR_LEN } else { 0 };
            write_sectors(disk, (r.offset + skip as u64) / SECTOR, &r.bytes[skip..])?;
        }
        sync(disk)
    };
    if saved.restores_gpt() {
        rest(disk)?;
        write_sectors(disk, 0, saved.lba0())?;
        sync(disk)
    } else {
        // Why LBA 0 first: the saved MBR has no 0xEE entry, so once it is on the disk every
        // reader takes the old partitions and ignores whatever GPT sectors remain.
        write_sectors(disk, 0, saved.lba0())?;
        sync(disk)?;
        rest(disk)
    }
}

/// Reads the disk back after [`restore_tables`]: every saved region byte for byte, and the
/// parser sees the saved kind of table. Returns the layout read.
pub fn verify_restored<D: Read + Seek>(
    disk: &mut D,
    saved: &SavedTables,
) -> Result<Layout, ConvertError> {
    let len = disk_len(disk)?;
    for r in &saved.regions {
        let ok = r.offset + r.bytes.len() as u64 <= len
            && read_exact_at(disk, r.offset / SECTOR, r.bytes.len() as u64 / SECTOR)? == r.bytes;
        if !ok {
            return Err(ConvertError::Verify(format!(
                "{} (byte {}) does not read back as saved",
                r.name, r.offset
            )));
        }
    }
    let layout = read_layout(disk, len)?;
    let want = saved.layout()?.kind;
    if layout.kind != want {
        return Err(ConvertError::Verify(format!(
            "the disk reads as {:?}, the saved tables as {want:?}",
            layout.kind
        )));
    }
    Ok(layout)
}

impl HybridPlan {
    /// The sectors [`HybridPlan::backup_regions`] names, as [`SavedTables`] of the disk's
    /// current size (what `pifw partition mbr` restores).
    pub fn saved_tables(&self) -> SavedTables {
        let regions = self
            .backup_regions()
            .into_iter()
            .map(|(name, offset, bytes)| SavedRegion {
                name: name.to_string(),
                offset,
                bytes: bytes.to_vec(),
            })
            .collect();
        SavedTables::new(self.disk_bytes, regions).expect("the plan's regions are well formed")
    }
}
