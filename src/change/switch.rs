//! `switch uefi`, `update-uefi` and `switch uboot` as plans: what moving the boot chain to
//! the pftf UEFI firmware (and back) changes on the card.
//!
//! Decides:
//! - which pftf project (`RPi3`, `RPi4`) the card needs ([`project`]) and which release
//!   ([`choose`]); where its zip comes from and whether it matches the release's whole-zip pin
//!   ([`obtain_zip`]);
//! - the file changes of the switch ([`plan_uefi`]): every file of the zip under its own name;
//!   `RPI_EFI.fd` with the variable store saved on the card carried over ([`crate::uefi`]);
//!   pftf's `config.txt` followed by the user's settings that do not fight it
//!   ([`crate::configtxt::merge`]); the boot loader at the fallback path and, for
//!   systemd-boot, a minimal `loader/loader.conf`; the boot set; and, for `--hybrid`, the
//!   table conversion planned with the files, before the first write of either
//!   ([`super::table::plan_hybrid`]);
//! - the loader binary out of the Debian archive ([`loader_from_debian`]);
//! - which backups `switch uboot` undoes ([`undo_switch`]): every change since the newest
//!   `switch uefi`, with the whole run of that switch.
//!
//! Must not: print, prompt, read argv or clap types. What the user should be told comes back
//! as data ([`UefiPlan::notes`]); the command layer renders it and runs the executor.

use super::BootSet;
use super::card::read_card_file;
use super::table::{HybridPrep, plan_hybrid};
use crate::backup::found::Found;
use crate::config::Config;
use crate::disk::table::TableKind;
use crate::fetch::{self, FetchOptions, Progress, Unpacked as Member};
use crate::manifest::{Manifests, Release, ReleaseKind};
use crate::status::Report;
use crate::txn::{FileChange, NewContent};
use crate::uefi::Loader;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// Caps on a release zip: total bytes extracted and members.
const ZIP_MAX_BYTES: u64 = 128 * 1024 * 1024;
const ZIP_MAX_MEMBERS: usize = 2000;

/// Minimal systemd-boot configuration: a menu for 3 seconds, no editor (the console is remote).
const LOADER_CONF: &str = "timeout 3\neditor no\n";

/// Why the card's pftf project cannot be told; the board is the user's to name.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(
        "pifw cannot tell which board this card is for, so not which pftf firmware (RPi3 or RPi4) it needs; pass --board (nothing was written)"
    )]
    Unknown,
    #[error(
        "the card serves boards of several pftf projects ({0}); pass --board (nothing was written)"
    )]
    Several(String),
}

/// The pftf project (`RPi3`, `RPi4`) for the card's board.
pub fn project(
    report: &Report,
    manifests: &Manifests,
    from: Option<&Path>,
) -> Result<String, ProjectError> {
    let mut projects: Vec<String> = crate::update::target_boards(report, manifests)
        .into_iter()
        .filter_map(|b| b.uefi.clone())
        .collect();
    projects.sort();
    projects.dedup();
    // A card already switched serves both families on paper (pftf's config.txt has no model
    // sections), or none while its UEFI chain has no loader yet: the release zip itself says
    // which family it is for.
    if projects.len() != 1
        && let Some(from) = from
        && let Ok(f) = fetch::open_source(from, &fetch::Limits::default())
        && let Ok(zip) = zip::ZipArchive::new(f)
    {
        let has = |n: &str| {
            zip.file_names()
                .any(|x| x.is_ok_and(|x| x.eq_ignore_ascii_case(n)))
        };
        let family = if has("start4.elf") {
            Some("RPi4")
        } else if has("bootcode.bin") {
            Some("RPi3")
        } else {
            None
        };
        if let Some(fam) = family.filter(|f| projects.is_empty() || projects.iter().any(|p| p == f))
        {
            return Ok(fam.to_string());
        }
    }
    match projects.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ProjectError::Unknown),
        many => Err(ProjectError::Several(many.join(", "))),
    }
}

/// The newest pftf release of `project`, or the one named `version` (with or without `v`).
pub fn choose<'a>(
    manifests: &'a Manifests,
    project: &str,
    version: Option<&str>,
) -> anyhow::Result<&'a Release> {
    let mut rels: Vec<&Release> = manifests
        .releases_of(ReleaseKind::Uefi)
        .into_iter()
        .filter(|r| r.project.as_deref() == Some(project))
        .collect();
    if let Some(v) = version {
        rels.retain(|r| r.version == v || r.version.trim_start_matches('v') == v);
    }
    rels.into_iter().next().ok_or_else(|| {
        anyhow::anyhow!(
            "no pftf {project} release{} in the manifests; pifw manifests show uefi lists them (nothing was written)",
            version.map(|v| format!(" {v}")).unwrap_or_default()
        )
    })
}

