//! The running Pi, simulated: a loop device over a fixture image stands in for the SD card,
//! its root partition mounted (ext4, by the kernel) and its firmware partition mounted too
//! (this kernel has no vfat module, so through FUSE with Debian's `fusefat`).
//!
//! pifw never judges itself here: after detaching, the image file is read with mtools,
//! `fsck.fat -n`, `sfdisk --dump` and `sgdisk -v`, and compared with what the same commands
//! make of a plain copy of the image that no loop device ever saw. Refusals are judged by the
//! image's sha256, and mounts by `/proc/self/mountinfo`.
//!
//! Needs root, loop devices with partitions, and `fusefat` (scripts/install-deps installs it):
//! without root the tests say so on stderr and skip; anything else missing fails them.
//! Loop-device use is serialised (a file lock, shared by every test process), and every loop
//! device and mount is removed when a test ends, also when it fails (the [`Card`] guard).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const FAT: u64 = 8 * 1024 * 1024;
const FAT_LEN: u64 = 30 * 1024 * 1024;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: loop devices and mounts need root");
            return;
        }
    };
}

/// Held while a test uses loop devices and mounts: one test at a time, across processes.
struct Serial(#[allow(dead_code)] File);

fn serial() -> Serial {
    let f = File::create(std::env::temp_dir().join("pifw-live-tests.lock")).expect("lock file");
    f.lock().expect("locking the live-test lock");
    Serial(f)
}

/// `/proc/self/mountinfo` lines: (mount point, fstype, source).
fn mounts() -> Vec<(PathBuf, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    pifw::disk::mounts::parse_mountinfo(&text)
        .expect("parsing mountinfo")
        .into_iter()
        .map(|m| (m.mount_point, m.fstype, m.source))
        .collect()
}

fn mounted_at(dir: &Path) -> Option<(String, String)> {
    mounts()
        .into_iter()
        .rev()
        .find(|(mp, _, _)| mp == dir)
        .map(|(_, t, s)| (t, s))
}

/// A loop device over an image (with partition nodes), and everything mounted from it under
/// its own directory. Dropping it unmounts (deepest first) and detaches, whatever happened.
struct Card {
    dir: TempDir,
    image: PathBuf,
    dev: PathBuf,
    /// Further loop devices a test attached (detached first).
    extra: Vec<PathBuf>,
    _serial: Serial,
}

impl Card {
    /// A private copy of `fixture`, `extra_bytes` longer (free space after the last
    /// partition, made by `truncate`), attached with `losetup -fP`.
    fn attach(fixture: &str, extra_bytes: u64) -> Card {
        Card::attach_with(fixture, |image| {
            if extra_bytes > 0 {
                run_ok(
                    cmd("truncate")
                        .arg("-s")
                        .arg(format!("+{extra_bytes}"))
                        .arg(image),
                );
            }
        })
    }

    /// As [`Card::attach`], with the copy changed by `prepare` first.
    fn attach_with(fixture: &str, prepare: impl FnOnce(&Path)) -> Card {
        let serial = serial();
        let (dir, image) = fixture_copy(fixture);
        prepare(&image);
        let out = run_ok(cmd("losetup").args(["-fP", "--show"]).arg(&image));
        let dev = PathBuf::from(out.trim());
        let card = Card {
            dir,
            image,
            dev,
            extra: Vec::new(),
            _serial: serial,
        };
        // Without udev the partition nodes may lag, or partscan may not run at all.
        if !card.part(1).exists() {
            run_ok(cmd("partx").arg("-a").arg(&card.dev));
        }
        let start = Instant::now();
        while !card.part(2).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} has no partition nodes",
                card.dev.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        card
    }

    fn part(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.dev.display()))
    }

    fn name(&self) -> String {
        self.dev
            .file_name()
            .expect("/dev/loopN")
            .to_string_lossy()
            .into_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("mount point");
        p
    }

    /// Mounts the ext4 root (partition 2), as a running Pi has it.
    fn mount_root(&self) -> PathBuf {
        let mp = self.path("root");
        run_ok(cmd("mount").arg(self.part(2)).arg(&mp));
        mp
    }

    /// Mounts the firmware partition read-write with fusefat.
    fn mount_firmware(&self) -> PathBuf {
        let mp = self.path("firmware");
        let fusefat = tool("fusefat");
        let out = run(Command::new(fusefat)
            .args(["-o", "rw+"])
            .arg(self.part(1))
            .arg(&mp));
        assert!(
            out.status.success(),
            "fusefat failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            mounted_at(&mp).map(|m| m.0).as_deref(),
            Some("fuse.fusefat")
        );
        mp
    }

    /// Another loop device over `file`, detached with the card.
    fn attach_extra(&mut self, file: &Path) -> PathBuf {
        let out = run_ok(cmd("losetup").args(["-f", "--show"]).arg(file));
        let dev = PathBuf::from(out.trim());
        self.extra.push(dev.clone());
        dev
    }

    fn unmount_all(&self) {
        let mine: Vec<PathBuf> = mounts()
            .into_iter()
            .map(|m| m.0)
            .filter(|mp| mp.starts_with(self.dir.path()))
            .collect();
        for mp in mine.iter().rev() {
            let ok = Command::new("umount")
                .arg(mp)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // Still busy (a test failed before its busy process was killed): detach it
                // from the tree now; the kernel lets go once the process does.
                let _ = Command::new("umount").arg("-l").arg(mp).status();
            }
        }
        // A FUSE daemon lets go of the partition only after it exits.
        let start = Instant::now();
        while holders_of(&self.part(1)) > 0 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Unmounts everything and detaches, then the image file alone is the card.
    fn detach(&mut self) {
        self.unmount_all();
        for d in self.extra.drain(..).rev() {
            let _ = Command::new("losetup").arg("-d").arg(&d).status();
        }
        let backing = PathBuf::from(format!("/sys/block/{}/loop/backing_file", self.name()));
        if backing.exists() {
            let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
            let start = Instant::now();
            while backing.exists() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        self.detach();
    }
}

