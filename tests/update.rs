//! The mutating commands end to end: `update-uboot`, `update-firmware`, `rollback`, `recover`,
//! and every refusal, driven through the built binary on copies of the fixture images.
//!
//! pifw never judges itself here: files are read back with mtools and compared with the real
//! Debian blobs, the FAT with `fsck.fat -n`, the root with `e2fsck -fn`, and the updated U-Boot
//! is booted in QEMU (`-M raspi3b`) on the updated card, where its own `version`, `part list`,
//! `fatload` + `crc32` and `ext4ls` must agree. Refusals are judged by the image's sha256 before
//! and after.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const NIXOS_FAT: u64 = 8 * 1024 * 1024;
const NIXOS_FAT_LEN: u64 = 30 * 1024 * 1024;
const NIXOS_ROOT: u64 = 38 * 1024 * 1024;
const RPIOS_FAT: u64 = 4 * 1024 * 1024;
const RPIOS_FAT_LEN: u64 = 256 * 1024 * 1024;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
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

fn uboot_deb(version: &str) -> PathBuf {
    deb(&format!("u-boot-rpi_{version}_arm64.deb"))
}

fn firmware_deb(version: &str) -> PathBuf {
    deb(&format!("raspi-firmware_{version}_all.deb"))
}

fn image_sha(image: &Path) -> String {
    sha256sum(&std::fs::read(image).expect("reading the image"))
}

/// `fsck.fat -n` on the partition: clean, not even lost clusters.
fn assert_fsck_clean(image: &Path, offset: u64, len: u64) {
    let (ok, text) = fsck_fat(image, offset, len);
    assert!(ok, "fsck.fat -n failed:\n{text}");
    for bad in [
        "differ",
        "lost",
        "Dirty",
        "dirty",
        "Free cluster summary wrong",
    ] {
        assert!(!text.contains(bad), "fsck.fat -n complains:\n{text}");
    }
}

fn crc32(data: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(data)
}

/// The Debian blob a firmware file name comes from.
fn firmware_blob(version: &str, name: &str) -> Vec<u8> {
    let p = blob(
        "raspi-firmware",
        version,
        &format!("usr/lib/raspi-firmware/{name}"),
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

#[test]
fn update_uboot_boots_in_qemu_and_rolls_back_byte_exact() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let before = card_files(&img, NIXOS_FAT);
    let new_uboot = std::fs::read(uboot_rpi3(UBOOT_NEW)).expect("new u-boot");

    let out = env.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&uboot_deb(UBOOT_NEW)),
        "--yes",
        s(&img),
    ]);
    assert!(out.contains("2025.01"), "{out}");
    // The backup's copy went onto the card in its own transaction first; U-Boot then
    // switched in one directory-sector write.
    assert!(
        out.contains("All files switched from old to new in one sector write."),
        "{out}"
    );
    let after = card_files(&img, NIXOS_FAT);
    assert_eq!(after["u-boot-rpi3.bin"], sha256sum(&new_uboot));
    for (path, sha) in &before {
        if path != "u-boot-rpi3.bin" {
            assert_eq!(&after[path], sha, "{path} changed");
        }
    }
    // The only other new file is the backup's copy on the card (and the card's identity,
    // which card_files leaves out: checked below).
    let extra: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(extra.len(), 1, "{extra:?}");
    assert!(extra[0].starts_with("pifw-backup-"), "{extra:?}");
    assert_fsck_clean(&img, NIXOS_FAT, NIXOS_FAT_LEN);
    // The fixture card had no identity; the update gave it one, and its backup records it.
    assert_eq!(card_id_on(&fixture("nixos.img"), NIXOS_FAT), None);
    let card_id = card_id_on(&img, NIXOS_FAT).expect("the card's identity after the update");
    let zip = std::fs::read_dir(env.backups())
        .expect("backups")
        .next()
        .expect("one backup")
        .expect("entry")
        .path();
    let manifest = run_ok(cmd("unzip").arg("-p").arg(&zip).arg("pifw-backup.json"));
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest");
    assert_eq!(manifest["card"]["card_id"].as_str(), Some(card_id.as_str()));
    let (root_ok, root_text) = e2fsck(&img, NIXOS_ROOT);
    assert!(root_ok, "{root_text}");

    // The new U-Boot, as it is on the card, boots on the card and reads it.
    let dir = tempfile::tempdir().expect("tempdir");
    let card_uboot = dir.path().join("u-boot-rpi3.bin");
    std::fs::write(&card_uboot, mcopy_out(&img, NIXOS_FAT, "u-boot-rpi3.bin")).expect("write");
    let outs = qemu_uboot(
        &img,
        &card_uboot,
        Some(&pi3_dtb()),
        &[
            "version",
            "part list mmc 0",
            "fatload mmc 0:1 ${kernel_addr_r} start.elf",
            "crc32 ${kernel_addr_r} ${filesize}",
            "ext4ls mmc 0:2 /boot/extlinux",
        ],
    );
    assert!(outs[0].contains("U-Boot 2025.01"), "{}", outs[0]);
    let parts = parse_uboot_part_list(&outs[1]);
    assert_eq!(parts.len(), 2, "{}", outs[1]);
    assert_eq!((parts[0].1, parts[0].3), (16384, 0x0b), "{}", outs[1]);
    let start = mcopy_out(&img, NIXOS_FAT, "start.elf");
    assert!(
        outs[3].contains(&format!("{:08x}", crc32(&start))),
        "crc32 of start.elf: {}",
        outs[3]
    );
    assert!(outs[4].contains("extlinux.conf"), "{}", outs[4]);

    // Rollback: exactly the old file set, byte for byte; the card keeps its identity.
    env.pifw_ok(&["rollback", "--yes", s(&img)]);
    assert_eq!(card_files(&img, NIXOS_FAT), before);
    assert_eq!(card_id_on(&img, NIXOS_FAT), Some(card_id));
    assert_fsck_clean(&img, NIXOS_FAT, NIXOS_FAT_LEN);
}