/// A release zip on this machine.
#[derive(Debug, Clone)]
pub struct ReleaseZip {
    pub path: PathBuf,
    /// It matches one of the release's sha256 pins.
    pub pinned: bool,
    pub sha256: String,
}

/// The release zip on this machine: `from` (hashed, pinned or not), else the cache or the
/// release's pinned download.
pub fn obtain_zip(
    cfg: &Config,
    from: Option<&Path>,
    offline: bool,
    release: &Release,
    progress: &mut dyn Progress,
) -> anyhow::Result<ReleaseZip> {
    let pins: Vec<&str> = release
        .sources
        .iter()
        .filter_map(|s| s.sha256.as_deref())
        .collect();
    if let Some(from) = from {
        let mut f = fetch::open_source(from, &fetch::Limits::default())
            .with_context(|| format!("reading --from {}", from.display()))?;
        let (sha, _) = fetch::hash_reader(&mut f)?;
        let pinned = pins.contains(&sha.as_str());
        return Ok(ReleaseZip {
            path: from.to_path_buf(),
            pinned,
            sha256: sha,
        });
    }
    let mut opts = FetchOptions::new(&cfg.cache_dir);
    opts.offline = offline;
    let source = release
        .sources
        .iter()
        .find(|s| s.sha256.is_some())
        .ok_or_else(|| anyhow::anyhow!("{} has no pinned download", release.label()))?;
    let v = fetch::obtain_source(&opts, source, progress)
        .with_context(|| format!("obtaining {}", release.label()))?;
    Ok(ReleaseZip {
        path: v.path,
        pinned: true,
        sha256: v.sha256,
    })
}

/// Extracts every file of the release zip into `dir`, refusing unsafe names and capping the
/// total and the member count.
fn extract(zip_path: &Path, dir: &Path) -> anyhow::Result<Vec<Member>> {
    let limits = fetch::Limits {
        max_member: ZIP_MAX_BYTES,
        max_total: ZIP_MAX_BYTES,
        max_members: ZIP_MAX_MEMBERS,
    };
    fetch::unpack_zip(zip_path, dir, &limits).with_context(|| {
        format!(
            "unpacking the release zip {} (nothing was written)",
            zip_path.display()
        )
    })
}

fn find<'a>(members: &'a [Member], name: &str) -> Option<&'a Member> {
    members.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

fn bytes_change(path: &str, bytes: Vec<u8>) -> anyhow::Result<FileChange> {
    let (sha256, size) = fetch::hash_reader(&mut &bytes[..])?;
    Ok(FileChange {
        path: path.to_string(),
        content: NewContent::Bytes(bytes),
        sha256,
        size,
    })
}

/// `--efi-from-debian SUITE`: the loader's EFI binary out of systemd-boot-efi or
/// grub-efi-arm64-bin, resolved through the archive's signed InRelease with `keyring`.
pub fn loader_from_debian(
    opts: &FetchOptions,
    keyring: &Path,
    manifests: &Manifests,
    suite: &str,
    loader: Loader,
    progress: &mut dyn Progress,
) -> anyhow::Result<crate::debian_source::LoaderSource> {
    let Some(mirror) = opts.debian_mirror.clone() else {
        bail!(
            "--efi-from-debian needs a Debian mirror: pass --mirror URL (the directory that holds dists/ and pool/), set debian_mirror in the config file, or add a Debian archive to the apt sources; nothing was written"
        );
    };
    let name = match loader {
        Loader::SystemdBoot => "systemd-boot",
        Loader::Grub => "grub",
    };
    let req = crate::debian_source::ArchiveRequest {
        mirror: &mirror,
        suite,
        keyring,
    };
    crate::debian_source::resolve_loader(opts, manifests, name, &req, progress).with_context(|| {
        format!(
            "resolving {name} from the Debian archive {mirror} ({suite}, keyring {}); nothing was written",
            keyring.display()
        )
    })
}

/// What a `switch uefi` or `update-uefi` was asked to do beyond installing the release.
#[derive(Debug, Clone, Copy)]
pub struct UefiAsk<'a> {
    /// Convert the table to GPT + hybrid MBR in the same run.
    pub hybrid: bool,
    /// Grow an image file that has no room for the backup GPT.
    pub grow: bool,
    /// The boot loader to put at the fallback path, and the file it comes from.
    pub bootloader: Option<(Loader, &'a Path)>,
    pub allow_no_boot_entries: bool,
    /// Install a zip that matches no pin of the release.
    pub allow_unpinned: bool,
}

