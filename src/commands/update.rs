//! `pifw update-firmware` and `pifw update-uboot`: arguments (the views are
//! [`crate::ui::change`]).
//!
//! Which release and which files are [`crate::update`]'s decisions; where the files come from
//! and the changes that install them are [`crate::change::update`]'s. This command resolves
//! the arguments, says the notes and allowed known issues, and runs the change through
//! [`super::change::execute`].

use super::change::{self, Request};
use super::{Exit, UsageError, config, fetch_options, prepare};
use crate::backup::ChangeKind;
use crate::change::update::{self as plan, SourceAsk, Sourced};
use crate::cli::{Cli, FetchArgs, WriteArgs};
use crate::config::Config;
use crate::manifest::{Board, Manifests, ReleaseKind};
use crate::status::Report;
use crate::ui;
use crate::update::{self, Install, versions_now};
use anyhow::bail;
use std::path::Path;

/// The card's boot set ([`crate::change::BootSet::of_card`]).
pub(super) fn boot_set(report: &Report, manifests: &Manifests) -> crate::change::BootSet {
    crate::change::BootSet::of_card(report, manifests)
}

/// `--from` or `--from-debian`, read once; a release resolved through the archive is noted.
fn read_from(
    cfg: &Config,
    fargs: &FetchArgs,
    manifests: &Manifests,
    kind: ReleaseKind,
) -> anyhow::Result<Option<Sourced>> {
    let keyring = fargs.keyring.clone().unwrap_or_else(|| cfg.keyring.clone());
    let ask = SourceAsk {
        from: fargs.from.as_deref(),
        from_debian: fargs.from_debian.as_deref(),
        keyring: &keyring,
    };
    let src = plan::read_from(
        &fetch_options(cfg, fargs),
        &ask,
        manifests,
        kind,
        &mut crate::ui::progress::Download::new(),
    )?;
    if let Some(a) = src.as_ref().and_then(|s| s.archive.as_ref()) {
        crate::ui::output::note(a.provenance.describe());
    }
    Ok(src)
}

/// [`plan::install_changes`] with this run's fetch options and download progress.
fn install_changes(
    cfg: &Config,
    fargs: &FetchArgs,
    src: Option<&Sourced>,
    release: &crate::manifest::Release,
    installs: &[Install],
) -> anyhow::Result<Vec<crate::txn::FileChange>> {
    plan::install_changes(
        &fetch_options(cfg, fargs),
        fargs.allow_downgrade,
        src,
        release,
        installs,
        &mut crate::ui::progress::Download::new(),
    )
}

pub fn firmware(
    cli: &Cli,
    manifests: &Manifests,
    version: Option<&str>,
    fargs: &FetchArgs,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, true)?;
    // Without --board, every firmware file already on the card is updated, not only those of
    // the boards whose chain the card serves: a card left with start4.elf from one release and
    // start.elf from another is a trap for whoever moves it to a Pi 4 later.
    let boards: Vec<&Board> = if report.board.id().is_some() {
        update::target_boards(&report, manifests)
    } else {
        manifests.boards.iter().collect()
    };
    let src = read_from(&cfg, fargs, manifests, ReleaseKind::Firmware)?;
    let manifests = src
        .as_ref()
        .and_then(|s| s.archive.as_ref())
        .map_or(manifests, |a| &a.manifests);
    let version = plan::firmware_version(src.as_ref(), version)?;
    let release = update::choose_release(
        manifests,
        ReleaseKind::Firmware,
        version.as_deref(),
        &boards,
    )?;
    ui::change::allowed_issues(update::check_known_issues(
        &report,
        manifests,
        ReleaseKind::Firmware,
        &release.version,
        &boards,
        &fargs.allow_known_issue,
    )?);
    let installs = update::firmware_installs(&report, release, &boards);
    if installs.is_empty() {
        bail!(
            "the card has none of the files of {} for its boards; nothing was written",
            release.label()
        );
    }
    let changes = install_changes(&cfg, fargs, src.as_ref(), release, &installs)?;
    let req = Request {
        provenance: src.as_ref().and_then(Sourced::provenance),
        kind: ChangeKind::UpdateFirmware,
        title: format!(
            "Pi firmware {} -> {} ({} files)",
            versions_now(&installs),
            release.version,
            installs.len()
        ),
        changes,
        boot_critical: boot_set(&report, manifests),
        backup: true,
        card_copy: true,
    };
    change::execute(cli.json, &path, &report, req, wargs, &cfg)
}

