//! `update-firmware` and `update-uboot` as file changes: where the new files come from, which
//! version they are, and the changes that install them.
//!
//! Decides, on top of [`crate::update`] (which release and which of its files, purely from the
//! card's report):
//! - where the files come from ([`read_from`]): `--from` (the files matched against the
//!   manifests' pins) or `--from-debian` (a release resolved through the archive's signed
//!   InRelease), else the cache or the release's own sources ([`obtain`]);
//! - which version a source means ([`archive_version`], [`version_from`]);
//! - the file changes ([`install_changes`]): a downgrade refused unless allowed, files the card
//!   already has left out, the rest obtained and verified;
//! - config.txt pointed at each board's U-Boot ([`kernel_edits`]);
//! - a U-Boot no manifest pins ([`unpinned_uboot`]): recognised by content, allowed only when
//!   asked for.
//!
//! Must not: print, prompt, read argv or clap types. Notes and warnings come back as data
//! (out-parameters filled even when a later step refuses, so the command says what it would
//! have said), and download progress goes to the [`Progress`] the command hands in.

use super::card::read_card_file;
use crate::fetch::{self, FetchOptions, Progress};
use crate::manifest::{Board, Manifests, Release, ReleaseKind};
use crate::status::Report;
use crate::txn::{FileChange, NewContent};
use crate::update::{self, Install};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// Where the files of an update come from when not from the manifests' own sources.
pub struct Sourced {
    local: fetch::LocalArtifacts,
    /// How errors name it: `--from PATH`, `the Debian archive (trixie)`.
    pub label: String,
    /// `--from-debian`: the release resolved, the manifests extended by it, and how it was
    /// verified.
    pub archive: Option<crate::debian_source::ArchiveSource>,
}

impl Sourced {
    /// The files this source holds.
    pub fn local(&self) -> &fetch::LocalArtifacts {
        match &self.archive {
            Some(a) => &a.local,
            None => &self.local,
        }
    }

    /// How the files were verified, for the plan, `--json` and the backup: set only for a
    /// release resolved through the Debian archive.
    pub fn provenance(&self) -> Option<fetch::ArchiveProvenance> {
        self.archive.as_ref().map(|a| a.provenance.clone())
    }
}

/// Where an update's files may come from, as the command line and the configuration say.
#[derive(Debug, Clone, Copy)]
pub struct SourceAsk<'a> {
    /// `--from PATH`.
    pub from: Option<&'a Path>,
    /// `--from-debian SUITE`.
    pub from_debian: Option<&'a str>,
    /// The keyring the archive's InRelease is checked with.
    pub keyring: &'a Path,
}

/// Reads `--from` once, when given, or resolves `--from-debian` (the newest release of `kind`
/// in that suite of the Debian archive, verified with the keyring).
pub fn read_from(
    opts: &FetchOptions,
    ask: &SourceAsk<'_>,
    manifests: &Manifests,
    kind: ReleaseKind,
    progress: &mut dyn Progress,
) -> anyhow::Result<Option<Sourced>> {
    if let Some(suite) = ask.from_debian {
        let Some(mirror) = opts.debian_mirror.clone() else {
            bail!(
                "--from-debian needs a Debian mirror: pass --mirror URL (the directory that holds dists/ and pool/), set debian_mirror in the config file, or add a Debian archive to the apt sources; nothing was written"
            );
        };
        let keyring = ask.keyring;
        let req = crate::debian_source::ArchiveRequest {
            mirror: &mirror,
            suite,
            keyring,
        };
        let got = crate::debian_source::resolve(opts, manifests, kind, &req, progress)
            .with_context(|| {
                format!(
                    "resolving {} from the Debian archive {mirror} ({suite}, keyring {}); nothing was written",
                    kind.as_str(),
                    keyring.display()
                )
            })?;
        return Ok(Some(Sourced {
            local: fetch::LocalArtifacts::default(),
            label: format!(
                "the Debian archive's {} {} ({suite})",
                got.provenance.package, got.provenance.version
            ),
            archive: Some(got),
        }));
    }
    let Some(from) = ask.from else {
        return Ok(None);
    };
    let local = fetch::from_path(from, manifests, opts)
        .with_context(|| format!("reading --from {}", from.display()))?;
    Ok(Some(Sourced {
        local,
        label: format!("--from {}", from.display()),
        archive: None,
    }))
}

/// The version `--from-debian` resolved; a VERSION given as well must name the same release.
fn archive_version(src: &Sourced, asked: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(a) = &src.archive else {
        return Ok(None);
    };
    match a.version_for(asked) {
        Ok(v) => Ok(Some(v)),
        Err(e) => bail!("{}: {e}; nothing was written", src.label),
    }
}

