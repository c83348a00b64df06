//! A release taken from a Debian archive (`--from-debian SUITE`): releases newer than pifw.
//!
//! Owns the step from "the suite's newest u-boot-rpi / raspi-firmware" to files the update
//! commands can install as if the user had handed the `.deb` over with `--from`:
//!
//! 1. [`fetch::resolve_package`] verifies the chain keyring → `InRelease` → `Packages` → `.deb`
//!    (see `fetch/debian.rs`); only the verified `.deb` reaches the cache.
//! 2. Its members are hashed ([`fetch::from_path`]) and [`update::archive_release`] makes the
//!    release they form: the manifests' own release when it has that version (its pins then
//!    decide), else a new one pinned to the verified members.
//! 3. The manifests plus that release ([`Manifests::with_release`]) identify the `.deb`'s
//!    members again, so every later check (board selection, known issues, downgrade, the
//!    "has no file with the pinned content" refusal) runs unchanged.
//!
//! Nothing here prints or touches the card. The archive is fixed to the `arm64` index
//! ([`update::ARCHIVE_ARCH`], why: [`update::archive_package`]).

use crate::fetch::{self, ArchiveProvenance, FetchOptions, LocalArtifacts, Progress};
use crate::manifest::{Manifests, Release, ReleaseKind};
use crate::update;
use std::path::Path;

/// Where to resolve from.
#[derive(Debug, Clone)]
pub struct ArchiveRequest<'a> {
    pub mirror: &'a str,
    pub suite: &'a str,
    pub keyring: &'a Path,
}

/// A release resolved through the archive, ready to install.
#[derive(Debug)]
pub struct ArchiveSource {
    /// The manifests plus the release (when it was new to them).
    pub manifests: Manifests,
    pub release: Release,
    /// The `.deb`'s members, identified against [`ArchiveSource::manifests`].
    pub local: LocalArtifacts,
    pub provenance: ArchiveProvenance,
}

