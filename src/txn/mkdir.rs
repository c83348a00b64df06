//! Creating the directories a change needs (`EFI/BOOT`, `loader`, `overlays`), before it.
//!
//! [`super::apply`] puts files only into directories that exist. A change that adds files
//! under new directories first creates them, empty, one at a time, each in this order:
//!
//! 1. a free cluster gets the new directory's content: `.` (itself) and `..` (its parent; 0
//!    for the root, fatgen103 §6.1), the rest zero. Nothing refers to the cluster yet.
//! 2. FAT32: FSInfo's free count set to "unknown" (0xFFFFFFFF, legal), so no cut leaves it
//!    wrong; sync.
//! 3. the cluster marked end-of-chain in every FAT copy, copy 0 first; sync.
//! 4. the directory's entry (long-name slots and short entry, in free slots of the parent
//!    chosen inside one sector when possible) written; sync. **The directory exists.**
//! 5. FSInfo recomputed from the FAT; sync.
//!
//! A cut before step 4 leaves at most one unreferenced cluster marked in FAT copy 0 (and
//! perhaps not yet in copy 1): `fsck.fat -n` says "FATs differ but appear to be intact. Using
//! first FAT." and "Reclaimed 1 unused cluster", nothing else (the unit tests cut after every
//! write on FAT16 and FAT32 and hold fsck.fat to exactly that); a cut after leaves an empty
//! directory. Neither changes a file, so the change that follows is still all-or-nothing, and
//! running the command again finds the directories it already made. Rollback leaves created
//! directories in place (empty directories change no boot).
//!
//! Must not: grow a parent directory (a full parent is an error: the fixed FAT16 root has 512
//! slots, and pifw's own changes use few), or print.

use super::{Durable, TxnError, durable, split_path};
use crate::fat::FatType;
use crate::fat::write::{self, DosTime, FatEdits, Volume, WriteError, names};
use std::io::{Read, Seek, SeekFrom, Write};

const ATTR_DIRECTORY: u8 = 0x10;

