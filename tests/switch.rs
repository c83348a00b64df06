//! `pifw switch uefi` and `pifw switch uboot` end to end, judged from outside pifw.
//!
//! The pftf release zip cannot be downloaded on the machines that run these tests, so each
//! test builds a zip with pftf's layout (FIELD-NOTES: RPi3 zip members) from real parts:
//! bootcode.bin, start.elf and fixup.dat from Debian's raspi-firmware 1.20240424, the Pi 3
//! device tree from Debian's arm64 kernel package (under pftf's downstream name), pftf's
//! config.txt as published (CRLF), and as `RPI_EFI.fd` a stand-in laid out like pftf RPi3
//! v1.50's (0x1f0000 bytes, the NV variable store at 0x1d0000; `common::pftf_layout_fd`).
//! **No real RPI_EFI.fd could be had**: pftf's releases cannot be downloaded on these
//! machines and none was built from source, so the settings carry-over is proven on that
//! layout with variables written and read back by virt-fw-vars (PyPI virt-firmware, an
//! independent EDK2 variable-store tool), not on pftf's own build. (The real firmware cannot
//! run in QEMU anyway.) The boot loader is Debian's real
//! systemd-bootaa64.efi, and U-Boot's own UEFI (`bootefi`) in QEMU must start it from the
//! fallback path and show its menu.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const FAT: u64 = 8 * 1024 * 1024;
const FAT_LEN: u64 = 30 * 1024 * 1024;

/// pftf's zip carries Wi-Fi firmware in a directory of its own.
const WIFI: &[(&str, &[u8])] = &[("firmware/Readme.txt", b"Wi-Fi firmware would be here\n")];

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn systemd_boot() -> PathBuf {
    blob(
        "systemd-boot-efi",
        "252.39-1~deb12u2",
        "usr/lib/systemd/boot/efi/systemd-bootaa64.efi",
    )
}

/// Every path on the FAT, directories with a trailing `/`, as mtools lists them.
fn card_listing(image: &Path) -> Vec<String> {
    let mut v: Vec<String> = run_ok(
        cmd("mdir")
            .arg("-/")
            .arg("-b")
            .arg("-i")
            .arg(format!("{}@@{FAT}", image.display()))
            .arg("::/"),
    )
    .lines()
    .map(|l| l.to_lowercase())
    // pifw's identity file: the first change creates it and switching back keeps it
    // (common::card_files leaves it out likewise; the test checks it on its own).
    .filter(|l| l != "::/pifw-id.txt")
    .collect();
    v.sort();
    v
}

/// `pifw status --json`, which may exit 3 (warnings: a 30 MiB partition for systemd-boot).
fn status(image: &Path) -> serde_json::Value {
    let out = run(pifw().args(["status", "--json"]).arg(image));
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "pifw status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status json")
}

fn assert_fsck_clean(image: &Path) {
    assert_fsck_clean_at(image, FAT, FAT_LEN);
}

/// nixos-esp.img: the NixOS layout with a 256 MiB firmware partition that already holds a
/// systemd-boot entry, its kernel and initrd (scripts/mkimages build_nixos_esp).
const ESP_LEN: u64 = 256 * 1024 * 1024;

fn assert_fsck_clean_len(image: &Path, len: u64) {
    assert_fsck_clean_at(image, FAT, len);
}