/// The version to install when none was given but `--from` was: the newest release of `kind`
/// whose pins the `--from` files match.
fn version_from(local: &fetch::LocalArtifacts, kind: ReleaseKind) -> Option<String> {
    local
        .artifacts
        .iter()
        .flat_map(|a| a.matches.iter())
        .filter(|m| m.kind == kind)
        .map(|m| m.version.clone())
        .max_by(|a, b| {
            match (
                crate::manifest::version_key(a),
                crate::manifest::version_key(b),
            ) {
                (Ok(a), Ok(b)) => a.cmp_precedence(&b),
                _ => a.cmp(b),
            }
        })
}

/// The firmware version to install: the one `--from-debian` resolved (VERSION, when given as
/// well, must name it), else VERSION, else the newest the `--from` files match; `None` for the
/// newest release.
pub fn firmware_version(
    src: Option<&Sourced>,
    asked: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let from_archive = match src {
        Some(s) => archive_version(s, asked)?,
        None => None,
    };
    Ok(match (from_archive, asked, src) {
        (Some(v), _, _) => Some(v),
        (None, Some(v), _) => Some(v.to_string()),
        (None, None, Some(s)) => Some(version_from(s.local(), ReleaseKind::Firmware).ok_or_else(|| {
            anyhow::anyhow!(
                "--from holds no Pi firmware file pinned in the manifests (pifw manifests list shows the releases); nothing was written"
            )
        })?),
        (None, None, None) => None,
    })
}

/// Which U-Boot an update installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UbootWanted {
    /// A release of the manifests: this version, or the newest (`None`).
    Release(Option<String>),
    /// `--from` files no manifest pins, without a VERSION: see [`unpinned_uboot`].
    Unpinned,
}

/// The U-Boot to install: the version `--from-debian` resolved, else VERSION, else the newest
/// the `--from` files match; `--from` files that match no pin (and no VERSION) are unpinned.
pub fn uboot_wanted(src: Option<&Sourced>, asked: Option<&str>) -> anyhow::Result<UbootWanted> {
    let from_archive = match src {
        Some(s) => archive_version(s, asked)?,
        None => None,
    };
    let inferred = src.and_then(|s| version_from(s.local(), ReleaseKind::UBoot));
    if let (Some(_), None, None, None) = (src, asked, &inferred, &from_archive) {
        return Ok(UbootWanted::Unpinned);
    }
    Ok(UbootWanted::Release(
        from_archive.or(asked.map(str::to_string)).or(inferred),
    ))
}

/// The U-Boot installs of `release` for `boards`, one per card file (boards that share a file
/// share its install); refused, with a hint, when the source holds builds for other boards.
pub fn uboot_installs(
    report: &Report,
    release: &Release,
    boards: &[&Board],
    src: Option<&Sourced>,
) -> anyhow::Result<Vec<Install>> {
    let mut installs: Vec<Install> = Vec::new();
    let mut by_board: Vec<(&str, Install)> = Vec::new();
    for b in boards {
        let (install, _) = update::uboot_install(report, release, b)?;
        by_board.push((&b.id, install.clone()));
        if !installs
            .iter()
            .any(|i| i.dest.eq_ignore_ascii_case(&install.dest))
        {
            installs.push(install);
        }
    }
    if let Some(s) = src
        && let Some(hint) = update::board_hint(&by_board, |sha| s.local().find(sha).is_some())
    {
        bail!("{}: {hint}; nothing was written", s.label);
    }
    Ok(installs)
}

/// Local, verified copies of the files `installs` need: from the source, else the cache or
/// the release's sources.
fn obtain(
    opts: &FetchOptions,
    src: Option<&Sourced>,
    release: &Release,
    installs: &[Install],
    progress: &mut dyn Progress,
) -> anyhow::Result<Vec<PathBuf>> {
    if let Some(src) = src {
        let local = src.local();
        let mut paths = Vec::new();
        for i in installs {
            let Some(a) = local.find(&i.file.sha256) else {
                bail!(
                    "{} has no file with the pinned content of {} ({}, sha256 {}); it holds: {}. Nothing was written",
                    src.label,
                    i.dest,
                    release.label(),
                    i.file.sha256,
                    local.describe_contents(6)
                );
            };
            paths.push(a.path.clone());
        }
        return Ok(paths);
    }
    let files: Vec<&crate::manifest::ReleaseFile> = installs.iter().map(|i| &i.file).collect();
    let got = fetch::obtain(opts, release, &files, progress)
        .with_context(|| format!("obtaining {}", release.label()))?;
    Ok(got.into_iter().map(|(_, v)| v.path).collect())
}

/// The file changes that install `installs`: refused as a downgrade unless allowed; files the
/// card already has are left out; the rest obtained (from the source, the cache, or the
/// release's sources) and verified.
pub fn install_changes(
    opts: &FetchOptions,
    allow_downgrade: bool,
    src: Option<&Sourced>,
    release: &Release,
    installs: &[Install],
    progress: &mut dyn Progress,
) -> anyhow::Result<Vec<FileChange>> {
    update::check_downgrade(installs, release, allow_downgrade)?;
    let pending: Vec<Install> = installs
        .iter()
        .filter(|i| !i.unchanged())
        .cloned()
        .collect();
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let paths = obtain(opts, src, release, &pending, progress)?;
    Ok(pending
        .iter()
        .zip(paths)
        .map(|(i, p)| FileChange {
            path: i.dest.clone(),
            content: NewContent::Path(p),
            sha256: i.file.sha256.clone(),
            size: i.file.size,
        })
        .collect())
}

