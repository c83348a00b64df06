//! Version manifests: boards and releases (Pi firmware, U-Boot builds, pftf UEFI).
//!
//! OWNED BY: the manifests work. This file is a stub with the agreed interface.
//!
//! The TOML files in `manifests/` are embedded in the binary; `--manifests DIR` replaces them.
//! Schema is versioned, unknown fields are rejected, and an error names file, line and field.

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseKind {
    /// Upstream raspberrypi/firmware blobs (bootcode.bin, start*.elf, fixup*.dat, ...).
    Firmware,
    /// U-Boot builds (u-boot.bin per defconfig).
    UBoot,
    /// pftf UEFI firmware (RPI_EFI.fd and its companion files).
    Uefi,
}

/// A board pifw knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Board {
    /// Short id used on the command line: `pi3b`, `pi3bplus`, `pi3aplus`, `pi02w`, `cm3`, `pi4b`,
    /// `pi400`, `cm4`.
    pub id: String,
    /// Human name, e.g. "Raspberry Pi 3 Model B".
    pub name: String,
    /// Device-tree model strings (/proc/device-tree/model) that mean this board (prefix match).
    pub dt_models: Vec<String>,
    pub soc: String,
    /// config.txt model filters that select this board, e.g. `["pi3"]`, `["pi3", "pi3+"]`.
    pub config_filters: Vec<String>,
    /// Device-tree blob names the firmware loads for it, e.g. `bcm2710-rpi-3-b.dtb`.
    pub dtbs: Vec<String>,
    /// U-Boot defconfig builds that run on it, preferred first, e.g. `["rpi_3", "rpi_arm64"]`.
    pub uboot_builds: Vec<String>,
    /// pftf UEFI project for it: `RPi3`, `RPi4`, or none.
    pub uefi: Option<String>,
}

/// One file a release provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseFile {
    /// Name on the firmware partition, e.g. `start.elf`, `u-boot-rpi3.bin`, `RPI_EFI.fd`.
    pub dest: String,
    pub size: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Board ids this file serves (empty = all boards of the release).
    pub boards: Vec<String>,
    /// U-Boot defconfig of this build (`rpi_3`), U-Boot releases only.
    pub build: Option<String>,
    /// Path of the file inside the release's archive source, if it comes from one.
    pub member: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Per-file URLs (`{file}` in the URL is replaced by `dest`).
    Url,
    Zip,
    Tar,
    /// A Debian package; `location` is the pool path (the mirror comes from configuration).
    Deb,
}

/// Where a release can be downloaded from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub kind: SourceKind,
    /// URL, URL pattern, or Debian pool path.
    pub location: String,
    /// sha256 of the archive itself (zip/tar/deb).
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// Where the pin was published, e.g. "Debian bookworm Packages", "wuxxin/infra-shared".
    pub provenance: String,
    /// True only when someone downloaded it and checked the pin.
    pub verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub kind: ReleaseKind,
    /// Version as published: `1.20220830`, `2023.01`, `v1.39`.
    pub version: String,
    /// Who built it: `upstream`, `debian`, `pftf`, ...
    pub flavour: String,
    /// e.g. "Debian 2023.01+dfsg-2+deb12u3".
    pub description: String,
    pub files: Vec<ReleaseFile>,
    pub sources: Vec<Source>,
    /// Manifest file it came from.
    pub origin: String,
}

/// A hash match: which release and which file of it.
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    pub release: &'a Release,
    pub file: &'a ReleaseFile,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Manifests {
    pub boards: Vec<Board>,
    pub releases: Vec<Release>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("reading manifests from {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not a version pifw understands")]
    BadVersion(String),
}

impl Manifests {
    /// The manifests built into the binary.
    pub fn embedded() -> Result<Manifests, ManifestError> {
        unimplemented!()
    }

    /// Every `*.toml` in `dir`, replacing the embedded ones.
    pub fn load_dir(_dir: &Path) -> Result<Manifests, ManifestError> {
        unimplemented!()
    }

    pub fn board(&self, _id: &str) -> Option<&Board> {
        unimplemented!()
    }

    /// Every release file whose sha256 is `sha256` (lowercase hex).
    pub fn identify(&self, _sha256: &str) -> Vec<Match<'_>> {
        unimplemented!()
    }

    /// Releases of `kind`, newest first.
    pub fn releases_of(&self, _kind: ReleaseKind) -> Vec<&Release> {
        unimplemented!()
    }
}

/// Orders versions across the three schemes (`1.20230405`, `2023.01`, `v1.39`, `-rc` before the
/// release) by normalising to semver.
pub fn version_key(_version: &str) -> Result<semver::Version, ManifestError> {
    unimplemented!()
}