/// How many processes have `node` open.
fn holders_of(node: &Path) -> usize {
    let Ok(want) = std::fs::metadata(node).map(|m| std::os::unix::fs::MetadataExt::rdev(&m)) else {
        return 0;
    };
    let mut n = 0;
    for p in std::fs::read_dir("/proc").expect("/proc").flatten() {
        for fd in std::fs::read_dir(p.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::metadata(fd.path()).is_ok_and(|m| {
                std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type())
                    && std::os::unix::fs::MetadataExt::rdev(&m) == want
            }) {
                n += 1;
            }
        }
    }
    n
}

fn deb(name: &str) -> PathBuf {
    let p = blob_cache().join("debs").join(name);
    assert!(
        p.is_file(),
        "{} missing; run scripts/fetch-blobs",
        p.display()
    );
    p
}

/// The commands every scenario runs, in order, as pifw arguments before TARGET.
fn commands(zip: &Path) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        v(&[
            "update-uboot",
            "--from",
            s(&deb(&format!("u-boot-rpi_{UBOOT_NEW}_arm64.deb"))),
        ]),
        v(&[
            "update-firmware",
            "--from",
            s(&deb(&format!("raspi-firmware_{FW_NEW}_all.deb"))),
        ]),
        v(&["rollback"]),
        // No --bootloader: on this 30 MiB card systemd-boot would have nothing to boot, and
        // switch uefi refuses that (issue 10; tests/switch.rs). The firmware files are what
        // this test needs to change on the live disk.
        v(&["switch", "uefi", "--from", s(zip), "--allow-unpinned"]),
        v(&["partition", "hybrid"]),
    ]
}

fn pifw_run(env: &Env, args: &[String], target: &Path) -> String {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(["--yes", s(target)]);
    env.pifw_ok_all(&all)
}

/// The firmware partition's files as mtools reads them, path -> sha256; backups (whose
/// names and zip timestamps carry the time) become one count.
fn fat_files(image: &Path) -> BTreeMap<String, String> {
    let mut files = card_files(image, FAT);
    let backups = files.keys().filter(|k| k.contains("pifw-backup-")).count();
    files.retain(|k, _| !k.contains("pifw-backup-"));
    files.insert("(backups on the card)".into(), backups.to_string());
    files
}

