//! Low-level FAT16/FAT32 writing primitives for the change engine in [`crate::txn`].
//!
//! Owns the byte-exact edits a copy-on-write update needs: finding free clusters, writing
//! content into them, setting FAT entries in every FAT copy, reading a directory with the
//! on-disk offset of each 32-byte slot, building new entries (short name, NT lower-case flags,
//! long-name entries) and patching directory slots a sector at a time, and rewriting the FAT32
//! FSInfo sector. Reuses the read-only parsers of the parent module (boot sector, FAT entries,
//! directory entries).
//!
//! Must not decide any ordering: every function here does one kind of write and returns; the
//! crash-safe order lives in [`crate::txn`]. Must not hold the partition (or a whole FAT) in
//! memory: content streams in chunks of at most [`CHUNK`] bytes, the FAT is read through the
//! windowed [`FatReader`] and written a few sectors at a time. FAT12 is refused for writing:
//! its 12-bit entries straddle sector boundaries, so one entry update is not one sector write.

pub(crate) mod names;

use super::FatType;
use super::boot_sector::{self, Geometry};
use super::dir_entry::{ATTR_LONG_NAME, ATTR_VOLUME_ID, ENTRY_BYTES, LongName, ShortEntry};
use super::table::{Entry, FatReader};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Largest buffer used to move file content (the memory bound of the engine).
pub const CHUNK: usize = 1 << 20;
/// A directory holds at most 65536 entries (fatgen103 section 6).
const MAX_DIR_BYTES: u64 = 65536 * ENTRY_BYTES as u64;

/// Errors of the writing primitives, each with the evidence that caused it.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("I/O on the FAT volume: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Fat(#[from] super::FatError),
    #[error(
        "this is a FAT12 volume ({clusters} clusters); pifw writes only FAT16 and FAT32 \
         (a FAT12 entry update is not a single-sector write)"
    )]
    Fat12 { clusters: u32 },
    #[error("cannot store the name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error("directory {dir} does not exist")]
    NoSuchDir { dir: String },
    #[error("{path} is a directory, not a file")]
    IsDir { path: String },
    #[error(
        "the FAT16 root directory is full: {need} free slots needed, {have} free of {total} \
         (the root of FAT16 cannot grow)"
    )]
    RootFull {
        need: usize,
        have: usize,
        total: usize,
    },
    #[error("the FAT volume is damaged: {reason}")]
    Damaged { reason: String },
}

fn damaged(reason: String) -> WriteError {
    WriteError::Damaged { reason }
}

/// A FAT16/FAT32 volume opened for writing: its validated geometry.
#[derive(Debug, Clone)]
pub struct Volume {
    pub(crate) geo: Geometry,
}

impl Volume {
    /// Reads and validates the boot sector; refuses FAT12.
    pub fn open<R: Read + Seek>(r: &mut R) -> Result<Self, WriteError> {
        let (_, geo) = boot_sector::read(r)?;
        if geo.fat_type == FatType::Fat12 {
            return Err(WriteError::Fat12 {
                clusters: geo.cluster_count,
            });
        }
        Ok(Volume { geo })
    }

    pub fn fat_type(&self) -> FatType {
        self.geo.fat_type
    }

    pub fn cluster_bytes(&self) -> u64 {
        self.geo.cluster_bytes
    }

    pub fn sector_bytes(&self) -> u64 {
        self.geo.bytes_per_sector
    }

