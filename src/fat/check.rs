//! The structure checker: every cluster chain reachable from the root, and the FAT as a whole.
//!
//! Owns the answer to "is it safe to read (and later to modify) this volume?". `fatfs` gives no
//! access to cluster chains, so this walks the directory tree itself: the fixed FAT12/16 root
//! or the FAT32 root chain, then every subdirectory, following each chain in FAT copy 0.
//!
//! Memory stays bounded whatever the volume size: one bit per cluster records which clusters a
//! file or directory owns (that bitmap is what catches loops, cross-links and lost clusters),
//! FAT entries come through a 64-128 KiB window, and directories are read one cluster at a time.
//! The data area is never read except for directories. Recursion depth and entry counts are
//! capped so a hostile image cannot make the walk run away.
//!
//! Problems that make reading unsafe (a looping chain, two owners of one cluster, a chain that
//! leaves the valid cluster range or runs into a free or bad cluster) end the check with
//! [`FatError::Damaged`]; survivable ones become findings.

use super::boot_sector::{self, BootSector, FsInfo, Geometry};
use super::dir_entry::{self, ENTRY_BYTES, LongName, ShortEntry};
use super::table::{Entry, FatReader};
use super::{FatError, FatInfo, FatType};
use crate::finding::Finding;
use std::io::{self, Read, Seek, SeekFrom};

/// Deeper than any firmware partition; a deeper tree is treated as damage (it is most likely a
/// directory cycle that slipped past the cluster bitmap).
const MAX_DEPTH: usize = 32;
/// Entries (files, directories, long-name pieces) the walk reads in total before giving up.
const MAX_ENTRIES: u64 = 1 << 20;
/// A directory holds at most 65536 entries (fatgen103 section 6: "a directory ... may not be
/// larger than 65,536 * 32 (2,097,152) bytes").
const MAX_DIR_BYTES: u64 = 65536 * ENTRY_BYTES as u64;
/// Damage reasons quoted in the error; the rest are counted.
const MAX_REASONS: usize = 5;
/// Cross-links whose second owner is looked up by re-walking chains.
const MAX_OWNER_LOOKUPS: usize = 8;
/// Chunk for streaming comparisons of FAT copies.
const CHUNK: usize = 64 * 1024;

/// One bit per cluster number.
struct Bitmap(Vec<u64>);

impl Bitmap {
    fn new(bits: u32) -> Self {
        Bitmap(vec![0; (bits as usize).div_ceil(64)])
    }
    fn get(&self, i: u32) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: u32) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
}

/// A directory waiting to be read.
struct DirJob {
    path: String,
    /// First cluster; 0 = the fixed FAT12/16 root directory.
    cluster: u32,
    /// First cluster of the parent, as `..` must record it (0 for the root).
    parent: u32,
    depth: usize,
}

struct Checker {
    geo: Geometry,
    fat: FatReader,
    used: Bitmap,
    findings: Vec<Finding>,
    damage: Vec<String>,
    /// Every chain's owner and first cluster, to name the second owner of a cross-link.
    owners: Vec<(String, u32)>,
    /// (path that found it, cluster) for each cross-link.
    cross_links: Vec<(String, u32)>,
    entries: u64,
}