/// A switch to UEFI, planned whole: every file change, and the table change when asked for.
pub struct UefiPlan {
    /// The file changes, for the executor.
    pub changes: Vec<FileChange>,
    /// The files the boot reads, switched together in the last transaction.
    pub boot_critical: BootSet,
    /// The table conversion (`--hybrid` on an MBR card), planned before any write.
    pub table: Option<HybridPrep>,
    /// Every file is on the card already: the executor writes nothing and asks nothing, so the
    /// table conversion needs its own confirmation.
    pub files_in_place: bool,
    /// What the user should know about the plan (pin, settings carried, config.txt merged,
    /// loader readiness, the table left as it is), in order.
    pub notes: Vec<String>,
    /// The extracted release: the changes read their files from here until applied.
    _unpacked: tempfile::TempDir,
}

/// Plans the switch of the card at `path` (read as `report`) to `release`, from its zip.
/// Every refusal comes before the first write and says "nothing was written".
pub fn plan_uefi(
    path: &Path,
    report: &Report,
    manifests: &Manifests,
    release: &Release,
    zip: &ReleaseZip,
    ask: &UefiAsk<'_>,
) -> anyhow::Result<UefiPlan> {
    let mut notes: Vec<String> = Vec::new();
    let zip_sha = &zip.sha256;
    if zip.pinned {
        notes.push(format!(
            "the zip matches the published sha256 pin of {} ({}); that pin is marked unverified in the manifests",
            release.label(),
            release.sources.iter().find(|s| s.sha256.as_deref() == Some(zip_sha.as_str())).map_or("", |s| s.provenance.as_str())
        ));
    } else if ask.allow_unpinned {
        notes.push(format!(
            "the zip (sha256 {zip_sha}) matches no pin of {}; installed because of --allow-unpinned",
            release.label()
        ));
    } else {
        bail!(
            "{} (sha256 {zip_sha}) matches no published pin of {}; pass --allow-unpinned to install it anyway (nothing was written)",
            zip.path.display(),
            release.label()
        );
    }
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let members = extract(&zip.path, tmp.path())?;
    for need in ["RPI_EFI.fd", "config.txt"] {
        if find(&members, need).is_none() {
            bail!(
                "{} has no {need}: it is not a pftf release zip (nothing was written)",
                zip.path.display()
            );
        }
    }

    let mut changes: Vec<FileChange> = Vec::new();
    for m in &members {
        if m.name.eq_ignore_ascii_case("config.txt") || m.name.eq_ignore_ascii_case("RPI_EFI.fd") {
            continue;
        }
        changes.push(FileChange {
            path: m.name.clone(),
            content: NewContent::Path(m.file.clone()),
            sha256: m.sha256.clone(),
            size: m.size,
        });
    }

    // The firmware file, with the settings saved on the card carried into it.
    let fd = find(&members, "RPI_EFI.fd").expect("checked above");
    let mut new_fd = std::fs::read(&fd.file)?;
    if new_fd.len() as u64 > crate::uefi::MAX_FD {
        bail!(
            "RPI_EFI.fd in the zip is {} bytes; not a pftf firmware file",
            new_fd.len()
        );
    }
    match read_card_file(path, report, "RPI_EFI.fd", crate::uefi::MAX_FD)? {
        Some(old) => {
            let c = crate::uefi::carry_over(&old, &mut new_fd);
            notes.push(match (&c.carried, &c.reason) {
                (true, _) => format!(
                    "the UEFI settings saved on the card ({} variables) are carried into the new RPI_EFI.fd",
                    c.variables
                ),
                (false, Some(why)) => format!("UEFI settings are not carried over: {why}"),
                (false, None) => "UEFI settings are not carried over".into(),
            });
        }
        None => {
            if crate::uefi::find_nv_store(&new_fd).is_none() {
                notes.push("RPI_EFI.fd in the zip has no variable store pifw recognises; settings saved later cannot be carried into the next release".into());
            }
        }
    }
    changes.push(bytes_change("RPI_EFI.fd", new_fd)?);

    // config.txt: pftf's, then the user's settings that do not fight it.
    let pftf_cfg = std::fs::read(&find(&members, "config.txt").expect("checked above").file)?;
    let card_cfg = read_card_file(path, report, "config.txt", 256 * 1024)?.unwrap_or_default();
    let merged = crate::configtxt::merge::merge(
        &String::from_utf8_lossy(&pftf_cfg),
        &String::from_utf8_lossy(&card_cfg),
    );
    for d in &merged.disabled {
        notes.push(format!("config.txt: turned off for UEFI: {d}"));
    }
    if merged.kept > 0 {
        notes.push(format!(
            "config.txt: {} of your settings kept below pftf's",
            merged.kept
        ));
    }
    changes.push(bytes_change("config.txt", merged.text.into_bytes())?);

    // The boot loader at the fallback path.
    if let Some((kind, efi)) = ask.bootloader {
        let bytes =
            std::fs::read(efi).with_context(|| format!("reading --efi {}", efi.display()))?;
        if !crate::probe::is_aa64_pe(&bytes) {
            bail!(
                "{} is not an AArch64 EFI application (PE/COFF, machine 0xAA64); a Pi 3 in UEFI mode cannot start it (nothing was written)",
                efi.display()
            );
        }
        if kind == Loader::SystemdBoot {
            let probe = crate::probe::probe(&bytes[..])?;
            if !matches!(probe, crate::probe::Probe::SystemdBoot { .. }) {
                bail!(
                    "{} does not look like systemd-boot (no LoaderInfo string); pass --bootloader grub for GRUB, or the right file (nothing was written)",
                    efi.display()
                );
            }
        }
        changes.push(bytes_change("EFI/BOOT/BOOTAA64.EFI", bytes)?);
        if kind == Loader::SystemdBoot && report.card_file("loader/loader.conf").is_none() {
            changes.push(bytes_change(
                "loader/loader.conf",
                LOADER_CONF.as_bytes().to_vec(),
            )?);
        }
        // Refused before any write (and the same under --dry-run) when the loader would have
        // nothing to boot: the decision is crate::uefi::loader_readiness's.
        let sizes: Vec<(&str, u64)> = changes.iter().map(|c| (c.path.as_str(), c.size)).collect();
        let files: Vec<&str> = report
            .firmware
            .iter()
            .flat_map(|f| f.files.iter().map(|f| f.path.as_str()))
            .collect();
        let ready = crate::uefi::loader_readiness(
            &report
                .firmware
                .as_ref()
                .and_then(|f| f.bls.clone())
                .unwrap_or_default(),
            &files,
            kind,
            changes
                .iter()
                .find(|c| c.path == "EFI/BOOT/BOOTAA64.EFI")
                .and_then(|c| match &c.content {
                    NewContent::Bytes(b) => Some(b.as_slice()),
                    _ => None,
                })
                .unwrap_or_default(),
            crate::uefi::room_after(report, &sizes),
            ask.allow_no_boot_entries,
        )
        .map_err(|e| anyhow::anyhow!("{e} (nothing was written)"))?;
        notes.extend(ready);
    }

    // A composite change is planned whole before its first write: the table conversion is
    // planned (and refused, when it would be) here, before any file is written.
    let table = match (ask.hybrid, report.table.kind) {
        (false, _) => None,
        (true, TableKind::Mbr) => Some(plan_hybrid(path, report, ask.grow, false)?),
        (true, TableKind::Gpt | TableKind::Hybrid) => {
            notes.push("--hybrid: the card has a GPT already; the table stays as it is".into());
            None
        }
        (true, TableKind::None) => bail!(
            "{} has no partition table to convert; see pifw status (nothing was written)",
            path.display()
        ),
    };

    let files_in_place = changes.iter().all(|c| {
        report
            .card_file(&c.path)
            .is_some_and(|f| f.size == c.size && f.sha256.eq_ignore_ascii_case(&c.sha256))
    });
    let mut boot_critical = BootSet::of_card(report, manifests);
    boot_critical.add([
        "RPI_EFI.fd",
        "config.txt",
        "start.elf",
        "fixup.dat",
        "bootcode.bin",
    ]);
    Ok(UefiPlan {
        changes,
        boot_critical,
        table,
        files_in_place,
        notes,
        _unpacked: tmp,
    })
}

