//! `pifw manifests list|show`: what pifw knows about boards and releases.

use super::{Exit, UsageError};
use crate::cli::{Cli, ManifestsCommand};
use crate::manifest::{Manifests, Release, ReleaseKind};
use std::io::Write;

pub fn run(cli: &Cli, m: &Manifests, cmd: &ManifestsCommand) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    match cmd {
        ManifestsCommand::List => {
            if cli.json {
                serde_json::to_writer_pretty(&mut out, m)?;
                writeln!(out)?;
                return Ok(Exit::Ok);
            }
            writeln!(out, "Boards")?;
            for b in &m.boards {
                writeln!(out, "  {:<10} {} ({})", b.id, b.name, b.soc)?;
            }
            for kind in [ReleaseKind::Firmware, ReleaseKind::UBoot, ReleaseKind::Uefi] {
                writeln!(out, "Releases: {}", kind_arg(kind))?;
                for r in m.releases_of(kind) {
                    writeln!(out, "  {}", release_line(r))?;
                }
            }
        }
        ManifestsCommand::Show { name, version } => {
            if let Some(b) = m.board(name) {
                if cli.json {
                    serde_json::to_writer_pretty(&mut out, b)?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "{} ({})", b.name, b.id)?;
                    writeln!(out, "  SoC            {}", b.soc)?;
                    writeln!(out, "  device tree    {}", b.dt_models.join(" | "))?;
                    writeln!(out, "  config.txt     [{}]", b.config_filters.join("] ["))?;
                    writeln!(out, "  dtbs           {}", b.dtbs.join(", "))?;
                    writeln!(out, "  U-Boot builds  {}", b.uboot_builds.join(", "))?;
                    writeln!(
                        out,
                        "  UEFI           {}",
                        b.uefi.as_deref().unwrap_or("none")
                    )?;
                }
                return Ok(Exit::Ok);
            }
            let kind = parse_kind(name).ok_or_else(|| {
                UsageError(format!(
                    "'{name}' is neither a board nor a kind (firmware, u-boot, uefi)"
                ))
            })?;
            let releases: Vec<&Release> = match version {
                // `release` also accepts the upstream part of a Debian version (`2023.01`).
                Some(v) => vec![m.release(kind, v).map_err(|e| UsageError(e.to_string()))?],
                None => m.releases_of(kind),
            };
            if releases.is_empty() {
                return Err(UsageError(format!(
                    "no {} releases; see pifw manifests list",
                    kind_arg(kind)
                ))
                .into());
            }
            if cli.json {
                serde_json::to_writer_pretty(&mut out, &releases)?;
                writeln!(out)?;
                return Ok(Exit::Ok);
            }
            for r in releases {
                writeln!(out, "{}", release_line(r))?;
                writeln!(out, "  from {}", r.origin)?;
                for s in &r.sources {
                    writeln!(
                        out,
                        "  source {:?} {} [{}] {}",
                        s.kind,
                        s.location,
                        if s.verified { "verified" } else { "UNVERIFIED" },
                        s.provenance
                    )?;
                    if let Some(h) = &s.sha256 {
                        writeln!(out, "         sha256 {h}")?;
                    }
                }
                for f in &r.files {
                    writeln!(
                        out,
                        "  {:<24} {:>9}  {}  {}",
                        f.dest,
                        f.size,
                        &f.sha256[..16.min(f.sha256.len())],
                        f.build.as_deref().unwrap_or("")
                    )?;
                }
            }
        }
    }
    Ok(Exit::Ok)
}

fn release_line(r: &Release) -> String {
    let verified = if r.sources.iter().any(|s| s.verified) {
        ""
    } else {
        "  (unverified pin)"
    };
    let files = if r.files.is_empty() {
        "no file pins".to_string()
    } else {
        format!("{} files", r.files.len())
    };
    format!(
        "{} ({}, {files}){verified}\n      {}",
        r.version, r.flavour, r.description
    )
}

fn kind_arg(k: ReleaseKind) -> &'static str {
    match k {
        ReleaseKind::Firmware => "firmware",
        ReleaseKind::UBoot => "u-boot",
        ReleaseKind::Uefi => "uefi",
    }
}

fn parse_kind(s: &str) -> Option<ReleaseKind> {
    match s {
        "firmware" => Some(ReleaseKind::Firmware),
        "u-boot" | "uboot" => Some(ReleaseKind::UBoot),
        "uefi" => Some(ReleaseKind::Uefi),
        _ => None,
    }
}