/// The partition tables as sfdisk reads them, minus the GUIDs a conversion draws at random.
fn tables(image: &Path) -> (String, Vec<DumpPart>, Vec<DumpPart>) {
    let (header, parts) = parse_sfdisk_dump(&sfdisk_dump(image));
    let mbr = parse_sfdisk_dump(&sfdisk_dump_mbr(image)).1;
    (header.get("label").cloned().unwrap_or_default(), parts, mbr)
}

fn assert_fat_clean(image: &Path) {
    let (ok, text) = fsck_fat(image, FAT, FAT_LEN);
    assert!(ok, "fsck.fat -n failed:\n{text}");
    for bad in ["differ", "lost", "Dirty", "dirty"] {
        assert!(!text.contains(bad), "fsck.fat -n complains:\n{text}");
    }
}

fn assert_sgdisk_clean(image: &Path) {
    let text = sgdisk_verify(image);
    assert!(text.contains("No problems found"), "sgdisk -v:\n{text}");
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).expect("opening to read");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).expect("read");
    buf
}

/// sha256 of `len` bytes at `offset`.
fn sha_of(path: &Path, offset: u64, len: u64) -> String {
    sha256sum(&read_range(path, offset, len))
}

/// Runs every command on the loop device (with `firmware_mounted`, fusefat holds partition 1
/// throughout) and on a plain copy; after detaching, the two images must read alike.
fn same_as_on_the_image_file(firmware_mounted: bool) {
    let mut card = Card::attach("nixos.img", 1 << 20);
    let plain = card.dir.path().join("plain.img");
    run_ok(
        cmd("cp")
            .arg("--sparse=always")
            .arg(&card.image)
            .arg(&plain),
    );
    // Its RPI_EFI.fd content does not matter here (no settings are carried): a filler.
    let zip = pftf_zip(
        card.dir.path(),
        "RPi3_UEFI_Firmware.zip",
        &vec![0x5au8; 0x1f0000],
        &[],
    );
    let root = card.mount_root();
    let fw = firmware_mounted.then(|| card.mount_firmware());
    let (env_live, env_plain) = (Env::new(), Env::new());

    for args in commands(&zip) {
        let live = pifw_run(&env_live, &args, &card.dev);
        pifw_run(&env_plain, &args, &plain);
        assert_eq!(
            mounted_at(&root).map(|m| m.0).as_deref(),
            Some("ext4"),
            "root after {args:?}"
        );
        if let Some(fw) = &fw {
            assert!(
                live.contains(&format!(
                    "unmounts {} ({}, fuse.fusefat) for the change and mounts it back afterwards",
                    fw.display(),
                    card.part(1).display()
                )),
                "{args:?}: the plan must say it unmounts the firmware partition:\n{live}"
            );
            assert_eq!(
                mounted_at(fw).map(|m| m.0).as_deref(),
                Some("fuse.fusefat"),
                "the firmware partition is mounted back after {args:?}"
            );
            // And it serves the card as it is now (fusefat shows 8.3 names).
            let listing: Vec<String> = std::fs::read_dir(fw)
                .expect("listing the remounted firmware partition")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert!(listing.iter().any(|n| n == "CONFIG.TXT"), "{listing:?}");
        } else {
            assert!(
                live.contains(&format!(
                    "{} stays mounted on {}",
                    card.part(2).display(),
                    root.display()
                )),
                "{args:?}: the plan must say the root stays mounted:\n{live}"
            );
        }
        // Through the whole-disk device, while everything is still mounted.
        assert_eq!(fat_files(&card.dev), fat_files(&plain), "after {args:?}");
    }

    card.detach();
    assert_eq!(fat_files(&card.image), fat_files(&plain));
    assert_eq!(tables(&card.image), tables(&plain));
    assert_eq!(
        tables(&card.image).0,
        "gpt",
        "partition hybrid converted it"
    );
    assert_fat_clean(&card.image);
    assert_fat_clean(&plain);
    assert_sgdisk_clean(&card.image);
    assert_sgdisk_clean(&plain);
}

#[test]
fn with_root_mounted_every_command_works_on_the_loop_device() {
    need_root!();
    same_as_on_the_image_file(false);
}

#[test]
fn with_the_firmware_partition_mounted_too_it_is_unmounted_and_mounted_back() {
    need_root!();
    // fusefat marks FAT[1] "hard error" on a read-write mount; mtools then refuses the
    // volume unless told not to check (pifw reports it as the warning fat-io-error-flag).
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("MTOOLS_SKIP_CHECK", "1") };
    same_as_on_the_image_file(true);
}

