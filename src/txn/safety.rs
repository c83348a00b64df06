//! What recovery and every change must prove before they write: who owns the clusters an
//! interrupted change names, and whether the volume hides data that a write could destroy.
//!
//! Owns three read-only answers:
//!
//! - [`walk`]: every cluster reachable from a live directory entry (following FAT copy 0),
//!   and, for a watched set of clusters, which entry reaches them. Recovery frees or re-links
//!   only clusters that no entry outside its own journal reaches: after `fsck.fat -a` salvaged
//!   a lost chain into `FSCK0000.REC`, that file owns the clusters and recovery refuses
//!   instead of freeing them under it (the cross-link of issue 9).
//! - [`Overlay`]: a device that keeps every write in memory over a read-only one, so that
//!   [`super::recover`] can run as a dry rehearsal: what it would write, what it would decide,
//!   and what the volume would look like afterwards.
//! - [`check_writable`]: the volume as recovery would leave it, judged by
//!   [`crate::fat::check`]. Lost clusters there are not pifw's own (recovery frees those, and
//!   the lost empty directory clusters `mkdir` can leave): they may be the data of a file whose
//!   directory entry was damaged, which `fsck.fat` could still save, and a write would
//!   allocate them. Such a volume, and one whose FAT copies disagree, is refused before the
//!   first write.
//!
//! Must not write to the device it is given, or print.

use super::TxnError;
use crate::fat::write::{Dir, Volume};
use crate::finding::Finding;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Directories deeper than this end the walk (a cycle that slipped past the visited set).
const MAX_DEPTH: usize = 32;

/// The result of [`walk`].
pub(crate) struct Owners {
    /// One flag per cluster number: reachable from a live entry.
    pub used: Vec<bool>,
    /// `(cluster, path)` for each watched cluster some entry reaches.
    pub watched: Vec<(u32, String)>,
}

/// Walks the directory tree from the root, following each live entry's chain in FAT copy 0.
/// Entries whose short-entry slot offset is in `exclude` (the journal's own slots) are
/// skipped, chains included. A chain stops at a free, bad, out-of-range or already seen
/// cluster (the structure checker reports those; here only ownership matters).
pub(crate) fn walk<R: Read + Seek>(
    part: &mut R,
    vol: &Volume,
    exclude: &HashSet<u64>,
    watch: &HashSet<u32>,
) -> Result<Owners, TxnError> {
    let max = vol.geo.max_cluster();
    let mut used = vec![false; max as usize + 1];
    let mut watched = Vec::new();
    let fat = load_fat(part, vol, 0)?;
    let root = vol.read_dir(part, vol.root())?;
    if root.first >= 2 {
        for &c in &root.clusters {
            if c <= max {
                used[c as usize] = true;
            }
        }
    }
    let mut stack: Vec<(String, Dir, usize)> = vec![(String::new(), root, 0)];
    let mut seen_dirs: HashSet<u32> = HashSet::new();
    while let Some((path, dir, depth)) = stack.pop() {
        for item in dir.items() {
            let Some(&short) = item.slots.last() else {
                continue;
            };
            if exclude.contains(&dir.slot_offset(short)) {
                continue;
            }
            let here = if path.is_empty() {
                item.name.clone()
            } else {
                format!("{path}/{}", item.name)
            };
            let mut c = item.first_cluster();
            while (2..=max).contains(&c) && !used[c as usize] {
                used[c as usize] = true;
                if watch.contains(&c) {
                    watched.push((c, here.clone()));
                }
                let v = fat.get(c as usize).copied().unwrap_or(0);
                if v >= vol.eoc() - 8 {
                    break;
                }
                c = v;
            }
            if (2..=max).contains(&c) && watch.contains(&c) && !watched.iter().any(|w| w.0 == c) {
                watched.push((c, here.clone()));
            }
            if item.is_dir()
                && item.first_cluster() >= 2
                && depth < MAX_DEPTH
                && seen_dirs.insert(item.first_cluster())
            {
                let sub = vol.read_dir(part, item.first_cluster())?;
                stack.push((here, sub, depth + 1));
            }
        }
    }
    Ok(Owners { used, watched })
}

/// A device that reads through to `inner` and keeps every write in memory, never writing
/// `inner`. Syncs do nothing.
pub struct Overlay<R> {
    inner: R,
    pos: u64,
    /// Written ranges, in write order (later ones win).
    patches: Vec<(u64, Vec<u8>)>,
}

impl<R> Overlay<R> {
    pub fn new(inner: R) -> Self {
        Overlay {
            inner,
            pos: 0,
            patches: Vec::new(),
        }
    }