#[test]
fn update_firmware_on_nixos_switches_every_blob_and_rolls_back() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let before = card_files(&img, NIXOS_FAT);
    let out = env.pifw_ok(&[
        "update-firmware",
        "--from",
        s(&firmware_deb(FW_NEW)),
        "--yes",
        "--json",
        s(&img),
    ]);
    assert!(out.contains("1.20240424"), "{out}");
    // 22 MiB of blobs beside their old copies do not fit in 7.6 MiB: batches, and the boot
    // set (bootcode.bin, start.elf, fixup.dat) alone in the last, switched in one write.
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let last: Vec<&str> = v["batches"]
        .as_array()
        .and_then(|b| b.last())
        .and_then(|b| b["items"].as_array())
        .expect("batches")
        .iter()
        .filter_map(|i| i["path"].as_str())
        .collect();
    assert_eq!(last, ["bootcode.bin", "fixup.dat", "start.elf"], "{v:#}");
    let writes = v["result"]["switch_writes"]
        .as_array()
        .expect("switch_writes");
    assert_eq!(writes.last().and_then(|w| w.as_u64()), Some(1), "{v:#}");
    let after = card_files(&img, NIXOS_FAT);
    let mut firmware = 0;
    for (path, sha) in &before {
        let is_fw = path == "bootcode.bin"
            || (path.starts_with("start") && path.ends_with(".elf"))
            || (path.starts_with("fixup") && path.ends_with(".dat"));
        if is_fw {
            firmware += 1;
            assert_eq!(
                after[path],
                sha256sum(&firmware_blob(FW_NEW, path)),
                "{path} is not the 1.20240424 blob"
            );
        } else {
            assert_eq!(&after[path], sha, "{path} is not pifw's to change");
        }
    }
    assert_eq!(firmware, 17);
    assert_fsck_clean(&img, NIXOS_FAT, NIXOS_FAT_LEN);
    let status = pifw_status_json(&img);
    let versions = status["versions"].to_string();
    assert!(versions.contains("1.20240424"), "{versions}");
    assert!(!versions.contains("1.20220830"), "{versions}");

    // The old U-Boot boots the new firmware's card and reads the new start.elf intact.
    let outs = qemu_uboot(
        &img,
        &uboot_rpi3(UBOOT_OLD),
        None,
        &[
            "fatload mmc 0:1 ${kernel_addr_r} start.elf",
            "crc32 ${kernel_addr_r} ${filesize}",
        ],
    );
    let start = firmware_blob(FW_NEW, "start.elf");
    assert!(
        outs[1].contains(&format!("{:08x}", crc32(&start))),
        "{}",
        outs[1]
    );

    env.pifw_ok(&["rollback", "--yes", s(&img)]);
    assert_eq!(card_files(&img, NIXOS_FAT), before);
    assert_fsck_clean(&img, NIXOS_FAT, NIXOS_FAT_LEN);
}

