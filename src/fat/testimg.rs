//! Test fixtures: FAT images made by the real tools (`mkfs.vfat`, `mcopy`, `mmd`) in a private
//! temporary directory, plus the independent oracles (`fsck.fat`, `mdir`, `sha256sum`) and a
//! minimal hand-written FAT16 locator for tests that patch bytes. Nothing here uses the code
//! under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("pifw-fat-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An image file built with mkfs.vfat and filled with mtools.
pub struct Image {
    pub dir: TempDir,
    pub path: PathBuf,
}

impl Image {
    /// `truncate -s SIZE`, then `mkfs.vfat -F BITS -n FIRMWARE [extra...]`.
    pub fn new(size: &str, fat_bits: u8, extra: &[&str]) -> Self {
        let dir = TempDir::new();
        let path = dir.0.join("fat.img");
        run(Command::new("truncate").arg("-s").arg(size).arg(&path));
        run(Command::new("mkfs.vfat")
            .arg("-F")
            .arg(fat_bits.to_string())
            .args(["-n", "FIRMWARE"])
            .args(extra)
            .arg(&path));
        Image { dir, path }
    }

    /// Writes `data` to a source file and `mcopy`s it to `::/dest`. Returns the source path.
    pub fn put(&self, dest: &str, data: &[u8]) -> PathBuf {
        let src = self
            .dir
            .0
            .join(format!("src-{}", COUNTER.fetch_add(1, Ordering::SeqCst)));
        std::fs::write(&src, data).expect("write source");
        run(Command::new("mcopy")
            .arg("-i")
            .arg(&self.path)
            .arg(&src)
            .arg(format!("::/{dest}")));
        src
    }

    /// Copies many `(name, data)` files into directory `::/dir` with one `mcopy` call.
    pub fn put_many(&self, dir: &str, files: &[(String, Vec<u8>)]) {
        let staging = self
            .dir
            .0
            .join(format!("many-{}", COUNTER.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&staging).expect("staging dir");
        let mut srcs = Vec::new();
        for (name, data) in files {
            let p = staging.join(name);
            std::fs::write(&p, data).expect("write source");
            srcs.push(p);
        }
        run(Command::new("mcopy")
            .arg("-i")
            .arg(&self.path)
            .args(&srcs)
            .arg(format!("::/{dir}/")));
    }

    pub fn mkdir(&self, dir: &str) {
        run(Command::new("mmd")
            .arg("-i")
            .arg(&self.path)
            .arg(format!("::/{dir}")));
    }

    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read image")
    }

    /// `mdir -/ -b`: every path, directories with a trailing `/`, without the `::/` prefix.
    pub fn mdir_paths(&self) -> Vec<String> {
        let out = run(Command::new("mdir")
            .args(["-/", "-b", "-i"])
            .arg(&self.path)
            .arg("::/"));
        out.lines()
            .map(|l| l.trim_start_matches("::/").to_string())
            .collect()
    }
}

/// `sha256sum FILE`'s hash.
pub fn sha256sum(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().expect("hash").to_string()
}

/// Runs `fsck.fat -n -v` on a copy of `bytes`; returns (exit code, stdout + stderr).
pub fn fsck(bytes: &[u8]) -> (i32, String) {
    let dir = TempDir::new();
    let p = dir.0.join("fsck.img");
    std::fs::write(&p, bytes).expect("write image copy");
    let out = Command::new("fsck.fat")
        .args(["-n", "-v"])
        .arg(&p)
        .output()
        .expect("spawn fsck.fat");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Just enough FAT16 layout (fatgen103 offsets, written out again here) to find a root
/// directory entry and patch FAT entries in both copies.
pub struct Fat16 {
    pub fat_offset: usize,
    pub fat_bytes: usize,
    pub fats: usize,
    pub root_offset: usize,
    pub root_bytes: usize,
    pub data_offset: usize,
    pub cluster_bytes: usize,
}

fn le16(b: &[u8], o: usize) -> usize {
    usize::from(u16::from_le_bytes([b[o], b[o + 1]]))
}

impl Fat16 {
    pub fn of(img: &[u8]) -> Self {
        let bps = le16(img, 11);
        let spc = usize::from(img[13]);
        let reserved = le16(img, 14);
        let fats = usize::from(img[16]);
        let root_entries = le16(img, 17);
        let fat_sectors = le16(img, 22);
        assert_ne!(fat_sectors, 0, "not a FAT12/16 image");
        let fat_offset = reserved * bps;
        let root_offset = fat_offset + fats * fat_sectors * bps;
        let root_bytes = (root_entries * 32).div_ceil(bps) * bps;
        Fat16 {
            fat_offset,
            fat_bytes: fat_sectors * bps,
            fats,
            root_offset,
            root_bytes,
            data_offset: root_offset + root_bytes,
            cluster_bytes: bps * spc,
        }
    }

    /// Byte offset of the short entry named `name83` (11 bytes, e.g. `b"CONFIG  TXT"`) in the
    /// directory whose bytes start at `dir_offset`.
    pub fn entry_in(img: &[u8], dir_offset: usize, len: usize, name83: &[u8; 11]) -> usize {
        (dir_offset..dir_offset + len)
            .step_by(32)
            .find(|&o| &img[o..o + 11] == name83)
            .unwrap_or_else(|| panic!("no entry {:?}", String::from_utf8_lossy(name83)))
    }

    pub fn root_entry(&self, img: &[u8], name83: &[u8; 11]) -> usize {
        Self::entry_in(img, self.root_offset, self.root_bytes, name83)
    }

    pub fn first_cluster(img: &[u8], entry: usize) -> u16 {
        u16::from_le_bytes([img[entry + 26], img[entry + 27]])
    }

    pub fn cluster_offset(&self, cluster: u16) -> usize {
        self.data_offset + (usize::from(cluster) - 2) * self.cluster_bytes
    }

    pub fn get(&self, img: &[u8], cluster: u16) -> u16 {
        let o = self.fat_offset + 2 * usize::from(cluster);
        u16::from_le_bytes([img[o], img[o + 1]])
    }

    /// Sets FAT entry `cluster` to `value` in the given copies.
    pub fn set_in(&self, img: &mut [u8], copies: &[usize], cluster: u16, value: u16) {
        for &copy in copies {
            let o = self.fat_offset + copy * self.fat_bytes + 2 * usize::from(cluster);
            img[o..o + 2].copy_from_slice(&value.to_le_bytes());
        }
    }

    pub fn set(&self, img: &mut [u8], cluster: u16, value: u16) {
        let all: Vec<usize> = (0..self.fats).collect();
        self.set_in(img, &all, cluster, value);
    }
}

/// Deterministic pseudo-random bytes (xorshift), so content differs between files.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