/// config.txt pointed at each board's U-Boot where it does not hand over to one yet; every
/// other line stays as it is. Each edit is described in `notes`, in order.
pub fn kernel_edits(
    path: &Path,
    report: &Report,
    boards: &[&Board],
    notes: &mut Vec<String>,
) -> anyhow::Result<Option<FileChange>> {
    let mut text: Option<String> = None;
    let mut changed = false;
    for b in boards {
        let (dest, edit_needed) = update::uboot_dest(report, b);
        if !edit_needed {
            continue;
        }
        let current = match text.take() {
            Some(t) => t,
            None => read_config(path, report)?,
        };
        let filters: Vec<&str> = b.config_filters.iter().map(String::as_str).collect();
        let edit = crate::configtxt::edit::set_kernel_for(&current, &filters, "kernel", &dest)
            .with_context(|| format!("pointing config.txt's kernel= at {dest} for {}", b.id))?;
        if edit.changed {
            notes.push(format!("config.txt: {}", edit.description));
            changed = true;
            text = Some(edit.new_text);
        } else {
            text = Some(current);
        }
    }
    let Some(text) = text.filter(|_| changed) else {
        return Ok(None);
    };
    let bytes = text.into_bytes();
    let (sha256, size) = fetch::hash_reader(&mut &bytes[..])?;
    Ok(Some(FileChange {
        path: "config.txt".into(),
        content: NewContent::Bytes(bytes),
        sha256,
        size,
    }))
}

fn read_config(path: &Path, report: &Report) -> anyhow::Result<String> {
    let bytes = read_card_file(path, report, "config.txt", 256 * 1024)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The U-Boot builds picked from an unpinned `--from`.
pub struct Unpinned {
    /// One change per card file, each a build found in the source.
    pub changes: Vec<FileChange>,
    /// Their U-Boot versions, `/`-joined when they differ.
    pub version: String,
}

/// `--from` a U-Boot no manifest pins (a user's own build, e.g. from `nix build`): accepted
/// only with `allow_unpinned`, and only if its content is recognisably U-Boot. One build for
/// every board; several (an sd-image's u-boot-rpi3.bin and u-boot-rpi4.bin) each to the card
/// file of the same name. The known issues `allow_known_issue` let through are added to
/// `allowed`, board by board.
#[allow(clippy::too_many_arguments)]
pub fn unpinned_uboot(
    report: &Report,
    manifests: &Manifests,
    from: &Path,
    local: &fetch::LocalArtifacts,
    boards: &[&Board],
    allow_unpinned: bool,
    allow_known_issue: &[String],
    allowed: &mut Vec<String>,
) -> anyhow::Result<Unpinned> {
    let mut found = Vec::new();
    for a in &local.artifacts {
        let f = std::fs::File::open(&a.path)
            .with_context(|| format!("reading {}", a.path.display()))?;
        if let crate::probe::Probe::UBoot { version } = crate::probe::probe(f)? {
            found.push((a, version));
        }
    }
    if found.is_empty() {
        bail!(
            "--from {} holds no U-Boot (no U-Boot version banner found); nothing was written",
            from.display()
        );
    }
    let mut picks: Vec<(String, &fetch::LocalArtifact, String)> = Vec::new();
    for b in boards {
        let (dest, _) = update::uboot_dest(report, b);
        if picks.iter().any(|(d, _, _)| d.eq_ignore_ascii_case(&dest)) {
            continue;
        }
        let Some((artifact, uversion)) =
            update::pick_by_name(&found, |(a, _)| a.file_name(), &dest)
        else {
            bail!(
                "--from {} holds {} U-Boot builds, none named {dest} and none pinned in the manifests; name the one file to install (nothing was written)",
                from.display(),
                found.len()
            );
        };
        if !allow_unpinned {
            bail!(
                "{} ({uversion}, sha256 {}) matches no pin in the manifests, so pifw cannot vouch for it; pass --allow-unpinned to install it anyway (the backup records the command) — nothing was written",
                artifact.name,
                artifact.sha256
            );
        }
        allowed.extend(update::check_known_issues(
            report,
            manifests,
            ReleaseKind::UBoot,
            uversion,
            &[*b],
            allow_known_issue,
        )?);
        picks.push((dest, artifact, uversion.clone()));
    }
    let mut versions: Vec<&str> = picks.iter().map(|(_, _, v)| v.as_str()).collect();
    versions.dedup();
    Ok(Unpinned {
        version: versions.join("/"),
        changes: picks
            .iter()
            .map(|(dest, artifact, _)| FileChange {
                path: dest.clone(),
                content: NewContent::Path(artifact.path.clone()),
                sha256: artifact.sha256.clone(),
                size: artifact.size,
            })
            .collect(),
    })
}