/// No backup of a `switch uefi` for this card: nothing to go back to.
#[derive(Debug, thiserror::Error)]
#[error(
    "no backup of a pifw switch uefi on this card (in {}, on the card or in its root filesystem), so pifw cannot restore the U-Boot setup it replaced; pifw backups lists what there is, and pifw update-uboot installs a U-Boot (nothing was written)",
    .backup_dir.display()
)]
pub struct NoSwitchBackup {
    pub backup_dir: PathBuf,
}

/// What `switch uboot` undoes, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoSwitch {
    /// The backups to roll back, in that order.
    pub ids: Vec<String>,
    /// How many of them are changes made since the switch (undone first).
    pub since: usize,
}

/// The backups `switch uboot` rolls back, from `all` (this card's, newest first): every change
/// since the newest `switch uefi`, and that switch's whole run (one `switch uefi --hybrid`
/// leaves two backups, files then the table).
pub fn undo_switch(all: &[Found], backup_dir: &Path) -> Result<UndoSwitch, NoSwitchBackup> {
    let Some(first) = all
        .iter()
        .position(|f| f.summary.manifest.undoes_switch_uefi())
    else {
        return Err(NoSwitchBackup {
            backup_dir: backup_dir.to_path_buf(),
        });
    };
    let mut pos = first;
    while pos + 1 < all.len()
        && all[pos + 1]
            .summary
            .manifest
            .same_run(&all[first].summary.manifest)
    {
        pos += 1;
    }
    Ok(UndoSwitch {
        ids: all[..=pos]
            .iter()
            .map(|f| f.summary.manifest.id.clone())
            .collect(),
        since: first,
    })
}
