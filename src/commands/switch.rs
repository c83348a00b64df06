//! `pifw switch uefi|uboot`: move the boot chain to the pftf UEFI firmware and back.
//!
//! `switch uefi` is a file change like any update, through the same path
//! ([`super::change::execute`]: plan, confirm, back up, copy-on-write apply, read back):
//!
//! - every file of the pftf release zip goes to the same path on the card, names unchanged
//!   (pftf: do not rename them); the zip comes from `--from` or is downloaded, and is checked
//!   against the manifest's whole-zip pin (its members are not pinned; an unmatched zip needs
//!   `--allow-unpinned`);
//! - `config.txt` becomes pftf's, followed by the user's settings that do not fight it
//!   ([`crate::configtxt::merge`]);
//! - an `RPI_EFI.fd` already on the card keeps its saved settings: the variable store is
//!   carried into the new file when both have it in the same place ([`crate::uefi`]), and the
//!   plan says why when it cannot be;
//! - `--bootloader` puts the given EFI binary at the fallback path `EFI/BOOT/BOOTAA64.EFI` (the
//!   firmware keeps no boot entries set from the OS) and, for systemd-boot, a minimal
//!   `loader/loader.conf` when there is none;
//! - `--hybrid` then converts the table (`pifw partition hybrid`), a second transaction with
//!   its own backup.
//!
//! U-Boot and its files stay on the card (unreferenced); `switch uboot` rolls back every
//! change since the newest `switch uefi`, newest first, from the backups pifw kept.

use super::Exit;
use super::change::{self, Request};
use super::update::{boot_set, config, prepare};
use crate::backup::ChangeKind;
use crate::cli::{Bootloader, Cli, FetchArgs, SwitchCommand, WriteArgs};
use crate::config::Config;
use crate::disk::table::TableKind;
use crate::fetch::{self, FetchOptions, Unpacked as Member};
use crate::manifest::{Manifests, Release, ReleaseKind};
use crate::status::Report;
use crate::txn::{FileChange, NewContent};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Caps on a release zip: total bytes extracted and members.
const ZIP_MAX_BYTES: u64 = 128 * 1024 * 1024;
const ZIP_MAX_MEMBERS: usize = 2000;

/// Minimal systemd-boot configuration: a menu for 3 seconds, no editor (the console is remote).
const LOADER_CONF: &str = "timeout 3\neditor no\n";

pub fn run(cli: &Cli, manifests: &Manifests, cmd: &SwitchCommand) -> anyhow::Result<Exit> {
    match cmd {
        SwitchCommand::Uefi {
            version,
            hybrid,
            grow,
            bootloader,
            efi,
            efi_from_debian,
            allow_no_boot_entries,
            fetch,
            write,
            target,
        } => {
            // The loader from the Debian archive, verified, before anything else is planned.
            let resolved = match (efi_from_debian, bootloader) {
                (Some(suite), Some(b)) => Some(loader_from_debian(manifests, fetch, suite, *b)?),
                _ => None,
            };
            let efi = resolved
                .as_ref()
                .map(|r| r.path.as_path())
                .or(efi.as_deref());
            let opts = UefiOptions {
                version: version.as_deref(),
                hybrid: *hybrid,
                kind: ChangeKind::SwitchUefi,
                grow: *grow,
                bootloader: bootloader.zip(efi),
                allow_no_boot_entries: *allow_no_boot_entries,
            };
            uefi(cli, manifests, &opts, fetch, write, target.as_deref())
        }
        SwitchCommand::Uboot { write, target } => uboot(cli, manifests, write, target.as_deref()),
    }
}

