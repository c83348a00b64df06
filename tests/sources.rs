//! Sources users have: whole disk images (`.img`, `.img.zst`, `.img.xz`, `.img.gz`) and
//! Debian packages repacked with zstd, driven through the built binary.
//!
//! Source images are the fixtures of `scripts/mkimages` (sfdisk, mkfs.vfat, mcopy), changed
//! where a test needs it with `mcopy -o`, and compressed by the real `zstd`, `xz` and `gzip`
//! command-line tools. pifw's results are read back with mtools and compared with the Debian
//! blobs, the FAT is checked by `fsck.fat -n`, and the U-Boot taken from an image is booted
//! in QEMU on the updated card.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const NIXOS_FAT: u64 = 8 * 1024 * 1024;
const NIXOS_FAT_LEN: u64 = 30 * 1024 * 1024;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `fsck.fat -n` on the partition: clean, not even lost clusters.
fn assert_fsck_clean(image: &Path, offset: u64, len: u64) {
    let (ok, text) = fsck_fat(image, offset, len);
    assert!(ok, "fsck.fat -n failed:\n{text}");
    for bad in ["differ", "lost", "Dirty", "dirty"] {
        assert!(!text.contains(bad), "fsck.fat -n complains:\n{text}");
    }
}

/// `image` compressed by the named CLI (`zstd`, `xz`, `gzip`) into `dir`, the original kept.
fn compress(tool: &str, image: &Path, dir: &Path) -> PathBuf {
    let ext = match tool {
        "zstd" => "zst",
        "xz" => "xz",
        "gzip" => "gz",
        other => panic!("no extension for {other}"),
    };
    let name = image.file_name().expect("name").to_string_lossy();
    let out = dir.join(format!("{name}.{ext}"));
    let mut c = cmd(tool);
    match tool {
        "zstd" => c.args(["-q", "-3", "-T2", "-o"]).arg(&out).arg(image),
        _ => c
            .args(["-c", "-1"])
            .arg(image)
            .stdout(std::fs::File::create(&out).expect("creating the compressed image")),
    };
    run_ok(&mut c);
    out
}

/// Replaces (or adds) `dest` on the FAT at `offset` of `image` with `src`, by mtools.
fn mcopy_in(image: &Path, offset: u64, src: &Path, dest: &str) {
    run_ok(
        cmd("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-o")
            .arg("-i")
            .arg(format!("{}@@{offset}", image.display()))
            .arg(src)
            .arg(format!("::/{dest}")),
    );
}

