//! Command-line arguments (clap derive). Only the command layer sees these types; domain code
//! takes plain values.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// pifw keeps a Raspberry Pi's FAT firmware partition healthy: status, updates of the Pi
/// firmware and U-Boot, a switch to UEFI, and a way back.
#[derive(Debug, Parser)]
#[command(name = "pifw", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 healthy, 1 error, 2 usage, 3 problems found on the card.")]
pub struct Cli {
    /// Print machine-readable JSON (schema documented in docs/status-json.md).
    #[arg(long, global = true)]
    pub json: bool,

    /// Read manifests from DIR instead of the ones built into pifw.
    #[arg(long, global = true, value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// The board the card is for (pi3b, pi3bplus, pi3aplus, pi02w, cm3, pi4b, pi400, cm4).
    /// Default: this Pi's device tree, else inferred from the card.
    #[arg(long, global = true, value_name = "BOARD")]
    pub board: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what is on the card: partitions, firmware, versions, boot chain, problems.
    Status {
        /// A whole-disk image file or block device (e.g. sdcard.img, /dev/sdb, /dev/mmcblk0).
        /// Default: on a Pi, its own card; elsewhere, pick from a list (on a terminal).
        target: Option<PathBuf>,
    },
    /// List or show the releases and boards pifw knows.
    #[command(subcommand)]
    Manifests(ManifestsCommand),
    /// Update the Pi firmware blobs (bootcode.bin, start*.elf, fixup*.dat) to a release.
    UpdateFirmware {
        /// The release to install (default: the newest pinned one), e.g. 1.20240424.
        #[arg(long, value_name = "V")]
        version: Option<String>,
        #[command(flatten)]
        fetch: FetchArgs,
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
    /// Update U-Boot to a release's build for the board, under the name config.txt uses.
    UpdateUboot {
        /// The release to install (default: the newest pinned one), e.g. 2025.01.
        #[arg(long, value_name = "V")]
        version: Option<String>,
        #[command(flatten)]
        fetch: FetchArgs,
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
    /// List the backups pifw kept for this card (on this machine and on the card).
    Backups {
        /// Delete this machine's backups beyond `keep_backups` per card (oldest first),
        /// listing each; without it pifw never deletes a backup.
        #[arg(long)]
        prune: bool,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
    /// Return the card to the state before a change, from its backup (default: the newest).
    Rollback {
        /// The backup id to return to (see pifw backups).
        #[arg(long, value_name = "ID")]
        to: Option<String>,
        /// Restore even if the files changed since the backup was made.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
    /// Finish or undo a change that was interrupted (power cut, crash).
    Recover {
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
    /// Change the partition table: hybrid GPT/MBR for UEFI, or back to plain MBR.
    #[command(subcommand)]
    Partition(PartitionCommand),
    /// Switch the boot chain: to the pftf UEFI firmware, or back to U-Boot.
    #[command(subcommand)]
    Switch(SwitchCommand),
    /// Move a card that runs pftf UEFI to another pftf release, keeping the UEFI settings
    /// saved in RPI_EFI.fd (the same as `switch uefi` on a card already on UEFI).
    UpdateUefi {
        /// The pftf release, e.g. v1.39 (default: the newest pinned one).
        #[arg(long, value_name = "V")]
        version: Option<String>,
        #[command(flatten)]
        fetch: FetchArgs,
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PartitionCommand {
    /// Convert an MBR disk to GPT plus a hybrid MBR that a Pi 3's boot ROM still reads.
    Hybrid {
        /// On an image file whose last partition runs to the end: grow the file to make room
        /// for the backup GPT.
        #[arg(long)]
        grow: bool,
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
    /// Return a hybrid disk to the plain MBR it had, from the backup pifw kept.
    Mbr {
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SwitchCommand {
    /// Install the pftf UEFI firmware for the board (RPi3 for Pi 3 models).
    Uefi {
        /// The pftf release, e.g. v1.39 (default: the newest pinned one).
        #[arg(long, value_name = "V")]
        version: Option<String>,
        /// Also convert the disk to hybrid GPT/MBR (see pifw partition hybrid).
        #[arg(long)]
        hybrid: bool,
        /// With --hybrid on an image file: grow it to make room for the backup GPT.
        #[arg(long)]
        grow: bool,
        /// Boot loader to install at EFI/BOOT/BOOTAA64.EFI.
        #[arg(long, value_name = "NAME", requires = "efi")]
        bootloader: Option<Bootloader>,
        /// The boot loader's EFI binary (e.g. systemd-bootaa64.efi, grubaa64.efi).
        #[arg(long, value_name = "FILE", requires = "bootloader")]
        efi: Option<PathBuf>,
        /// Install the loader even though it has nothing to boot yet (no boot entry, no
        /// grub.cfg on the card): for preparing a card in steps. The card will NOT boot until
        /// the OS has put its entries there.
        #[arg(long, requires = "bootloader")]
        allow_no_boot_entries: bool,
        #[command(flatten)]
        fetch: FetchArgs,
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
    /// Return from UEFI to the U-Boot setup the card had, from the backup pifw kept.
    Uboot {
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bootloader {
    SystemdBoot,
    Grub,
}

/// Options of every command that changes the card.
#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// Show the plan and stop; the target is only read.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when there is no terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Where release files come from.
#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// Take the files from PATH (a file, a directory, a .zip or a .deb) instead of downloading.
    #[arg(long, value_name = "PATH")]
    pub from: Option<PathBuf>,
    /// Accept a --from file that matches no pin in the manifests (recorded as unpinned).
    #[arg(long)]
    pub allow_unpinned: bool,
    /// Install an older release than the one on the card.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Use only files already in pifw's cache.
    #[arg(long)]
    pub offline: bool,
    /// Debian mirror for Debian-packaged releases (default: config file, then apt sources).
    #[arg(long, value_name = "URL")]
    pub debian_mirror: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ManifestsCommand {
    /// Every board and release, one line each.
    List,
    /// One board (`pi3b`) or the releases of a kind (`u-boot`, `firmware`, `uefi`),
    /// optionally one version (`u-boot 2023.01`).
    Show {
        /// A board id, or a kind: firmware, u-boot, uefi.
        name: String,
        /// A version of that kind.
        version: Option<String>,
    },
}