/// A child process, killed when dropped (also when the test fails).
struct Busy(Child);

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process that keeps using the mounted firmware partition: `sh` with its working
/// directory there, or with a file of it open.
fn busy(dir: &Path, open: Option<&str>) -> Busy {
    let script = match open {
        Some(f) => format!("exec 3<{f}; exec sleep 60"),
        None => "exec sleep 60".to_string(),
    };
    let child = Command::new("sh")
        .args(["-c", &script])
        .current_dir(if open.is_some() { Path::new("/") } else { dir })
        .stdin(Stdio::null())
        .spawn()
        .expect("sh");
    // Until sh has opened the file and exec'd sleep.
    let comm = PathBuf::from(format!("/proc/{}/comm", child.id()));
    let start = Instant::now();
    while std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() != "sleep") {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    Busy(child)
}

#[test]
fn a_busy_firmware_mount_is_refused_naming_the_process() {
    need_root!();
    let env = Env::new();
    let uboot = deb(&format!("u-boot-rpi_{UBOOT_NEW}_arm64.deb"));
    // What the same mounts leave on the card without pifw: fusefat writes FAT[1] (0x8000,
    // "hard error") when it is unmounted, so the reference goes through the same mount and
    // unmount on a second copy. Everything before the root partition is compared.
    let before = {
        let mut other = Card::attach("nixos.img", 0);
        other.mount_root();
        other.mount_firmware();
        other.detach();
        let sha = sha_of(&other.image, 0, FAT + FAT_LEN);
        drop(other);
        sha
    };
    let card = Card::attach("nixos.img", 0);
    card.mount_root();
    let fw = card.mount_firmware();
    for open in [None, Some("CONFIG.TXT")] {
        let file = open.map(|f| fw.join(f));
        let child = busy(&fw, file.as_deref().map(s));
        for dry in [true, false] {
            let mut args = vec!["update-uboot", "--from", s(&uboot), "--yes", s(&card.dev)];
            if dry {
                args.push("--dry-run");
            }
            let out = env.pifw(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{open:?} dry={dry}: must be refused");
            let how = match &file {
                None => "has its working directory there".to_string(),
                Some(f) => format!("has {} open", f.display()),
            };
            assert!(
                err.contains(&format!("pid {} (sleep) {how}", child.0.id())),
                "{open:?} dry={dry}: {err}"
            );
            assert!(err.contains("pifw changed nothing"), "{err}");
            assert_eq!(
                mounted_at(&fw).map(|m| m.0).as_deref(),
                Some("fuse.fusefat"),
                "a refusal leaves the mount alone"
            );
        }
        drop(child);
    }
    let mut card = card;
    card.detach();
    assert_eq!(
        sha_of(&card.image, 0, FAT + FAT_LEN),
        before,
        "nothing was written"
    );
}

#[test]
fn the_card_in_use_under_another_name_is_refused() {
    need_root!();
    let mut card = Card::attach("nixos.img", 0);
    let env = Env::new();
    let uboot = deb(&format!("u-boot-rpi_{UBOOT_NEW}_arm64.deb"));
    // Everything before the root partition, which a mount of the root may change.
    let before = sha_of(&card.image, 0, FAT + FAT_LEN);
    let refused = |target: &Path, want: &str| {
        let out = env.pifw(&["update-uboot", "--from", s(&uboot), "--yes", s(target)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{}: must be refused",
            target.display()
        );
        assert!(err.contains(want), "{}: {err}", target.display());
    };
    let lo = card.dev.clone();
    let name = card.name();

    // The image itself, by its path, a hard link and a bind-mounted directory.
    let want = format!("the image backs loop device {}", lo.display());
    refused(&card.image, &want);
    let link = card.dir.path().join("link.img");
    std::fs::hard_link(&card.image, &link).expect("hard link");
    refused(&link, &want);
    let bind = card.path("bind");
    run_ok(cmd("mount").arg("--bind").arg(card.dir.path()).arg(&bind));
    refused(&bind.join("nixos.img"), &want);
    // With a partition of the loop device mounted, the mount is named too.
    let root = card.mount_root();
    refused(
        &link,
        &format!("/dev/{name}p2 is mounted on {} (ext4)", root.display()),
    );

    // A partition instead of the disk.
    refused(
        &card.part(1),
        &format!("give the whole disk, e.g. /dev/{name}"),
    );

    // A second loop device over the same file.
    let image = card.image.clone();
    let second = card.attach_extra(&image);
    refused(
        &lo,
        &format!(
            "{} is a second loop device over {}",
            second.display(),
            image.display()
        ),
    );
    run_ok(cmd("losetup").arg("-d").arg(&second));
    card.extra.clear();

    // A loop device stacked on the target.
    let stacked = card.attach_extra(&lo);
    refused(
        &lo,
        &format!(
            "loop device {} is stacked on {}",
            stacked.display(),
            lo.display()
        ),
    );
    // ... or on its firmware partition.
    run_ok(cmd("losetup").arg("-d").arg(&stacked));
    card.extra.clear();
    let p1 = card.part(1);
    let stacked = card.attach_extra(&p1);
    refused(
        &lo,
        &format!(
            "loop device {} is stacked on {}",
            stacked.display(),
            p1.display()
        ),
    );

    card.detach();
    assert_eq!(mounted_at(&bind), None, "the bind mount went with the card");
    assert_eq!(
        sha_of(&card.image, 0, FAT + FAT_LEN),
        before,
        "nothing was written"
    );
}

#[test]
fn status_says_what_is_mounted_and_what_a_change_unmounts() {
    need_root!();
    let card = Card::attach("nixos.img", 0);
    let root = card.mount_root();
    let status = |target: &Path| pifw_status_json(target)["mounts"].clone();

    let m = status(&card.dev);
    assert_eq!(m["mounted"].as_array().map(Vec::len), Some(1), "{m:#}");
    assert_eq!(m["mounted"][0]["device"], s(&card.part(2)));
    assert_eq!(m["mounted"][0]["mount_point"], s(&root));
    assert_eq!(m["mounted"][0]["fstype"], "ext4");
    assert_eq!(m["mounted"][0]["firmware"], false);
    assert_eq!(m["change_unmounts"], serde_json::json!([]));
    assert_eq!(m["change_refused"], serde_json::Value::Null);

    let fw = card.mount_firmware();
    let m = status(&card.dev);
    assert_eq!(m["mounted"][0]["device"], s(&card.part(1)));
    assert_eq!(m["mounted"][0]["mount_point"], s(&fw));
    assert_eq!(m["mounted"][0]["firmware"], true);
    assert_eq!(m["change_unmounts"], serde_json::json!([s(&fw)]));
    let text =
        String::from_utf8_lossy(&run(pifw().arg("status").arg(&card.dev)).stdout).into_owned();
    assert!(
        text.contains(&format!(
            "a change unmounts {} and mounts it back afterwards",
            fw.display()
        )),
        "{text}"
    );

    let child = busy(&fw, None);
    let m = status(&card.dev);
    let why = m["change_refused"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("pid {} (sleep)", child.0.id())),
        "{m:#}"
    );
    drop(child);

    // The image file behind the loop device: a change of it would be refused.
    let m = status(&card.image);
    let why = m["change_refused"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("loop device {}", card.dev.display())),
        "{m:#}"
    );
}

