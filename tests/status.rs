//! `pifw status` on every fixture, judged by what the generator put there (its sidecar, made
//! with `sha256sum`) and by external readers (`sfdisk --dump`, `blkid`, `mcopy`), never by pifw
//! alone. Every read must leave the image byte-identical.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// Runs `pifw status --json [args] IMAGE`; returns the exit code and the report.
fn status(image: &Path, args: &[&str]) -> (i32, Value) {
    let out = run(pifw().args(["status", "--json"]).args(args).arg(image));
    let code = out.status.code().expect("pifw exited by signal");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON from pifw status {} (exit {code}, {e}):\n{}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["schema"], 1);
    (code, v)
}

fn codes(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["code"].as_str().expect("code").to_string())
        .collect()
}

fn finding<'a>(v: &'a Value, code: &str) -> &'a Value {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == code)
        .unwrap_or_else(|| panic!("no finding {code} in {:#}", v["findings"]))
}

fn file_digest(path: &Path) -> String {
    sha256sum(&std::fs::read(path).expect("read image"))
}

/// The firmware partition's files as pifw lists them: (path, size, sha256), sorted.
fn pifw_files(v: &Value) -> Vec<(String, u64, String)> {
    let mut out: Vec<_> = v["firmware"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn sidecar_files(fat: &Value) -> Vec<(String, u64, String)> {
    let mut out: Vec<_> = fat["files"]
        .as_array()
        .expect("sidecar files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn identified(v: &Value, path: &str) -> Value {
    v["firmware"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} not listed"))["identified"]
        .clone()
}

#[test]
fn nixos_image_read_exactly_as_the_generator_and_sfdisk_made_it() {
    let img = fixture("nixos.img");
    let before = file_digest(&img);
    let (code, v) = status(&img, &[]);
    let side = sidecar("nixos");
    assert_eq!(code, 0, "healthy card exits 0: {:#}", v["findings"]);
    assert_eq!(v["health"], "ok");

    // Table: what sfdisk reads.
    let (header, parts) = parse_sfdisk_dump(&sfdisk_dump(&img));
    assert_eq!(v["table"]["kind"], "mbr");
    assert_eq!(
        header["label-id"],
        v["table"]["disk_signature"].as_str().unwrap()
    );
    let ours = v["table"]["partitions"].as_array().unwrap();
    assert_eq!(ours.len(), parts.len());
    for (p, d) in ours.iter().zip(&parts) {
        assert_eq!(p["number"].as_u64().unwrap() as u32, d.number);
        assert_eq!(p["start_lba"].as_u64().unwrap(), d.start);
        assert_eq!(p["sectors"].as_u64().unwrap(), d.size);
        assert_eq!(p["bootable"].as_bool().unwrap(), d.bootable);
        assert_eq!(
            u8::from_str_radix(p["type"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap(),
            u8::from_str_radix(&d.kind, 16).unwrap()
        );
    }
    assert_eq!(ours[1]["filesystem"], "ext4");
    assert_eq!(ours[1]["partuuid"], "2178694e-02");

    // Firmware partition: what blkid and the generator say.
    let fw = &v["firmware"];
    let off = fw["offset_bytes"].as_u64().unwrap();
    assert_eq!(off, side["firmware"]["offset_bytes"].as_u64().unwrap());
    let blk = blkid(&img, off);
    assert_eq!(blk["TYPE"], "vfat");
    assert_eq!(fw["label"].as_str().unwrap(), blk["LABEL"]);
    assert_eq!(fw["fat_type"], side["firmware"]["fat_type"]);
    assert_eq!(fw["mbr_slot"], 1);
    assert_eq!(fw["pi3_rom_bootable"], true);

    // Every file with its sha256 as sha256sum computed it from the source blob.
    assert_eq!(pifw_files(&v), sidecar_files(&side["firmware"]));
    // And one of them read back through mtools, byte for byte.
    let cfg = mcopy_out(&img, off, "config.txt");
    let listed = pifw_files(&v);
    let entry = listed.iter().find(|f| f.0 == "config.txt").unwrap();
    assert_eq!(sha256sum(&cfg), entry.2);

    // Identification against the manifests.
    let boot = identified(&v, "bootcode.bin");
    assert_eq!(boot["kind"], "firmware");
    assert_eq!(boot["version"], "1.20220830");
    let ub = identified(&v, "u-boot-rpi3.bin");
    assert_eq!(ub["kind"], "u-boot");
    assert_eq!(ub["build"], "rpi_3");
    assert!(ub["version"].as_str().unwrap().starts_with("2023.01"));

    // The Pi 3 chain hands over to U-Boot, which scans the bootable root.
    let chain = &v["chains"][0];
    assert_eq!(chain["kind"], "u-boot");
    assert!(chain["boards"].as_array().unwrap().contains(&"pi3b".into()));
    let kernel = chain["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "kernel")
        .unwrap();
    assert_eq!(kernel["file"], "u-boot-rpi3.bin");
    assert!(codes(&v).contains(&"board-not-served".to_string()));

    assert_eq!(file_digest(&img), before, "status changed the image");
}

#[test]
fn board_option_selects_the_chain_and_its_problems() {
    let img = fixture("nixos.img");
    let (code, v) = status(&img, &["--board", "pi3b"]);
    assert_eq!(code, 0);
    assert_eq!(v["board"]["source"], "given");
    assert_eq!(v["chains"].as_array().unwrap().len(), 1);

    // The NixOS config.txt names armstub8-gic.bin for [pi4]; Debian's firmware lacks it.
    let (code, v) = status(&img, &["--board", "pi4b"]);
    assert_eq!(code, 3);
    let f = finding(&v, "missing-boot-file");
    assert!(
        f["message"].as_str().unwrap().contains("armstub8-gic.bin"),
        "{f}"
    );
    assert_eq!(f["severity"], "error");

    let out = run(pifw().args(["status", "--board", "pi9"]).arg(&img));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown board 'pi9'") && err.contains("pi3b"),
        "{err}"
    );
}

#[test]
fn raspberry_pi_os_image_fat32_and_cmdline_partuuid() {
    let img = fixture("rpios.img");
    let (_, v) = status(&img, &[]);
    let side = sidecar("rpios");
    assert_eq!(v["firmware"]["fat_type"], "FAT32");
    assert_eq!(v["firmware"]["label"], "bootfs");
    assert_eq!(pifw_files(&v), sidecar_files(&side["firmware"]));
    let dirs = v["firmware"]["dirs"].as_array().unwrap();
    assert!(dirs.contains(&"overlays".into()), "{dirs:?}");
    // cmdline.txt's root=PARTUUID=3e247b30-02 names partition 2: no complaint about it.
    assert!(!codes(&v).contains(&"cmdline-root-missing".to_string()));
    assert_eq!(v["table"]["partitions"][1]["partuuid"], "3e247b30-02");
    // The fixture carries no kernel: the chain names kernel8.img, which is missing.
    assert!(
        finding(&v, "missing-boot-file")["message"]
            .as_str()
            .unwrap()
            .contains("kernel8.img")
    );
    assert_eq!(v["health"], "errors");
}

#[test]
fn uefi_layout_chain_reaches_systemd_boot() {
    let img = fixture("uefi.img");
    let (_, v) = status(&img, &[]);
    let chain = &v["chains"][0];
    assert_eq!(chain["kind"], "uefi", "{chain:#}");
    let loader = chain["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "loader")
        .expect("loader stage");
    assert_eq!(loader["file"], "EFI/BOOT/BOOTAA64.EFI");
    assert!(
        loader["what"]
            .as_str()
            .unwrap()
            .contains("systemd-boot 252"),
        "{loader}"
    );
    assert!(codes(&v).contains(&"firmware-too-small-for-systemd-boot".to_string()));
}

#[test]
fn sgdisk_hybrid_read_as_gpt_with_the_mbr_the_rom_sees() {
    let img = fixture("hybrid.img");
    let (code, v) = status(&img, &[]);
    assert_eq!(code, 3);
    assert_eq!(v["table"]["kind"], "hybrid");
    // GPT view agrees with sfdisk's primary dump...
    let (_, gpt) = parse_sfdisk_dump(&sfdisk_dump(&img));
    let ours = v["table"]["partitions"].as_array().unwrap();
    assert_eq!(ours.len(), gpt.len());
    for (p, d) in ours.iter().zip(&gpt) {
        assert_eq!(p["source"], "gpt");
        assert_eq!(p["start_lba"].as_u64().unwrap(), d.start);
        assert_eq!(p["sectors"].as_u64().unwrap(), d.size);
        assert_eq!(p["type"].as_str().unwrap(), d.kind.to_uppercase());
    }
    // ...and the MBR view with sfdisk's nested dos dump.
    let (_, mbr) = parse_sfdisk_dump(&sfdisk_dump_mbr(&img));
    let raw = v["table"]["mbr_entries"].as_array().unwrap();
    assert_eq!(raw.len(), mbr.len());
    for (p, d) in raw.iter().zip(&mbr) {
        assert_eq!(p["start_lba"].as_u64().unwrap(), d.start);
        assert_eq!(p["sectors"].as_u64().unwrap(), d.size);
    }
    // sgdisk made slot 1 type 0x07, which a Pi 3's ROM does not boot.
    assert_eq!(raw[0]["type"], "0x07");
    assert_eq!(finding(&v, "firmware-wrong-type")["severity"], "error");
    assert_eq!(v["firmware"]["mbr_slot"], 1);
}

#[test]
fn pure_gpt_is_read_and_called_unbootable_on_a_pi3() {
    let (code, v) = status(&fixture("gpt.img"), &[]);
    assert_eq!(code, 3);
    assert_eq!(v["table"]["kind"], "gpt");
    assert_eq!(v["firmware"]["pi3_rom_bootable"], false);
    assert_eq!(v["firmware"]["gpt_index"], 1);
    assert_eq!(finding(&v, "pure-gpt-unbootable-pi3")["severity"], "error");
    assert_eq!(v["firmware"]["files"].as_array().unwrap().len(), 6);
}

#[test]
fn corrupted_variants_are_reported_precisely_and_never_changed() {
    // (fixture, finding that must be there)
    let cases = [
        ("gpt-badcrc", "gpt-primary-entries-crc"),
        ("mbr-overlap", "mbr-overlap"),
        ("truncated", "mbr-out-of-bounds"),
        ("fat-loop", "firmware-fat-unreadable"),
        ("fat-type-ef", "firmware-type-0xef"),
        ("no-table", "no-partition-table"),
    ];
    for (name, code) in cases {
        let img = fixture(&format!("{name}.img"));
        let before = file_digest(&img);
        let (exit, v) = status(&img, &[]);
        assert_eq!(exit, 3, "{name}: problems exit 3");
        let f = finding(&v, code);
        assert_eq!(f["severity"], "error", "{name}: {f}");
        assert!(!f["message"].as_str().unwrap().is_empty());
        assert_eq!(
            file_digest(&img),
            before,
            "{name}: status changed the image"
        );
    }
    // The bad-CRC disk still has its intact backup GPT: the files are read from it.
    let (_, v) = status(&fixture("gpt-badcrc.img"), &[]);
    assert_eq!(pifw_files(&v), sidecar_files(&sidecar("gpt-badcrc")["esp"]));
    // The looping chain is named with the file it belongs to.
    let (_, v) = status(&fixture("fat-loop.img"), &[]);
    let msg = finding(&v, "firmware-fat-unreadable")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("bootcode.bin"), "{msg}");
    assert!(v["firmware"]["files"].as_array().unwrap().is_empty());
    // The truncated image: the FAT no longer fits its partition.
    let (_, v) = status(&fixture("truncated.img"), &[]);
    assert!(codes(&v).contains(&"firmware-fat-unreadable".to_string()));
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn human_output_fits_80_columns_and_has_no_colour_off_a_terminal() {
    for name in [
        "nixos",
        "rpios",
        "uefi",
        "hybrid",
        "gpt",
        "gpt-badcrc",
        "mbr-overlap",
        "truncated",
        "fat-loop",
        "fat-type-ef",
        "no-table",
        "uefi-sdboot-noentries",
        "uefi-sdboot-nokernel",
        "uefi-sdboot-entry",
        "uefi-uki",
        "uefi-grub",
        "nixos-esp",
    ] {
        let out = run(pifw().arg("status").arg(fixture(&format!("{name}.img"))));
        let t = text(&out);
        assert!(t.contains("Result"), "{name}: {t}");
        assert!(!t.contains('\x1b'), "{name}: colour codes off a terminal");
        for line in t.lines() {
            assert!(
                line.chars().count() <= 80,
                "{name}: line too wide: {line:?}"
            );
        }
    }
    let t = text(&run(pifw().arg("status").arg(fixture("nixos.img"))));
    assert!(
        t.contains("ROM -> bootcode.bin -> start.elf+fixup.dat -> u-boot-rpi3.bin"),
        "{t}"
    );
    assert!(t.contains("U-Boot 2023.01"), "{t}");
}

#[test]
fn exit_codes_for_missing_target_and_no_terminal() {
    let out = run(pifw().args(["status", "/nonexistent/card.img"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    // No TARGET, not a Pi (empty device-tree model), no terminal: ask for a TARGET.
    let out = run(pifw()
        .arg("status")
        .env("PIFW_DT_MODEL", "/nonexistent")
        .stdin(std::process::Stdio::null()));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pass an image file or a device"), "{err}");
}

#[test]
fn unpinned_uboot_is_recognised_by_its_banner_and_old_ones_are_flagged() {
    // With manifests that pin no U-Boot, the real Debian binary is still recognised by the
    // version banner inside it.
    let dir = tempfile::tempdir().unwrap();
    for f in ["boards.toml", "firmware.toml"] {
        std::fs::copy(repo_root().join("manifests").join(f), dir.path().join(f)).unwrap();
    }
    let img = fixture("nixos.img");
    let out = run(pifw()
        .args(["status", "--json", "--board", "pi3b", "--manifests"])
        .arg(dir.path())
        .arg(&img));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kernel = v["chains"][0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "kernel")
        .unwrap()
        .clone();
    assert_eq!(v["chains"][0]["kind"], "u-boot");
    assert!(
        kernel["what"]
            .as_str()
            .unwrap()
            .contains("U-Boot 2023.01+dfsg-2+deb12u3 (not pinned)"),
        "{kernel}"
    );

    // The same binary with its banner saying 2022.04: a Pi 3 gets the USB-hang warning.
    let (_tmp, copy) = fixture_copy("nixos.img");
    let off = sidecar("nixos")["firmware"]["offset_bytes"]
        .as_u64()
        .unwrap();
    let mut bin = mcopy_out(&copy, off, "u-boot-rpi3.bin");
    let needle = b"U-Boot 2023.01";
    let at = bin
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("banner in the real U-Boot");
    bin[at..at + needle.len()].copy_from_slice(b"U-Boot 2022.04");
    let patched = _tmp.path().join("u-boot-rpi3.bin");
    std::fs::write(&patched, &bin).unwrap();
    run_ok(
        cmd("mcopy")
            .args(["-o", "-i"])
            .arg(format!("{}@@{off}", copy.display()))
            .arg(&patched)
            .arg("::/u-boot-rpi3.bin"),
    );
    let (code, v) = status(&copy, &["--board", "pi3b"]);
    assert_eq!(code, 3);
    let f = finding(&v, "uboot-too-old");
    assert!(f["message"].as_str().unwrap().contains("2022.04"), "{f}");
    assert!(
        f["advice"]
            .as_str()
            .is_some_and(|a| a.starts_with("run pifw update-uboot")),
        "{f}"
    );
    // The known-issues table's entry, with its public reference.
    let message = f["message"].as_str().unwrap();
    assert!(message.contains("uboot-usb-hang-pi3"), "{f}");
    assert!(
        message.contains("https://github.com/NixOS/nixpkgs/pull/218789"),
        "{f}"
    );
}

#[test]
fn loop_device_with_pi_device_tree() {
    // A read-only loop device plays the Pi's SD card; a device-tree model file plays the Pi.
    let img = fixture("nixos.img");
    let out = run(cmd("losetup").args(["-r", "-f", "--show"]).arg(&img));
    assert!(
        out.status.success(),
        "losetup failed (these tests need root and loop devices):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::write(&model, b"Raspberry Pi 3 Model B Rev 1.2\0").unwrap();
    let res = run(pifw()
        .args(["status", "--json", &dev])
        .env("PIFW_DT_MODEL", &model));
    run_ok(cmd("losetup").args(["-d", &dev]));
    assert_eq!(
        res.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let v: Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(v["target"]["kind"], "block-device");
    assert_eq!(v["board"]["source"], "device-tree");
    assert_eq!(v["board"]["id"], "pi3b");
    assert_eq!(pifw_files(&v), sidecar_files(&sidecar("nixos")["firmware"]));
}

#[test]
fn manifests_list_show_and_a_broken_manifest() {
    let t = text(&run(pifw().args(["manifests", "list"])));
    assert!(
        t.contains("pi3b") && t.contains("1.20220830") && t.contains("v1.39"),
        "{t}"
    );
    assert!(t.contains("unverified pin"), "{t}");
    let out = run(pifw().args(["manifests", "show", "u-boot", "2023.01"]));
    assert!(out.status.success());
    assert!(text(&out).contains("ab6647b5621e5220"));

    let dir = tempfile::tempdir().unwrap();
    let bad = "schema = 1\n\n[[board]]\nid = \"pi3b\"\nbogus_field = 1\n";
    std::fs::write(dir.path().join("boards.toml"), bad).unwrap();
    let out = run(pifw()
        .args(["manifests", "list", "--manifests"])
        .arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("boards.toml") && err.contains(":5") && err.contains("bogus_field"),
        "{err}"
    );
}

/// The UEFI chain past EFI/BOOT/BOOTAA64.EFI, on cards whose loader's files were put there
/// with mtools by scripts/mkimages (build_uefi_variants): what the chain reaches, judged
/// against what the generator wrote (its sidecar) and the mtools listing.
fn efi_chain(v: &Value) -> &Value {
    let chain = v["chains"]
        .as_array()
        .expect("chains")
        .iter()
        .find(|c| c["kind"] == "uefi")
        .unwrap_or_else(|| panic!("no uefi chain in {:#}", v["chains"]));
    &chain["efi"]
}

fn stage_files(v: &Value) -> Vec<(String, bool)> {
    v["chains"][0]["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["file"].as_str().unwrap_or("").to_string(),
                s["present"].as_bool().expect("present"),
            )
        })
        .collect()
}

#[test]
fn systemd_boot_with_no_entries_is_an_error() {
    for name in ["uefi-sdboot-noentries.img", "uefi.img"] {
        let img = fixture(name);
        let before = file_digest(&img);
        let (code, v) = status(&img, &["--board", "pi3b"]);
        assert_eq!(code, 3);
        assert_eq!(v["health"], "errors", "{name}");
        let f = finding(&v, "uefi-no-boot-entry");
        assert_eq!(f["severity"], "error");
        let advice = f["advice"].as_str().expect("advice");
        for want in [
            "boot.loader.systemd-boot.enable = true",
            "boot.loader.efi.canTouchEfiVariables = false",
            "/boot",
            "nixos-rebuild boot",
        ] {
            assert!(advice.contains(want), "{want}: {advice}");
        }
        let efi = efi_chain(&v);
        assert_eq!(efi["loader"], "systemd-boot");
        assert_eq!(efi["reaches_os"], false);
        assert_eq!(efi["default_entry"], Value::Null);
        assert_eq!(file_digest(&img), before, "status changed {name}");
    }
    // mtools agrees there is no entry directory at all.
    let listing = mdir(&fixture("uefi-sdboot-noentries.img"), 1024 * 1024, "loader");
    assert!(!listing.contains("entries"), "{listing}");
}

#[test]
fn an_entry_whose_kernel_is_missing_is_an_error() {
    let img = fixture("uefi-sdboot-nokernel.img");
    let (code, v) = status(&img, &["--board", "pi3b"]);
    assert_eq!(code, 3);
    assert_eq!(finding(&v, "uefi-no-boot-entry")["severity"], "error");
    let skipped = finding(&v, "uefi-entry-skipped");
    assert!(
        skipped["message"]
            .as_str()
            .unwrap()
            .contains("/debian/vmlinuz-6.1.0-50-arm64"),
        "{skipped}"
    );
    let bls = &v["firmware"]["bls"];
    assert_eq!(bls["entries"][0]["id"], "debian.conf");
    assert_eq!(bls["entries"][0]["listed"], false);
    assert_eq!(bls["entries"][0]["files"][0]["found"], Value::Null);
    assert_eq!(efi_chain(&v)["reaches_os"], false);
}

#[test]
fn a_complete_entry_is_followed_to_its_kernel() {
    let img = fixture("uefi-sdboot-entry.img");
    let side = sidecar("uefi-sdboot-entry");
    let (_, v) = status(&img, &["--board", "pi3b"]);
    let errors: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let efi = efi_chain(&v);
    assert_eq!(efi["default_entry"], "debian.conf");
    assert_eq!(efi["boots"], "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(efi["reaches_os"], true);
    // The chain runs through the entry to the files it names, each present, with the sizes
    // the generator wrote.
    let stages = stage_files(&v);
    let tail: Vec<&str> = stages
        .iter()
        .rev()
        .take(4)
        .map(|(f, _)| f.as_str())
        .collect();
    assert_eq!(
        tail,
        [
            "debian/bcm2837-rpi-3-b.dtb",
            "debian/initrd.img-6.1.0-50-arm64",
            "debian/vmlinuz-6.1.0-50-arm64",
            "loader/entries/debian.conf"
        ]
    );
    assert!(stages.iter().all(|(_, p)| *p), "{stages:?}");
    let files = &v["firmware"]["bls"]["entries"][0]["files"];
    for f in files.as_array().unwrap() {
        let path = f["found"].as_str().unwrap();
        let want = side["firmware"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["path"] == path)
            .unwrap_or_else(|| panic!("{path} not in the sidecar"));
        assert_eq!(f["size"], want["size"], "{path}");
    }
    assert_eq!(files[0]["what"], "Linux kernel (arm64 Image)");
}

#[test]
fn a_type2_uki_is_an_entry() {
    let img = fixture("uefi-uki.img");
    let (_, v) = status(&img, &["--board", "pi3b"]);
    assert!(!codes(&v).contains(&"uefi-no-boot-entry".to_string()));
    let e = &v["firmware"]["bls"]["entries"][0];
    assert_eq!(e["type"], "type2");
    assert_eq!(e["path"], "EFI/Linux/debian-6.1.0-50-arm64.efi");
    assert_eq!(e["title"], "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(e["bootable"], true);
    let efi = efi_chain(&v);
    assert_eq!(efi["default_entry"], "debian-6.1.0-50-arm64.efi");
    assert_eq!(efi["reaches_os"], true);
    // binutils' view of the same file: the sections pifw read.
    let (_dir, copy) = fixture_copy("uefi-uki.img");
    let uki = mcopy_out(&copy, 1024 * 1024, "EFI/Linux/debian-6.1.0-50-arm64.efi");
    let path = _dir.path().join("uki.efi");
    std::fs::write(&path, &uki).expect("write");
    let objdump = run_ok(cmd("aarch64-linux-gnu-objdump").arg("-h").arg(&path));
    assert!(
        objdump.contains(".osrel") && objdump.contains(".linux"),
        "{objdump}"
    );
}

#[test]
fn grub_without_grub_cfg_is_an_error() {
    let img = fixture("uefi-grub.img");
    let (code, v) = status(&img, &["--board", "pi3b"]);
    assert_eq!(code, 3);
    let f = finding(&v, "grub-no-config");
    assert_eq!(f["severity"], "error");
    let efi = efi_chain(&v);
    assert_eq!(efi["loader"], "grub");
    // Debian's monolithic GRUB: prefix /EFI/debian built in; its memdisk grub.cfg then
    // tries $prefix/arm64-efi/grub.cfg, $prefix/grub.cfg and $cmdpath/grub.cfg.
    assert_eq!(efi["grub"]["prefix"], "/EFI/debian");
    assert_eq!(
        efi["grub"]["candidates"],
        serde_json::json!([
            "EFI/debian/arm64-efi/grub.cfg",
            "EFI/debian/grub.cfg",
            "EFI/BOOT/grub.cfg"
        ])
    );
    assert_eq!(efi["grub"]["found"], Value::Null);
    // The same card with a grub.cfg put where GRUB looks: no longer an error.
    let (_dir, copy) = fixture_copy("uefi-grub.img");
    let cfg = _dir.path().join("grub.cfg");
    std::fs::write(&cfg, "set timeout=5\n").expect("write");
    let target = format!("{}@@{}", copy.display(), 1024 * 1024);
    run_ok(cmd("mmd").arg("-i").arg(&target).arg("::/EFI/debian"));
    run_ok(
        cmd("mcopy")
            .arg("-i")
            .arg(&target)
            .arg(&cfg)
            .arg("::/EFI/debian/grub.cfg"),
    );
    let (_, v) = status(&copy, &["--board", "pi3b"]);
    assert!(
        !codes(&v).contains(&"grub-no-config".to_string()),
        "{:#}",
        v["findings"]
    );
    assert_eq!(efi_chain(&v)["grub"]["found"], "EFI/debian/grub.cfg");
}
