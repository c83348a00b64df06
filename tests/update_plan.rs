//! The update planner on real fixtures: which files an update would install, judged against
//! the blobs in Debian's packages (the same bytes the manifests pin) and the card's own names.

mod common;

use common::*;
use pifw::disk::target::Target;
use pifw::manifest::{Manifests, ReleaseKind};
use pifw::status::{self, BoardChoice, Report, TargetInfo};
use pifw::update;

fn report(name: &str, board: Option<&str>) -> (Manifests, Report) {
    let m = Manifests::embedded().unwrap();
    let path = fixture(name);
    let mut t = Target::open_read(&path).unwrap();
    let info = TargetInfo {
        path: path.display().to_string(),
        kind: t.kind,
        size_bytes: t.size_bytes,
        read_only: true,
    };
    let choice = match board {
        Some(id) => BoardChoice::Given { id: id.into() },
        None => BoardChoice::Unknown,
    };
    let r = status::inspect(&mut t.file, info, &m, choice).unwrap();
    (m, r)
}

#[test]
fn firmware_update_replaces_every_blob_the_card_has_with_the_new_release() {
    let (m, r) = report("nixos.img", None);
    let boards = update::target_boards(&r, &m);
    let ids: Vec<&str> = boards.iter().map(|b| b.id.as_str()).collect();
    assert!(ids.contains(&"pi3b") && !ids.contains(&"pi4b"), "{ids:?}");
    let rel =
        update::choose_release(&m, ReleaseKind::Firmware, Some("1.20240424"), &boards).unwrap();
    let installs = update::firmware_installs(&r, rel, &boards);
    let dests: Vec<&str> = installs.iter().map(|i| i.dest.as_str()).collect();
    for must in [
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
        "start_cd.elf",
        "fixup_x.dat",
    ] {
        assert!(dests.contains(&must), "{must} missing from {dests:?}");
    }
    // Pi 4 blobs are not for the boards this card serves; U-Boot and config.txt are untouched.
    assert!(!dests.iter().any(|d| d.starts_with("start4")), "{dests:?}");
    assert!(!dests.contains(&"config.txt") && !dests.contains(&"u-boot-rpi3.bin"));
    // Every pinned hash equals the real file in Debian's 1.20240424 package.
    for i in &installs {
        let real = blob(
            "raspi-firmware",
            "1.20240424+ds-6",
            &format!("usr/lib/raspi-firmware/{}", i.file.dest),
        );
        assert_eq!(
            sha256sum(&std::fs::read(&real).unwrap()),
            i.file.sha256,
            "{}",
            i.dest
        );
        assert!(!i.unchanged());
        assert_eq!(
            i.current.as_ref().unwrap().version.as_deref(),
            Some("1.20220830")
        );
    }
    update::check_downgrade(&installs, rel, false).unwrap();

    // The same release again is all unchanged; an older one is a downgrade.
    let (_, newer) = report("nixos-full.img", None);
    let installs = update::firmware_installs(&newer, rel, &boards);
    assert!(installs.iter().all(|i| i.unchanged()));
    let old =
        update::choose_release(&m, ReleaseKind::Firmware, Some("1.20220830"), &boards).unwrap();
    let back = update::firmware_installs(&newer, old, &boards);
    let err = update::check_downgrade(&back, old, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--allow-downgrade") && err.contains("1.20240424"),
        "{err}"
    );
    update::check_downgrade(&back, old, true).unwrap();
}

#[test]
fn uboot_update_keeps_the_build_and_the_cards_name() {
    let (m, r) = report("nixos.img", Some("pi3b"));
    let board = m.board("pi3b").unwrap();
    let rel = update::choose_release(&m, ReleaseKind::UBoot, Some("2025.01"), &[board]).unwrap();
    let (install, edit) = update::uboot_install(&r, rel, board).unwrap();
    assert_eq!(install.dest, "u-boot-rpi3.bin");
    assert_eq!(install.file.build.as_deref(), Some("rpi_3"));
    assert!(!edit, "config.txt already names u-boot-rpi3.bin for [pi3]");
    let real = blob(
        "u-boot-rpi",
        "2025.01-3+deb13u1",
        "usr/lib/u-boot/rpi_3/u-boot.bin",
    );
    assert_eq!(
        sha256sum(&std::fs::read(real).unwrap()),
        install.file.sha256
    );
    // Without --version the newest pinned release is chosen.
    let newest = update::choose_release(&m, ReleaseKind::UBoot, None, &[board]).unwrap();
    assert!(newest.version.starts_with("2025.01"), "{}", newest.version);
    // A pftf release pins no member files: refused before anything is fetched.
    let err = update::choose_release(&m, ReleaseKind::Uefi, Some("v1.39"), &[board]).unwrap_err();
    assert!(err.to_string().contains("pins none of its files"), "{err}");
}