/// `partition hybrid` may shorten the root partition's entry when its file system is smaller
/// (no room for the backup GPT otherwise): never while that partition is mounted, since the
/// kernel would keep the old extent under a live file system until the next boot.
#[test]
fn a_table_change_that_moves_a_mounted_partition_is_refused() {
    need_root!();
    const ROOT: u64 = 38 * 1024 * 1024;
    const ROOT_LEN: u64 = 90 * 1024 * 1024;
    let card = Card::attach_with("nixos.img", |img| {
        let (_pdir, part) = extract_partition(img, ROOT, ROOT_LEN);
        run_ok(cmd("e2fsck").arg("-fy").arg(&part));
        run_ok(cmd("resize2fs").arg(&part).arg("80M"));
        run_ok(
            cmd("dd")
                .arg(format!("if={}", part.display()))
                .arg(format!("of={}", img.display()))
                .args(["bs=512", "seek=77824", "conv=notrunc", "status=none"]),
        );
    });
    let root = card.mount_root();
    let env = Env::new();
    let before = sha_of(&card.image, 0, ROOT);
    for dry in [true, false] {
        let mut args = vec!["partition", "hybrid", "--yes", s(&card.dev)];
        if dry {
            args.push("--dry-run");
        }
        let out = env.pifw(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "dry={dry}: must be refused");
        assert!(
            err.contains(&format!(
                "changes the extent of {} (now sectors 77824+184320), which is mounted on {}",
                card.part(2).display(),
                root.display()
            )),
            "{err}"
        );
    }
    let mut card = card;
    card.detach();
    assert_eq!(sha_of(&card.image, 0, ROOT), before, "nothing was written");
}