    /// Byte offset of a data cluster.
    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.geo.cluster_offset(c)
    }

    fn entry_bytes(&self) -> u64 {
        if self.geo.fat_type == FatType::Fat32 {
            4
        } else {
            2
        }
    }

    /// The end-of-chain value this volume's FAT uses.
    pub fn eoc(&self) -> u32 {
        if self.geo.fat_type == FatType::Fat32 {
            0x0FFF_FFFF
        } else {
            0xFFFF
        }
    }

    /// FAT copies to write: all of them.
    fn copies(&self) -> Vec<u8> {
        (0..self.geo.fats).collect()
    }

    /// Number of FAT copies.
    pub fn fat_copies(&self) -> u8 {
        self.geo.fats
    }

    /// Bytes the volume spans.
    pub fn geo_volume_bytes(&self) -> u64 {
        self.geo.volume_bytes
    }

    pub(crate) fn reader(&self, copy: u8) -> FatReader {
        FatReader::new(&self.geo, copy)
    }

    /// The chain starting at `first` in FAT copy 0, at most `max` clusters; an error if it
    /// leaves the valid range, meets a free cluster or is longer than `max`.
    pub fn chain<R: Read + Seek>(
        &self,
        r: &mut R,
        first: u32,
        max: u64,
    ) -> Result<Vec<u32>, WriteError> {
        let mut fat = self.reader(0);
        let mut out = Vec::new();
        let mut c = first;
        loop {
            if !(2..=self.geo.max_cluster()).contains(&c) || out.len() as u64 >= max {
                return Err(damaged(format!(
                    "chain from cluster {first} reaches {c} after {} clusters (limit {max})",
                    out.len()
                )));
            }
            out.push(c);
            match fat.entry(r, c)? {
                Entry::Next(n) => c = n,
                Entry::EndOfChain => return Ok(out),
                other => {
                    return Err(damaged(format!(
                        "chain from cluster {first}: cluster {c} is {other:?}"
                    )));
                }
            }
        }
    }

    /// Counts free clusters (free in every FAT copy) and returns them as a map.
    pub fn free_map<R: Read + Seek>(&self, r: &mut R) -> Result<FreeMap, WriteError> {
        let max = self.geo.max_cluster();
        let mut bits = vec![0u64; (max as usize + 1).div_ceil(64)];
        let mut readers: Vec<FatReader> = self.copies().iter().map(|&c| self.reader(c)).collect();
        let mut count = 0u64;
        for c in 2..=max {
            let mut free = true;
            for fat in readers.iter_mut() {
                if fat.raw(r, c)? != 0 {
                    free = false;
                    break;
                }
            }
            if free {
                bits[(c / 64) as usize] |= 1 << (c % 64);
                count += 1;
            }
        }
        Ok(FreeMap { bits, max, count })
    }

    /// Applies `edits` to FAT copy `copy`: read-modify-write of each run of touched sectors
    /// (at most 64 KiB per write); sectors whose bytes would not change are not written, so
    /// re-applying the same edits writes nothing. Returns the number of writes.
    pub fn write_fat_copy<RW: Read + Write + Seek>(
        &self,
        rw: &mut RW,
        edits: &FatEdits,
        copy: u8,
    ) -> io::Result<usize> {
        let bps = self.geo.bytes_per_sector;
        let eb = self.entry_bytes();
        let base = self.geo.fat_offset + u64::from(copy) * self.geo.fat_bytes;
        let sectors: Vec<u64> = {
            let mut s: Vec<u64> = edits.0.keys().map(|&c| u64::from(c) * eb / bps).collect();
            s.dedup();
            s
        };
        let max_run = (64 * 1024 / bps).max(1);
        let mut writes = 0;
        let mut i = 0;
        while i < sectors.len() {
            let start = sectors[i];
            let mut end = start + 1;
            while i + 1 < sectors.len() && sectors[i + 1] == end && end - start < max_run {
                end += 1;
                i += 1;
            }
            i += 1;
            let mut buf = vec![0u8; ((end - start) * bps) as usize];
            rw.seek(SeekFrom::Start(base + start * bps))?;
            rw.read_exact(&mut buf)?;
            let before = buf.clone();
            let lo = start * bps / eb;
            let hi = end * bps / eb;
            for (&c, &v) in edits.0.range(lo as u32..hi as u32) {
                let off = ((u64::from(c) - lo) * eb) as usize;
                if eb == 4 {
                    let old =
                        u32::from_le_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]);
                    // fatgen103 section 4: the top 4 bits of a FAT32 entry are reserved and
                    // must be preserved.
                    let new = (old & 0xF000_0000) | (v & 0x0FFF_FFFF);
                    buf[off..off + 4].copy_from_slice(&new.to_le_bytes());
                } else {
                    buf[off..off + 2].copy_from_slice(&(v as u16).to_le_bytes());
                }
            }
            if buf != before {
                rw.seek(SeekFrom::Start(base + start * bps))?;
                rw.write_all(&buf)?;
                writes += 1;
            }
        }
        Ok(writes)
    }

    /// Applies `edits` to every FAT copy, copy 0 first. Returns the number of writes.
    pub fn write_fat<RW: Read + Write + Seek>(
        &self,
        rw: &mut RW,
        edits: &FatEdits,
    ) -> io::Result<usize> {
        let mut n = 0;
        // Copy 0 first: fsck.fat and Linux trust copy 0 when the copies differ, so a cut
        // between the copies leaves the edit visible where readers look.
        for copy in self.copies() {
            n += self.write_fat_copy(rw, edits, copy)?;
        }
        Ok(n)
    }

    /// Hashes `size` bytes along `clusters`; `None` if the clusters hold fewer bytes.
    pub fn hash_clusters<R: Read + Seek>(
        &self,
        r: &mut R,
        clusters: &[u32],
        size: u64,
    ) -> io::Result<Option<String>> {
        let cb = self.geo.cluster_bytes;
        if (clusters.len() as u64) * cb < size {
            return Ok(None);
        }
        let mut hasher = Sha256::new();
        let mut left = size;
        let mut buf = Vec::new();
        for (start, len) in runs(clusters) {
            if left == 0 {
                break;
            }
            let mut off = self.cluster_offset(start);
            let mut run_left = (u64::from(len) * cb).min(left);
            while run_left > 0 {
                let n = run_left.min(CHUNK as u64) as usize;
                buf.resize(n, 0);
                r.seek(SeekFrom::Start(off))?;
                r.read_exact(&mut buf)?;
                hasher.update(&buf);
                off += n as u64;
                run_left -= n as u64;
                left -= n as u64;
            }
        }
        Ok(Some(hex(&hasher.finalize())))
    }

    /// Streams `src` into `clusters` (which must hold `size` bytes), zero-filling the tail of
    /// the last cluster. Returns the sha256 of the bytes read from `src` and the bytes it got.
    pub fn write_content<RW: Write + Seek, S: Read>(
        &self,
        rw: &mut RW,
        clusters: &[u32],
        src: &mut S,
        size: u64,
    ) -> io::Result<(String, u64)> {
        let mut hashing = crate::digest::Hashing::new(src);
        let got = self.copy_content(rw, clusters, &mut hashing, size)?;
        Ok((hashing.finish().0, got))
    }

    /// [`Volume::write_content`] without the hash, for content hashed already: returns the
    /// bytes it got from `src` (one more than `size` when the source is longer).
    pub fn copy_content<RW: Write + Seek, S: Read>(
        &self,
        rw: &mut RW,
        clusters: &[u32],
        src: &mut S,
        size: u64,
    ) -> io::Result<u64> {
        let cb = self.geo.cluster_bytes;
        let mut got = 0u64;
        let mut buf = Vec::new();
        let mut left = size;
        for (start, len) in runs(clusters) {
            let mut off = self.cluster_offset(start);
            let mut run_left = u64::from(len) * cb;
            while run_left > 0 {
                let n = run_left.min(CHUNK as u64) as usize;
                buf.clear();
                buf.resize(n, 0);
                let want = (left.min(n as u64)) as usize;
                let mut filled = 0;
                while filled < want {
                    let k = src.read(&mut buf[filled..want])?;
                    if k == 0 {
                        break;
                    }
                    filled += k;
                }
                got += filled as u64;
                left -= filled as u64;
                rw.seek(SeekFrom::Start(off))?;
                rw.write_all(&buf)?;
                off += n as u64;
                run_left -= n as u64;
            }
        }
        // One byte more than announced means the source changed under us.
        let mut probe = [0u8; 1];
        if src.read(&mut probe)? > 0 {
            got += 1;
        }
        Ok(got)
    }

    /// Reads the directory that starts at `first` (0 = the fixed FAT12/16 root; on FAT32 pass
    /// the root cluster).
    pub fn read_dir<R: Read + Seek>(&self, r: &mut R, first: u32) -> Result<Dir, WriteError> {
        let (regions, clusters) = if first == 0 {
            (
                vec![(self.geo.root_dir_offset, self.geo.root_dir_bytes)],
                Vec::new(),
            )
        } else {
            let max = (MAX_DIR_BYTES / self.geo.cluster_bytes).max(1);
            let clusters = self.chain(r, first, max)?;
            let regions = clusters
                .iter()
                .map(|&c| (self.cluster_offset(c), self.geo.cluster_bytes))
                .collect();
            (regions, clusters)
        };
        let mut bytes = Vec::new();
        for &(off, len) in &regions {
            let at = bytes.len();
            bytes.resize(at + len as usize, 0);
            r.seek(SeekFrom::Start(off))?;
            r.read_exact(&mut bytes[at..])?;
        }
        Ok(Dir {
            first,
            clusters,
            regions,
            bytes,
            fat_type: self.geo.fat_type,
        })
    }

    /// First cluster of the root directory as [`Volume::read_dir`] wants it.
    pub fn root(&self) -> u32 {
        self.geo.root_cluster
    }

    /// Walks `dirs` (path components) from the root; `NoSuchDir` if one is missing.
    pub fn resolve_dir<R: Read + Seek>(&self, r: &mut R, dirs: &[&str]) -> Result<Dir, WriteError> {
        let mut dir = self.read_dir(r, self.root())?;
        for (i, name) in dirs.iter().enumerate() {
            let item = dir.find(name).filter(|it| it.short.is_dir());
            let Some(item) = item else {
                return Err(WriteError::NoSuchDir {
                    dir: dirs[..=i].join("/"),
                });
            };
            if item.short.first_cluster == 0 {
                dir = self.read_dir(r, self.root())?;
            } else {
                dir = self.read_dir(r, item.short.first_cluster)?;
            }
        }
        Ok(dir)
    }

    /// Byte offset of the FAT32 FSInfo sector, if any.
    pub fn fs_info_offset(&self) -> Option<u64> {
        self.geo.fs_info_offset
    }

    /// Sets FSInfo's free count and next-free hint (FAT32 only; fatgen103 section 5:
    /// `FSI_Free_Count` offset 488, `FSI_Nxt_Free` offset 492, 0xFFFFFFFF = unknown).
    /// Writes nothing when the sector already says so or lacks its signatures.
    pub fn write_fs_info<RW: Read + Write + Seek>(
        &self,
        rw: &mut RW,
        free: u32,
        next: u32,
    ) -> io::Result<usize> {
        let Some(off) = self.geo.fs_info_offset else {
            return Ok(0);
        };
        let info = boot_sector::FsInfo::read(rw, off)?;
        if !info.signatures_ok {
            return Ok(0);
        }
        let mut b = vec![0u8; self.geo.bytes_per_sector as usize];
        rw.seek(SeekFrom::Start(off))?;
        rw.read_exact(&mut b)?;
        let before = b.clone();
        b[488..492].copy_from_slice(&free.to_le_bytes());
        b[492..496].copy_from_slice(&next.to_le_bytes());
        if b == before {
            return Ok(0);
        }
        rw.seek(SeekFrom::Start(off))?;
        rw.write_all(&b)?;
        Ok(1)
    }

    /// The FSInfo free count as stored, if the volume has a valid FSInfo sector.
    pub fn fs_info_free<R: Read + Seek>(&self, r: &mut R) -> io::Result<Option<u32>> {
        let Some(off) = self.geo.fs_info_offset else {
            return Ok(None);
        };
        let info = boot_sector::FsInfo::read(r, off)?;
        Ok(info.signatures_ok.then_some(info.free_count))
    }
}