pub fn uboot(
    cli: &Cli,
    manifests: &Manifests,
    version: Option<&str>,
    fargs: &FetchArgs,
    wargs: &WriteArgs,
    target: Option<&Path>,
) -> anyhow::Result<Exit> {
    let cfg = config()?;
    let (path, report) = prepare(cli, manifests, target, true)?;
    let boards = update::uboot_boards(&report, manifests);
    if boards.is_empty() {
        return Err(UsageError(
            "no board on this card boots U-Boot; pass --board to say which board should".into(),
        )
        .into());
    }
    let src = read_from(&cfg, fargs, manifests, ReleaseKind::UBoot)?;
    let manifests = src
        .as_ref()
        .and_then(|s| s.archive.as_ref())
        .map_or(manifests, |a| &a.manifests);
    let version = match plan::uboot_wanted(src.as_ref(), version)? {
        plan::UbootWanted::Release(v) => v,
        plan::UbootWanted::Unpinned => {
            let s = src.as_ref().expect("unpinned only with a source");
            return unpinned_uboot(
                cli, manifests, &cfg, fargs, wargs, &path, &report, &boards, s,
            );
        }
    };
    let release =
        update::choose_release(manifests, ReleaseKind::UBoot, version.as_deref(), &boards)?;
    ui::change::allowed_issues(update::check_known_issues(
        &report,
        manifests,
        ReleaseKind::UBoot,
        &release.version,
        &boards,
        &fargs.allow_known_issue,
    )?);
    let installs = plan::uboot_installs(&report, release, &boards, src.as_ref())?;
    let config_change = kernel_edits(&path, &report, &boards)?;
    let changes = install_changes(&cfg, fargs, src.as_ref(), release, &installs)?;
    let mut ch = changes;
    ch.extend(config_change);
    let req = Request {
        provenance: src.as_ref().and_then(Sourced::provenance),
        kind: ChangeKind::UpdateUboot,
        title: format!(
            "U-Boot {} -> {} ({})",
            versions_now(&installs),
            release.version,
            installs
                .iter()
                .map(|i| format!("{} {}", i.dest, i.file.build.as_deref().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        changes: ch,
        boot_critical: boot_set(&report, manifests),
        backup: true,
        card_copy: true,
    };
    change::execute(cli.json, &path, &report, req, wargs, &cfg)
}

/// [`plan::kernel_edits`], its notes said (also those before a refusal).
fn kernel_edits(
    path: &Path,
    report: &Report,
    boards: &[&Board],
) -> anyhow::Result<Option<crate::txn::FileChange>> {
    let mut notes = Vec::new();
    let edit = plan::kernel_edits(path, report, boards, &mut notes);
    for n in notes {
        crate::ui::output::note(n);
    }
    edit
}

/// `--from` a U-Boot no manifest pins: the builds [`plan::unpinned_uboot`] picks, installed.
#[allow(clippy::too_many_arguments)]
fn unpinned_uboot(
    cli: &Cli,
    manifests: &Manifests,
    cfg: &Config,
    fargs: &FetchArgs,
    wargs: &WriteArgs,
    path: &Path,
    report: &Report,
    boards: &[&Board],
    src: &Sourced,
) -> anyhow::Result<Exit> {
    let from = fargs.from.as_deref().unwrap_or(Path::new("?"));
    let mut allowed = Vec::new();
    let picked = plan::unpinned_uboot(
        report,
        manifests,
        from,
        src.local(),
        boards,
        fargs.allow_unpinned,
        &fargs.allow_known_issue,
        &mut allowed,
    );
    ui::change::allowed_issues(allowed);
    let picked = picked?;
    let mut ch = picked.changes;
    ch.extend(kernel_edits(path, report, boards)?);
    let req = Request {
        provenance: None,
        kind: ChangeKind::UpdateUboot,
        title: format!(
            "U-Boot -> {}, unpinned, from {} ({})",
            picked.version,
            from.display(),
            ch.iter()
                .map(|c| c.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        changes: ch,
        boot_critical: boot_set(report, manifests),
        backup: true,
        card_copy: true,
    };
    change::execute(cli.json, path, report, req, wargs, cfg)
}
