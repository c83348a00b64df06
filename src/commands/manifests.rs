//! `pifw manifests list|show`: what pifw knows about boards and releases.

use super::{Exit, UsageError};
use crate::cli::{Cli, ManifestsCommand};
use crate::manifest::{Manifests, Release, ReleaseKind};
use crate::ui::{self, manifests::ArchiveListing};

pub fn run(cli: &Cli, m: &Manifests, cmd: &ManifestsCommand) -> anyhow::Result<Exit> {
    match cmd {
        ManifestsCommand::List {
            mirror,
            suite,
            keyring,
            offline,
        } => {
            let archive = archive_offers(m, mirror.as_deref(), suite, keyring.as_deref(), *offline);
            ui::manifests::list(cli.json, m, &archive)?;
        }
        ManifestsCommand::Show { name, version } => {
            if let Some(b) = m.board(name) {
                ui::manifests::board(cli.json, b)?;
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
                    ui::manifests::kind_arg(kind)
                ))
                .into());
            }
            ui::manifests::releases(cli.json, &releases)?;
        }
    }
    Ok(Exit::Ok)
}

fn archive_offers(
    m: &Manifests,
    mirror: Option<&str>,
    suites: &[String],
    keyring: Option<&std::path::Path>,
    offline: bool,
) -> ArchiveListing {
    let not_looked = |why: String| ArchiveListing {
        mirror: None,
        not_looked: Some(why),
        offers: Vec::new(),
    };
    if offline {
        return not_looked("--offline".into());
    }
    let cfg = match super::config() {
        Ok(c) => c,
        Err(e) => return not_looked(format!("the configuration could not be read: {e:#}")),
    };
    // A listing is local and quick unless asked otherwise: the archive is asked only when
    // the command line (--mirror, --suite) or the config file (debian_mirror) says to; a
    // suite's index can be tens of MiB.
    if mirror.is_none() && suites.is_empty() && cfg.debian_mirror.is_none() {
        return not_looked(
            "not asked to (pass --mirror URL or --suite SUITE, or set debian_mirror in the \
             config file)"
                .into(),
        );
    }
    let mirror = mirror
        .map(|s| s.trim_end_matches('/').to_string())
        .or_else(|| cfg.debian_mirror.clone())
        .or_else(|| crate::fetch::debian_mirror_from_apt(std::path::Path::new("/")));
    let Some(mirror) = mirror else {
        return not_looked(
            "no Debian mirror is known (pass --mirror URL, set debian_mirror in the config \
             file, or add a Debian archive to the apt sources)"
                .into(),
        );
    };
    let stable = ["stable".to_string()];
    let suites = if suites.is_empty() {
        &stable[..]
    } else {
        suites
    };
    let keyring = keyring.map_or_else(|| cfg.keyring.clone(), |k| k.to_path_buf());
    let mut opts = crate::fetch::FetchOptions::new(&cfg.cache_dir);
    // A listing must not hang on an unreachable mirror.
    opts.timeout = std::time::Duration::from_secs(10);
    let offers = crate::debian_source::offers(&opts, m, &mirror, &keyring, suites);
    ArchiveListing {
        mirror: Some(mirror),
        not_looked: None,
        offers,
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
