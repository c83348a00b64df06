//! Checks the fixture images themselves with external tools, so that a broken
//! `scripts/mkimages` is caught before pifw is blamed for it.
//!
//! Each test compares what a real tool reads (sfdisk, sgdisk, blkid, fsck.fat,
//! mtools, e2fsck, debugfs) with the generator's JSON sidecar.

mod common;

use common::*;
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected an integer, got {v}"))
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// sfdisk's view of an MBR image equals the sidecar's table.
fn assert_mbr_layout(name: &str) {
    let img = fixture(&format!("{name}.img"));
    let side = sidecar(name);
    let (header, parts) = parse_sfdisk_dump(&sfdisk_dump(&img));
    assert_eq!(
        header.get("label").map(String::as_str),
        Some("dos"),
        "{name}: label"
    );
    assert_eq!(
        header.get("label-id").map(String::as_str),
        Some(s(&side["table"]["disk_id"])),
        "{name}: disk id"
    );
    let want = side["table"]["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), want.len(), "{name}: partition count");
    for (got, want) in parts.iter().zip(want) {
        assert_eq!(u64::from(got.number), u(&want["number"]), "{name}: number");
        assert_eq!(
            got.start,
            u(&want["start_lba"]),
            "{name} p{}: start",
            got.number
        );
        assert_eq!(
            got.size,
            u(&want["sectors"]),
            "{name} p{}: size",
            got.number
        );
        let ty = u8::from_str_radix(&got.kind, 16).expect("sfdisk MBR type is hex");
        assert_eq!(
            format!("{ty:#04x}"),
            s(&want["type"]),
            "{name} p{}: type",
            got.number
        );
        assert_eq!(
            got.bootable,
            want["bootable"].as_bool().expect("bootable"),
            "{name} p{}: boot flag",
            got.number
        );
    }
}

#[test]
fn mbr_layouts_match_sidecars() {
    for name in [
        "nixos",
        "nixos-full",
        "rpios",
        "uefi",
        "fat-type-ef",
        "mbr-overlap",
    ] {
        assert_mbr_layout(name);
    }
}

#[test]
fn nixos_layout_is_the_sd_image_one() {
    let (header, parts) = parse_sfdisk_dump(&sfdisk_dump(&fixture("nixos.img")));
    assert_eq!(header["label-id"], "0x2178694e");
    assert_eq!(
        (parts[0].start, parts[0].size, parts[0].kind.as_str()),
        (8 << 11, 30 << 11, "b")
    );
    assert!(!parts[0].bootable);
    assert_eq!(
        (parts[1].start, parts[1].kind.as_str(), parts[1].bootable),
        (38 << 11, "83", true)
    );
    assert_eq!(
        parts[1].start + parts[1].size,
        128 << 11,
        "root runs to the end of the image"
    );
}

#[test]
fn mbr_overlap_really_overlaps() {
    let (_, parts) = parse_sfdisk_dump(&sfdisk_dump(&fixture("mbr-overlap.img")));
    assert!(parts[1].start < parts[0].start + parts[0].size, "{parts:?}");
    assert!(parts[1].start > parts[0].start);
}

#[test]
fn fat_type_ef_has_type_ef_in_slot_1() {
    let (_, parts) = parse_sfdisk_dump(&sfdisk_dump(&fixture("fat-type-ef.img")));
    assert_eq!(parts[0].kind, "ef");
}

#[test]
fn gpt_is_valid_and_matches_sidecar() {
    let img = fixture("gpt.img");
    let verify = sgdisk_verify(&img);
    assert!(
        verify.contains("No problems found"),
        "sgdisk -v gpt.img:\n{verify}"
    );
    let side = sidecar("gpt");
    let (header, parts) = parse_sfdisk_dump(&sfdisk_dump(&img));
    assert_eq!(header["label"], "gpt");
    assert_eq!(header["label-id"], s(&side["table"]["disk_guid"]));
    let want = side["table"]["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), want.len());
    for (got, want) in parts.iter().zip(want) {
        assert_eq!(got.start, u(&want["start_lba"]), "p{} start", got.number);
        assert_eq!(got.size, u(&want["sectors"]), "p{} size", got.number);
        assert_eq!(got.kind, s(&want["type_guid"]), "p{} type", got.number);
    }
    // The protective MBR: one 0xEE entry.
    let mbr = sfdisk_dump_mbr(&img);
    let (_, slots) = parse_sfdisk_dump(&mbr);
    assert_eq!(slots.len(), 1, "{mbr}");
    assert_eq!(slots[0].kind, "ee");
}

#[test]
fn hybrid_is_valid_gpt_with_fat_in_mbr_slot_1() {
    let img = fixture("hybrid.img");
    let verify = sgdisk_verify(&img);
    assert!(
        verify.contains("No problems found"),
        "sgdisk -v hybrid.img:\n{verify}"
    );
    let side = sidecar("hybrid");
    let (header, parts) = parse_sfdisk_dump(&sfdisk_dump(&img));
    assert_eq!(header["label"], "gpt");
    for (got, want) in parts
        .iter()
        .zip(side["table"]["partitions"].as_array().expect("partitions"))
    {
        assert_eq!(
            (got.start, got.size),
            (u(&want["start_lba"]), u(&want["sectors"]))
        );
    }
    // The root must leave room for the backup GPT (33 sectors at the end).
    let last = parts
        .iter()
        .map(|p| p.start + p.size)
        .max()
        .expect("partitions");
    assert!(
        last <= u(&side["size_bytes"]) / 512 - 33,
        "root overlaps the backup GPT"
    );

    let (mbr_header, slots) = parse_sfdisk_dump(&sfdisk_dump_mbr(&img));
    let fw = &side["firmware"];
    assert_eq!(slots[0].number, 1);
    assert_eq!(
        slots[0].start * 512,
        u(&fw["offset_bytes"]),
        "slot 1 is the FAT"
    );
    assert_eq!(slots[0].size * 512, u(&fw["size_bytes"]));
    assert_eq!(slots[1].kind, "ee", "0xEE after the FAT slot");
    assert_eq!(slots[1].start, 1);
    assert_eq!(
        slots[1].start + slots[1].size,
        slots[0].start,
        "0xEE ends before the FAT"
    );
    // What sgdisk did to the MBR, as the sidecar records it.
    let mbr = &side["table"]["mbr"];
    assert_eq!(mbr_header["label-id"], s(&mbr["disk_id"]));
    assert_eq!(
        format!("{:#04x}", u8::from_str_radix(&slots[0].kind, 16).unwrap()),
        s(&mbr["slots"][0]["type"])
    );
}

#[test]
fn gpt_badcrc_primary_is_broken_and_backup_intact() {
    let verify = sgdisk_verify(&fixture("gpt-badcrc.img"));
    assert!(!verify.contains("No problems found"), "{verify}");
    assert!(verify.contains("Main partition table: ERROR"), "{verify}");
    assert!(verify.contains("Backup partition table: OK"), "{verify}");
    assert!(verify.contains("Main header: OK"), "{verify}");
}

#[test]
fn no_table_has_no_table() {
    let img = fixture("no-table.img");
    let out = run(cmd("sfdisk").arg("--dump").arg(&img));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("does not contain a recognized partition table")
    );
    let bytes = std::fs::read(&img).expect("reading no-table.img");
    assert!(bytes.iter().all(|&b| b == 0));
}

#[test]
fn truncated_ends_inside_the_fat() {
    let side = sidecar("truncated");
    let len = std::fs::metadata(fixture("truncated.img"))
        .expect("stat")
        .len();
    assert_eq!(len, u(&side["size_bytes"]));
    let fw = &side["firmware"];
    assert!(len > u(&fw["offset_bytes"]) && len < u(&fw["offset_bytes"]) + u(&fw["size_bytes"]));
}

/// (image, sidecar key of its FAT) for the images whose FAT must be clean.
const GOOD_FATS: [(&str, &str); 6] = [
    ("nixos", "firmware"),
    ("nixos-full", "firmware"),
    ("rpios", "firmware"),
    ("uefi", "firmware"),
    ("hybrid", "firmware"),
    ("gpt", "esp"),
];

#[test]
fn good_fats_are_fsck_clean_and_identified_by_blkid() {
    for (name, key) in GOOD_FATS {
        let img = fixture(&format!("{name}.img"));
        let fat = &sidecar(name)[key];
        let (ok, text) = fsck_fat(&img, u(&fat["offset_bytes"]), u(&fat["size_bytes"]));
        assert!(ok, "fsck.fat -n on {name}:\n{text}");
        let id = blkid(&img, u(&fat["offset_bytes"]));
        assert_eq!(id["TYPE"], "vfat", "{name}");
        assert_eq!(id["VERSION"], s(&fat["fat_type"]), "{name}");
        assert_eq!(id["LABEL"], s(&fat["label"]), "{name}");
    }
}

#[test]
fn fat_files_match_sidecar_via_mtools() {
    for (name, key) in GOOD_FATS {
        let img = fixture(&format!("{name}.img"));
        let fat = &sidecar(name)[key];
        let off = u(&fat["offset_bytes"]);
        let files = fat["files"].as_array().expect("files");
        assert!(!files.is_empty(), "{name} lists no files");
        for f in files {
            let data = mcopy_out(&img, off, s(&f["path"]));
            assert_eq!(data.len() as u64, u(&f["size"]), "{name}: {}", f["path"]);
            assert_eq!(sha256sum(&data), s(&f["sha256"]), "{name}: {}", f["path"]);
        }
        for d in fat["dirs"].as_array().expect("dirs") {
            mdir(&img, off, s(d));
        }
    }
}

#[test]
fn nixos_firmware_has_the_sd_image_files() {
    let side = sidecar("nixos");
    let names: Vec<&str> = side["firmware"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| s(&f["path"]))
        .collect();
    for want in [
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
        "start4.elf",
        "fixup4.dat",
        "config.txt",
        "u-boot-rpi3.bin",
        "u-boot-rpi4.bin",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // The blobs are Debian's, byte for byte.
    let img = fixture("nixos.img");
    let off = u(&side["firmware"]["offset_bytes"]);
    let uboot = std::fs::read(uboot_rpi3(UBOOT_OLD)).expect("reading u-boot.bin");
    assert_eq!(mcopy_out(&img, off, "u-boot-rpi3.bin"), uboot);
    let bootcode = std::fs::read(blob(
        "raspi-firmware",
        FW_OLD,
        "usr/lib/raspi-firmware/bootcode.bin",
    ))
    .expect("bootcode.bin");
    assert_eq!(mcopy_out(&img, off, "bootcode.bin"), bootcode);
    let config = String::from_utf8(mcopy_out(&img, off, "config.txt")).expect("utf-8 config.txt");
    assert!(
        config.contains("[pi3]\nkernel=u-boot-rpi3.bin\n"),
        "{config}"
    );
    // mtools lists the files in the order they were copied: sorted, as nixpkgs does.
    let listing = mdir(&img, off, "");
    let pos = |n: &str| {
        listing
            .find(n)
            .unwrap_or_else(|| panic!("{n} not in {listing}"))
    };
    assert!(
        pos("bootcode") < pos("config")
            && pos("config") < pos("fixup")
            && pos("start_x") < pos("u-boot-rpi3.bin")
    );
}

#[test]
fn uefi_config_txt_is_pftf_crlf() {
    let side = sidecar("uefi");
    let img = fixture("uefi.img");
    let off = u(&side["firmware"]["offset_bytes"]);
    let config = String::from_utf8(mcopy_out(&img, off, "config.txt")).expect("utf-8");
    assert!(config.ends_with("\r\n"));
    assert_eq!(
        config.matches("\r\n").count(),
        config.matches('\n').count(),
        "every line ends in CRLF"
    );
    assert!(config.contains("armstub=RPI_EFI.fd\r\n"));
    let efi = mcopy_out(&img, off, "EFI/BOOT/BOOTAA64.EFI");
    assert_eq!(&efi[..2], b"MZ", "BOOTAA64.EFI is a PE image");
    assert_eq!(mcopy_out(&img, off, "RPI_EFI.fd").len(), 2 << 20);
}

#[test]
fn rpios_cmdline_names_the_root_partuuid() {
    let side = sidecar("rpios");
    let img = fixture("rpios.img");
    let cmdline = String::from_utf8(mcopy_out(
        &img,
        u(&side["firmware"]["offset_bytes"]),
        "cmdline.txt",
    ))
    .expect("utf-8");
    assert!(cmdline.contains("root=PARTUUID=3e247b30-02"), "{cmdline}");
    assert!(
        side["firmware"]["dirs"]
            .as_array()
            .expect("dirs")
            .iter()
            .any(|d| d == "overlays")
    );
}

#[test]
fn fat_loop_is_caught_by_fsck() {
    let side = sidecar("fat-loop");
    let fw = &side["firmware"];
    let (ok, text) = fsck_fat(
        &fixture("fat-loop.img"),
        u(&fw["offset_bytes"]),
        u(&fw["size_bytes"]),
    );
    assert!(!ok, "fsck.fat accepted the looping chain:\n{text}");
    assert!(text.contains("Circular cluster chain"), "{text}");
    assert!(text.to_uppercase().contains("BOOTCODE.BIN"), "{text}");
}

#[test]
fn root_filesystems_are_e2fsck_clean() {
    for name in ["nixos", "nixos-full", "rpios", "hybrid", "gpt"] {
        let side = sidecar(name);
        let off = if name == "gpt" {
            u(&side["table"]["partitions"][1]["start_lba"]) * 512
        } else {
            u(&side["root"]["offset_bytes"])
        };
        let (ok, text) = e2fsck(&fixture(&format!("{name}.img")), off);
        assert!(ok, "e2fsck -fn on {name}:\n{text}");
    }
}

#[test]
fn nixos_root_has_extlinux_conf() {
    let side = sidecar("nixos");
    let img = fixture("nixos.img");
    let spec = format!(
        "{}?offset={}",
        img.display(),
        u(&side["root"]["offset_bytes"])
    );
    let text = run_ok(
        cmd("debugfs")
            .args(["-R", "cat /boot/extlinux/extlinux.conf"])
            .arg(spec),
    );
    assert!(text.contains("LABEL nixos-default"), "{text}");
    let id = blkid(&img, u(&side["root"]["offset_bytes"]));
    assert_eq!(
        (id["TYPE"].as_str(), id["LABEL"].as_str()),
        ("ext4", "NIXOS_SD")
    );
}

#[test]
fn bootable_images_have_power_of_two_sizes() {
    for name in [
        "nixos",
        "nixos-full",
        "rpios",
        "uefi",
        "hybrid",
        "gpt",
        "fat-type-ef",
        "fat-loop",
    ] {
        let len = std::fs::metadata(fixture(&format!("{name}.img")))
            .expect("stat")
            .len();
        assert!(len.is_power_of_two(), "{name}.img is {len} bytes");
        assert_eq!(len, u(&sidecar(name)["size_bytes"]), "{name}");
    }
}