/// The directories (as `/`-separated paths, parents first) that `paths` (file paths) need and
/// the volume lacks.
pub fn missing_dirs<R: Read + Seek>(part: &mut R, paths: &[&str]) -> Result<Vec<String>, TxnError> {
    let vol = Volume::open(part)?;
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        let parts = split_path(p)?;
        for depth in 1..parts.len() {
            let dir = parts[..depth].join("/");
            if out.iter().any(|d| d.eq_ignore_ascii_case(&dir)) {
                continue;
            }
            match vol.resolve_dir(part, &parts[..depth]) {
                Ok(_) => {}
                Err(WriteError::NoSuchDir { .. }) => out.push(dir),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(out)
}

/// Creates every directory in `dirs` (parents first, as [`missing_dirs`] returns them) that
/// does not exist yet. Returns the ones it created.
pub fn create_dirs<P: Read + Write + Seek + Durable>(
    part: &mut P,
    dirs: &[String],
    when: DosTime,
) -> Result<Vec<String>, TxnError> {
    let vol = Volume::open(part)?;
    // As in `apply`: pifw's own leftovers first, then refuse a volume that hides data.
    if super::recovery_needed(part)?.is_some() {
        super::recover(part)?;
    }
    super::check_writable(part)?;
    let mut created = Vec::new();
    for d in dirs {
        let parts = split_path(d)?;
        match vol.resolve_dir(part, &parts) {
            Ok(_) => continue,
            Err(WriteError::NoSuchDir { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let (leaf, parents) = parts
            .split_last()
            .expect("split_path gives at least one part");
        create_one(part, &vol, parents, leaf, when)?;
        created.push(d.clone());
    }
    Ok(created)
}

/// Removes the directories in `dirs` (deepest first) that exist and are empty; leaves a
/// non-empty or missing one alone. Returns the ones removed. Order per directory: FSInfo
/// "unknown" (FAT32); its entry deleted in the parent, short entry's sector first (from then
/// on the directory is gone for every reader; a cut leaves its clusters lost, as above); its
/// clusters freed in every FAT copy; sync; FSInfo from the FAT.
pub fn remove_empty_dirs<P: Read + Write + Seek + Durable>(
    part: &mut P,
    dirs: &[String],
) -> Result<Vec<String>, TxnError> {
    let vol = Volume::open(part)?;
    let mut removed = Vec::new();
    for d in dirs {
        let parts = split_path(d)?;
        let (leaf, parents) = parts
            .split_last()
            .expect("split_path gives at least one part");
        let parent = match vol.resolve_dir(part, parents) {
            Ok(p) => p,
            Err(WriteError::NoSuchDir { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let Some(item) = parent.find(leaf).filter(|i| i.is_dir()) else {
            continue;
        };
        let first = item.first_cluster();
        if first < 2 || !vol.read_dir(part, first)?.items().is_empty() {
            continue;
        }
        let clusters = vol.chain(part, first, 1 << 16)?;
        if vol.fat_type() == FatType::Fat32 {
            vol.write_fs_info(part, u32::MAX, 2)?;
        }
        // The short entry first: once it is deleted the directory is gone, whatever follows.
        let mut slots: Vec<(u64, [u8; 32])> = Vec::new();
        for &i in item.slots.iter().rev() {
            let mut e = parent.slot(i);
            e[0] = 0xE5;
            slots.push((parent.slot_offset(i), e));
        }
        write::patch_slots(part, vol.sector_bytes(), &slots)?;
        durable(part)?;
        let mut edits = FatEdits::default();
        edits.free(&clusters);
        vol.write_fat(part, &edits)?;
        durable(part)?;
        if vol.fat_type() == FatType::Fat32 {
            let free = vol.free_map(part)?;
            vol.write_fs_info(part, free.count() as u32, free.first_free())?;
            durable(part)?;
        }
        removed.push(d.clone());
    }
    Ok(removed)
}

fn dot_entry(name: &[u8; 11], first: u32, when: DosTime) -> [u8; 32] {
    let mut e = write::new_short_entry(name, 0, first, 0, when);
    e[11] = ATTR_DIRECTORY;
    e
}

fn create_one<P: Read + Write + Seek + Durable>(
    part: &mut P,
    vol: &Volume,
    parents: &[&str],
    leaf: &str,
    when: DosTime,
) -> Result<(), TxnError> {
    let parent = vol.resolve_dir(part, parents)?;
    if parent.find(leaf).is_some() {
        return Err(TxnError::BadPath {
            path: [parents, &[leaf]].concat().join("/"),
            reason: "a file of that name is in the way of a directory".into(),
        });
    }
    let enc = names::encode(leaf, &parent.short_names())?;
    let mut entries = match &enc.long {
        Some(long) => names::long_entries(long, names::checksum(&enc.short)),
        None => Vec::new(),
    };
    let mut free = vol.free_map(part)?;
    let cluster = free
        .alloc(1)
        .and_then(|c| c.first().copied())
        .ok_or(TxnError::NoSpace {
            need: vol.cluster_bytes(),
            have: 0,
        })?;
    let mut short = write::new_short_entry(&enc.short, enc.nt_res, cluster, 0, when);
    short[11] = ATTR_DIRECTORY;
    entries.push(short);

    // Slots: consecutive, inside one sector when possible, and never behind the end marker
    // (the first 0x00 slot): readers stop there, so an entry past it would not exist for them.
    let avail = parent.free_slots();
    let n = entries.len();
    let bps = vol.sector_bytes();
    let end = (0..parent.slot_count())
        .find(|&i| parent.slot(i)[0] == 0)
        .unwrap_or(parent.slot_count());
    let mut pick: Option<usize> = None;
    for w in avail.windows(n) {
        if !w.windows(2).all(|p| p[1] == p[0] + 1) {
            continue;
        }
        if w[0] > end {
            break;
        }
        let one_sector = parent.slot_offset(w[0]) / bps == parent.slot_offset(w[n - 1]) / bps;
        if one_sector {
            pick = Some(w[0]);
            break;
        }
        pick.get_or_insert(w[0]);
    }
    let Some(start) = pick else {
        return Err(WriteError::RootFull {
            need: n,
            have: avail.len(),
            total: parent.slot_count(),
        }
        .into());
    };

    // 1. The directory's own content, unreferenced.
    let parent_first = if parent.first == vol.root() {
        0
    } else {
        parent.first
    };
    let mut content = vec![0u8; vol.cluster_bytes() as usize];
    content[..32].copy_from_slice(&dot_entry(b".          ", cluster, when));
    content[32..64].copy_from_slice(&dot_entry(b"..         ", parent_first, when));
    part.seek(SeekFrom::Start(vol.cluster_offset(cluster)))?;
    part.write_all(&content)?;
    // 2. FSInfo "unknown" before the FAT changes, so no cut leaves a wrong count.
    if vol.fat_type() == FatType::Fat32 {
        vol.write_fs_info(part, u32::MAX, free.first_free())?;
        // Writes between syncs may land in any order: "unknown" must be on disk before the
        // FAT changes the count.
        durable(part)?;
    }
    // 3. The cluster allocated in every FAT copy.
    let mut edits = FatEdits::default();
    edits.set(cluster, vol.eoc());
    vol.write_fat(part, &edits)?;
    durable(part)?;
    // 4. The entry: from here the directory exists.
    let slots: Vec<(u64, [u8; 32])> = (start..start + n)
        .map(|i| parent.slot_offset(i))
        .zip(entries)
        .collect();
    write::patch_slots(part, bps, &slots)?;
    durable(part)?;
    // 5. FSInfo from the FAT.
    if vol.fat_type() == FatType::Fat32 {
        let free = vol.free_map(part)?;
        vol.write_fs_info(part, free.count() as u32, free.first_free())?;
        durable(part)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fat::testimg::{Image, fsck};
    use crate::txn::FaultyDevice;
    use std::io::Cursor;

    const WHEN: DosTime = DosTime {
        time: 0,
        date: (46 << 9) | (11 << 5) | 29,
    };

    fn dirs() -> Vec<String> {
        ["EFI", "EFI/BOOT", "loader", "a long directory name"]
            .map(String::from)
            .to_vec()
    }

    /// Creates the directories on a copy of `img` with the power cut after `cut` writes;
    /// returns the bytes and whether it finished.
    fn run(img: &[u8], cut: Option<u64>) -> (Vec<u8>, bool) {
        let mut dev = FaultyDevice::new(Cursor::new(img.to_vec()), cut);
        let done = {
            let missing = missing_dirs(
                &mut dev,
                &[
                    "EFI/BOOT/BOOTAA64.EFI",
                    "loader/x",
                    "a long directory name/f",
                ],
            )
            .expect("missing");
            assert_eq!(missing, dirs());
            create_dirs(&mut dev, &missing, WHEN).is_ok()
        };
        (dev.into_inner().into_inner(), done)
    }

    fn check(fat_bits: u8, size: &str) {
        let image = Image::new(size, fat_bits, &[]);
        image.put("config.txt", b"arm_64bit=1\n");
        let img = image.bytes();
        let (done_img, done) = run(&img, None);
        assert!(done);
        let (code, text) = fsck(&done_img);
        assert_eq!(code, 0, "{text}");
        assert!(!text.contains("lost") && !text.contains("differ"), "{text}");
        std::fs::write(&image.path, &done_img).expect("write");
        let paths = image.mdir_paths();
        for d in dirs() {
            assert!(paths.contains(&format!("{d}/")), "{d} missing: {paths:?}");
        }
        // Removing them (deepest first) leaves the volume as mtools saw it before, fsck-clean.
        let mut dev = Cursor::new(done_img.clone());
        let mut rev = dirs();
        rev.reverse();
        assert_eq!(remove_empty_dirs(&mut dev, &rev).expect("rmdir").len(), 4);
        let removed = dev.into_inner();
        let (code, text) = fsck(&removed);
        assert_eq!(code, 0, "{text}");
        assert!(!text.contains("lost") && !text.contains("differ"), "{text}");
        std::fs::write(&image.path, &removed).expect("write");
        assert_eq!(image.mdir_paths(), vec!["config.txt".to_string()]);
        std::fs::write(&image.path, &done_img).expect("write");
        // Running again creates nothing.
        let mut dev = Cursor::new(done_img.clone());
        assert!(
            create_dirs(&mut dev, &dirs(), WHEN)
                .expect("again")
                .is_empty()
        );
        assert_eq!(dev.into_inner(), done_img);

        // Every cut point: the volume stays valid; at most a lost cluster.
        let total = {
            let mut dev = FaultyDevice::new(Cursor::new(img.clone()), None);
            create_dirs(&mut dev, &dirs(), WHEN).expect("count");
            dev.writes()
        };
        for k in 0..total {
            let (bytes, _) = run(&img, Some(k));
            let (code, text) = fsck_quiet(&bytes);
            assert!(code == 0 || code == 1, "cut {k}: {text}");
            // Every line is the header, the summary, or a lost cluster: copy 0 already marks
            // the new, still unreferenced cluster while copy 1 does not yet, and fsck.fat
            // reads copy 0.
            for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let ok = l.starts_with("fsck.fat ")
                    || l.contains(" files, ")
                    || l == "FATs differ but appear to be intact."
                    || l == "Using first FAT."
                    || l.starts_with("Reclaimed ")
                    || l.contains("unused cluster")
                    || l == "Leaving filesystem unchanged."
                    || l.starts_with("Free cluster summary");
                assert!(ok, "cut {k}/{total}: {l}\n{text}");
            }
        }
    }

    /// `fsck.fat -n` without -v: only problems, the header and the summary.
    fn fsck_quiet(bytes: &[u8]) -> (i32, String) {
        let dir = crate::fat::testimg::TempDir::new();
        let p = dir.0.join("cut.img");
        std::fs::write(&p, bytes).expect("write");
        let out = std::process::Command::new("fsck.fat")
            .arg("-n")
            .arg(&p)
            .output()
            .expect("fsck.fat");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The end marker at the last slot of a sector and a name needing three slots: the run
    /// must start at the marker (crossing into the next sector), not in the next sector
    /// behind a 0x00 slot, where no reader would look.
    #[test]
    fn a_new_entry_never_lands_behind_the_end_marker() {
        let image = Image::new("32M", 16, &[]);
        // The label takes slot 0; 14 short names take slots 1-14; slot 15 is the end marker.
        let files: Vec<(String, Vec<u8>)> = (1..=14)
            .map(|i| (format!("f{i:02}.bin"), vec![i as u8]))
            .collect();
        image.put_many("", &files);
        let mut dev = Cursor::new(image.bytes());
        let made =
            create_dirs(&mut dev, &["a long directory name".to_string()], WHEN).expect("mkdir");
        assert_eq!(made.len(), 1);
        std::fs::write(&image.path, dev.into_inner()).expect("write");
        assert!(
            image
                .mdir_paths()
                .contains(&"a long directory name/".to_string()),
            "{:?}",
            image.mdir_paths()
        );
        let (code, text) = fsck(&image.bytes());
        assert_eq!(code, 0, "{text}");
    }

    #[test]
    fn creates_directories_fsck_clean_and_cut_safe_fat16() {
        check(16, "32M");
    }

    #[test]
    fn creates_directories_fsck_clean_and_cut_safe_fat32() {
        check(32, "40M");
    }
}
