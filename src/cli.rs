//! Command-line arguments (clap derive). Only the command layer sees these types; domain code
//! takes plain values.

use clap::{Parser, Subcommand};
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
