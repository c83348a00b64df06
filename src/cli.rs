//! Command-line arguments (clap derive). Only the command layer sees these types; domain code
//! takes plain values.
//!
//! Every command's `--help` ends with an example and the command's exit codes (`after_help`);
//! the man page and the shell completions are generated from these same definitions
//! (`pifw man`, `pifw completions SHELL`), so they cannot drift from the parser.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// pifw keeps a Raspberry Pi's FAT firmware partition healthy: status, updates of the Pi
/// firmware and U-Boot, a switch to UEFI, and a way back.
#[derive(Debug, Parser)]
#[command(name = "pifw", version, about, long_about = None)]
#[command(after_help = TOP_HELP)]
pub struct Cli {
    /// Print machine-readable JSON (schema documented in docs/status-json.md).
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only results and errors: no notes, no progress bars.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also say what is read and written (files, sector ranges) and how long each step took.
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,

    /// Colour the output: auto (a terminal, unless NO_COLOR is set), always, never.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "WHEN",
        default_value_t = ColorChoice::Auto
    )]
    pub color: ColorChoice,

    /// Read manifests from DIR instead of the ones built into pifw.
    #[arg(long, global = true, value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// The board the card is for (pi3b, pi3bplus, pi3aplus, pi02w, cm3, pi4b, pi400, cm4).
    /// Default: this Pi's device tree, else inferred from the card.
    #[arg(long, global = true, value_name = "BOARD")]
    pub board: Option<String>,

    /// Keep and look for backups in DIR for this run (overrides `backup_dir` in the
    /// configuration), e.g. the state directory inside the card's own root filesystem.
    #[arg(long, global = true, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what is on the card: partitions, firmware, versions, boot chain, problems.
    #[command(after_help = STATUS_HELP)]
    Status {
        /// A whole-disk image file or block device (e.g. sdcard.img, /dev/sdb, /dev/mmcblk0).
        /// Default: on a Pi, its own card; elsewhere, pick from a list (on a terminal).
        target: Option<PathBuf>,
    },
    /// List or show the releases and boards pifw knows.
    #[command(subcommand, after_help = MANIFESTS_HELP)]
    Manifests(ManifestsCommand),
    /// Update the Pi firmware blobs (bootcode.bin, start*.elf, fixup*.dat) to a release.
    #[command(after_help = UPDATE_FIRMWARE_HELP)]
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
    #[command(after_help = UPDATE_UBOOT_HELP)]
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
    #[command(after_help = BACKUPS_HELP)]
    Backups {
        /// Delete this machine's backups beyond `keep_backups` per card (oldest first),
        /// listing each; without it pifw never deletes a backup.
        #[arg(long)]
        prune: bool,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
    /// Return the card to the state before a change, from its backup (default: the newest).
    #[command(after_help = ROLLBACK_HELP)]
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
    #[command(after_help = RECOVER_HELP)]
    Recover {
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
    /// Change the partition table: hybrid GPT/MBR for UEFI, or back to plain MBR.
    #[command(subcommand, after_help = PARTITION_HELP)]
    Partition(PartitionCommand),
    /// Switch the boot chain: to the pftf UEFI firmware, or back to U-Boot.
    #[command(subcommand, after_help = SWITCH_HELP)]
    Switch(SwitchCommand),
    /// Move a card that runs pftf UEFI to another pftf release, keeping the UEFI settings
    /// saved in RPI_EFI.fd (the same as `switch uefi` on a card already on UEFI).
    #[command(after_help = UPDATE_UEFI_HELP)]
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
    /// Print a shell completion script (bash, zsh, fish) on stdout.
    #[command(hide = true, after_help = COMPLETIONS_HELP)]
    Completions {
        /// The shell: bash, zsh or fish.
        shell: Shell,
    },
    /// Print the man page (roff) on stdout.
    #[command(
        hide = true,
        after_help = "Example:\n  pifw man | gzip > /usr/share/man/man1/pifw.1.gz"
    )]
    Man,
}