/// Writes each 32-byte slot image at its byte offset, one read-modify-write per sector, the
/// sectors in the order their first slot appears in `slots`; a sector whose bytes would not
/// change is not written. Returns the number of writes.
pub fn patch_slots<RW: Read + Write + Seek>(
    rw: &mut RW,
    sector_bytes: u64,
    slots: &[(u64, [u8; 32])],
) -> io::Result<usize> {
    let mut order: Vec<u64> = Vec::new();
    for (off, _) in slots {
        let s = off / sector_bytes;
        if !order.contains(&s) {
            order.push(s);
        }
    }
    let mut writes = 0;
    let mut buf = vec![0u8; sector_bytes as usize];
    for s in order {
        let base = s * sector_bytes;
        rw.seek(SeekFrom::Start(base))?;
        rw.read_exact(&mut buf)?;
        let before = buf.clone();
        for (off, bytes) in slots.iter().filter(|(o, _)| o / sector_bytes == s) {
            let at = (off - base) as usize;
            buf[at..at + 32].copy_from_slice(bytes);
        }
        if buf != before {
            rw.seek(SeekFrom::Start(base))?;
            rw.write_all(&buf)?;
            writes += 1;
        }
    }
    Ok(writes)
}

/// Reads the 32 bytes at `offset`.
pub fn read_slot<R: Read + Seek>(r: &mut R, offset: u64) -> io::Result<[u8; 32]> {
    let mut b = [0u8; 32];
    r.seek(SeekFrom::Start(offset))?;
    r.read_exact(&mut b)?;
    Ok(b)
}

