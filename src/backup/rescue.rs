//! Backups a rescue machine can find: the ones the Pi kept in its own root filesystem.
//!
//! When the firmware partition has no room for a backup's copy (a NixOS card: 30 MiB, mostly
//! full), the only copy is in the backup directory of the machine that made the change. Run as
//! root on the Pi, that is `/var/lib/pifw/backups` ([`PI_BACKUP_DIRS`]) on the card's own root
//! filesystem, so the card still carries it. A second machine holding the card (the Pi does not
//! boot any more) finds it here: every partition of the target whose superblock has the ext2/3/4
//! magic is read with `ext4-view` (pure Rust, read-only by construction: its only access to the
//! disk is [`Ext4Read::read`]; it replays the journal in memory, so a root the Pi did not
//! unmount cleanly reads as the Pi left it), and each `pifw-*.zip` in those directories is
//! copied into a local scratch directory, where the caller opens it with
//! [`super::Backup::open`] (every member checked against the manifest) before using it.
//!
//! A root filesystem this machine has mounted (the Pi itself, or a PC that mounted the card)
//! is read through its mount instead: the kernel may hold recent writes (a backup just made)
//! in its cache, not yet on the device, and a raw read would then see a half-written tree.
//!
//! Must not: write to the root filesystem (the target is opened `O_RDONLY`), fail the command:
//! a root that is not ext4, unreadable or without backups is a note in [`RootScan::notes`].

use crate::disk::table::convert::ext4_size;
use crate::disk::table::{self, Layout};
use ext4_view::{Ext4, Ext4Error, Ext4Read};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where pifw keeps backups when run as root on the Pi (root's default `backup_dir`), as paths
/// inside the root filesystem.
pub const PI_BACKUP_DIRS: &[&str] = &["/var/lib/pifw/backups"];

/// Largest backup copied out of the root filesystem.
const CAP: u64 = 256 * 1024 * 1024;

/// What [`scan`] found on the target's root filesystem(s).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootScan {
    /// Each backup zip found, copied into the scratch directory.
    pub found: Vec<RootCopy>,
    /// Why something could not be read (not ext4, unreadable, too large): information only.
    pub notes: Vec<String>,
}

/// A backup found in a root filesystem of the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCopy {
    /// e.g. `partition 2`.
    pub partition: String,
    /// Its path inside that filesystem, e.g. `/var/lib/pifw/backups/pifw-ID.zip`.
    pub path_in_root: String,
    /// The local copy (in the scratch directory), not yet verified.
    pub copy: PathBuf,
}

/// A partition of the target, read through `pread` on a read-only handle.
struct PartReader {
    file: File,
    start: u64,
    len: u64,
}

impl Ext4Read for PartReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        start_byte
            .checked_add(dst.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {start_byte} beyond the partition's {} bytes",
                        dst.len(),
                        self.len
                    ),
                )
            })?;
        self.file.read_exact_at(dst, self.start + start_byte)?;
        Ok(())
    }
}

/// The partitions of `layout` (GPT entries and MBR primary and logical entries, a start seen
/// twice counted once; no 0xEE or extended container), as (name, first byte, length), first
/// on the disk first.
fn partitions(layout: &Layout) -> Vec<(String, u64, u64)> {
    let sector = table::SECTOR;
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    if let Some(gpt) = &layout.gpt {
        for e in &gpt.entries {
            out.push((
                format!("partition {}", e.index),
                e.first_lba * sector,
                (e.last_lba + 1).saturating_sub(e.first_lba) * sector,
            ));
        }
    }
    if let Some(mbr) = &layout.mbr {
        for e in &mbr.entries {
            if matches!(e.type_byte, 0xEE | 0x05 | 0x0F | 0x85) || e.sectors == 0 {
                continue;
            }
            let start = e.start_lba * sector;
            if out.iter().any(|(_, s, _)| *s == start) {
                continue;
            }
            out.push((format!("partition {}", e.slot), start, e.sectors * sector));
        }
    }
    out.sort_by_key(|(_, s, _)| *s);
    out
}