#[derive(Debug, Subcommand)]
pub enum PartitionCommand {
    /// Convert an MBR disk to GPT plus a hybrid MBR that a Pi 3's boot ROM still reads.
    #[command(after_help = PARTITION_HYBRID_HELP)]
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
    #[command(after_help = PARTITION_MBR_HELP)]
    Mbr {
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
}

// Parsed once per run: the size of the larger variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum SwitchCommand {
    /// Install the pftf UEFI firmware for the board (RPi3 for Pi 3 models).
    #[command(after_help = SWITCH_UEFI_HELP)]
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
        #[arg(long, value_name = "NAME", requires = "loader_source")]
        bootloader: Option<Bootloader>,
        /// The boot loader's EFI binary (e.g. systemd-bootaa64.efi, grubaa64.efi).
        #[arg(
            long,
            value_name = "FILE",
            requires = "bootloader",
            group = "loader_source"
        )]
        efi: Option<PathBuf>,
        /// Take the boot loader's EFI binary from the Debian archive's SUITE (systemd-boot-efi
        /// or grub-efi-arm64-bin, arm64), verified through its signed InRelease with
        /// --keyring, like --from-debian.
        #[arg(
            long,
            value_name = "SUITE",
            requires = "bootloader",
            group = "loader_source"
        )]
        efi_from_debian: Option<String>,
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
    #[command(after_help = SWITCH_UBOOT_HELP)]
    Uboot {
        #[command(flatten)]
        write: WriteArgs,
        /// Image file or block device.
        target: Option<PathBuf>,
    },
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Shells `pifw completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
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
    /// Take the files from PATH (a file, a directory, a .zip, a tarball, a .deb, or a disk image
    /// .img/.img.zst/.img.xz/.img.gz) instead of downloading.
    #[arg(long, value_name = "PATH")]
    pub from: Option<PathBuf>,
    /// Accept a --from file that matches no pin in the manifests (recorded as unpinned).
    #[arg(long)]
    pub allow_unpinned: bool,
    /// Install an older release than the one on the card.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Go ahead although the result matches this entry of the known-issues table (a
    /// combination reported not to boot); repeat for several.
    #[arg(long, value_name = "ID")]
    pub allow_known_issue: Vec<String>,
    /// Use only files already in pifw's cache.
    #[arg(long)]
    pub offline: bool,
    /// Debian mirror for Debian-packaged releases (default: config file, then apt sources).
    #[arg(long, visible_alias = "mirror", value_name = "URL")]
    pub debian_mirror: Option<String>,
    /// Take the release from a Debian archive suite (`trixie`, `stable`, ...) instead of the
    /// manifests: the newest u-boot-rpi (update-uboot) or raspi-firmware (update-firmware)
    /// its signed InRelease lists, verified with --keyring. Works for releases newer than pifw.
    #[arg(long, value_name = "SUITE", conflicts_with = "from")]
    pub from_debian: Option<String>,
    /// OpenPGP keyring that must have signed the archive's InRelease (default: config file's
    /// `keyring`, then /usr/share/keyrings/debian-archive-keyring.gpg).
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ManifestsCommand {
    /// Every board and release, one line each, and what the Debian archive offers beside them
    /// when asked to look (--mirror or --suite, or debian_mirror in the config file).
    #[command(after_help = MANIFESTS_HELP)]
    List {
        /// Debian mirror to ask (default: config file, then apt sources).
        #[arg(long, visible_alias = "debian-mirror", value_name = "URL")]
        mirror: Option<String>,
        /// Suite to ask (default: stable); repeat for several.
        #[arg(long, value_name = "SUITE")]
        suite: Vec<String>,
        /// OpenPGP keyring that must have signed the InRelease (default: config file, then
        /// /usr/share/keyrings/debian-archive-keyring.gpg).
        #[arg(long, value_name = "FILE")]
        keyring: Option<PathBuf>,
        /// Do not ask the archive.
        #[arg(long)]
        offline: bool,
    },
    /// One board (`pi3b`) or the releases of a kind (`u-boot`, `firmware`, `uefi`),
    /// optionally one version (`u-boot 2023.01`).
    #[command(after_help = MANIFESTS_HELP)]
    Show {
        /// A board id, or a kind: firmware, u-boot, uefi.
        name: String,
        /// A version of that kind.
        version: Option<String>,
    },
}

// The exit codes each command can end with (see `commands::Exit`), and one example each.

const TOP_HELP: &str = "\
Examples:
  pifw status                       this Pi's card (elsewhere: pick a disk)
  pifw status /dev/sdb              a card in a USB reader
  pifw update-uboot --dry-run sdcard.img
  pifw rollback /dev/sdb            undo the last change

Exit codes: 0 done / healthy, 1 error (the message says whether anything was written),
2 usage, 3 problems found on the card (status, partition hybrid).";

const STATUS_HELP: &str = "\
Example:
  pifw status /dev/mmcblk0
  pifw status --json sdcard.img | jq .problems

Exit codes: 0 healthy, 1 the target could not be read, 2 usage, 3 problems found
(warnings or errors).";

const MANIFESTS_HELP: &str = "\
Example:
  pifw manifests list
  pifw manifests list --suite stable --suite trixie   (what the Debian archive offers)
  pifw manifests show u-boot 2025.01

Exit codes: 0 done, 1 a manifest could not be read, 2 usage (an unknown name).";

const UPDATE_FIRMWARE_HELP: &str = "\
Example:
  pifw update-firmware --dry-run /dev/sdb
  pifw update-firmware --version 1.20240424 --from raspi-firmware_1.20240424+ds-6_all.deb sdcard.img
  pifw update-firmware --from-debian trixie --dry-run sdcard.img

Exit codes: 0 done (or nothing to change, or --dry-run), 1 refused or failed (the message
says that nothing was written, or how to recover), 2 usage (including no terminal to
confirm on without --yes).";

const UPDATE_UBOOT_HELP: &str = "\
Example:
  pifw update-uboot --dry-run /dev/sdb
  pifw update-uboot --from u-boot-rpi_2025.01-3+deb13u1_arm64.deb sdcard.img
  pifw update-uboot --from-debian trixie --keyring /usr/share/keyrings/debian-archive-keyring.gpg sdcard.img

Exit codes: 0 done (or nothing to change, or --dry-run), 1 refused or failed (the message
says that nothing was written, or how to recover), 2 usage (including no terminal to
confirm on without --yes).";

const UPDATE_UEFI_HELP: &str = "\
Example:
  pifw update-uefi --version v1.39 --from RPi3_UEFI_Firmware_v1.39.zip /dev/sdb

Exit codes: 0 done (or nothing to change, or --dry-run), 1 refused or failed (the message
says that nothing was written, or how to recover), 2 usage (including no terminal to
confirm on without --yes).";

const BACKUPS_HELP: &str = "\
Example:
  pifw backups /dev/sdb
  pifw backups --prune sdcard.img

Exit codes: 0 done, 1 the target or the backup directory could not be read, 2 usage.";

const ROLLBACK_HELP: &str = "\
Example:
  pifw rollback /dev/sdb                 return to the newest backup
  pifw rollback --to 20261130T101500.123Z-1a2b3c sdcard.img

Exit codes: 0 done (or --dry-run), 1 refused or failed (the message says that nothing was
written, or how to recover), 2 usage (including no terminal to confirm on without --yes).";

const RECOVER_HELP: &str = "\
Example:
  pifw recover /dev/sdb

Exit codes: 0 done (or nothing was interrupted), 1 refused or failed, 2 usage (including no
terminal to confirm on without --yes).";

const PARTITION_HELP: &str = "\
Example:
  pifw partition hybrid --dry-run /dev/sdb
  pifw partition mbr /dev/sdb

Exit codes: 0 done (or --dry-run), 1 refused or failed (nothing written), 2 usage, 3 the disk
is already hybrid and has problems.";

const PARTITION_HYBRID_HELP: &str = "\
Example:
  pifw partition hybrid --dry-run /dev/sdb
  pifw partition hybrid --grow sdcard.img

Exit codes: 0 done (or --dry-run, or already hybrid), 1 refused or failed (nothing written),
2 usage (including no terminal to confirm on without --yes), 3 already hybrid, with problems.";

const PARTITION_MBR_HELP: &str = "\
Example:
  pifw partition mbr /dev/sdb

Exit codes: 0 done (or --dry-run), 1 refused or failed (nothing written), 2 usage (including
no terminal to confirm on without --yes).";

const SWITCH_HELP: &str = "\
Example:
  pifw switch uefi --from RPi3_UEFI_Firmware_v1.39.zip --dry-run /dev/sdb
  pifw switch uboot /dev/sdb

Exit codes: 0 done (or --dry-run), 1 refused or failed (the message says that nothing was
written, or how to recover), 2 usage (including no terminal to confirm on without --yes).";

const SWITCH_UEFI_HELP: &str = "\
Example:
  pifw switch uefi --from RPi3_UEFI_Firmware_v1.39.zip /dev/sdb
  pifw switch uefi --hybrid --grow --bootloader systemd-boot --efi systemd-bootaa64.efi sdcard.img

Exit codes: 0 done (or --dry-run), 1 refused or failed (the message says that nothing was
written, or how to recover), 2 usage (including no terminal to confirm on without --yes).";

const SWITCH_UBOOT_HELP: &str = "\
Example:
  pifw switch uboot /dev/sdb

Exit codes: 0 done (or --dry-run), 1 refused or failed (the message says that nothing was
written, or how to recover), 2 usage (including no terminal to confirm on without --yes).";

const COMPLETIONS_HELP: &str = "\
Example:
  source <(pifw completions bash)
  pifw completions zsh > \"${fpath[1]}/_pifw\"
  pifw completions fish > ~/.config/fish/completions/pifw.fish

Exit codes: 0 done, 2 usage.";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command's --help ends with an example and its exit codes.
    #[test]
    fn every_command_has_an_example_and_exit_codes() {
        fn walk(cmd: &clap::Command, path: &str, seen: &mut usize) {
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                let after = sub
                    .get_after_help()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                assert!(after.contains("Example"), "{name}: no example");
                if sub.get_name() != "man" {
                    assert!(after.contains("Exit codes"), "{name}: no exit codes");
                }
                for line in after.lines().filter(|l| l.starts_with("  pifw ")) {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    // The example is one of this command's family (`pifw manifests ...`).
                    let cmd_words: Vec<&str> = name.split_whitespace().take(2).collect();
                    assert!(
                        words.starts_with(&cmd_words),
                        "{name}: the example {line:?} is another command's"
                    );
                }
                *seen += 1;
                walk(sub, &name, seen);
            }
        }
        let mut seen = 0;
        walk(&Cli::command(), "pifw", &mut seen);
        assert!(seen >= 16, "{seen} commands");
        Cli::command().debug_assert();
    }
}
