//! pifw: keeps the FAT firmware partition of a Raspberry Pi healthy.
//!
//! The crate is a library with a thin binary (`src/main.rs`). The layers, from the disk up:
//!
//! - [`disk`]: opening a target (image file or block device) read-only or for writing, finding
//!   candidate disks, and [`disk::table`]: MBR, GPT and hybrid partition tables, validated, plus
//!   the Pi boot ROM's rules for which partition it boots from.
//! - [`fat`]: FAT12/16/32 structure checks (boot sector, cluster chains) and the file inventory,
//!   streamed through `fatfs` over the partition's byte range.
//! - [`configtxt`]: the Pi's `config.txt`: sections, conditional filters, includes, and the
//!   effective settings for one board.
//! - [`manifest`]: the version manifests (`manifests/*.toml`, embedded in the binary), boards,
//!   releases, pins, and version ordering across the three numbering schemes.
//! - [`status`]: the read path assembled: disk → table → FAT → identification → boot chain →
//!   findings, as one serialisable report.
//! - [`commands`] and [`cli`]: argument parsing and resolution; domain code never imports clap
//!   types.
//! - [`ui`]: the terminal, text and JSON views of what the domain planned, did and found. Only
//!   this layer prints.
//!
//! [`digest`] is the one sha256/hex helper every layer uses.
//!
//! Findings (problems and advice) are values of [`finding::Finding`], produced by the domain
//! layers and rendered by [`ui`].

pub mod backup;
pub mod bls;
pub mod change;
pub mod cli;
pub mod commands;
pub mod config;
pub mod configtxt;
pub mod debian_source;
pub mod device;
pub mod digest;
pub mod disk;
pub mod fat;
pub mod fetch;
pub mod finding;
pub mod manifest;
pub mod probe;
pub mod status;
pub mod txn;
pub mod uefi;
pub mod ui;
pub mod update;
