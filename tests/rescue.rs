//! Undo from another machine: the Pi kept its backup in its own root filesystem (the firmware
//! partition had no copy), the Pi no longer boots, and a PC holding the card alone rolls back.
//!
//! "The Pi" is a loop device over a copy of the NixOS-like fixture with its ext4 root mounted
//! by the kernel, and pifw's backup directory inside it (`--backup-dir
//! <root>/var/lib/pifw/backups`, `backups_on_card = false`). "The PC" is pifw with a fresh
//! HOME, fresh XDG directories and an empty backup directory, given the image file alone after
//! the loop device is gone. Results are judged by mtools (every file's sha256), the partition's
//! own bytes, `fsck.fat -n`, and the image's sha256 for a refusal.
//!
//! Needs root and loop devices with partitions: without them each test says so on stderr and
//! skips. Loop-device use is serialised with tests/live.rs (the same lock file).

mod common;

use common::*;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const FAT: u64 = 8 * 1024 * 1024;
const FAT_LEN: u64 = 30 * 1024 * 1024;
/// Sectors before the first data cluster of the NixOS-like FAT16: boot sector and reserved
/// (4), two FATs of 60 sectors, the 512-entry root directory (32 sectors).
const FAT_META_SECTORS: u64 = 4 + 2 * 60;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Why this machine cannot run these tests, if it cannot.
fn cannot_run() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("loop devices and mounts need root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control: this kernel has no loop devices".into());
    }
    None
}

macro_rules! need_loop {
    ($name:expr) => {
        if let Some(why) = cannot_run() {
            eprintln!("SKIPPED {}: {why}", $name);
            return;
        }
    };
}

/// Held while a test uses loop devices: one test at a time, across processes (shared with
/// tests/live.rs).
fn serial() -> File {
    let f = File::create(std::env::temp_dir().join("pifw-live-tests.lock")).expect("lock file");
    f.lock().expect("locking the live-test lock");
    f
}

/// A loop device over `image` with its root partition (2) mounted under `dir`; unmounted and
/// detached when dropped, whatever happened.
struct Pi {
    dev: PathBuf,
    root: PathBuf,
    mounted: bool,
}

impl Pi {
    fn attach(image: &Path, dir: &Path) -> Pi {
        let out = run_ok(cmd("losetup").args(["-fP", "--show"]).arg(image));
        let dev = PathBuf::from(out.trim());
        let root = dir.join("pi-root");
        std::fs::create_dir_all(&root).expect("mount point");
        let mut pi = Pi {
            dev,
            root,
            mounted: false,
        };
        // Without udev the partition nodes may lag, or partscan may not run at all.
        if !pi.part(2).exists() {
            let _ = run(cmd("partx").arg("-a").arg(&pi.dev));
        }
        let start = Instant::now();
        while !pi.part(2).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} has no partition nodes",
                pi.dev.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        run_ok(cmd("mount").arg(pi.part(2)).arg(&pi.root));
        pi.mounted = true;
        pi
    }

    fn part(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.dev.display()))
    }

    fn backups(&self) -> PathBuf {
        self.root.join("var/lib/pifw/backups")
    }

    fn detach(&mut self) {
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.root)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.root).status();
            }
            self.mounted = false;
        }
        let name = self.dev.file_name().expect("loopN").to_string_lossy();
        let backing = PathBuf::from(format!("/sys/block/{name}/loop/backing_file"));
        if backing.exists() {
            let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
            let start = Instant::now();
            while backing.exists() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Pi {
    fn drop(&mut self) {
        self.detach();
    }
}

/// pifw as run by a user on a machine set up in `home` (config there, HOME and XDG there).
struct Machine {
    home: PathBuf,
    config: PathBuf,
}

impl Machine {
    /// A fresh machine: nothing in its backup directory. `extra` goes into its config.toml.
    fn new(dir: &Path, name: &str, extra: &str) -> Machine {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).expect("home");
        let config = home.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "cache_dir = \"{}\"\nbackup_dir = \"{}\"\n{extra}",
                home.join("cache").display(),
                home.join("backups").display()
            ),
        )
        .expect("config.toml");
        Machine { home, config }
    }

    fn backups(&self) -> PathBuf {
        self.home.join("backups")
    }

    fn pifw(&self, args: &[&str]) -> Output {
        run(pifw()
            .args(args)
            .env("PIFW_CONFIG", &self.config)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null()))
    }

    fn pifw_ok(&self, args: &[&str]) -> String {
        let out = self.pifw(args);
        let text = all_text(&out);
        assert!(out.status.success(), "pifw {args:?} failed:\n{text}");
        text
    }
}

fn all_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn uboot_deb(version: &str) -> PathBuf {
    let p = blob_cache()
        .join("debs")
        .join(format!("u-boot-rpi_{version}_arm64.deb"));
    assert!(
        p.is_file(),
        "{} missing; run scripts/fetch-blobs",
        p.display()
    );
    p
}