#[test]
fn downgrade_on_fat32_needs_the_flag_then_rolls_back() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("rpios.img");
    let before = card_files(&img, RPIOS_FAT);
    let sha = image_sha(&img);
    let old = firmware_deb(FW_OLD);
    let args = [
        "update-firmware",
        "--version",
        "1.20220830",
        "--from",
        s(&old),
        "--yes",
        s(&img),
    ];
    let out = env.pifw(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-downgrade"), "{err}");
    assert_eq!(
        image_sha(&img),
        sha,
        "a refused downgrade wrote to the image"
    );

    let mut with_flag = args.to_vec();
    with_flag.insert(1, "--allow-downgrade");
    env.pifw_ok(&with_flag);
    let after = card_files(&img, RPIOS_FAT);
    assert_eq!(
        after["start.elf"],
        sha256sum(&firmware_blob(FW_OLD, "start.elf"))
    );
    assert_eq!(after["cmdline.txt"], before["cmdline.txt"]);
    assert_eq!(after["overlays/readme"], before["overlays/readme"]);
    assert_fsck_clean(&img, RPIOS_FAT, RPIOS_FAT_LEN);

    let listing = env.pifw_ok(&["backups", "--json", s(&img)]);
    let v: serde_json::Value = serde_json::from_str(&listing).expect("backups --json");
    let id = v[0]["id"].as_str().expect("backup id").to_string();
    env.pifw_ok(&["rollback", "--to", &id, "--yes", s(&img)]);
    assert_eq!(card_files(&img, RPIOS_FAT), before);
    assert_fsck_clean(&img, RPIOS_FAT, RPIOS_FAT_LEN);
}

/// Runs `args` (with the image last) and checks that it failed and left the image unchanged.
fn refused(env: &Env, img: &Path, args: &[&str], expect: &str) -> String {
    let sha = image_sha(img);
    let mut all = args.to_vec();
    all.push(s(img));
    let out = env.pifw(&all);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "pifw {all:?} succeeded:\n{err}");
    assert!(
        err.contains(expect),
        "pifw {all:?}: expected {expect:?} in:\n{err}"
    );
    assert!(
        err.contains("nothing was written") || err.contains("Nothing was written"),
        "{err}"
    );
    assert_eq!(image_sha(img), sha, "pifw {all:?} changed the image");
    err
}

#[test]
fn refusals_leave_the_image_unchanged() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let new = uboot_deb(UBOOT_NEW);

    // No terminal and no --yes.
    let out = {
        let sha = image_sha(&img);
        let out = env.pifw(&["update-uboot", "--from", s(&new), s(&img)]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(image_sha(&img), sha);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(out.contains("--yes"), "{out}");

    // A file that is no U-Boot at all, even with --allow-unpinned.
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("u-boot.bin");
    std::fs::write(&junk, vec![0x5a; 300_000]).expect("write");
    refused(
        &env,
        &img,
        &[
            "update-uboot",
            "--from",
            s(&junk),
            "--allow-unpinned",
            "--yes",
        ],
        "holds no U-Boot",
    );
    // A U-Boot no manifest pins (a user's own build) needs --allow-unpinned.
    let mut own = std::fs::read(uboot_rpi3(UBOOT_NEW)).expect("u-boot");
    own.extend_from_slice(b"local build");
    let own_path = dir.path().join("own-u-boot.bin");
    std::fs::write(&own_path, &own).expect("write");
    refused(
        &env,
        &img,
        &["update-uboot", "--from", s(&own_path), "--yes"],
        "--allow-unpinned",
    );

    // A damaged card: a looping cluster chain.
    let (_tmp2, looped) = fixture_copy("fat-loop.img");
    refused(
        &env,
        &looped,
        &["update-uboot", "--from", s(&new), "--yes"],
        "refusing to change",
    );

    // Too little room: fill the FAT until the new U-Boot cannot be written beside the old.
    let free = pifw_status_json(&img)["firmware"]["free_bytes"]
        .as_u64()
        .expect("free_bytes");
    let filler = dir.path().join("filler.bin");
    std::fs::write(&filler, vec![0u8; (free - 300 * 1024) as usize]).expect("write");
    run_ok(
        cmd("mcopy")
            .arg("-i")
            .arg(format!("{}@@{NIXOS_FAT}", img.display()))
            .arg(&filler)
            .arg("::/filler.bin"),
    );
    let err = refused(
        &env,
        &img,
        &["update-uboot", "--from", s(&new), "--yes"],
        "not enough free space",
    );
    assert!(err.contains("free"), "{err}");
}

#[test]
fn an_unpinned_uboot_is_installed_only_when_allowed() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut own = std::fs::read(uboot_rpi3(UBOOT_NEW)).expect("u-boot");
    own.extend_from_slice(b"local build");
    let own_path = dir.path().join("u-boot.bin");
    std::fs::write(&own_path, &own).expect("write");
    let out = env.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&own_path),
        "--allow-unpinned",
        "--yes",
        s(&img),
    ]);
    assert!(out.contains("unpinned"), "{out}");
    assert_eq!(
        sha256sum(&mcopy_out(&img, NIXOS_FAT, "u-boot-rpi3.bin")),
        sha256sum(&own)
    );
    assert_fsck_clean(&img, NIXOS_FAT, NIXOS_FAT_LEN);
}