/// The first finding: on the NixOS card (30 MiB FAT, U-Boot + extlinux on the root, no
/// boot entry on the firmware partition) systemd-boot would have nothing to boot. Refused
/// before any write, with the numbers and the way forward; --dry-run the same; the override
/// does not help a partition too small for one kernel.
#[test]
fn systemd_boot_with_nothing_to_boot_is_refused_and_dry_run_says_the_same() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = pftf_zip(dir.path(), "z.zip", &pftf_layout_fd(0x11), WIFI);
    let sha = sha256sum(&std::fs::read(&img).expect("img"));
    let sd = systemd_boot();
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "switch",
            "uefi",
            "--from",
            s(&zip),
            "--allow-unpinned",
            "--bootloader",
            "systemd-boot",
            "--efi",
            s(&sd),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v.push(s(&img).to_string());
        v
    };
    let run_with = |extra: &[&'static str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        env.pifw(&a)
    };
    let real = run_with(&["--yes"]);
    let dry = run_with(&["--dry-run"]);
    for out in [&real, &dry] {
        assert_eq!(out.status.code(), Some(1));
    }
    let err = String::from_utf8_lossy(&real.stderr).to_string();
    assert_eq!(err, String::from_utf8_lossy(&dry.stderr), "dry run differs");
    for want in [
        "nothing to boot",
        "no loader/entries/*.conf",
        "30.0 MiB",
        "31.4 MiB kernel, Debian 6.1 measured",
        "16.0 MiB initrd, an estimate",
        "--hybrid --grow only adds room for the backup GPT",
        "--allow-no-boot-entries does not change that",
        "nothing was written",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert_eq!(sha256sum(&std::fs::read(&img).expect("img")), sha);
    // The override is for cards that could boot once the OS has written its entries; this
    // one cannot hold a kernel at all.
    let out = run_with(&["--allow-no-boot-entries", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too small"));
    assert_eq!(sha256sum(&std::fs::read(&img).expect("img")), sha);
    // pifw's own status of the untouched card: still U-Boot, no error from the attempt.
    assert!(
        env.backups()
            .read_dir()
            .map_or(true, |mut d| d.next().is_none())
    );
}

/// A card whose firmware partition already holds what the OS's systemd-boot module writes
/// (loader.conf, an entry, its kernel and initrd): the switch goes through, status follows
/// the chain to that entry, and U-Boot's own UEFI in QEMU starts systemd-boot from the
/// fallback path, whose menu lists the entry's title.
#[test]
fn switch_to_uefi_with_systemd_boot_starts_it_and_switch_uboot_restores_exactly() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos-esp.img");
    let before = card_files(&img, FAT);
    let listing = card_listing(&img);
    let dir = tempfile::tempdir().expect("tempdir");
    let fd = pftf_layout_fd(0x11);
    let zip = pftf_zip(dir.path(), "RPi3_UEFI_Firmware_test.zip", &fd, WIFI);

    // An unpinned zip is refused without the flag, and nothing is written.
    let sha = sha256sum(&std::fs::read(&img).expect("img"));
    let out = env.pifw(&["switch", "uefi", "--from", s(&zip), "--yes", s(&img)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--allow-unpinned"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256sum(&std::fs::read(&img).expect("img")), sha);

    let out = env.pifw_ok_all(&[
        "switch",
        "uefi",
        "--from",
        s(&zip),
        "--allow-unpinned",
        "--bootloader",
        "systemd-boot",
        "--efi",
        s(&systemd_boot()),
        "--yes",
        s(&img),
    ]);
    assert!(
        out.contains("systemd-boot will start \"NixOS\" (loader/entries/nixos-generation-1.conf)"),
        "{out}"
    );
    assert!(out.contains("boot.loader.systemd-boot.enable"), "{out}");
    assert_fsck_clean_len(&img, ESP_LEN);

    let after = card_files(&img, FAT);
    assert_eq!(after["rpi_efi.fd"], sha256sum(&fd));
    assert_eq!(
        after["efi/boot/bootaa64.efi"],
        sha256sum(&std::fs::read(systemd_boot()).expect("sd-boot"))
    );
    assert!(after.contains_key("loader/loader.conf"), "{after:?}");
    assert!(after.contains_key("firmware/readme.txt"), "{after:?}");
    let config = String::from_utf8(mcopy_out(&img, FAT, "config.txt")).expect("utf-8");
    assert!(config.starts_with(PFTF_CONFIG), "{config}");
    assert!(
        config.contains("# pifw: off for UEFI: kernel=u-boot-rpi3.bin"),
        "{config}"
    );
    // U-Boot and the user's other files stay.
    assert_eq!(after["u-boot-rpi3.bin"], before["u-boot-rpi3.bin"]);

    // pifw's own view: the chain is UEFI now.
    let status = status(&img);
    let kinds: Vec<&str> = status["chains"]
        .as_array()
        .expect("chains")
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"uefi"), "{kinds:?}");
    let efi = &status["chains"][0]["efi"];
    assert_eq!(efi["loader"], "systemd-boot", "{efi}");
    assert_eq!(efi["default_entry"], "nixos-generation-1.conf", "{efi}");
    assert_eq!(efi["boots"], "NixOS", "{efi}");
    assert_eq!(efi["reaches_os"], true, "{efi}");
    assert_eq!(status["health"], "ok", "{:#}", status["findings"]);

    // U-Boot's UEFI starts the loader from the fallback path and systemd-boot draws its menu,
    // listing the entry the OS put there (the title systemd-boot shows is the entry's).
    let outs = qemu_uboot_until(
        &img,
        &uboot_rpi3(UBOOT_OLD),
        &[
            "fatload mmc 0:1 ${kernel_addr_r} EFI/BOOT/BOOTAA64.EFI",
            "bootefi ${kernel_addr_r}",
        ],
        "Boot in",
    );
    assert!(outs[0].contains("123434 bytes read"), "{}", outs[0]);
    assert!(outs[1].contains("NixOS"), "{}", outs[1]);

    // Back to U-Boot: exactly the files the card had.
    env.pifw_ok_all(&["switch", "uboot", "--yes", s(&img)]);
    let back = card_files(&img, FAT);
    let extra: Vec<&String> = back.keys().filter(|k| !before.contains_key(*k)).collect();
    assert!(extra.is_empty(), "left behind: {extra:?}");
    assert_eq!(back, before);
    // The directories the switch created (EFI/BOOT/, firmware/) are gone too.
    assert_eq!(card_listing(&img), listing);
    // The card keeps the identity the switch gave it.
    assert!(card_id_on(&img, FAT).is_some());
    assert_fsck_clean_len(&img, ESP_LEN);
}

/// Borrowed views of owned arguments.
fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `switch uefi` from the pftf zip `zip` (unpinned) with Debian's systemd-boot, on `img`,
/// with `flags` before the target.
fn switch_uefi_sdboot(zip: &Path, img: &Path, flags: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "switch",
        "uefi",
        "--from",
        s(zip),
        "--allow-unpinned",
        "--bootloader",
        "systemd-boot",
        "--efi",
        s(&systemd_boot()),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(flags.iter().map(|f| f.to_string()));
    args.push(s(img).to_string());
    args
}

#[test]
fn switch_uefi_hybrid_converts_the_table_and_switch_uboot_undoes_both() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos-esp.img");
    let before = card_files(&img, FAT);
    let table_before = sfdisk_dump(&img);
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = pftf_zip(dir.path(), "z.zip", &pftf_layout_fd(0x11), WIFI);
    env.pifw_ok_all(&strs(&switch_uefi_sdboot(
        &zip,
        &img,
        &["--hybrid", "--grow", "--yes"],
    )));
    let verify = sgdisk_verify(&img);
    assert!(verify.contains("No problems found"), "{verify}");
    assert!(sfdisk_dump(&img).contains("label: gpt"));
    let mbr = sfdisk_dump_mbr(&img);
    assert!(mbr.contains("type=b") && mbr.contains("type=ee"), "{mbr}");
    assert_fsck_clean_len(&img, ESP_LEN);

    // U-Boot's UEFI on the GPT disk: the firmware partition is an EFI System Partition now,
    // and systemd-boot starts from it. QEMU needs a power-of-two card: pad a copy.
    let padded = dir.path().join("padded.img");
    std::fs::copy(&img, &padded).expect("copy");
    run_ok(cmd("truncate").arg("-s").arg("1G").arg(&padded));
    let outs = qemu_uboot_until(
        &padded,
        &uboot_rpi3(UBOOT_OLD),
        &[
            "part list mmc 0",
            "fatload mmc 0:1 ${kernel_addr_r} EFI/BOOT/BOOTAA64.EFI",
            "bootefi ${kernel_addr_r}",
        ],
        "Boot in",
    );
    assert!(outs[0].contains("EFI"), "{}", outs[0]);
    assert!(outs[2].contains("EFI Default Loader"), "{}", outs[2]);
    // On the MBR card U-Boot said "No EFI system partition"; on the GPT it finds one.
    assert!(!outs[2].contains("No EFI system partition"), "{}", outs[2]);

    // Back: the table from its saved sectors, the files from theirs.
    env.pifw_ok_all(&["switch", "uboot", "--yes", s(&img)]);
    assert_eq!(sfdisk_dump(&img), table_before);
    assert_eq!(card_files(&img, FAT), before);
    assert_fsck_clean_len(&img, ESP_LEN);
}