fn firmware_deb(version: &str) -> PathBuf {
    let p = blob_cache()
        .join("debs")
        .join(format!("raspi-firmware_{version}_all.deb"));
    assert!(
        p.is_file(),
        "{} missing; run scripts/fetch-blobs",
        p.display()
    );
    p
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).expect("open");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).expect("read");
    buf
}

fn zips(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "zip"));
    v.sort();
    v
}

/// The Pi updates U-Boot with its backup directory in its own root filesystem and no copy on
/// the firmware partition; then a fresh machine, given the image file alone, finds that backup
/// in the root filesystem and rolls back.
#[test]
fn a_second_machine_rolls_back_from_the_backup_in_the_cards_root_filesystem() {
    need_loop!("a_second_machine_rolls_back_from_the_backup_in_the_cards_root_filesystem");
    let _serial = serial();
    let (dir, image) = fixture_copy("nixos.img");
    let files_before = card_files(&image, FAT);
    let part_before = read_range(&image, FAT, FAT_LEN);

    let pi_machine = Machine::new(dir.path(), "pi", "backups_on_card = false\n");
    let mut pi = Pi::attach(&image, dir.path());
    let deb = uboot_deb(UBOOT_NEW);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "--backup-dir".to_string(),
            s(&pi.backups()).to_string(),
            "update-uboot".into(),
            "--from".into(),
            s(&deb).into(),
        ];
        v.extend(extra.iter().map(|a| a.to_string()));
        v.push(s(&pi.dev).into());
        v
    };
    // The plan says where the copy goes and that a second machine can use it.
    let dry: Vec<String> = args(&["--dry-run", "--json"]);
    let dry: Vec<&str> = dry.iter().map(String::as_str).collect();
    let out = pi_machine.pifw(&dry);
    assert!(out.status.success(), "{}", all_text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan json");
    assert_eq!(plan["schema"], 1);
    assert_eq!(plan["backup_on_card"], false);
    let copies = plan["backup_copies"].as_array().expect("backup_copies");
    assert_eq!(copies.len(), 1, "{plan:#}");
    assert_eq!(copies[0]["place"], "backup-dir");
    assert_eq!(copies[0]["second_machine"], true, "{plan:#}");
    let p2 = s(&pi.part(2)).trim_start_matches("/dev/").to_string();
    assert_eq!(copies[0]["on_card_partition"], p2.as_str(), "{plan:#}");

    let real: Vec<String> = args(&["--yes"]);
    let real: Vec<&str> = real.iter().map(String::as_str).collect();
    let text = pi_machine.pifw_ok(&real);
    assert!(
        text.contains(&format!(
            "(on this card's root filesystem, {p2}: a second machine can use it)"
        )),
        "the plan must say where the copy goes:\n{text}"
    );
    let kept = zips(&pi.backups());
    assert_eq!(kept.len(), 1, "one backup in the Pi's state directory");
    assert!(
        zips(&pi_machine.backups()).is_empty(),
        "--backup-dir replaces the configured directory"
    );
    // On the Pi itself, with its root mounted, the backup is read through the mount (the
    // kernel may not have written it to the device yet), and the listing says where it is.
    let listed = pi_machine.pifw_ok(&["backups", s(&pi.dev)]);
    assert!(
        listed.contains(&format!(
            "card root filesystem (partition 2, mounted on {}: /var/lib/pifw/backups/pifw-",
            pi.root.display()
        )),
        "{listed}"
    );
    pi.detach();
    let files_updated = card_files(&image, FAT);
    assert_ne!(files_updated, files_before, "the update changed U-Boot");
    assert!(
        !files_updated.keys().any(|k| k.starts_with("pifw-backup-")),
        "no copy on the firmware partition: {files_updated:?}"
    );

    // The PC: a fresh home, the image file alone.
    let pc = Machine::new(dir.path(), "pc", "");
    let listed = pc.pifw_ok(&["backups", s(&image)]);
    assert!(
        listed.contains("card root filesystem (partition 2: /var/lib/pifw/backups/pifw-"),
        "{listed}"
    );
    let text = pc.pifw_ok(&["rollback", "--yes", s(&image)]);
    assert!(
        text.contains("from the card's root filesystem"),
        "rollback must say where its backup came from:\n{text}"
    );
    assert_eq!(
        card_files(&image, FAT),
        files_before,
        "every file as before"
    );
    assert_fsck_clean_at(&image, FAT, FAT_LEN);

    // The partition's own bytes: boot sector and both FATs are as before, byte for byte,
    // but for the chain of the card's identity file, which the update created and every
    // rollback keeps (its clusters, as mtools' mshowfat names them, are set free here
    // before comparing). Measured, not hidden: the root directory differs in the restored
    // file's write time (the backup records content, not times), in the deleted slot the
    // change's journal used and in the identity file's entry; freed clusters keep the newer
    // U-Boot's bytes (free space, not in any file).
    let mut part_after = read_range(&image, FAT, FAT_LEN);
    let id_clusters = run_ok(
        cmd("mshowfat")
            .arg("-i")
            .arg(format!("{}@@{FAT}", image.display()))
            .arg("::/PIFW-ID.TXT"),
    );
    let (reserved, fat_sectors) = (4usize, 60usize);
    let mut freed = 0;
    for range in id_clusters
        .trim()
        .rsplit(' ')
        .next()
        .expect("mshowfat output")
        .trim_matches(|c| c == '<' || c == '>')
        .split(',')
    {
        let mut ends = range
            .trim()
            .split('-')
            .map(|n| n.parse::<usize>().expect("cluster"));
        let first = ends.next().expect("cluster");
        let last = ends.next().unwrap_or(first);
        for cluster in first..=last {
            for copy in 0..2 {
                let at = (reserved + copy * fat_sectors) * 512 + 2 * cluster;
                part_after[at..at + 2].copy_from_slice(&[0, 0]);
            }
            freed += 1;
        }
    }
    assert_eq!(
        freed, 1,
        "the identity file takes one cluster: {id_clusters}"
    );
    let meta = (FAT_META_SECTORS * 512) as usize;
    assert_eq!(
        sha256sum(&part_after[..meta]),
        sha256sum(&part_before[..meta]),
        "boot sector and FATs as before (but for the identity file's cluster)"
    );

    // The card's root filesystem was only read.
    let (ok, e2) = e2fsck(&image, FAT + FAT_LEN);
    assert!(ok, "e2fsck -fn on the root after the rescue:\n{e2}");
    // And the Pi's backup is still there for the next rescue (pifw never writes the root).
    let mut pi = Pi::attach(&image, dir.path());
    assert_eq!(
        zips(&pi.backups())
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect::<Vec<_>>(),
        kept.iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect::<Vec<_>>()
    );
    pi.detach();
}