/// `pifw update-uefi`: `switch uefi` for a card that is on pftf UEFI already; refuses one
/// that is not (switching is a bigger step, and says so in its own command).
pub fn update_uefi(
    cli: &Cli,
    manifests: &Manifests,
    version: Option<&str>,
    fargs: &FetchArgs,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let (path, report) = prepare(cli, manifests, target, true)?;
    if report.card_file("RPI_EFI.fd").is_none() {
        return Err(super::UsageError(format!(
            "{} has no RPI_EFI.fd: it is not on pftf UEFI; pifw switch uefi moves it there (nothing was written)",
            path.display()
        ))
        .into());
    }
    let opts = UefiOptions {
        version,
        hybrid: false,
        kind: ChangeKind::UpdateUefi,
        grow: false,
        bootloader: None,
        allow_no_boot_entries: false,
    };
    uefi(cli, manifests, &opts, fargs, wargs, Some(&path))
}

struct UefiOptions<'a> {
    /// `switch uefi`, or `update-uefi` (another release on a card on UEFI already).
    kind: ChangeKind,
    version: Option<&'a str>,
    hybrid: bool,
    grow: bool,
    bootloader: Option<(Bootloader, &'a Path)>,
    allow_no_boot_entries: bool,
}

/// The pftf project (`RPi3`, `RPi4`) for the card's board.
fn project(report: &Report, manifests: &Manifests, from: Option<&Path>) -> anyhow::Result<String> {
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
        [] => Err(super::UsageError(
            "pifw cannot tell which board this card is for, so not which pftf firmware (RPi3 or RPi4) it needs; pass --board (nothing was written)".into(),
        )
        .into()),
        many => Err(super::UsageError(format!(
            "the card serves boards of several pftf projects ({}); pass --board (nothing was written)",
            many.join(", ")
        ))
        .into()),
    }
}

fn choose<'a>(
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

