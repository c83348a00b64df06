//! `pifw status [TARGET]`: what is on the card, which versions, which boot chain, what is wrong;
//! the target when none is given. The views are [`crate::ui::status`].

use super::{Exit, UsageError};
use crate::cli::Cli;
use crate::disk::host::{Candidate, Host};
use crate::disk::target::Target;
use crate::manifest::Manifests;
use crate::status::{self, Health, Report, TargetInfo};
use anyhow::{Context, bail};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

pub fn run(cli: &Cli, manifests: &Manifests, target: Option<&Path>) -> anyhow::Result<Exit> {
    let host = Host::system();
    let path = match target {
        Some(p) => p.to_path_buf(),
        None => pick_target(&host, manifests)?,
    };
    let mut report = inspect_path(&path, manifests, &host, cli.board.as_deref())?;
    report.provenance = provenance(&report);
    crate::ui::status::report(cli.json, &report, manifests)?;
    Ok(match report.health {
        Health::Ok => Exit::Ok,
        _ => Exit::Problems,
    })
}

/// Where the card's files came from, as this machine's backups of the card record it (a
/// Debian archive release and how it was verified). Best effort: without a readable
/// configuration or backup directory there is nothing to say, and status goes on.
fn provenance(report: &Report) -> Vec<crate::backup::FileProvenance> {
    let Ok(cfg) = super::config() else {
        return Vec::new();
    };
    let Some(fw) = &report.firmware else {
        return Vec::new();
    };
    let Ok(listing) = crate::backup::list(&cfg.backup_dir, &crate::change::identity(report)) else {
        return Vec::new();
    };
    let manifests: Vec<crate::backup::Manifest> =
        listing.backups.into_iter().map(|b| b.manifest).collect();
    let card: Vec<(&str, &str)> = fw
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.sha256.as_str()))
        .collect();
    crate::backup::provenance_of(&manifests, &card)
}

/// Opens `path` read-only and reads the report.
pub(super) fn inspect_path(
    path: &Path,
    manifests: &Manifests,
    host: &Host,
    board: Option<&str>,
) -> anyhow::Result<Report> {
    let mut t = Target::open_read(path)?;
    let board = status::resolve_board(manifests, board, t.kind, || host.dt_model())
        .map_err(|e| UsageError(e.to_string()))?;
    let info = TargetInfo {
        path: path.display().to_string(),
        kind: t.kind,
        size_bytes: t.size_bytes,
        read_only: true,
    };
    let mut report = status::inspect(&mut t.file, info, manifests, board)
        .with_context(|| format!("reading {}", path.display()))?;
    let firmware = report
        .firmware
        .as_ref()
        .map(|f| (f.offset_bytes, f.offset_bytes + f.size_bytes));
    report.mounts = crate::disk::lock::mounts_report(path, firmware);
    Ok(report)
}

/// No TARGET: on a Pi, the disk holding its firmware partition; elsewhere ask on a terminal.
pub(super) fn pick_target(host: &Host, manifests: &Manifests) -> anyhow::Result<PathBuf> {
    let candidates = host.candidate_disks();
    let on_pi = host
        .dt_model()
        .is_some_and(|m| manifests.board_by_dt_model(&m).is_some());
    if on_pi {
        let with_firmware: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| {
                inspect_path(&c.dev, manifests, host, None)
                    .is_ok_and(|r| r.firmware.as_ref().is_some_and(|f| !f.files.is_empty()))
            })
            .collect();
        match with_firmware.as_slice() {
            [one] => return Ok(one.dev.clone()),
            [] => bail!(
                "this Pi has no disk with a readable firmware partition; pass the TARGET, e.g. pifw status /dev/mmcblk0"
            ),
            many => {
                // The SD slot is where the Pi 3's ROM boots from.
                if let Some(c) = many.iter().find(|c| c.dev.ends_with("mmcblk0")) {
                    return Ok(c.dev.clone());
                }
            }
        }
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !interactive {
        let list: Vec<String> = candidates
            .iter()
            .map(|c| c.dev.display().to_string())
            .collect();
        return Err(UsageError(format!(
            "no TARGET given and no terminal to ask on: pass an image file or a device, e.g. pifw status /dev/sdb{}",
            if list.is_empty() {
                String::new()
            } else {
                format!(" (disks here: {})", list.join(", "))
            }
        ))
        .into());
    }
    if candidates.is_empty() {
        bail!("no disks found; pass an image file, e.g. pifw status sdcard.img");
    }
    let read = candidates
        .iter()
        .map(|c| (c, inspect_path(&c.dev, manifests, host, None)))
        .collect();
    crate::ui::status::pick_disk(&candidates, read)
}