/// Ctrl-C or a dropped SSH connection (SIGINT, SIGHUP, SIGTERM) while the firmware partition
/// is unmounted must not leave it unmounted: pifw finishes the change, mounts it back, and only
/// then dies of the signal.
#[test]
fn a_signal_during_the_change_waits_until_the_partition_is_mounted_back() {
    need_root!();
    unsafe { std::env::set_var("MTOOLS_SKIP_CHECK", "1") };
    let card = Card::attach("nixos.img", 0);
    let plain = card.dir.path().join("plain.img");
    run_ok(
        cmd("cp")
            .arg("--sparse=always")
            .arg(&card.image)
            .arg(&plain),
    );
    card.mount_root();
    let fw = card.mount_firmware();
    let (env_live, env_plain) = (Env::new(), Env::new());
    let args = commands(Path::new("/unused")).swap_remove(1); // update-firmware
    pifw_run(&env_plain, &args, &plain);

    let mut child = pifw()
        .args(&args)
        .args(["--yes", s(&card.dev)])
        .env("PIFW_CONFIG", &env_live.config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pifw");
    let start = Instant::now();
    let mut seen_unmounted = false;
    while start.elapsed() < Duration::from_secs(60) {
        if mounted_at(&fw).is_none() {
            seen_unmounted = true;
            break;
        }
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        seen_unmounted,
        "pifw ended before the firmware partition was seen unmounted"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = child.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(15),
        "it dies of the signal, at the end"
    );
    assert_eq!(
        mounted_at(&fw).map(|m| m.0).as_deref(),
        Some("fuse.fusefat"),
        "the firmware partition is mounted back first"
    );
    let mut card = card;
    card.detach();
    // The change went through whole.
    assert_eq!(fat_files(&card.image), fat_files(&plain));
    assert_fat_clean(&card.image);
}

/// On a Pi (a device-tree model says so) with no TARGET, pifw finds the card with the firmware
/// partition and changes it while its root is mounted. The sysfs pifw reads lists only this
/// loop device as a disk (other disks of the test machine would be candidates too); the rest
/// of it is the real one.
#[test]
fn no_target_on_a_pi_picks_the_boot_card_and_changes_it_with_root_mounted() {
    need_root!();
    let card = Card::attach("nixos.img", 0);
    let root = card.mount_root();
    let fake = card.path("sys");
    std::fs::create_dir_all(fake.join("block")).expect("fake sysfs");
    for d in ["class", "dev", "devices"] {
        std::os::unix::fs::symlink(Path::new("/sys").join(d), fake.join(d)).expect("symlink");
    }
    std::os::unix::fs::symlink(
        Path::new("/sys/block").join(card.name()),
        fake.join("block").join(card.name()),
    )
    .expect("symlink");
    let model = card.dir.path().join("model");
    std::fs::write(&model, b"Raspberry Pi 3 Model B Rev 1.2\0").expect("model");
    let env = Env::new();
    let on_pi = |args: &[&str]| {
        run(pifw()
            .args(args)
            .env("PIFW_CONFIG", &env.config)
            .env("PIFW_SYSFS", &fake)
            .env("PIFW_DT_MODEL", &model)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null()))
    };
    let out = on_pi(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(v["target"]["path"], s(&card.dev));
    assert_eq!(v["mounts"]["mounted"][0]["mount_point"], s(&root));

    let uboot = deb(&format!("u-boot-rpi_{UBOOT_NEW}_arm64.deb"));
    let out = on_pi(&["update-uboot", "--from", s(&uboot), "--yes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("on {}", card.dev.display())),
        "{text}"
    );
    assert_eq!(mounted_at(&root).map(|m| m.0).as_deref(), Some("ext4"));
    let mut card = card;
    card.detach();
    assert_eq!(
        mcopy_out(&card.image, FAT, "u-boot-rpi3.bin"),
        std::fs::read(uboot_rpi3(UBOOT_NEW)).expect("the Debian blob"),
        "the new U-Boot is on the card"
    );
    assert_fat_clean(&card.image);
}

/// pifw killed outright (SIGKILL, which no program can hold off) in the middle of a change on
/// the live disk: the firmware partition stays unmounted (nothing can mount it back), and
/// `pifw recover` on the disk, with the root still mounted, leaves every file old or new and
/// the boot set whole (update-firmware's batches are one transaction each), fsck-clean.
/// Killed at 30 % of an uncut run's time, and as each of its two batches starts.
#[test]
fn killed_mid_change_on_the_live_disk_recover_finishes_or_undoes_it() {
    need_root!();
    unsafe { std::env::set_var("MTOOLS_SKIP_CHECK", "1") };
    let without_backups = |image: &Path| {
        let mut f = card_files(image, FAT);
        f.retain(|k, _| !k.contains("pifw-backup-"));
        f
    };
    // When to kill: at a share of an uncut run's time (most of which is planning, before the
    // unmount), or as a batch starts (pifw prints `batch N/M` on stderr before each).
    for when in ["30%", "batch 1/", "batch 2/"] {
        let card = Card::attach("nixos.img", 0);
        let plain = card.dir.path().join("plain.img");
        run_ok(
            cmd("cp")
                .arg("--sparse=always")
                .arg(&card.image)
                .arg(&plain),
        );
        let root = card.mount_root();
        let fw = card.mount_firmware();
        let env = Env::new();
        let args = commands(Path::new("/unused")).swap_remove(1); // update-firmware
        let old = without_backups(&plain);
        let timed = Instant::now();
        pifw_run(&Env::new(), &args, &plain);
        let whole = timed.elapsed();
        let new = without_backups(&plain);

        let mut child = pifw()
            .args(&args)
            .args(["--yes", s(&card.dev)])
            .env("PIFW_CONFIG", &env.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pifw");
        let start = Instant::now();
        if let Some(line) = when.strip_prefix("batch") {
            use std::io::BufRead;
            let out = std::io::BufReader::new(child.stderr.take().expect("stderr"));
            let mut lines = out.lines();
            let found = lines.any(|l| l.is_ok_and(|l| l.starts_with(&format!("batch{line}"))));
            assert!(found, "pifw never printed `{when}`");
            // Keep reading, so pifw never blocks on a full pipe before the kill.
            std::thread::spawn(move || for _ in lines {});
        } else {
            while mounted_at(&fw).is_some() && start.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(2));
            }
            if let Some(rest) = whole.mul_f64(0.3).checked_sub(start.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        let _ = child.kill();
        let status = child.wait().expect("wait");
        eprintln!(
            "killed at {when} ({} ms; an uncut run takes {} ms): {status}",
            start.elapsed().as_millis(),
            whole.as_millis()
        );
        assert_eq!(mounted_at(&fw), None, "SIGKILL: nothing mounts it back");
        assert_eq!(mounted_at(&root).map(|m| m.0).as_deref(), Some("ext4"));

        pifw_run(&env, &["recover".to_string()], &card.dev);
        // update-firmware runs in batches (the boot set alone, last), each one transaction:
        // every file is its old or its new version, and the boot set switched whole or not.
        let after = without_backups(&card.dev);
        for (path, sha) in &after {
            assert!(
                old.get(path) == Some(sha) || new.get(path) == Some(sha),
                "killed at {when}: {path} is neither old nor new"
            );
        }
        for path in old.keys().chain(new.keys()) {
            let absent_in_one = !old.contains_key(path) || !new.contains_key(path);
            assert!(
                after.contains_key(path) || absent_in_one,
                "killed at {when}: {path} is missing"
            );
        }
        let boot = ["bootcode.bin", "start.elf", "fixup.dat"];
        let from =
            |set: &BTreeMap<String, String>| boot.iter().all(|f| after.get(*f) == set.get(*f));
        assert!(
            from(&old) || from(&new),
            "killed at {when}: the boot set is mixed"
        );
        eprintln!(
            "  after recover: {} of {} changed files new; boot set {}",
            after
                .iter()
                .filter(|(p, h)| new.get(*p) == Some(h) && old.get(*p) != Some(h))
                .count(),
            new.iter().filter(|(p, h)| old.get(*p) != Some(h)).count(),
            if from(&new) { "new" } else { "old" }
        );
        let mut card = card;
        card.detach();
        assert_fat_clean(&card.image);
    }
}

/// The remount of a kernel file system, through the library: this kernel has no vfat, so the
/// card's ext4 root plays a kernel-mounted firmware partition (the preflight is given its
/// range). It comes back at the same place with the same type, source and options, and a
/// file held open on it is refused first, naming this very process.
#[test]
fn a_kernel_mount_comes_back_with_the_same_options() {
    need_root!();
    use pifw::disk::lock::{Preflight, WriteTarget};
    const ROOT: u64 = 38 * 1024 * 1024;
    const ROOT_LEN: u64 = 90 * 1024 * 1024;
    let card = Card::attach("nixos.img", 0);
    let mp = card.path("kernel");
    run_ok(
        cmd("mount")
            .args(["-o", "noatime,nodev,nosuid,commit=17,errors=remount-ro"])
            .arg(card.part(2))
            .arg(&mp),
    );
    let line = || {
        let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        pifw::disk::mounts::parse_mountinfo(&text)
            .expect("mountinfo")
            .into_iter()
            .rfind(|m| m.mount_point == mp)
            .map(|m| (m.fstype, m.source, m.options, m.super_options, m.root))
    };
    let before = line().expect("mounted");
    assert!(
        before.2.contains("noatime") && before.3.contains("commit=17"),
        "{before:?}"
    );
    let range = Some((ROOT, ROOT + ROOT_LEN));

    std::fs::write(mp.join("held"), b"x").expect("a file on it");
    let held = File::open(mp.join("held")).expect("open");
    let err = Preflight::check(&card.dev, range, false).expect_err("a file is open on it");
    assert!(
        err.to_string().contains(&format!(
            "pid {} ({}) has {} open",
            std::process::id(),
            std::fs::read_to_string("/proc/self/comm")
                .expect("comm")
                .trim(),
            mp.join("held").display()
        )),
        "{err}"
    );
    drop(held);

    let pre = Preflight::check(&card.dev, range, false).expect("preflight");
    assert_eq!(
        pre.notes(),
        vec![format!(
            "unmounts {} ({}, ext4) for the change and mounts it back afterwards",
            mp.display(),
            card.part(2).display()
        )]
    );
    let wt = WriteTarget::open_prepared(pre).expect("open");
    assert_eq!(line(), None, "unmounted while pifw holds the card");
    assert_eq!(wt.unmounted(), vec![mp.clone()]);
    wt.finish().expect("mounted back");
    assert_eq!(
        line(),
        Some(before.clone()),
        "same type, source and options"
    );

    // Dropped without finish(), as on an error path: mounted back all the same.
    let wt = WriteTarget::open_prepared(Preflight::check(&card.dev, range, false).expect("again"))
        .expect("open");
    assert_eq!(line(), None);
    drop(wt);
    assert_eq!(line(), Some(before), "mounted back on drop");
}

/// Another partition held by something the mount table does not show (a swap partition, or
/// here this test holding it with O_EXCL, as the kernel does for swap): the whole disk cannot
/// be claimed, so pifw claims the firmware partition alone and the change goes through.
#[test]
fn another_partition_held_exclusively_is_no_obstacle() {
    need_root!();
    use std::os::unix::fs::OpenOptionsExt;
    let card = Card::attach("nixos.img", 0);
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_EXCL.bits())
        .open(card.part(2))
        .expect("claiming partition 2");
    let env = Env::new();
    let uboot = deb(&format!("u-boot-rpi_{UBOOT_NEW}_arm64.deb"));
    env.pifw_ok_all(&["update-uboot", "--from", s(&uboot), "--yes", s(&card.dev)]);
    drop(holder);
    let mut card = card;
    card.detach();
    assert_eq!(
        mcopy_out(&card.image, FAT, "u-boot-rpi3.bin"),
        std::fs::read(uboot_rpi3(UBOOT_NEW)).expect("the Debian blob")
    );
    assert_fat_clean(&card.image);
}