/// `--json` of a command that runs several changes is one document: `{schema, target,
/// steps[]}`, each step the file or table object it would print alone (docs/change-json.md).
#[test]
fn switch_uefi_hybrid_and_switch_uboot_print_one_json_document_each() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos-esp.img");
    let before = card_files(&img, FAT);
    let table_before = sfdisk_dump(&img);
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = pftf_zip(dir.path(), "z.zip", &pftf_layout_fd(0x11), WIFI);
    let one_document = |out: String| -> serde_json::Value {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not one JSON document: {e}\n{out}"))
    };

    let out = one_document(env.pifw_ok(&strs(&switch_uefi_sdboot(
        &zip,
        &img,
        &["--hybrid", "--grow", "--yes", "--json"],
    ))));
    assert_eq!(out["schema"], 1, "{out:#}");
    assert_eq!(out["target"], s(&img), "{out:#}");
    let steps = out["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{out:#}");
    // The files first (a file plan: batches), then the table (a table plan: action hybrid),
    // each with its result.
    assert!(steps[0]["batches"].is_array(), "{:#}", steps[0]);
    assert!(
        steps[0]["result"]["backup_id"].is_string(),
        "{:#}",
        steps[0]
    );
    assert_eq!(steps[1]["action"], "hybrid", "{:#}", steps[1]);
    assert_eq!(steps[1]["result"]["verified"], true, "{:#}", steps[1]);
    assert!(sfdisk_dump(&img).contains("label: gpt"));

    // Back: two backups undone, newest first (the table, then the files), one document.
    let out = one_document(env.pifw_ok(&["switch", "uboot", "--yes", "--json", s(&img)]));
    let steps = out["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{out:#}");
    assert_eq!(steps[0]["action"], "rollback", "{:#}", steps[0]);
    assert!(steps[0]["result"].is_object(), "{:#}", steps[0]);
    assert!(steps[1]["batches"].is_array(), "{:#}", steps[1]);
    assert!(steps[1]["result"].is_object(), "{:#}", steps[1]);
    assert_eq!(sfdisk_dump(&img), table_before);
    assert_eq!(card_files(&img, FAT), before);

    // A command that runs one change prints its object alone, without steps.
    let out = one_document(env.pifw_ok(&strs(&switch_uefi_sdboot(
        &zip,
        &img,
        &["--dry-run", "--json"],
    ))));
    assert!(
        out.get("steps").is_none() && out["batches"].is_array(),
        "{out:#}"
    );
    assert_eq!(out["dry_run"], true, "{out:#}");
    let out = one_document(env.pifw_ok(&["backups", "--json", s(&img)]));
    assert!(out.is_array(), "{out:#}");
    let out = status(&img);
    assert!(
        out.get("steps").is_none() && out["target"].is_object(),
        "{out:#}"
    );
}