/// Two cards from one image: card B's root filesystem holds card A's backup (B changed
/// differently). A fresh machine given B never applies A's backup.
#[test]
fn another_cards_backup_in_the_root_filesystem_is_not_applied() {
    need_loop!("another_cards_backup_in_the_root_filesystem_is_not_applied");
    let _serial = serial();
    let (dir_a, image_a) = fixture_copy("nixos.img");
    let (dir_b, image_b) = fixture_copy("nixos.img");
    let dir = TempDir::new().expect("tempdir");

    let a = Machine::new(dir.path(), "a", "backups_on_card = false\n");
    a.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&uboot_deb(UBOOT_NEW)),
        "--yes",
        s(&image_a),
    ]);
    let a_zip = zips(&a.backups()).pop().expect("A's backup");

    let b = Machine::new(dir.path(), "b", "backups_on_card = false\n");
    b.pifw_ok(&[
        "update-firmware",
        "--from",
        s(&firmware_deb("1.20240424+ds-6")),
        "--yes",
        s(&image_b),
    ]);
    // A's backup lands in B's root filesystem (a user copying state directories around).
    let mut pi = Pi::attach(&image_b, dir_b.path());
    std::fs::create_dir_all(pi.backups()).expect("state dir");
    std::fs::copy(&a_zip, pi.backups().join(a_zip.file_name().unwrap())).expect("copy");
    pi.detach();
    let a_id = card_id_on(&image_a, FAT).expect("A's identity");
    drop(dir_a);

    let before = sha256sum(&std::fs::read(&image_b).expect("image"));
    let pc = Machine::new(dir.path(), "pc", "");
    let listed = pc.pifw_ok(&["backups", s(&image_b)]);
    assert!(
        listed.contains("No backups of this card"),
        "A's backup is not B's:\n{listed}"
    );
    let out = pc.pifw(&["rollback", "--yes", s(&image_b)]);
    let text = all_text(&out);
    assert!(!out.status.success(), "rollback must refuse:\n{text}");
    assert!(
        text.contains("nothing to roll back to") && text.contains("nothing was written"),
        "{text}"
    );
    // It was found (same disk identifiers), and set aside: it names card A's identity.
    assert!(
        text.contains("1 backups have this card's disk identifiers but were made on another card"),
        "the root filesystem's backup must be seen and set aside:\n{text}"
    );
    let b_id = card_id_on(&image_b, FAT).expect("B's identity");
    assert_ne!(a_id, b_id);
    assert!(text.contains(&format!("this card's is {b_id}")), "{text}");
    assert!(!text.contains("--force"), "never suggests --force:\n{text}");
    assert_eq!(
        sha256sum(&std::fs::read(&image_b).expect("image")),
        before,
        "B unchanged"
    );
}

/// A card whose only other partition is not ext4 (or absent) is a note, never a failure.
#[test]
fn a_card_without_an_ext4_root_lists_its_backups_with_a_note() {
    let (_dir, image) = fixture_copy("uefi.img");
    let dir = TempDir::new().expect("tempdir");
    let pc = Machine::new(dir.path(), "pc", "");
    let out = pc.pifw(&["backups", s(&image)]);
    let text = all_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("No backups of this card"), "{text}");
    assert!(
        text.contains("note: the card has no ext2/3/4 root filesystem"),
        "{text}"
    );
}