/// Looks for backups in the ext2/3/4 filesystems of the whole-disk image or device `target`,
/// copying each into `scratch`. `mounted`: partitions of the target mounted here, as (first
/// byte, mount point); those are read through the mount. Never writes to `target`; never
/// fails: what cannot be read is a note.
pub fn scan(target: &Path, scratch: &Path, mounted: &[(u64, PathBuf)]) -> RootScan {
    let mut out = RootScan::default();
    let mut file = match File::open(target) {
        Ok(f) => f,
        Err(e) => {
            out.notes
                .push(format!("cannot open {}: {e}", target.display()));
            return out;
        }
    };
    let size = match io::Seek::seek(&mut file, io::SeekFrom::End(0)) {
        Ok(s) => s,
        Err(e) => {
            out.notes
                .push(format!("cannot size {}: {e}", target.display()));
            return out;
        }
    };
    let layout = match table::read_layout(&mut file, size) {
        Ok(l) => l,
        Err(e) => {
            out.notes
                .push(format!("cannot read the partition table: {e}"));
            return out;
        }
    };
    let mut roots = 0;
    for (name, start, len) in partitions(&layout) {
        if start.saturating_add(len) > size {
            continue;
        }
        match ext4_size(&mut file, start) {
            Ok(Some(_)) => {}
            Ok(None) => continue,
            Err(e) => {
                out.notes
                    .push(format!("{name}: cannot read its superblock: {e}"));
                continue;
            }
        }
        roots += 1;
        if let Some((_, mp)) = mounted.iter().find(|(s, _)| *s == start) {
            let name = format!("{name}, mounted on {}", mp.display());
            for dir in PI_BACKUP_DIRS {
                scan_mounted(mp, &name, dir, scratch, &mut out);
            }
            continue;
        }
        let reader = match file.try_clone() {
            Ok(f) => PartReader {
                file: f,
                start,
                len,
            },
            Err(e) => {
                out.notes.push(format!("{name}: {e}"));
                continue;
            }
        };
        let fs = match Ext4::load(Box::new(reader)) {
            Ok(fs) => fs,
            Err(e) => {
                out.notes.push(format!(
                    "{name} has an ext2/3/4 superblock, but pifw cannot read it ({e}); backups kept there are not considered"
                ));
                continue;
            }
        };
        for dir in PI_BACKUP_DIRS {
            scan_dir(&fs, &name, dir, scratch, &mut out);
        }
    }
    if roots == 0 {
        out.notes.push(
            "the card has no ext2/3/4 root filesystem pifw can see, so no backups kept on the Pi itself were looked for".to_string(),
        );
    }
    out
}

fn scan_dir(fs: &Ext4, part: &str, dir: &str, scratch: &Path, out: &mut RootScan) {
    let entries = match fs.read_dir(dir) {
        Ok(e) => e,
        Err(Ext4Error::NotFound) => return,
        Err(e) => {
            out.notes.push(format!("{part}: cannot list {dir}: {e}"));
            return;
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.notes.push(format!("{part}: reading {dir}: {e}"));
                continue;
            }
        };
        let Ok(name) = entry.file_name().as_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with(super::FILE_PREFIX) && name.ends_with(super::FILE_SUFFIX) {
            names.push(name);
        }
    }
    names.sort();
    for name in names {
        let inside = format!("{}/{name}", dir.trim_end_matches('/'));
        match copy_out(fs, &inside, part, &name, scratch) {
            Ok(copy) => out.found.push(RootCopy {
                partition: part.to_string(),
                path_in_root: inside,
                copy,
            }),
            Err(e) => out.notes.push(format!("{part}: {inside}: {e}")),
        }
    }
}

fn scan_mounted(mp: &Path, part: &str, dir: &str, scratch: &Path, out: &mut RootScan) {
    let here = mp.join(dir.trim_start_matches('/'));
    let entries = match std::fs::read_dir(&here) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            out.notes.push(format!("{part}: cannot list {dir}: {e}"));
            return;
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(super::FILE_PREFIX) && n.ends_with(super::FILE_SUFFIX))
        .collect();
    names.sort();
    for name in names {
        let inside = format!("{}/{name}", dir.trim_end_matches('/'));
        let copied = (|| -> io::Result<PathBuf> {
            let src = File::open(here.join(&name))?;
            let meta = src.metadata()?;
            if !meta.is_file() || meta.len() > CAP {
                return Err(io::Error::other(format!(
                    "not a regular file of at most {CAP} bytes"
                )));
            }
            let dest = scratch.join(format!("root-mounted-{name}"));
            io::copy(&mut src.take(CAP), &mut File::create(&dest)?)?;
            Ok(dest)
        })();
        match copied {
            Ok(copy) => out.found.push(RootCopy {
                partition: part.to_string(),
                path_in_root: inside,
                copy,
            }),
            Err(e) => out.notes.push(format!("{part}: {inside}: {e}")),
        }
    }
}

fn copy_out(
    fs: &Ext4,
    inside: &str,
    part: &str,
    name: &str,
    scratch: &Path,
) -> io::Result<PathBuf> {
    let meta = fs.metadata(inside).map_err(io::Error::other)?;
    if meta.is_dir() || meta.is_symlink() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > CAP {
        return Err(io::Error::other(format!(
            "{} bytes, more than the {CAP} pifw reads",
            meta.len()
        )));
    }
    let src = fs.open(inside).map_err(io::Error::other)?;
    let dest = scratch.join(format!("root-{}-{name}", part.replace(' ', "")));
    let mut f = File::create(&dest)?;
    io::copy(&mut src.take(CAP), &mut f)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_a_table_is_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("blank.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let scan = scan(&img, dir.path(), &[]);
        assert!(scan.found.is_empty());
        assert_eq!(scan.notes.len(), 1, "{:?}", scan.notes);
    }
}