#[test]
fn a_new_uefi_release_keeps_the_settings_saved_on_the_card() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos-esp.img");
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = pftf_zip(dir.path(), "v1.zip", &pftf_layout_fd(0x11), WIFI);
    // update-uefi is for cards already on UEFI.
    let out = env.pifw(&[
        "update-uefi",
        "--from",
        s(&v1),
        "--allow-unpinned",
        "--yes",
        s(&img),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("switch uefi"));
    env.pifw_ok_all(&[
        "switch",
        "uefi",
        "--from",
        s(&v1),
        "--allow-unpinned",
        "--bootloader",
        "systemd-boot",
        "--efi",
        s(&systemd_boot()),
        "--yes",
        s(&img),
    ]);
    // The firmware saves settings into its own file on the card; here virt-fw-vars writes
    // them into the card's copy, which goes back with mtools.
    let on_card = mcopy_out(&img, FAT, "RPI_EFI.fd");
    let saved = virt_fw_set(
        &on_card,
        &[
            ("Timeout", EFI_GLOBAL, &[5, 0]),
            ("BootOrder", EFI_GLOBAL, &[1, 0]),
        ],
    );
    assert_eq!(
        saved.len(),
        on_card.len(),
        "virt-fw-vars changed the file size"
    );
    let saved_path = dir.path().join("RPI_EFI.fd");
    std::fs::write(&saved_path, &saved).expect("write");
    run_ok(
        cmd("mcopy")
            .arg("-o")
            .arg("-i")
            .arg(format!("{}@@{FAT}", img.display()))
            .arg(&saved_path)
            .arg("::/RPI_EFI.fd"),
    );
    // status explains the changed hash instead of calling it damage, and names the settings.
    let status = status(&img);
    let findings = status["findings"].as_array().expect("findings");
    let saved_finding = findings
        .iter()
        .find(|f| f["code"] == "uefi-settings-saved")
        .unwrap_or_else(|| panic!("{findings:?}"));
    let msg = saved_finding["message"].as_str().expect("message");
    assert!(
        msg.contains("BootOrder") && msg.contains("Timeout") && msg.contains("0x1d0000"),
        "{msg}"
    );
    // The chain's armstub stage names the file as UEFI firmware and its settings.
    let armstub = status["chains"][0]["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["role"] == "armstub")
        .expect("armstub stage");
    let what = armstub["what"].as_str().expect("what");
    assert!(
        what.starts_with("UEFI firmware") && what.contains("Timeout") && !what.contains("unknown"),
        "{what}"
    );
    assert!(
        !findings.iter().any(|f| f["severity"] == "error"),
        "{findings:?}"
    );
    let new_code = pftf_layout_fd(0x22);
    let v2 = pftf_zip(dir.path(), "v2.zip", &new_code, WIFI);
    let out = env.pifw_ok_all(&[
        "update-uefi",
        "--from",
        s(&v2),
        "--allow-unpinned",
        "--yes",
        s(&img),
    ]);
    assert!(out.contains("2 variables"), "{out}");
    let on_card = mcopy_out(&img, FAT, "RPI_EFI.fd");
    assert_eq!(on_card.len(), new_code.len());
    assert_eq!(
        &on_card[..0x1d0000],
        &new_code[..0x1d0000],
        "code region not the new release"
    );
    // The independent reader finds the settings in the new file.
    let vars = virt_fw_list(&on_card);
    assert_eq!(
        vars.get("Timeout").map(String::as_str),
        Some("0500"),
        "{vars:?}"
    );
    assert_eq!(
        vars.get("BootOrder").map(String::as_str),
        Some("0100"),
        "{vars:?}"
    );
    assert_fsck_clean_len(&img, ESP_LEN);
}

#[test]
fn a_loader_that_is_not_aarch64_efi_is_refused() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = pftf_zip(dir.path(), "z.zip", &pftf_layout_fd(0x11), WIFI);
    let sha = sha256sum(&std::fs::read(&img).expect("img"));
    // U-Boot is not an EFI application.
    let out = env.pifw(&[
        "switch",
        "uefi",
        "--from",
        s(&zip),
        "--allow-unpinned",
        "--bootloader",
        "systemd-boot",
        "--efi",
        s(&uboot_rpi3(UBOOT_OLD)),
        "--yes",
        s(&img),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AArch64 EFI"), "{err}");
    assert_eq!(sha256sum(&std::fs::read(&img).expect("img")), sha);
}

/// GRUB as the loader: Debian's monolithic grubaa64.efi at the fallback path. With no
/// grub.cfg where it looks (its built-in prefix /EFI/debian, then EFI/BOOT) the switch is
/// refused; with --allow-no-boot-entries (a card prepared in steps) it goes through, says
/// loudly that the card will not boot yet, and U-Boot's UEFI in QEMU shows GRUB stopping at
/// its prompt, as predicted.
#[test]
fn switch_to_uefi_with_grub_starts_it() {
    let env = Env::new();
    let (_tmp, img) = fixture_copy("nixos.img");
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = pftf_zip(dir.path(), "z.zip", &pftf_layout_fd(0x11), WIFI);
    let grub = blob(
        "grub-efi-arm64-bin",
        "2.06-13+deb12u2",
        "usr/lib/grub/arm64-efi/monolithic/grubaa64.efi",
    );
    // GRUB is not systemd-boot: naming it so is refused.
    let out = env.pifw(&[
        "switch",
        "uefi",
        "--from",
        s(&zip),
        "--allow-unpinned",
        "--bootloader",
        "systemd-boot",
        "--efi",
        s(&grub),
        "--yes",
        s(&img),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not look like systemd-boot"));
    let sha = sha256sum(&std::fs::read(&img).expect("img"));
    let refused = env.pifw(&[
        "switch",
        "uefi",
        "--from",
        s(&zip),
        "--allow-unpinned",
        "--bootloader",
        "grub",
        "--efi",
        s(&grub),
        "--yes",
        s(&img),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("GRUB would find no grub.cfg")
            && err.contains("EFI/debian/grub.cfg")
            && err.contains("EFI/BOOT/grub.cfg"),
        "{err}"
    );
    assert_eq!(sha256sum(&std::fs::read(&img).expect("img")), sha);
    let args = [
        "switch",
        "uefi",
        "--from",
        s(&zip),
        "--allow-unpinned",
        "--bootloader",
        "grub",
        "--efi",
        s(&grub),
        "--allow-no-boot-entries",
        "--yes",
        s(&img),
    ];
    // GRUB's 4.1 MiB beside pftf's files: the boot set's batch would not find room for its
    // new copies once GRUB is in. Refused before the first write, with what to remove.
    let sha = sha256sum(&std::fs::read(&img).expect("img"));
    let out = env.pifw(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not enough free space") && err.contains("start4"),
        "{err}"
    );
    assert_eq!(sha256sum(&std::fs::read(&img).expect("img")), sha);
    // Do what it says: a Pi 3 card does not need the Pi 4 files.
    for f in [
        "start4.elf",
        "start4cd.elf",
        "start4db.elf",
        "start4x.elf",
        "fixup4.dat",
        "fixup4cd.dat",
        "fixup4db.dat",
        "fixup4x.dat",
    ] {
        run_ok(
            cmd("mdel")
                .arg("-i")
                .arg(format!("{}@@{FAT}", img.display()))
                .arg(format!("::/{f}")),
        );
    }
    let out = env.pifw_ok_all(&args);
    assert!(out.contains("THE CARD WILL NOT BOOT"), "{out}");
    assert!(out.contains("efiInstallAsRemovable"), "{out}");
    assert_fsck_clean(&img);
    // Loaded high: at kernel_addr_r the 4.3 MB image runs into U-Boot's device tree.
    let outs = qemu_uboot_until(
        &img,
        &uboot_rpi3(UBOOT_OLD),
        &[
            "fatload mmc 0:1 0x10000000 EFI/BOOT/BOOTAA64.EFI",
            "bootefi 0x10000000",
        ],
        "grub>",
    );
    assert!(outs[0].contains("4337664 bytes read"), "{}", outs[0]);
    assert!(outs[1].contains("GNU GRUB  version 2.06"), "{}", outs[1]);
}
