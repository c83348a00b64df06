//! U-Boot as the independent reader: Debian's Pi 3 U-Boot boots in QEMU
//! (`-M raspi3b`) on a copy of a fixture, and what it reports with
//! `part list mmc 0` and `fatls mmc 0:1` is compared with the generator's
//! sidecar and with `pifw status --json`.
//!
//! These tests need QEMU (scripts/install-deps) and the blob cache
//! (scripts/fetch-blobs); `scripts/test` sets both up.

mod common;

use common::*;
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected an integer, got {v}"))
}

/// What U-Boot 2023.01 (rpi_3) sees on nixos.img.
struct UbootView {
    parts: Vec<(u32, u64, u64, u8, bool)>,
    files: Vec<(String, u64)>,
    dirs: Vec<String>,
}

fn uboot_view(image: &str) -> UbootView {
    let out = qemu_uboot(
        &fixture(image),
        &uboot_rpi3(UBOOT_OLD),
        None,
        &["part list mmc 0", "fatls mmc 0:1"],
    );
    let parts = parse_uboot_part_list(&out[0]);
    let (files, dirs) = parse_uboot_fatls(&out[1]);
    assert!(
        !parts.is_empty(),
        "U-Boot listed no partitions:\n{}",
        out[0]
    );
    assert!(!files.is_empty(), "U-Boot listed no files:\n{}", out[1]);
    UbootView { parts, files, dirs }
}

/// The generator's table as U-Boot would print it.
fn sidecar_parts(side: &Value) -> Vec<(u32, u64, u64, u8, bool)> {
    side["table"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            let ty = p["type"].as_str().expect("type");
            (
                u(&p["number"]) as u32,
                u(&p["start_lba"]),
                u(&p["sectors"]),
                u8::from_str_radix(ty.trim_start_matches("0x"), 16).expect("hex type"),
                p["bootable"].as_bool().expect("bootable"),
            )
        })
        .collect()
}

fn sidecar_files(fat: &Value) -> (Vec<(String, u64)>, Vec<String>) {
    // fatls lists the root directory only.
    let mut files: Vec<(String, u64)> = fat["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| !f["path"].as_str().expect("path").contains('/'))
        .map(|f| {
            (
                f["path"].as_str().expect("path").to_lowercase(),
                u(&f["size"]),
            )
        })
        .collect();
    let mut dirs: Vec<String> = fat["dirs"]
        .as_array()
        .expect("dirs")
        .iter()
        .map(|d| d.as_str().expect("dir").to_lowercase())
        .filter(|d| !d.contains('/'))
        .collect();
    files.sort();
    dirs.sort();
    (files, dirs)
}

#[test]
fn uboot_sees_the_generated_nixos_layout() {
    let side = sidecar("nixos");
    let view = uboot_view("nixos.img");
    assert_eq!(view.parts, sidecar_parts(&side));
    let (files, dirs) = sidecar_files(&side["firmware"]);
    assert_eq!(view.files, files);
    assert_eq!(view.dirs, dirs);
}

#[test]
fn uboot_sees_the_generated_rpios_layout() {
    let side = sidecar("rpios");
    let view = uboot_view("rpios.img");
    assert_eq!(view.parts, sidecar_parts(&side));
    let (files, dirs) = sidecar_files(&side["firmware"]);
    assert_eq!(view.files, files);
    assert_eq!(view.dirs, dirs);
}

#[test]
fn uboot_2025_with_dtb_reads_nixos() {
    let out = qemu_uboot(
        &fixture("nixos.img"),
        &uboot_rpi3(UBOOT_NEW),
        Some(&pi3_dtb()),
        &["version", "part list mmc 0"],
    );
    assert!(out[0].contains("U-Boot 2025.01"), "{}", out[0]);
    assert_eq!(
        parse_uboot_part_list(&out[1]),
        sidecar_parts(&sidecar("nixos"))
    );
}

#[test]
fn uboot_and_pifw_status_agree_on_nixos() {
    let view = uboot_view("nixos.img");
    let (_dir, img) = fixture_copy("nixos.img");
    let status = pifw_status_json(&img);
    assert_eq!(status["schema"], 1, "{status:#}");

    let table = &status["table"];
    assert_eq!(table["kind"], "mbr", "{status:#}");
    let pifw_parts: Vec<(u32, u64, u64, u8, bool)> = table["partitions"]
        .as_array()
        .expect("table.partitions")
        .iter()
        .map(|p| {
            let ty = p["type"].as_str().expect("partition type");
            (
                u(&p["number"]) as u32,
                u(&p["start_lba"]),
                u(&p["sectors"]),
                u8::from_str_radix(ty.trim_start_matches("0x"), 16).expect("hex type"),
                p["bootable"].as_bool().expect("bootable"),
            )
        })
        .collect();
    assert_eq!(pifw_parts, view.parts, "pifw vs U-Boot: partitions");

    let fw = &status["firmware"];
    assert_eq!(u(&fw["mbr_slot"]), 1);
    let (start, sectors) = (view.parts[0].1, view.parts[0].2);
    assert_eq!(
        u(&fw["offset_bytes"]),
        start * 512,
        "pifw vs U-Boot: FAT offset"
    );
    assert_eq!(
        u(&fw["size_bytes"]),
        sectors * 512,
        "pifw vs U-Boot: FAT size"
    );

    let mut pifw_files: Vec<(String, u64)> = fw["files"]
        .as_array()
        .expect("firmware.files")
        .iter()
        .filter(|f| !f["path"].as_str().expect("path").contains('/'))
        .map(|f| {
            (
                f["path"].as_str().expect("path").to_lowercase(),
                u(&f["size"]),
            )
        })
        .collect();
    pifw_files.sort();
    assert_eq!(pifw_files, view.files, "pifw vs U-Boot: root files");
    let mut pifw_dirs: Vec<String> = fw["dirs"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|d| d.as_str())
                .filter(|d| !d.contains('/'))
                .map(str::to_lowercase)
                .collect()
        })
        .unwrap_or_default();
    pifw_dirs.sort();
    assert_eq!(pifw_dirs, view.dirs, "pifw vs U-Boot: root directories");
}