    /// Whether anything was written.
    pub fn written(&self) -> bool {
        !self.patches.is_empty()
    }
}

impl<R: Read + Seek> Read for Overlay<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.seek(SeekFrom::Start(self.pos))?;
        let n = self.inner.read(buf)?;
        let (start, end) = (self.pos, self.pos + n as u64);
        for (off, bytes) in &self.patches {
            let (ps, pe) = (*off, *off + bytes.len() as u64);
            if pe <= start || ps >= end {
                continue;
            }
            let (s, e) = (ps.max(start), pe.min(end));
            buf[(s - start) as usize..(e - start) as usize]
                .copy_from_slice(&bytes[(s - ps) as usize..(e - ps) as usize]);
        }
        self.pos = end;
        Ok(n)
    }
}

impl<R: Seek> Seek for Overlay<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = match pos {
            SeekFrom::Start(p) => p,
            other => self.inner.seek(match other {
                SeekFrom::Current(d) => SeekFrom::Start(self.pos.saturating_add_signed(d)),
                o => o,
            })?,
        };
        Ok(self.pos)
    }
}

impl<R> Write for Overlay<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.patches.push((self.pos, buf.to_vec()));
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<R> super::Durable for Overlay<R> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Finding codes that refuse a write: data may hide in lost clusters, the FAT copies
/// disagree, or a file's chain does not match its size.
const REFUSED: [&str; 4] = [
    "fat-lost-clusters",
    "fat-copies-differ",
    "fat-file-truncated",
    "fat-chain-too-long",
];

/// Refuses (with [`TxnError::Damaged`] and the checker's own words) a volume that, once
/// pifw's own leftovers are recovered, still has lost clusters, differing FAT copies or
/// chains that do not match their files. Reads only: the recovery runs on an [`Overlay`].
pub fn check_writable<R: Read + Seek>(part: &mut R) -> Result<(), TxnError> {
    let mut ov = Overlay::new(&mut *part);
    super::recover(&mut ov)?;
    let findings: Vec<Finding> = match crate::fat::check(&mut ov) {
        Ok((_, f)) => f,
        Err(crate::fat::FatError::Damaged { reason }) => {
            return Err(TxnError::Damaged { reason });
        }
        Err(e) => return Err(e.into()),
    };
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| REFUSED.contains(&f.code.as_str()))
        .map(|f| f.message.clone())
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(TxnError::Damaged {
        reason: format!(
            "{}. pifw's own leftovers would be cleaned, but these are not pifw's: lost clusters may be the data of a file whose directory entry is damaged (fsck.fat could still save it into FSCKnnnn.REC), and a write would reuse them. Copy the partition off first, then check it with `fsck.fat -n` and repair it yourself (e.g. `fsck.fat -a -f` on the copy)",
            bad.join("; ")
        ),
    })
}

/// `(cluster, copies' values)` of every cluster some FAT copy allocates and no live entry
/// reaches, from a [`walk`] result.
pub(crate) fn lost<R: Read + Seek>(
    part: &mut R,
    vol: &Volume,
    used: &[bool],
) -> Result<BTreeMap<u32, Vec<u32>>, TxnError> {
    let max = vol.geo.max_cluster();
    let mut out = BTreeMap::new();
    let copies = (0..vol.fat_copies())
        .map(|c| load_fat(part, vol, c))
        .collect::<Result<Vec<_>, _>>()?;
    let bad = vol.eoc() - 8;
    for (c, _) in used
        .iter()
        .enumerate()
        .take(max as usize + 1)
        .skip(2)
        .filter(|(_, u)| !**u)
    {
        let vals: Vec<u32> = copies
            .iter()
            .map(|f| f.get(c).copied().unwrap_or(0))
            .collect();
        if vals.iter().any(|&v| v != 0 && v != bad) {
            out.insert(c as u32, vals);
        }
    }
    Ok(out)
}

/// FAT copy `copy` as entries (FAT32 entries masked to 28 bits), read in one piece: at most
/// a few MiB for any firmware partition, and far quicker than entry-by-entry reads.
fn load_fat<R: Read + Seek>(part: &mut R, vol: &Volume, copy: u8) -> Result<Vec<u32>, TxnError> {
    let geo = &vol.geo;
    let mut buf = vec![0u8; geo.fat_bytes as usize];
    part.seek(SeekFrom::Start(
        geo.fat_offset + u64::from(copy) * geo.fat_bytes,
    ))?;
    part.read_exact(&mut buf)?;
    Ok(if vol.eoc() == 0xFFFF {
        buf.chunks_exact(2)
            .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
            .collect()
    } else {
        buf.chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x0FFF_FFFF)
            .collect()
    })
}