impl ArchiveSource {
    /// The version to install: the one resolved. A version the user asked for as well must
    /// name the same release (`2025.01` names `2025.01-3+deb13u1`), else it is refused.
    pub fn version_for(&self, asked: Option<&str>) -> Result<String, ArchiveSourceError> {
        if let Some(v) = asked
            && self
                .manifests
                .release(self.release.kind, v)
                .map_or(true, |r| r.version != self.release.version)
        {
            return Err(ArchiveSourceError::OtherVersion {
                asked: v.to_string(),
                package: self.provenance.package.clone(),
                offered: self.provenance.version.clone(),
                suite: self.provenance.suite.clone(),
            });
        }
        Ok(self.release.version.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveSourceError {
    #[error(
        "suite {suite} offers {package} {offered}, not {asked}: leave out the version to take \
         it, or pick another suite"
    )]
    OtherVersion {
        asked: String,
        package: String,
        offered: String,
        suite: String,
    },
    #[error("no Debian package carries {0} releases; --from-debian works for u-boot and firmware")]
    NoPackage(&'static str),
    #[error("only systemd-boot and grub are taken from the Debian archive")]
    NoLoader,
    #[error("{package} {version} has no {member}")]
    NoMember {
        package: String,
        version: String,
        member: &'static str,
    },
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error(transparent)]
    Update(#[from] update::UpdateError),
}

/// Resolves the newest release of `kind` the archive's `suite` offers.
pub fn resolve(
    opts: &FetchOptions,
    manifests: &Manifests,
    kind: ReleaseKind,
    req: &ArchiveRequest<'_>,
    progress: &mut dyn Progress,
) -> Result<ArchiveSource, ArchiveSourceError> {
    let (package, component) =
        update::archive_package(kind).ok_or(ArchiveSourceError::NoPackage(kind.as_str()))?;
    let archive = fetch::Archive {
        mirror: req.mirror,
        suite: req.suite,
        component,
        arch: update::ARCHIVE_ARCH,
        keyring: req.keyring,
    };
    let (pkg, deb, provenance) = fetch::resolve_package(opts, &archive, package, progress)?;
    let first = fetch::from_path(&deb.path, manifests, opts)?;
    let members: Vec<(String, String, u64)> = first
        .artifacts
        .iter()
        .filter_map(|a| {
            let (_, member) = a.name.rsplit_once(':')?;
            Some((member.to_string(), a.sha256.clone(), a.size))
        })
        .collect();
    drop(first);
    let release = update::archive_release(manifests, kind, &provenance, pkg.size, &members)?;
    let manifests = manifests.with_release(release.clone());
    let local = fetch::from_path(&deb.path, &manifests, opts)?;
    Ok(ArchiveSource {
        manifests,
        release,
        local,
        provenance,
    })
}

/// The Debian package (main, arm64) and the member in it that is each EFI boot loader
/// `switch uefi --bootloader` installs.
pub fn loader_package(loader: &str) -> Option<(&'static str, &'static str)> {
    match loader {
        "systemd-boot" => Some((
            "systemd-boot-efi",
            "usr/lib/systemd/boot/efi/systemd-bootaa64.efi",
        )),
        "grub" => Some((
            "grub-efi-arm64-bin",
            "usr/lib/grub/arm64-efi/monolithic/grubaa64.efi",
        )),
        _ => None,
    }
}

/// A boot loader's EFI binary taken out of a package verified through the archive.
#[derive(Debug)]
pub struct LoaderSource {
    /// The `.deb`'s members (they live as long as this).
    pub local: LocalArtifacts,
    /// The loader's bytes (in `local`'s scratch directory).
    pub path: std::path::PathBuf,
    pub provenance: ArchiveProvenance,
}

/// Resolves `loader` (`systemd-boot`, `grub`) from the archive's `suite`: the newest package
/// version its signed index offers, the `.deb` checked against the signed hash, and the one
/// member that is the loader.
pub fn resolve_loader(
    opts: &FetchOptions,
    manifests: &Manifests,
    loader: &str,
    req: &ArchiveRequest<'_>,
    progress: &mut dyn Progress,
) -> Result<LoaderSource, ArchiveSourceError> {
    let (package, member) = loader_package(loader).ok_or(ArchiveSourceError::NoLoader)?;
    let archive = fetch::Archive {
        mirror: req.mirror,
        suite: req.suite,
        component: "main",
        arch: update::ARCHIVE_ARCH,
        keyring: req.keyring,
    };
    let (_, deb, provenance) = fetch::resolve_package(opts, &archive, package, progress)?;
    let local = fetch::from_path(&deb.path, manifests, opts)?;
    let path = local
        .artifacts
        .iter()
        .find(|a| {
            a.name
                .rsplit_once(':')
                .is_some_and(|(_, m)| m.trim_start_matches("./") == member)
        })
        .map(|a| a.path.clone())
        .ok_or_else(|| ArchiveSourceError::NoMember {
            package: package.to_string(),
            version: provenance.version.clone(),
            member,
        })?;
    Ok(LoaderSource {
        local,
        path,
        provenance,
    })
}

/// What one suite of the archive offers for one kind, for `pifw manifests list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Offer {
    pub kind: ReleaseKind,
    pub suite: String,
    pub package: String,
    /// The package's Debian version in the signed index; absent when the look-up failed.
    pub debian_version: Option<String>,
    /// The release version it stands for in the manifests' terms.
    pub version: Option<String>,
    /// Whether the manifests already have that release.
    pub in_manifests: bool,
    /// Fingerprint of the key whose signature on the `InRelease` verified.
    pub signing_key: Option<String>,
    /// Why the look-up failed.
    pub error: Option<String>,
}

/// The newest u-boot-rpi and raspi-firmware each of `suites` offers (signed index only; no
/// package is downloaded). A failure is recorded in its [`Offer`], never returned: the
/// listing goes on without it.
pub fn offers(
    opts: &FetchOptions,
    manifests: &Manifests,
    mirror: &str,
    keyring: &Path,
    suites: &[String],
) -> Vec<Offer> {
    let mut out = Vec::new();
    for suite in suites {
        for kind in [ReleaseKind::UBoot, ReleaseKind::Firmware] {
            let Some((package, component)) = update::archive_package(kind) else {
                continue;
            };
            let archive = fetch::Archive {
                mirror,
                suite,
                component,
                arch: update::ARCHIVE_ARCH,
                keyring,
            };
            let mut offer = Offer {
                kind,
                suite: suite.clone(),
                package: package.to_string(),
                debian_version: None,
                version: None,
                in_manifests: false,
                signing_key: None,
                error: None,
            };
            match fetch::lookup_package(opts, &archive, package, &mut fetch::NoProgress) {
                Ok((pkg, key)) => {
                    let version = update::archive_version(kind, &pkg.version);
                    offer.in_manifests = manifests
                        .releases
                        .iter()
                        .any(|r| r.kind == kind && r.version == version);
                    offer.debian_version = Some(pkg.version);
                    offer.version = Some(version);
                    offer.signing_key = Some(key);
                }
                Err(e) => offer.error = Some(e.to_string()),
            }
            out.push(offer);
        }
    }
    out
}