fn display(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

impl Checker {
    /// Follows the chain starting at `first`, marking its clusters as owned. Returns the chain
    /// length, or `None` after recording damage. When `collect` is given, the first
    /// `collect_max` clusters are pushed to it (directories read their entries from these).
    fn walk_chain<R: Read + Seek>(
        &mut self,
        r: &mut R,
        path: &str,
        first: u32,
        mut collect: Option<(&mut Vec<u32>, usize)>,
    ) -> io::Result<Option<u64>> {
        let max = self.geo.max_cluster();
        let path = display(path);
        if !(2..=max).contains(&first) {
            self.damage.push(format!(
                "{path}: first cluster {first} is outside the valid range 2..={max}"
            ));
            return Ok(None);
        }
        self.owners.push((path.to_string(), first));
        // The chain as runs of consecutive clusters: usually one or a few, and consulted only
        // when the chain meets an owned cluster, to tell a loop from a cross-link.
        let mut runs: Vec<(u32, u32)> = Vec::new();
        let mut c = first;
        let mut len = 0u64;
        loop {
            if self.used.get(c) {
                if runs.iter().any(|&(s, n)| (s..s + n).contains(&c)) {
                    self.damage.push(format!(
                        "{path}: cluster chain loops back to cluster {c} after {len} clusters"
                    ));
                } else {
                    self.cross_links.push((path.to_string(), c));
                }
                return Ok(None);
            }
            self.used.set(c);
            match runs.last_mut() {
                Some((s, n)) if *s + *n == c => *n += 1,
                _ => runs.push((c, 1)),
            }
            len += 1;
            if let Some((list, cap)) = collect.as_mut()
                && list.len() < *cap
            {
                list.push(c);
            }
            match self.fat.entry(r, c)? {
                Entry::Next(n) => c = n,
                Entry::EndOfChain => return Ok(Some(len)),
                Entry::Free => {
                    self.damage.push(format!(
                        "{path}: cluster {c} (number {len} of the chain) is marked free in the FAT"
                    ));
                    return Ok(None);
                }
                Entry::Bad => {
                    self.damage.push(format!(
                        "{path}: cluster {c} (number {len} of the chain) is marked bad"
                    ));
                    return Ok(None);
                }
                Entry::Invalid(v) => {
                    self.damage.push(format!(
                        "{path}: cluster {c} links to {v:#x}, outside the valid range 2..={max}"
                    ));
                    return Ok(None);
                }
            }
        }
    }

    /// Reads one directory, checks each entry's chain, and queues subdirectories.
    fn read_dir<R: Read + Seek>(
        &mut self,
        r: &mut R,
        job: DirJob,
        queue: &mut Vec<DirJob>,
    ) -> io::Result<()> {
        // (offset, length) of each piece of the directory, in order.
        let regions: Vec<(u64, u64)> = if job.cluster == 0 {
            vec![(self.geo.root_dir_offset, self.geo.root_dir_bytes)]
        } else {
            let cap = (MAX_DIR_BYTES / self.geo.cluster_bytes).max(1) as usize;
            let mut clusters = Vec::new();
            let Some(len) =
                self.walk_chain(r, &job.path, job.cluster, Some((&mut clusters, cap)))?
            else {
                return Ok(());
            };
            if len > cap as u64 {
                self.findings.push(Finding::warning(
                    "fat-directory-too-large",
                    format!(
                        "directory {} spans {len} clusters, more than the 65536 entries FAT \
                         allows; only the first {cap} clusters were checked",
                        display(&job.path)
                    ),
                ));
            }
            let cb = self.geo.cluster_bytes;
            clusters
                .into_iter()
                .map(|c| (self.geo.cluster_offset(c), cb))
                .collect()
        };
        let is_root = job.path.is_empty();
        let mut long = LongName::default();
        let mut index = 0u64;
        let mut buf = Vec::new();
        for (offset, bytes) in regions {
            let mut done = 0u64;
            while done < bytes {
                let n = (bytes - done).min(CHUNK as u64) as usize;
                buf.resize(n, 0);
                r.seek(SeekFrom::Start(offset + done))?;
                r.read_exact(&mut buf)?;
                done += n as u64;
                for raw in buf.chunks_exact(ENTRY_BYTES) {
                    if raw[0] == 0x00 {
                        // fatgen103 section 6: 0x00 = this and all following entries are free.
                        return Ok(());
                    }
                    self.entries += 1;
                    if self.entries > MAX_ENTRIES {
                        self.damage.push(format!(
                            "more than {MAX_ENTRIES} directory entries; stopped at {}",
                            display(&job.path)
                        ));
                        return Ok(());
                    }
                    let this = index;
                    index += 1;
                    if raw[0] == 0xE5 {
                        long.reset();
                        continue;
                    }
                    if raw[11] & 0x3F == dir_entry::ATTR_LONG_NAME {
                        long.push(raw);
                        continue;
                    }
                    let e = ShortEntry::parse(raw, self.geo.fat_type);
                    if e.attr & dir_entry::ATTR_VOLUME_ID != 0 {
                        long.reset();
                        continue;
                    }
                    if e.is_dot() {
                        long.reset();
                        if !is_root {
                            self.check_dot(&job, &e, this);
                        }
                        continue;
                    }
                    let name = long.take(&e).unwrap_or_else(|| e.display_name());
                    let path = if is_root {
                        name
                    } else {
                        format!("{}/{name}", job.path)
                    };
                    if e.is_dir() {
                        self.queue_dir(&job, path, &e, queue);
                    } else {
                        self.check_file(r, &path, &e)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `.` must be entry 0 and point to the directory itself, `..` entry 1 pointing to the
    /// parent, 0 meaning the root (fatgen103 section 6, "FAT Directory Structure").
    fn check_dot(&mut self, job: &DirJob, e: &ShortEntry, index: u64) {
        let (want_index, want, what) = if e.name[1] == b'.' {
            (1, job.parent, "..")
        } else {
            (0, job.cluster, ".")
        };
        // A FAT32 `..` pointing at the root cluster instead of 0 is accepted by Linux and
        // fsck.fat alike, so only other values count.
        let fat32_root_alias = what == ".."
            && job.parent == 0
            && self.geo.fat_type == FatType::Fat32
            && e.first_cluster == self.geo.root_cluster;
        if index != want_index || (e.first_cluster != want && !fat32_root_alias) {
            self.findings.push(
                Finding::warning(
                    "fat-dot-entry",
                    format!(
                        "directory {}: `{what}` is entry {index} pointing to cluster {}, \
                         expected entry {want_index} pointing to {want}",
                        job.path, e.first_cluster
                    ),
                )
                .advice("fsck.fat -a would repair the entry"),
            );
        }
    }

    fn queue_dir(&mut self, job: &DirJob, path: String, e: &ShortEntry, queue: &mut Vec<DirJob>) {
        if e.first_cluster == 0 {
            self.damage
                .push(format!("{path}: directory entry has no first cluster"));
        } else if job.depth + 1 > MAX_DEPTH {
            self.damage.push(format!(
                "{path}: directories nested deeper than {MAX_DEPTH} levels"
            ));
        } else {
            queue.push(DirJob {
                path,
                cluster: e.first_cluster,
                // `..` of a root subdirectory records 0, whatever the root's cluster.
                parent: if job.path.is_empty() { 0 } else { job.cluster },
                depth: job.depth + 1,
            });
        }
    }

    fn check_file<R: Read + Seek>(
        &mut self,
        r: &mut R,
        path: &str,
        e: &ShortEntry,
    ) -> io::Result<()> {
        let needed = u64::from(e.size).div_ceil(self.geo.cluster_bytes);
        let len = if e.first_cluster == 0 {
            0
        } else {
            match self.walk_chain(r, path, e.first_cluster, None)? {
                Some(len) => len,
                None => return Ok(()),
            }
        };
        let cb = self.geo.cluster_bytes;
        if len < needed {
            self.findings.push(
                Finding::error(
                    "fat-file-truncated",
                    format!(
                        "{path}: size is {} bytes but its cluster chain holds only {len} \
                         clusters ({} bytes)",
                        e.size,
                        len * cb
                    ),
                )
                .advice("the file's content is incomplete: restore it from a known-good copy"),
            );
        } else if len > needed {
            self.findings.push(
                Finding::warning(
                    "fat-chain-too-long",
                    format!(
                        "{path}: size is {} bytes ({needed} clusters) but its chain holds {len} \
                         clusters",
                        e.size
                    ),
                )
                .advice("harmless for reading; fsck.fat -a would free the extra clusters"),
            );
        }
        Ok(())
    }

    /// Re-walks recorded chains to find who else owns `cluster`.
    fn other_owner<R: Read + Seek>(
        &mut self,
        r: &mut R,
        cluster: u32,
        not: &str,
    ) -> io::Result<Option<String>> {
        let owners = std::mem::take(&mut self.owners);
        let mut found = None;
        'owners: for (path, first) in &owners {
            if path == not {
                continue;
            }
            let mut c = *first;
            for _ in 0..=self.geo.cluster_count {
                if c == cluster {
                    found = Some(path.clone());
                    break 'owners;
                }
                match self.fat.entry(r, c)? {
                    Entry::Next(n) => c = n,
                    _ => break,
                }
            }
        }
        self.owners = owners;
        Ok(found)
    }
}

/// Compares FAT copy `copy` with copy 0; returns the first differing byte offset.
fn first_fat_difference<R: Read + Seek>(
    r: &mut R,
    geo: &Geometry,
    copy: u8,
) -> io::Result<Option<u64>> {
    let mut a = vec![0u8; CHUNK];
    let mut b = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < geo.fat_bytes {
        let n = (geo.fat_bytes - done).min(CHUNK as u64) as usize;
        r.seek(SeekFrom::Start(geo.fat_offset + done))?;
        r.read_exact(&mut a[..n])?;
        r.seek(SeekFrom::Start(
            geo.fat_offset + u64::from(copy) * geo.fat_bytes + done,
        ))?;
        r.read_exact(&mut b[..n])?;
        if let Some(i) = a[..n].iter().zip(&b[..n]).position(|(x, y)| x != y) {
            return Ok(Some(done + i as u64));
        }
        done += n as u64;
    }
    Ok(None)
}

pub(crate) fn check<R: Read + Seek>(r: &mut R) -> Result<(FatInfo, Vec<Finding>), FatError> {
    let (bs, geo) = boot_sector::read(r)?;
    let mut ck = Checker {
        fat: FatReader::new(&geo, 0),
        used: Bitmap::new(geo.max_cluster() + 1),
        geo: geo.clone(),
        findings: Vec::new(),
        damage: Vec::new(),
        owners: Vec::new(),
        cross_links: Vec::new(),
        entries: 0,
    };

    let root = DirJob {
        path: String::new(),
        cluster: geo.root_cluster,
        parent: 0,
        depth: 0,
    };
    let mut queue = vec![root];
    while let Some(job) = queue.pop() {
        ck.read_dir(r, job, &mut queue)?;
    }
    let cross_links = std::mem::take(&mut ck.cross_links);
    for (i, (path, cluster)) in cross_links.iter().enumerate() {
        let other = if i < MAX_OWNER_LOOKUPS {
            ck.other_owner(r, *cluster, path)?
        } else {
            None
        };
        let other = other.unwrap_or_else(|| "another chain".to_string());
        ck.damage.push(format!(
            "{path} and {other} both use cluster {cluster} (cross-linked)"
        ));
    }
    if !ck.damage.is_empty() {
        let n = ck.damage.len();
        let mut reason = ck.damage[..n.min(MAX_REASONS)].join("; ");
        if n > MAX_REASONS {
            reason.push_str(&format!("; and {} more problems", n - MAX_REASONS));
        }
        return Err(FatError::Damaged { reason });
    }

    scan_fat(r, &bs, &geo, ck)
}

/// Whole-table pass: free, bad and lost clusters, FAT[1] flags, FAT copies, FSInfo.
fn scan_fat<R: Read + Seek>(
    r: &mut R,
    bs: &BootSector,
    geo: &Geometry,
    mut ck: Checker,
) -> Result<(FatInfo, Vec<Finding>), FatError> {
    let (mut free, mut bad, mut lost) = (0u64, 0u64, 0u64);
    for c in 2..=geo.max_cluster() {
        match ck.fat.entry(r, c)? {
            Entry::Free => free += 1,
            Entry::Bad => bad += 1,
            _ if !ck.used.get(c) => lost += 1,
            _ => {}
        }
    }
    let cb = geo.cluster_bytes;
    let findings = &mut ck.findings;
    if lost > 0 {
        findings.push(
            Finding::warning(
                "fat-lost-clusters",
                format!(
                    "{lost} clusters ({} bytes) are allocated but belong to no file: lost \
                     clusters, left by an interrupted write or by a damaged directory entry \
                     that hides a file's data",
                    lost * cb
                ),
            )
            .advice(
                "if a pifw change was interrupted, run `pifw recover` (it frees its own); \
                 otherwise copy the partition off and inspect the copy with `fsck.fat -n`: \
                 `fsck.fat -a -f` saves such chains into FSCKnnnn.REC files. pifw will not \
                 write into this volume while they are there",
            ),
        );
    }
    if bad > 0 {
        findings.push(Finding::info(
            "fat-bad-clusters",
            format!("{bad} clusters are marked bad"),
        ));
    }

    // FAT[1] carries the clean-shutdown and hard-error bits on FAT16/32 (fatgen103 section 4,
    // ClnShutBitMask / HrdErrBitMask; a clear bit means dirty / error).
    let fat1 = ck.fat.raw(r, 1)?;
    let (clean_mask, hard_mask) = match geo.fat_type {
        FatType::Fat12 => (0, 0),
        FatType::Fat16 => (0x8000, 0x4000),
        FatType::Fat32 => (0x0800_0000, 0x0400_0000),
    };
    let bs_dirty = bs.state_flags & 0x01 != 0;
    let fat_dirty = clean_mask != 0 && fat1 & clean_mask == 0;
    let dirty = bs_dirty || fat_dirty;
    if dirty {
        let which = match (bs_dirty, fat_dirty) {
            (true, true) => "boot sector flag and FAT[1] clean-shutdown bit",
            (true, false) => "boot sector flag",
            _ => "FAT[1] clean-shutdown bit",
        };
        findings.push(
            Finding::warning(
                "fat-dirty",
                format!("the volume was not cleanly unmounted ({which})"),
            )
            .advice("run fsck.fat on the partition, then write the card's changes again"),
        );
    }
    if bs.state_flags & 0x02 != 0 || (hard_mask != 0 && fat1 & hard_mask == 0) {
        findings.push(Finding::warning(
            "fat-io-error-flag",
            "the volume records that an I/O error happened while it was mounted",
        ));
    }

    if geo.fats_mirrored {
        for copy in 1..geo.fats {
            if let Some(at) = first_fat_difference(r, geo, copy)? {
                let bits = match geo.fat_type {
                    FatType::Fat12 => 12,
                    FatType::Fat16 => 16,
                    FatType::Fat32 => 32,
                };
                findings.push(
                    Finding::warning(
                        "fat-copies-differ",
                        format!(
                            "FAT copy {} differs from copy 1, first at byte {at} (entry {})",
                            copy + 1,
                            at * 8 / bits
                        ),
                    )
                    .advice("fsck.fat -a would make the copies agree"),
                );
            }
        }
    }

    if let Some(off) = geo.fs_info_offset {
        let info = FsInfo::read(r, off)?;
        if !info.signatures_ok {
            findings.push(Finding::warning(
                "fat-fsinfo-invalid",
                format!("the FAT32 FSInfo sector at byte {off} lacks its signatures"),
            ));
        } else if info.free_count != 0xFFFF_FFFF && u64::from(info.free_count) != free {
            findings.push(Finding::info(
                "fat-fsinfo-stale",
                format!(
                    "FSInfo says {} free clusters, the FAT has {free}",
                    info.free_count
                ),
            ));
        }
    }

    let info = FatInfo {
        fat_type: geo.fat_type,
        label: bs.label(),
        volume_id: bs.volume_id(),
        cluster_bytes: cb,
        total_bytes: u64::from(geo.cluster_count) * cb,
        free_bytes: free * cb,
        dirty,
    };
    Ok((info, ck.findings))
}

#[cfg(test)]
mod tests {
    use super::super::testimg::{Fat16, Image, fsck, noise};
    use super::*;
    use sha2::Digest;
    use std::io::Cursor;

    /// A FAT16 volume (2 KiB clusters) with two multi-cluster files and a directory spanning
    /// exactly two clusters: `.`, `..` and 126 files make 128 entries of 32 bytes, so no
    /// end-of-directory marker stops a reader that follows a looping chain.
    fn fixture() -> (Image, Vec<u8>, Fat16) {
        let img = Image::new("30M", 16, &[]);
        img.put("START.ELF", &noise(10_000, 1));
        img.put("FIXUP.DAT", &noise(7_000, 2));
        img.mkdir("OVERLAYS");
        let files: Vec<(String, Vec<u8>)> = (0..126)
            .map(|i| (format!("F{i:03}.DTB"), noise(10, i)))
            .collect();
        img.put_many("OVERLAYS", &files);
        let bytes = img.bytes();
        let layout = Fat16::of(&bytes);
        assert_eq!(layout.cluster_bytes, 2048, "fixture assumption");
        (img, bytes, layout)
    }

    fn damaged(bytes: Vec<u8>) -> String {
        match check(&mut Cursor::new(bytes)) {
            Err(FatError::Damaged { reason }) => reason,
            other => panic!("expected Damaged, got {other:?}"),
        }
    }

    fn codes(bytes: Vec<u8>) -> Vec<String> {
        let (_, findings) = check(&mut Cursor::new(bytes)).expect("survivable");
        findings.into_iter().map(|f| f.code).collect()
    }

    #[test]
    fn file_chain_looping_to_itself_is_damaged() {
        let (_img, mut b, l) = fixture();
        let c = Fat16::first_cluster(&b, l.root_entry(&b, b"START   ELF"));
        let second = l.get(&b, c);
        l.set(&mut b, second, c);
        let reason = damaged(b.clone());
        assert!(
            reason.contains("START.ELF: cluster chain loops back to cluster")
                && reason.contains(&c.to_string()),
            "{reason}"
        );
        let (code, text) = fsck(&b);
        assert_ne!(code, 0, "fsck.fat agrees it is broken: {text}");
        // The inventory does not check chains: it stops at the file size instead of following
        // the loop forever, and hashes the repeated clusters. That is why `check` comes first.
        let inv = super::super::inventory(&mut Cursor::new(b)).expect("bounded read");
        let start = inv
            .files
            .iter()
            .find(|f| f.path == "START.ELF")
            .expect("listed");
        assert_eq!(start.size, 10_000);
        let digest = sha2::Sha256::digest(noise(10_000, 1));
        let source: String = digest.iter().map(|x| format!("{x:02x}")).collect();
        assert_ne!(start.sha256, source);
    }

    #[test]
    fn directory_chain_loop_does_not_hang() {
        let (_img, mut b, l) = fixture();
        let d = Fat16::first_cluster(&b, l.root_entry(&b, b"OVERLAYS   "));
        let second = l.get(&b, d);
        assert!(
            (2..0xFFF0).contains(&second),
            "directory spans two clusters"
        );
        l.set(&mut b, second, d);
        let reason = damaged(b.clone());
        assert!(
            reason.contains(&format!(
                "OVERLAYS: cluster chain loops back to cluster {d}"
            )),
            "{reason}"
        );
        let (code, text) = fsck(&b);
        assert_ne!(code, 0, "{text}");
        match super::super::inventory(&mut Cursor::new(b)) {
            Err(FatError::Damaged { reason }) => assert!(
                reason.contains("OVERLAYS has more than 65536 entries"),
                "{reason}"
            ),
            other => panic!("the inventory must give up on the looping directory: {other:?}"),
        }
    }

    #[test]
    fn subdirectory_pointing_at_its_parent_does_not_hang() {
        let (img, _, _) = fixture();
        img.mkdir("OVERLAYS/SUB");
        let mut b = img.bytes();
        let l = Fat16::of(&b);
        let d = Fat16::first_cluster(&b, l.root_entry(&b, b"OVERLAYS   "));
        // OVERLAYS is full (two clusters), so mmd gave it a third one holding SUB.
        let mut c = d;
        let entry = loop {
            let off = l.cluster_offset(c);
            if let Some(o) = (off..off + l.cluster_bytes)
                .step_by(32)
                .find(|&o| &b[o..o + 11] == b"SUB        ")
            {
                break o;
            }
            c = l.get(&b, c);
            assert!(c < 0xFFF8, "SUB not found");
        };
        b[entry + 26..entry + 28].copy_from_slice(&d.to_le_bytes());
        let reason = damaged(b.clone());
        assert!(
            reason.contains("OVERLAYS/SUB and OVERLAYS both use cluster"),
            "{reason}"
        );
        let (code, text) = fsck(&b);
        assert_ne!(code, 0, "{text}");
        match super::super::inventory(&mut Cursor::new(b)) {
            Err(FatError::Damaged { reason }) => {
                assert!(reason.contains("nested deeper than 32"), "{reason}")
            }
            other => panic!("the inventory must stop on the cycle: {other:?}"),
        }
    }

    #[test]
    fn cross_linked_files_name_both_owners() {
        let (_img, mut b, l) = fixture();
        let start = l.root_entry(&b, b"START   ELF");
        let fixup = l.root_entry(&b, b"FIXUP   DAT");
        let c = Fat16::first_cluster(&b, start);
        b[fixup + 26..fixup + 28].copy_from_slice(&c.to_le_bytes());
        let reason = damaged(b.clone());
        assert!(
            reason.contains("both use cluster")
                && reason.contains("START.ELF")
                && reason.contains("FIXUP.DAT"),
            "{reason}"
        );
        let (code, text) = fsck(&b);
        assert_ne!(code, 0, "{text}");
    }

    #[test]
    fn cluster_number_out_of_range_is_damaged() {
        let (_img, mut b, l) = fixture();
        let c = Fat16::first_cluster(&b, l.root_entry(&b, b"FIXUP   DAT"));
        l.set(&mut b, c, 0xFFF0);
        let reason = damaged(b);
        assert!(
            reason.contains("FIXUP.DAT: cluster") && reason.contains("0xfff0"),
            "{reason}"
        );
    }

    #[test]
    fn truncated_slice_is_damaged_not_a_panic() {
        let (_img, b, _) = fixture();
        let reason = damaged(b[..10 << 20].to_vec());
        assert!(reason.contains("holds only 10485760"), "{reason}");
    }

    #[test]
    fn dirty_flags_are_reported() {
        let (_img, mut b, l) = fixture();
        b[37] |= 1;
        assert_eq!(codes(b.clone()), ["fat-dirty"]);
        let (code, text) = fsck(&b);
        assert!(
            text.contains("Dirty bit is set"),
            "fsck.fat sees it too: {code} {text}"
        );
        b[37] &= !1;
        let fat1 = l.get(&b, 1);
        l.set(&mut b, 1, fat1 & !0x8000);
        let (info, findings) = check(&mut Cursor::new(b)).expect("check");
        assert!(info.dirty);
        assert!(findings[0].message.contains("FAT[1]"), "{:?}", findings[0]);
    }

    #[test]
    fn lost_cluster_is_a_warning_and_fsck_agrees() {
        let (_img, mut b, l) = fixture();
        let (before, _) = check(&mut Cursor::new(b.clone())).expect("check");
        l.set(&mut b, 5000, 0xFFFF);
        let (info, findings) = check(&mut Cursor::new(b.clone())).expect("check");
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].code, "fat-lost-clusters");
        assert!(findings[0].message.starts_with("1 clusters (2048 bytes)"));
        assert_eq!(info.free_bytes, before.free_bytes - 2048);
        let (code, text) = fsck(&b);
        assert_ne!(code, 0, "{text}");
    }

    #[test]
    fn fat_copies_that_differ_are_a_warning() {
        let (_img, mut b, l) = fixture();
        l.set_in(&mut b, &[1], 6000, 0xFFFF);
        assert_eq!(codes(b.clone()), ["fat-copies-differ"]);
        let (code, text) = fsck(&b);
        assert_ne!(code, 0, "{text}");
    }

    #[test]
    fn short_chain_is_an_error_and_long_chain_a_warning() {
        let (_img, mut b, l) = fixture();
        let e = l.root_entry(&b, b"FIXUP   DAT");
        b[e + 28..e + 32].copy_from_slice(&20_000u32.to_le_bytes());
        assert_eq!(codes(b.clone()), ["fat-file-truncated"]);
        let (code, text) = fsck(&b);
        assert!(text.contains("Truncating file"), "{code} {text}");
        b[e + 28..e + 32].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(codes(b.clone()), ["fat-chain-too-long"]);
        let (code, text) = fsck(&b);
        assert_ne!(code, 0, "{text}");
    }
}
