//! `pifw manifests list|show`: what pifw knows about boards and releases.

use super::{Exit, UsageError};
use crate::cli::{Cli, ManifestsCommand};
use crate::manifest::{Manifests, Release, ReleaseKind};
use std::io::Write;

pub fn run(cli: &Cli, m: &Manifests, cmd: &ManifestsCommand) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    match cmd {
        ManifestsCommand::List {
            mirror,
            suite,
            keyring,
            offline,
        } => {
            let archive = archive_offers(m, mirror.as_deref(), suite, keyring.as_deref(), *offline);
            if cli.json {
                let mut v = serde_json::to_value(m)?;
                if let serde_json::Value::Object(map) = &mut v {
                    map.insert("archive".into(), serde_json::to_value(&archive)?);
                }
                serde_json::to_writer_pretty(&mut out, &v)?;
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
            render_archive(&mut out, &archive)?;
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

/// What `manifests list` says about the Debian archive: the offers, or why it did not look.
#[derive(Debug, serde::Serialize)]
struct ArchiveListing {
    /// The mirror asked, when one was.
    mirror: Option<String>,
    /// Why the archive was not asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_looked: Option<String>,
    offers: Vec<crate::debian_source::Offer>,
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

fn render_archive(out: &mut dyn Write, a: &ArchiveListing) -> std::io::Result<()> {
    match (&a.mirror, &a.not_looked) {
        (_, Some(why)) => {
            writeln!(out, "Debian archive: not looked at: {why}")?;
            return Ok(());
        }
        (Some(m), None) => writeln!(out, "Debian archive: {m}")?,
        (None, None) => return Ok(()),
    }
    for o in &a.offers {
        match (&o.debian_version, &o.error) {
            (Some(v), _) => writeln!(
                out,
                "  {:<8} {:<14} {v}  {}; InRelease signed by key {}",
                o.suite,
                o.package,
                if o.in_manifests {
                    "in the manifests"
                } else {
                    "NOT in the manifests (pifw update-* --from-debian takes it)"
                },
                o.signing_key.as_deref().unwrap_or("?")
            )?,
            (None, e) => writeln!(
                out,
                "  {:<8} {:<14} could not look: {}",
                o.suite,
                o.package,
                e.as_deref().unwrap_or("?")
            )?,
        }
    }
    Ok(())
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