/// systemd-boot itself (Debian's 252, started by U-Boot's `bootefi` in QEMU) as the oracle
/// for pifw's reading of the Boot Loader Specification entries on cards made with mtools:
/// the title pifw says will boot is in systemd-boot's menu; an entry whose kernel is missing
/// is not (systemd-boot drops it silently, which is why pifw calls that card an error).
/// Started from memory by `bootefi`, systemd-boot also lists itself as "EFI Default Loader";
/// started by the firmware from the fallback path it would not. The UKI card has no
/// loader.conf, so no menu (timeout 0): systemd-boot starts the UKI at once, and Debian's
/// kernel in it prints its banner (it then stops for want of a root filesystem).
#[test]
fn systemd_boot_agrees_with_pifw_status() {
    for (image, title, until) in [
        (
            "uefi-sdboot-entry.img",
            Some("Debian GNU/Linux 12 (bookworm)"),
            "Boot in",
        ),
        (
            "uefi-uki.img",
            Some("Debian GNU/Linux 12 (bookworm)"),
            "Linux version 6.1.0-50-arm64",
        ),
        ("uefi-sdboot-nokernel.img", None, "Boot in"),
    ] {
        let img = fixture(image);
        let out = run(pifw()
            .args(["status", "--json", "--board", "pi3b"])
            .arg(&img));
        let status: Value = serde_json::from_slice(&out.stdout).expect("status json");
        let efi = &status["chains"][0]["efi"];
        assert_eq!(efi["boots"].as_str(), title, "{image}: {efi}");
        let outs = qemu_uboot_until(
            &img,
            &uboot_rpi3(UBOOT_OLD),
            &[
                "fatload mmc 0:1 ${kernel_addr_r} EFI/BOOT/BOOTAA64.EFI",
                "bootefi ${kernel_addr_r}",
            ],
            until,
        );
        let screen = &outs[1];
        match (image, title) {
            ("uefi-uki.img", _) => {
                assert!(screen.contains("Linux version 6.1.0-50-arm64"), "{screen}")
            }
            (_, Some(t)) => {
                assert!(screen.contains("EFI Default Loader"), "{image}: {screen}");
                assert!(screen.contains(t), "{image}: {t:?} not in\n{screen}");
            }
            (_, None) => {
                assert!(screen.contains("EFI Default Loader"), "{image}: {screen}");
                assert!(!screen.contains("Debian"), "{image}: {screen}");
            }
        }
    }
}