#[test]
fn dry_run_and_identical_content_write_nothing() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let sha = image_sha(&img);
    let out = env.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&uboot_deb(UBOOT_NEW)),
        "--dry-run",
        s(&img),
    ]);
    assert!(out.contains("Dry run"), "{out}");
    assert!(out.contains("u-boot-rpi3.bin"), "{out}");
    assert_eq!(image_sha(&img), sha);

    let out = env.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&uboot_deb(UBOOT_OLD)),
        "--yes",
        "--json",
        s(&img),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("plan json");
    assert_eq!(v["noop"], true, "{out}");
    assert_eq!(image_sha(&img), sha);
    assert!(!env.backups().exists() || std::fs::read_dir(env.backups()).unwrap().count() == 0);
}

#[test]
fn rollback_refuses_a_card_changed_since_unless_forced() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let before = card_files(&img, NIXOS_FAT);
    env.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&uboot_deb(UBOOT_NEW)),
        "--yes",
        s(&img),
    ]);
    // Someone replaces u-boot-rpi3.bin behind pifw's back.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("other.bin");
    std::fs::write(&other, b"not u-boot").expect("write");
    run_ok(
        cmd("mcopy")
            .arg("-o")
            .arg("-i")
            .arg(format!("{}@@{NIXOS_FAT}", img.display()))
            .arg(&other)
            .arg("::/u-boot-rpi3.bin"),
    );
    // The card no longer holds what the change left: the backup is not taken for this
    // card's without being named, and once named, wants --force.
    refused(&env, &img, &["rollback", "--yes"], "--to ID");
    let id = std::fs::read_dir(env.backups())
        .expect("backups")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .find_map(|n| {
            n.strip_prefix("pifw-")
                .and_then(|r| r.strip_suffix(".zip"))
                .map(str::to_string)
        })
        .expect("the update's backup");
    refused(&env, &img, &["rollback", "--to", &id, "--yes"], "--force");
    env.pifw_ok(&["rollback", "--to", &id, "--force", "--yes", s(&img)]);
    assert_eq!(card_files(&img, NIXOS_FAT), before);
}

#[test]
fn rollback_from_another_machine_uses_the_backup_on_the_card() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let before = card_files(&img, NIXOS_FAT);
    env.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&uboot_deb(UBOOT_NEW)),
        "--yes",
        s(&img),
    ]);
    // A second machine: its own, empty backup directory.
    let other = Env::new();
    let listing = other.pifw_ok(&["backups", s(&img)]);
    assert!(listing.contains("card"), "{listing}");
    other.pifw_ok(&["rollback", "--yes", s(&img)]);
    assert_eq!(card_files(&img, NIXOS_FAT), before);
    assert_fsck_clean(&img, NIXOS_FAT, NIXOS_FAT_LEN);
}