/// Pending FAT entry values, by cluster.
#[derive(Debug, Default, Clone)]
pub struct FatEdits(BTreeMap<u32, u32>);

impl FatEdits {
    pub fn set(&mut self, cluster: u32, value: u32) {
        self.0.insert(cluster, value);
    }

    /// Links `clusters` into one chain ending with `eoc`.
    pub fn link(&mut self, clusters: &[u32], eoc: u32) {
        for w in clusters.windows(2) {
            self.set(w[0], w[1]);
        }
        if let Some(&last) = clusters.last() {
            self.set(last, eoc);
        }
    }

    /// Marks `clusters` free.
    pub fn free(&mut self, clusters: &[u32]) {
        for &c in clusters {
            self.set(c, 0);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Free clusters, one bit each; allocation takes clusters out of the map.
#[derive(Debug, Clone)]
pub struct FreeMap {
    bits: Vec<u64>,
    max: u32,
    count: u64,
}

impl FreeMap {
    pub fn count(&self) -> u64 {
        self.count
    }

    fn is_free(&self, c: u32) -> bool {
        self.bits[(c / 64) as usize] & (1 << (c % 64)) != 0
    }

    fn take(&mut self, c: u32) {
        self.bits[(c / 64) as usize] &= !(1 << (c % 64));
        self.count -= 1;
    }

    /// The lowest free cluster, for FSInfo's next-free hint (0xFFFFFFFF when none).
    pub fn first_free(&self) -> u32 {
        (2..=self.max)
            .find(|&c| self.is_free(c))
            .unwrap_or(0xFFFF_FFFF)
    }

    /// Takes `n` clusters: the first contiguous run that fits, else the lowest free clusters.
    /// `None` if fewer than `n` are free.
    pub fn alloc(&mut self, n: u64) -> Option<Vec<u32>> {
        if n == 0 {
            return Some(Vec::new());
        }
        if n > self.count {
            return None;
        }
        let mut run_start = 0;
        let mut run_len = 0u64;
        let mut found = None;
        for c in 2..=self.max {
            if self.is_free(c) {
                if run_len == 0 {
                    run_start = c;
                }
                run_len += 1;
                if run_len == n {
                    found = Some(run_start);
                    break;
                }
            } else {
                run_len = 0;
            }
        }
        let out: Vec<u32> = match found {
            Some(s) => (s..s + n as u32).collect(),
            None => (2..=self.max)
                .filter(|&c| self.is_free(c))
                .take(n as usize)
                .collect(),
        };
        for &c in &out {
            self.take(c);
        }
        Some(out)
    }
}

/// Hashes what `src` yields, as [`Volume::write_content`] would see it without writing:
/// the sha256 of its first `size` bytes and how many it got (one more than `size` when the
/// source is longer).
pub fn hash_stream<S: Read>(src: &mut S, size: u64) -> io::Result<(String, u64)> {
    let mut hashing = crate::digest::Hashing::new(src.take(size));
    io::copy(&mut hashing, &mut io::sink())?;
    let (sha, mut got) = hashing.finish();
    let mut probe = [0u8; 1];
    if got == size && src.read(&mut probe)? > 0 {
        got += 1;
    }
    Ok((sha, got))
}

/// Consecutive runs `(first, length)` of a cluster list.
pub fn runs(clusters: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &c in clusters {
        match out.last_mut() {
            Some((s, n)) if *s + *n == c => *n += 1,
            _ => out.push((c, 1)),
        }
    }
    out
}

/// The cluster list of `runs`.
pub fn expand(runs: &[(u32, u32)]) -> Vec<u32> {
    runs.iter().flat_map(|&(s, n)| s..s + n).collect()
}

pub use crate::digest::hex;

/// One file or directory in a directory: its short entry and where its slots are.
#[derive(Debug, Clone)]
pub struct DirItem {
    /// Long name if present, else the 8.3 name as `mdir` shows it.
    pub name: String,
    pub(crate) short: ShortEntry,
    /// The 32 bytes of the short entry.
    pub raw: [u8; 32],
    /// Slot indexes of the long-name entries (in order) and, last, the short entry.
    pub slots: Vec<usize>,
}

impl DirItem {
    pub fn first_cluster(&self) -> u32 {
        self.short.first_cluster
    }

    pub fn size(&self) -> u64 {
        u64::from(self.short.size)
    }

    pub fn is_dir(&self) -> bool {
        self.short.is_dir()
    }

    pub fn short_name(&self) -> [u8; 11] {
        self.short.name
    }
}

/// A directory read into memory (at most 2 MiB, the FAT maximum), with the disk offset of
/// every slot.
#[derive(Debug, Clone)]
pub struct Dir {
    /// First cluster; 0 for the fixed FAT12/16 root.
    pub first: u32,
    /// The directory's clusters (empty for the fixed root).
    pub clusters: Vec<u32>,
    /// `(offset, length)` of each piece on disk.
    regions: Vec<(u64, u64)>,
    bytes: Vec<u8>,
    fat_type: FatType,
}

impl Dir {
    /// Number of 32-byte slots.
    pub fn slot_count(&self) -> usize {
        self.bytes.len() / ENTRY_BYTES
    }

    /// Disk offset of slot `i`.
    pub fn slot_offset(&self, i: usize) -> u64 {
        let mut at = (i * ENTRY_BYTES) as u64;
        for &(off, len) in &self.regions {
            if at < len {
                return off + at;
            }
            at -= len;
        }
        // Past the end: callers only ask for existing slots.
        u64::MAX
    }

    pub fn slot(&self, i: usize) -> [u8; 32] {
        let mut b = [0u8; 32];
        b.copy_from_slice(&self.bytes[i * ENTRY_BYTES..(i + 1) * ENTRY_BYTES]);
        b
    }

    /// Index of the end marker: the first slot whose first byte is 0, where every reader stops
    /// (fatgen103 section 6: "the remaining entries ... are free"); `slot_count` if none.
    pub fn end_slot(&self) -> usize {
        (0..self.slot_count())
            .find(|&i| self.bytes[i * ENTRY_BYTES] == 0)
            .unwrap_or(self.slot_count())
    }

    /// Free slots: deleted (0xE5) or past the end marker (0x00).
    pub fn free_slots(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut ended = false;
        for i in 0..self.slot_count() {
            let b0 = self.bytes[i * ENTRY_BYTES];
            if b0 == 0 {
                ended = true;
            }
            if ended || b0 == 0xE5 {
                out.push(i);
            }
        }
        out
    }

    /// Every live file and subdirectory (not `.`/`..`, not the volume label).
    pub fn items(&self) -> Vec<DirItem> {
        let mut out = Vec::new();
        let mut long = LongName::default();
        let mut long_slots: Vec<usize> = Vec::new();
        for i in 0..self.slot_count() {
            let raw = self.slot(i);
            if raw[0] == 0 {
                break;
            }
            if raw[0] == 0xE5 {
                long.reset();
                long_slots.clear();
                continue;
            }
            if raw[11] & 0x3F == ATTR_LONG_NAME {
                if raw[0] & 0x40 != 0 {
                    long_slots.clear();
                }
                long.push(&raw);
                long_slots.push(i);
                continue;
            }
            let short = ShortEntry::parse(&raw, self.fat_type);
            if short.attr & ATTR_VOLUME_ID != 0 || short.is_dot() {
                long.reset();
                long_slots.clear();
                continue;
            }
            let (name, mut slots) = match long.take(&short) {
                Some(n) => (n, std::mem::take(&mut long_slots)),
                None => {
                    long_slots.clear();
                    (short.display_name(), Vec::new())
                }
            };
            slots.push(i);
            out.push(DirItem {
                name,
                short,
                raw,
                slots,
            });
        }
        out
    }

    /// The item named `name`, case-insensitively, by long name or 8.3 name.
    pub fn find(&self, name: &str) -> Option<DirItem> {
        let want = name.to_lowercase();
        self.items().into_iter().find(|it| {
            it.name.to_lowercase() == want || it.short.display_name().to_lowercase() == want
        })
    }

    /// Short names in use (live entries only), for alias generation.
    pub fn short_names(&self) -> HashSet<[u8; 11]> {
        self.items().iter().map(|it| it.short.name).collect()
    }

    /// Overwrites slots of the in-memory view (new entries not yet on disk).
    pub fn set_slots(&mut self, slots: &[usize], entries: &[[u8; 32]]) {
        for (&i, e) in slots.iter().zip(entries) {
            self.bytes[i * ENTRY_BYTES..(i + 1) * ENTRY_BYTES].copy_from_slice(e);
        }
    }

    /// Appends a zeroed cluster to the in-memory view (the caller links it on disk).
    pub fn grow(&mut self, cluster: u32, offset: u64, cluster_bytes: u64) {
        self.clusters.push(cluster);
        self.regions.push((offset, cluster_bytes));
        let at = self.bytes.len();
        self.bytes.resize(at + cluster_bytes as usize, 0);
    }
}

/// A deleted directory entry with nothing else in it: what a free slot between the end
/// marker and a new entry becomes, so that readers walk past it to the new entry.
pub const DELETED_ENTRY: [u8; 32] = {
    let mut e = [0u8; 32];
    e[0] = 0xE5;
    e
};

/// A short entry for a new file (fatgen103 section 6): `DIR_Name` 0..11, `DIR_Attr` 11 =
/// ARCHIVE, `DIR_NTRes` 12, `DIR_CrtTimeTenth` 13, `DIR_CrtTime` 14, `DIR_CrtDate` 16,
/// `DIR_LstAccDate` 18, `DIR_FstClusHI` 20, `DIR_WrtTime` 22, `DIR_WrtDate` 24,
/// `DIR_FstClusLO` 26, `DIR_FileSize` 28.
pub fn new_short_entry(
    short: &[u8; 11],
    nt_res: u8,
    first: u32,
    size: u32,
    when: DosTime,
) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(short);
    e[11] = 0x20;
    e[12] = nt_res;
    e[14..16].copy_from_slice(&when.time.to_le_bytes());
    e[16..18].copy_from_slice(&when.date.to_le_bytes());
    e[18..20].copy_from_slice(&when.date.to_le_bytes());
    set_content(&mut e, first, size, when);
    e
}

/// Points an existing short entry at new content: first cluster (offsets 20 and 26), size
/// (28) and write time/date (22, 24); the rest of the entry is kept.
pub fn set_content(e: &mut [u8; 32], first: u32, size: u32, when: DosTime) {
    e[20..22].copy_from_slice(&((first >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&when.time.to_le_bytes());
    e[24..26].copy_from_slice(&when.date.to_le_bytes());
    e[26..28].copy_from_slice(&(first as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
}

/// A DOS time stamp (fatgen103 section 6, "Date and Time Formats").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DosTime {
    /// Bits 15-11 hours, 10-5 minutes, 4-0 seconds / 2.
    pub time: u16,
    /// Bits 15-9 years since 1980, 8-5 month, 4-0 day.
    pub date: u16,
}

impl DosTime {
    /// Converts seconds since the Unix epoch (UTC; FAT has no time zone), clamped to
    /// 1980..=2107.
    pub fn from_unix(secs: u64) -> Self {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if year < 1980 {
            return DosTime {
                time: 0,
                date: (1 << 5) | 1,
            };
        }
        let year = year.min(2107);
        DosTime {
            time: (((rem / 3600) << 11) | ((rem % 3600 / 60) << 5) | ((rem % 60) / 2)) as u16,
            date: (((year - 1980) << 9) | (month << 5) | day) as u16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testimg::{Image, fsck, noise};
    use super::*;
    use std::io::Cursor;

    #[test]
    fn fat12_is_refused_for_writing() {
        let img = Image::new("2M", 12, &[]);
        let err = Volume::open(&mut Cursor::new(img.bytes())).expect_err("FAT12");
        assert!(matches!(err, WriteError::Fat12 { .. }), "{err}");
        assert!(err.to_string().contains("FAT12"), "{err}");
    }

    #[test]
    fn dos_time_of_a_known_instant() {
        // 2024-04-24 13:45:58 UTC = 1713966358.
        let t = DosTime::from_unix(1_713_966_358);
        assert_eq!(t.date, ((2024 - 1980) << 9) | (4 << 5) | 24);
        assert_eq!(t.time, (13 << 11) | (45 << 5) | 29);
    }

    #[test]
    fn a_new_chain_in_both_fats_and_a_new_entry_pass_fsck_and_mtools() {
        for (bits, extra) in [(16u8, &[][..]), (32, &["-s", "1"][..])] {
            let img = Image::new(if bits == 16 { "30M" } else { "40M" }, bits, extra);
            img.put("bootcode.bin", &noise(5000, 1));
            let mut cur = Cursor::new(img.bytes());
            let vol = Volume::open(&mut cur).expect("open");
            let data = noise(70_001, 7);
            let n = (data.len() as u64).div_ceil(vol.cluster_bytes());
            let mut free = vol.free_map(&mut cur).expect("free map");
            let before = free.count();
            let clusters = free.alloc(n).expect("space");
            assert_eq!(free.count(), before - n);
            let (sha, got) = vol
                .write_content(
                    &mut cur,
                    &clusters,
                    &mut Cursor::new(&data),
                    data.len() as u64,
                )
                .expect("content");
            assert_eq!(got, data.len() as u64);
            let mut edits = FatEdits::default();
            edits.link(&clusters, vol.eoc());
            assert!(vol.write_fat(&mut cur, &edits).expect("fat") >= 2);
            assert_eq!(
                vol.write_fat(&mut cur, &edits).expect("again"),
                0,
                "idempotent"
            );
            let root = vol.read_dir(&mut cur, vol.root()).expect("root");
            let enc = names::encode("A long name.bin", &root.short_names()).expect("name");
            let long = enc.long.clone().expect("long");
            let mut entries = names::long_entries(&long, names::checksum(&enc.short));
            entries.push(new_short_entry(
                &enc.short,
                enc.nt_res,
                clusters[0],
                data.len() as u32,
                DosTime::from_unix(1_713_966_358),
            ));
            let free_slots = root.free_slots();
            let slots: Vec<(u64, [u8; 32])> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| (root.slot_offset(free_slots[i]), *e))
                .collect();
            assert_eq!(
                patch_slots(&mut cur, vol.sector_bytes(), &slots).expect("dir"),
                1
            );
            let writes = vol
                .write_fs_info(&mut cur, free.count() as u32, free.first_free())
                .expect("fsinfo");
            assert_eq!(writes, usize::from(bits == 32));
            let bytes = cur.into_inner();
            let (code, text) = fsck(&bytes);
            assert_eq!(code, 0, "FAT{bits}: {text}");
            std::fs::write(&img.path, &bytes).expect("write back");
            let out = std::process::Command::new("mcopy")
                .args(["-n", "-i"])
                .arg(&img.path)
                .arg("::/A long name.bin")
                .arg("-")
                .output()
                .expect("mcopy");
            assert!(out.status.success());
            assert_eq!(out.stdout, data);
            assert_eq!(hex(&Sha256::digest(&data)), sha);
            let mut cur = Cursor::new(bytes);
            let root = vol.read_dir(&mut cur, vol.root()).expect("root");
            let item = root.find("a LONG name.BIN").expect("found by long name");
            assert_eq!(item.size(), data.len() as u64);
            assert_eq!(item.slots.len(), 3);
            assert!(root.find("bootcode.bin").expect("8.3").slots.len() == 1);
        }
    }
}
