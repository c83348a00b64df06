//! The views of `pifw switch uefi|uboot`: what to do next in the OS after a switch to UEFI,
//! and what `switch uboot` undoes.

use super::output;
use crate::cli::Bootloader;
use std::io::Write;

/// Before the file plan of a `switch uefi --hybrid` (the table plan was shown first).
pub fn then_files(json: bool) {
    if !json {
        println!("Then, in the same run, the files:");
    }
}

/// `switch uboot` undoes `first` changes made after the switch to UEFI, too.
pub fn undoes_since(first: usize) {
    if first > 0 {
        output::note(format_args!(
            "note: {first} change{} made since the switch to UEFI {} undone too, newest first",
            if first == 1 { " was" } else { "s were" },
            if first == 1 { "is" } else { "are" }
        ));
    }
}

/// What to do next in the OS on the card, after `switch uefi`.
pub fn next_steps(loader: Option<Bootloader>, hybrid: bool) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(
        o,
        "\nNext, in the OS on the card (pifw does not edit the root filesystem), so that each"
    );
    let _ = writeln!(
        o,
        "update keeps writing its boot entries where the loader reads them:"
    );
    match loader {
        Some(Bootloader::SystemdBoot) => {
            let _ = writeln!(o, "  NixOS: boot.loader.systemd-boot.enable = true;");
            let _ = writeln!(
                o,
                "         boot.loader.efi.canTouchEfiVariables = false;  # the firmware keeps no boot entries"
            );
            let _ = writeln!(
                o,
                "         boot.loader.generic-extlinux-compatible.enable = false;"
            );
            let _ = writeln!(
                o,
                "         fileSystems.\"/boot\" = {{ device = \"/dev/disk/by-label/FIRMWARE\"; fsType = \"vfat\"; }};"
            );
            let _ = writeln!(
                o,
                "         (the firmware partition becomes /boot, mounted, not noauto)"
            );
        }
        Some(Bootloader::Grub) => {
            let _ = writeln!(
                o,
                "  NixOS: boot.loader.grub = {{ enable = true; efiSupport = true; efiInstallAsRemovable = true; device = \"nodev\"; }};"
            );
            let _ = writeln!(
                o,
                "         boot.loader.efi.efiSysMountPoint = \"/boot/firmware\";  # mounted, not noauto"
            );
            let _ = writeln!(
                o,
                "         boot.loader.generic-extlinux-compatible.enable = false;"
            );
        }
        None => {
            let _ = writeln!(
                o,
                "  Install a UEFI boot loader at EFI/BOOT/BOOTAA64.EFI on the firmware partition"
            );
            let _ = writeln!(
                o,
                "  (pifw switch uefi --bootloader systemd-boot|grub --efi FILE does it)."
            );
        }
    }
    if hybrid {
        let _ = writeln!(
            o,
            "  The disk is now GPT to Linux: root=PARTUUID= values change to the GPT partition GUIDs (pifw status shows them)."
        );
    }
    let _ = writeln!(
        o,
        "pifw status shows which entry will boot. Back to U-Boot: pifw switch uboot (U-Boot's files"
    );
    let _ = writeln!(
        o,
        "stayed on the card; on NixOS first set generic-extlinux-compatible.enable = true and run"
    );
    let _ = writeln!(
        o,
        "nixos-rebuild boot, so extlinux.conf names the current generation). A Pi 3 has no automatic"
    );
    let _ = writeln!(
        o,
        "fallback: if it does not come up, run pifw switch uboot on the card from another machine."
    );
}
