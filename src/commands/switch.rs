//! `pifw switch uefi|uboot` and `pifw update-uefi`: arguments; the views are
//! [`crate::ui::table`], [`crate::ui::change`] and [`crate::ui::switch`].
//!
//! The plan is the domain's ([`crate::change::switch`]): the pftf release and its zip, the
//! file changes (zip files, merged config.txt, RPI_EFI.fd with the card's settings carried
//! over, the boot loader), and with `--hybrid` the table conversion planned with them, before
//! any write. This command resolves the arguments, has the notes and the table plan shown, runs
//! the file change through [`super::change::execute`] and the table change after it, and
//! says what to do next in the OS. `switch uboot` rolls back every change since the newest
//! `switch uefi`, newest first, from the backups pifw kept ([`crate::change::switch::undo_switch`]).

use super::change::{self, Request};
use super::{Exit, config, prepare};
use crate::backup::ChangeKind;
use crate::change::switch::{self as plan, UefiAsk};
use crate::cli::{Bootloader, Cli, FetchArgs, SwitchCommand, WriteArgs};
use crate::manifest::Manifests;
use crate::uefi::Loader;
use crate::ui;
use anyhow::Context;
use std::path::Path;

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

fn loader(b: Bootloader) -> Loader {
    match b {
        Bootloader::SystemdBoot => Loader::SystemdBoot,
        Bootloader::Grub => Loader::Grub,
    }
}

/// `--efi-from-debian SUITE`: the loader resolved through the archive, and a note saying how.
fn loader_from_debian(
    manifests: &Manifests,
    fargs: &FetchArgs,
    suite: &str,
    b: Bootloader,
) -> anyhow::Result<crate::debian_source::LoaderSource> {
    let cfg = config()?;
    let opts = super::fetch_options(&cfg, fargs);
    let keyring = fargs.keyring.clone().unwrap_or_else(|| cfg.keyring.clone());
    let got = plan::loader_from_debian(
        &opts,
        &keyring,
        manifests,
        suite,
        loader(b),
        &mut crate::ui::progress::Download::new(),
    )?;
    crate::ui::output::note(format_args!(
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
    let project = plan::project(&report, manifests, fargs.from.as_deref())
        .map_err(|e| super::UsageError(e.to_string()))?;
    let release = plan::choose(manifests, &project, o.version)?;
    let zip = plan::obtain_zip(
        &cfg,
        fargs.from.as_deref(),
        fargs.offline,
        release,
        &mut crate::ui::progress::Download::new(),
    )?;
    let ask = UefiAsk {
        hybrid: o.hybrid,
        grow: o.grow,
        bootloader: o.bootloader.map(|(b, p)| (loader(b), p)),
        allow_no_boot_entries: o.allow_no_boot_entries,
        allow_unpinned: fargs.allow_unpinned,
    };
    let mut p = plan::plan_uefi(&path, &report, manifests, release, &zip, &ask)
        .map_err(super::partition::usage_if_grow)?;

    for n in &p.notes {
        crate::ui::output::note(format_args!("note: {n}"));
    }
    if let Some(t) = &p.table {
        ui::table::show_hybrid_plan(cli.json, t, wargs.dry_run, &cfg)?;
        ui::switch::then_files(cli.json);
    }
    let req = Request {
        title: format!("Switch to UEFI: {}", release.label()),
        kind: o.kind,
        changes: std::mem::take(&mut p.changes),
        boot_critical: p.boot_critical.clone(),
        backup: true,
        card_copy: true,
        provenance: None,
    };
    let code = change::execute(cli.json, &path, &report, req, wargs, &cfg)?;
    if wargs.dry_run || code != Exit::Ok {
        return Ok(code);
    }
    if let Some(mut t) = p.table.take() {
        // When every file is in place already, change::execute wrote nothing and asked
        // nothing: the table conversion then needs its own confirmation.
        if p.files_in_place {
            ui::prompt::confirm(wargs, &path)?;
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
        ui::switch::next_steps(o.bootloader.map(|b| b.0), o.hybrid);
    }
    Ok(Exit::Ok)
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
    let all = super::change::all_backups(&path, &report, &cfg, tmp.path())?;
    let undo = plan::undo_switch(&all, &cfg.backup_dir)?;
    let first = undo.since;
    ui::switch::undoes_since(first);
    let undo = crate::change::rollback::Undo { ids: undo.ids };
    super::change::undo(cli, manifests, &undo, false, wargs, &path)
}