#[test]
fn an_interrupted_change_is_reported_and_recovered_through_the_cli() {
    use pifw::txn::{self, FaultyDevice, FileChange, NewContent, Slice};
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let before = card_files(&img, NIXOS_FAT);
    let new = uboot_rpi3(UBOOT_NEW);
    let bytes = std::fs::read(&new).expect("new u-boot");
    let changes = vec![FileChange {
        path: "u-boot-rpi3.bin".into(),
        content: NewContent::Path(new.clone()),
        sha256: sha256sum(&bytes),
        size: bytes.len() as u64,
    }];
    let apply = |limit: Option<u64>| -> u64 {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .expect("open image");
        let mut dev = FaultyDevice::new(file, limit);
        {
            let mut part =
                Slice::new(&mut dev, NIXOS_FAT, NIXOS_FAT + NIXOS_FAT_LEN).expect("slice");
            let plan = txn::plan(&mut part, &changes).expect("plan");
            let _ = txn::apply(&mut part, &plan, &changes, &Default::default());
        }
        dev.writes()
    };
    // Count the writes of a full run on a scratch copy, then cut the real one half-way.
    let total = {
        let (_t, scratch) = fixture_copy("nixos.img");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&scratch)
            .expect("open");
        let mut dev = FaultyDevice::new(file, None);
        {
            let mut part =
                Slice::new(&mut dev, NIXOS_FAT, NIXOS_FAT + NIXOS_FAT_LEN).expect("slice");
            let plan = txn::plan(&mut part, &changes).expect("plan");
            txn::apply(&mut part, &plan, &changes, &Default::default()).expect("apply");
        }
        dev.writes()
    };
    assert!(total > 4, "{total} writes");
    apply(Some(total / 2));

    let out = env.pifw(&["status", "--json", s(&img)]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    let codes: Vec<&str> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert!(codes.contains(&"interrupted-change"), "{codes:?}");

    let dry = env.pifw_ok(&["recover", "--dry-run", s(&img)]);
    assert!(dry.contains("Interrupted change"), "{dry}");
    env.pifw_ok(&["recover", "--yes", s(&img)]);
    assert_fsck_clean(&img, NIXOS_FAT, NIXOS_FAT_LEN);
    let after = card_files(&img, NIXOS_FAT);
    let old_or_new = after == before || {
        let mut want = before.clone();
        want.insert("u-boot-rpi3.bin".into(), sha256sum(&bytes));
        after == want
    };
    assert!(old_or_new, "recover left a mixed state: {after:?}");
    let out = env.pifw_ok(&["recover", s(&img)]);
    assert!(out.contains("No interrupted change"), "{out}");
}

/// The same update and rollback on a block device: a loop device over a copy of the image
/// (pifw opens it O_EXCL and syncs it like a card in a reader). Judged on the backing file
/// after the device is detached.
#[test]
fn update_and_rollback_on_a_block_device() {
    struct Loop(PathBuf);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = cmd("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let before = card_files(&img, NIXOS_FAT);
    let attach = run(cmd("losetup").args(["-f", "--show"]).arg(&img));
    if !attach.status.success() {
        eprintln!(
            "skipped: losetup cannot attach a loop device here: {}",
            String::from_utf8_lossy(&attach.stderr).trim()
        );
        return;
    }
    let dev = Loop(PathBuf::from(
        String::from_utf8_lossy(&attach.stdout).trim(),
    ));
    let out = env.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&uboot_deb(UBOOT_NEW)),
        "--yes",
        s(&dev.0),
    ]);
    assert!(out.contains("2025.01"), "{out}");
    let status = env.pifw_ok(&["status", "--json", s(&dev.0)]);
    let v: serde_json::Value = serde_json::from_str(&status).expect("status json");
    assert_eq!(v["target"]["kind"], "block-device", "{v:#}");
    assert!(v["versions"].to_string().contains("2025.01"));
    // The device's bytes are the file's: mtools on the backing file sees the new U-Boot.
    assert_eq!(
        card_files(&img, NIXOS_FAT)["u-boot-rpi3.bin"],
        sha256sum(&std::fs::read(uboot_rpi3(UBOOT_NEW)).expect("u-boot"))
    );
    env.pifw_ok(&["rollback", "--yes", s(&dev.0)]);
    drop(dev);
    assert_eq!(card_files(&img, NIXOS_FAT), before);
    assert_fsck_clean(&img, NIXOS_FAT, NIXOS_FAT_LEN);
}

/// Retention: nothing is deleted by an update; `backups --prune` deletes beyond
/// keep_backups, oldest first, and says which.
#[test]
fn backups_are_pruned_only_when_asked() {
    let env = Env::new();
    std::fs::write(
        &env.config,
        format!(
            "cache_dir = \"{}\"\nbackup_dir = \"{}\"\nkeep_backups = 1\nbackups_on_card = false\n",
            env.dir.path().join("cache").display(),
            env.backups().display()
        ),
    )
    .expect("config");
    let (_tmp, img) = fixture_copy("nixos.img");
    env.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&uboot_deb(UBOOT_NEW)),
        "--yes",
        s(&img),
    ]);
    env.pifw_ok(&["rollback", "--yes", s(&img)]);
    let count = || std::fs::read_dir(env.backups()).expect("backups").count();
    assert_eq!(
        count(),
        2,
        "an update and its rollback: two backups, none deleted"
    );
    let out = env.pifw(&["backups", "--prune", s(&img)]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("deleted"), "{err}");
    assert_eq!(count(), 1);
    // The one kept is the newest: the rollback's, which undoes the rollback.
    let listing = env.pifw_ok(&["backups", "--json", s(&img)]);
    let v: serde_json::Value = serde_json::from_str(&listing).expect("json");
    assert!(v[0]["command"].to_string().contains("rollback"), "{v:#}");
}