/// The release zip on this machine, and whether it matches the release's pin.
fn obtain_zip(
    cfg: &Config,
    fargs: &FetchArgs,
    release: &Release,
) -> anyhow::Result<(PathBuf, bool, String)> {
    let pins: Vec<&str> = release
        .sources
        .iter()
        .filter_map(|s| s.sha256.as_deref())
        .collect();
    if let Some(from) = &fargs.from {
        let mut f = fetch::open_source(from, &fetch::Limits::default())
            .with_context(|| format!("reading --from {}", from.display()))?;
        let (sha, _) = fetch::hash_reader(&mut f)?;
        let pinned = pins.contains(&sha.as_str());
        return Ok((from.clone(), pinned, sha));
    }
    let mut opts = FetchOptions::new(&cfg.cache_dir);
    opts.offline = fargs.offline;
    let source = release
        .sources
        .iter()
        .find(|s| s.sha256.is_some())
        .ok_or_else(|| anyhow::anyhow!("{} has no pinned download", release.label()))?;
    let v = fetch::obtain_source(&opts, source, &mut super::progress::Download::new())
        .with_context(|| format!("obtaining {}", release.label()))?;
    Ok((v.path, true, v.sha256))
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
/// grub-efi-arm64-bin, resolved through the archive's signed InRelease with the keyring.
fn loader_from_debian(
    manifests: &Manifests,
    fargs: &FetchArgs,
    suite: &str,
    loader: Bootloader,
) -> anyhow::Result<crate::debian_source::LoaderSource> {
    let cfg = config()?;
    let opts = super::update::fetch_options(&cfg, fargs);
    let Some(mirror) = opts.debian_mirror.clone() else {
        bail!(
            "--efi-from-debian needs a Debian mirror: pass --mirror URL (the directory that holds dists/ and pool/), set debian_mirror in the config file, or add a Debian archive to the apt sources; nothing was written"
        );
    };
    let keyring = fargs.keyring.clone().unwrap_or_else(|| cfg.keyring.clone());
    let name = match loader {
        Bootloader::SystemdBoot => "systemd-boot",
        Bootloader::Grub => "grub",
    };
    let req = crate::debian_source::ArchiveRequest {
        mirror: &mirror,
        suite,
        keyring: &keyring,
    };
    let got = crate::debian_source::resolve_loader(
        &opts,
        manifests,
        name,
        &req,
        &mut super::progress::Download::new(),
    )
    .with_context(|| {
        format!(
            "resolving {name} from the Debian archive {mirror} ({suite}, keyring {}); nothing was written",
            keyring.display()
        )
    })?;
    super::output::note(format_args!(
        "{} (the boot loader)",
        got.provenance.describe()
    ));
    Ok(got)
}

fn uefi(
    cli: &Cli,
    manifests: &Manifests,
    o: &UefiOptions<'_>,
    fargs: &FetchArgs,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, true)?;
    let project = project(&report, manifests, fargs.from.as_deref())?;
    let release = choose(manifests, &project, o.version)?;
    let (zip_path, pinned, zip_sha) = obtain_zip(&cfg, fargs, release)?;
    let mut notes: Vec<String> = Vec::new();
    if pinned {
        notes.push(format!(
            "the zip matches the published sha256 pin of {} ({}); that pin is marked unverified in the manifests",
            release.label(),
            release.sources.iter().find(|s| s.sha256.as_deref() == Some(zip_sha.as_str())).map_or("", |s| s.provenance.as_str())
        ));
    } else if fargs.allow_unpinned {
        notes.push(format!(
            "the zip (sha256 {zip_sha}) matches no pin of {}; installed because of --allow-unpinned",
            release.label()
        ));
    } else {
        bail!(
            "{} (sha256 {zip_sha}) matches no published pin of {}; pass --allow-unpinned to install it anyway (nothing was written)",
            zip_path.display(),
            release.label()
        );
    }
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let members = extract(&zip_path, tmp.path())?;
    for need in ["RPI_EFI.fd", "config.txt"] {
        if find(&members, need).is_none() {
            bail!(
                "{} has no {need}: it is not a pftf release zip (nothing was written)",
                zip_path.display()
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
    match change::read_card_file(&path, &report, "RPI_EFI.fd", crate::uefi::MAX_FD)? {
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
    let card_cfg =
        change::read_card_file(&path, &report, "config.txt", 256 * 1024)?.unwrap_or_default();
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
    if let Some((kind, efi)) = o.bootloader {
        let bytes =
            std::fs::read(efi).with_context(|| format!("reading --efi {}", efi.display()))?;
        if !crate::probe::is_aa64_pe(&bytes) {
            bail!(
                "{} is not an AArch64 EFI application (PE/COFF, machine 0xAA64); a Pi 3 in UEFI mode cannot start it (nothing was written)",
                efi.display()
            );
        }
        if kind == Bootloader::SystemdBoot {
            let probe = crate::probe::probe(&bytes[..])?;
            if !matches!(probe, crate::probe::Probe::SystemdBoot { .. }) {
                bail!(
                    "{} does not look like systemd-boot (no LoaderInfo string); pass --bootloader grub for GRUB, or the right file (nothing was written)",
                    efi.display()
                );
            }
        }
        changes.push(bytes_change("EFI/BOOT/BOOTAA64.EFI", bytes)?);
        if kind == Bootloader::SystemdBoot && report.card_file("loader/loader.conf").is_none() {
            changes.push(bytes_change(
                "loader/loader.conf",
                LOADER_CONF.as_bytes().to_vec(),
            )?);
        }
        // Refused before any write (and the same under --dry-run) when the loader would have
        // nothing to boot: the decision is the domain's (crate::uefi::loader_readiness).
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
            match kind {
                Bootloader::SystemdBoot => crate::uefi::Loader::SystemdBoot,
                Bootloader::Grub => crate::uefi::Loader::Grub,
            },
            changes
                .iter()
                .find(|c| c.path == "EFI/BOOT/BOOTAA64.EFI")
                .and_then(|c| match &c.content {
                    NewContent::Bytes(b) => Some(b.as_slice()),
                    _ => None,
                })
                .unwrap_or_default(),
            crate::uefi::room_after(&report, &sizes),
            o.allow_no_boot_entries,
        )
        .map_err(|e| anyhow::anyhow!("{e} (nothing was written)"))?;
        notes.extend(ready);
    }

    // A composite change is planned whole before its first write: the table conversion is
    // planned (and refused, when it would be) here, before any file is written.
    let mut table = match (o.hybrid, report.table.kind) {
        (false, _) => None,
        (true, TableKind::Mbr) => Some(
            crate::change::table::plan_hybrid(&path, &report, o.grow, false)
                .map_err(super::partition::usage_if_grow)?,
        ),
        (true, TableKind::Gpt | TableKind::Hybrid) => {
            notes.push("--hybrid: the card has a GPT already; the table stays as it is".into());
            None
        }
        (true, TableKind::None) => bail!(
            "{} has no partition table to convert; see pifw status (nothing was written)",
            path.display()
        ),
    };

    for n in &notes {
        super::output::note(format_args!("note: {n}"));
    }
    if let Some(t) = &table {
        super::partition::show_hybrid_plan(cli.json, t, wargs.dry_run, &cfg)?;
        if !cli.json {
            println!("Then, in the same run, the files:");
        }
    }
    // When every file is in place already, change::execute writes nothing and asks nothing:
    // the table conversion then needs its own confirmation.
    let files_in_place = changes.iter().all(|c| {
        report
            .card_file(&c.path)
            .is_some_and(|f| f.size == c.size && f.sha256.eq_ignore_ascii_case(&c.sha256))
    });
    let req = Request {
        title: format!("Switch to UEFI: {}", release.label()),
        kind: o.kind,
        changes,
        boot_critical: {
            let mut set = boot_set(&report, manifests);
            set.add([
                "RPI_EFI.fd",
                "config.txt",
                "start.elf",
                "fixup.dat",
                "bootcode.bin",
            ]);
            set
        },
        backup: true,
        card_copy: true,
        provenance: None,
    };
    let code = change::execute(cli.json, &path, &report, req, wargs, &cfg)?;
    if wargs.dry_run || code != Exit::Ok {
        return Ok(code);
    }
    if let Some(mut t) = table.take() {
        if files_in_place {
            change::confirm(wargs, &path)?;
        }
        // Confirmed with the files above; the table plan is checked against the card's
        // sectors again before its first write.
        let code = super::partition::apply_hybrid(cli.json, ChangeKind::SwitchUefi, &mut t, &report, &cfg).context(
            "the UEFI firmware files are installed and verified; converting the partition table then failed",
        )?;
        if code != Exit::Ok {
            return Ok(code);
        }
    }
    if !cli.json {
        next_steps(o.bootloader.map(|b| b.0), o.hybrid);
    }
    Ok(Exit::Ok)
}

fn next_steps(loader: Option<Bootloader>, hybrid: bool) {
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

/// Rolls back every change since the newest `switch uefi`, newest first.
fn uboot(
    cli: &Cli,
    manifests: &Manifests,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, false)?;
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let all = super::rollback::all_backups(&path, &report, &cfg, tmp.path())?;
    let Some(first) = all
        .iter()
        .position(|f| f.summary.manifest.undoes_switch_uefi())
    else {
        bail!(
            "no backup of a pifw switch uefi on this card (in {}, on the card or in its root filesystem), so pifw cannot restore the U-Boot setup it replaced; pifw backups lists what there is, and pifw update-uboot installs a U-Boot (nothing was written)",
            cfg.backup_dir.display()
        );
    };
    // One `switch uefi --hybrid` leaves two backups (files, then the table) of one pifw run:
    // undo the whole run of them.
    let mut pos = first;
    while pos + 1 < all.len()
        && all[pos + 1]
            .summary
            .manifest
            .same_run(&all[first].summary.manifest)
    {
        pos += 1;
    }
    let ids: Vec<String> = all[..=pos]
        .iter()
        .map(|f| f.summary.manifest.id.clone())
        .collect();
    // `first` backups are newer than the switch: changes made since, undone first.
    if first > 0 {
        super::output::note(format_args!(
            "note: {first} change{} made since the switch to UEFI {} undone too, newest first",
            if first == 1 { " was" } else { "s were" },
            if first == 1 { "is" } else { "are" }
        ));
    }
    super::rollback::undo_in_order(cli, manifests, &ids, false, wargs, &path)
}
