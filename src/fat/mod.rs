//! FAT12/16/32: structure checks and the file inventory.
//!
//! Works on the partition's byte range as any `Read + Seek` (use `fscommon::StreamSlice` over the
//! disk). Never loads the partition into memory; hashes stream through a fixed buffer. Never
//! writes: the `fatfs` crate wants `Read + Write + Seek`, so reads go through a wrapper whose
//! writes fail.
//!
//! The pieces:
//!
//! - [`boot_sector`]: the BPB, validated, and the byte layout derived from it; the FAT type comes
//!   from the cluster count (fatgen103 section 3.5), never from the `FilSysType` string.
//! - [`table`]: FAT entries read through a small window.
//! - [`dir_entry`]: raw directory entries and long names, for the checker's own walk.
//! - [`check`](mod@check): the structure checker. `fatfs` cannot see cluster chains, so the
//!   checker walks the tree itself and follows every chain.
//! - [`readonly`] and [`files`]: the `fatfs`-based inventory and small-file reads.
//!
//! Call [`check()`] before [`inventory`] or [`read_small_file`]: those trust the chains (they
//! are bounded, so a damaged volume makes them fail, not hang).

mod boot_sector;
mod check;
mod dir_entry;
mod files;
mod readonly;
mod table;
#[cfg(test)]
pub(crate) mod testimg;
pub mod write;

use crate::finding::Finding;
use serde::Serialize;
use std::io::{self, Read, Seek};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FatType {
    #[serde(rename = "FAT12")]
    Fat12,
    #[serde(rename = "FAT16")]
    Fat16,
    #[serde(rename = "FAT32")]
    Fat32,
}

/// What the boot sector and FAT say about the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FatInfo {
    pub fat_type: FatType,
    /// Volume label from the boot sector (trailing spaces trimmed), `None` if `NO NAME`/empty.
    pub label: Option<String>,
    pub volume_id: u32,
    pub cluster_bytes: u64,
    /// Size of the data area (clusters × cluster size).
    pub total_bytes: u64,
    /// Free clusters × cluster size, counted from the FAT (not trusted from FSInfo).
    pub free_bytes: u64,
    /// The volume's dirty flag is set (not cleanly unmounted).
    pub dirty: bool,
}

/// One regular file on the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Path relative to the volume root, `/`-separated, as stored (long name when present),
    /// e.g. `bootcode.bin`, `overlays/vc4-kms-v3d.dtbo`.
    pub path: String,
    pub size: u64,
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
}

/// Every file and directory on the volume, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub files: Vec<FileEntry>,
    /// Directory paths, e.g. `overlays`, `EFI/BOOT`.
    pub dirs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("reading the FAT volume: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a FAT volume: {reason}")]
    NotFat { reason: String },
    #[error("the FAT volume is damaged: {reason}")]
    Damaged { reason: String },
    #[error("{path} is {size} bytes, more than the {max_bytes} bytes pifw reads into memory")]
    TooLarge {
        path: String,
        size: u64,
        max_bytes: u64,
    },
}

/// Checks the boot sector and every cluster chain reachable from the root (loops, cross-links,
/// chains that end early or run past the file size, clusters out of range). Returns the volume
/// facts and findings for survivable problems (lost clusters, dirty flag, FAT copies that
/// differ); returns `Err(Damaged)` when reading the files would be unsafe (a looping chain).
///
/// Finding codes: `fat-dirty`, `fat-io-error-flag`, `fat-lost-clusters`, `fat-bad-clusters`,
/// `fat-copies-differ`, `fat-file-truncated` (error), `fat-chain-too-long`, `fat-dot-entry`,
/// `fat-directory-too-large`, `fat-fsinfo-invalid`, `fat-fsinfo-stale`.
pub fn check<R: Read + Seek>(part: &mut R) -> Result<(FatInfo, Vec<Finding>), FatError> {
    check::check(part)
}

/// Lists every file with its size and streamed sha256. Call [`check`] first.
/// Names are as `fatfs` returns them (long name, else the 8.3 name with the NT lower-case
/// flags applied, which is also what `mdir` shows).
pub fn inventory<R: Read + Seek>(part: &mut R) -> Result<Inventory, FatError> {
    files::inventory(part)
}

