//! Commands, one file per verb: argument handling.
//!
//! Each command resolves its arguments (target, board, manifests), calls the domain layer, and
//! hands what it got to [`crate::ui`], which renders it as aligned text or JSON (the only code
//! that prints). Errors travel up as `anyhow` with context naming
//! the object; `main` prints them and maps them to an exit code with [`exit_code_for`].

mod change;
mod manifests;
mod partition;
mod rollback;
mod status;
mod switch;
mod update;

use crate::cli::{Cli, Command, FetchArgs};
use crate::config::Config;
use crate::disk::host::Host;
use crate::fetch::FetchOptions;
use crate::manifest::Manifests;
use crate::status::Report;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// The configuration of this run (`--backup-dir` over the file's `backup_dir`).
use crate::config::load_for_run as config;

/// Exit codes, documented in the README and `pifw --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; the card is healthy.
    Ok = 0,
    /// pifw could not do what was asked (I/O, unreadable input).
    Error = 1,
    /// The command line was wrong.
    Usage = 2,
    /// The command worked and found problems on the card (warnings or errors).
    Problems = 3,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// A mistake on the command line found after parsing (an unknown board id, say).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error that reached `main`.
pub fn exit_code_for(e: &anyhow::Error) -> Exit {
    if e.downcast_ref::<UsageError>().is_some() {
        Exit::Usage
    } else {
        Exit::Error
    }
}

pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    if let Some(dir) = &cli.backup_dir {
        crate::config::set_backup_dir(dir)?;
    }
    let manifests = load_manifests(&cli)?;
    // --from-debian resolves u-boot-rpi and raspi-firmware only; the UEFI commands take pftf's
    // zip and a loader file, so the flag would be silently ignored there.
    let uefi_fetch = match &cli.command {
        Command::UpdateUefi { fetch, .. } => Some(fetch),
        Command::Switch(crate::cli::SwitchCommand::Uefi { fetch, .. }) => Some(fetch),
        _ => None,
    };
    if uefi_fetch.is_some_and(|f| f.from_debian.is_some()) {
        return Err(UsageError(
            "--from-debian takes u-boot-rpi (update-uboot) and raspi-firmware (update-firmware); pftf UEFI is not in the Debian archive: use --from ZIP (for switch uefi's boot loader, --efi-from-debian SUITE takes systemd-boot or GRUB from the archive)".into(),
        )
        .into());
    }
    match &cli.command {
        Command::Status { target } => status::run(&cli, &manifests, target.as_deref()),
        Command::Manifests(cmd) => manifests::run(&cli, &manifests, cmd),
        Command::UpdateFirmware {
            version,
            fetch,
            write,
            target,
        } => update::firmware(
            &cli,
            &manifests,
            version.as_deref(),
            fetch,
            write,
            target.as_deref(),
        ),
        Command::UpdateUboot {
            version,
            fetch,
            write,
            target,
        } => update::uboot(
            &cli,
            &manifests,
            version.as_deref(),
            fetch,
            write,
            target.as_deref(),
        ),
        Command::Backups { prune, target } => {
            rollback::backups(&cli, &manifests, *prune, target.as_deref())
        }
        Command::Rollback {
            to,
            force,
            write,
            target,
        } => rollback::rollback(
            &cli,
            &manifests,
            to.as_deref(),
            *force,
            write,
            target.as_deref(),
        ),
        Command::Recover { write, target } => {
            rollback::recover(&cli, &manifests, write, target.as_deref())
        }
        Command::Partition(cmd) => partition::run(&cli, &manifests, cmd),
        Command::Switch(cmd) => switch::run(&cli, &manifests, cmd),
        Command::UpdateUefi {
            version,
            fetch,
            write,
            target,
        } => switch::update_uefi(
            &cli,
            &manifests,
            version.as_deref(),
            fetch,
            write,
            target.as_deref(),
        ),
        Command::Completions { shell } => crate::ui::meta::completions(*shell).map(|()| Exit::Ok),
        Command::Man => crate::ui::meta::man().map(|()| Exit::Ok),
    }
}

fn load_manifests(cli: &Cli) -> anyhow::Result<Manifests> {
    match &cli.manifests {
        Some(dir) => Manifests::load_dir(dir)
            .with_context(|| format!("loading manifests from {}", dir.display())),
        None => Manifests::embedded().context("loading the built-in manifests"),
    }
}

/// The target to change and what is on it: TARGET, or the one [`status::pick_target`] finds
/// or asks for. With `strict`, a card whose structure is damaged is refused
/// ([`crate::change::structural_damage`]).
fn prepare(
    cli: &Cli,
    manifests: &Manifests,
    target: Option<&Path>,
    strict: bool,
) -> anyhow::Result<(PathBuf, Report)> {
    let host = Host::system();
    let path = match target {
        Some(p) => p.to_path_buf(),
        None => status::pick_target(&host, manifests)?,
    };
    let report = status::inspect_path(&path, manifests, &host, cli.board.as_deref())?;
    let broken = if strict {
        crate::change::structural_damage(&report)
    } else {
        Vec::new()
    };
    if !broken.is_empty() {
        bail!(
            "refusing to change {}: {}. Nothing was written; see pifw status",
            path.display(),
            broken.join("; ")
        );
    }
    Ok((path, report))
}

/// The fetch options of this run: `--offline`, and the Debian mirror from `--mirror`, the
/// configuration, or the apt sources.
fn fetch_options(cfg: &Config, args: &FetchArgs) -> FetchOptions {
    let mut opts = FetchOptions::new(&cfg.cache_dir);
    opts.offline = args.offline;
    opts.debian_mirror = args
        .debian_mirror
        .clone()
        .or_else(|| cfg.debian_mirror.clone())
        .or_else(|| crate::fetch::debian_mirror_from_apt(Path::new("/")));
    opts
}