fn firmware_blob(version: &str, name: &str) -> Vec<u8> {
    let p = blob(
        "raspi-firmware",
        version,
        &format!("usr/lib/raspi-firmware/{name}"),
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn uboot_build(version: &str, build: &str) -> PathBuf {
    blob(
        "u-boot-rpi",
        version,
        &format!("usr/lib/u-boot/{build}/u-boot.bin"),
    )
}

fn cache_tmp_is_empty(env: &Env) {
    let tmp = env.dir.path().join("cache/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.map(|e| e.expect("entry").file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
}

#[test]
fn update_firmware_from_a_zstd_sd_image_installs_its_blobs() {
    let env = Env::new();
    let (_tmp, card) = fixture_copy("nixos.img");
    let work = tempfile::tempdir().expect("work dir");
    // nixos-full carries firmware 1.20240424; the card carries 1.20220830.
    let source = compress("zstd", &fixture("nixos-full.img"), work.path());
    let before = card_files(&card, NIXOS_FAT);

    let out = env.pifw_ok(&["update-firmware", "--from", s(&source), "--yes", s(&card)]);
    assert!(out.contains("1.20240424"), "{out}");
    let after = card_files(&card, NIXOS_FAT);
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
    assert_fsck_clean(&card, NIXOS_FAT, NIXOS_FAT_LEN);
    // The spooled firmware partition is gone with the command.
    cache_tmp_is_empty(&env);
}

/// A NixOS image whose firmware partition carries U-Boot 2025.01 (rpi_3 and rpi_4 builds),
/// as a newer sd-image does: the mkimages fixture with both files replaced by mtools.
fn image_with_new_uboot(dir: &Path) -> PathBuf {
    let image = dir.join("nixos-sd-image-newer.img");
    std::fs::copy(fixture("nixos.img"), &image).expect("copying the fixture");
    mcopy_in(
        &image,
        NIXOS_FAT,
        &uboot_build(UBOOT_NEW, "rpi_3"),
        "u-boot-rpi3.bin",
    );
    mcopy_in(
        &image,
        NIXOS_FAT,
        &uboot_build(UBOOT_NEW, "rpi_4"),
        "u-boot-rpi4.bin",
    );
    image
}

#[test]
fn update_uboot_from_an_xz_image_installs_its_uboot_and_boots() {
    let env = Env::new();
    let (_tmp, card) = fixture_copy("nixos.img");
    let work = tempfile::tempdir().expect("work dir");
    let raw = image_with_new_uboot(work.path());
    let source = compress("xz", &raw, work.path());
    std::fs::remove_file(&raw).expect("only the compressed image remains");

    let out = env.pifw_ok(&["update-uboot", "--from", s(&source), "--yes", s(&card)]);
    assert!(out.contains("2025.01"), "{out}");
    let rpi3 = std::fs::read(uboot_build(UBOOT_NEW, "rpi_3")).expect("rpi_3");
    assert_eq!(
        sha256sum(&mcopy_out(&card, NIXOS_FAT, "u-boot-rpi3.bin")),
        sha256sum(&rpi3)
    );
    // The fixture's Pi 4 chain is incomplete (no armstub8-gic.bin: Debian does not ship it),
    // so update-uboot serves the Pi 3 chain only, as with any other source.
    let old_rpi4 = std::fs::read(uboot_build(UBOOT_OLD, "rpi_4")).expect("rpi_4");
    assert_eq!(
        sha256sum(&mcopy_out(&card, NIXOS_FAT, "u-boot-rpi4.bin")),
        sha256sum(&old_rpi4)
    );
    assert_fsck_clean(&card, NIXOS_FAT, NIXOS_FAT_LEN);
    cache_tmp_is_empty(&env);

    // The U-Boot now on the card boots on the card.
    let card_uboot = work.path().join("u-boot-rpi3.bin");
    std::fs::write(&card_uboot, mcopy_out(&card, NIXOS_FAT, "u-boot-rpi3.bin")).expect("write");
    let outs = qemu_uboot(
        &card,
        &card_uboot,
        Some(&pi3_dtb()),
        &["version", "fatls mmc 0:1"],
    );
    assert!(outs[0].contains("U-Boot 2025.01"), "{}", outs[0]);
    assert!(outs[1].contains("u-boot-rpi3.bin"), "{}", outs[1]);
}

#[test]
fn plain_and_gzip_images_are_sources_too() {
    let env = Env::new();
    let (_tmp, card) = fixture_copy("nixos.img");
    let work = tempfile::tempdir().expect("work dir");
    let raw = image_with_new_uboot(work.path());
    let gz = compress("gzip", &raw, work.path());
    let card_sha = sha256sum(&std::fs::read(&card).expect("card"));
    for source in [&raw, &gz] {
        let out = env.pifw_ok(&["update-uboot", "--from", s(source), "--dry-run", s(&card)]);
        assert!(out.contains("2025.01"), "{}: {out}", source.display());
        assert!(out.contains("u-boot-rpi3.bin"), "{out}");
    }
    assert_eq!(sha256sum(&std::fs::read(&card).expect("card")), card_sha);
    cache_tmp_is_empty(&env);
}

#[test]
fn an_image_cut_short_inside_its_firmware_partition_is_refused() {
    let env = Env::new();
    let (_tmp, card) = fixture_copy("nixos.img");
    let work = tempfile::tempdir().expect("work dir");
    let raw = image_with_new_uboot(work.path());
    let zst = compress("zstd", &raw, work.path());
    // The decompressed stream must end inside the partition (8 MiB + 30 MiB): cut the
    // compressed file, whose size says nothing useful about where, and let zstd confirm.
    let bytes = std::fs::read(&zst).expect("zst");
    let cut = work.path().join("cut.img.zst");
    let mut keep = bytes.len() / 2;
    loop {
        std::fs::write(&cut, &bytes[..keep]).expect("write");
        let out = run(cmd("sh")
            .arg("-c")
            .arg(format!("zstd -dc {} 2>/dev/null | wc -c", cut.display())));
        let n: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("wc");
        if n > NIXOS_FAT && n < NIXOS_FAT + NIXOS_FAT_LEN {
            break;
        }
        assert!(n >= NIXOS_FAT, "cut too early: {n}");
        keep = keep * 3 / 4;
    }
    let card_sha = sha256sum(&std::fs::read(&card).expect("card"));
    let out = env.pifw(&["update-uboot", "--from", s(&cut), "--yes", s(&card)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("decompressing") || err.contains("ends at byte"),
        "{err}"
    );
    assert!(err.contains("firmware partition"), "{err}");
    assert_eq!(sha256sum(&std::fs::read(&card).expect("card")), card_sha);
    cache_tmp_is_empty(&env);
}

#[test]
fn update_uboot_from_a_zstd_repacked_deb_installs_like_the_xz_one() {
    let work = tempfile::tempdir().expect("work dir");
    let xz_deb = blob_cache()
        .join("debs")
        .join(format!("u-boot-rpi_{UBOOT_NEW}_arm64.deb"));
    let tree = work.path().join("tree");
    run_ok(cmd("dpkg-deb").arg("-R").arg(&xz_deb).arg(&tree));
    let zst_deb = work.path().join("u-boot-rpi_zstd_arm64.deb");
    run_ok(
        cmd("dpkg-deb")
            .arg("--root-owner-group")
            .arg("-Zzstd")
            .arg("-b")
            .arg(&tree)
            .arg(&zst_deb),
    );
    let bytes = std::fs::read(&zst_deb).expect("deb");
    assert!(
        bytes.windows(12).any(|w| w == b"data.tar.zst"),
        "not a zstd deb"
    );

    let mut results = Vec::new();
    for deb in [&xz_deb, &zst_deb] {
        let env = Env::new();
        let (_tmp, card) = fixture_copy("nixos.img");
        let out = env.pifw_ok(&["update-uboot", "--from", s(deb), "--yes", s(&card)]);
        assert!(out.contains("2025.01"), "{out}");
        assert_fsck_clean(&card, NIXOS_FAT, NIXOS_FAT_LEN);
        let mut files = card_files(&card, NIXOS_FAT);
        files.retain(|k, _| !k.starts_with("pifw-backup-"));
        results.push(files);
    }
    assert_eq!(results[0], results[1], "the zstd deb installs other bytes");
    let rpi3 = std::fs::read(uboot_build(UBOOT_NEW, "rpi_3")).expect("rpi_3");
    assert_eq!(results[1]["u-boot-rpi3.bin"], sha256sum(&rpi3));
}

// ---------------------------------------------------------------------------------------
// Known issues. The cards are the nixos.img fixture with one file replaced by mtools. No
// copy of an affected U-Boot or firmware build was available here, so the files are real
// Debian builds whose self-description is patched in the test: the U-Boot banner
// `U-Boot 2023.01` becomes `U-Boot 2024.07` (same length), and the firmware's
// `VC_BUILD_ID_TIME: Apr 17 2024` becomes `Feb  8 2024`. pifw reads exactly those strings to
// date an unpinned file, which is what these tests exercise; they do not claim the patched
// bytes behave like the broken builds.

/// `bytes` with every occurrence of `from` replaced by `to` (same length); at least one.
fn patch_all(mut bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + to.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(n > 0, "{} not found", String::from_utf8_lossy(from));
    bytes
}

/// Debian's 2023.01 rpi_3 U-Boot announcing itself as `version` (7 characters).
fn uboot_claiming(version: &str, dir: &Path) -> PathBuf {
    let bin = std::fs::read(uboot_build(UBOOT_OLD, "rpi_3")).expect("rpi_3");
    let patched = patch_all(
        bin,
        b"U-Boot 2023.01",
        format!("U-Boot {version}").as_bytes(),
    );
    let out = dir.join(format!("u-boot-{version}.bin"));
    std::fs::write(&out, patched).expect("write");
    out
}

fn status_json(image: &Path, args: &[&str]) -> serde_json::Value {
    let out = run(pifw().args(["status", "--json"]).args(args).arg(image));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON from pifw status ({e}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn finding_codes(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["code"].as_str().map(str::to_string))
        .collect()
}

fn finding<'a>(v: &'a serde_json::Value, code: &str) -> &'a serde_json::Value {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == code)
        .unwrap_or_else(|| panic!("no finding {code} in {:#}", v["findings"]))
}

#[test]
fn status_warns_on_a_card_with_uboot_2024_07_on_a_pi3() {
    let (_tmp, card) = fixture_copy("nixos.img");
    let clean = status_json(&card, &[]);
    let known: Vec<String> = finding_codes(&clean)
        .into_iter()
        .filter(|c| c.starts_with("known-issue") || c == "uboot-too-old")
        .collect();
    assert!(known.is_empty(), "the fixture matches no entry: {known:?}");

    let work = tempfile::tempdir().expect("work dir");
    mcopy_in(
        &card,
        NIXOS_FAT,
        &uboot_claiming("2024.07", work.path()),
        "u-boot-rpi3.bin",
    );
    let v = status_json(&card, &[]);
    let f = finding(&v, "known-issue-uboot-2024.07-pi3");
    assert_eq!(f["severity"], "warning", "{f}");
    let message = f["message"].as_str().expect("message");
    // The banner carries Debian's packaging suffix, which counts as the upstream release.
    assert!(message.contains("U-Boot 2024.07+dfsg"), "{message}");
    assert!(message.contains("on pi3b"), "{message}");
    assert!(
        message.contains("https://github.com/NixOS/nixpkgs/issues/333865"),
        "{message}"
    );
    assert!(
        f["advice"]
            .as_str()
            .expect("advice")
            .contains("update-uboot"),
        "{f}"
    );
    assert!(!finding_codes(&v).contains(&"uboot-too-old".to_string()));
}

#[test]
fn status_warns_on_a_pi4_card_with_the_2024_02_08_firmware_under_uboot() {
    let (_tmp, card) = fixture_copy("nixos.img");
    let work = tempfile::tempdir().expect("work dir");
    let start4 = patch_all(
        firmware_blob(FW_NEW, "start4.elf"),
        b"VC_BUILD_ID_TIME: Apr 17 2024",
        b"VC_BUILD_ID_TIME: Feb  8 2024",
    );
    let path = work.path().join("start4.elf");
    std::fs::write(&path, &start4).expect("write");
    mcopy_in(&card, NIXOS_FAT, &path, "start4.elf");

    let v = status_json(&card, &["--board", "pi4b"]);
    let chain = &v["chains"][0];
    assert_eq!(chain["components"]["firmware"], "1.20240208", "{chain:#}");
    assert_eq!(
        chain["components"]["u-boot"], "2023.01+dfsg-2+deb12u3",
        "{chain:#}"
    );
    let f = finding(&v, "known-issue-firmware-20240208-uboot-pi4");
    let message = f["message"].as_str().expect("message");
    assert!(
        message.contains("https://github.com/raspberrypi/firmware/issues/1868"),
        "{message}"
    );
    // The Pi 3 reads start.elf, which is still the pinned 1.20220830: no match there.
    let v = status_json(&card, &["--board", "pi3b"]);
    assert!(
        !finding_codes(&v)
            .iter()
            .any(|c| c.starts_with("known-issue")),
        "{:#}",
        v["findings"]
    );
}

#[test]
fn a_change_that_makes_a_known_issue_is_refused_unless_allowed() {
    let env = Env::new();
    let (_tmp, card) = fixture_copy("nixos.img");
    let work = tempfile::tempdir().expect("work dir");
    let bad = uboot_claiming("2024.07", work.path());
    let card_sha = sha256sum(&std::fs::read(&card).expect("card"));
    for extra in [&["--yes"][..], &["--dry-run"][..]] {
        let mut args = vec!["update-uboot", "--from", s(&bad), "--allow-unpinned"];
        args.extend_from_slice(extra);
        args.push(s(&card));
        let out = env.pifw(&args);
        assert!(!out.status.success(), "{extra:?} must refuse");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("known not to boot"), "{err}");
        assert!(err.contains("nixpkgs/issues/333865"), "{err}");
        assert!(
            err.contains("--allow-known-issue uboot-2024.07-pi3"),
            "the way out is named: {err}"
        );
        assert_eq!(
            sha256sum(&std::fs::read(&card).expect("card")),
            card_sha,
            "nothing written"
        );
    }
    // Allowing another entry does not help.
    let out = env.pifw(&[
        "update-uboot",
        "--from",
        s(&bad),
        "--allow-unpinned",
        "--allow-known-issue",
        "uboot-usb-hang-pi3",
        "--yes",
        s(&card),
    ]);
    assert!(!out.status.success());

    let out = env.pifw_ok_all(&[
        "update-uboot",
        "--from",
        s(&bad),
        "--allow-unpinned",
        "--allow-known-issue",
        "uboot-2024.07-pi3",
        "--yes",
        s(&card),
    ]);
    assert!(out.contains("allowed by --allow-known-issue"), "{out}");
    assert_eq!(
        sha256sum(&mcopy_out(&card, NIXOS_FAT, "u-boot-rpi3.bin")),
        sha256sum(&std::fs::read(&bad).expect("bad"))
    );
    assert_fsck_clean(&card, NIXOS_FAT, NIXOS_FAT_LEN);
    // And status now warns about what was allowed.
    let v = status_json(&card, &[]);
    finding(&v, "known-issue-uboot-2024.07-pi3");
}

// ---------------------------------------------------------------------------------------
// Hints that say the next command.

#[test]
fn a_pi3_only_source_on_a_card_serving_pi3_and_pi4_names_board_pi3b() {
    let env = Env::new();
    let (_tmp, card) = fixture_copy("nixos.img");
    let work = tempfile::tempdir().expect("work dir");
    // A NixOS card as a Pi 4 boots it: armstub8-gic.bin present, so both U-Boot chains are
    // complete (the fixture lacks it because Debian does not ship it; any bytes do here).
    let stub = work.path().join("armstub8-gic.bin");
    std::fs::write(&stub, vec![0u8; 4096]).expect("write");
    mcopy_in(&card, NIXOS_FAT, &stub, "armstub8-gic.bin");
    // Debian's rpi_3 build, under the name Debian gives it.
    let uboot = work.path().join("u-boot.bin");
    std::fs::copy(uboot_build(UBOOT_NEW, "rpi_3"), &uboot).expect("copy");
    let card_sha = sha256sum(&std::fs::read(&card).expect("card"));

    let out = env.pifw(&["update-uboot", "--from", s(&uboot), "--yes", s(&card)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--board pi3b updates only that build"),
        "{err}"
    );
    assert!(err.contains("pi4b (rpi_4 build, u-boot-rpi4.bin)"), "{err}");
    assert_eq!(sha256sum(&std::fs::read(&card).expect("card")), card_sha);

    env.pifw_ok(&[
        "update-uboot",
        "--board",
        "pi3b",
        "--from",
        s(&uboot),
        "--yes",
        s(&card),
    ]);
    assert_eq!(
        sha256sum(&mcopy_out(&card, NIXOS_FAT, "u-boot-rpi3.bin")),
        sha256sum(&std::fs::read(&uboot).expect("u-boot"))
    );
    let old_rpi4 = std::fs::read(uboot_build(UBOOT_OLD, "rpi_4")).expect("rpi_4");
    assert_eq!(
        sha256sum(&mcopy_out(&card, NIXOS_FAT, "u-boot-rpi4.bin")),
        sha256sum(&old_rpi4),
        "the Pi 4 build is left alone"
    );
    assert_fsck_clean(&card, NIXOS_FAT, NIXOS_FAT_LEN);
}

#[test]
fn a_source_missing_a_pinned_file_says_what_it_holds() {
    let env = Env::new();
    let (_tmp, card) = fixture_copy("nixos.img");
    let work = tempfile::tempdir().expect("work dir");
    let dir = work.path().join("fw");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(
        dir.join("bootcode.bin"),
        firmware_blob(FW_NEW, "bootcode.bin"),
    )
    .expect("w");
    std::fs::write(dir.join("notes.txt"), b"not firmware\n").expect("w");
    let out = env.pifw(&["update-firmware", "--from", s(&dir), "--yes", s(&card)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no file with the pinned content of"),
        "{err}"
    );
    assert!(
        err.contains("it holds: bootcode.bin (firmware upstream 1.20240424"),
        "{err}"
    );
    assert!(err.contains("1 file no manifest pins"), "{err}");
}

#[test]
fn an_images_unpinned_uboot_builds_go_each_to_its_own_name_when_allowed() {
    let env = Env::new();
    let (_tmp, card) = fixture_copy("nixos.img");
    let work = tempfile::tempdir().expect("work dir");
    let stub = work.path().join("armstub8-gic.bin");
    std::fs::write(&stub, vec![0u8; 4096]).expect("write");
    mcopy_in(&card, NIXOS_FAT, &stub, "armstub8-gic.bin");

    // A newer sd-image whose U-Boot builds no manifest pins (as every NixOS build is): the
    // Debian 2025.01 builds with bytes appended, placed by mtools, compressed by zstd.
    let image = work.path().join("nixos-sd-image-own.img");
    std::fs::copy(fixture("nixos.img"), &image).expect("copy");
    let mut own = Vec::new();
    for (build, name) in [("rpi_3", "u-boot-rpi3.bin"), ("rpi_4", "u-boot-rpi4.bin")] {
        let mut bytes = std::fs::read(uboot_build(UBOOT_NEW, build)).expect("u-boot");
        bytes.extend_from_slice(b"own build");
        let p = work.path().join(name);
        std::fs::write(&p, &bytes).expect("write");
        mcopy_in(&image, NIXOS_FAT, &p, name);
        own.push((name, sha256sum(&bytes)));
    }
    let source = compress("zstd", &image, work.path());
    let card_sha = sha256sum(&std::fs::read(&card).expect("card"));

    let out = env.pifw(&["update-uboot", "--from", s(&source), "--yes", s(&card)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-unpinned"), "{err}");
    assert_eq!(sha256sum(&std::fs::read(&card).expect("card")), card_sha);

    let out = env.pifw_ok(&[
        "update-uboot",
        "--from",
        s(&source),
        "--allow-unpinned",
        "--yes",
        s(&card),
    ]);
    assert!(out.contains("unpinned"), "{out}");
    for (name, sha) in &own {
        assert_eq!(
            &sha256sum(&mcopy_out(&card, NIXOS_FAT, name)),
            sha,
            "{name}"
        );
    }
    assert_fsck_clean(&card, NIXOS_FAT, NIXOS_FAT_LEN);
    cache_tmp_is_empty(&env);
}

#[test]
fn from_a_fifo_fails_at_once_in_every_command_that_takes_from() {
    let env = Env::new();
    let (_tmp, card) = fixture_copy("nixos.img");
    let work = tempfile::tempdir().expect("work dir");
    let fifo = work.path().join("RPi3_UEFI_Firmware_v1.39.zip");
    run_ok(cmd("mkfifo").arg(&fifo));
    for args in [
        vec!["update-uboot", "--from"],
        vec!["update-firmware", "--from"],
        vec!["switch", "uefi", "--from"],
    ] {
        let mut args = args.clone();
        args.extend([s(&fifo), "--yes", s(&card)]);
        // `timeout` ends a pifw that blocks on the FIFO: exit 124 would be the failure.
        let out = run(cmd("timeout")
            .arg("20")
            .arg(env!("CARGO_BIN_EXE_pifw"))
            .args(&args)
            .env("PIFW_CONFIG", &env.config)
            .stdin(std::process::Stdio::null()));
        assert_ne!(out.status.code(), Some(124), "{args:?} blocked on the FIFO");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("FIFO"), "{args:?}: {err}");
    }
}

#[test]
fn a_firmware_partition_copied_out_alone_is_a_source_plain_or_compressed() {
    // `dd` of the firmware partition of the image with firmware 1.20240424.
    let (_part_dir, part) = extract_partition(&fixture("nixos-full.img"), NIXOS_FAT, NIXOS_FAT_LEN);
    let work = tempfile::tempdir().expect("work dir");
    let zst = compress("zstd", &part, work.path());
    for source in [&part, &zst] {
        let env = Env::new();
        let (_t, card) = fixture_copy("nixos.img");
        let out = env.pifw_ok(&["update-firmware", "--from", s(source), "--yes", s(&card)]);
        assert!(out.contains("1.20240424"), "{}: {out}", source.display());
        assert_eq!(
            sha256sum(&mcopy_out(&card, NIXOS_FAT, "start.elf")),
            sha256sum(&firmware_blob(FW_NEW, "start.elf")),
            "{}",
            source.display()
        );
        assert_fsck_clean(&card, NIXOS_FAT, NIXOS_FAT_LEN);
        cache_tmp_is_empty(&env);
    }
}