/// Reads one small file (e.g. `config.txt`), case-insensitively by path. `Ok(None)` if absent;
/// [`FatError::TooLarge`] if it is larger than `max_bytes`. A directory at `path` counts as
/// absent. Each path component matches the long name or the 8.3 alias.
pub fn read_small_file<R: Read + Seek>(
    part: &mut R,
    path: &str,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, FatError> {
    files::read_small_file(part, path, max_bytes)
}

/// Opens one file, case-insensitively by path, and hands `f` a streaming reader of its content.
/// `Ok(None)` if absent. For probing binaries without loading them into memory.
pub fn with_file<R: Read + Seek, T>(
    part: &mut R,
    path: &str,
    f: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> Result<Option<T>, FatError> {
    files::with_file(part, path, f)
}

#[cfg(test)]
mod tests {
    use super::testimg::{Image, fsck, noise, sha256sum};
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::Cursor;

    /// (path on the volume, content) of the fixture tree: lowercase 8.3 names as mcopy stores
    /// them, a mixed-case name, a long name, an empty file, nested directories.
    fn tree() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("bootcode.bin", noise(52_460, 1)),
            ("Config.TXT", b"arm_64bit=1\nenable_uart=1\n".to_vec()),
            ("a long file name.dat", noise(70_001, 2)),
            ("empty.txt", Vec::new()),
            ("overlays/vc4-kms-v3d.dtbo", noise(3_000, 3)),
            ("overlays/deep/er/x.bin", noise(100, 4)),
            ("EFI/BOOT/BOOTAA64.EFI", noise(123_434, 5)),
        ]
    }

    fn build(size: &str, bits: u8, extra: &[&str]) -> (Image, Vec<(String, Vec<u8>, String)>) {
        let img = Image::new(size, bits, extra);
        for d in [
            "overlays",
            "overlays/deep",
            "overlays/deep/er",
            "EFI",
            "EFI/BOOT",
        ] {
            img.mkdir(d);
        }
        let mut out = Vec::new();
        for (path, data) in tree() {
            let src = img.put(path, &data);
            out.push((path.to_string(), data, sha256sum(&src)));
        }
        (img, out)
    }

    use crate::digest::hex;

    fn inventory_matches_sources(size: &str, bits: u8, extra: &[&str], want: FatType) {
        let (img, sources) = build(size, bits, extra);
        let bytes = img.bytes();
        let mut cur = Cursor::new(bytes.clone());

        let (info, findings) = check(&mut cur).expect("clean volume");
        assert_eq!(info.fat_type, want);
        assert_eq!(info.label.as_deref(), Some("FIRMWARE"));
        assert!(!info.dirty);
        assert_eq!(
            findings,
            vec![],
            "a fresh mkfs+mcopy volume has nothing to report"
        );

        let (inv, writes) = files::inventory_counting_writes(&mut cur).expect("inventory");
        assert_eq!(writes, 0, "fatfs must not even try to write");
        assert_eq!(cur.into_inner(), bytes, "the image must be unchanged");

        let mut want_files: Vec<&(String, Vec<u8>, String)> = sources.iter().collect();
        want_files.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(inv.files.len(), want_files.len());
        for (got, (path, data, coreutils)) in inv.files.iter().zip(want_files) {
            assert_eq!(&got.path, path);
            assert_eq!(got.size, data.len() as u64, "{path}");
            assert_eq!(got.sha256, hex(&Sha256::digest(data)), "{path}");
            assert_eq!(&got.sha256, coreutils, "{path} vs sha256sum");
        }
        assert_eq!(
            inv.dirs,
            [
                "EFI",
                "EFI/BOOT",
                "overlays",
                "overlays/deep",
                "overlays/deep/er"
            ]
        );

        // mdir is the reference for names: same set of files and directories.
        let mut from_mdir = img.mdir_paths();
        from_mdir.sort();
        let mut ours: Vec<String> = inv
            .files
            .iter()
            .map(|f| f.path.clone())
            .chain(inv.dirs.iter().map(|d| format!("{d}/")))
            .collect();
        ours.sort();
        assert_eq!(ours, from_mdir);

        // fsck.fat -v prints "N files, USED/TOTAL clusters"; free space must agree.
        let (code, text) = fsck(&bytes);
        assert_eq!(code, 0, "{text}");
        let counts = text
            .lines()
            .find_map(|l| l.split_once(" files, ").map(|(_, c)| c.to_string()))
            .expect("fsck.fat summary line");
        let (used, total) = counts
            .trim_end_matches(" clusters")
            .split_once('/')
            .expect("USED/TOTAL");
        let used: u64 = used.parse().expect("used");
        let total: u64 = total.parse().expect("total");
        assert_eq!(info.total_bytes, total * info.cluster_bytes);
        assert_eq!(info.free_bytes, (total - used) * info.cluster_bytes);
    }

    #[test]
    fn fat12_inventory_check_and_free_space_match_the_tools() {
        inventory_matches_sources("2M", 12, &[], FatType::Fat12);
    }

    #[test]
    fn fat16_inventory_check_and_free_space_match_the_tools() {
        inventory_matches_sources("30M", 16, &[], FatType::Fat16);
    }

    #[test]
    fn fat32_inventory_check_and_free_space_match_the_tools() {
        inventory_matches_sources("40M", 32, &["-s", "1"], FatType::Fat32);
    }

    #[test]
    fn free_bytes_match_mdir() {
        let (img, _) = build("30M", 16, &[]);
        let out = std::process::Command::new("mdir")
            .arg("-i")
            .arg(&img.path)
            .arg("::/")
            .output()
            .expect("mdir");
        let text = String::from_utf8_lossy(&out.stdout);
        let free: u64 = text
            .lines()
            .find(|l| l.contains("bytes free"))
            .expect("free line")
            .replace("bytes free", "")
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("number");
        let (info, _) = check(&mut Cursor::new(img.bytes())).expect("check");
        assert_eq!(info.free_bytes, free);
    }

    #[test]
    fn read_small_file_is_case_insensitive_and_capped() {
        let (img, _) = build("30M", 16, &[]);
        let mut cur = Cursor::new(img.bytes());
        let cfg = read_small_file(&mut cur, "CONFIG.txt", 1024).expect("read");
        assert_eq!(cfg.as_deref(), Some(&b"arm_64bit=1\nenable_uart=1\n"[..]));
        let deep = read_small_file(&mut cur, "/OVERLAYS/Deep/ER/X.BIN", 1024).expect("read");
        assert_eq!(deep, Some(noise(100, 4)));
        let empty = read_small_file(&mut cur, "empty.txt", 0).expect("read");
        assert_eq!(empty, Some(Vec::new()));
        assert_eq!(
            read_small_file(&mut cur, "cmdline.txt", 1024).expect("read"),
            None
        );
        assert_eq!(
            read_small_file(&mut cur, "overlays", 1024).expect("read"),
            None
        );
        assert_eq!(
            read_small_file(&mut cur, "nope/x.bin", 1024).expect("read"),
            None
        );
        let err = read_small_file(&mut cur, "bootcode.bin", 4096).expect_err("too big");
        assert!(
            matches!(
                &err,
                FatError::TooLarge {
                    size: 52_460,
                    max_bytes: 4096,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn dirty_volume_is_read_without_writes() {
        let (img, _) = build("30M", 16, &[]);
        let mut bytes = img.bytes();
        bytes[37] |= 1;
        let mut cur = Cursor::new(bytes.clone());
        let (inv, writes) = files::inventory_counting_writes(&mut cur).expect("inventory");
        assert_eq!(inv.files.len(), tree().len());
        assert_eq!(writes, 0);
        assert_eq!(cur.into_inner(), bytes);
    }

    #[test]
    fn garbage_is_not_fat() {
        let mut cur = Cursor::new(noise(1 << 20, 9));
        let err = check(&mut cur).expect_err("garbage");
        assert!(matches!(err, FatError::NotFat { .. }), "{err}");
        let err = inventory(&mut cur).expect_err("garbage");
        assert!(matches!(err, FatError::NotFat { .. }), "{err}");
        let err = check(&mut Cursor::new(vec![0u8; 100])).expect_err("tiny");
        assert!(matches!(err, FatError::NotFat { .. }), "{err}");
    }
}
